//! projection: the conditional term of the projection discriminator (Miyato and Koyama
//! 2018, "cGANs with Projection Discriminator"), `logit = psi(h) + <V t, phi(h)>`. The op adds
//! a per-row inner product to the unconditional logits; `phi` (the global average pool) and
//! `V t` (a linear embedding of the caption) come from the pool and linear families. CPU
//! twin `cpu/projection.rs`, launch sites `cuda/ops/projection.rs`, kernels
//! `kernels/projection.cu`, checks `verify/projection.rs`.

use super::{check_operands, Core, Work};
use anyhow::{ensure, Result};
use bytemuck::{Pod, Zeroable};

/// `n` rows of `c` channels. The forward pass reads `base[n]`, `a[n, c]`, `b[n, c]` and
/// writes `out[n]`; `hw` is the grid `a` was pooled from (`a = phi(h)`, `h[n, c, hw]`), used
/// by the features' backward pass only.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
pub struct ProjectionParams {
    pub n: i32,
    pub c: i32,
    pub hw: i32,
}

impl ProjectionParams {
    pub fn new(n: usize, c: usize, hw: usize) -> ProjectionParams {
        ProjectionParams { n: n as i32, c: c as i32, hw: hw as i32 }
    }
    /// Values of `a` and of `b`: `n c`.
    pub fn rows_len(&self) -> usize {
        (self.n * self.c) as usize
    }
    /// Values of the features `h`: `n c hw`.
    pub fn features_len(&self) -> usize {
        (self.n * self.c * self.hw) as usize
    }
    /// Positive sizes (the ops refuse any other).
    pub fn check(&self) -> Result<()> {
        ensure!(self.n >= 1 && self.c >= 1 && self.hw >= 1, "projection: empty operands (n {}, c {}, hw {})", self.n, self.c, self.hw);
        Ok(())
    }
    /// The operands of the forward pass.
    pub fn check_forward<B: Core>(&self, be: &B, base: &B::Buf, a: &B::Buf, b: &B::Buf, out: &B::Buf) -> Result<()> {
        self.check()?;
        let (n, nc) = (self.n as usize, self.rows_len());
        check_operands(be, "projection", &[("base", Some(base), n), ("a", Some(a), nc), ("b", Some(b), nc), ("out", Some(out), n)])
    }
    /// The operands of the backward pass to `a` and `b`.
    pub fn check_backward_input<B: Core>(&self, be: &B, dout: &B::Buf, a: &B::Buf, b: &B::Buf, da: &B::Buf, db: &B::Buf) -> Result<()> {
        self.check()?;
        let (n, nc) = (self.n as usize, self.rows_len());
        check_operands(be, "projection", &[("dout", Some(dout), n), ("a", Some(a), nc), ("b", Some(b), nc), ("da", Some(da), nc), ("db", Some(db), nc)])
    }
    /// The operands of the backward pass to the features.
    pub fn check_backward_features<B: Core>(&self, be: &B, dpsi: &B::Buf, da: &B::Buf, dh: &B::Buf) -> Result<()> {
        self.check()?;
        let (nc, nchw) = (self.rows_len(), self.features_len());
        check_operands(be, "projection", &[("dpsi", Some(dpsi), nchw), ("da", Some(da), nc), ("dh", Some(dh), nchw)])
    }
    /// Minimal traffic of the forward pass and of the backward pass to `a` and `b`: the two
    /// rows read (and, backward, written) once.
    pub fn work(&self) -> Work {
        Work::bytes(format!("n{} c{}", self.n, self.c), 4.0 * (4 * self.rows_len() + 2 * self.n as usize) as f64)
    }
    /// Minimal traffic of the backward pass to the features: `dpsi` read, `dh` written.
    pub fn features_work(&self) -> Work {
        Work::bytes(format!("n{} c{} hw{}", self.n, self.c, self.hw), 4.0 * (2 * self.features_len() + self.rows_len()) as f64)
    }
}

/// The projection family's ops. No parameters of its own: `V` is a linear layer's.
pub trait ProjectionOps: Core {
    /// `out[i] = base[i] + sum_c a[i, c] b[i, c]`.
    fn projection_forward(&self, p: &ProjectionParams, base: &Self::Buf, a: &Self::Buf, b: &Self::Buf, out: &mut Self::Buf) -> Result<()>;
    /// Writes `da[i, c] = dout[i] b[i, c]` and `db[i, c] = dout[i] a[i, c]` (the gradient of
    /// `base` is `dout` itself: no op).
    fn projection_backward_input(
        &self,
        p: &ProjectionParams,
        dout: &Self::Buf,
        a: &Self::Buf,
        b: &Self::Buf,
        da: &mut Self::Buf,
        db: &mut Self::Buf,
    ) -> Result<()>;
    /// Writes `dh[i, c, q] = dpsi[i, c, q] + da[i, c] / hw`: the features feed both the
    /// unconditional path (gradient `dpsi`) and `a = phi(h)`, their global average pool
    /// (gradient `da`), so the pool's backward pass and the sum of the two paths are one op.
    fn projection_backward_features(&self, p: &ProjectionParams, dpsi: &Self::Buf, da: &Self::Buf, dh: &mut Self::Buf) -> Result<()>;
}
