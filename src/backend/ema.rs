//! ema_update: the exponential moving average of weights (the EMA generator of ProGAN and
//! StyleGAN, `train --ema-half-life`). CPU twin `cpu/ema.rs`, launch site
//! `cuda/ops/ema.rs`, kernel `kernels/ema.cu`, checks `verify/ema.rs`.

use super::{check_operands, Core, Work};
use anyhow::{ensure, Result};
use bytemuck::{Pod, Zeroable};

/// `avg = w + beta * (avg - w)` over `len` values: StyleGAN's `lerp(w, avg, beta)`, so
/// `beta = 0` copies `w` and `beta = 1` keeps `avg`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
pub struct EmaParams {
    pub len: i32,
    /// How much of the old average is kept, in [0, 1].
    pub beta: f32,
}

impl EmaParams {
    pub fn new(len: usize, beta: f32) -> EmaParams {
        EmaParams { len: len as i32, beta }
    }
    /// A beta in [0, 1] and the operands of an update.
    pub fn check<B: Core>(&self, be: &B, avg: &B::Buf, w: &B::Buf) -> Result<()> {
        ensure!((0.0..=1.0).contains(&self.beta), "ema_update: beta {} is not in [0, 1]", self.beta);
        ensure!(self.len >= 0, "ema_update: negative length {}", self.len);
        let n = self.len as usize;
        check_operands(be, "ema", &[("avg", Some(avg), n), ("w", Some(w), n)])
    }
    /// Minimal traffic: the average read and written, the weights read. Every parameter
    /// tensor is one call; the profile gives all of them one row.
    pub fn work(&self) -> Work {
        Work::bytes("all parameters".into(), 3.0 * 4.0 * self.len as f64)
    }
}

/// The ema family's op. It is on no gradient path (the average is never differentiated:
/// it is drawn from, not trained), so it has no backward pass.
pub trait EmaOps: Core {
    /// `avg = w + beta * (avg - w)` (see [`EmaParams`]).
    fn ema_update(&self, p: &EmaParams, avg: &mut Self::Buf, w: &Self::Buf) -> Result<()>;
}
