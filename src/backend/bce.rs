//! bce_with_logits: the article's loss. CPU twin `cpu/bce.rs`, launch sites
//! `cuda/ops/bce.rs`, kernels `kernels/bce.cu`, checks `verify/bce.rs`.

use super::{check_operands, Core, Work};
use anyhow::Result;
use bytemuck::{Pod, Zeroable};

/// Mean binary cross-entropy with logits against a constant `target`, times `scale`
/// (0.5 for the halved discriminator loss). The forward writes two values:
/// `[scale * mean loss, mean sigmoid(logit)]`, the second being D(x) for logging.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
pub struct BceParams {
    pub n: i32,
    pub target: f32,
    pub scale: f32,
}

impl BceParams {
    /// Minimal traffic of a pass over `tensors` logit-sized tensors.
    pub fn work(&self, tensors: f64) -> Work {
        Work::bytes(format!("n{}", self.n), tensors * 4.0 * self.n as f64)
    }
    /// The operands of the forward pass (`out`: the loss and the mean probability).
    pub fn check_forward<B: Core>(&self, be: &B, logits: &B::Buf, out: &B::Buf) -> Result<()> {
        check_operands(be, "bce", &[("logits", Some(logits), self.n as usize), ("out", Some(out), 2)])
    }
    /// The operands of the backward pass.
    pub fn check_backward_input<B: Core>(&self, be: &B, logits: &B::Buf, dlogits: &B::Buf) -> Result<()> {
        check_operands(be, "bce", &[("logits", Some(logits), self.n as usize), ("dlogits", Some(dlogits), self.n as usize)])
    }
}

/// The bce family's ops.
pub trait BceOps: Core {
    /// Writes `out[0] = scale * mean BCE`, `out[1] = mean sigmoid(logits)`.
    fn bce_with_logits_forward(&self, p: &BceParams, logits: &Self::Buf, out: &mut Self::Buf) -> Result<()>;
    /// Writes `dlogits = scale * (sigmoid(logits) - target) / n`.
    fn bce_with_logits_backward_input(&self, p: &BceParams, logits: &Self::Buf, dlogits: &mut Self::Buf) -> Result<()>;
}
