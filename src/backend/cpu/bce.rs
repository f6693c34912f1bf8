//! The CPU twin of bce_with_logits, summed in f64.

use super::math::sigmoid;
use super::{CpuBackend, Elem};
use crate::backend::{BceOps, BceParams, Core};
use anyhow::Result;

impl<T: Elem> BceOps for CpuBackend<T> {
    fn bce_with_logits_forward(&self, p: &BceParams, logits: &Vec<T>, out: &mut Vec<T>) -> Result<()> {
        self.timed(
            "bce_with_logits_forward",
            || p.work(1.0),
            || {
                p.check_forward(self, logits, out)?;
                bce_with_logits_forward(p, logits, out);
                Ok(())
            },
        )
    }
    fn bce_with_logits_backward_input(&self, p: &BceParams, logits: &Vec<T>, dlogits: &mut Vec<T>) -> Result<()> {
        self.timed(
            "bce_with_logits_backward_input",
            || p.work(2.0),
            || {
                p.check_backward_input(self, logits, dlogits)?;
                bce_with_logits_backward_input(p, logits, dlogits);
                Ok(())
            },
        )
    }
}

fn bce_with_logits_forward<T: Elem>(p: &BceParams, logits: &[T], out: &mut [T]) {
    let n = p.n as usize;
    let t = p.target as f64;
    let (mut loss, mut prob) = (0.0f64, 0.0f64);
    for v in &logits[..n] {
        let x = v.to_f64();
        // max(x, 0) - x t + ln(1 + e^-|x|): finite for any finite x.
        loss += x.max(0.0) - x * t + (-x.abs()).exp().ln_1p();
        prob += sigmoid(x);
    }
    out[0] = T::from_f64(p.scale as f64 * loss / n as f64);
    out[1] = T::from_f64(prob / n as f64);
}

fn bce_with_logits_backward_input<T: Elem>(p: &BceParams, logits: &[T], dlogits: &mut [T]) {
    let n = p.n as usize;
    let k = p.scale as f64 / n as f64;
    for (d, v) in dlogits[..n].iter_mut().zip(&logits[..n]) {
        *d = T::from_f64(k * (sigmoid(v.to_f64()) - p.target as f64));
    }
}
