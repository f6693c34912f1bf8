//! Launch sites of kernels/activation.cu: one thread per value.

use super::{elementwise, kernel_arg, kernels, Launch, Ptr};
use crate::backend::cuda::{check, GpuBackend, GpuBuf};
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

/// The launch of a pass over `p.len` values, after checking every buffer holds them.
fn launch(what: &str, p: &ActParams, bufs: &[&GpuBuf]) -> Result<Launch> {
    for b in bufs {
        check(what, b, p.len as usize)?;
    }
    Ok(elementwise(p.len as usize))
}

impl ActivationOps for GpuBackend {
    fn relu_forward(&self, p: &ActParams, x: &GpuBuf, y: &mut GpuBuf) -> Result<()> {
        self.timed("relu_forward", || p.work(2.0), || self.exec.relu_forward_f32(launch("relu", p, &[x, y])?, *p, x.ptr, y.ptr))
    }
    fn relu_backward_input(&self, p: &ActParams, y: &GpuBuf, dy: &GpuBuf, dx: &mut GpuBuf) -> Result<()> {
        self.timed("relu_backward_input", || p.work(3.0), || self.exec.relu_backward_input_f32(launch("relu", p, &[y, dy, dx])?, *p, y.ptr, dy.ptr, dx.ptr))
    }
    fn leaky_relu_forward(&self, p: &ActParams, x: &GpuBuf, y: &mut GpuBuf) -> Result<()> {
        self.timed("leaky_relu_forward", || p.work(2.0), || self.exec.leaky_relu_forward_f32(launch("leaky_relu", p, &[x, y])?, *p, x.ptr, y.ptr))
    }
    fn leaky_relu_backward_input(&self, p: &ActParams, y: &GpuBuf, dy: &GpuBuf, dx: &mut GpuBuf) -> Result<()> {
        self.timed(
            "leaky_relu_backward_input",
            || p.work(3.0),
            || self.exec.leaky_relu_backward_input_f32(launch("leaky_relu", p, &[y, dy, dx])?, *p, y.ptr, dy.ptr, dx.ptr),
        )
    }
    fn tanh_forward(&self, p: &ActParams, x: &GpuBuf, y: &mut GpuBuf) -> Result<()> {
        self.timed("tanh_forward", || p.work(2.0), || self.exec.tanh_forward_f32(launch("tanh", p, &[x, y])?, *p, x.ptr, y.ptr))
    }
    fn tanh_backward_input(&self, p: &ActParams, y: &GpuBuf, dy: &GpuBuf, dx: &mut GpuBuf) -> Result<()> {
        self.timed("tanh_backward_input", || p.work(3.0), || self.exec.tanh_backward_input_f32(launch("tanh", p, &[y, dy, dx])?, *p, y.ptr, dy.ptr, dx.ptr))
    }
}
