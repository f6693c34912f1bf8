//! batchnorm2d, optionally with a fused ReLU or LeakyReLU. CPU twin `cpu/batchnorm.rs`,
//! launch sites `cuda/ops/batchnorm.rs`, kernels `kernels/batchnorm.cu`, checks
//! `verify/batchnorm.rs`.

use super::{check_operands, Core, Work};
use anyhow::Result;
use bytemuck::{Pod, Zeroable};

/// The activation fused into batchnorm's output (`BatchNormParams::act`).
pub const BN_ACT_NONE: i32 = 0;
pub const BN_ACT_RELU: i32 = 1;
pub const BN_ACT_LEAKY_RELU: i32 = 2;

/// Batchnorm over `n x c x hw`, statistics per channel, optionally followed by a fused
/// ReLU or LeakyReLU: the forward writes `act(bn(x))` in the same pass, and the backward
/// ops take that output `y` and apply the activation's derivative (read from the sign of
/// `y`, as the standalone activations do) to `dy` on the fly. One pass over the
/// activations fewer each way, and one buffer fewer per layer.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
pub struct BatchNormParams {
    pub n: i32,
    pub c: i32,
    pub hw: i32,
    pub eps: f32,
    /// PyTorch convention: `running = (1 - momentum) * running + momentum * batch`, with
    /// the unbiased batch variance going into `running_var`.
    pub momentum: f32,
    /// `BN_ACT_NONE`, `BN_ACT_RELU` or `BN_ACT_LEAKY_RELU`.
    pub act: i32,
    /// Negative slope for `BN_ACT_LEAKY_RELU`.
    pub slope: f32,
}

