//! The CPU twin of ema_update, in blocks of values on every core.

use super::{CpuBackend, Elem, BLOCK};
use crate::backend::{Core, EmaOps, EmaParams};
use anyhow::Result;
use rayon::prelude::*;

impl<T: Elem> EmaOps for CpuBackend<T> {
    fn ema_update(&self, p: &EmaParams, avg: &mut Vec<T>, w: &Vec<T>) -> Result<()> {
        self.timed(
            "ema_update",
            || p.work(),
            || {
                p.check(self, avg, w)?;
                let len = p.len as usize;
                ema_update(p, &mut avg[..len], &w[..len]);
                Ok(())
            },
        )
    }
}

/// `avg = w + beta * (avg - w)`, value by value (no value depends on another).
fn ema_update<T: Elem>(p: &EmaParams, avg: &mut [T], w: &[T]) {
    let beta = T::from_f32(p.beta);
    avg.par_chunks_mut(BLOCK).zip(w.par_chunks(BLOCK)).for_each(|(a, w)| {
        for (a, &w) in a.iter_mut().zip(w) {
            *a = w + beta * (*a - w);
        }
    });
}
