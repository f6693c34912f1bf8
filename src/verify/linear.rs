//! linear: the direct loops, the finite-difference checks and the twin rows (CPU twin
//! `backend/cpu/linear.rs`, kernels `kernels/linear.cu`).

use super::gradcheck::{check_all, dot, rand_vec, CheckResult, DirectCheck, OpHarness};
use super::twin::{abs, down, normal, poisoned, up, Checker, Part, TOL_REDUCE};
use crate::backend::cpu::Cpu64;
use crate::backend::prelude::*;
use crate::backend::LinearParams;
use crate::rng::Rng;
use anyhow::Result;

/// The op by its definition, in f64 (PyTorch layout: `w[out, in]`).
pub mod direct {
    use crate::backend::LinearParams;

    /// `y[n, o] = sum_i x[n, i] w[o, i] + b[o]`.
    pub fn forward(p: &LinearParams, x: &[f64], w: &[f64], b: &[f64]) -> Vec<f64> {
        let (n, ni, no) = (p.n as usize, p.in_features as usize, p.out_features as usize);
        let mut y = vec![0.0; n * no];
        for r in 0..n {
            for o in 0..no {
                y[r * no + o] = b[o] + (0..ni).map(|i| x[r * ni + i] * w[o * ni + i]).sum::<f64>();
            }
        }
        y
    }
    /// `(dx, dw, db)`: `dx[n, i] = sum_o dy[n, o] w[o, i]`, `dw[o, i] = sum_n dy[n, o] x[n, i]`,
    /// `db[o] = sum_n dy[n, o]`.
    pub fn backward(p: &LinearParams, x: &[f64], w: &[f64], dy: &[f64]) -> [Vec<f64>; 3] {
        let (n, ni, no) = (p.n as usize, p.in_features as usize, p.out_features as usize);
        let (mut dx, mut dw, mut db) = (vec![0.0; n * ni], vec![0.0; no * ni], vec![0.0; no]);
        for r in 0..n {
            for o in 0..no {
                let g = dy[r * no + o];
                db[o] += g;
                for i in 0..ni {
                    dx[r * ni + i] += g * w[o * ni + i];
                    dw[o * ni + i] += g * x[r * ni + i];
                }
            }
        }
        [dx, dw, db]
    }
}

impl<B: Backend> Checker<'_, B> {
    pub fn linear(&mut self, n: usize, i: usize, o: usize) -> Result<()> {
        let p = LinearParams { n: n as i32, in_features: i as i32, out_features: o as i32 };
        let shape = format!("n{n} {i} -> {o}");
        let x = normal(&mut self.rng, n * i, 1.0);
        let w = normal(&mut self.rng, o * i, 1.0 / (i as f64).sqrt());
        let b = normal(&mut self.rng, o, 1.0);
        let dy = normal(&mut self.rng, n * o, 1.0);
        let dw0 = normal(&mut self.rng, o * i, 1.0);
        let db0 = normal(&mut self.rng, o, 1.0);
        fn forward<B: Backend>(be: &B, p: &LinearParams, x: &[f32], w: &[f32], b: &[f32]) -> Result<Vec<f32>> {
            let (x, w, b) = (up(be, x)?, up(be, w)?, up(be, b)?);
            let mut y = poisoned(be, (p.n * p.out_features) as usize)?;
            be.linear_forward(p, &x, &w, Some(&b), &mut y)?;
            down(be, &y, (p.n * p.out_features) as usize)
        }
        fn backward_input<B: Backend>(be: &B, p: &LinearParams, dy: &[f32], w: &[f32]) -> Result<Vec<f32>> {
            let (dy, w) = (up(be, dy)?, up(be, w)?);
            let mut dx = poisoned(be, (p.n * p.in_features) as usize)?;
            be.linear_backward_input(p, &dy, &w, &mut dx)?;
            down(be, &dx, (p.n * p.in_features) as usize)
        }
        fn backward_params<B: Backend>(be: &B, p: &LinearParams, x: &[f32], dy: &[f32], dw0: &[f32], db0: &[f32]) -> Result<Vec<f32>> {
            let (x, dy, mut dw, mut db) = (up(be, x)?, up(be, dy)?, up(be, dw0)?, up(be, db0)?);
            be.linear_backward_params(p, &x, &dy, &mut dw, Some(&mut db))?;
            let mut out = down(be, &dw, dw0.len())?;
            out.extend(down(be, &db, db0.len())?);
            Ok(out)
        }
        let tol = self.gemm_tol();
        let (xa, wa, dya) = (abs(&x), abs(&w), abs(&dy));
        let zero_b = vec![0.0f32; o];
        let y_products = self.products(|c| forward(c, &p, &xa, &wa, &zero_b))?;
        let dx_products = self.products(|c| backward_input(c, &p, &dya, &wa))?;
        let dw_products = self.products(|c| backward_params(c, &p, &xa, &dya, &vec![0.0; o * i], &zero_b).map(|v| v[..o * i].to_vec()))?;
        self.case_parts(
            "linear_forward_f32",
            format!("{shape} +bias"),
            |len| vec![Part::gemm("", len, tol, y_products)],
            |g| forward(g, &p, &x, &w, &b),
            |c| forward(c, &p, &x, &w, &b),
        )?;
        self.case_parts(
            "linear_backward_input_f32",
            shape.clone(),
            |len| vec![Part::gemm("", len, tol, dx_products)],
            |g| backward_input(g, &p, &dy, &w),
            |c| backward_input(c, &p, &dy, &w),
        )?;
        self.case_parts(
            "linear_backward_params_f32",
            format!("{shape} +="),
            |_| vec![Part::gemm("dw", o * i, tol, dw_products), Part::new("db", o, TOL_REDUCE)],
            |g| backward_params(g, &p, &x, &dy, &dw0, &db0),
            |c| backward_params(c, &p, &x, &dy, &dw0, &db0),
        )
    }
}

