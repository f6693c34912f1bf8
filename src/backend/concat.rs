//! concat_tile: a feature map joined with a vector tiled over its grid. CPU twin
//! `cpu/concat.rs`, launch sites `cuda/ops/concat.rs`, kernels `kernels/concat.cu`, checks
//! `verify/concat.rs`.

use super::{check_operands, Core, Work};
use anyhow::Result;
use bytemuck::{Pod, Zeroable};

/// Channel concat of an image `a[n, c_a, hw]` with a vector `b[n, c_b]` tiled over the
/// `hw` grid: `y[n, c_a + c_b, hw]`. With `hw = 1` it is a plain feature concat
/// (noise ++ text for the generator).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
pub struct ConcatParams {
    pub n: i32,
    pub c_a: i32,
    pub c_b: i32,
    pub hw: i32,
}

impl ConcatParams {
    pub fn out_len(&self) -> usize {
        (self.n * (self.c_a + self.c_b) * self.hw) as usize
    }
    /// Values of the image input `a` and of the vector input `b`.
    pub fn in_lens(&self) -> (usize, usize) {
        ((self.n * self.c_a * self.hw) as usize, (self.n * self.c_b) as usize)
    }
    /// The operands of the forward pass.
    pub fn check_forward<B: Core>(&self, be: &B, a: &B::Buf, b: &B::Buf, y: &B::Buf) -> Result<()> {
        let (la, lb) = self.in_lens();
        check_operands(be, "concat_tile", &[("a", Some(a), la), ("b", Some(b), lb), ("y", Some(y), self.out_len())])
    }
    /// The operands of the backward pass.
    pub fn check_backward_input<B: Core>(&self, be: &B, dy: &B::Buf, da: &B::Buf, db: &B::Buf) -> Result<()> {
        let (la, lb) = self.in_lens();
        check_operands(be, "concat_tile", &[("dy", Some(dy), self.out_len()), ("da", Some(da), la), ("db", Some(db), lb)])
    }
    /// Minimal traffic of either pass: the joined tensor read or written once, and as much again.
    pub fn work(&self) -> Work {
        Work::bytes(format!("n{} {}+{} hw{}", self.n, self.c_a, self.c_b, self.hw), 2.0 * 4.0 * self.out_len() as f64)
    }
}

/// The concat family's ops.
pub trait ConcatOps: Core {
    fn concat_tile_forward(&self, p: &ConcatParams, a: &Self::Buf, b: &Self::Buf, y: &mut Self::Buf) -> Result<()>;
    /// Writes both input gradients: `da` is a slice of `dy`, `db` sums `dy` over the grid.
    fn concat_tile_backward_input(&self, p: &ConcatParams, dy: &Self::Buf, da: &mut Self::Buf, db: &mut Self::Buf) -> Result<()>;
}
