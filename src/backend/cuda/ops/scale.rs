//! Launch sites of kernels/scale.cu: one thread per value.

use super::{elementwise, kernel_arg, kernels, Ptr};
use crate::backend::cuda::{GpuBackend, GpuBuf};
use crate::backend::{Core, ScaleOps, ScaleParams};
use anyhow::Result;

kernel_arg!(ScaleParams);

kernels! {
    fn scale_forward_f32(p: ScaleParams, x: Ptr, y: Ptr);
}

impl ScaleOps for GpuBackend {
    fn scale_forward(&self, p: &ScaleParams, x: &GpuBuf, y: &mut GpuBuf) -> Result<()> {
        self.timed(
            "scale_forward",
            || p.work(),
            || {
                p.check_forward(self, x, y)?;
                self.exec.scale_forward_f32(elementwise(p.len()), *p, x.ptr, y.ptr)
            },
        )
    }
}
