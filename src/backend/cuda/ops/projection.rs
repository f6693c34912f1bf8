//! Launch sites of kernels/projection.cu: the forward pass one block per row (a fixed-order
//! block reduction), the backward passes one thread per value written.

use super::{elementwise, kernel_arg, kernels, Launch, Ptr};
use crate::backend::cuda::tiles::REDUCE_THREADS;
use crate::backend::cuda::{GpuBackend, GpuBuf};
use crate::backend::{Core, ProjectionOps, ProjectionParams};
use anyhow::Result;

kernel_arg!(ProjectionParams);

kernels! {
    fn projection_forward_f32(p: ProjectionParams, base: Ptr, a: Ptr, b: Ptr, out: Ptr);
    fn projection_backward_input_f32(p: ProjectionParams, dout: Ptr, a: Ptr, b: Ptr, da: Ptr, db: Ptr);
    fn projection_backward_features_f32(p: ProjectionParams, dpsi: Ptr, da: Ptr, dh: Ptr);
}

/// One block per row (the kernel's scratch is static shared memory).
fn per_row(p: &ProjectionParams) -> Launch {
    Launch { grid: (p.n.max(1) as u32, 1, 1), block: REDUCE_THREADS, shared_bytes: 0 }
}

impl ProjectionOps for GpuBackend {
    fn projection_forward(&self, p: &ProjectionParams, base: &GpuBuf, a: &GpuBuf, b: &GpuBuf, out: &mut GpuBuf) -> Result<()> {
        self.timed(
            "projection_forward",
            || p.work(),
            || {
                p.check_forward(self, base, a, b, out)?;
                self.exec.projection_forward_f32(per_row(p), *p, base.ptr, a.ptr, b.ptr, out.ptr)
            },
        )
    }
    fn projection_backward_input(&self, p: &ProjectionParams, dout: &GpuBuf, a: &GpuBuf, b: &GpuBuf, da: &mut GpuBuf, db: &mut GpuBuf) -> Result<()> {
        self.timed(
            "projection_backward_input",
            || p.work(),
            || {
                p.check_backward_input(self, dout, a, b, da, db)?;
                self.exec.projection_backward_input_f32(elementwise(p.rows_len()), *p, dout.ptr, a.ptr, b.ptr, da.ptr, db.ptr)
            },
        )
    }
    fn projection_backward_features(&self, p: &ProjectionParams, dpsi: &GpuBuf, da: &GpuBuf, dh: &mut GpuBuf) -> Result<()> {
        self.timed(
            "projection_backward_features",
            || p.features_work(),
            || {
                p.check_backward_features(self, dpsi, da, dh)?;
                self.exec.projection_backward_features_f32(elementwise(p.features_len()), *p, dpsi.ptr, da.ptr, dh.ptr)
            },
        )
    }
}
