//! Launch sites of kernels/pixel_norm.cu: one thread per pixel column (`n hw` of them).

use super::{elementwise, kernel_arg, kernels, Ptr};
use crate::backend::cuda::{GpuBackend, GpuBuf};
use crate::backend::{Core, PixelNormOps, PixelNormParams};
use anyhow::Result;

kernel_arg!(PixelNormParams);

kernels! {
    fn pixel_norm_forward_f32(p: PixelNormParams, x: Ptr, y: Ptr);
    fn pixel_norm_backward_input_f32(p: PixelNormParams, x: Ptr, dy: Ptr, dx: Ptr);
}

impl PixelNormOps for GpuBackend {
    fn pixel_norm_forward(&self, p: &PixelNormParams, x: &GpuBuf, y: &mut GpuBuf) -> Result<()> {
        self.timed(
            "pixel_norm_forward",
            || p.work(),
            || {
                p.check_forward(self, x, y)?;
                self.exec.pixel_norm_forward_f32(elementwise(p.columns()), *p, x.ptr, y.ptr)
            },
        )
    }
    fn pixel_norm_backward_input(&self, p: &PixelNormParams, x: &GpuBuf, dy: &GpuBuf, dx: &mut GpuBuf) -> Result<()> {
        self.timed(
            "pixel_norm_backward_input",
            || p.work(),
            || {
                p.check_backward_input(self, x, dy, dx)?;
                self.exec.pixel_norm_backward_input_f32(elementwise(p.columns()), *p, x.ptr, dy.ptr, dx.ptr)
            },
        )
    }
}
