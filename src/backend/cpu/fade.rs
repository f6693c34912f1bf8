//! The CPU twin of fade.

use super::{CpuBackend, Elem};
use crate::backend::{Core, FadeOps, FadeParams};
use anyhow::Result;
use rayon::prelude::*;

impl<T: Elem> FadeOps for CpuBackend<T> {
    fn fade_forward(&self, p: &FadeParams, x1: &Vec<T>, x2: &Vec<T>, y: &mut Vec<T>) -> Result<()> {
        self.timed(
            "fade_forward",
            || p.work(),
            || {
                p.check_forward(self, x1, x2, y)?;
                let (a, b, l) = (T::from_f32(p.a), T::from_f32(p.b), p.len());
                y[..l].par_iter_mut().zip(&x1[..l]).zip(&x2[..l]).for_each(|((y, &u), &v)| *y = a * u + b * v);
                Ok(())
            },
        )
    }
    fn fade_backward_input(&self, p: &FadeParams, dy: &Vec<T>, dx1: &mut Vec<T>, dx2: &mut Vec<T>) -> Result<()> {
        self.timed(
            "fade_backward_input",
            || p.work(),
            || {
                p.check_backward_input(self, dy, dx1, dx2)?;
                let (a, b, l) = (T::from_f32(p.a), T::from_f32(p.b), p.len());
                dx1[..l].par_iter_mut().zip(&mut dx2[..l]).zip(&dy[..l]).for_each(|((d1, d2), &g)| {
                    *d1 = a * g;
                    *d2 = b * g;
                });
                Ok(())
            },
        )
    }
}
