//! mode_seeking: the mode-seeking term of MSGAN (Mao et al. 2019), which asks the
//! generator to turn different noise into different images for the same caption. CPU twin
//! `cpu/mode_seeking.rs`, launch sites `cuda/ops/mode_seeking.rs`, kernels
//! `kernels/mode_seeking.cu`, checks `verify/mode_seeking.rs`.
//!
//! The batch is two halves whose image `i` and `i + pairs` share a caption and differ in
//! their noise. With `r = mean |x_i - x_{i+pairs}| / mean |z_i - z_{i+pairs}|` (the image
//! distance per unit of noise distance, means over every value of the pairs), the term is
//! `weight / (r + eps)`: it falls as the pairs move apart.

use super::{check_operands, Core, Work};
use anyhow::Result;
use bytemuck::{Pod, Zeroable};

/// The mode-seeking term over `pairs` pairs of images of `len` values each (the first
/// `pairs` images against the next `pairs`); `inv_dz` is one over the mean absolute
/// difference of the pairs' noise (computed on the host, where the noise is drawn).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
pub struct ModeSeekingParams {
    pub pairs: i32,
    pub len: i32,
    pub inv_dz: f32,
    pub weight: f32,
    pub eps: f32,
}

/// MSGAN's epsilon: the term is `weight / eps` at most, when the pairs are identical.
pub const MODE_SEEKING_EPS: f32 = 1e-5;

impl ModeSeekingParams {
    /// `inv_dz` of a batch whose noise is `noise` (its vectors one after another, an even
    /// number of them): one over the mean absolute difference of the two halves; `None`
    /// when that is not a positive finite number (identical halves, say).
    pub fn inv_noise_distance(noise: &[f32]) -> Option<f32> {
        let half = noise.len() / 2;
        let dz: f64 = noise[..half].iter().zip(&noise[half..2 * half]).map(|(a, b)| (*a as f64 - *b as f64).abs()).sum::<f64>() / half.max(1) as f64;
        (dz > 0.0 && dz.is_finite()).then(|| (1.0 / dz) as f32)
    }
    /// Values of one half of the batch.
    pub fn half(&self) -> usize {
        self.pairs.max(0) as usize * self.len.max(0) as usize
    }
    /// Minimal traffic of a pass over `tensors` batch-sized tensors.
    pub fn work(&self, tensors: f64) -> Work {
        Work::bytes(format!("pairs{} len{}", self.pairs, self.len), tensors * 4.0 * 2.0 * self.half() as f64)
    }
    /// The operands of the forward pass (`out`: the term and the ratio `r`).
    pub fn check_forward<B: Core>(&self, be: &B, x: &B::Buf, out: &B::Buf) -> Result<()> {
        check_operands(be, "mode_seeking", &[("x", Some(x), 2 * self.half()), ("out", Some(out), 2)])
    }
    /// The operands of the backward pass (`stats`: the forward's `out`).
    pub fn check_backward_input<B: Core>(&self, be: &B, x: &B::Buf, stats: &B::Buf, dx: &B::Buf) -> Result<()> {
        check_operands(be, "mode_seeking", &[("x", Some(x), 2 * self.half()), ("stats", Some(stats), 2), ("dx", Some(dx), 2 * self.half())])
    }
}

/// The mode_seeking family's ops.
pub trait ModeSeekingOps: Core {
    /// Writes `out[0] = weight / (r + eps)`, `out[1] = r`.
    fn mode_seeking_forward(&self, p: &ModeSeekingParams, x: &Self::Buf, out: &mut Self::Buf) -> Result<()>;
    /// Adds the term's gradient to `dx` (the images' gradient from the adversarial loss),
    /// with `r` read from `stats[1]` (the forward's `out`):
    /// `dx_i += g sign(x_i - x_{i+pairs})`, `dx_{i+pairs} -= g sign(...)`, where
    /// `g = -weight / (r + eps)^2 * inv_dz / (pairs * len)`.
    fn mode_seeking_backward_input(&self, p: &ModeSeekingParams, x: &Self::Buf, stats: &Self::Buf, dx: &mut Self::Buf) -> Result<()>;
}
