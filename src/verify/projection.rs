//! projection: the direct loops, the finite-difference checks and the twin rows (CPU twin
//! `backend/cpu/projection.rs`, kernels `kernels/projection.cu`).

use super::gradcheck::{check_all, dot, rand_vec, CheckResult, DirectCheck, OpHarness};
use super::twin::{down, normal, poisoned, up, Checker, Part, TOL_ELEM, TOL_REDUCE};
use crate::backend::cpu::Cpu64;
use crate::backend::prelude::*;
use crate::backend::{PoolParams, ProjectionParams};
use crate::rng::Rng;
use anyhow::Result;

/// The op by its definition, in f64.
pub mod direct {
    use crate::backend::ProjectionParams;

    /// `out[i] = base[i] + sum_c a[i, c] b[i, c]`.
    pub fn forward(p: &ProjectionParams, base: &[f64], a: &[f64], b: &[f64]) -> Vec<f64> {
        let (n, c) = (p.n as usize, p.c as usize);
        (0..n).map(|i| base[i] + (0..c).map(|k| a[i * c + k] * b[i * c + k]).sum::<f64>()).collect()
    }
    /// `(da, db)`: `da[i, c] = dout[i] b[i, c]`, `db[i, c] = dout[i] a[i, c]`.
    pub fn backward_input(p: &ProjectionParams, dout: &[f64], a: &[f64], b: &[f64]) -> (Vec<f64>, Vec<f64>) {
        let c = p.c as usize;
        let da = (0..p.rows_len()).map(|e| dout[e / c] * b[e]).collect();
        let db = (0..p.rows_len()).map(|e| dout[e / c] * a[e]).collect();
        (da, db)
    }
    /// `dh[i, c, q] = dpsi[i, c, q] + da[i, c] / hw`.
    pub fn backward_features(p: &ProjectionParams, dpsi: &[f64], da: &[f64]) -> Vec<f64> {
        let hw = p.hw as usize;
        (0..p.features_len()).map(|e| dpsi[e] + da[e / hw] / hw as f64).collect()
    }
}

impl<B: Backend> Checker<'_, B> {
    /// `n` rows of `c` channels pooled from an `hw` grid.
    pub fn projection(&mut self, n: usize, c: usize, hw: usize) -> Result<()> {
        let p = ProjectionParams::new(n, c, hw);
        let shape = format!("n{n} c{c} hw{hw}");
        let base = normal(&mut self.rng, n, 1.0);
        let a = normal(&mut self.rng, p.rows_len(), 1.0);
        let b = normal(&mut self.rng, p.rows_len(), 1.0);
        let dout = normal(&mut self.rng, n, 1.0);
        let dpsi = normal(&mut self.rng, p.features_len(), 1.0);
        fn forward<B: Backend>(be: &B, p: &ProjectionParams, base: &[f32], a: &[f32], b: &[f32]) -> Result<Vec<f32>> {
            let (base, a, b) = (up(be, base)?, up(be, a)?, up(be, b)?);
            let mut out = poisoned(be, p.n as usize)?;
            be.projection_forward(p, &base, &a, &b, &mut out)?;
            down(be, &out, p.n as usize)
        }
        fn backward<B: Backend>(be: &B, p: &ProjectionParams, dout: &[f32], a: &[f32], b: &[f32]) -> Result<Vec<f32>> {
            let (dout, a, b) = (up(be, dout)?, up(be, a)?, up(be, b)?);
            let (mut da, mut db) = (poisoned(be, p.rows_len())?, poisoned(be, p.rows_len())?);
            be.projection_backward_input(p, &dout, &a, &b, &mut da, &mut db)?;
            let mut out = down(be, &da, p.rows_len())?;
            out.extend(down(be, &db, p.rows_len())?);
            Ok(out)
        }
        fn features<B: Backend>(be: &B, p: &ProjectionParams, dpsi: &[f32], da: &[f32]) -> Result<Vec<f32>> {
            let (dpsi, da) = (up(be, dpsi)?, up(be, da)?);
            let mut dh = poisoned(be, p.features_len())?;
            be.projection_backward_features(p, &dpsi, &da, &mut dh)?;
            down(be, &dh, p.features_len())
        }
        self.case("projection_forward_f32", shape.clone(), TOL_REDUCE, |g| forward(g, &p, &base, &a, &b), |c| forward(c, &p, &base, &a, &b))?;
        let nc = p.rows_len();
        self.case_parts(
            "projection_backward_input_f32",
            shape.clone(),
            |_| vec![Part::new("da", nc, TOL_ELEM), Part::new("db", nc, TOL_ELEM)],
            |g| backward(g, &p, &dout, &a, &b),
            |c| backward(c, &p, &dout, &a, &b),
        )?;
        self.case("projection_backward_features_f32", shape, TOL_ELEM, |g| features(g, &p, &dpsi, &a), |c| features(c, &p, &dpsi, &a))
    }
}

