//! Launch sites of kernels/conv.cu: conv2d and conv_transpose2d as implicit GEMMs, the
//! bias gradient (also linear's), and the split-K reduction of long reductions.

use super::{blocks, elementwise, kernel_arg, kernels, per_channel, FillParams, Launch, Ptr};
use crate::backend::cuda::tiles::{GEMM_BK, GEMM_BM, GEMM_BN, GEMM_THREADS, THIN_A, THIN_M, THIN_THREADS};
use crate::backend::cuda::{check, opt_ptr, GpuBackend, GpuBuf};
use crate::backend::{BatchNormParams, ConvOps, ConvParams, Core};
use anyhow::Result;
use bytemuck::{Pod, Zeroable};

/// The split-K reduction of a weight gradient: `splits` partial buffers of `len` values
/// (the size of the gradient), added in order.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct SplitParams {
    pub len: i32,
    pub splits: i32,
}

kernel_arg!(ConvParams, SplitParams);

kernels! {
    fn conv2d_forward_f32(p: ConvParams, x: Ptr, w: Ptr, bias: Ptr, out: Ptr, k_chunk: i32);
    fn conv2d_backward_input_f32(p: ConvParams, dy: Ptr, w: Ptr, dx: Ptr);
    fn conv2d_backward_input_thin_f32(p: ConvParams, dy: Ptr, w: Ptr, dx: Ptr);
    fn conv2d_backward_params_f32(p: ConvParams, x: Ptr, dy: Ptr, out: Ptr, k_chunk: i32, accumulate: i32);
    fn conv_transpose2d_forward_f32(p: ConvParams, x: Ptr, w: Ptr, bias: Ptr, y: Ptr);
    fn conv_transpose2d_forward_thin_f32(p: ConvParams, x: Ptr, w: Ptr, bias: Ptr, y: Ptr);
    fn conv_transpose2d_backward_input_f32(p: ConvParams, dy: Ptr, w: Ptr, dx: Ptr);
    fn conv_transpose2d_backward_params_f32(p: ConvParams, x: Ptr, dy: Ptr, out: Ptr, k_chunk: i32, accumulate: i32);
    fn gemm_splitk_reduce_f32(p: SplitParams, partial: Ptr, grad: Ptr);
    fn bias_backward_params_f32(p: BatchNormParams, dy: Ptr, db: Ptr);
}

/// Whether a parity-split pass with `rows` GEMM rows, reducing over `channels` times the
/// taps of a parity class, takes the thin kernels (kernels/gemm.cuh, gemm_thin_column):
/// at most THIN_M rows, and A small enough for their shared memory.
fn thin(rows: i32, channels: i32, p: &ConvParams) -> bool {
    let taps = (p.k.max(0) as usize).div_ceil(p.stride.max(1) as usize);
    (rows.max(0) as usize) <= THIN_M && channels.max(0) as usize * taps * taps * THIN_M <= THIN_A
}

/// Whether conv2d's backward_input at `p` takes the thin kernel, which multiplies in fp32
/// whatever the GEMM mode (the CPU's TF32 yardstick follows it: `Cpu::with_tf32_operands`).
pub(crate) fn conv2d_backward_input_is_thin(p: &ConvParams) -> bool {
    thin(p.c_in, p.c_out, p)
}

/// Whether conv_transpose2d's forward at `p` takes the thin kernel (fp32, as above).
pub(crate) fn conv_transpose2d_forward_is_thin(p: &ConvParams) -> bool {
    thin(p.c_out, p.c_in, p)
}

/// One thread per column of a thin GEMM, grid.z over the parity classes.
fn thin_launch(cols: usize, classes: usize) -> Launch {
    Launch { grid: (blocks(cols, THIN_THREADS as usize), 1, classes as u32), block: THIN_THREADS, shared_bytes: 0 }
}

/// A tiled GEMM of `m x n` outputs, `z` slices (parity classes or split-K slices).
pub(super) fn gemm(m: usize, n: usize, z: usize) -> Launch {
    Launch { grid: (blocks(n, GEMM_BN), blocks(m, GEMM_BM), z.max(1) as u32), block: GEMM_THREADS, shared_bytes: 0 }
}

/// Slices of the reduction dimension for a weight gradient of `m x n` values reduced over
/// `k`: enough blocks to fill a large GPU when the gradient itself has few tiles, slices of
/// at least 256, at most 64 slices, and at most 2^24 floats of partial sums.
fn splitk_slices(m: usize, n: usize, k: usize) -> (usize, usize) {
    let tiles = m.div_ceil(GEMM_BM) * n.div_ceil(GEMM_BN);
    let by_work = 512usize.div_ceil(tiles.max(1));
    let by_depth = k.div_ceil(256);
    let by_memory = ((1usize << 24) / (m * n).max(1)).max(1);
    let splits = by_work.min(by_depth).min(by_memory).clamp(1, 64);
    let chunk = k.div_ceil(splits).div_ceil(GEMM_BK) * GEMM_BK;
    (chunk.max(GEMM_BK), k.div_ceil(chunk.max(GEMM_BK)).max(1))
}

