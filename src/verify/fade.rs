//! fade: the direct loops, the finite-difference checks and the twin rows (CPU twin
//! `backend/cpu/fade.rs`, kernels `kernels/fade.cu`).

use super::gradcheck::{check_all, dot, rand_vec, CheckResult, DirectCheck, OpHarness};
use super::twin::{down, normal, poisoned, up, Checker, Part, TOL_ELEM};
use crate::backend::cpu::Cpu64;
use crate::backend::prelude::*;
use crate::backend::FadeParams;
use crate::rng::Rng;
use anyhow::Result;

/// The op by its definition, in f64.
pub mod direct {
    use crate::backend::FadeParams;

    /// `y_i = a x1_i + b x2_i`.
    pub fn forward(p: &FadeParams, x1: &[f64], x2: &[f64]) -> Vec<f64> {
        x1.iter().zip(x2).map(|(u, v)| p.a as f64 * u + p.b as f64 * v).collect()
    }
    /// `(a dy, b dy)`.
    pub fn backward(p: &FadeParams, dy: &[f64]) -> [Vec<f64>; 2] {
        [dy.iter().map(|g| p.a as f64 * g).collect(), dy.iter().map(|g| p.b as f64 * g).collect()]
    }
}

impl<B: Backend> Checker<'_, B> {
    pub fn fade(&mut self, len: usize, a: f32, b: f32) -> Result<()> {
        let p = FadeParams::new(len, a, b);
        let shape = format!("len{len} a{a} b{b}");
        let x1 = normal(&mut self.rng, len, 1.0);
        let x2 = normal(&mut self.rng, len, 1.0);
        let dy = normal(&mut self.rng, len, 1.0);
        fn forward<B: Backend>(be: &B, p: &FadeParams, x1: &[f32], x2: &[f32]) -> Result<Vec<f32>> {
            let (x1, x2) = (up(be, x1)?, up(be, x2)?);
            let mut y = poisoned(be, p.len())?;
            be.fade_forward(p, &x1, &x2, &mut y)?;
            down(be, &y, p.len())
        }
        fn backward<B: Backend>(be: &B, p: &FadeParams, dy: &[f32]) -> Result<Vec<f32>> {
            let dy = up(be, dy)?;
            let (mut dx1, mut dx2) = (poisoned(be, p.len())?, poisoned(be, p.len())?);
            be.fade_backward_input(p, &dy, &mut dx1, &mut dx2)?;
            let mut out = down(be, &dx1, p.len())?;
            out.extend(down(be, &dx2, p.len())?);
            Ok(out)
        }
        // The GPU may fuse a x1 + b x2 into one rounding: an ulp apart.
        self.case("fade_forward_f32", shape.clone(), TOL_ELEM, |g| forward(g, &p, &x1, &x2), |c| forward(c, &p, &x1, &x2))?;
        self.case_parts(
            "fade_backward_input_f32",
            shape,
            |_| vec![Part::new("dx1", len, TOL_ELEM), Part::new("dx2", len, TOL_ELEM)],
            |g| backward(g, &p, &dy),
            |c| backward(c, &p, &dy),
        )
    }
}

/// Finite differences of both input gradients, mid-fade and at its two ends.
pub fn gradchecks(h: &OpHarness, rng: &mut Rng, out: &mut Vec<CheckResult>) -> Result<()> {
    let be = &h.be;
    for (a, b) in [(0.3f32, 0.7f32), (1.0, 0.0), (1.0, 1.0)] {
        let p = FadeParams::new(13, a, b);
        let (x1, x2, r) = (rand_vec(rng, 13), rand_vec(rng, 13), rand_vec(rng, 13));
        let fwd = |x1: &[f64], x2: &[f64]| -> Result<f64> {
            let mut y = be.alloc(13)?;
            be.fade_forward(&p, &h.buf(x1)?, &h.buf(x2)?, &mut y)?;
            Ok(dot(&y, &r))
        };
        let (mut dx1, mut dx2) = (be.alloc(13)?, be.alloc(13)?);
        be.fade_backward_input(&p, &h.buf(&r)?, &mut dx1, &mut dx2)?;
        out.push(check_all(&format!("fade a {a} b {b} x1"), &x1, &dx1, |v| fwd(v, &x2))?);
        out.push(check_all(&format!("fade a {a} b {b} x2"), &x2, &dx2, |v| fwd(&x1, v))?);
    }
    Ok(())
}

/// The CPU twin in f64 against the direct loops.
pub fn direct_checks(rng: &mut Rng) -> Result<Vec<DirectCheck>> {
    let be = Cpu64::new();
    let mut out = Vec::new();
    for (len, a, b) in [(17usize, 0.25f32, 0.75f32), (1, 1.0, -2.5), (100, 0.0, 1.0)] {
        let p = FadeParams::new(len, a, b);
        let label = format!("fade len{len} a{a} b{b}");
        let (x1, x2, dy) = (rand_vec(rng, len), rand_vec(rng, len), rand_vec(rng, len));
        let mut y = vec![0.0; len];
        be.fade_forward(&p, &x1, &x2, &mut y)?;
        out.push(DirectCheck::new(format!("{label} forward"), &direct::forward(&p, &x1, &x2), &y));
        let [w1, w2] = direct::backward(&p, &dy);
        let (mut dx1, mut dx2) = (vec![0.0; len], vec![0.0; len]);
        be.fade_backward_input(&p, &dy, &mut dx1, &mut dx2)?;
        out.push(DirectCheck::new(format!("{label} backward_input dx1"), &w1, &dx1));
        out.push(DirectCheck::new(format!("{label} backward_input dx2"), &w2, &dx2));
    }
    Ok(out)
}
