//! fade: a weighted sum of two tensors, ProGAN's fade-in of a new block
//! (`(1 - alpha) old + alpha new`); with `a = b = 1` it also adds two gradients. CPU twin
//! `cpu/fade.rs`, launch sites `cuda/ops/fade.rs`, kernels `kernels/fade.cu`, checks
//! `verify/fade.rs`.

use super::{check_operands, Core, Work};
use anyhow::Result;
use bytemuck::{Pod, Zeroable};

/// `y = a x1 + b x2` over `len` values.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
pub struct FadeParams {
    pub len: i32,
    pub a: f32,
    pub b: f32,
}

impl FadeParams {
    pub fn new(len: usize, a: f32, b: f32) -> FadeParams {
        FadeParams { len: len as i32, a, b }
    }
    pub fn len(&self) -> usize {
        self.len.max(0) as usize
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The operands of the forward pass.
    pub fn check_forward<B: Core>(&self, be: &B, x1: &B::Buf, x2: &B::Buf, y: &B::Buf) -> Result<()> {
        let l = self.len();
        check_operands(be, "fade", &[("x1", Some(x1), l), ("x2", Some(x2), l), ("y", Some(y), l)])
    }
    /// The operands of the backward pass.
    pub fn check_backward_input<B: Core>(&self, be: &B, dy: &B::Buf, dx1: &B::Buf, dx2: &B::Buf) -> Result<()> {
        let l = self.len();
        check_operands(be, "fade", &[("dy", Some(dy), l), ("dx1", Some(dx1), l), ("dx2", Some(dx2), l)])
    }
    /// Minimal traffic of either pass: three tensors, each read or written once.
    pub fn work(&self) -> Work {
        Work::bytes(format!("len{} a{} b{}", self.len, self.a, self.b), 3.0 * 4.0 * self.len() as f64)
    }
}

/// The fade family's ops.
pub trait FadeOps: Core {
    /// Writes `y = a x1 + b x2`.
    fn fade_forward(&self, p: &FadeParams, x1: &Self::Buf, x2: &Self::Buf, y: &mut Self::Buf) -> Result<()>;
    /// Writes both input gradients: `dx1 = a dy`, `dx2 = b dy`.
    fn fade_backward_input(&self, p: &FadeParams, dy: &Self::Buf, dx1: &mut Self::Buf, dx2: &mut Self::Buf) -> Result<()>;
}
