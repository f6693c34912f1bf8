//! Cross-entropy losses of classification heads: softmax_cross_entropy (one class of
//! `classes` per row, the feature network's label heads) and sigmoid_cross_entropy
//! (independent 0/1 targets per element, its multi-label caption-word head). bce_with_logits
//! has one constant target for a whole batch; these take a target per row or per element.
//! CPU twin `cpu/cross_entropy.rs`, launch sites `cuda/ops/cross_entropy.rs`, kernels
//! `kernels/cross_entropy.cu`, checks `verify/cross_entropy.rs`.
//!
//! A head reads columns `offset .. offset + classes` of each row of a `[n, stride]` logits
//! matrix, so several heads share one linear layer's output; each head's backward writes its
//! own columns only, and together the heads write every column once.

use super::{check_operands, Core, Work};
use anyhow::{ensure, Result};
use bytemuck::{Pod, Zeroable};

/// One head over `[n, stride]` logits: columns `offset .. offset + classes`; the loss is the
/// mean over rows (softmax) or over the head's `n * classes` elements (sigmoid), times
/// `scale`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
pub struct CrossEntropyParams {
    pub n: i32,
    pub classes: i32,
    pub stride: i32,
    pub offset: i32,
    pub scale: f32,
}

impl CrossEntropyParams {
    /// The columns lie inside each row.
    pub fn check(&self) -> Result<()> {
        ensure!(
            self.n >= 1 && self.classes >= 1 && self.offset >= 0 && self.offset + self.classes <= self.stride,
            "cross-entropy head: columns {}..{} of rows of {} (n {})",
            self.offset,
            self.offset + self.classes,
            self.stride,
            self.n
        );
        Ok(())
    }
    pub fn logits_len(&self) -> usize {
        (self.n * self.stride) as usize
    }
    /// Targets of the softmax head (one class per row) or the sigmoid head (one per element).
    pub fn targets_len(&self, softmax: bool) -> usize {
        if softmax {
            self.n as usize
        } else {
            (self.n * self.classes) as usize
        }
    }
    /// The operands of a forward pass (`out`: the loss and the accuracy).
    pub fn check_forward<B: Core>(&self, be: &B, softmax: bool, logits: &B::Buf, targets: &B::Buf, out: &B::Buf) -> Result<()> {
        self.check()?;
        check_operands(
            be,
            "cross-entropy",
            &[("logits", Some(logits), self.logits_len()), ("targets", Some(targets), self.targets_len(softmax)), ("out", Some(out), 2)],
        )
    }
    /// The operands of a backward pass.
    pub fn check_backward_input<B: Core>(&self, be: &B, softmax: bool, logits: &B::Buf, targets: &B::Buf, dlogits: &B::Buf) -> Result<()> {
        self.check()?;
        check_operands(
            be,
            "cross-entropy",
            &[
                ("logits", Some(logits), self.logits_len()),
                ("targets", Some(targets), self.targets_len(softmax)),
                ("dlogits", Some(dlogits), self.logits_len()),
            ],
        )
    }
    /// Minimal traffic of a pass over `tensors` head-sized tensors.
    pub fn work(&self, tensors: f64) -> Work {
        Work::bytes(format!("n{} classes {}", self.n, self.classes), tensors * 4.0 * (self.n * self.classes) as f64)
    }
}

/// The cross_entropy family's ops. Targets are class indices stored as floats (`n` values)
/// for the softmax head, and 0/1 values (`n * classes`, row-major) for the sigmoid head.
pub trait CrossEntropyOps: Core {
    /// Writes `out[0] = scale * mean_i -ln softmax(x_i)[t_i]`, `out[1]` = the fraction of rows
    /// whose largest logit (first of ties) is the target class.
    fn softmax_cross_entropy_forward(&self, p: &CrossEntropyParams, logits: &Self::Buf, targets: &Self::Buf, out: &mut Self::Buf) -> Result<()>;
    /// Writes the head's columns of `dlogits`: `scale * (softmax(x_i) - onehot(t_i)) / n`.
    fn softmax_cross_entropy_backward_input(&self, p: &CrossEntropyParams, logits: &Self::Buf, targets: &Self::Buf, dlogits: &mut Self::Buf) -> Result<()>;
    /// Writes `out[0] = scale * mean BCE(x, t)` over the head's elements, `out[1]` = the
    /// fraction of elements with `(x > 0) == (t > 0.5)`.
    fn sigmoid_cross_entropy_forward(&self, p: &CrossEntropyParams, logits: &Self::Buf, targets: &Self::Buf, out: &mut Self::Buf) -> Result<()>;
    /// Writes the head's columns of `dlogits`: `scale * (sigmoid(x) - t) / (n * classes)`.
    fn sigmoid_cross_entropy_backward_input(&self, p: &CrossEntropyParams, logits: &Self::Buf, targets: &Self::Buf, dlogits: &mut Self::Buf) -> Result<()>;
}
