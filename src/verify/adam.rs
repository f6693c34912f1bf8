//! adam_step: the direct definition and the twin rows (CPU twin `backend/cpu/adam.rs`,
//! kernels `kernels/adam.cu`). An optimizer step has no gradient to check.

use super::gradcheck::{rand_vec, DirectCheck};
use super::twin::{down, normal, up, Checker, Part, Tol};
use crate::backend::cpu::Cpu64;
use crate::backend::prelude::*;
use crate::backend::AdamParams;
use crate::rng::Rng;
use anyhow::Result;

/// The op by its definition, in f64.
pub mod direct {
    use crate::backend::AdamParams;

    /// PyTorch's Adam: `m = b1 m + (1 - b1) g`, `v = b2 v + (1 - b2) g^2`,
    /// `param -= lr (m / bc1) / (sqrt(v / bc2) + eps)`.
    pub fn step(p: &AdamParams, param: &mut [f64], grad: &[f64], m: &mut [f64], v: &mut [f64]) {
        let (b1, b2, lr, eps) = (p.beta1 as f64, p.beta2 as f64, p.lr as f64, p.eps as f64);
        for i in 0..p.len as usize {
            m[i] = b1 * m[i] + (1.0 - b1) * grad[i];
            v[i] = b2 * v[i] + (1.0 - b2) * grad[i] * grad[i];
            param[i] -= lr * (m[i] / p.bc1 as f64) / ((v[i] / p.bc2 as f64).sqrt() + eps);
        }
    }
}

impl<B: Backend> Checker<'_, B> {
    pub fn adam(&mut self, len: usize, step: i32) -> Result<()> {
        let (beta1, beta2) = (0.5f32, 0.999f32);
        let p = AdamParams { len: len as i32, lr: 2e-4, beta1, beta2, eps: 1e-8, bc1: 1.0 - beta1.powi(step), bc2: 1.0 - beta2.powi(step) };
        let param = normal(&mut self.rng, len, 0.02);
        let grad = normal(&mut self.rng, len, 1e-2);
        let m = normal(&mut self.rng, len, 1e-2);
        let v: Vec<f32> = normal(&mut self.rng, len, 1e-4).iter().map(|x| x.abs()).collect();
        fn run<B: Backend>(be: &B, p: &AdamParams, param: &[f32], grad: &[f32], m: &[f32], v: &[f32]) -> Result<Vec<f32>> {
            let (mut pa, g, mut m, mut v) = (up(be, param)?, up(be, grad)?, up(be, m)?, up(be, v)?);
            be.adam_step(p, &mut pa, &g, &mut m, &mut v)?;
            let n = p.len as usize;
            let mut out = down(be, &pa, n)?;
            out.extend(down(be, &m, n)?);
            out.extend(down(be, &v, n)?);
            Ok(out)
        }
        // param (about 0.02, moving by about lr = 2e-4), m (about 1e-2) and v (about 1e-4)
        // apart, each at its own scale.
        let tol = Tol { abs_of_max: 1e-6, rel: 1e-5, products: 0.0 };
        self.case_parts(
            "adam_step_f32",
            format!("len {len} step {step}"),
            |_| vec![Part::new("param", len, tol), Part::new("m", len, tol), Part::new("v", len, tol)],
            |g| run(g, &p, &param, &grad, &m, &v),
            |c| run(c, &p, &param, &grad, &m, &v),
        )
    }
}

/// The CPU twin in f64 against the direct definition, over three steps (the bias
/// corrections change with t).
pub fn direct_checks(rng: &mut Rng) -> Result<Vec<DirectCheck>> {
    let be = Cpu64::new();
    let n = 1001;
    let (mut param, mut m, mut v) = (rand_vec(rng, n), vec![0.0; n], vec![0.0; n]);
    let (mut want_p, mut want_m, mut want_v) = (param.clone(), m.clone(), v.clone());
    let mut out = Vec::new();
    for t in 1..=3 {
        let grad = rand_vec(rng, n);
        let (b1, b2) = (0.5f32, 0.999f32);
        let p = AdamParams { len: n as i32, lr: 2e-4, beta1: b1, beta2: b2, eps: 1e-8, bc1: 1.0 - b1.powi(t), bc2: 1.0 - b2.powi(t) };
        be.adam_step(&p, &mut param, &grad, &mut m, &mut v)?;
        direct::step(&p, &mut want_p, &grad, &mut want_m, &mut want_v);
        for (what, want, got) in [("param", &want_p, &param), ("m", &want_m, &m), ("v", &want_v, &v)] {
            out.push(DirectCheck::new(format!("adam_step t={t} {what}"), want, got));
        }
    }
    Ok(out)
}
