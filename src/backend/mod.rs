//! The op contract.
//!
//! Every op with parameters has three passes: `forward`, `backward_input` and
//! `backward_params`. Gradient rule: parameter gradients accumulate (`+=`) and are
//! zeroed once per optimizer step; activation gradients are written (`=`). A frozen
//! layer runs `backward_input` only, which is the whole weight-freeze mechanism.
//!
//! Storage is NCHW. The op parameter structs are `#[repr(C)]` and declared identically
//! in `kernels/common.cuh`, so a kernel receives exactly one struct by value.
//!
//! `nn/` and `model/` speak only this trait; they never know which backend runs.

pub mod cpu;
pub mod cuda;
pub mod device;

use anyhow::Result;

/// Convolution and transposed convolution shapes. For `conv_transpose2d`, `c_in, h_in,
/// w_in` describe the (small) input and `h_out = (h_in - 1) * stride - 2 * pad + k`.
/// The weight is `[c_out, c_in, k, k]` for conv2d and `[c_in, c_out, k, k]` for
/// conv_transpose2d (PyTorch layouts).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvParams {
    pub n: i32,
    pub c_in: i32,
    pub h_in: i32,
    pub w_in: i32,
    pub c_out: i32,
    pub h_out: i32,
    pub w_out: i32,
    pub k: i32,
    pub stride: i32,
    pub pad: i32,
}

impl ConvParams {
    /// Shape of a conv2d with square kernel on an `h x w` input.
    #[allow(clippy::too_many_arguments)]
    pub fn conv2d(n: usize, c_in: usize, h: usize, w: usize, c_out: usize, k: usize, stride: usize, pad: usize) -> Self {
        let h_out = (h + 2 * pad - k) / stride + 1;
        let w_out = (w + 2 * pad - k) / stride + 1;
        Self::raw(n, c_in, h, w, c_out, h_out, w_out, k, stride, pad)
    }
    /// Shape of a conv_transpose2d with square kernel on an `h x w` input.
    #[allow(clippy::too_many_arguments)]
    pub fn conv_transpose2d(n: usize, c_in: usize, h: usize, w: usize, c_out: usize, k: usize, stride: usize, pad: usize) -> Self {
        let h_out = (h - 1) * stride + k - 2 * pad;
        let w_out = (w - 1) * stride + k - 2 * pad;
        Self::raw(n, c_in, h, w, c_out, h_out, w_out, k, stride, pad)
    }
    #[allow(clippy::too_many_arguments)]
    fn raw(n: usize, c_in: usize, h_in: usize, w_in: usize, c_out: usize, h_out: usize, w_out: usize, k: usize, stride: usize, pad: usize) -> Self {
        let i = |v: usize| v as i32;
        ConvParams {
            n: i(n),
            c_in: i(c_in),
            h_in: i(h_in),
            w_in: i(w_in),
            c_out: i(c_out),
            h_out: i(h_out),
            w_out: i(w_out),
            k: i(k),
            stride: i(stride),
            pad: i(pad),
        }
    }
    pub fn with_batch(mut self, n: usize) -> Self {
        self.n = n as i32;
        self
    }
    pub fn in_len(&self) -> usize {
        (self.n * self.c_in * self.h_in * self.w_in) as usize
    }
    pub fn out_len(&self) -> usize {
        (self.n * self.c_out * self.h_out * self.w_out) as usize
    }
    pub fn weight_len(&self) -> usize {
        (self.c_in * self.c_out * self.k * self.k) as usize
    }
    /// Multiply-adds of the forward pass for the whole batch. The same count holds for
    /// conv2d (per output) and conv_transpose2d (per input), given the right shapes.
    pub fn conv2d_macs(&self) -> u64 {
        (self.n as u64) * (self.c_out * self.h_out * self.w_out) as u64 * (self.c_in * self.k * self.k) as u64
    }
    pub fn conv_transpose2d_macs(&self) -> u64 {
        (self.n as u64) * (self.c_in * self.h_in * self.w_in) as u64 * (self.c_out * self.k * self.k) as u64
    }
}

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
#[derive(Clone, Copy, Debug, PartialEq)]
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
}

/// Elementwise activations. `slope` is the negative slope of leaky_relu.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ActParams {
    pub len: i32,
    pub slope: f32,
}

/// `y[n, out] = sum_i x[n, in] * w[out, in] + b[out]` (PyTorch Linear layout).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinearParams {
    pub n: i32,
    pub in_features: i32,
    pub out_features: i32,
}

/// Channel concat of an image `a[n, c_a, hw]` with a vector `b[n, c_b]` tiled over the
/// `hw` grid: `y[n, c_a + c_b, hw]`. With `hw = 1` it is a plain feature concat
/// (noise ++ text for the generator).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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
}

/// Mean binary cross-entropy with logits against a constant `target`, times `scale`
/// (0.5 for the halved discriminator loss). The forward writes two values:
/// `[scale * mean loss, mean sigmoid(logit)]`, the second being D(x) for logging.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BceParams {
    pub n: i32,
    pub target: f32,
    pub scale: f32,
}

/// One bias-corrected Adam step over `len` values.
/// `bc1 = 1 - beta1^t`, `bc2 = 1 - beta2^t` are computed on the host.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamParams {
    pub len: i32,
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub bc1: f32,
    pub bc2: f32,
}

