//! batchnorm2d with its fused activations: the direct loops, the finite-difference
//! checks and the twin rows (CPU twin `backend/cpu/batchnorm.rs`, kernels
//! `kernels/batchnorm.cu`).

use super::gradcheck::{check_all, dot, rand_vec, CheckResult, DirectCheck, OpHarness};
use super::twin::{down, normal, poisoned, up, Checker, Part, TOL_ELEM, TOL_REDUCE};
use crate::backend::cpu::{Cpu, Cpu64};
use crate::backend::prelude::*;
use crate::backend::{BatchNormParams, BN_ACT_LEAKY_RELU, BN_ACT_NONE, BN_ACT_RELU};
use crate::rng::Rng;
use anyhow::Result;

/// The op by its definition, in f64, one channel at a time.
pub mod direct {
    use crate::backend::BatchNormParams;

    /// The values of channel `c`, image by image.
    fn channel(p: &BatchNormParams, x: &[f64], c: usize) -> Vec<f64> {
        let (n, cs, hw) = (p.n as usize, p.c as usize, p.hw as usize);
        (0..n).flat_map(|i| x[(i * cs + c) * hw..(i * cs + c + 1) * hw].to_vec()).collect()
    }

    /// `v` through the fused activation.
    pub fn act(p: &BatchNormParams, v: f64) -> f64 {
        if v > 0.0 {
            v
        } else {
            v * p.act_grad(false) as f64
        }
    }

    /// Training mode: `(y, mean, invstd, running_mean, running_var)` from the running
    /// statistics `rm`, `rv` before the step. The variance that normalises is the biased
    /// one; the running variance gets the unbiased one (PyTorch).
    pub fn forward_train(p: &BatchNormParams, x: &[f64], gamma: &[f64], beta: &[f64], rm: &[f64], rv: &[f64]) -> [Vec<f64>; 5] {
        let (cs, hw) = (p.c as usize, p.hw as usize);
        let (mut y, mut mean, mut invstd, mut rm1, mut rv1) = (vec![0.0; p.len()], vec![0.0; cs], vec![0.0; cs], vec![0.0; cs], vec![0.0; cs]);
        let m = p.momentum as f64;
        for c in 0..cs {
            let v = channel(p, x, c);
            let count = v.len() as f64;
            let mu = v.iter().sum::<f64>() / count;
            let ss = v.iter().map(|a| (a - mu) * (a - mu)).sum::<f64>();
            let is = 1.0 / (ss / count + p.eps as f64).sqrt();
            (mean[c], invstd[c]) = (mu, is);
            rm1[c] = (1.0 - m) * rm[c] + m * mu;
            rv1[c] = (1.0 - m) * rv[c] + m * if count > 1.0 { ss / (count - 1.0) } else { ss / count };
            for i in 0..p.n as usize {
                for q in 0..hw {
                    let at = (i * cs + c) * hw + q;
                    y[at] = act(p, (x[at] - mu) * is * gamma[c] + beta[c]);
                }
            }
        }
        [y, mean, invstd, rm1, rv1]
    }

    /// Inference mode, with the running statistics.
    pub fn forward_infer(p: &BatchNormParams, x: &[f64], gamma: &[f64], beta: &[f64], rm: &[f64], rv: &[f64]) -> Vec<f64> {
        let (cs, hw) = (p.c as usize, p.hw as usize);
        (0..p.len())
            .map(|at| {
                let c = (at / hw) % cs;
                act(p, (x[at] - rm[c]) / (rv[c] + p.eps as f64).sqrt() * gamma[c] + beta[c])
            })
            .collect()
    }

    /// `(dx, dgamma, dbeta)` of training mode through the batch statistics, `y` the forward
    /// output (the fused activation's derivative is read from its sign):
    /// `g = dy act'(y)`, `dx = gamma invstd (g - mean(g) - xhat mean(g xhat))`,
    /// `dgamma = sum(g xhat)`, `dbeta = sum(g)`.
    pub fn backward(p: &BatchNormParams, x: &[f64], y: &[f64], dy: &[f64], gamma: &[f64]) -> [Vec<f64>; 3] {
        let (cs, hw) = (p.c as usize, p.hw as usize);
        let (mut dx, mut dgamma, mut dbeta) = (vec![0.0; p.len()], vec![0.0; cs], vec![0.0; cs]);
        for c in 0..cs {
            let v = channel(p, x, c);
            let count = v.len() as f64;
            let mu = v.iter().sum::<f64>() / count;
            let is = 1.0 / (v.iter().map(|a| (a - mu) * (a - mu)).sum::<f64>() / count + p.eps as f64).sqrt();
            let at = |i: usize, q: usize| (i * cs + c) * hw + q;
            let g = |a: usize| if y[a] > 0.0 { dy[a] } else { dy[a] * p.act_grad(false) as f64 };
            let (mut sg, mut sgx) = (0.0, 0.0);
            for i in 0..p.n as usize {
                for q in 0..hw {
                    sg += g(at(i, q));
                    sgx += g(at(i, q)) * (x[at(i, q)] - mu) * is;
                }
            }
            (dbeta[c], dgamma[c]) = (sg, sgx);
            for i in 0..p.n as usize {
                for q in 0..hw {
                    let a = at(i, q);
                    dx[a] = gamma[c] * is * (g(a) - sg / count - (x[a] - mu) * is * sgx / count);
                }
            }
        }
        [dx, dgamma, dbeta]
    }
}

