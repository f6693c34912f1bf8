//! The CPU twin of linear: one GEMM per pass (`gemm::matmul`), the bias added per row.

use super::gemm::matmul;
use super::{check, CpuBackend, Elem};
use crate::backend::{Core, LinearOps, LinearParams};
use anyhow::Result;
use rayon::prelude::*;

impl<T: Elem> LinearOps for CpuBackend<T> {
    fn linear_forward(&self, p: &LinearParams, x: &Vec<T>, w: &Vec<T>, b: Option<&Vec<T>>, y: &mut Vec<T>) -> Result<()> {
        self.timed(
            "linear_forward",
            || p.work(),
            || {
                let (n, i, o) = (p.n as usize, p.in_features as usize, p.out_features as usize);
                check("linear x", x, n * i)?;
                check("linear w", w, o * i)?;
                check("linear y", y, n * o)?;
                if let Some(b) = b {
                    check("linear bias", b, o)?;
                }
                linear_forward(n, i, o, &self.gemm_operand(x), &self.gemm_operand(w), b.map(|b| b.as_slice()), y);
                Ok(())
            },
        )
    }
    fn linear_backward_input(&self, p: &LinearParams, dy: &Vec<T>, w: &Vec<T>, dx: &mut Vec<T>) -> Result<()> {
        self.timed(
            "linear_backward_input",
            || p.work(),
            || {
                let (n, i, o) = (p.n as usize, p.in_features as usize, p.out_features as usize);
                check("linear dy", dy, n * o)?;
                check("linear w", w, o * i)?;
                check("linear dx", dx, n * i)?;
                // dx[n, i] = dy[n, o] . w[o, i]
                matmul(n, i, o, dx, i, false, &self.gemm_operand(dy), o as isize, 1, &self.gemm_operand(w), i as isize, 1);
                Ok(())
            },
        )
    }
    fn linear_backward_params(&self, p: &LinearParams, x: &Vec<T>, dy: &Vec<T>, dw: &mut Vec<T>, db: Option<&mut Vec<T>>) -> Result<()> {
        self.timed(
            "linear_backward_params",
            || p.work(),
            || {
                let (n, i, o) = (p.n as usize, p.in_features as usize, p.out_features as usize);
                check("linear x", x, n * i)?;
                check("linear dy", dy, n * o)?;
                check("linear dw", dw, o * i)?;
                // dw[o, i] += dy^T[o, n] . x[n, i]
                matmul(o, i, n, dw, i, true, &self.gemm_operand(dy), 1, o as isize, &self.gemm_operand(x), i as isize, 1);
                if let Some(db) = db {
                    check("linear db", db, o)?;
                    super::conv::bias_backward_params(n, o, 1, dy, db);
                }
                Ok(())
            },
        )
    }
}

fn linear_forward<T: Elem>(n: usize, i: usize, o: usize, x: &[T], w: &[T], b: Option<&[T]>, y: &mut [T]) {
    // y[n, o] = x[n, i] . w^T[i, o]
    matmul(n, o, i, y, o, false, x, i as isize, 1, w, 1, i as isize);
    if let Some(b) = b {
        y[..n * o].par_chunks_mut(o).for_each(|row| row.iter_mut().zip(b).for_each(|(v, b)| *v += *b));
    }
}
