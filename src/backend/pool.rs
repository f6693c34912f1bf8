//! avg_pool2d: mean over non-overlapping k x k windows (stride k); k equal to the plane's
//! side is the global average pool. The feature network of `gan-engine eval` uses both (and
//! the 2x2 pool brings 64 and 128 px images down to its 32 px input). CPU twin
//! `cpu/pool.rs`, launch sites `cuda/ops/pool.rs`, kernels `kernels/pool.cu`, checks
//! `verify/pool.rs`.

use super::{check_operands, Core, Work};
use anyhow::{ensure, Result};
use bytemuck::{Pod, Zeroable};

/// Average pooling of `[n, c, h_in, w_in]` over `k x k` windows with stride `k`, into
/// `[n, c, h_in / k, w_in / k]`; `k` divides both sides.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
pub struct PoolParams {
    pub n: i32,
    pub c: i32,
    pub h_in: i32,
    pub w_in: i32,
    pub k: i32,
}

impl PoolParams {
    /// `k x k` windows; refuses a `k` that does not divide both sides.
    pub fn new(n: usize, c: usize, h_in: usize, w_in: usize, k: usize) -> Result<PoolParams> {
        ensure!(k > 0 && h_in.is_multiple_of(k) && w_in.is_multiple_of(k), "avg_pool2d: a {k}x{k} window does not tile a {h_in}x{w_in} plane");
        Ok(PoolParams { n: n as i32, c: c as i32, h_in: h_in as i32, w_in: w_in as i32, k: k as i32 })
    }
    /// The global average pool of a square plane: one value per channel.
    pub fn global(n: usize, c: usize, side: usize) -> PoolParams {
        PoolParams { n: n as i32, c: c as i32, h_in: side as i32, w_in: side as i32, k: side as i32 }
    }
    pub fn h_out(&self) -> usize {
        (self.h_in / self.k.max(1)) as usize
    }
    pub fn w_out(&self) -> usize {
        (self.w_in / self.k.max(1)) as usize
    }
    pub fn in_len(&self) -> usize {
        (self.n * self.c * self.h_in * self.w_in) as usize
    }
    pub fn out_len(&self) -> usize {
        (self.n * self.c) as usize * self.h_out() * self.w_out()
    }
    /// A window that tiles the plane (the ops refuse any other).
    pub fn check(&self) -> Result<()> {
        ensure!(
            self.k > 0 && self.h_in % self.k == 0 && self.w_in % self.k == 0,
            "avg_pool2d: a {0}x{0} window does not tile a {1}x{2} plane",
            self.k,
            self.h_in,
            self.w_in
        );
        Ok(())
    }
    /// The operands of the forward pass.
    pub fn check_forward<B: Core>(&self, be: &B, x: &B::Buf, y: &B::Buf) -> Result<()> {
        self.check()?;
        check_operands(be, "avg_pool2d", &[("x", Some(x), self.in_len()), ("y", Some(y), self.out_len())])
    }
    /// The operands of the backward pass.
    pub fn check_backward_input<B: Core>(&self, be: &B, dy: &B::Buf, dx: &B::Buf) -> Result<()> {
        self.check()?;
        check_operands(be, "avg_pool2d", &[("dy", Some(dy), self.out_len()), ("dx", Some(dx), self.in_len())])
    }
    /// Minimal traffic of a pass: the input and the output, each read or written once.
    pub fn work(&self) -> Work {
        Work::bytes(format!("n{} c{} {}x{} k{}", self.n, self.c, self.h_in, self.w_in, self.k), 4.0 * (self.in_len() + self.out_len()) as f64)
    }
}

/// The pool family's ops.
pub trait PoolOps: Core {
    /// `y = mean of each window of x`.
    fn avg_pool2d_forward(&self, p: &PoolParams, x: &Self::Buf, y: &mut Self::Buf) -> Result<()>;
    /// Writes `dx = dy of its window / k^2`.
    fn avg_pool2d_backward_input(&self, p: &PoolParams, dy: &Self::Buf, dx: &mut Self::Buf) -> Result<()>;
}
