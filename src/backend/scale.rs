//! scale: `y = c x` (or `y += c x`), the equalised learning rate of ProGAN (Karras et al.
//! 2018, 4.1): weights are stored N(0, 1) and scaled by the He constant
//! `c = gain / sqrt(fan_in)` at run time. CPU twin `cpu/scale.rs`, launch sites
//! `cuda/ops/scale.rs`, kernels `kernels/scale.cu`, checks `verify/scale.rs`.

use super::{check_operands, Core, Work};
use anyhow::Result;
use bytemuck::{Pod, Zeroable};

/// `y = c x` over `len` values, or `y += c x` when `accumulate` is 1.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
pub struct ScaleParams {
    pub len: i32,
    pub c: f32,
    pub accumulate: i32,
}

impl ScaleParams {
    /// `y = c x`.
    pub fn write(len: usize, c: f32) -> ScaleParams {
        ScaleParams { len: len as i32, c, accumulate: 0 }
    }
    /// `y += c x`: how a gradient is scaled into a parameter gradient (which accumulates).
    pub fn accumulate(len: usize, c: f32) -> ScaleParams {
        ScaleParams { len: len as i32, c, accumulate: 1 }
    }
    pub fn len(&self) -> usize {
        self.len.max(0) as usize
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The operands of the op.
    pub fn check_forward<B: Core>(&self, be: &B, x: &B::Buf, y: &B::Buf) -> Result<()> {
        let l = self.len();
        check_operands(be, "scale", &[("x", Some(x), l), ("y", Some(y), l)])
    }
    /// Minimal traffic: `x` read and `y` written, and `y` read as well when accumulating.
    pub fn work(&self) -> Work {
        let tensors = if self.accumulate != 0 { 3.0 } else { 2.0 };
        Work::bytes(format!("len{} c{} acc{}", self.len, self.c, self.accumulate), tensors * 4.0 * self.len() as f64)
    }
}

/// The scale family's op. It is linear in `x`, so its backward is the same op on the
/// gradient: `dx = c dy` is `scale_forward` of `dy` (`ScaleParams::accumulate` where `dx` is
/// a parameter gradient). The finite-difference check checks it as such.
pub trait ScaleOps: Core {
    /// Writes `y = c x`, or adds `c x` to `y` when `p.accumulate` is 1.
    fn scale_forward(&self, p: &ScaleParams, x: &Self::Buf, y: &mut Self::Buf) -> Result<()>;
}
