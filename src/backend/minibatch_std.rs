//! minibatch_std: ProGAN's minibatch standard deviation (Karras et al. 2018, section 3), one
//! more channel for the discriminator that says how much the samples of a batch differ. CPU
//! twin `cpu/minibatch_std.rs`, launch sites `cuda/ops/minibatch_std.rs`, kernels
//! `kernels/minibatch_std.cu`, checks `verify/minibatch_std.rs`.

use super::{check_operands, Core, Work};
use anyhow::{ensure, Result};
use bytemuck::{Pod, Zeroable};

/// Added to each variance before its square root (ProGAN's 1e-8).
pub const MINIBATCH_STD_EPS: f32 = 1e-8;

/// `x[n, c, hw]` -> `y[n, c + 1, hw]`: `x` with one more channel. The batch is cut into
/// groups of `group` samples, `m = n / group` of them; as in ProGAN's reshape to
/// `[group, m, ...]`, sample `i` belongs to group column `i % m`. For each column and each
/// `(c, q)`: the standard deviation over the column's samples, `sqrt(var + 1e-8)` with `var`
/// the mean of squared deviations; `s[col]` is the mean of those over `c` and `hw`, and
/// the extra channel of sample `i` is `s[i % m]` everywhere on its grid.
///
/// `group` always divides `n` ([`MinibatchStdParams::new`] picks the largest divisor of
/// `n` not above the requested group; a batch of 6 with the usual request of 4 gets groups
/// of 3). A group of 1 is allowed: every deviation is zero and the channel is the constant
/// `sqrt(1e-8)`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
pub struct MinibatchStdParams {
    pub n: i32,
    pub c: i32,
    pub hw: i32,
    /// Samples per group; divides `n`.
    pub group: i32,
}

impl MinibatchStdParams {
    /// Groups of the largest divisor of `n` that is at most `requested` (at least 1).
    pub fn new(n: usize, c: usize, hw: usize, requested: usize) -> MinibatchStdParams {
        MinibatchStdParams { n: n as i32, c: c as i32, hw: hw as i32, group: effective_group(n, requested) as i32 }
    }
    /// Group columns: `n / group`.
    pub fn columns(&self) -> usize {
        (self.n / self.group.max(1)) as usize
    }
    pub fn in_len(&self) -> usize {
        (self.n * self.c * self.hw) as usize
    }
    pub fn out_len(&self) -> usize {
        (self.n * (self.c + 1) * self.hw) as usize
    }
    /// A group that divides the batch (the ops refuse any other).
    pub fn check(&self) -> Result<()> {
        ensure!(
            self.group >= 1 && self.n >= 1 && self.n % self.group == 0 && self.c >= 1 && self.hw >= 1,
            "minibatch_std: a group of {} does not divide a batch of {} (or the {}x{} input is empty)",
            self.group,
            self.n,
            self.c,
            self.hw
        );
        Ok(())
    }
    /// The operands of the forward pass.
    pub fn check_forward<B: Core>(&self, be: &B, x: &B::Buf, y: &B::Buf) -> Result<()> {
        self.check()?;
        check_operands(be, "minibatch_std", &[("x", Some(x), self.in_len()), ("y", Some(y), self.out_len())])
    }
    /// The operands of the backward pass.
    pub fn check_backward_input<B: Core>(&self, be: &B, x: &B::Buf, dy: &B::Buf, dx: &B::Buf) -> Result<()> {
        self.check()?;
        check_operands(be, "minibatch_std", &[("x", Some(x), self.in_len()), ("dy", Some(dy), self.out_len()), ("dx", Some(dx), self.in_len())])
    }
    /// Minimal traffic of a pass: the input read and the output written once (the
    /// backward pass reads `x` and `dy`, writes `dx`: about the same).
    pub fn work(&self) -> Work {
        Work::bytes(format!("n{} c{} hw{} group{}", self.n, self.c, self.hw, self.group), 4.0 * (self.in_len() + self.out_len()) as f64)
    }
}

/// The largest divisor of `n` that is at most `requested` (1 when `requested` is 0 or `n`
/// is 0).
pub fn effective_group(n: usize, requested: usize) -> usize {
    (1..=requested.min(n)).rev().find(|g| n.is_multiple_of(*g)).unwrap_or(1)
}

/// The minibatch_std family's ops. No parameters: the backward pass is the input gradient.
pub trait MinibatchStdOps: Core {
    /// `y = [x, s[i % m]]` (see [`MinibatchStdParams`]).
    fn minibatch_std_forward(&self, p: &MinibatchStdParams, x: &Self::Buf, y: &mut Self::Buf) -> Result<()>;
    /// Writes `dx = dy[:, :c] + ds[col] / (c hw) * (x - mean) / (group * std)`, with
    /// `ds[col]` the sum of the extra channel's `dy` over the column's samples and the grid,
    /// and `mean`, `std` those of `x`'s column at the same `(c, q)` (recomputed from `x`).
    fn minibatch_std_backward_input(&self, p: &MinibatchStdParams, x: &Self::Buf, dy: &Self::Buf, dx: &mut Self::Buf) -> Result<()>;
}
