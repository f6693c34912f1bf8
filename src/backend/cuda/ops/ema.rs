//! Launch site of kernels/ema.cu: a grid-stride loop over the values.

use super::{blocks, kernel_arg, kernels, Launch, Ptr};
use crate::backend::cuda::tiles::ELEM_THREADS;
use crate::backend::cuda::{GpuBackend, GpuBuf};
use crate::backend::{Core, EmaOps, EmaParams};
use anyhow::Result;

kernel_arg!(EmaParams);

kernels! {
    fn ema_update_f32(p: EmaParams, avg: Ptr, w: Ptr);
}

/// The most blocks one update launches; larger tensors are walked by the grid-stride loop.
const MAX_BLOCKS: usize = 512;

impl EmaOps for GpuBackend {
    fn ema_update(&self, p: &EmaParams, avg: &mut GpuBuf, w: &GpuBuf) -> Result<()> {
        self.timed(
            "ema_update",
            || p.work(),
            || {
                p.check(self, avg, w)?;
                let grid = blocks(p.len as usize, ELEM_THREADS as usize).min(MAX_BLOCKS as u32);
                self.exec.ema_update_f32(Launch { grid: (grid, 1, 1), block: ELEM_THREADS, shared_bytes: 0 }, *p, avg.ptr, w.ptr)
            },
        )
    }
}
