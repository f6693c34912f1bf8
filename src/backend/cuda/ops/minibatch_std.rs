//! Launch sites of kernels/minibatch_std.cu: one block per group column, each a fixed-order
//! block reduction.

use super::{kernel_arg, kernels, Launch, Ptr};
use crate::backend::cuda::tiles::REDUCE_THREADS;
use crate::backend::cuda::{GpuBackend, GpuBuf};
use crate::backend::{Core, MinibatchStdOps, MinibatchStdParams};
use anyhow::Result;

kernel_arg!(MinibatchStdParams);

kernels! {
    fn minibatch_std_forward_f32(p: MinibatchStdParams, x: Ptr, y: Ptr);
    fn minibatch_std_backward_input_f32(p: MinibatchStdParams, x: Ptr, dy: Ptr, dx: Ptr);
}

/// One block per group column (the kernels' scratch is static shared memory).
fn per_column(p: &MinibatchStdParams) -> Launch {
    Launch { grid: (p.columns().max(1) as u32, 1, 1), block: REDUCE_THREADS, shared_bytes: 0 }
}

impl MinibatchStdOps for GpuBackend {
    fn minibatch_std_forward(&self, p: &MinibatchStdParams, x: &GpuBuf, y: &mut GpuBuf) -> Result<()> {
        self.timed(
            "minibatch_std_forward",
            || p.work(),
            || {
                p.check_forward(self, x, y)?;
                self.exec.minibatch_std_forward_f32(per_column(p), *p, x.ptr, y.ptr)
            },
        )
    }
    fn minibatch_std_backward_input(&self, p: &MinibatchStdParams, x: &GpuBuf, dy: &GpuBuf, dx: &mut GpuBuf) -> Result<()> {
        self.timed(
            "minibatch_std_backward_input",
            || p.work(),
            || {
                p.check_backward_input(self, x, dy, dx)?;
                self.exec.minibatch_std_backward_input_f32(per_column(p), *p, x.ptr, dy.ptr, dx.ptr)
            },
        )
    }
}
