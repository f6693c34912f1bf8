//! Gradient checks by central finite differences in f64 (verification ladder, step 1).
//!
//! Every check builds a scalar loss `L = sum(y * r)` with a fixed random `r` (so the
//! upstream gradient is `r`), or uses the BCE loss itself, and compares the analytic
//! gradient of every input and parameter with `(L(v + h) - L(v - h)) / 2h`.
//!
//! The error of one entry is `|a - n| / max(|a|, |n|, 1e-3 * max_j |n_j|)`: relative, with
//! a floor at a thousandth of the tensor's largest gradient so entries that are zero up
//! to rounding do not divide by zero. A check passes when its largest error is < 1e-5.

use crate::backend::cpu::Cpu64;
use crate::backend::Core;
use crate::rng::Rng;
use anyhow::Result;

pub const TOLERANCE: f64 = 1e-5;
/// Step for parameters and op inputs: small enough that no step crosses a ReLU kink.
pub(crate) const H: f64 = 1e-5;
/// Step for whole-model inputs: one pixel moves the loss so little that a smaller step
/// drowns in rounding; pixels sit far from kinks in effect, so a larger step is safe.
pub(crate) const H_MODEL_INPUT: f64 = 1e-4;

#[derive(Clone, Debug)]
pub struct CheckResult {
    pub name: String,
    pub max_rel_err: f64,
    pub entries: usize,
}

impl CheckResult {
    pub fn passed(&self) -> bool {
        self.max_rel_err < TOLERANCE
    }
}

pub(crate) fn compare(name: String, analytic: &[f64], numeric: &[f64]) -> CheckResult {
    let scale = numeric.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    let floor = (1e-3 * scale).max(1e-300);
    let mut worst = 0.0f64;
    for (a, n) in analytic.iter().zip(numeric) {
        let err = (a - n).abs() / a.abs().max(n.abs()).max(floor);
        worst = if err.is_nan() { f64::INFINITY } else { worst.max(err) };
    }
    CheckResult { name, max_rel_err: worst, entries: numeric.len() }
}

/// Numeric gradient of `f` at `v`, for the listed indices.
pub(crate) fn numeric(v: &[f64], idx: &[usize], f: impl FnMut(&[f64]) -> Result<f64>) -> Result<Vec<f64>> {
    numeric_h(v, idx, H, f)
}

pub(crate) fn numeric_h(v: &[f64], idx: &[usize], h: f64, mut f: impl FnMut(&[f64]) -> Result<f64>) -> Result<Vec<f64>> {
    let mut x = v.to_vec();
    idx.iter()
        .map(|&i| {
            let orig = x[i];
            x[i] = orig + h;
            let up = f(&x)?;
            x[i] = orig - h;
            let down = f(&x)?;
            x[i] = orig;
            Ok((up - down) / (2.0 * h))
        })
        .collect()
}

pub(crate) fn check_all(name: &str, v: &[f64], analytic: &[f64], f: impl FnMut(&[f64]) -> Result<f64>) -> Result<CheckResult> {
    check_all_h(name, v, analytic, H, f)
}

pub(crate) fn check_all_h(name: &str, v: &[f64], analytic: &[f64], h: f64, f: impl FnMut(&[f64]) -> Result<f64>) -> Result<CheckResult> {
    let idx: Vec<usize> = (0..v.len()).collect();
    Ok(compare(name.to_string(), analytic, &numeric_h(v, &idx, h, f)?))
}

/// Random values away from zero, so no finite difference crosses a ReLU kink.
pub(crate) fn rand_vec(rng: &mut Rng, n: usize) -> Vec<f64> {
    (0..n)
        .map(|_| {
            let v = rng.normal();
            v.signum() * v.abs().max(0.05)
        })
        .collect()
}

pub(crate) fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Runs `op(inputs...) -> output` on the backend and returns `sum(output * r)`.
pub struct OpHarness {
    pub be: Cpu64,
}

impl OpHarness {
    pub fn buf(&self, v: &[f64]) -> Result<Vec<f64>> {
        let mut b = self.be.alloc(v.len())?;
        self.be.upload_f64(&mut b, v)?;
        Ok(b)
    }
}

/// The CPU twin in f64 against an op's direct loops: the largest difference relative to
/// the direct result's largest magnitude.
#[derive(Clone, Debug)]
pub struct DirectCheck {
    pub name: String,
    pub max_err: f64,
    pub entries: usize,
}

impl DirectCheck {
    /// f64 summed in two orders: some 1e-16 per term; a wrong index or formula is O(1).
    pub const TOLERANCE: f64 = 1e-10;

    pub fn new(name: String, want: &[f64], got: &[f64]) -> DirectCheck {
        let scale = want.iter().fold(0.0f64, |m, v| m.max(v.abs())).max(1e-300);
        let mut max_err = if want.len() == got.len() { 0.0f64 } else { f64::INFINITY };
        for (w, g) in want.iter().zip(got) {
            let e = (w - g).abs() / scale;
            max_err = if e.is_nan() { f64::INFINITY } else { max_err.max(e) };
        }
        DirectCheck { name, max_err, entries: want.len() }
    }

    pub fn passed(&self) -> bool {
        self.max_err <= Self::TOLERANCE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wrong_value_fails_a_direct_check() {
        assert!(DirectCheck::new("same".into(), &[1.0, -2.0], &[1.0, -2.0]).passed());
        assert!(!DirectCheck::new("off".into(), &[1.0, -2.0], &[1.0, -2.0001]).passed());
        assert!(!DirectCheck::new("nan".into(), &[1.0], &[f64::NAN]).passed());
        assert!(!DirectCheck::new("short".into(), &[1.0, 2.0], &[1.0]).passed());
    }

    #[test]
    fn a_wrong_gradient_fails_a_finite_difference_check() {
        assert!(compare("ok".into(), &[1.0, 2.0], &[1.0, 2.0]).passed());
        assert!(!compare("off".into(), &[1.0, 2.0], &[1.0, 2.001]).passed());
        assert!(!compare("nan".into(), &[f64::NAN], &[1.0]).passed());
    }
}
