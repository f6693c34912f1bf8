//! pixel_norm: the direct loops, the finite-difference checks and the twin rows (CPU twin
//! `backend/cpu/pixel_norm.rs`, kernels `kernels/pixel_norm.cu`).

use super::gradcheck::{check_all, dot, rand_vec, CheckResult, DirectCheck, OpHarness};
use super::twin::{down, normal, poisoned, up, Checker, Part, Tol, TOL_REDUCE};
use crate::backend::cpu::Cpu64;
use crate::backend::prelude::*;
use crate::backend::PixelNormParams;
use crate::rng::Rng;
use anyhow::Result;

/// The op by its definition, in f64.
pub mod direct {
    use crate::backend::PixelNormParams;

    /// `y[n, c, q] = x[n, c, q] / sqrt((1/C) sum_j x[n, j, q]^2 + eps)`.
    pub fn forward(p: &PixelNormParams, x: &[f64]) -> Vec<f64> {
        let (n, c, hw, eps) = (p.n as usize, p.c as usize, p.hw as usize, p.eps as f64);
        let mut y = vec![0.0; x.len()];
        for s in 0..n {
            for q in 0..hw {
                let at = |j: usize| (s * c + j) * hw + q;
                let mean_sq = (0..c).map(|j| x[at(j)] * x[at(j)]).sum::<f64>() / c as f64;
                for j in 0..c {
                    y[at(j)] = x[at(j)] / (mean_sq + eps).sqrt();
                }
            }
        }
        y
    }
    /// The Jacobian written out: `dy_i/dx_j = r delta_ij - x_i x_j r^3 / C` with
    /// `r = 1 / sqrt(mean_sq + eps)`, and `dx_j = sum_i dy_i dy_i/dx_j`.
    pub fn backward(p: &PixelNormParams, x: &[f64], dy: &[f64]) -> Vec<f64> {
        let (n, c, hw, eps) = (p.n as usize, p.c as usize, p.hw as usize, p.eps as f64);
        let mut dx = vec![0.0; x.len()];
        for s in 0..n {
            for q in 0..hw {
                let at = |j: usize| (s * c + j) * hw + q;
                let mean_sq = (0..c).map(|j| x[at(j)] * x[at(j)]).sum::<f64>() / c as f64;
                let r = 1.0 / (mean_sq + eps).sqrt();
                for j in 0..c {
                    let mut g = 0.0;
                    for i in 0..c {
                        let jac = if i == j { r } else { 0.0 } - x[at(i)] * x[at(j)] * r * r * r / c as f64;
                        g += dy[at(i)] * jac;
                    }
                    dx[at(j)] = g;
                }
            }
        }
        dx
    }
}

impl<B: Backend> Checker<'_, B> {
    pub fn pixel_norm(&mut self, p: PixelNormParams) -> Result<()> {
        let shape = format!("n{} c{} hw{} eps{:e}", p.n, p.c, p.hw, p.eps);
        let x = normal(&mut self.rng, p.len(), 1.0);
        let dy = normal(&mut self.rng, p.len(), 1.0);
        fn forward<B: Backend>(be: &B, p: &PixelNormParams, x: &[f32]) -> Result<Vec<f32>> {
            let x = up(be, x)?;
            let mut y = poisoned(be, p.len())?;
            be.pixel_norm_forward(p, &x, &mut y)?;
            down(be, &y, p.len())
        }
        fn backward<B: Backend>(be: &B, p: &PixelNormParams, x: &[f32], dy: &[f32]) -> Result<Vec<f32>> {
            let (x, dy) = (up(be, x)?, up(be, dy)?);
            let mut dx = poisoned(be, p.len())?;
            be.pixel_norm_backward_input(p, &x, &dy, &mut dx)?;
            down(be, &dx, p.len())
        }
        // Sums over the channels in f32 on the GPU, in f64 on the CPU.
        self.case("pixel_norm_forward_f32", shape.clone(), TOL_REDUCE, |g| forward(g, &p, &x), |c| forward(c, &p, &x))?;
        // dx is the difference of two terms that cancel where dy is nearly parallel to x
        // (entirely at one channel, where y = sign(x) and dx is eps-small): f32 rounding
        // scales with the terms, not with dx, so each value's bound has a term in the sum
        // of their magnitudes.
        let terms = backward_terms(&p, &x, &dy);
        self.case_parts(
            "pixel_norm_backward_input_f32",
            shape,
            |len| vec![Part::gemm("", len, BACKWARD_TOL, Some(terms))],
            |g| backward(g, &p, &x, &dy),
            |c| backward(c, &p, &x, &dy),
        )
    }
}

