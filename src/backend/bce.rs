//! bce_with_logits: the article's loss. CPU twin `cpu/bce.rs`, launch sites
//! `cuda/ops/bce.rs`, kernels `kernels/bce.cu`, checks `verify/bce.rs`.

use super::{Core, Work};
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
}

/// The bce family's ops.
pub trait BceOps: Core {
    /// Writes `out[0] = scale * mean BCE`, `out[1] = mean sigmoid(logits)`.
    fn bce_with_logits_forward(&self, p: &BceParams, logits: &Self::Buf, out: &mut Self::Buf) -> Result<()>;
    /// Writes `dlogits = scale * (sigmoid(logits) - target) / n`.
    fn bce_with_logits_backward_input(&self, p: &BceParams, logits: &Self::Buf, dlogits: &mut Self::Buf) -> Result<()>;
}
