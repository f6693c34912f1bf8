//! The CPU twin of avg_pool2d: one output plane per task.

use super::{CpuBackend, Elem};
use crate::backend::{Core, PoolOps, PoolParams};
use anyhow::Result;
use rayon::prelude::*;

impl<T: Elem> PoolOps for CpuBackend<T> {
    fn avg_pool2d_forward(&self, p: &PoolParams, x: &Vec<T>, y: &mut Vec<T>) -> Result<()> {
        self.timed(
            "avg_pool2d_forward",
            || p.work(),
            || {
                p.check_forward(self, x, y)?;
                avg_pool2d_forward(p, x, y);
                Ok(())
            },
        )
    }
    fn avg_pool2d_backward_input(&self, p: &PoolParams, dy: &Vec<T>, dx: &mut Vec<T>) -> Result<()> {
        self.timed(
            "avg_pool2d_backward_input",
            || p.work(),
            || {
                p.check_backward_input(self, dy, dx)?;
                avg_pool2d_backward_input(p, dy, dx);
                Ok(())
            },
        )
    }
}

fn avg_pool2d_forward<T: Elem>(p: &PoolParams, x: &[T], y: &mut [T]) {
    let (k, w_in) = (p.k as usize, p.w_in as usize);
    let (ho, wo) = (p.h_out(), p.w_out());
    let plane_in = p.h_in as usize * w_in;
    let inv = T::from_f64(1.0 / (k * k) as f64);
    y[..p.out_len()].par_chunks_mut(ho * wo).zip(x[..p.in_len()].par_chunks(plane_in)).for_each(|(y, x)| {
        for oy in 0..ho {
            for ox in 0..wo {
                let mut s = T::zero();
                for dy in 0..k {
                    let row = (oy * k + dy) * w_in + ox * k;
                    for v in &x[row..row + k] {
                        s += *v;
                    }
                }
                y[oy * wo + ox] = s * inv;
            }
        }
    });
}

fn avg_pool2d_backward_input<T: Elem>(p: &PoolParams, dy: &[T], dx: &mut [T]) {
    let (k, w_in) = (p.k as usize, p.w_in as usize);
    let (ho, wo) = (p.h_out(), p.w_out());
    let plane_in = p.h_in as usize * w_in;
    let inv = T::from_f64(1.0 / (k * k) as f64);
    dx[..p.in_len()].par_chunks_mut(plane_in).zip(dy[..p.out_len()].par_chunks(ho * wo)).for_each(|(dx, dy)| {
        for (i, d) in dx.iter_mut().enumerate() {
            let (iy, ix) = (i / w_in, i % w_in);
            *d = dy[(iy / k) * wo + ix / k] * inv;
        }
    });
}
