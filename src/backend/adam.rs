//! adam_step: the optimizer. CPU twin `cpu/adam.rs`, launch sites `cuda/ops/adam.rs`,
//! kernels `kernels/adam.cu`, checks `verify/adam.rs`.

use super::{check_operands, Core, Work};
use anyhow::Result;
use bytemuck::{Pod, Zeroable};

/// One bias-corrected Adam step over `len` values.
/// `bc1 = 1 - beta1^t`, `bc2 = 1 - beta2^t` are computed on the host.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
pub struct AdamParams {
    pub len: i32,
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub bc1: f32,
    pub bc2: f32,
}

impl AdamParams {
    /// Minimal traffic: param, m and v read and written, the gradient read. Every
    /// parameter tensor is one call; the profile gives all of them one row.
    pub fn work(&self) -> Work {
        Work::bytes("all parameters".into(), 7.0 * 4.0 * self.len as f64)
    }
    /// The operands of a step.
    pub fn check<B: Core>(&self, be: &B, param: &B::Buf, grad: &B::Buf, m: &B::Buf, v: &B::Buf) -> Result<()> {
        let n = self.len as usize;
        check_operands(be, "adam", &[("param", Some(param), n), ("grad", Some(grad), n), ("m", Some(m), n), ("v", Some(v), n)])
    }
}

/// The adam family's op.
pub trait AdamOps: Core {
    fn adam_step(&self, p: &AdamParams, param: &mut Self::Buf, grad: &Self::Buf, m: &mut Self::Buf, v: &mut Self::Buf) -> Result<()>;
}
