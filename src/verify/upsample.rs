//! upsample_nearest: the direct loops, the finite-difference checks and the twin rows (CPU
//! twin `backend/cpu/upsample.rs`, kernels `kernels/upsample.cu`).

use super::gradcheck::{check_all, dot, rand_vec, CheckResult, DirectCheck, OpHarness};
use super::twin::{down, normal, poisoned, up, Checker, TOL_EXACT, TOL_REDUCE};
use crate::backend::cpu::Cpu64;
use crate::backend::prelude::*;
use crate::backend::UpsampleParams;
use crate::rng::Rng;
use anyhow::Result;

/// The op by its definition, in f64.
pub mod direct {
    use crate::backend::UpsampleParams;

    /// `y[n, c, i, j] = x[n, c, i / k, j / k]`.
    pub fn forward(p: &UpsampleParams, x: &[f64]) -> Vec<f64> {
        let (nc, h, w, k) = ((p.n * p.c) as usize, p.h_in as usize, p.w_in as usize, p.k as usize);
        let mut y = Vec::with_capacity(nc * h * k * w * k);
        for plane in 0..nc {
            for i in 0..h * k {
                for j in 0..w * k {
                    y.push(x[plane * h * w + (i / k) * w + j / k]);
                }
            }
        }
        y
    }
    /// `dx[n, c, i, j] = sum over the k x k block of dy at (i k, j k)`: every output value
    /// adds its gradient to the input value it copied.
    pub fn backward(p: &UpsampleParams, dy: &[f64]) -> Vec<f64> {
        let (nc, h, w, k) = ((p.n * p.c) as usize, p.h_in as usize, p.w_in as usize, p.k as usize);
        let mut dx = vec![0.0; nc * h * w];
        for plane in 0..nc {
            for i in 0..h * k {
                for j in 0..w * k {
                    dx[plane * h * w + (i / k) * w + j / k] += dy[(plane * h * k + i) * w * k + j];
                }
            }
        }
        dx
    }
}

impl<B: Backend> Checker<'_, B> {
    pub fn upsample(&mut self, p: UpsampleParams) -> Result<()> {
        let shape = format!("n{} c{} {}x{} k{}", p.n, p.c, p.h_in, p.w_in, p.k);
        let x = normal(&mut self.rng, p.in_len(), 1.0);
        let dy = normal(&mut self.rng, p.out_len(), 1.0);
        fn forward<B: Backend>(be: &B, p: &UpsampleParams, x: &[f32]) -> Result<Vec<f32>> {
            let x = up(be, x)?;
            let mut y = poisoned(be, p.out_len())?;
            be.upsample_nearest_forward(p, &x, &mut y)?;
            down(be, &y, p.out_len())
        }
        fn backward<B: Backend>(be: &B, p: &UpsampleParams, dy: &[f32]) -> Result<Vec<f32>> {
            let dy = up(be, dy)?;
            let mut dx = poisoned(be, p.in_len())?;
            be.upsample_nearest_backward_input(p, &dy, &mut dx)?;
            down(be, &dx, p.in_len())
        }
        // A copy: exact. The block sums: f32 on the GPU, f64 rounded once on the CPU.
        self.case("upsample_nearest_forward_f32", shape.clone(), TOL_EXACT, |g| forward(g, &p, &x), |c| forward(c, &p, &x))?;
        self.case("upsample_nearest_backward_input_f32", shape, TOL_REDUCE, |g| backward(g, &p, &dy), |c| backward(c, &p, &dy))
    }
}

/// Finite differences of the input gradient: factor 2 on an odd plane, factor 3, factor 1.
pub fn gradchecks(h: &OpHarness, rng: &mut Rng, out: &mut Vec<CheckResult>) -> Result<()> {
    let be = &h.be;
    for (p, label) in [
        (UpsampleParams::new(3, 2, 3, 5, 2)?, "upsample_nearest x2 of 3x2x3x5 input"),
        (UpsampleParams::new(1, 3, 2, 2, 3)?, "upsample_nearest x3 of 1x3x2x2 input"),
        (UpsampleParams::new(2, 1, 3, 1, 1)?, "upsample_nearest x1 of 2x1x3x1 input"),
    ] {
        let (x, r) = (rand_vec(rng, p.in_len()), rand_vec(rng, p.out_len()));
        let fwd = |x: &[f64]| -> Result<f64> {
            let mut y = be.alloc(p.out_len())?;
            be.upsample_nearest_forward(&p, &h.buf(x)?, &mut y)?;
            Ok(dot(&y, &r))
        };
        let mut dx = be.alloc(p.in_len())?;
        be.upsample_nearest_backward_input(&p, &h.buf(&r)?, &mut dx)?;
        out.push(check_all(label, &x, &dx, fwd)?);
    }
    Ok(())
}

/// The CPU twin in f64 against the direct loops.
pub fn direct_checks(rng: &mut Rng) -> Result<Vec<DirectCheck>> {
    let be = Cpu64::new();
    let mut out = Vec::new();
    for p in
        [UpsampleParams::new(2, 3, 3, 4, 2)?, UpsampleParams::new(1, 1, 5, 3, 3)?, UpsampleParams::new(3, 2, 1, 1, 4)?, UpsampleParams::new(1, 2, 3, 5, 1)?]
    {
        let label = format!("upsample_nearest n{} c{} {}x{} k{}", p.n, p.c, p.h_in, p.w_in, p.k);
        let (x, dy) = (rand_vec(rng, p.in_len()), rand_vec(rng, p.out_len()));
        let mut y = vec![0.0; p.out_len()];
        be.upsample_nearest_forward(&p, &x, &mut y)?;
        out.push(DirectCheck::new(format!("{label} forward"), &direct::forward(&p, &x), &y));
        let mut dx = vec![0.0; p.in_len()];
        be.upsample_nearest_backward_input(&p, &dy, &mut dx)?;
        out.push(DirectCheck::new(format!("{label} backward_input"), &direct::backward(&p, &dy), &dx));
    }
    Ok(out)
}