/// The backward row's bound: the reduction tolerance, and 1e-5 of each value's sum of
/// term magnitudes (a few f32 roundings of the sum over up to 512 channels).
const BACKWARD_TOL: Tol = Tol { products: 1e-5, ..TOL_REDUCE };

/// `|r dy_i| + |x_i| r^3 (1/C) sum_j |dy_j x_j|` for every value: the magnitudes of the
/// terms `dx_i` is made of, in f64.
fn backward_terms(p: &PixelNormParams, x: &[f32], dy: &[f32]) -> Vec<f64> {
    let (n, c, hw, eps) = (p.n as usize, p.c as usize, p.hw as usize, p.eps as f64);
    let mut out = vec![0.0; p.len()];
    for s in 0..n {
        for q in 0..hw {
            let at = |j: usize| (s * c + j) * hw + q;
            let mean_sq = (0..c).map(|j| (x[at(j)] as f64).powi(2)).sum::<f64>() / c as f64;
            let r = 1.0 / (mean_sq + eps).sqrt();
            let dot_abs = (0..c).map(|j| (dy[at(j)] as f64 * x[at(j)] as f64).abs()).sum::<f64>();
            for j in 0..c {
                out[at(j)] = (r * dy[at(j)] as f64).abs() + (x[at(j)] as f64).abs() * r * r * r * dot_abs / c as f64;
            }
        }
    }
    out
}

/// Finite differences of the input gradient: ProGAN's eps, a large eps (its term of the
/// derivative matters), one channel, one pixel.
pub fn gradchecks(h: &OpHarness, rng: &mut Rng, out: &mut Vec<CheckResult>) -> Result<()> {
    let be = &h.be;
    for (p, label) in [
        (PixelNormParams::new(3, 4, 5, 1e-8), "pixel_norm 3x4x5 eps 1e-8"),
        (PixelNormParams::new(2, 3, 7, 0.5), "pixel_norm 2x3x7 eps 0.5"),
        (PixelNormParams::new(2, 1, 3, 1e-3), "pixel_norm 2x1x3 eps 1e-3"),
        (PixelNormParams::new(1, 6, 1, 1e-8), "pixel_norm 1x6x1 eps 1e-8"),
    ] {
        let (x, r) = (rand_vec(rng, p.len()), rand_vec(rng, p.len()));
        let fwd = |x: &[f64]| -> Result<f64> {
            let mut y = be.alloc(p.len())?;
            be.pixel_norm_forward(&p, &h.buf(x)?, &mut y)?;
            Ok(dot(&y, &r))
        };
        let mut dx = be.alloc(p.len())?;
        be.pixel_norm_backward_input(&p, &h.buf(&x)?, &h.buf(&r)?, &mut dx)?;
        out.push(check_all(label, &x, &dx, fwd)?);
    }
    Ok(())
}

/// The CPU twin in f64 against the direct loops.
pub fn direct_checks(rng: &mut Rng) -> Result<Vec<DirectCheck>> {
    let be = Cpu64::new();
    let mut out = Vec::new();
    for p in [PixelNormParams::new(2, 3, 5, 1e-8), PixelNormParams::new(1, 7, 1, 0.25), PixelNormParams::new(3, 1, 4, 1e-8)] {
        let label = format!("pixel_norm n{} c{} hw{} eps{:e}", p.n, p.c, p.hw, p.eps);
        let (x, dy) = (rand_vec(rng, p.len()), rand_vec(rng, p.len()));
        let mut y = vec![0.0; p.len()];
        be.pixel_norm_forward(&p, &x, &mut y)?;
        out.push(DirectCheck::new(format!("{label} forward"), &direct::forward(&p, &x), &y));
        let mut dx = vec![0.0; p.len()];
        be.pixel_norm_backward_input(&p, &x, &dy, &mut dx)?;
        out.push(DirectCheck::new(format!("{label} backward_input"), &direct::backward(&p, &x, &dy), &dx));
    }
    Ok(out)
}
