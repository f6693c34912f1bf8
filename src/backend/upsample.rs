//! upsample_nearest: nearest-neighbour upsampling by an integer factor `k` (ProGAN doubles
//! the resolution of each new generator block with `k = 2`). CPU twin `cpu/upsample.rs`,
//! launch sites `cuda/ops/upsample.rs`, kernels `kernels/upsample.cu`, checks
//! `verify/upsample.rs`.

use super::{check_operands, Core, Work};
use anyhow::{ensure, Result};
use bytemuck::{Pod, Zeroable};

/// Nearest-neighbour upsampling of `[n, c, h_in, w_in]` by `k` into
/// `[n, c, h_in k, w_in k]`: `y[.., i, j] = x[.., i / k, j / k]`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
pub struct UpsampleParams {
    pub n: i32,
    pub c: i32,
    pub h_in: i32,
    pub w_in: i32,
    pub k: i32,
}

impl UpsampleParams {
    /// Factor `k`; refuses `k = 0` and an output of more than `i32::MAX` values.
    pub fn new(n: usize, c: usize, h_in: usize, w_in: usize, k: usize) -> Result<UpsampleParams> {
        ensure!(k > 0, "upsample_nearest: the factor must be at least 1 (got 0)");
        let out = [c, h_in, k, w_in, k].iter().try_fold(n, |a, &b| a.checked_mul(b));
        ensure!(out.is_some_and(|l| l <= i32::MAX as usize), "upsample_nearest: {n}x{c}x{h_in}x{w_in} upsampled by {k} is more than {} values", i32::MAX);
        Ok(UpsampleParams { n: n as i32, c: c as i32, h_in: h_in as i32, w_in: w_in as i32, k: k as i32 })
    }
    pub fn h_out(&self) -> usize {
        (self.h_in * self.k) as usize
    }
    pub fn w_out(&self) -> usize {
        (self.w_in * self.k) as usize
    }
    pub fn in_len(&self) -> usize {
        (self.n * self.c * self.h_in * self.w_in) as usize
    }
    pub fn out_len(&self) -> usize {
        (self.n * self.c) as usize * self.h_out() * self.w_out()
    }
    /// A factor of at least 1 (the ops refuse any other).
    pub fn check(&self) -> Result<()> {
        ensure!(self.k > 0, "upsample_nearest: the factor must be at least 1 (got {})", self.k);
        Ok(())
    }
    /// The operands of the forward pass.
    pub fn check_forward<B: Core>(&self, be: &B, x: &B::Buf, y: &B::Buf) -> Result<()> {
        self.check()?;
        check_operands(be, "upsample_nearest", &[("x", Some(x), self.in_len()), ("y", Some(y), self.out_len())])
    }
    /// The operands of the backward pass.
    pub fn check_backward_input<B: Core>(&self, be: &B, dy: &B::Buf, dx: &B::Buf) -> Result<()> {
        self.check()?;
        check_operands(be, "upsample_nearest", &[("dy", Some(dy), self.out_len()), ("dx", Some(dx), self.in_len())])
    }
    /// Minimal traffic of a pass: the input and the output, each read or written once.
    pub fn work(&self) -> Work {
        Work::bytes(format!("n{} c{} {}x{} k{}", self.n, self.c, self.h_in, self.w_in, self.k), 4.0 * (self.in_len() + self.out_len()) as f64)
    }
}

/// The upsample family's ops.
pub trait UpsampleOps: Core {
    /// Writes `y[.., i, j] = x[.., i / k, j / k]`.
    fn upsample_nearest_forward(&self, p: &UpsampleParams, x: &Self::Buf, y: &mut Self::Buf) -> Result<()>;
    /// Writes `dx` = the sum of `dy` over each `k x k` block (row by row, the same order on
    /// every backend).
    fn upsample_nearest_backward_input(&self, p: &UpsampleParams, dy: &Self::Buf, dx: &mut Self::Buf) -> Result<()>;
}