impl<B: Backend> Checker<'_, B> {
    /// Batchnorm at `p`'s shape and fused activation.
    pub fn batchnorm(&mut self, p: BatchNormParams) -> Result<()> {
        let (n, c, hw) = (p.n as usize, p.c as usize, p.hw as usize);
        let shape = format!("n{n} c{c} hw{hw}{}", p.act_label());
        let len = n * c * hw;
        // An offset per channel, so a one-pass variance would visibly lose precision.
        let mut x = normal(&mut self.rng, len, 1.5);
        for (i, v) in x.iter_mut().enumerate() {
            *v += ((i / hw) % c) as f32 * 0.75 - 1.0;
        }
        let gamma: Vec<f32> = normal(&mut self.rng, c, 0.2).iter().map(|v| v + 1.0).collect();
        let beta = normal(&mut self.rng, c, 0.5);
        let rmean = normal(&mut self.rng, c, 0.3);
        let rvar: Vec<f32> = normal(&mut self.rng, c, 0.2).iter().map(|v| v.abs() + 0.5).collect();
        let dy = normal(&mut self.rng, len, 1.0);
        let dg0 = normal(&mut self.rng, c, 1.0);
        let db0 = normal(&mut self.rng, c, 1.0);

        #[allow(clippy::too_many_arguments)]
        fn train<B: Backend>(be: &B, p: &BatchNormParams, x: &[f32], gamma: &[f32], beta: &[f32], rm: &[f32], rv: &[f32]) -> Result<Vec<f32>> {
            let c = p.c as usize;
            let (x, gamma, beta, mut rm, mut rv) = (up(be, x)?, up(be, gamma)?, up(be, beta)?, up(be, rm)?, up(be, rv)?);
            let (mut mean, mut invstd, mut y) = (poisoned(be, c)?, poisoned(be, c)?, poisoned(be, p.len())?);
            be.batchnorm2d_forward_train(p, &x, &gamma, &beta, &mut rm, &mut rv, &mut mean, &mut invstd, &mut y)?;
            let mut out = down(be, &y, p.len())?;
            for b in [&mean, &invstd, &rm, &rv] {
                out.extend(down(be, b, c)?);
            }
            Ok(out)
        }
        fn infer<B: Backend>(be: &B, p: &BatchNormParams, x: &[f32], gamma: &[f32], beta: &[f32], rm: &[f32], rv: &[f32]) -> Result<Vec<f32>> {
            let (x, gamma, beta, rm, rv) = (up(be, x)?, up(be, gamma)?, up(be, beta)?, up(be, rm)?, up(be, rv)?);
            let mut y = poisoned(be, p.len())?;
            be.batchnorm2d_forward_infer(p, &x, &gamma, &beta, &rm, &rv, &mut y)?;
            down(be, &y, p.len())
        }
        /// The forward output and batch statistics from the CPU twin, so both backward
        /// passes see the same ones (and the same signs of the activation's output).
        #[allow(clippy::type_complexity)]
        fn stats(cpu: &Cpu, p: &BatchNormParams, x: &[f32], gamma: &[f32], beta: &[f32]) -> Result<(Vec<f32>, Vec<f32>, Vec<f32>)> {
            let c = p.c as usize;
            let out = train(cpu, p, x, gamma, beta, &vec![0.0; c], &vec![1.0; c])?;
            Ok((out[..p.len()].to_vec(), out[p.len()..p.len() + c].to_vec(), out[p.len() + c..p.len() + 2 * c].to_vec()))
        }
        let (y, mean, invstd) = stats(&self.cpu, &p, &x, &gamma, &beta)?;
        #[allow(clippy::too_many_arguments)]
        fn backward_input<B: Backend>(
            be: &B,
            p: &BatchNormParams,
            x: &[f32],
            y: &[f32],
            dy: &[f32],
            gamma: &[f32],
            mean: &[f32],
            invstd: &[f32],
        ) -> Result<Vec<f32>> {
            let (x, y, dy, gamma, mean, invstd) = (up(be, x)?, up(be, y)?, up(be, dy)?, up(be, gamma)?, up(be, mean)?, up(be, invstd)?);
            let (mut dx, mut sums) = (poisoned(be, p.len())?, poisoned(be, 2 * p.c as usize)?);
            be.batchnorm2d_backward_input(p, &x, &y, &dy, &gamma, &mean, &invstd, &mut sums, &mut dx)?;
            let mut out = down(be, &dx, p.len())?;
            out.extend(down(be, &sums, 2 * p.c as usize)?);
            Ok(out)
        }
        fn backward_params<B: Backend>(be: &B, p: &BatchNormParams, sums: &[f32], dg0: &[f32], db0: &[f32]) -> Result<Vec<f32>> {
            let c = p.c as usize;
            let (sums, mut dg, mut db) = (up(be, sums)?, up(be, dg0)?, up(be, db0)?);
            be.batchnorm2d_backward_params(p, &sums, &mut dg, &mut db)?;
            let mut out = down(be, &dg, c)?;
            out.extend(down(be, &db, c)?);
            Ok(out)
        }
        let (xr, gr, br) = (&x, &gamma, &beta);
        let len = p.len();
        self.case_parts(
            "batchnorm2d_forward_train_f32",
            shape.clone(),
            |_| {
                ["y", "mean", "invstd", "running_mean", "running_var"]
                    .into_iter()
                    .map(|what| Part::new(what, if what == "y" { len } else { c }, TOL_REDUCE))
                    .collect()
            },
            |g| train(g, &p, xr, gr, br, &rmean, &rvar),
            |c| train(c, &p, xr, gr, br, &rmean, &rvar),
        )?;
        self.case(
            "batchnorm2d_forward_infer_f32",
            shape.clone(),
            TOL_ELEM,
            |g| infer(g, &p, xr, gr, br, &rmean, &rvar),
            |c| infer(c, &p, xr, gr, br, &rmean, &rvar),
        )?;
        let (yr, mr, ir) = (&y, &mean, &invstd);
        // dx (about 1) and the per-channel sums (up to hundreds) apart: under one bound
        // scaled by the sums, dx could lose its mean term unseen (the test below).
        self.case_parts(
            "batchnorm2d_backward_input_f32",
            shape.clone(),
            |_| vec![Part::new("dx", len, TOL_REDUCE), Part::new("sums", 2 * c, TOL_REDUCE)],
            |g| backward_input(g, &p, xr, yr, &dy, gr, mr, ir),
            |c| backward_input(c, &p, xr, yr, &dy, gr, mr, ir),
        )?;
        let sums = normal(&mut self.rng, 2 * c, 10.0);
        self.case_parts(
            "batchnorm2d_backward_params_f32",
            format!("c{c} += sums"),
            |_| vec![Part::new("dgamma", c, TOL_ELEM), Part::new("dbeta", c, TOL_ELEM)],
            |g| backward_params(g, &p, &sums, &dg0, &db0),
            |c| backward_params(c, &p, &sums, &dg0, &db0),
        )
    }
}

