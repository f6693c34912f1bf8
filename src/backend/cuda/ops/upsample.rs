//! Launch sites of kernels/upsample.cu: one thread per value written.

use super::{elementwise, kernel_arg, kernels, Ptr};
use crate::backend::cuda::{GpuBackend, GpuBuf};
use crate::backend::{Core, UpsampleOps, UpsampleParams};
use anyhow::Result;

kernel_arg!(UpsampleParams);

kernels! {
    fn upsample_nearest_forward_f32(p: UpsampleParams, x: Ptr, y: Ptr);
    fn upsample_nearest_backward_input_f32(p: UpsampleParams, dy: Ptr, dx: Ptr);
}

impl UpsampleOps for GpuBackend {
    fn upsample_nearest_forward(&self, p: &UpsampleParams, x: &GpuBuf, y: &mut GpuBuf) -> Result<()> {
        self.timed(
            "upsample_nearest_forward",
            || p.work(),
            || {
                p.check_forward(self, x, y)?;
                self.exec.upsample_nearest_forward_f32(elementwise(p.out_len()), *p, x.ptr, y.ptr)
            },
        )
    }
    fn upsample_nearest_backward_input(&self, p: &UpsampleParams, dy: &GpuBuf, dx: &mut GpuBuf) -> Result<()> {
        self.timed(
            "upsample_nearest_backward_input",
            || p.work(),
            || {
                p.check_backward_input(self, dy, dx)?;
                self.exec.upsample_nearest_backward_input_f32(elementwise(p.in_len()), *p, dy.ptr, dx.ptr)
            },
        )
    }
}