impl BatchNormParams {
    /// Plain batchnorm (no fused activation).
    pub fn new(n: usize, c: usize, hw: usize, eps: f32, momentum: f32) -> Self {
        BatchNormParams { n: n as i32, c: c as i32, hw: hw as i32, eps, momentum, act: BN_ACT_NONE, slope: 0.0 }
    }
    pub fn with_act(self, act: i32, slope: f32) -> Self {
        BatchNormParams { act, slope, ..self }
    }
    /// A known fused activation, and room for its output `y` (of `y_len` values) when
    /// one is fused: the backward ops read `y` only then.
    pub fn check_act(&self, y_len: usize) -> Result<()> {
        anyhow::ensure!((BN_ACT_NONE..=BN_ACT_LEAKY_RELU).contains(&self.act), "batchnorm2d: unknown fused activation {}", self.act);
        anyhow::ensure!(self.act == BN_ACT_NONE || y_len >= self.len(), "batchnorm2d y: buffer holds {y_len} values, op needs {}", self.len());
        Ok(())
    }
    /// `""`, `" +relu"` or `" +leaky<slope>"`, for shape labels in tables.
    pub fn act_label(&self) -> String {
        match self.act {
            BN_ACT_RELU => " +relu".to_string(),
            BN_ACT_LEAKY_RELU => format!(" +leaky{}", self.slope),
            _ => String::new(),
        }
    }
    /// The fused activation's derivative, given its output `y`.
    #[inline(always)]
    pub fn act_grad(&self, y_positive: bool) -> f32 {
        match self.act {
            BN_ACT_RELU if !y_positive => 0.0,
            BN_ACT_LEAKY_RELU if !y_positive => self.slope,
            _ => 1.0,
        }
    }
    pub fn len(&self) -> usize {
        (self.n * self.c * self.hw) as usize
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// `n64 c128 hw256 +leaky0.2`, for tables.
    pub fn label(&self) -> String {
        format!("n{} c{} hw{}{}", self.n, self.c, self.hw, self.act_label())
    }
    /// Minimal traffic of a pass that reads `tensors - 1` and writes one activation-sized
    /// tensor.
    pub fn work(&self, tensors: f64) -> Work {
        Work::bytes(self.label(), tensors * 4.0 * self.len() as f64)
    }

    /// The operands of the training forward pass.
    #[allow(clippy::too_many_arguments)]
    pub fn check_forward_train<B: Core>(
        &self,
        be: &B,
        x: &B::Buf,
        gamma: &B::Buf,
        beta: &B::Buf,
        running_mean: &B::Buf,
        running_var: &B::Buf,
        mean: &B::Buf,
        invstd: &B::Buf,
        y: &B::Buf,
    ) -> Result<()> {
        self.check_act(be.len(y))?;
        let (c, len) = (self.c as usize, self.len());
        check_operands(
            be,
            "batchnorm2d",
            &[
                ("x", Some(x), len),
                ("y", Some(y), len),
                ("gamma", Some(gamma), c),
                ("beta", Some(beta), c),
                ("running_mean", Some(running_mean), c),
                ("running_var", Some(running_var), c),
                ("mean", Some(mean), c),
                ("invstd", Some(invstd), c),
            ],
        )
    }
    /// The operands of the inference forward pass.
    #[allow(clippy::too_many_arguments)]
    pub fn check_forward_infer<B: Core>(
        &self,
        be: &B,
        x: &B::Buf,
        gamma: &B::Buf,
        beta: &B::Buf,
        running_mean: &B::Buf,
        running_var: &B::Buf,
        y: &B::Buf,
    ) -> Result<()> {
        self.check_act(be.len(y))?;
        let (c, len) = (self.c as usize, self.len());
        check_operands(
            be,
            "batchnorm2d",
            &[
                ("x", Some(x), len),
                ("y", Some(y), len),
                ("gamma", Some(gamma), c),
                ("beta", Some(beta), c),
                ("running_mean", Some(running_mean), c),
                ("running_var", Some(running_var), c),
            ],
        )
    }
    /// The operands of the input-gradient pass (`y` is read only with a fused activation).
    #[allow(clippy::too_many_arguments)]
    pub fn check_backward_input<B: Core>(
        &self,
        be: &B,
        x: &B::Buf,
        y: &B::Buf,
        dy: &B::Buf,
        gamma: &B::Buf,
        mean: &B::Buf,
        invstd: &B::Buf,
        sums: &B::Buf,
        dx: &B::Buf,
    ) -> Result<()> {
        self.check_act(be.len(y))?;
        let (c, len) = (self.c as usize, self.len());
        check_operands(
            be,
            "batchnorm2d",
            &[
                ("x", Some(x), len),
                ("dy", Some(dy), len),
                ("dx", Some(dx), len),
                ("sums", Some(sums), 2 * c),
                ("gamma", Some(gamma), c),
                ("mean", Some(mean), c),
                ("invstd", Some(invstd), c),
            ],
        )
    }
    /// The operands of the parameter-gradient pass.
    pub fn check_backward_params<B: Core>(&self, be: &B, sums: &B::Buf, dgamma: &B::Buf, dbeta: &B::Buf) -> Result<()> {
        let c = self.c as usize;
        check_operands(be, "batchnorm2d", &[("sums", Some(sums), 2 * c), ("dgamma", Some(dgamma), c), ("dbeta", Some(dbeta), c)])
    }
}

/// The batchnorm family's ops.
pub trait BatchNormOps: Core {
    /// Training mode: batch statistics; saves `mean` and `invstd` per channel and updates
    /// the running statistics. Writes `y = act(bn(x))`.
    #[allow(clippy::too_many_arguments)]
    fn batchnorm2d_forward_train(
        &self,
        p: &BatchNormParams,
        x: &Self::Buf,
        gamma: &Self::Buf,
        beta: &Self::Buf,
        running_mean: &mut Self::Buf,
        running_var: &mut Self::Buf,
        mean: &mut Self::Buf,
        invstd: &mut Self::Buf,
        y: &mut Self::Buf,
    ) -> Result<()>;
    /// Inference mode: normalises with the running statistics.
    #[allow(clippy::too_many_arguments)]
    fn batchnorm2d_forward_infer(
        &self,
        p: &BatchNormParams,
        x: &Self::Buf,
        gamma: &Self::Buf,
        beta: &Self::Buf,
        running_mean: &Self::Buf,
        running_var: &Self::Buf,
        y: &mut Self::Buf,
    ) -> Result<()>;
    /// Input gradient of training-mode batchnorm (through the batch statistics) and its
    /// fused activation; `y` is the forward's output (unread without an activation).
    /// Also writes the per-channel sums the input gradient is built from, `sums[c] =
    /// sum(g)` and `sums[C + c] = sum(g * xhat)` with `g = dy * act'(y)`: exactly the
    /// parameter gradients, so `backward_params` needs no second pass over the activations.
    #[allow(clippy::too_many_arguments)]
    fn batchnorm2d_backward_input(
        &self,
        p: &BatchNormParams,
        x: &Self::Buf,
        y: &Self::Buf,
        dy: &Self::Buf,
        gamma: &Self::Buf,
        mean: &Self::Buf,
        invstd: &Self::Buf,
        sums: &mut Self::Buf,
        dx: &mut Self::Buf,
    ) -> Result<()>;
    /// `dgamma += sums[C..2C]`, `dbeta += sums[..C]`: the sums written by the
    /// `batchnorm2d_backward_input` call of the same backward step.
    fn batchnorm2d_backward_params(&self, p: &BatchNormParams, sums: &Self::Buf, dgamma: &mut Self::Buf, dbeta: &mut Self::Buf) -> Result<()>;
}
