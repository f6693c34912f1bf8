//! minibatch_std: the direct loops, the finite-difference checks and the twin rows (CPU twin
//! `backend/cpu/minibatch_std.rs`, kernels `kernels/minibatch_std.cu`).

use super::gradcheck::{check_all, dot, rand_vec, CheckResult, DirectCheck, OpHarness};
use super::twin::{down, normal, up, Checker, TOL_REDUCE};
use crate::backend::cpu::Cpu64;
use crate::backend::prelude::*;
use crate::backend::MinibatchStdParams;
use crate::rng::Rng;
use anyhow::Result;

/// The op by its definition, in f64, with ProGAN's view of the batch: `x` reshaped to
/// `[group, m, c, hw]`, so sample `i = j m + col` is member `j` of column `col`.
pub mod direct {
    use crate::backend::minibatch_std::MINIBATCH_STD_EPS;
    use crate::backend::MinibatchStdParams;

    fn dims(p: &MinibatchStdParams) -> (usize, usize, usize, usize) {
        (p.group as usize, p.columns(), p.c as usize, p.hw as usize)
    }

    /// `(mean[col][k], std[col][k])` over each column's members, `k` in `0..c hw`.
    fn stats(p: &MinibatchStdParams, x: &[f64]) -> (Vec<Vec<f64>>, Vec<Vec<f64>>) {
        let (g, m, c, hw) = dims(p);
        let (mut mean, mut std) = (vec![vec![0.0; c * hw]; m], vec![vec![0.0; c * hw]; m]);
        for col in 0..m {
            for k in 0..c * hw {
                let v: Vec<f64> = (0..g).map(|j| x[(j * m + col) * c * hw + k]).collect();
                let mu = v.iter().sum::<f64>() / g as f64;
                let var = v.iter().map(|a| (a - mu) * (a - mu)).sum::<f64>() / g as f64;
                mean[col][k] = mu;
                std[col][k] = (var + MINIBATCH_STD_EPS as f64).sqrt();
            }
        }
        (mean, std)
    }

    /// `y[i] = [x[i], s[i % m] tiled over the grid]`, `s[col]` the mean of the column's
    /// standard deviations.
    pub fn forward(p: &MinibatchStdParams, x: &[f64]) -> Vec<f64> {
        let (g, m, c, hw) = dims(p);
        let (_, std) = stats(p, x);
        let s: Vec<f64> = std.iter().map(|v| v.iter().sum::<f64>() / (c * hw) as f64).collect();
        let mut y = vec![0.0; p.out_len()];
        for j in 0..g {
            for (col, &spread) in s.iter().enumerate() {
                let i = j * m + col;
                for k in 0..c * hw {
                    y[i * (c + 1) * hw + k] = x[i * c * hw + k];
                }
                for q in 0..hw {
                    y[(i * (c + 1) + c) * hw + q] = spread;
                }
            }
        }
        y
    }

    /// By the chain rule: `ds[col] = sum of dy's extra channel over the column`, then
    /// `d std / d x = (x - mean) / (group std)` (the mean's own dependence cancels) and
    /// `d s / d std = 1 / (c hw)`.
    pub fn backward(p: &MinibatchStdParams, x: &[f64], dy: &[f64]) -> Vec<f64> {
        let (g, m, c, hw) = dims(p);
        let (mean, std) = stats(p, x);
        let mut ds = vec![0.0; m];
        for j in 0..g {
            for col in 0..m {
                for q in 0..hw {
                    ds[col] += dy[((j * m + col) * (c + 1) + c) * hw + q];
                }
            }
        }
        let mut dx = vec![0.0; p.in_len()];
        for j in 0..g {
            for col in 0..m {
                let i = j * m + col;
                for k in 0..c * hw {
                    let dstd = (x[i * c * hw + k] - mean[col][k]) / (g as f64 * std[col][k]);
                    dx[i * c * hw + k] = dy[i * (c + 1) * hw + k] + ds[col] / (c * hw) as f64 * dstd;
                }
            }
        }
        dx
    }
}

