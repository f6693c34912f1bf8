//! The CPU twin of pixel_norm: one sample per task, the channel sums of each pixel in f64.

use super::{CpuBackend, Elem};
use crate::backend::{Core, PixelNormOps, PixelNormParams};
use anyhow::Result;
use rayon::prelude::*;

impl<T: Elem> PixelNormOps for CpuBackend<T> {
    fn pixel_norm_forward(&self, p: &PixelNormParams, x: &Vec<T>, y: &mut Vec<T>) -> Result<()> {
        self.timed(
            "pixel_norm_forward",
            || p.work(),
            || {
                p.check_forward(self, x, y)?;
                pixel_norm_forward(p, x, y);
                Ok(())
            },
        )
    }
    fn pixel_norm_backward_input(&self, p: &PixelNormParams, x: &Vec<T>, dy: &Vec<T>, dx: &mut Vec<T>) -> Result<()> {
        self.timed(
            "pixel_norm_backward_input",
            || p.work(),
            || {
                p.check_backward_input(self, x, dy, dx)?;
                pixel_norm_backward_input(p, x, dy, dx);
                Ok(())
            },
        )
    }
}

/// `1 / sqrt(mean_c x^2 + eps)` of pixel `j` of one sample `x[c, hw]`.
fn inv_rms<T: Elem>(x: &[T], c: usize, hw: usize, j: usize, eps: f64) -> f64 {
    let ss: f64 = (0..c).map(|ci| x[ci * hw + j].to_f64().powi(2)).sum();
    1.0 / (ss / c as f64 + eps).sqrt()
}

fn pixel_norm_forward<T: Elem>(p: &PixelNormParams, x: &[T], y: &mut [T]) {
    let (c, hw, eps) = (p.c as usize, p.hw as usize, p.eps as f64);
    if p.is_empty() {
        return;
    }
    y[..p.len()].par_chunks_mut(c * hw).zip(x[..p.len()].par_chunks(c * hw)).for_each(|(y, x)| {
        for j in 0..hw {
            let r = inv_rms(x, c, hw, j, eps);
            for ci in 0..c {
                y[ci * hw + j] = T::from_f64(x[ci * hw + j].to_f64() * r);
            }
        }
    });
}

fn pixel_norm_backward_input<T: Elem>(p: &PixelNormParams, x: &[T], dy: &[T], dx: &mut [T]) {
    let (c, hw, eps) = (p.c as usize, p.hw as usize, p.eps as f64);
    if p.is_empty() {
        return;
    }
    dx[..p.len()].par_chunks_mut(c * hw).zip(x[..p.len()].par_chunks(c * hw)).zip(dy[..p.len()].par_chunks(c * hw)).for_each(|((dx, x), dy)| {
        for j in 0..hw {
            let r = inv_rms(x, c, hw, j, eps);
            let dot: f64 = (0..c).map(|ci| dy[ci * hw + j].to_f64() * x[ci * hw + j].to_f64()).sum();
            let k = r * r * r * dot / c as f64;
            for ci in 0..c {
                let i = ci * hw + j;
                dx[i] = T::from_f64(r * dy[i].to_f64() - x[i].to_f64() * k);
            }
        }
    });
}