/// Finite differences of the input, gamma and beta gradients of training-mode batchnorm
/// (gradients flow through the batch statistics), plain and with each fused activation.
pub fn gradchecks(h: &OpHarness, rng: &mut Rng, out: &mut Vec<CheckResult>) -> Result<()> {
    let be = &h.be;
    for (label, act, slope) in [("", BN_ACT_NONE, 0.0), ("+relu ", BN_ACT_RELU, 0.0), ("+leaky_relu ", BN_ACT_LEAKY_RELU, 0.2)] {
        let p = BatchNormParams::new(3, 4, 5, 1e-5, 0.1).with_act(act, slope);
        let (x, gamma, beta, r) = (rand_vec(rng, p.len()), rand_vec(rng, 4), rand_vec(rng, 4), rand_vec(rng, p.len()));
        let fwd = |x: &[f64], g: &[f64], b: &[f64]| -> Result<f64> {
            let (mut rm, mut rv, mut mean, mut inv, mut y) = (be.alloc(4)?, be.alloc(4)?, be.alloc(4)?, be.alloc(4)?, be.alloc(p.len())?);
            be.batchnorm2d_forward_train(&p, &h.buf(x)?, &h.buf(g)?, &h.buf(b)?, &mut rm, &mut rv, &mut mean, &mut inv, &mut y)?;
            Ok(dot(&y, &r))
        };
        let (mut rm, mut rv, mut mean, mut inv, mut y) = (be.alloc(4)?, be.alloc(4)?, be.alloc(4)?, be.alloc(4)?, be.alloc(p.len())?);
        let (xb, gb, rb) = (h.buf(&x)?, h.buf(&gamma)?, h.buf(&r)?);
        be.batchnorm2d_forward_train(&p, &xb, &gb, &h.buf(&beta)?, &mut rm, &mut rv, &mut mean, &mut inv, &mut y)?;
        let (mut dx, mut dg, mut dbeta) = (be.alloc(p.len())?, be.alloc(4)?, be.alloc(4)?);
        let mut sums = be.alloc(8)?;
        be.batchnorm2d_backward_input(&p, &xb, &y, &rb, &gb, &mean, &inv, &mut sums, &mut dx)?;
        be.batchnorm2d_backward_params(&p, &sums, &mut dg, &mut dbeta)?;
        out.push(check_all(&format!("batchnorm2d {label}3x4x5 input"), &x, &dx, |v| fwd(v, &gamma, &beta))?);
        out.push(check_all(&format!("batchnorm2d {label}3x4x5 gamma"), &gamma, &dg, |v| fwd(&x, v, &beta))?);
        out.push(check_all(&format!("batchnorm2d {label}3x4x5 beta"), &beta, &dbeta, |v| fwd(&x, &gamma, v))?);
    }
    Ok(())
}

