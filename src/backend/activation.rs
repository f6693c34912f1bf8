//! relu, leaky_relu and tanh, each with a backward from the saved output (which is enough
//! for all three). CPU twin `cpu/activation.rs`, launch sites `cuda/ops/activation.rs`,
//! kernels `kernels/activation.cu`, checks `verify/activation.rs`.

use super::{check_operands, Core, Work};
use anyhow::Result;
use bytemuck::{Pod, Zeroable};

/// Elementwise activations over `len` values. `slope` is the negative slope of leaky_relu.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
pub struct ActParams {
    pub len: i32,
    pub slope: f32,
}

impl ActParams {
    /// Minimal traffic of a pass over `tensors` activation-sized tensors.
    pub fn work(&self, tensors: f64) -> Work {
        Work::bytes(format!("{} values", self.len), tensors * 4.0 * self.len as f64)
    }

    /// The operands of a forward pass `y = f(x)` of the op `op`.
    pub fn check_forward<B: Core>(&self, be: &B, op: &str, x: &B::Buf, y: &B::Buf) -> Result<()> {
        let n = self.len as usize;
        check_operands(be, op, &[("x", Some(x), n), ("y", Some(y), n)])
    }
    /// The operands of a backward pass `dx = f(y, dy)` of the op `op`.
    pub fn check_backward<B: Core>(&self, be: &B, op: &str, y: &B::Buf, dy: &B::Buf, dx: &B::Buf) -> Result<()> {
        let n = self.len as usize;
        check_operands(be, op, &[("y", Some(y), n), ("dy", Some(dy), n), ("dx", Some(dx), n)])
    }
}

/// The activation family's ops.
pub trait ActivationOps: Core {
    fn relu_forward(&self, p: &ActParams, x: &Self::Buf, y: &mut Self::Buf) -> Result<()>;
    fn relu_backward_input(&self, p: &ActParams, y: &Self::Buf, dy: &Self::Buf, dx: &mut Self::Buf) -> Result<()>;
    fn leaky_relu_forward(&self, p: &ActParams, x: &Self::Buf, y: &mut Self::Buf) -> Result<()>;
    fn leaky_relu_backward_input(&self, p: &ActParams, y: &Self::Buf, dy: &Self::Buf, dx: &mut Self::Buf) -> Result<()>;
    fn tanh_forward(&self, p: &ActParams, x: &Self::Buf, y: &mut Self::Buf) -> Result<()>;
    fn tanh_backward_input(&self, p: &ActParams, y: &Self::Buf, dy: &Self::Buf, dx: &mut Self::Buf) -> Result<()>;
}