/// Finite differences of the input, weight and bias gradients.
pub fn gradchecks(h: &OpHarness, rng: &mut Rng, out: &mut Vec<CheckResult>) -> Result<()> {
    let be = &h.be;
    let p = LinearParams { n: 3, in_features: 5, out_features: 4 };
    let (x, w, b, r) = (rand_vec(rng, 15), rand_vec(rng, 20), rand_vec(rng, 4), rand_vec(rng, 12));
    let fwd = |x: &[f64], w: &[f64], b: &[f64]| -> Result<f64> {
        let mut y = be.alloc(12)?;
        be.linear_forward(&p, &h.buf(x)?, &h.buf(w)?, Some(&h.buf(b)?), &mut y)?;
        Ok(dot(&y, &r))
    };
    let (mut dx, mut dw, mut db) = (be.alloc(15)?, be.alloc(20)?, be.alloc(4)?);
    be.linear_backward_input(&p, &h.buf(&r)?, &h.buf(&w)?, &mut dx)?;
    be.linear_backward_params(&p, &h.buf(&x)?, &h.buf(&r)?, &mut dw, Some(&mut db))?;
    out.push(check_all("linear 3x5->4 input", &x, &dx, |v| fwd(v, &w, &b))?);
    out.push(check_all("linear 3x5->4 weight", &w, &dw, |v| fwd(&x, v, &b))?);
    out.push(check_all("linear 3x5->4 bias", &b, &db, |v| fwd(&x, &w, v))?);
    Ok(())
}

/// The CPU twin in f64 against the direct loops.
pub fn direct_checks(rng: &mut Rng) -> Result<Vec<DirectCheck>> {
    let be = Cpu64::new();
    let mut out = Vec::new();
    for (n, i, o) in [(3, 7, 5), (1, 70, 1), (4, 1, 9)] {
        let p = LinearParams { n, in_features: i, out_features: o };
        let (n, i, o) = (n as usize, i as usize, o as usize);
        let (x, w, b, dy) = (rand_vec(rng, n * i), rand_vec(rng, o * i), rand_vec(rng, o), rand_vec(rng, n * o));
        let label = format!("linear n{n} {i} -> {o}");
        let mut y = vec![0.0; n * o];
        be.linear_forward(&p, &x, &w, Some(&b), &mut y)?;
        out.push(DirectCheck::new(format!("{label} forward"), &direct::forward(&p, &x, &w, &b), &y));
        let [dx_w, dw_w, db_w] = direct::backward(&p, &x, &w, &dy);
        let (mut dx, mut dw, mut db) = (vec![0.0; n * i], vec![0.0; o * i], vec![0.0; o]);
        be.linear_backward_input(&p, &dy, &w, &mut dx)?;
        be.linear_backward_params(&p, &x, &dy, &mut dw, Some(&mut db))?;
        out.push(DirectCheck::new(format!("{label} backward_input"), &dx_w, &dx));
        out.push(DirectCheck::new(format!("{label} backward_params dw"), &dw_w, &dw));
        out.push(DirectCheck::new(format!("{label} backward_params db"), &db_w, &db));
    }
    Ok(out)
}