/// The CPU twin in f64 against the direct loops, plain and with each fused activation,
/// at planes of 35 values (not a multiple of the twin's 16 lanes) and of 1.
pub fn direct_checks(rng: &mut Rng) -> Result<Vec<DirectCheck>> {
    let be = Cpu64::new();
    let mut out = Vec::new();
    for (act, slope) in [(BN_ACT_NONE, 0.0), (BN_ACT_RELU, 0.0), (BN_ACT_LEAKY_RELU, 0.2)] {
        for (n, c, hw) in [(3, 4, 35), (5, 2, 1)] {
            let p = BatchNormParams::new(n, c, hw, 1e-5, 0.1).with_act(act, slope);
            let label = format!("batchnorm2d{} n{n} c{c} hw{hw}", p.act_label());
            let offset: Vec<f64> = (0..p.len()).map(|i| ((i / hw) % c) as f64 * 0.75).collect();
            let x: Vec<f64> = rand_vec(rng, p.len()).iter().zip(&offset).map(|(v, o)| v + o).collect();
            let (gamma, beta, rm, rv) = (rand_vec(rng, c), rand_vec(rng, c), rand_vec(rng, c), rand_vec(rng, c).iter().map(|v| v.abs()).collect::<Vec<_>>());
            let dy = rand_vec(rng, p.len());
            let want = direct::forward_train(&p, &x, &gamma, &beta, &rm, &rv);
            let (mut rm_b, mut rv_b, mut mean, mut invstd, mut y) = (rm.clone(), rv.clone(), vec![0.0; c], vec![0.0; c], vec![0.0; p.len()]);
            be.batchnorm2d_forward_train(&p, &x, &gamma, &beta, &mut rm_b, &mut rv_b, &mut mean, &mut invstd, &mut y)?;
            for (what, got, want) in [
                ("y", &y, &want[0]),
                ("mean", &mean, &want[1]),
                ("invstd", &invstd, &want[2]),
                ("running_mean", &rm_b, &want[3]),
                ("running_var", &rv_b, &want[4]),
            ] {
                out.push(DirectCheck::new(format!("{label} forward_train {what}"), want, got));
            }
            let mut yi = vec![0.0; p.len()];
            be.batchnorm2d_forward_infer(&p, &x, &gamma, &beta, &rm, &rv, &mut yi)?;
            out.push(DirectCheck::new(format!("{label} forward_infer"), &direct::forward_infer(&p, &x, &gamma, &beta, &rm, &rv), &yi));
            let [dx_w, dg_w, db_w] = direct::backward(&p, &x, &y, &dy, &gamma);
            let (mut sums, mut dx, mut dg, mut db) = (vec![0.0; 2 * c], vec![0.0; p.len()], vec![0.0; c], vec![0.0; c]);
            be.batchnorm2d_backward_input(&p, &x, &y, &dy, &gamma, &mean, &invstd, &mut sums, &mut dx)?;
            be.batchnorm2d_backward_params(&p, &sums, &mut dg, &mut db)?;
            out.push(DirectCheck::new(format!("{label} backward_input dx"), &dx_w, &dx));
            out.push(DirectCheck::new(format!("{label} backward_params dgamma"), &dg_w, &dg));
            out.push(DirectCheck::new(format!("{label} backward_params dbeta"), &db_w, &db));
        }
    }
    Ok(out)
}
