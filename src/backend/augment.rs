//! augment: DiffAugment's differentiable augmentation (Zhao et al. 2020) of an NCHW image
//! batch, one set of parameters per sample: colour (brightness, saturation, contrast), then
//! an integer translation, then a cutout square; what translation shifts in from outside
//! and what cutout covers is set to a fill value. The parameters are drawn on the host
//! (`train::augment`) and passed as a small `n x AUGMENT_K` buffer; the op is affine in the
//! images (linear plus the constant fill), so its backward pass needs only the parameters.
//! CPU twin `cpu/augment.rs`, launch sites `cuda/ops/augment.rs`, kernels
//! `kernels/augment.cu`, checks `verify/augment.rs`.
//!
//! DiffAugment fills with zero: mid-grey in the [-1, 1] images this engine trains on. A
//! catalogue shot on white reads that grey ring as something real images never have, and a
//! generator learns it (`train --augment-fill`).

use super::{check_operands, Core, Work};
use anyhow::{ensure, Result};
use bytemuck::{Pod, Zeroable};

/// Values per sample in the parameter buffer.
pub const AUGMENT_K: usize = 10;
/// Slot of the column shift `tx`: output column `j` reads input column `j + tx`.
pub const AUGMENT_SHIFT_X: usize = 0;
/// Slot of the row shift `ty`: output row `i` reads input row `i + ty`.
pub const AUGMENT_SHIFT_Y: usize = 1;
/// Slot of the cutout's first column (may be negative: the square is clipped to the image).
pub const AUGMENT_CUT_X0: usize = 2;
/// Slot of the cutout's first row.
pub const AUGMENT_CUT_Y0: usize = 3;
/// Slot of the cutout's width (0: no cutout).
pub const AUGMENT_CUT_W: usize = 4;
/// Slot of the cutout's height.
pub const AUGMENT_CUT_H: usize = 5;
/// Slot of the brightness offset `b` (identity 0).
pub const AUGMENT_BRIGHTNESS: usize = 6;
/// Slot of the saturation factor `s` (identity 1).
pub const AUGMENT_SATURATION: usize = 7;
/// Slot of the contrast factor `k` (identity 1).
pub const AUGMENT_CONTRAST: usize = 8;
/// Slot of the fill value `f`, in image units: what translation shifts in from outside
/// and what cutout covers (0: DiffAugment's mid-grey).
pub const AUGMENT_FILL: usize = 9;

/// The identity parameters of one sample.
pub const AUGMENT_IDENTITY: [f32; AUGMENT_K] = [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 0.0];

/// `x[n, c, h, w]` -> `y[n, c, h, w]`, for each sample with its parameters `a`:
///
/// - colour, as DiffAugment applies its three functions in turn: `x1 = x + b`;
///   `x2 = (x1 - mean_c(x1)) s + mean_c(x1)` (the mean over channels at each pixel);
///   `x3 = (x2 - mean_chw(x2)) k + mean_chw(x2)` (the mean over the whole sample). Folded:
///   `x3 = k s (x - m_c) + k (m_c - m) + m + b`, with `m_c` and `m` the means of `x`;
///   a sample whose colour parameters are the identity is copied exactly;
/// - translation: `y[i, j] = x3[i + ty, j + tx]`, the fill `f` where that falls outside;
/// - cutout: `f` on rows `[cy0, cy0 + ch)` and columns `[cx0, cx0 + cw)`.
///
/// The backward pass is the transpose of the linear part (the fill is a constant): the
/// gradient moved back by the shift (zero where it was cut out or fell outside), `g`, then `dx = k s g + k (1 - s) / C sum_c g + (1 - k) /
/// (C H W) sum_chw g` (the mean terms of saturation and contrast).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
pub struct AugmentParams {
    pub n: i32,
    pub c: i32,
    pub h: i32,
    pub w: i32,
}

impl AugmentParams {
    pub fn new(n: usize, c: usize, h: usize, w: usize) -> AugmentParams {
        AugmentParams { n: n as i32, c: c as i32, h: h as i32, w: w as i32 }
    }
    pub fn len(&self) -> usize {
        (self.n * self.c * self.h * self.w) as usize
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Length of the parameter buffer: `n * AUGMENT_K`.
    pub fn params_len(&self) -> usize {
        self.n as usize * AUGMENT_K
    }
    /// A batch with at least one value per sample.
    pub fn check(&self) -> Result<()> {
        ensure!(self.n >= 1 && self.c >= 1 && self.h >= 1 && self.w >= 1, "augment: empty batch {}x{}x{}x{}", self.n, self.c, self.h, self.w);
        Ok(())
    }
    /// The operands of the forward pass.
    pub fn check_forward<B: Core>(&self, be: &B, x: &B::Buf, a: &B::Buf, y: &B::Buf) -> Result<()> {
        self.check()?;
        check_operands(be, "augment", &[("x", Some(x), self.len()), ("params", Some(a), self.params_len()), ("y", Some(y), self.len())])
    }
    /// The operands of the backward pass.
    pub fn check_backward_input<B: Core>(&self, be: &B, a: &B::Buf, dy: &B::Buf, dx: &B::Buf) -> Result<()> {
        self.check()?;
        check_operands(be, "augment", &[("params", Some(a), self.params_len()), ("dy", Some(dy), self.len()), ("dx", Some(dx), self.len())])
    }
    /// Minimal traffic of a pass: the images read and written once.
    pub fn work(&self) -> Work {
        Work::bytes(format!("n{} c{} {}x{}", self.n, self.c, self.h, self.w), 4.0 * (2 * self.len() + self.params_len()) as f64)
    }
}

/// Whether a sample's colour parameters are the identity (then colour is skipped exactly).
pub fn color_is_identity(a: &[f32]) -> bool {
    a[AUGMENT_BRIGHTNESS] == 0.0 && a[AUGMENT_SATURATION] == 1.0 && a[AUGMENT_CONTRAST] == 1.0
}

/// The augment family's ops. No learned parameters: the backward pass is the input gradient.
pub trait AugmentOps: Core {
    /// `y = augment(x; a)` (see [`AugmentParams`]); `a` holds `n * AUGMENT_K` values.
    fn augment_forward(&self, p: &AugmentParams, x: &Self::Buf, a: &Self::Buf, y: &mut Self::Buf) -> Result<()>;
    /// Writes `dx`, the transpose of the forward pass applied to `dy`.
    fn augment_backward_input(&self, p: &AugmentParams, a: &Self::Buf, dy: &Self::Buf, dx: &mut Self::Buf) -> Result<()>;
}
