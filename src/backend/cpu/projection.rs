//! The CPU twin of projection: each row's inner product in f64, one row per task.

use super::{CpuBackend, Elem};
use crate::backend::{Core, ProjectionOps, ProjectionParams};
use anyhow::Result;
use rayon::prelude::*;

impl<T: Elem> ProjectionOps for CpuBackend<T> {
    fn projection_forward(&self, p: &ProjectionParams, base: &Vec<T>, a: &Vec<T>, b: &Vec<T>, out: &mut Vec<T>) -> Result<()> {
        self.timed(
            "projection_forward",
            || p.work(),
            || {
                p.check_forward(self, base, a, b, out)?;
                projection_forward(p, base, a, b, out);
                Ok(())
            },
        )
    }
    fn projection_backward_input(&self, p: &ProjectionParams, dout: &Vec<T>, a: &Vec<T>, b: &Vec<T>, da: &mut Vec<T>, db: &mut Vec<T>) -> Result<()> {
        self.timed(
            "projection_backward_input",
            || p.work(),
            || {
                p.check_backward_input(self, dout, a, b, da, db)?;
                projection_backward_input(p, dout, a, b, da, db);
                Ok(())
            },
        )
    }
    fn projection_backward_features(&self, p: &ProjectionParams, dpsi: &Vec<T>, da: &Vec<T>, dh: &mut Vec<T>) -> Result<()> {
        self.timed(
            "projection_backward_features",
            || p.features_work(),
            || {
                p.check_backward_features(self, dpsi, da, dh)?;
                projection_backward_features(p, dpsi, da, dh);
                Ok(())
            },
        )
    }
}

fn projection_forward<T: Elem>(p: &ProjectionParams, base: &[T], a: &[T], b: &[T], out: &mut [T]) {
    let c = p.c as usize;
    out[..p.n as usize].par_iter_mut().enumerate().for_each(|(i, o)| {
        let dot: f64 = a[i * c..][..c].iter().zip(&b[i * c..][..c]).map(|(x, y)| x.to_f64() * y.to_f64()).sum();
        *o = T::from_f64(base[i].to_f64() + dot);
    });
}

fn projection_backward_input<T: Elem>(p: &ProjectionParams, dout: &[T], a: &[T], b: &[T], da: &mut [T], db: &mut [T]) {
    let c = p.c as usize;
    da[..p.rows_len()].par_chunks_mut(c).zip(db[..p.rows_len()].par_chunks_mut(c)).enumerate().for_each(|(i, (da, db))| {
        let g = dout[i];
        for k in 0..c {
            da[k] = g * b[i * c + k];
            db[k] = g * a[i * c + k];
        }
    });
}

fn projection_backward_features<T: Elem>(p: &ProjectionParams, dpsi: &[T], da: &[T], dh: &mut [T]) {
    let hw = p.hw as usize;
    let inv = 1.0 / hw as f64;
    dh[..p.features_len()].par_chunks_mut(hw).enumerate().for_each(|(row, out)| {
        let spread = da[row].to_f64() * inv;
        for (q, o) in out.iter_mut().enumerate() {
            *o = T::from_f64(dpsi[row * hw + q].to_f64() + spread);
        }
    });
}
