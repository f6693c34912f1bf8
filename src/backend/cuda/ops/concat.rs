//! Launch sites of kernels/concat.cu: one thread per output value (forward), one per
//! value of both input gradients (backward).

use super::{elementwise, kernel_arg, kernels, Ptr};
use crate::backend::cuda::{GpuBackend, GpuBuf};
use crate::backend::{ConcatOps, ConcatParams, Core};
use anyhow::Result;

kernel_arg!(ConcatParams);

kernels! {
    fn concat_tile_forward_f32(p: ConcatParams, a: Ptr, b: Ptr, y: Ptr);
    fn concat_tile_backward_input_f32(p: ConcatParams, dy: Ptr, da: Ptr, db: Ptr);
}

impl ConcatOps for GpuBackend {
    fn concat_tile_forward(&self, p: &ConcatParams, a: &GpuBuf, b: &GpuBuf, y: &mut GpuBuf) -> Result<()> {
        self.timed(
            "concat_tile_forward",
            || p.work(),
            || {
                p.check_forward(self, a, b, y)?;
                self.exec.concat_tile_forward_f32(elementwise(p.out_len()), *p, a.ptr, b.ptr, y.ptr)
            },
        )
    }
    fn concat_tile_backward_input(&self, p: &ConcatParams, dy: &GpuBuf, da: &mut GpuBuf, db: &mut GpuBuf) -> Result<()> {
        self.timed(
            "concat_tile_backward_input",
            || p.work(),
            || {
                p.check_backward_input(self, dy, da, db)?;
                let threads = (p.n * p.c_a * p.hw + p.n * p.c_b) as usize;
                self.exec.concat_tile_backward_input_f32(elementwise(threads), *p, dy.ptr, da.ptr, db.ptr)
            },
        )
    }
}