/// The op contract. Buffers are flat and typed by the backend (`f32` on the GPU, `f32`
/// or `f64` on the CPU); outputs are `&mut` and fully written unless the doc says the
/// op accumulates.
pub trait Backend: 'static {
    type Buf;

    fn name(&self) -> String;

    // ---- memory --------------------------------------------------------------------
    /// A zeroed buffer of `len` elements.
    fn alloc(&self, len: usize) -> Result<Self::Buf>;
    fn len(&self, buf: &Self::Buf) -> usize;
    fn upload(&self, dst: &mut Self::Buf, src: &[f32]) -> Result<()>;
    fn download(&self, src: &Self::Buf, dst: &mut [f32]) -> Result<()>;
    /// Exact transfers for gradient checks (lossless on an f64 backend).
    fn upload_f64(&self, dst: &mut Self::Buf, src: &[f64]) -> Result<()>;
    fn download_f64(&self, src: &Self::Buf, dst: &mut [f64]) -> Result<()>;
    fn fill(&self, buf: &mut Self::Buf, value: f32) -> Result<()>;
    /// Waits for queued work (a no-op on the CPU).
    fn synchronize(&self) -> Result<()> {
        Ok(())
    }

    // ---- conv2d ----------------------------------------------------------------------
    fn conv2d_forward(&self, p: &ConvParams, x: &Self::Buf, w: &Self::Buf, bias: Option<&Self::Buf>, y: &mut Self::Buf) -> Result<()>;
    fn conv2d_backward_input(&self, p: &ConvParams, dy: &Self::Buf, w: &Self::Buf, dx: &mut Self::Buf) -> Result<()>;
    /// `dw += ...`, `dbias += ...`.
    fn conv2d_backward_params(&self, p: &ConvParams, x: &Self::Buf, dy: &Self::Buf, dw: &mut Self::Buf, dbias: Option<&mut Self::Buf>) -> Result<()>;

    // ---- conv_transpose2d ------------------------------------------------------------
    fn conv_transpose2d_forward(&self, p: &ConvParams, x: &Self::Buf, w: &Self::Buf, bias: Option<&Self::Buf>, y: &mut Self::Buf) -> Result<()>;
    fn conv_transpose2d_backward_input(&self, p: &ConvParams, dy: &Self::Buf, w: &Self::Buf, dx: &mut Self::Buf) -> Result<()>;
    fn conv_transpose2d_backward_params(&self, p: &ConvParams, x: &Self::Buf, dy: &Self::Buf, dw: &mut Self::Buf, dbias: Option<&mut Self::Buf>) -> Result<()>;

    // ---- batchnorm2d -------------------------------------------------------------------
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

    // ---- activations (backward from the saved output, which is enough for all three) --
    fn relu_forward(&self, p: &ActParams, x: &Self::Buf, y: &mut Self::Buf) -> Result<()>;
    fn relu_backward_input(&self, p: &ActParams, y: &Self::Buf, dy: &Self::Buf, dx: &mut Self::Buf) -> Result<()>;
    fn leaky_relu_forward(&self, p: &ActParams, x: &Self::Buf, y: &mut Self::Buf) -> Result<()>;
    fn leaky_relu_backward_input(&self, p: &ActParams, y: &Self::Buf, dy: &Self::Buf, dx: &mut Self::Buf) -> Result<()>;
    fn tanh_forward(&self, p: &ActParams, x: &Self::Buf, y: &mut Self::Buf) -> Result<()>;
    fn tanh_backward_input(&self, p: &ActParams, y: &Self::Buf, dy: &Self::Buf, dx: &mut Self::Buf) -> Result<()>;

    // ---- linear ------------------------------------------------------------------------
    fn linear_forward(&self, p: &LinearParams, x: &Self::Buf, w: &Self::Buf, b: Option<&Self::Buf>, y: &mut Self::Buf) -> Result<()>;
    fn linear_backward_input(&self, p: &LinearParams, dy: &Self::Buf, w: &Self::Buf, dx: &mut Self::Buf) -> Result<()>;
    fn linear_backward_params(&self, p: &LinearParams, x: &Self::Buf, dy: &Self::Buf, dw: &mut Self::Buf, db: Option<&mut Self::Buf>) -> Result<()>;

    // ---- concat / tile -----------------------------------------------------------------
    fn concat_tile_forward(&self, p: &ConcatParams, a: &Self::Buf, b: &Self::Buf, y: &mut Self::Buf) -> Result<()>;
    /// Writes both input gradients: `da` is a slice of `dy`, `db` sums `dy` over the grid.
    fn concat_tile_backward_input(&self, p: &ConcatParams, dy: &Self::Buf, da: &mut Self::Buf, db: &mut Self::Buf) -> Result<()>;

    // ---- loss and optimizer --------------------------------------------------------------
    /// Writes `out[0] = scale * mean BCE`, `out[1] = mean sigmoid(logits)`.
    fn bce_with_logits_forward(&self, p: &BceParams, logits: &Self::Buf, out: &mut Self::Buf) -> Result<()>;
    /// Writes `dlogits = scale * (sigmoid(logits) - target) / n`.
    fn bce_with_logits_backward_input(&self, p: &BceParams, logits: &Self::Buf, dlogits: &mut Self::Buf) -> Result<()>;
    fn adam_step(&self, p: &AdamParams, param: &mut Self::Buf, grad: &Self::Buf, m: &mut Self::Buf, v: &mut Self::Buf) -> Result<()>;
}
