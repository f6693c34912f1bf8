//! The CPU twins of softmax_cross_entropy and sigmoid_cross_entropy, summed in f64.

use super::math::sigmoid;
use super::{CpuBackend, Elem};
use crate::backend::{Core, CrossEntropyOps, CrossEntropyParams};
use anyhow::Result;

impl<T: Elem> CrossEntropyOps for CpuBackend<T> {
    fn softmax_cross_entropy_forward(&self, p: &CrossEntropyParams, logits: &Vec<T>, targets: &Vec<T>, out: &mut Vec<T>) -> Result<()> {
        self.timed(
            "softmax_cross_entropy_forward",
            || p.work(1.0),
            || {
                p.check_forward(self, true, logits, targets, out)?;
                softmax_cross_entropy_forward(p, logits, targets, out);
                Ok(())
            },
        )
    }
    fn softmax_cross_entropy_backward_input(&self, p: &CrossEntropyParams, logits: &Vec<T>, targets: &Vec<T>, dlogits: &mut Vec<T>) -> Result<()> {
        self.timed(
            "softmax_cross_entropy_backward_input",
            || p.work(2.0),
            || {
                p.check_backward_input(self, true, logits, targets, dlogits)?;
                softmax_cross_entropy_backward_input(p, logits, targets, dlogits);
                Ok(())
            },
        )
    }
    fn sigmoid_cross_entropy_forward(&self, p: &CrossEntropyParams, logits: &Vec<T>, targets: &Vec<T>, out: &mut Vec<T>) -> Result<()> {
        self.timed(
            "sigmoid_cross_entropy_forward",
            || p.work(2.0),
            || {
                p.check_forward(self, false, logits, targets, out)?;
                sigmoid_cross_entropy_forward(p, logits, targets, out);
                Ok(())
            },
        )
    }
    fn sigmoid_cross_entropy_backward_input(&self, p: &CrossEntropyParams, logits: &Vec<T>, targets: &Vec<T>, dlogits: &mut Vec<T>) -> Result<()> {
        self.timed(
            "sigmoid_cross_entropy_backward_input",
            || p.work(3.0),
            || {
                p.check_backward_input(self, false, logits, targets, dlogits)?;
                sigmoid_cross_entropy_backward_input(p, logits, targets, dlogits);
                Ok(())
            },
        )
    }
}

/// The head's logits of row `i`, in f64.
fn row<T: Elem>(p: &CrossEntropyParams, logits: &[T], i: usize) -> Vec<f64> {
    let start = i * p.stride as usize + p.offset as usize;
    logits[start..start + p.classes as usize].iter().map(|v| v.to_f64()).collect()
}

/// `(max, ln sum exp(x - max))` of a row.
fn log_sum_exp(xs: &[f64]) -> (f64, f64) {
    let m = xs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    (m, xs.iter().map(|x| (x - m).exp()).sum::<f64>().ln())
}

/// A class index stored as a float.
fn class<T: Elem>(t: T) -> usize {
    t.to_f64().round().max(0.0) as usize
}

fn softmax_cross_entropy_forward<T: Elem>(p: &CrossEntropyParams, logits: &[T], targets: &[T], out: &mut [T]) {
    let (mut loss, mut hits) = (0.0f64, 0usize);
    for (i, &target) in targets[..p.n as usize].iter().enumerate() {
        let t = class(target);
        let x = row(p, logits, i);
        let (m, lse) = log_sum_exp(&x);
        loss += m + lse - x.get(t).copied().unwrap_or(f64::NAN);
        // First of ties, as the kernel's strict comparison.
        let arg = (1..x.len()).fold(0, |a, j| if x[j] > x[a] { j } else { a });
        hits += (arg == t) as usize;
    }
    out[0] = T::from_f64(p.scale as f64 * loss / p.n as f64);
    out[1] = T::from_f64(hits as f64 / p.n as f64);
}

fn softmax_cross_entropy_backward_input<T: Elem>(p: &CrossEntropyParams, logits: &[T], targets: &[T], dlogits: &mut [T]) {
    let k = p.scale as f64 / p.n as f64;
    for (i, &target) in targets[..p.n as usize].iter().enumerate() {
        let t = class(target);
        let x = row(p, logits, i);
        let (m, lse) = log_sum_exp(&x);
        let start = i * p.stride as usize + p.offset as usize;
        for (j, x) in x.into_iter().enumerate() {
            let s = (x - m - lse).exp();
            dlogits[start + j] = T::from_f64(k * (s - (j == t) as u8 as f64));
        }
    }
}

fn sigmoid_cross_entropy_forward<T: Elem>(p: &CrossEntropyParams, logits: &[T], targets: &[T], out: &mut [T]) {
    let c = p.classes as usize;
    let (mut loss, mut hits) = (0.0f64, 0usize);
    for i in 0..p.n as usize {
        for (j, x) in row(p, logits, i).into_iter().enumerate() {
            let t = targets[i * c + j].to_f64();
            // max(x, 0) - x t + ln(1 + e^-|x|): finite for any finite x.
            loss += x.max(0.0) - x * t + (-x.abs()).exp().ln_1p();
            hits += ((x > 0.0) == (t > 0.5)) as usize;
        }
    }
    let count = (p.n as usize * c) as f64;
    out[0] = T::from_f64(p.scale as f64 * loss / count);
    out[1] = T::from_f64(hits as f64 / count);
}

fn sigmoid_cross_entropy_backward_input<T: Elem>(p: &CrossEntropyParams, logits: &[T], targets: &[T], dlogits: &mut [T]) {
    let c = p.classes as usize;
    let k = p.scale as f64 / (p.n as usize * c) as f64;
    for i in 0..p.n as usize {
        let start = i * p.stride as usize + p.offset as usize;
        for j in 0..c {
            let x = logits[start + j].to_f64();
            dlogits[start + j] = T::from_f64(k * (sigmoid(x) - targets[i * c + j].to_f64()));
        }
    }
}
