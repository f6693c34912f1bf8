//! linear (PyTorch layout). CPU twin `cpu/linear.rs`, launch sites `cuda/ops/linear.rs`,
//! kernels `kernels/linear.cu`, checks `verify/linear.rs`.

use super::{check_operands, Core, Work};
use anyhow::Result;
use bytemuck::{Pod, Zeroable};

/// `y[n, out] = sum_i x[n, in] * w[out, in] + b[out]` (PyTorch Linear layout).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
pub struct LinearParams {
    pub n: i32,
    pub in_features: i32,
    pub out_features: i32,
}

impl LinearParams {
    fn dims(&self) -> (usize, usize, usize) {
        (self.n as usize, self.in_features as usize, self.out_features as usize)
    }
    /// The operands of the forward pass.
    pub fn check_forward<B: Core>(&self, be: &B, x: &B::Buf, w: &B::Buf, b: Option<&B::Buf>, y: &B::Buf) -> Result<()> {
        let (n, i, o) = self.dims();
        check_operands(be, "linear", &[("x", Some(x), n * i), ("w", Some(w), o * i), ("bias", b, o), ("y", Some(y), n * o)])
    }
    /// The operands of the input-gradient pass.
    pub fn check_backward_input<B: Core>(&self, be: &B, dy: &B::Buf, w: &B::Buf, dx: &B::Buf) -> Result<()> {
        let (n, i, o) = self.dims();
        check_operands(be, "linear", &[("dy", Some(dy), n * o), ("w", Some(w), o * i), ("dx", Some(dx), n * i)])
    }
    /// The operands of the parameter-gradient pass.
    pub fn check_backward_params<B: Core>(&self, be: &B, x: &B::Buf, dy: &B::Buf, dw: &B::Buf, db: Option<&B::Buf>) -> Result<()> {
        let (n, i, o) = self.dims();
        check_operands(be, "linear", &[("x", Some(x), n * i), ("dy", Some(dy), n * o), ("dw", Some(dw), o * i), ("db", db, o)])
    }
    /// The work of any pass (all three do the same multiply-adds).
    pub fn work(&self) -> Work {
        let flop = 2.0 * (self.n as f64) * (self.in_features as f64) * (self.out_features as f64);
        Work::flop(format!("n{} {} -> {}", self.n, self.in_features, self.out_features), flop)
    }
}

/// The linear family's ops. `backward_params` accumulates: `dw += ...`, `db += ...`.
pub trait LinearOps: Core {
    fn linear_forward(&self, p: &LinearParams, x: &Self::Buf, w: &Self::Buf, b: Option<&Self::Buf>, y: &mut Self::Buf) -> Result<()>;
    fn linear_backward_input(&self, p: &LinearParams, dy: &Self::Buf, w: &Self::Buf, dx: &mut Self::Buf) -> Result<()>;
    fn linear_backward_params(&self, p: &LinearParams, x: &Self::Buf, dy: &Self::Buf, dw: &mut Self::Buf, db: Option<&mut Self::Buf>) -> Result<()>;
}