/// Slices of a forward GEMM's reduction: none unless the output has so few tiles that most
/// of a large GPU would idle while each block walks a long `k` alone (then as for a weight
/// gradient).
fn forward_slices(m: usize, n: usize, k: usize) -> (usize, usize) {
    if m.div_ceil(GEMM_BM) * n.div_ceil(GEMM_BN) >= 32 {
        return (k, 1);
    }
    splitk_slices(m, n, k)
}

impl GpuBackend {
    /// `grad += A . B` over a long reduction, deterministically: one slice adds straight
    /// into the gradient, several write partial buffers added in order afterwards.
    fn weight_gradient(&self, m: usize, n: usize, k: usize, dw: &mut GpuBuf, run: impl Fn(Launch, Ptr, i32, i32) -> Result<()>) -> Result<()> {
        let (chunk, splits) = splitk_slices(m, n, k);
        if splits == 1 {
            return run(gemm(m, n, 1), dw.ptr, chunk as i32, 1);
        }
        self.split_k(m, n, splits, dw.ptr, |l, partial| run(l, partial, chunk as i32, 0))
    }

    /// `dst += ` the sum of `splits` slices of an `m x n` GEMM: `run(launch, partial)` writes
    /// slice z into partial buffer z (the scratch, grown once to the largest need), then
    /// gemm_splitk_reduce_f32 adds them into `dst` in slice order.
    fn split_k(&self, m: usize, n: usize, splits: usize, dst: Ptr, run: impl FnOnce(Launch, Ptr) -> Result<()>) -> Result<()> {
        let partial = self.scratch(&self.splitk, splits * m * n)?;
        run(gemm(m, n, splits), partial)?;
        let sp = SplitParams { len: (m * n) as i32, splits: splits as i32 };
        self.exec.gemm_splitk_reduce_f32(elementwise(m * n), sp, partial, dst)
    }

    /// `db[c] += sum of dy over n and the grid`: the bias gradient of every layer type.
    pub(super) fn bias_gradient(&self, n: usize, c: usize, hw: usize, dy: &GpuBuf, db: &mut GpuBuf) -> Result<()> {
        check("bias gradient dy", dy, n * c * hw)?;
        check("bias gradient db", db, c)?;
        let p = BatchNormParams::new(n, c, hw, 0.0, 0.0);
        self.exec.bias_backward_params_f32(per_channel(c), p, dy.ptr, db.ptr)
    }
}

impl ConvOps for GpuBackend {
    fn conv2d_forward(&self, p: &ConvParams, x: &GpuBuf, w: &GpuBuf, bias: Option<&GpuBuf>, y: &mut GpuBuf) -> Result<()> {
        self.timed(
            "conv2d_forward",
            || p.conv2d_work(),
            || {
                p.check_forward(self, "conv2d_forward", x, w, bias, y)?;
                let (m, cols, k) = (p.c_out as usize, (p.n * p.h_out * p.w_out) as usize, (p.c_in * p.k * p.k) as usize);
                let (chunk, splits) = forward_slices(m, cols, k);
                if splits == 1 {
                    return self.exec.conv2d_forward_f32(gemm(m, cols, 1), *p, x.ptr, w.ptr, opt_ptr(bias), y.ptr, chunk as i32);
                }
                self.exec.fill_f32(elementwise(m * cols), FillParams { len: (m * cols) as i32, value: 0.0 }, y.ptr)?;
                self.split_k(m, cols, splits, y.ptr, |l, partial| self.exec.conv2d_forward_f32(l, *p, x.ptr, w.ptr, opt_ptr(bias), partial, chunk as i32))
            },
        )
    }
    fn conv2d_backward_input(&self, p: &ConvParams, dy: &GpuBuf, w: &GpuBuf, dx: &mut GpuBuf) -> Result<()> {
        self.timed(
            "conv2d_backward_input",
            || p.conv2d_work(),
            || {
                p.check_backward_input(self, "conv2d_backward_input", dy, w, dx)?;
                let s = p.stride as usize;
                let cols = p.n as usize * (p.h_in as usize).div_ceil(s) * (p.w_in as usize).div_ceil(s);
                if conv2d_backward_input_is_thin(p) {
                    return self.exec.conv2d_backward_input_thin_f32(thin_launch(cols, s * s), *p, dy.ptr, w.ptr, dx.ptr);
                }
                self.exec.conv2d_backward_input_f32(gemm(p.c_in as usize, cols, s * s), *p, dy.ptr, w.ptr, dx.ptr)
            },
        )
    }
    fn conv2d_backward_params(&self, p: &ConvParams, x: &GpuBuf, dy: &GpuBuf, dw: &mut GpuBuf, dbias: Option<&mut GpuBuf>) -> Result<()> {
        self.timed(
            "conv2d_backward_params",
            || p.conv2d_work(),
            || {
                p.check_backward_params(self, "conv2d_backward_params", x, dy, dw, dbias.as_deref())?;
                let (m, n, k) = (p.c_out as usize, (p.c_in * p.k * p.k) as usize, (p.n * p.h_out * p.w_out) as usize);
                self.weight_gradient(m, n, k, dw, |l, out, chunk, acc| self.exec.conv2d_backward_params_f32(l, *p, x.ptr, dy.ptr, out, chunk, acc))?;
                if let Some(db) = dbias {
                    self.bias_gradient(p.n as usize, p.c_out as usize, (p.h_out * p.w_out) as usize, dy, db)?;
                }
                Ok(())
            },
        )
    }

