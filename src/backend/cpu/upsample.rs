//! The CPU twin of upsample_nearest: one plane per task.

use super::{CpuBackend, Elem};
use crate::backend::{Core, UpsampleOps, UpsampleParams};
use anyhow::Result;
use rayon::prelude::*;

impl<T: Elem> UpsampleOps for CpuBackend<T> {
    fn upsample_nearest_forward(&self, p: &UpsampleParams, x: &Vec<T>, y: &mut Vec<T>) -> Result<()> {
        self.timed(
            "upsample_nearest_forward",
            || p.work(),
            || {
                p.check_forward(self, x, y)?;
                upsample_nearest_forward(p, x, y);
                Ok(())
            },
        )
    }
    fn upsample_nearest_backward_input(&self, p: &UpsampleParams, dy: &Vec<T>, dx: &mut Vec<T>) -> Result<()> {
        self.timed(
            "upsample_nearest_backward_input",
            || p.work(),
            || {
                p.check_backward_input(self, dy, dx)?;
                upsample_nearest_backward_input(p, dy, dx);
                Ok(())
            },
        )
    }
}

fn upsample_nearest_forward<T: Elem>(p: &UpsampleParams, x: &[T], y: &mut [T]) {
    let (k, w_in) = (p.k as usize, p.w_in as usize);
    let (ho, wo) = (p.h_out(), p.w_out());
    let plane_in = p.h_in as usize * w_in;
    if p.out_len() == 0 {
        return;
    }
    y[..p.out_len()].par_chunks_mut(ho * wo).zip(x[..p.in_len()].par_chunks(plane_in.max(1))).for_each(|(y, x)| {
        for (i, v) in y.iter_mut().enumerate() {
            let (oy, ox) = (i / wo, i % wo);
            *v = x[(oy / k) * w_in + ox / k];
        }
    });
}

/// Each input value sums its `k x k` block of `dy` row by row, in f64.
fn upsample_nearest_backward_input<T: Elem>(p: &UpsampleParams, dy: &[T], dx: &mut [T]) {
    let (k, w_in) = (p.k as usize, p.w_in as usize);
    let wo = p.w_out();
    let plane_in = p.h_in as usize * w_in;
    let plane_out = p.h_out() * wo;
    if p.in_len() == 0 {
        return;
    }
    dx[..p.in_len()].par_chunks_mut(plane_in).zip(dy[..p.out_len()].par_chunks(plane_out.max(1))).for_each(|(dx, dy)| {
        for (i, d) in dx.iter_mut().enumerate() {
            let (iy, ix) = (i / w_in, i % w_in);
            let mut s = 0.0f64;
            for r in 0..k {
                let row = (iy * k + r) * wo + ix * k;
                s += dy[row..row + k].iter().map(|v| v.to_f64()).sum::<f64>();
            }
            *d = T::from_f64(s);
        }
    });
}
