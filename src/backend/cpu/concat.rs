//! The CPU twin of concat_tile.

use super::{CpuBackend, Elem};
use crate::backend::{ConcatOps, ConcatParams, Core};
use anyhow::Result;
use rayon::prelude::*;

impl<T: Elem> ConcatOps for CpuBackend<T> {
    fn concat_tile_forward(&self, p: &ConcatParams, a: &Vec<T>, b: &Vec<T>, y: &mut Vec<T>) -> Result<()> {
        self.timed(
            "concat_tile_forward",
            || p.work(),
            || {
                p.check_forward(self, a, b, y)?;
                concat_tile_forward(p, a, b, y);
                Ok(())
            },
        )
    }
    fn concat_tile_backward_input(&self, p: &ConcatParams, dy: &Vec<T>, da: &mut Vec<T>, db: &mut Vec<T>) -> Result<()> {
        self.timed(
            "concat_tile_backward_input",
            || p.work(),
            || {
                p.check_backward_input(self, dy, da, db)?;
                concat_tile_backward_input(p, dy, da, db);
                Ok(())
            },
        )
    }
}

fn concat_tile_forward<T: Elem>(p: &ConcatParams, a: &[T], b: &[T], y: &mut [T]) {
    let (ca, cb, hw) = (p.c_a as usize, p.c_b as usize, p.hw as usize);
    let ct = ca + cb;
    y[..p.out_len()].par_chunks_mut(ct * hw).enumerate().for_each(|(n, out)| {
        out[..ca * hw].copy_from_slice(&a[n * ca * hw..(n + 1) * ca * hw]);
        for c in 0..cb {
            let v = b[n * cb + c];
            out[(ca + c) * hw..(ca + c + 1) * hw].iter_mut().for_each(|o| *o = v);
        }
    });
}

fn concat_tile_backward_input<T: Elem>(p: &ConcatParams, dy: &[T], da: &mut [T], db: &mut [T]) {
    let (n, ca, cb, hw) = (p.n as usize, p.c_a as usize, p.c_b as usize, p.hw as usize);
    let ct = ca + cb;
    for i in 0..n {
        da[i * ca * hw..(i + 1) * ca * hw].copy_from_slice(&dy[i * ct * hw..][..ca * hw]);
        for c in 0..cb {
            let s: f64 = dy[(i * ct + ca + c) * hw..][..hw].iter().map(|v| v.to_f64()).sum();
            db[i * cb + c] = T::from_f64(s);
        }
    }
}
