//! Launch sites of kernels/mode_seeking.cu: the forward is one block (a fixed order of
//! additions), the backward one thread per pair of values.

use super::{elementwise, kernel_arg, kernels, Launch, Ptr, REDUCE_SHARED};
use crate::backend::cuda::tiles::REDUCE_THREADS;
use crate::backend::cuda::{GpuBackend, GpuBuf};
use crate::backend::{Core, ModeSeekingOps, ModeSeekingParams};
use anyhow::Result;

kernel_arg!(ModeSeekingParams);

kernels! {
    fn mode_seeking_forward_f32(p: ModeSeekingParams, x: Ptr, out: Ptr);
    fn mode_seeking_backward_input_f32(p: ModeSeekingParams, x: Ptr, stats: Ptr, dx: Ptr);
}

impl ModeSeekingOps for GpuBackend {
    fn mode_seeking_forward(&self, p: &ModeSeekingParams, x: &GpuBuf, out: &mut GpuBuf) -> Result<()> {
        self.timed(
            "mode_seeking_forward",
            || p.work(1.0),
            || {
                p.check_forward(self, x, out)?;
                let l = Launch { grid: (1, 1, 1), block: REDUCE_THREADS, shared_bytes: REDUCE_SHARED };
                self.exec.mode_seeking_forward_f32(l, *p, x.ptr, out.ptr)
            },
        )
    }
    fn mode_seeking_backward_input(&self, p: &ModeSeekingParams, x: &GpuBuf, stats: &GpuBuf, dx: &mut GpuBuf) -> Result<()> {
        self.timed(
            "mode_seeking_backward_input",
            || p.work(3.0),
            || {
                p.check_backward_input(self, x, stats, dx)?;
                self.exec.mode_seeking_backward_input_f32(elementwise(p.half()), *p, x.ptr, stats.ptr, dx.ptr)
            },
        )
    }
}
