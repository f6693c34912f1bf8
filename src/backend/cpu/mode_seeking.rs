//! The CPU twin of mode_seeking, summed in f64.

use super::{CpuBackend, Elem};
use crate::backend::{Core, ModeSeekingOps, ModeSeekingParams};
use anyhow::Result;
use rayon::prelude::*;

impl<T: Elem> ModeSeekingOps for CpuBackend<T> {
    fn mode_seeking_forward(&self, p: &ModeSeekingParams, x: &Vec<T>, out: &mut Vec<T>) -> Result<()> {
        self.timed(
            "mode_seeking_forward",
            || p.work(1.0),
            || {
                p.check_forward(self, x, out)?;
                let h = p.half();
                let sum: f64 = x[..h].iter().zip(&x[h..2 * h]).map(|(a, b)| (a.to_f64() - b.to_f64()).abs()).sum();
                let r = sum / h.max(1) as f64 * p.inv_dz as f64;
                out[0] = T::from_f64(p.weight as f64 / (r + p.eps as f64));
                out[1] = T::from_f64(r);
                Ok(())
            },
        )
    }
    fn mode_seeking_backward_input(&self, p: &ModeSeekingParams, x: &Vec<T>, stats: &Vec<T>, dx: &mut Vec<T>) -> Result<()> {
        self.timed(
            "mode_seeking_backward_input",
            || p.work(3.0),
            || {
                p.check_backward_input(self, x, stats, dx)?;
                let h = p.half();
                let r = stats[1].to_f64() + p.eps as f64;
                let g = T::from_f64(-(p.weight as f64) / (r * r) * p.inv_dz as f64 / h.max(1) as f64);
                let (lo, hi) = dx[..2 * h].split_at_mut(h);
                lo.par_iter_mut().zip(hi.par_iter_mut()).zip(x[..h].par_iter().zip(&x[h..2 * h])).for_each(|((da, db), (a, b))| {
                    let s = sign(*a - *b);
                    *da += g * s;
                    *db -= g * s;
                });
                Ok(())
            },
        )
    }
}

/// -1, 0 or 1 (0 where the two values are equal: the subgradient of |d| at 0).
fn sign<T: Elem>(d: T) -> T {
    let d = d.to_f64();
    T::from_f64(if d > 0.0 {
        1.0
    } else if d < 0.0 {
        -1.0
    } else {
        0.0
    })
}
