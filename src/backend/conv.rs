//! conv2d and conv_transpose2d (square kernels, optional bias). CPU twin `cpu/conv.rs`,
//! launch sites `cuda/ops/conv.rs`, kernels `kernels/conv.cu`, checks `verify/conv.rs`.

use super::{check_operands, Core, Work};
use anyhow::Result;
use bytemuck::{Pod, Zeroable};

/// Convolution and transposed convolution shapes. For `conv_transpose2d`, `c_in, h_in,
/// w_in` describe the (small) input and `h_out = (h_in - 1) * stride - 2 * pad + k`.
/// The weight is `[c_out, c_in, k, k]` for conv2d and `[c_in, c_out, k, k]` for
/// conv_transpose2d (PyTorch layouts).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
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
    /// `n2 3x13x11 -> 5x6x5 k4 s2 p1`, for tables.
    pub fn label(&self) -> String {
        format!(
            "n{} {}x{}x{} -> {}x{}x{} k{} s{} p{}",
            self.n, self.c_in, self.h_in, self.w_in, self.c_out, self.h_out, self.w_out, self.k, self.stride, self.pad
        )
    }
    /// The work of any pass of a conv2d (all three do the same multiply-adds).
    pub fn conv2d_work(&self) -> Work {
        Work::flop(self.label(), 2.0 * self.conv2d_macs() as f64)
    }
    pub fn conv_transpose2d_work(&self) -> Work {
        Work::flop(self.label(), 2.0 * self.conv_transpose2d_macs() as f64)
    }

    /// The operands of a forward pass (`op`: conv2d_forward or conv_transpose2d_forward).
    pub fn check_forward<B: Core>(&self, be: &B, op: &str, x: &B::Buf, w: &B::Buf, bias: Option<&B::Buf>, y: &B::Buf) -> Result<()> {
        check_operands(
            be,
            op,
            &[("x", Some(x), self.in_len()), ("w", Some(w), self.weight_len()), ("bias", bias, self.c_out as usize), ("y", Some(y), self.out_len())],
        )
    }
    /// The operands of an input-gradient pass.
    pub fn check_backward_input<B: Core>(&self, be: &B, op: &str, dy: &B::Buf, w: &B::Buf, dx: &B::Buf) -> Result<()> {
        check_operands(be, op, &[("dy", Some(dy), self.out_len()), ("w", Some(w), self.weight_len()), ("dx", Some(dx), self.in_len())])
    }
    /// The operands of a parameter-gradient pass.
    pub fn check_backward_params<B: Core>(&self, be: &B, op: &str, x: &B::Buf, dy: &B::Buf, dw: &B::Buf, dbias: Option<&B::Buf>) -> Result<()> {
        check_operands(
            be,
            op,
            &[("x", Some(x), self.in_len()), ("dy", Some(dy), self.out_len()), ("dw", Some(dw), self.weight_len()), ("dbias", dbias, self.c_out as usize)],
        )
    }
}

/// The conv family's ops. `backward_params` accumulates: `dw += ...`, `dbias += ...`.
pub trait ConvOps: Core {
    fn conv2d_forward(&self, p: &ConvParams, x: &Self::Buf, w: &Self::Buf, bias: Option<&Self::Buf>, y: &mut Self::Buf) -> Result<()>;
    fn conv2d_backward_input(&self, p: &ConvParams, dy: &Self::Buf, w: &Self::Buf, dx: &mut Self::Buf) -> Result<()>;
    fn conv2d_backward_params(&self, p: &ConvParams, x: &Self::Buf, dy: &Self::Buf, dw: &mut Self::Buf, dbias: Option<&mut Self::Buf>) -> Result<()>;

    fn conv_transpose2d_forward(&self, p: &ConvParams, x: &Self::Buf, w: &Self::Buf, bias: Option<&Self::Buf>, y: &mut Self::Buf) -> Result<()>;
    fn conv_transpose2d_backward_input(&self, p: &ConvParams, dy: &Self::Buf, w: &Self::Buf, dx: &mut Self::Buf) -> Result<()>;
    fn conv_transpose2d_backward_params(&self, p: &ConvParams, x: &Self::Buf, dy: &Self::Buf, dw: &mut Self::Buf, dbias: Option<&mut Self::Buf>) -> Result<()>;
}
