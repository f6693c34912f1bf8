//! pixel_norm: ProGAN's pixelwise feature normalisation (Karras et al. 2018, 4.2), after
//! each convolution of the generator: every pixel's feature vector divided by its root
//! mean square over the channels. CPU twin `cpu/pixel_norm.rs`, launch sites
//! `cuda/ops/pixel_norm.rs`, kernels `kernels/pixel_norm.cu`, checks `verify/pixel_norm.rs`.

use super::{check_operands, Core, Work};
use anyhow::{ensure, Result};
use bytemuck::{Pod, Zeroable};

/// `y = x / sqrt(mean over the c channels of x^2 + eps)` at each of the `hw` pixels of each
/// of the `n` samples of `x[n, c, hw]`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
pub struct PixelNormParams {
    pub n: i32,
    pub c: i32,
    pub hw: i32,
    pub eps: f32,
}

impl PixelNormParams {
    pub fn new(n: usize, c: usize, hw: usize, eps: f32) -> PixelNormParams {
        PixelNormParams { n: n as i32, c: c as i32, hw: hw as i32, eps }
    }
    pub fn len(&self) -> usize {
        (self.n * self.c * self.hw) as usize
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Pixel columns: `n hw`.
    pub fn columns(&self) -> usize {
        (self.n * self.hw) as usize
    }
    /// At least one channel and a positive `eps` (the ops refuse any other).
    pub fn check(&self) -> Result<()> {
        ensure!(self.c > 0, "pixel_norm: needs at least one channel (got {})", self.c);
        ensure!(self.eps > 0.0 && self.eps.is_finite(), "pixel_norm: eps must be positive and finite (got {})", self.eps);
        Ok(())
    }
    /// The operands of the forward pass.
    pub fn check_forward<B: Core>(&self, be: &B, x: &B::Buf, y: &B::Buf) -> Result<()> {
        self.check()?;
        check_operands(be, "pixel_norm", &[("x", Some(x), self.len()), ("y", Some(y), self.len())])
    }
    /// The operands of the backward pass.
    pub fn check_backward_input<B: Core>(&self, be: &B, x: &B::Buf, dy: &B::Buf, dx: &B::Buf) -> Result<()> {
        self.check()?;
        check_operands(be, "pixel_norm", &[("x", Some(x), self.len()), ("dy", Some(dy), self.len()), ("dx", Some(dx), self.len())])
    }
    /// Minimal traffic of the forward pass (the backward reads one tensor more).
    pub fn work(&self) -> Work {
        Work::bytes(format!("n{} c{} hw{}", self.n, self.c, self.hw), 2.0 * 4.0 * self.len() as f64)
    }
}

/// The pixel_norm family's ops.
pub trait PixelNormOps: Core {
    /// Writes `y = x r` with `r = 1 / sqrt(mean_c x^2 + eps)` per pixel.
    fn pixel_norm_forward(&self, p: &PixelNormParams, x: &Self::Buf, y: &mut Self::Buf) -> Result<()>;
    /// Writes `dx_i = r dy_i - x_i r^3 (1/C) sum_j dy_j x_j`, recomputing `r` from `x`.
    fn pixel_norm_backward_input(&self, p: &PixelNormParams, x: &Self::Buf, dy: &Self::Buf, dx: &mut Self::Buf) -> Result<()>;
}
