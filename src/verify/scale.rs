//! scale: the direct loops, the finite-difference checks and the twin rows (CPU twin
//! `backend/cpu/scale.rs`, kernels `kernels/scale.cu`).

use super::gradcheck::{check_all, dot, rand_vec, CheckResult, DirectCheck, OpHarness};
use super::twin::{down, normal, up, Checker, TOL_ELEM, TOL_EXACT};
use crate::backend::cpu::Cpu64;
use crate::backend::prelude::*;
use crate::backend::ScaleParams;
use crate::rng::Rng;
use anyhow::Result;

/// The op by its definition, in f64.
pub mod direct {
    use crate::backend::ScaleParams;

    /// `c x`, or `y0 + c x` when accumulating.
    pub fn forward(p: &ScaleParams, x: &[f64], y0: &[f64]) -> Vec<f64> {
        x.iter().zip(y0).map(|(v, y)| if p.accumulate != 0 { y + p.c as f64 * v } else { p.c as f64 * v }).collect()
    }
}

impl<B: Backend> Checker<'_, B> {
    /// Both modes over `len` values: written (exact: one product) and accumulated into a
    /// random `y` (the GPU may fuse the product and the sum).
    pub fn scale(&mut self, len: usize, c: f32) -> Result<()> {
        let x = normal(&mut self.rng, len, 1.0);
        let y0 = normal(&mut self.rng, len, 1.0);
        fn run<B: Backend>(be: &B, p: &ScaleParams, x: &[f32], y0: &[f32]) -> Result<Vec<f32>> {
            let x = up(be, x)?;
            let mut y = up(be, y0)?;
            if p.accumulate == 0 {
                be.fill(&mut y, f32::NAN)?;
            }
            be.scale_forward(p, &x, &mut y)?;
            down(be, &y, p.len())
        }
        let (w, a) = (ScaleParams::write(len, c), ScaleParams::accumulate(len, c));
        self.case("scale_forward_f32", format!("len{len} c{c} write"), TOL_EXACT, |g| run(g, &w, &x, &y0), |cpu| run(cpu, &w, &x, &y0))?;
        self.case("scale_forward_f32", format!("len{len} c{c} accumulate"), TOL_ELEM, |g| run(g, &a, &x, &y0), |cpu| run(cpu, &a, &x, &y0))
    }
}

/// Finite differences of `L = <scale(x), r>`: the gradient `c r` is the same op applied to
/// `r` (written), which is how the equalised convolution runs its backward (accumulated
/// into a parameter gradient: the accumulate case, from a nonzero gradient).
pub fn gradchecks(h: &OpHarness, rng: &mut Rng, out: &mut Vec<CheckResult>) -> Result<()> {
    let be = &h.be;
    let len = 11;
    for c in [0.37f32, -1.5] {
        let (x, r, y0) = (rand_vec(rng, len), rand_vec(rng, len), rand_vec(rng, len));
        for (p, label) in [(ScaleParams::write(len, c), "write"), (ScaleParams::accumulate(len, c), "accumulate")] {
            let fwd = |x: &[f64]| -> Result<f64> {
                let mut y = h.buf(&y0)?;
                be.scale_forward(&p, &h.buf(x)?, &mut y)?;
                Ok(dot(&y, &r))
            };
            // The backward is the op itself on the gradient, accumulated onto `g0` as a
            // parameter gradient would be; the check reads off what it added.
            let g0 = rand_vec(rng, len);
            let mut g = h.buf(&g0)?;
            be.scale_forward(&ScaleParams::accumulate(len, c), &h.buf(&r)?, &mut g)?;
            let dx: Vec<f64> = g.iter().zip(&g0).map(|(a, b)| a - b).collect();
            out.push(check_all(&format!("scale c {c} {label} (backward: scale of the gradient)"), &x, &dx, fwd)?);
        }
    }
    Ok(())
}

/// The CPU twin in f64 against the direct loops.
pub fn direct_checks(rng: &mut Rng) -> Result<Vec<DirectCheck>> {
    let be = Cpu64::new();
    let mut out = Vec::new();
    for (len, c) in [(9usize, 0.125f32), (1, -3.0), (300, 0.0589)] {
        let (x, y0) = (rand_vec(rng, len), rand_vec(rng, len));
        for p in [ScaleParams::write(len, c), ScaleParams::accumulate(len, c)] {
            let mut y = y0.clone();
            be.scale_forward(&p, &x, &mut y)?;
            out.push(DirectCheck::new(format!("scale len{len} c{c} accumulate {}", p.accumulate), &direct::forward(&p, &x, &y0), &y));
        }
    }
    Ok(out)
}