/// Finite differences: of `sum(out r)` with respect to `base`, `a` and `b`; and of
/// `<h, r1> + <avg_pool(h), r2>` with respect to `h`, whose gradient is the features' backward
/// pass of `(r1, r2)` (the two paths the projection discriminator's features feed).
pub fn gradchecks(h: &OpHarness, rng: &mut Rng, out: &mut Vec<CheckResult>) -> Result<()> {
    let be = &h.be;
    for (n, c, hw) in [(3, 5, 4), (1, 1, 1), (4, 7, 9)] {
        let p = ProjectionParams::new(n, c, hw);
        let label = format!("projection {n}x{c} (from hw {hw})");
        let (base, a, b, r) = (rand_vec(rng, n), rand_vec(rng, p.rows_len()), rand_vec(rng, p.rows_len()), rand_vec(rng, n));
        let fwd = |base: &[f64], a: &[f64], b: &[f64]| -> Result<f64> {
            let mut y = be.alloc(n)?;
            be.projection_forward(&p, &h.buf(base)?, &h.buf(a)?, &h.buf(b)?, &mut y)?;
            Ok(dot(&y, &r))
        };
        let (mut da, mut db) = (be.alloc(p.rows_len())?, be.alloc(p.rows_len())?);
        be.projection_backward_input(&p, &h.buf(&r)?, &h.buf(&a)?, &h.buf(&b)?, &mut da, &mut db)?;
        // d base = dout: the op's contract, checked here against the finite differences.
        out.push(check_all(&format!("{label} base"), &base, &r, |v| fwd(v, &a, &b))?);
        out.push(check_all(&format!("{label} a"), &a, &da, |v| fwd(&base, v, &b))?);
        out.push(check_all(&format!("{label} b"), &b, &db, |v| fwd(&base, &a, v))?);

        let side = (hw as f64).sqrt() as usize;
        let pool = PoolParams::global(n, c, side);
        if side * side == hw {
            let (x, r1, r2) = (rand_vec(rng, p.features_len()), rand_vec(rng, p.features_len()), rand_vec(rng, p.rows_len()));
            let f = |x: &[f64]| -> Result<f64> {
                let mut phi = be.alloc(p.rows_len())?;
                be.avg_pool2d_forward(&pool, &h.buf(x)?, &mut phi)?;
                Ok(dot(x, &r1) + dot(&phi, &r2))
            };
            let mut dh = be.alloc(p.features_len())?;
            be.projection_backward_features(&p, &h.buf(&r1)?, &h.buf(&r2)?, &mut dh)?;
            out.push(check_all(&format!("{label} features (both paths)"), &x, &dh, f)?);
        }
    }
    Ok(())
}

/// The CPU twin in f64 against the direct loops.
pub fn direct_checks(rng: &mut Rng) -> Result<Vec<DirectCheck>> {
    let be = Cpu64::new();
    let mut out = Vec::new();
    for (n, c, hw) in [(3, 5, 16), (1, 1, 1), (7, 33, 4), (2, 256, 16)] {
        let p = ProjectionParams::new(n, c, hw);
        let label = format!("projection n{n} c{c} hw{hw}");
        let (base, a, b, dout) = (rand_vec(rng, n), rand_vec(rng, p.rows_len()), rand_vec(rng, p.rows_len()), rand_vec(rng, n));
        let dpsi = rand_vec(rng, p.features_len());
        let mut y = vec![0.0; n];
        be.projection_forward(&p, &base, &a, &b, &mut y)?;
        out.push(DirectCheck::new(format!("{label} forward"), &direct::forward(&p, &base, &a, &b), &y));
        let (mut da, mut db) = (vec![0.0; p.rows_len()], vec![0.0; p.rows_len()]);
        be.projection_backward_input(&p, &dout, &a, &b, &mut da, &mut db)?;
        let (want_da, want_db) = direct::backward_input(&p, &dout, &a, &b);
        out.push(DirectCheck::new(format!("{label} backward_input da"), &want_da, &da));
        out.push(DirectCheck::new(format!("{label} backward_input db"), &want_db, &db));
        let mut dh = vec![0.0; p.features_len()];
        be.projection_backward_features(&p, &dpsi, &a, &mut dh)?;
        out.push(DirectCheck::new(format!("{label} backward_features"), &direct::backward_features(&p, &dpsi, &a), &dh));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_projection_adds_each_rows_inner_product_to_its_logit() {
        let be = Cpu64::new();
        let p = ProjectionParams::new(2, 3, 1);
        let (base, a, b) = (vec![0.5, -1.0], vec![1.0, 2.0, 3.0, 0.0, 1.0, 0.0], vec![1.0, 1.0, 1.0, 4.0, -2.0, 9.0]);
        let mut y = vec![0.0; 2];
        be.projection_forward(&p, &base, &a, &b, &mut y).unwrap();
        assert_eq!(y, vec![6.5, -3.0]);
    }

    #[test]
    fn short_operands_are_refused_with_their_name() {
        let be = Cpu64::new();
        let p = ProjectionParams::new(2, 3, 4);
        let (dpsi, da) = (vec![0.0; 23], vec![0.0; 6]);
        let mut dh = vec![0.0; 24];
        let e = be.projection_backward_features(&p, &dpsi, &da, &mut dh).unwrap_err().to_string();
        assert!(e.contains("projection") && e.contains("dpsi"), "{e}");
    }
}
