//! Launch sites of kernels/batchnorm.cu. Each training pass is three launches over the
//! channels cut into slices (`bn_slices`): per-slice partial sums, one warp per channel to
//! combine them, and the per-slice elementwise pass that applies the result.

use super::{elementwise, kernel_arg, kernels, warp_per_channel, Launch, Ptr, REDUCE_SHARED};
use crate::backend::cuda::tiles::REDUCE_THREADS;
use crate::backend::cuda::{GpuBackend, GpuBuf};
use crate::backend::{BatchNormOps, BatchNormParams, Core, Work, BN_ACT_NONE};
use anyhow::Result;

kernel_arg!(BatchNormParams);

kernels! {
    fn batchnorm2d_forward_train_partial_stats_f32(p: BatchNormParams, slice_len: i32, x: Ptr, part: Ptr);
    fn batchnorm2d_forward_train_stats_f32(p: BatchNormParams, slice_len: i32, slices: i32, part: Ptr, running_mean: Ptr, running_var: Ptr, mean: Ptr, invstd: Ptr);
    fn batchnorm2d_forward_train_f32(p: BatchNormParams, slice_len: i32, x: Ptr, gamma: Ptr, beta: Ptr, mean: Ptr, invstd: Ptr, y: Ptr);
    fn batchnorm2d_forward_infer_f32(p: BatchNormParams, x: Ptr, gamma: Ptr, beta: Ptr, running_mean: Ptr, running_var: Ptr, y: Ptr);
    fn batchnorm2d_backward_partial_sums_f32(p: BatchNormParams, slice_len: i32, x: Ptr, y: Ptr, dy: Ptr, mean: Ptr, invstd: Ptr, part: Ptr);
    fn batchnorm2d_backward_sums_f32(p: BatchNormParams, slices: i32, part: Ptr, sums: Ptr);
    fn batchnorm2d_backward_input_f32(p: BatchNormParams, slice_len: i32, x: Ptr, y: Ptr, dy: Ptr, gamma: Ptr, mean: Ptr, invstd: Ptr, sums: Ptr, dx: Ptr);
    fn batchnorm2d_backward_params_f32(p: BatchNormParams, sums: Ptr, dgamma: Ptr, dbeta: Ptr);
}

/// How batchnorm cuts each channel's `n * hw` values: equal slices of 1025 to 2048 values
/// (4 to 8 per thread), or 64 longer ones for channels of more than 131,072 values, so
/// that even a layer of 64 wide channels fills a large GPU. Returns the slice length, the
/// slice count and the (slice, channel) grid of the per-slice kernels.
fn bn_slices(p: &BatchNormParams) -> (usize, usize, Launch) {
    let count = (p.n as usize * p.hw as usize).max(1);
    let len = count.div_ceil(count.div_ceil(2048).clamp(1, 64));
    let slices = count.div_ceil(len);
    (len, slices, Launch { grid: (slices as u32, p.c.max(1) as u32, 1), block: REDUCE_THREADS, shared_bytes: REDUCE_SHARED })
}

