//! Launch sites of kernels/linear.cu: the tiled GEMM of gemm.cuh, one output tile per
//! block; the bias gradient is conv's (`bias_backward_params_f32`).

use super::conv::gemm;
use super::{kernel_arg, kernels, Ptr};
use crate::backend::cuda::{opt_ptr, GpuBackend, GpuBuf};
use crate::backend::{Core, LinearOps, LinearParams};
use anyhow::Result;

kernel_arg!(LinearParams);

kernels! {
    fn linear_forward_f32(p: LinearParams, x: Ptr, w: Ptr, b: Ptr, y: Ptr);
    fn linear_backward_input_f32(p: LinearParams, dy: Ptr, w: Ptr, dx: Ptr);
    fn linear_backward_params_f32(p: LinearParams, x: Ptr, dy: Ptr, dw: Ptr);
}

impl LinearOps for GpuBackend {
    fn linear_forward(&self, p: &LinearParams, x: &GpuBuf, w: &GpuBuf, b: Option<&GpuBuf>, y: &mut GpuBuf) -> Result<()> {
        self.timed(
            "linear_forward",
            || p.work(),
            || {
                p.check_forward(self, x, w, b, y)?;
                let (n, o) = (p.n as usize, p.out_features as usize);
                self.exec.linear_forward_f32(gemm(n, o, 1), *p, x.ptr, w.ptr, opt_ptr(b), y.ptr)
            },
        )
    }
    fn linear_backward_input(&self, p: &LinearParams, dy: &GpuBuf, w: &GpuBuf, dx: &mut GpuBuf) -> Result<()> {
        self.timed(
            "linear_backward_input",
            || p.work(),
            || {
                p.check_backward_input(self, dy, w, dx)?;
                let (n, i) = (p.n as usize, p.in_features as usize);
                self.exec.linear_backward_input_f32(gemm(n, i, 1), *p, dy.ptr, w.ptr, dx.ptr)
            },
        )
    }
    fn linear_backward_params(&self, p: &LinearParams, x: &GpuBuf, dy: &GpuBuf, dw: &mut GpuBuf, db: Option<&mut GpuBuf>) -> Result<()> {
        self.timed(
            "linear_backward_params",
            || p.work(),
            || {
                p.check_backward_params(self, x, dy, dw, db.as_deref())?;
                let (n, i, o) = (p.n as usize, p.in_features as usize, p.out_features as usize);
                self.exec.linear_backward_params_f32(gemm(o, i, 1), *p, x.ptr, dy.ptr, dw.ptr)?;
                if let Some(db) = db {
                    self.bias_gradient(n, o, 1, dy, db)?;
                }
                Ok(())
            },
        )
    }
}
