//! avg_pool2d: the direct loops, the finite-difference checks and the twin rows (CPU twin
//! `backend/cpu/pool.rs`, kernels `kernels/pool.cu`).

use super::gradcheck::{check_all, dot, rand_vec, CheckResult, DirectCheck, OpHarness};
use super::twin::{down, normal, poisoned, up, Checker, TOL_ELEM, TOL_REDUCE};
use crate::backend::cpu::Cpu64;
use crate::backend::prelude::*;
use crate::backend::PoolParams;
use crate::rng::Rng;
use anyhow::Result;

/// The op by its definition, in f64.
pub mod direct {
    use crate::backend::PoolParams;

    /// `y[n, c, oy, ox] = sum_{dy, dx < k} x[n, c, oy k + dy, ox k + dx] / k^2`.
    pub fn forward(p: &PoolParams, x: &[f64]) -> Vec<f64> {
        let (nc, h, w, k) = ((p.n * p.c) as usize, p.h_in as usize, p.w_in as usize, p.k as usize);
        let (ho, wo) = (h / k, w / k);
        let mut y = vec![0.0; nc * ho * wo];
        for plane in 0..nc {
            for oy in 0..ho {
                for ox in 0..wo {
                    let mut s = 0.0;
                    for dy in 0..k {
                        for dx in 0..k {
                            s += x[plane * h * w + (oy * k + dy) * w + ox * k + dx];
                        }
                    }
                    y[(plane * ho + oy) * wo + ox] = s / (k * k) as f64;
                }
            }
        }
        y
    }
    /// `dx[n, c, y, x] = dy[n, c, y / k, x / k] / k^2`.
    pub fn backward(p: &PoolParams, dy: &[f64]) -> Vec<f64> {
        let (nc, h, w, k) = ((p.n * p.c) as usize, p.h_in as usize, p.w_in as usize, p.k as usize);
        let (ho, wo) = (h / k, w / k);
        let mut dx = vec![0.0; nc * h * w];
        for plane in 0..nc {
            for iy in 0..h {
                for ix in 0..w {
                    dx[plane * h * w + iy * w + ix] = dy[(plane * ho + iy / k) * wo + ix / k] / (k * k) as f64;
                }
            }
        }
        dx
    }
}

impl<B: Backend> Checker<'_, B> {
    pub fn pool(&mut self, p: PoolParams) -> Result<()> {
        let shape = format!("n{} c{} {}x{} k{}", p.n, p.c, p.h_in, p.w_in, p.k);
        let x = normal(&mut self.rng, p.in_len(), 1.0);
        let dy = normal(&mut self.rng, p.out_len(), 1.0);
        fn forward<B: Backend>(be: &B, p: &PoolParams, x: &[f32]) -> Result<Vec<f32>> {
            let x = up(be, x)?;
            let mut y = poisoned(be, p.out_len())?;
            be.avg_pool2d_forward(p, &x, &mut y)?;
            down(be, &y, p.out_len())
        }
        fn backward<B: Backend>(be: &B, p: &PoolParams, dy: &[f32]) -> Result<Vec<f32>> {
            let dy = up(be, dy)?;
            let mut dx = poisoned(be, p.in_len())?;
            be.avg_pool2d_backward_input(p, &dy, &mut dx)?;
            down(be, &dx, p.in_len())
        }
        self.case("avg_pool2d_forward_f32", shape.clone(), TOL_REDUCE, |g| forward(g, &p, &x), |c| forward(c, &p, &x))?;
        self.case("avg_pool2d_backward_input_f32", shape, TOL_ELEM, |g| backward(g, &p, &dy), |c| backward(c, &p, &dy))
    }
}

/// Finite differences of the input gradient: a 2x2 pool of an odd batch, and a global pool.
pub fn gradchecks(h: &OpHarness, rng: &mut Rng, out: &mut Vec<CheckResult>) -> Result<()> {
    let be = &h.be;
    for (p, label) in
        [(PoolParams::new(3, 2, 4, 6, 2)?, "avg_pool2d 2x2 of 3x2x4x6 input"), (PoolParams::global(2, 3, 5), "avg_pool2d global of 2x3x5x5 input")]
    {
        let (x, r) = (rand_vec(rng, p.in_len()), rand_vec(rng, p.out_len()));
        let fwd = |x: &[f64]| -> Result<f64> {
            let mut y = be.alloc(p.out_len())?;
            be.avg_pool2d_forward(&p, &h.buf(x)?, &mut y)?;
            Ok(dot(&y, &r))
        };
        let mut dx = be.alloc(p.in_len())?;
        be.avg_pool2d_backward_input(&p, &h.buf(&r)?, &mut dx)?;
        out.push(check_all(label, &x, &dx, fwd)?);
    }
    Ok(())
}

/// The CPU twin in f64 against the direct loops.
pub fn direct_checks(rng: &mut Rng) -> Result<Vec<DirectCheck>> {
    let be = Cpu64::new();
    let mut out = Vec::new();
    for p in [PoolParams::new(2, 3, 6, 4, 2)?, PoolParams::new(1, 1, 9, 9, 3)?, PoolParams::global(3, 2, 4), PoolParams::new(1, 2, 3, 5, 1)?] {
        let label = format!("avg_pool2d n{} c{} {}x{} k{}", p.n, p.c, p.h_in, p.w_in, p.k);
        let (x, dy) = (rand_vec(rng, p.in_len()), rand_vec(rng, p.out_len()));
        let mut y = vec![0.0; p.out_len()];
        be.avg_pool2d_forward(&p, &x, &mut y)?;
        out.push(DirectCheck::new(format!("{label} forward"), &direct::forward(&p, &x), &y));
        let mut dx = vec![0.0; p.in_len()];
        be.avg_pool2d_backward_input(&p, &dy, &mut dx)?;
        out.push(DirectCheck::new(format!("{label} backward_input"), &direct::backward(&p, &dy), &dx));
    }
    Ok(out)
}
