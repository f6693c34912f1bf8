//! mode_seeking: the direct definition, the finite-difference checks and the twin rows
//! (CPU twin `backend/cpu/mode_seeking.rs`, kernels `kernels/mode_seeking.cu`).

use super::gradcheck::{check_all, rand_vec, CheckResult, DirectCheck, OpHarness};
use super::twin::{down, normal, poisoned, up, Checker, Part, TOL_ELEM, TOL_REDUCE};
use crate::backend::cpu::Cpu64;
use crate::backend::prelude::*;
use crate::backend::{ModeSeekingParams, MODE_SEEKING_EPS};
use crate::rng::Rng;
use anyhow::Result;

/// The op by its definition, in f64.
pub mod direct {
    use crate::backend::ModeSeekingParams;

    /// `r`: the mean |difference| of the pairs times `inv_dz`.
    pub fn ratio(p: &ModeSeekingParams, x: &[f64]) -> f64 {
        let (pairs, len) = (p.pairs as usize, p.len as usize);
        let mut s = 0.0;
        for i in 0..pairs {
            for k in 0..len {
                s += (x[i * len + k] - x[(i + pairs) * len + k]).abs();
            }
        }
        s / (pairs * len) as f64 * p.inv_dz as f64
    }
    /// `[weight / (r + eps), r]`.
    pub fn forward(p: &ModeSeekingParams, x: &[f64]) -> [f64; 2] {
        let r = ratio(p, x);
        [p.weight as f64 / (r + p.eps as f64), r]
    }
    /// `dx0` plus the term's gradient: d/dr of `weight / (r + eps)` times d r / d x.
    pub fn backward(p: &ModeSeekingParams, x: &[f64], dx0: &[f64]) -> Vec<f64> {
        let (pairs, len) = (p.pairs as usize, p.len as usize);
        let r = ratio(p, x) + p.eps as f64;
        let dl_dr = -(p.weight as f64) / (r * r);
        let dr_dd = p.inv_dz as f64 / (pairs * len) as f64;
        let mut dx = dx0.to_vec();
        for i in 0..pairs {
            for k in 0..len {
                let (a, b) = (i * len + k, (i + pairs) * len + k);
                let s = (x[a] - x[b]).signum() * if x[a] == x[b] { 0.0 } else { 1.0 };
                dx[a] += dl_dr * dr_dd * s;
                dx[b] -= dl_dr * dr_dd * s;
            }
        }
        dx
    }
}

fn params(pairs: usize, len: usize, inv_dz: f32, weight: f32) -> ModeSeekingParams {
    ModeSeekingParams { pairs: pairs as i32, len: len as i32, inv_dz, weight, eps: MODE_SEEKING_EPS }
}

impl<B: Backend> Checker<'_, B> {
    /// Both passes on `2 pairs` images of `len` values; the first `ties` values of each
    /// pair's second image copy its first (a difference of exactly 0: no gradient there).
    pub fn mode_seeking(&mut self, pairs: usize, len: usize, ties: usize, weight: f32) -> Result<()> {
        let p = params(pairs, len, 0.9, weight);
        let shape = format!("pairs{pairs} len{len} ties{ties} weight {weight}");
        let mut x = normal(&mut self.rng, 2 * pairs * len, 1.0);
        for i in 0..pairs {
            for k in 0..ties.min(len) {
                x[(i + pairs) * len + k] = x[i * len + k];
            }
        }
        let dx0 = normal(&mut self.rng, 2 * pairs * len, 0.01);
        // One `stats` for both sides, so the backward rows compare the kernel, not the two
        // forward sums.
        let stats = [1.0f32, 0.75];
        fn forward<B: Backend>(be: &B, p: &ModeSeekingParams, x: &[f32]) -> Result<Vec<f32>> {
            let x = up(be, x)?;
            let mut out = poisoned(be, 2)?;
            be.mode_seeking_forward(p, &x, &mut out)?;
            down(be, &out, 2)
        }
        fn backward<B: Backend>(be: &B, p: &ModeSeekingParams, x: &[f32], stats: &[f32], dx0: &[f32]) -> Result<Vec<f32>> {
            let (x, s) = (up(be, x)?, up(be, stats)?);
            let mut d = up(be, dx0)?;
            be.mode_seeking_backward_input(p, &x, &s, &mut d)?;
            down(be, &d, dx0.len())
        }
        self.case_parts(
            "mode_seeking_forward_f32",
            shape.clone(),
            |_| vec![Part::new("term", 1, TOL_REDUCE), Part::new("ratio", 1, TOL_REDUCE)],
            |g| forward(g, &p, &x),
            |c| forward(c, &p, &x),
        )?;
        self.case("mode_seeking_backward_input_f32", shape, TOL_ELEM, |g| backward(g, &p, &x, &stats, &dx0), |c| backward(c, &p, &x, &stats, &dx0))
    }
}

/// Finite differences of the images' gradient (added to a zero gradient), pairs at least
/// 0.05 apart so that no step crosses |d|'s kink.
pub fn gradchecks(h: &OpHarness, rng: &mut Rng, out: &mut Vec<CheckResult>) -> Result<()> {
    let be = &h.be;
    for (pairs, len, weight) in [(1usize, 5usize, 1.0f32), (3, 4, 0.5)] {
        let p = params(pairs, len, 0.8, weight);
        let first = rand_vec(rng, pairs * len);
        let apart = rand_vec(rng, pairs * len);
        let x: Vec<f64> = first.iter().copied().chain(first.iter().zip(&apart).map(|(a, d)| a + d)).collect();
        let fwd = |x: &[f64]| -> Result<f64> {
            let mut o = be.alloc(2)?;
            be.mode_seeking_forward(&p, &h.buf(x)?, &mut o)?;
            Ok(o[0])
        };
        let xb = h.buf(&x)?;
        let mut stats = be.alloc(2)?;
        be.mode_seeking_forward(&p, &xb, &mut stats)?;
        let mut dx = h.buf(&vec![0.0; x.len()])?;
        be.mode_seeking_backward_input(&p, &xb, &stats, &mut dx)?;
        out.push(check_all(&format!("mode_seeking pairs {pairs} len {len} weight {weight} images"), &x, &dx, fwd)?);
    }
    Ok(())
}

/// The CPU twin in f64 against the direct definition; the backward adds to a gradient
/// already there, and a tie gives no gradient.
pub fn direct_checks(rng: &mut Rng) -> Result<Vec<DirectCheck>> {
    let be = Cpu64::new();
    let mut out = Vec::new();
    for (pairs, len, weight, ties) in [(2usize, 9usize, 1.0f32, 0usize), (4, 3, 0.25, 2)] {
        let p = params(pairs, len, 1.3, weight);
        let mut x = rand_vec(rng, 2 * pairs * len);
        for i in 0..pairs {
            for k in 0..ties {
                x[(i + pairs) * len + k] = x[i * len + k];
            }
        }
        let dx0 = rand_vec(rng, 2 * pairs * len);
        let label = format!("mode_seeking pairs {pairs} len {len} weight {weight} ties {ties}");
        let mut o = vec![0.0; 2];
        be.mode_seeking_forward(&p, &x, &mut o)?;
        out.push(DirectCheck::new(format!("{label} forward"), &direct::forward(&p, &x), &o));
        let mut d = dx0.clone();
        be.mode_seeking_backward_input(&p, &x, &o, &mut d)?;
        out.push(DirectCheck::new(format!("{label} backward_input"), &direct::backward(&p, &x, &dx0), &d));
    }
    Ok(out)
}
