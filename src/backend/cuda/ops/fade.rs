//! Launch sites of kernels/fade.cu: one thread per value.

use super::{elementwise, kernel_arg, kernels, Ptr};
use crate::backend::cuda::{GpuBackend, GpuBuf};
use crate::backend::{Core, FadeOps, FadeParams};
use anyhow::Result;

kernel_arg!(FadeParams);

kernels! {
    fn fade_forward_f32(p: FadeParams, x1: Ptr, x2: Ptr, y: Ptr);
    fn fade_backward_input_f32(p: FadeParams, dy: Ptr, dx1: Ptr, dx2: Ptr);
}

impl FadeOps for GpuBackend {
    fn fade_forward(&self, p: &FadeParams, x1: &GpuBuf, x2: &GpuBuf, y: &mut GpuBuf) -> Result<()> {
        self.timed(
            "fade_forward",
            || p.work(),
            || {
                p.check_forward(self, x1, x2, y)?;
                self.exec.fade_forward_f32(elementwise(p.len()), *p, x1.ptr, x2.ptr, y.ptr)
            },
        )
    }
    fn fade_backward_input(&self, p: &FadeParams, dy: &GpuBuf, dx1: &mut GpuBuf, dx2: &mut GpuBuf) -> Result<()> {
        self.timed(
            "fade_backward_input",
            || p.work(),
            || {
                p.check_backward_input(self, dy, dx1, dx2)?;
                self.exec.fade_backward_input_f32(elementwise(p.len()), *p, dy.ptr, dx1.ptr, dx2.ptr)
            },
        )
    }
}
