//! The CPU twin of scale.

use super::{CpuBackend, Elem};
use crate::backend::{Core, ScaleOps, ScaleParams};
use anyhow::Result;
use rayon::prelude::*;

impl<T: Elem> ScaleOps for CpuBackend<T> {
    fn scale_forward(&self, p: &ScaleParams, x: &Vec<T>, y: &mut Vec<T>) -> Result<()> {
        self.timed(
            "scale_forward",
            || p.work(),
            || {
                p.check_forward(self, x, y)?;
                let (c, l) = (T::from_f32(p.c), p.len());
                if p.accumulate != 0 {
                    y[..l].par_iter_mut().zip(&x[..l]).for_each(|(y, &v)| *y += c * v);
                } else {
                    y[..l].par_iter_mut().zip(&x[..l]).for_each(|(y, &v)| *y = c * v);
                }
                Ok(())
            },
        )
    }
}
