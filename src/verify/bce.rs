//! bce_with_logits: the direct definition, the finite-difference checks and the twin rows
//! (CPU twin `backend/cpu/bce.rs`, kernels `kernels/bce.cu`).

use super::gradcheck::{check_all, rand_vec, CheckResult, DirectCheck, OpHarness};
use super::twin::{down, normal, poisoned, up, Checker, Part, TOL_ELEM, TOL_REDUCE};
use crate::backend::cpu::Cpu64;
use crate::backend::prelude::*;
use crate::backend::BceParams;
use crate::rng::Rng;
use anyhow::Result;

/// The op by its definition, in f64.
pub mod direct {
    use crate::backend::BceParams;

    pub fn sigmoid(x: f64) -> f64 {
        1.0 / (1.0 + (-x).exp())
    }
    /// `[scale * mean(-t ln s(x) - (1 - t) ln(1 - s(x))), mean s(x)]`, written as PyTorch
    /// does, `max(x, 0) - x t + ln(1 + e^-|x|)`, which is the same value without overflow.
    pub fn forward(p: &BceParams, logits: &[f64]) -> [f64; 2] {
        let (n, t) = (p.n as usize, p.target as f64);
        let loss: f64 = logits[..n].iter().map(|x| x.max(0.0) - x * t + (-x.abs()).exp().ln_1p()).sum();
        [p.scale as f64 * loss / n as f64, logits[..n].iter().map(|x| sigmoid(*x)).sum::<f64>() / n as f64]
    }
    /// `scale * (s(x) - t) / n`.
    pub fn backward(p: &BceParams, logits: &[f64]) -> Vec<f64> {
        logits[..p.n as usize].iter().map(|x| p.scale as f64 * (sigmoid(*x) - p.target as f64) / p.n as f64).collect()
    }
}

impl<B: Backend> Checker<'_, B> {
    pub fn bce(&mut self, n: usize, target: f32, scale: f32, spread: f64) -> Result<()> {
        let p = BceParams { n: n as i32, target, scale };
        let shape = format!("n{n} target {target} scale {scale} |logit|~{spread}");
        let logits = normal(&mut self.rng, n, spread);
        fn forward<B: Backend>(be: &B, p: &BceParams, l: &[f32]) -> Result<Vec<f32>> {
            let l = up(be, l)?;
            let mut out = poisoned(be, 2)?;
            be.bce_with_logits_forward(p, &l, &mut out)?;
            down(be, &out, 2)
        }
        fn backward<B: Backend>(be: &B, p: &BceParams, l: &[f32]) -> Result<Vec<f32>> {
            let l = up(be, l)?;
            let mut d = poisoned(be, p.n as usize)?;
            be.bce_with_logits_backward_input(p, &l, &mut d)?;
            down(be, &d, p.n as usize)
        }
        self.case_parts(
            "bce_with_logits_forward_f32",
            shape.clone(),
            |_| vec![Part::new("loss", 1, TOL_REDUCE), Part::new("mean_p", 1, TOL_REDUCE)],
            |g| forward(g, &p, &logits),
            |c| forward(c, &p, &logits),
        )?;
        self.case("bce_with_logits_backward_input_f32", shape, TOL_ELEM, |g| backward(g, &p, &logits), |c| backward(c, &p, &logits))
    }
}

/// Finite differences of the logits' gradient, both targets, halved as in the D loss.
pub fn gradchecks(h: &OpHarness, rng: &mut Rng, out: &mut Vec<CheckResult>) -> Result<()> {
    let be = &h.be;
    for target in [0.0f32, 1.0] {
        let p = BceParams { n: 7, target, scale: 0.5 };
        let x = rand_vec(rng, 7);
        let fwd = |x: &[f64]| -> Result<f64> {
            let mut o = be.alloc(2)?;
            be.bce_with_logits_forward(&p, &h.buf(x)?, &mut o)?;
            Ok(o[0])
        };
        let mut dx = be.alloc(7)?;
        be.bce_with_logits_backward_input(&p, &h.buf(&x)?, &mut dx)?;
        out.push(check_all(&format!("bce_with_logits target {target} logits"), &x, &dx, fwd)?);
    }
    Ok(())
}

/// The CPU twin in f64 against the direct definition, moderate logits and logits of
/// +-40 (where the naive `ln(1 - s(x))` would be `ln 0`).
pub fn direct_checks(rng: &mut Rng) -> Result<Vec<DirectCheck>> {
    let be = Cpu64::new();
    let mut out = Vec::new();
    for (target, scale, spread) in [(1.0, 0.5, 2.0), (0.0, 1.0, 2.0), (1.0, 0.25, 40.0)] {
        let p = BceParams { n: 37, target, scale };
        let logits: Vec<f64> = rand_vec(rng, 37).iter().map(|v| v * spread).collect();
        let label = format!("bce_with_logits target {target} scale {scale} |logit|~{spread}");
        let mut o = vec![0.0; 2];
        be.bce_with_logits_forward(&p, &logits, &mut o)?;
        out.push(DirectCheck::new(format!("{label} forward"), &direct::forward(&p, &logits), &o));
        let mut d = vec![0.0; 37];
        be.bce_with_logits_backward_input(&p, &logits, &mut d)?;
        out.push(DirectCheck::new(format!("{label} backward_input"), &direct::backward(&p, &logits), &d));
    }
    Ok(out)
}
