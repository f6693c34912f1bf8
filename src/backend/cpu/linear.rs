//! The CPU twin of linear: one GEMM per pass (`gemm::matmul`), the bias added per row.

use super::bf16::Bf16Kernel;
use super::gemm::matmul;
use super::{CpuBackend, Elem};
use crate::backend::{Core, LinearOps, LinearParams};
use anyhow::Result;
use rayon::prelude::*;

impl<T: Elem> LinearOps for CpuBackend<T> {
    fn linear_forward(&self, p: &LinearParams, x: &Vec<T>, w: &Vec<T>, b: Option<&Vec<T>>, y: &mut Vec<T>) -> Result<()> {
        self.timed(
            "linear_forward",
            || p.work(),
            || {
                p.check_forward(self, x, w, b, y)?;
                let (n, i, o) = (p.n as usize, p.in_features as usize, p.out_features as usize);
                linear_forward(self.bf16, n, i, o, &self.gemm_operand(x), &self.gemm_operand(w), b.map(|b| b.as_slice()), y);
                Ok(())
            },
        )
    }
    fn linear_backward_input(&self, p: &LinearParams, dy: &Vec<T>, w: &Vec<T>, dx: &mut Vec<T>) -> Result<()> {
        self.timed(
            "linear_backward_input",
            || p.work(),
            || {
                p.check_backward_input(self, dy, w, dx)?;
                let (n, i, o) = (p.n as usize, p.in_features as usize, p.out_features as usize);
                // dx[n, i] = dy[n, o] . w[o, i]
                matmul(self.bf16, n, i, o, dx, i, false, &self.gemm_operand(dy), o as isize, 1, &self.gemm_operand(w), i as isize, 1);
                Ok(())
            },
        )
    }
    fn linear_backward_params(&self, p: &LinearParams, x: &Vec<T>, dy: &Vec<T>, dw: &mut Vec<T>, db: Option<&mut Vec<T>>) -> Result<()> {
        self.timed(
            "linear_backward_params",
            || p.work(),
            || {
                p.check_backward_params(self, x, dy, dw, db.as_deref())?;
                let (n, i, o) = (p.n as usize, p.in_features as usize, p.out_features as usize);
                // dw[o, i] += dy^T[o, n] . x[n, i]
                matmul(self.bf16, o, i, n, dw, i, true, &self.gemm_operand(dy), 1, o as isize, &self.gemm_operand(x), i as isize, 1);
                if let Some(db) = db {
                    super::conv::bias_backward_params(n, o, 1, dy, db);
                }
                Ok(())
            },
        )
    }
}

#[allow(clippy::too_many_arguments)]
fn linear_forward<T: Elem>(bf16: Option<Bf16Kernel>, n: usize, i: usize, o: usize, x: &[T], w: &[T], b: Option<&[T]>, y: &mut [T]) {
    // y[n, o] = x[n, i] . w^T[i, o]
    matmul(bf16, n, o, i, y, o, false, x, i as isize, 1, w, 1, i as isize);
    if let Some(b) = b {
        y[..n * o].par_chunks_mut(o).for_each(|row| row.iter_mut().zip(b).for_each(|(v, b)| *v += *b));
    }
}
