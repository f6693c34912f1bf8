//! Launch site of kernels/fill.cu: `Core::fill` (zeroing gradients, running_var = 1, the
//! split-K outputs).

use super::{elementwise, kernel_arg, kernels, Ptr};
use crate::backend::cuda::{Exec, GpuBuf};
use anyhow::Result;
use bytemuck::{Pod, Zeroable};

/// `buf[..len] = value`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct FillParams {
    pub len: i32,
    pub value: f32,
}

kernel_arg!(FillParams);

kernels! {
    fn fill_f32(p: FillParams, buf: Ptr);
}

impl Exec {
    /// Every value of `buf` set to `value`.
    pub(in crate::backend::cuda) fn fill(&self, buf: &mut GpuBuf, value: f32) -> Result<()> {
        self.fill_f32(elementwise(buf.len), FillParams { len: buf.len as i32, value }, buf.ptr)
    }
}
