//! The CPU twin of minibatch_std: the column statistics in f64, one column per task, then
//! one sample per task.

use super::{CpuBackend, Elem};
use crate::backend::minibatch_std::MINIBATCH_STD_EPS;
use crate::backend::{Core, MinibatchStdOps, MinibatchStdParams};
use anyhow::Result;
use rayon::prelude::*;

impl<T: Elem> MinibatchStdOps for CpuBackend<T> {
    fn minibatch_std_forward(&self, p: &MinibatchStdParams, x: &Vec<T>, y: &mut Vec<T>) -> Result<()> {
        self.timed(
            "minibatch_std_forward",
            || p.work(),
            || {
                p.check_forward(self, x, y)?;
                minibatch_std_forward(p, x, y);
                Ok(())
            },
        )
    }
    fn minibatch_std_backward_input(&self, p: &MinibatchStdParams, x: &Vec<T>, dy: &Vec<T>, dx: &mut Vec<T>) -> Result<()> {
        self.timed(
            "minibatch_std_backward_input",
            || p.work(),
            || {
                p.check_backward_input(self, x, dy, dx)?;
                minibatch_std_backward_input(p, x, dy, dx);
                Ok(())
            },
        )
    }
}

/// The mean and the standard deviation `sqrt(var + eps)` over the `group` samples of
/// column `col` at every value of a sample (`c hw` each), in f64; each pass walks the
/// samples' rows in order.
fn column_stats<T: Elem>(p: &MinibatchStdParams, x: &[T], col: usize) -> (Vec<f64>, Vec<f64>) {
    let (m, g, per) = (p.columns(), p.group as usize, (p.c * p.hw) as usize);
    let row = |j: usize| &x[(j * m + col) * per..][..per];
    let mut mean = vec![0.0f64; per];
    for j in 0..g {
        mean.iter_mut().zip(row(j)).for_each(|(s, v)| *s += v.to_f64());
    }
    mean.iter_mut().for_each(|s| *s /= g as f64);
    let mut var = vec![0.0f64; per];
    for j in 0..g {
        var.iter_mut().zip(row(j)).zip(&mean).for_each(|((s, v), mu)| *s += (v.to_f64() - mu).powi(2));
    }
    let std = var.into_iter().map(|v| (v / g as f64 + MINIBATCH_STD_EPS as f64).sqrt()).collect();
    (mean, std)
}

fn minibatch_std_forward<T: Elem>(p: &MinibatchStdParams, x: &[T], y: &mut [T]) {
    let (c, hw, per) = (p.c as usize, p.hw as usize, (p.c * p.hw) as usize);
    let m = p.columns();
    let s: Vec<f64> = (0..m).into_par_iter().map(|col| column_stats(p, x, col).1.iter().sum::<f64>() / per as f64).collect();
    y[..p.out_len()].par_chunks_mut((c + 1) * hw).enumerate().for_each(|(i, out)| {
        out[..per].copy_from_slice(&x[i * per..(i + 1) * per]);
        let v = T::from_f64(s[i % m]);
        out[per..].iter_mut().for_each(|o| *o = v);
    });
}

fn minibatch_std_backward_input<T: Elem>(p: &MinibatchStdParams, x: &[T], dy: &[T], dx: &mut [T]) {
    let (c, hw, per, g) = (p.c as usize, p.hw as usize, (p.c * p.hw) as usize, p.group as usize);
    let m = p.columns();
    // ds[col]: the extra channel's gradient over the column's samples and the grid, in
    // sample order.
    let mut ds = vec![0.0f64; m];
    for i in 0..p.n as usize {
        ds[i % m] += dy[(i * (c + 1) + c) * hw..][..hw].iter().map(|v| v.to_f64()).sum::<f64>();
    }
    // Each column's statistics once (not once per sample).
    let stats: Vec<(Vec<f64>, Vec<f64>)> = (0..m).into_par_iter().map(|col| column_stats(p, x, col)).collect();
    dx[..p.in_len()].par_chunks_mut(per).enumerate().for_each(|(i, out)| {
        let col = i % m;
        let scale = ds[col] / per as f64 / g as f64;
        let (mean, std) = &stats[col];
        let (dyi, xi) = (&dy[i * (c + 1) * hw..][..per], &x[i * per..][..per]);
        for (k, o) in out.iter_mut().enumerate() {
            *o = T::from_f64(dyi[k].to_f64() + scale * (xi[k].to_f64() - mean[k]) / std[k]);
        }
    });
}