impl<B: Backend> Checker<'_, B> {
    /// Batch `n`, `c` channels on an `hw` grid, groups of the `requested` size or the
    /// largest divisor of `n` below it.
    pub fn minibatch_std(&mut self, n: usize, c: usize, hw: usize, requested: usize) -> Result<()> {
        let p = MinibatchStdParams::new(n, c, hw, requested);
        let shape = format!("n{n} c{c} hw{hw} group{} (of {requested})", p.group);
        let x = normal(&mut self.rng, p.in_len(), 1.0);
        let dy = normal(&mut self.rng, p.out_len(), 1.0);
        fn forward<B: Backend>(be: &B, p: &MinibatchStdParams, x: &[f32]) -> Result<Vec<f32>> {
            let x = up(be, x)?;
            let mut y = be.alloc(p.out_len())?;
            be.minibatch_std_forward(p, &x, &mut y)?;
            down(be, &y, p.out_len())
        }
        fn backward<B: Backend>(be: &B, p: &MinibatchStdParams, x: &[f32], dy: &[f32]) -> Result<Vec<f32>> {
            let (x, dy) = (up(be, x)?, up(be, dy)?);
            let mut dx = be.alloc(p.in_len())?;
            be.minibatch_std_backward_input(p, &x, &dy, &mut dx)?;
            down(be, &dx, p.in_len())
        }
        self.case("minibatch_std_forward_f32", shape.clone(), TOL_REDUCE, |g| forward(g, &p, &x), |c| forward(c, &p, &x))?;
        self.case("minibatch_std_backward_input_f32", shape, TOL_REDUCE, |g| backward(g, &p, &x, &dy), |c| backward(c, &p, &x, &dy))
    }
}

/// Finite differences of the input gradient: two columns of two; a batch of 6 asked for
/// groups of 4 (groups of 3); one column holding the whole batch; and a batch of 3 asked
/// for groups of 2, which leaves groups of 1 (the edge where every deviation is zero).
pub fn gradchecks(h: &OpHarness, rng: &mut Rng, out: &mut Vec<CheckResult>) -> Result<()> {
    let be = &h.be;
    for (n, c, hw, requested) in [(4, 2, 3, 2), (6, 3, 2, 4), (5, 2, 4, 5), (3, 2, 3, 2)] {
        let p = MinibatchStdParams::new(n, c, hw, requested);
        let label = format!("minibatch_std {n}x{c}x{hw} group {} (of {requested})", p.group);
        let (x, r) = (rand_vec(rng, p.in_len()), rand_vec(rng, p.out_len()));
        let fwd = |x: &[f64]| -> Result<f64> {
            let mut y = be.alloc(p.out_len())?;
            be.minibatch_std_forward(&p, &h.buf(x)?, &mut y)?;
            Ok(dot(&y, &r))
        };
        let mut dx = be.alloc(p.in_len())?;
        be.minibatch_std_backward_input(&p, &h.buf(&x)?, &h.buf(&r)?, &mut dx)?;
        out.push(check_all(&label, &x, &dx, fwd)?);
    }
    Ok(())
}

/// The CPU twin in f64 against the direct loops.
pub fn direct_checks(rng: &mut Rng) -> Result<Vec<DirectCheck>> {
    let be = Cpu64::new();
    let mut out = Vec::new();
    for (n, c, hw, requested) in [(8, 3, 5, 4), (6, 2, 7, 4), (3, 4, 2, 2), (2, 5, 16, 4), (1, 3, 3, 4)] {
        let p = MinibatchStdParams::new(n, c, hw, requested);
        let label = format!("minibatch_std n{n} c{c} hw{hw} group{} (of {requested})", p.group);
        let (x, dy) = (rand_vec(rng, p.in_len()), rand_vec(rng, p.out_len()));
        let mut y = vec![0.0; p.out_len()];
        be.minibatch_std_forward(&p, &x, &mut y)?;
        out.push(DirectCheck::new(format!("{label} forward"), &direct::forward(&p, &x), &y));
        let mut dx = vec![0.0; p.in_len()];
        be.minibatch_std_backward_input(&p, &x, &dy, &mut dx)?;
        out.push(DirectCheck::new(format!("{label} backward_input"), &direct::backward(&p, &x, &dy), &dx));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::minibatch_std::effective_group;

    #[test]
    fn the_group_is_the_largest_divisor_of_the_batch_not_above_the_request() {
        assert_eq!(effective_group(64, 4), 4);
        assert_eq!(effective_group(6, 4), 3);
        assert_eq!(effective_group(7, 4), 1);
        assert_eq!(effective_group(3, 2), 1);
        assert_eq!(effective_group(2, 4), 2);
        assert_eq!(effective_group(5, 0), 1);
    }

    #[test]
    fn every_sample_of_a_column_gets_the_same_spread_and_identical_columns_none() {
        // Two columns of two: column 0 holds samples 0 and 2, column 1 samples 1 and 3.
        let be = Cpu64::new();
        let p = MinibatchStdParams::new(4, 1, 2, 2);
        let x = vec![1.0, 1.0, 5.0, 5.0, 3.0, 3.0, 5.0, 5.0];
        let mut y = vec![0.0; p.out_len()];
        be.minibatch_std_forward(&p, &x, &mut y).unwrap();
        let extra = |i: usize| y[i * 4 + 2];
        assert!((extra(0) - 1.0).abs() < 1e-6 && (extra(2) - 1.0).abs() < 1e-6, "{y:?}");
        assert!(extra(1) < 1e-3 && extra(3) < 1e-3, "{y:?}");
    }
}