    fn conv_transpose2d_forward(&self, p: &ConvParams, x: &GpuBuf, w: &GpuBuf, bias: Option<&GpuBuf>, y: &mut GpuBuf) -> Result<()> {
        self.timed(
            "conv_transpose2d_forward",
            || p.conv_transpose2d_work(),
            || {
                p.check_forward(self, "conv_transpose2d_forward", x, w, bias, y)?;
                let s = p.stride as usize;
                let cols = p.n as usize * (p.h_out as usize).div_ceil(s) * (p.w_out as usize).div_ceil(s);
                if conv_transpose2d_forward_is_thin(p) {
                    return self.exec.conv_transpose2d_forward_thin_f32(thin_launch(cols, s * s), *p, x.ptr, w.ptr, opt_ptr(bias), y.ptr);
                }
                self.exec.conv_transpose2d_forward_f32(gemm(p.c_out as usize, cols, s * s), *p, x.ptr, w.ptr, opt_ptr(bias), y.ptr)
            },
        )
    }
    fn conv_transpose2d_backward_input(&self, p: &ConvParams, dy: &GpuBuf, w: &GpuBuf, dx: &mut GpuBuf) -> Result<()> {
        self.timed(
            "conv_transpose2d_backward_input",
            || p.conv_transpose2d_work(),
            || {
                p.check_backward_input(self, "conv_transpose2d_backward_input", dy, w, dx)?;
                let cols = (p.n * p.h_in * p.w_in) as usize;
                self.exec.conv_transpose2d_backward_input_f32(gemm(p.c_in as usize, cols, 1), *p, dy.ptr, w.ptr, dx.ptr)
            },
        )
    }
    fn conv_transpose2d_backward_params(&self, p: &ConvParams, x: &GpuBuf, dy: &GpuBuf, dw: &mut GpuBuf, dbias: Option<&mut GpuBuf>) -> Result<()> {
        self.timed(
            "conv_transpose2d_backward_params",
            || p.conv_transpose2d_work(),
            || {
                p.check_backward_params(self, "conv_transpose2d_backward_params", x, dy, dw, dbias.as_deref())?;
                let (m, n, k) = (p.c_in as usize, (p.c_out * p.k * p.k) as usize, (p.n * p.h_in * p.w_in) as usize);
                self.weight_gradient(m, n, k, dw, |l, out, chunk, acc| self.exec.conv_transpose2d_backward_params_f32(l, *p, x.ptr, dy.ptr, out, chunk, acc))?;
                if let Some(db) = dbias {
                    self.bias_gradient(p.n as usize, p.c_out as usize, (p.h_out * p.w_out) as usize, dy, db)?;
                }
                Ok(())
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thin_forward_convs_split_and_wide_ones_do_not() {
        // D's head at 128 px, batch 64: one 64 x 64 tile, K = 16384.
        let (chunk, splits) = forward_slices(1, 64, 16_384);
        assert!(splits > 1 && chunk * splits >= 16_384, "{chunk} x {splits}");
        // D's 512 -> 1024 conv at batch 64: 16 x 16 tiles, no split.
        assert_eq!(forward_slices(1024, 1024, 8192), (8192, 1));
    }

    #[test]
    fn splitk_covers_the_reduction() {
        for &(m, n, k) in &[(8, 48, 512), (1024, 8192, 4096), (64, 48, 262_144), (3, 16, 1), (1, 1, 100_000)] {
            let (chunk, splits) = splitk_slices(m, n, k);
            assert!(chunk % GEMM_BK == 0 && chunk * splits >= k && chunk * (splits - 1) < k, "{m}x{n}x{k}: chunk {chunk}, {splits} slices");
            assert!(splits == 1 || splits * m * n <= 1 << 24);
        }
    }
}