impl BatchNormOps for GpuBackend {
    fn batchnorm2d_forward_train(
        &self,
        p: &BatchNormParams,
        x: &GpuBuf,
        gamma: &GpuBuf,
        beta: &GpuBuf,
        running_mean: &mut GpuBuf,
        running_var: &mut GpuBuf,
        mean: &mut GpuBuf,
        invstd: &mut GpuBuf,
        y: &mut GpuBuf,
    ) -> Result<()> {
        self.timed(
            "batchnorm2d_forward_train",
            || p.work(2.0),
            || {
                p.check_forward_train(self, x, gamma, beta, running_mean, running_var, mean, invstd, y)?;
                let (len, slices, grid) = bn_slices(p);
                let part = self.scratch(&self.bn_part, 2 * p.c as usize * slices)?;
                self.exec.batchnorm2d_forward_train_partial_stats_f32(grid, *p, len as i32, x.ptr, part)?;
                self.exec.batchnorm2d_forward_train_stats_f32(
                    warp_per_channel(p.c as usize),
                    *p,
                    len as i32,
                    slices as i32,
                    part,
                    running_mean.ptr,
                    running_var.ptr,
                    mean.ptr,
                    invstd.ptr,
                )?;
                self.exec.batchnorm2d_forward_train_f32(
                    Launch { shared_bytes: 0, ..grid },
                    *p,
                    len as i32,
                    x.ptr,
                    gamma.ptr,
                    beta.ptr,
                    mean.ptr,
                    invstd.ptr,
                    y.ptr,
                )
            },
        )
    }
    fn batchnorm2d_forward_infer(
        &self,
        p: &BatchNormParams,
        x: &GpuBuf,
        gamma: &GpuBuf,
        beta: &GpuBuf,
        running_mean: &GpuBuf,
        running_var: &GpuBuf,
        y: &mut GpuBuf,
    ) -> Result<()> {
        self.timed(
            "batchnorm2d_forward_infer",
            || p.work(2.0),
            || {
                p.check_forward_infer(self, x, gamma, beta, running_mean, running_var, y)?;
                self.exec.batchnorm2d_forward_infer_f32(elementwise(p.len()), *p, x.ptr, gamma.ptr, beta.ptr, running_mean.ptr, running_var.ptr, y.ptr)
            },
        )
    }
    fn batchnorm2d_backward_input(
        &self,
        p: &BatchNormParams,
        x: &GpuBuf,
        y: &GpuBuf,
        dy: &GpuBuf,
        gamma: &GpuBuf,
        mean: &GpuBuf,
        invstd: &GpuBuf,
        sums: &mut GpuBuf,
        dx: &mut GpuBuf,
    ) -> Result<()> {
        let tensors = if p.act == BN_ACT_NONE { 3.0 } else { 4.0 };
        self.timed(
            "batchnorm2d_backward_input",
            || p.work(tensors),
            || {
                p.check_backward_input(self, x, y, dy, gamma, mean, invstd, sums, dx)?;
                let (len, slices, grid) = bn_slices(p);
                let part = self.scratch(&self.bn_part, 2 * p.c as usize * slices)?;
                self.exec.batchnorm2d_backward_partial_sums_f32(grid, *p, len as i32, x.ptr, y.ptr, dy.ptr, mean.ptr, invstd.ptr, part)?;
                self.exec.batchnorm2d_backward_sums_f32(warp_per_channel(p.c as usize), *p, slices as i32, part, sums.ptr)?;
                self.exec.batchnorm2d_backward_input_f32(
                    Launch { shared_bytes: 0, ..grid },
                    *p,
                    len as i32,
                    x.ptr,
                    y.ptr,
                    dy.ptr,
                    gamma.ptr,
                    mean.ptr,
                    invstd.ptr,
                    sums.ptr,
                    dx.ptr,
                )
            },
        )
    }
    fn batchnorm2d_backward_params(&self, p: &BatchNormParams, sums: &GpuBuf, dgamma: &mut GpuBuf, dbeta: &mut GpuBuf) -> Result<()> {
        self.timed(
            "batchnorm2d_backward_params",
            || Work::bytes(p.label(), 4.0 * 4.0 * p.c as f64),
            || {
                p.check_backward_params(self, sums, dgamma, dbeta)?;
                self.exec.batchnorm2d_backward_params_f32(elementwise(p.c as usize), *p, sums.ptr, dgamma.ptr, dbeta.ptr)
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batchnorm_slices_cover_each_channel() {
        for &(n, hw) in &[(1, 1), (1, 35), (2, 2050), (1, 70_001), (64, 16), (64, 4096), (64, 16_384)] {
            let p = BatchNormParams::new(n, 3, hw, 1e-5, 0.1);
            let (len, slices, launch) = bn_slices(&p);
            let count = n * hw;
            assert!(len * slices >= count && len * (slices - 1) < count, "n{n} hw{hw}: {slices} slices of {len}");
            assert!((1..=64).contains(&slices) && (slices == 1 || len > 1024) && (slices == 64 || len <= 2048), "n{n} hw{hw}: {slices} slices of {len}");
            assert_eq!(launch.grid, (slices as u32, 3, 1));
        }
    }
}
