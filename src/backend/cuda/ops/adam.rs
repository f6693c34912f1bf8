//! Launch site of kernels/adam.cu: one thread per value.

use super::{elementwise, kernel_arg, kernels, Ptr};
use crate::backend::cuda::{GpuBackend, GpuBuf};
use crate::backend::{AdamOps, AdamParams, Core};
use anyhow::Result;

kernel_arg!(AdamParams);

kernels! {
    fn adam_step_f32(p: AdamParams, param: Ptr, grad: Ptr, m: Ptr, v: Ptr);
}

impl AdamOps for GpuBackend {
    fn adam_step(&self, p: &AdamParams, param: &mut GpuBuf, grad: &GpuBuf, m: &mut GpuBuf, v: &mut GpuBuf) -> Result<()> {
        self.timed(
            "adam_step",
            || p.work(),
            || {
                p.check(self, param, grad, m, v)?;
                self.exec.adam_step_f32(elementwise(p.len as usize), *p, param.ptr, grad.ptr, m.ptr, v.ptr)
            },
        )
    }
}
