//! Launch sites of kernels/augment.cu: one block per sample, each a fixed-order block
//! reduction for the colour's mean.

use super::{kernel_arg, kernels, Launch, Ptr};
use crate::backend::cuda::tiles::REDUCE_THREADS;
use crate::backend::cuda::{GpuBackend, GpuBuf};
use crate::backend::{AugmentOps, AugmentParams, Core};
use anyhow::Result;

kernel_arg!(AugmentParams);

kernels! {
    fn augment_forward_f32(p: AugmentParams, x: Ptr, a: Ptr, y: Ptr);
    fn augment_backward_input_f32(p: AugmentParams, a: Ptr, dy: Ptr, dx: Ptr);
}

/// One block per sample (the kernels' scratch is static shared memory).
fn per_sample(p: &AugmentParams) -> Launch {
    Launch { grid: (p.n.max(1) as u32, 1, 1), block: REDUCE_THREADS, shared_bytes: 0 }
}

impl AugmentOps for GpuBackend {
    fn augment_forward(&self, p: &AugmentParams, x: &GpuBuf, a: &GpuBuf, y: &mut GpuBuf) -> Result<()> {
        self.timed(
            "augment_forward",
            || p.work(),
            || {
                p.check_forward(self, x, a, y)?;
                self.exec.augment_forward_f32(per_sample(p), *p, x.ptr, a.ptr, y.ptr)
            },
        )
    }
    fn augment_backward_input(&self, p: &AugmentParams, a: &GpuBuf, dy: &GpuBuf, dx: &mut GpuBuf) -> Result<()> {
        self.timed(
            "augment_backward_input",
            || p.work(),
            || {
                p.check_backward_input(self, a, dy, dx)?;
                self.exec.augment_backward_input_f32(per_sample(p), *p, a.ptr, dy.ptr, dx.ptr)
            },
        )
    }
}
