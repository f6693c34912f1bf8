//! Launch sites of kernels/activation.cu: one thread per value.

use super::{elementwise, kernel_arg, kernels, Ptr};
use crate::backend::cuda::{GpuBackend, GpuBuf};
use crate::backend::{ActParams, ActivationOps, Core};
use anyhow::Result;

kernel_arg!(ActParams);

kernels! {
    fn relu_forward_f32(p: ActParams, x: Ptr, y: Ptr);
    fn relu_backward_input_f32(p: ActParams, y: Ptr, dy: Ptr, dx: Ptr);
    fn leaky_relu_forward_f32(p: ActParams, x: Ptr, y: Ptr);
    fn leaky_relu_backward_input_f32(p: ActParams, y: Ptr, dy: Ptr, dx: Ptr);
    fn tanh_forward_f32(p: ActParams, x: Ptr, y: Ptr);
    fn tanh_backward_input_f32(p: ActParams, y: Ptr, dy: Ptr, dx: Ptr);
}

impl ActivationOps for GpuBackend {
    fn relu_forward(&self, p: &ActParams, x: &GpuBuf, y: &mut GpuBuf) -> Result<()> {
        self.timed(
            "relu_forward",
            || p.work(2.0),
            || {
                p.check_forward(self, "relu_forward", x, y)?;
                self.exec.relu_forward_f32(elementwise(p.len as usize), *p, x.ptr, y.ptr)
            },
        )
    }
    fn relu_backward_input(&self, p: &ActParams, y: &GpuBuf, dy: &GpuBuf, dx: &mut GpuBuf) -> Result<()> {
        self.timed(
            "relu_backward_input",
            || p.work(3.0),
            || {
                p.check_backward(self, "relu_backward_input", y, dy, dx)?;
                self.exec.relu_backward_input_f32(elementwise(p.len as usize), *p, y.ptr, dy.ptr, dx.ptr)
            },
        )
    }
    fn leaky_relu_forward(&self, p: &ActParams, x: &GpuBuf, y: &mut GpuBuf) -> Result<()> {
        self.timed(
            "leaky_relu_forward",
            || p.work(2.0),
            || {
                p.check_forward(self, "leaky_relu_forward", x, y)?;
                self.exec.leaky_relu_forward_f32(elementwise(p.len as usize), *p, x.ptr, y.ptr)
            },
        )
    }
    fn leaky_relu_backward_input(&self, p: &ActParams, y: &GpuBuf, dy: &GpuBuf, dx: &mut GpuBuf) -> Result<()> {
        self.timed(
            "leaky_relu_backward_input",
            || p.work(3.0),
            || {
                p.check_backward(self, "leaky_relu_backward_input", y, dy, dx)?;
                self.exec.leaky_relu_backward_input_f32(elementwise(p.len as usize), *p, y.ptr, dy.ptr, dx.ptr)
            },
        )
    }
    fn tanh_forward(&self, p: &ActParams, x: &GpuBuf, y: &mut GpuBuf) -> Result<()> {
        self.timed(
            "tanh_forward",
            || p.work(2.0),
            || {
                p.check_forward(self, "tanh_forward", x, y)?;
                self.exec.tanh_forward_f32(elementwise(p.len as usize), *p, x.ptr, y.ptr)
            },
        )
    }
    fn tanh_backward_input(&self, p: &ActParams, y: &GpuBuf, dy: &GpuBuf, dx: &mut GpuBuf) -> Result<()> {
        self.timed(
            "tanh_backward_input",
            || p.work(3.0),
            || {
                p.check_backward(self, "tanh_backward_input", y, dy, dx)?;
                self.exec.tanh_backward_input_f32(elementwise(p.len as usize), *p, y.ptr, dy.ptr, dx.ptr)
            },
        )
    }
}
