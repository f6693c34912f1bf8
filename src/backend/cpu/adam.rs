//! The CPU twin of adam_step, in blocks of values on every core.

use super::{CpuBackend, Elem, BLOCK};
use crate::backend::{AdamOps, AdamParams, Core};
use anyhow::Result;
use rayon::prelude::*;

impl<T: Elem> AdamOps for CpuBackend<T> {
    fn adam_step(&self, p: &AdamParams, param: &mut Vec<T>, grad: &Vec<T>, m: &mut Vec<T>, v: &mut Vec<T>) -> Result<()> {
        self.timed(
            "adam_step",
            || p.work(),
            || {
                p.check(self, param, grad, m, v)?;
                let len = p.len as usize;
                adam_step(p, &mut param[..len], &grad[..len], &mut m[..len], &mut v[..len]);
                Ok(())
            },
        )
    }
}

/// PyTorch's Adam: `p -= (lr / bc1) * m / (sqrt(v) / sqrt(bc2) + eps)`.
fn adam_step<T: Elem>(p: &AdamParams, param: &mut [T], grad: &[T], m: &mut [T], v: &mut [T]) {
    let (b1, b2) = (T::from_f32(p.beta1), T::from_f32(p.beta2));
    let step = T::from_f32(p.lr) / T::from_f32(p.bc1);
    let sqrt_bc2 = T::from_f32(p.bc2).sqrt();
    let eps = T::from_f32(p.eps);
    let one = T::one();
    param.par_chunks_mut(BLOCK).zip(grad.par_chunks(BLOCK)).zip(m.par_chunks_mut(BLOCK).zip(v.par_chunks_mut(BLOCK))).for_each(|((p, g), (m, v))| {
        for i in 0..p.len() {
            m[i] = b1 * m[i] + (one - b1) * g[i];
            v[i] = b2 * v[i] + (one - b2) * g[i] * g[i];
            p[i] -= step * m[i] / (v[i].sqrt() / sqrt_bc2 + eps);
        }
    });
}
