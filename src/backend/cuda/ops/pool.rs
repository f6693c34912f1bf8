//! Launch sites of kernels/pool.cu: one thread per value written.

use super::{elementwise, kernel_arg, kernels, Ptr};
use crate::backend::cuda::{GpuBackend, GpuBuf};
use crate::backend::{Core, PoolOps, PoolParams};
use anyhow::Result;

kernel_arg!(PoolParams);

kernels! {
    fn avg_pool2d_forward_f32(p: PoolParams, x: Ptr, y: Ptr);
    fn avg_pool2d_backward_input_f32(p: PoolParams, dy: Ptr, dx: Ptr);
}

impl PoolOps for GpuBackend {
    fn avg_pool2d_forward(&self, p: &PoolParams, x: &GpuBuf, y: &mut GpuBuf) -> Result<()> {
        self.timed(
            "avg_pool2d_forward",
            || p.work(),
            || {
                p.check_forward(self, x, y)?;
                self.exec.avg_pool2d_forward_f32(elementwise(p.out_len()), *p, x.ptr, y.ptr)
            },
        )
    }
    fn avg_pool2d_backward_input(&self, p: &PoolParams, dy: &GpuBuf, dx: &mut GpuBuf) -> Result<()> {
        self.timed(
            "avg_pool2d_backward_input",
            || p.work(),
            || {
                p.check_backward_input(self, dy, dx)?;
                self.exec.avg_pool2d_backward_input_f32(elementwise(p.in_len()), *p, dy.ptr, dx.ptr)
            },
        )
    }
}
