//! concat_tile: the direct loops, the finite-difference checks and the twin rows (CPU twin
//! `backend/cpu/concat.rs`, kernels `kernels/concat.cu`).

use super::gradcheck::{check_all, dot, rand_vec, CheckResult, DirectCheck, OpHarness};
use super::twin::{down, normal, poisoned, up, Checker, Part, TOL_EXACT, TOL_REDUCE};
use crate::backend::cpu::Cpu64;
use crate::backend::prelude::*;
use crate::backend::ConcatParams;
use crate::rng::Rng;
use anyhow::Result;

/// The op by its definition, in f64.
pub mod direct {
    use crate::backend::ConcatParams;

    /// `y[n, c, q] = a[n, c, q]` for `c < c_a`, else `b[n, c - c_a]` (tiled over the grid).
    pub fn forward(p: &ConcatParams, a: &[f64], b: &[f64]) -> Vec<f64> {
        let (n, ca, cb, hw) = (p.n as usize, p.c_a as usize, p.c_b as usize, p.hw as usize);
        let mut y = Vec::with_capacity(p.out_len());
        for i in 0..n {
            for c in 0..ca + cb {
                for q in 0..hw {
                    y.push(if c < ca { a[(i * ca + c) * hw + q] } else { b[i * cb + c - ca] });
                }
            }
        }
        y
    }
    /// `(da, db)`: `da` is `dy`'s first `c_a` channels, `db` sums the others over the grid.
    pub fn backward(p: &ConcatParams, dy: &[f64]) -> [Vec<f64>; 2] {
        let (n, ca, cb, hw) = (p.n as usize, p.c_a as usize, p.c_b as usize, p.hw as usize);
        let (mut da, mut db) = (Vec::new(), vec![0.0; n * cb]);
        for i in 0..n {
            for c in 0..ca + cb {
                for q in 0..hw {
                    let g = dy[(i * (ca + cb) + c) * hw + q];
                    if c < ca {
                        da.push(g);
                    } else {
                        db[i * cb + c - ca] += g;
                    }
                }
            }
        }
        [da, db]
    }
}

impl<B: Backend> Checker<'_, B> {
    pub fn concat(&mut self, n: usize, c_a: usize, c_b: usize, hw: usize) -> Result<()> {
        let p = ConcatParams { n: n as i32, c_a: c_a as i32, c_b: c_b as i32, hw: hw as i32 };
        let shape = format!("n{n} {c_a}x{hw} ++ {c_b} tiled");
        let a = normal(&mut self.rng, n * c_a * hw, 1.0);
        let b = normal(&mut self.rng, n * c_b, 1.0);
        let dy = normal(&mut self.rng, p.out_len(), 1.0);
        fn forward<B: Backend>(be: &B, p: &ConcatParams, a: &[f32], b: &[f32]) -> Result<Vec<f32>> {
            let (a, b) = (up(be, a)?, up(be, b)?);
            let mut y = poisoned(be, p.out_len())?;
            be.concat_tile_forward(p, &a, &b, &mut y)?;
            down(be, &y, p.out_len())
        }
        fn backward<B: Backend>(be: &B, p: &ConcatParams, dy: &[f32]) -> Result<Vec<f32>> {
            let (la, lb) = ((p.n * p.c_a * p.hw) as usize, (p.n * p.c_b) as usize);
            let dy = up(be, dy)?;
            let (mut da, mut db) = (poisoned(be, la)?, poisoned(be, lb)?);
            be.concat_tile_backward_input(p, &dy, &mut da, &mut db)?;
            let mut out = down(be, &da, la)?;
            out.extend(down(be, &db, lb)?);
            Ok(out)
        }
        self.case("concat_tile_forward_f32", shape.clone(), TOL_EXACT, |g| forward(g, &p, &a, &b), |c| forward(c, &p, &a, &b))?;
        // da is a copy of dy's first channels; db sums the others over the grid.
        let (la, lb) = (n * c_a * hw, n * c_b);
        self.case_parts(
            "concat_tile_backward_input_f32",
            shape,
            |_| vec![Part::new("da", la, TOL_EXACT), Part::new("db", lb, TOL_REDUCE)],
            |g| backward(g, &p, &dy),
            |c| backward(c, &p, &dy),
        )
    }
}

/// Finite differences of both input gradients.
pub fn gradchecks(h: &OpHarness, rng: &mut Rng, out: &mut Vec<CheckResult>) -> Result<()> {
    let be = &h.be;
    let p = ConcatParams { n: 2, c_a: 3, c_b: 2, hw: 6 };
    let (a, bv, r) = (rand_vec(rng, 36), rand_vec(rng, 4), rand_vec(rng, p.out_len()));
    let fwd = |a: &[f64], b: &[f64]| -> Result<f64> {
        let mut y = be.alloc(p.out_len())?;
        be.concat_tile_forward(&p, &h.buf(a)?, &h.buf(b)?, &mut y)?;
        Ok(dot(&y, &r))
    };
    let (mut da, mut db) = (be.alloc(36)?, be.alloc(4)?);
    be.concat_tile_backward_input(&p, &h.buf(&r)?, &mut da, &mut db)?;
    out.push(check_all("concat_tile 2x(3+2)x6 image", &a, &da, |v| fwd(v, &bv))?);
    out.push(check_all("concat_tile 2x(3+2)x6 vector", &bv, &db, |v| fwd(&a, v))?);
    Ok(())
}

/// The CPU twin in f64 against the direct loops.
pub fn direct_checks(rng: &mut Rng) -> Result<Vec<DirectCheck>> {
    let be = Cpu64::new();
    let mut out = Vec::new();
    for (n, c_a, c_b, hw) in [(2, 3, 5, 7), (3, 100, 256, 1)] {
        let p = ConcatParams { n, c_a, c_b, hw };
        let (n, c_a, c_b, hw) = (n as usize, c_a as usize, c_b as usize, hw as usize);
        let (a, b, dy) = (rand_vec(rng, n * c_a * hw), rand_vec(rng, n * c_b), rand_vec(rng, p.out_len()));
        let label = format!("concat_tile n{n} {c_a}x{hw} ++ {c_b}");
        let mut y = vec![0.0; p.out_len()];
        be.concat_tile_forward(&p, &a, &b, &mut y)?;
        out.push(DirectCheck::new(format!("{label} forward"), &direct::forward(&p, &a, &b), &y));
        let [da_w, db_w] = direct::backward(&p, &dy);
        let (mut da, mut db) = (vec![0.0; a.len()], vec![0.0; b.len()]);
        be.concat_tile_backward_input(&p, &dy, &mut da, &mut db)?;
        out.push(DirectCheck::new(format!("{label} backward_input da"), &da_w, &da));
        out.push(DirectCheck::new(format!("{label} backward_input db"), &db_w, &db));
    }
    Ok(out)
}
