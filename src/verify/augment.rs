//! augment: the direct loops, the finite-difference checks and the twin rows (CPU twin
//! `backend/cpu/augment.rs`, kernels `kernels/augment.cu`).

use super::gradcheck::{check_all, dot, rand_vec, CheckResult, DirectCheck, OpHarness};
use super::twin::{down, normal, poisoned, up, Checker, TOL_EXACT, TOL_REDUCE};
use crate::backend::augment::*;
use crate::backend::cpu::Cpu64;
use crate::backend::prelude::*;
use crate::backend::AugmentParams;
use crate::rng::Rng;
use crate::train::augment::{draw, Policies};
use anyhow::Result;

/// The op by its definition, in f64: DiffAugment's steps one after the other (brightness,
/// saturation, contrast, translation, cutout), and the backward pass as each step's own
/// transpose in reverse order.
pub mod direct {
    use crate::backend::augment::*;
    use crate::backend::AugmentParams;

    struct Dims {
        c: usize,
        h: i64,
        w: i64,
    }

    fn dims(p: &AugmentParams) -> Dims {
        Dims { c: p.c as usize, h: p.h as i64, w: p.w as i64 }
    }

    fn idx(d: &Dims, c: usize, i: i64, j: i64) -> usize {
        (c as i64 * d.h * d.w + i * d.w + j) as usize
    }

    fn inside(d: &Dims, i: i64, j: i64) -> bool {
        (0..d.h).contains(&i) && (0..d.w).contains(&j)
    }

    fn in_cut(a: &[f64], i: i64, j: i64) -> bool {
        let (x0, y0) = (a[AUGMENT_CUT_X0] as i64, a[AUGMENT_CUT_Y0] as i64);
        let (cw, ch) = (a[AUGMENT_CUT_W] as i64, a[AUGMENT_CUT_H] as i64);
        i >= y0 && i < y0 + ch && j >= x0 && j < x0 + cw
    }

    /// One sample's colour, step by step.
    fn color(d: &Dims, a: &[f64], x: &[f64]) -> Vec<f64> {
        let (b, s, k) = (a[AUGMENT_BRIGHTNESS], a[AUGMENT_SATURATION], a[AUGMENT_CONTRAST]);
        let x1: Vec<f64> = x.iter().map(|v| v + b).collect();
        let mut x2 = x1.clone();
        for i in 0..d.h {
            for j in 0..d.w {
                let m = (0..d.c).map(|c| x1[idx(d, c, i, j)]).sum::<f64>() / d.c as f64;
                (0..d.c).for_each(|c| x2[idx(d, c, i, j)] = (x1[idx(d, c, i, j)] - m) * s + m);
            }
        }
        let m = x2.iter().sum::<f64>() / x2.len() as f64;
        x2.iter().map(|v| (v - m) * k + m).collect()
    }

    pub fn forward(p: &AugmentParams, x: &[f64], a: &[f64]) -> Vec<f64> {
        let d = dims(p);
        let per = d.c * (d.h * d.w) as usize;
        let mut y = vec![0.0; p.len()];
        for n in 0..p.n as usize {
            let an = &a[n * AUGMENT_K..][..AUGMENT_K];
            let x3 = color(&d, an, &x[n * per..][..per]);
            let (tx, ty, fill) = (an[AUGMENT_SHIFT_X] as i64, an[AUGMENT_SHIFT_Y] as i64, an[AUGMENT_FILL]);
            for c in 0..d.c {
                for i in 0..d.h {
                    for j in 0..d.w {
                        let moved = if inside(&d, i + ty, j + tx) { x3[idx(&d, c, i + ty, j + tx)] } else { fill };
                        y[n * per + idx(&d, c, i, j)] = if in_cut(an, i, j) { fill } else { moved };
                    }
                }
            }
        }
        y
    }

    pub fn backward(p: &AugmentParams, a: &[f64], dy: &[f64]) -> Vec<f64> {
        let d = dims(p);
        let per = d.c * (d.h * d.w) as usize;
        let mut dx = vec![0.0; p.len()];
        for n in 0..p.n as usize {
            let an = &a[n * AUGMENT_K..][..AUGMENT_K];
            let (b, s, k) = (an[AUGMENT_BRIGHTNESS], an[AUGMENT_SATURATION], an[AUGMENT_CONTRAST]);
            let _ = b; // brightness adds a constant: its transpose is the identity
            let (tx, ty) = (an[AUGMENT_SHIFT_X] as i64, an[AUGMENT_SHIFT_Y] as i64);
            // Cutout, then translation, transposed.
            let mut d3 = vec![0.0; per];
            for c in 0..d.c {
                for i in 0..d.h {
                    for j in 0..d.w {
                        if !in_cut(an, i, j) && inside(&d, i + ty, j + tx) {
                            d3[idx(&d, c, i + ty, j + tx)] += dy[n * per + idx(&d, c, i, j)];
                        }
                    }
                }
            }
            // Contrast: x3 = k x2 + (1 - k) mean(x2).
            let m3 = d3.iter().sum::<f64>() / per as f64;
            let d2: Vec<f64> = d3.iter().map(|g| k * g + (1.0 - k) * m3).collect();
            // Saturation: x2 = s x1 + (1 - s) mean_c(x1) at each pixel.
            for i in 0..d.h {
                for j in 0..d.w {
                    let m = (0..d.c).map(|c| d2[idx(&d, c, i, j)]).sum::<f64>() / d.c as f64;
                    (0..d.c).for_each(|c| dx[n * per + idx(&d, c, i, j)] = s * d2[idx(&d, c, i, j)] + (1.0 - s) * m);
                }
            }
        }
        dx
    }
}

/// What a parameter buffer of a row holds.
#[derive(Clone, Copy, Debug)]
pub enum Draw {
    /// Every policy drawn as training draws them, each with probability `p`, filling with
    /// white.
    Random(f64),
    /// The identity for every sample (the op must copy exactly).
    Identity,
    /// Shifts by the whole side and beyond, cutouts larger than the image or outside it,
    /// colour at its ranges' ends, fills of grey, white, black and between.
    Extreme,
}

/// Parameters for `n` samples of `h x w`.
pub fn params(rng: &mut Rng, draw_as: Draw, n: usize, h: usize, w: usize) -> Vec<f32> {
    let all = Policies { translation: true, cutout: true, color: true };
    match draw_as {
        Draw::Random(p) => draw(rng, all, p, 1.0, n, h, w),
        Draw::Identity => (0..n).flat_map(|_| AUGMENT_IDENTITY).collect(),
        Draw::Extreme => {
            let (h, w) = (h as f32, w as f32);
            let rows: [[f32; AUGMENT_K]; 6] = [
                [w, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 0.0],
                [-w - 3.0, h + 1.0, 0.0, 0.0, 0.0, 0.0, 0.49, 0.0, 1.5, 1.0],
                [w - 1.0, 1.0 - h, -2.0 * w, -2.0 * h, 4.0 * w, 4.0 * h, -0.5, 2.0, 0.5, -1.0],
                [1.0, -1.0, w - 1.0, h - 1.0, 5.0, 5.0, 0.0, 1.0, 0.5, 0.0],
                [0.0, 0.0, -3.0, 2.0, 4.0, 1.0, 0.0, 0.0, 1.0, 0.75],
                [-1.0, 1.0, w, h, 3.0, 3.0, 0.25, 1.0, 1.0, 1.0],
            ];
            (0..n).flat_map(|i| rows[i % rows.len()]).collect()
        }
    }
}

impl<B: Backend> Checker<'_, B> {
    /// Batch `n`, `c` channels on an `h x w` grid, the parameters drawn as `draw_as`.
    pub fn augment(&mut self, n: usize, c: usize, h: usize, w: usize, draw_as: Draw) -> Result<()> {
        let p = AugmentParams::new(n, c, h, w);
        let shape = format!("n{n} c{c} {h}x{w} {draw_as:?}");
        let a = params(&mut self.rng, draw_as, n, h, w);
        let x = normal(&mut self.rng, p.len(), 1.0);
        let dy = normal(&mut self.rng, p.len(), 1.0);
        let tol = if matches!(draw_as, Draw::Identity) { TOL_EXACT } else { TOL_REDUCE };
        fn forward<B: Backend>(be: &B, p: &AugmentParams, x: &[f32], a: &[f32]) -> Result<Vec<f32>> {
            let (x, a) = (up(be, x)?, up(be, a)?);
            let mut y = poisoned(be, p.len())?;
            be.augment_forward(p, &x, &a, &mut y)?;
            down(be, &y, p.len())
        }
        fn backward<B: Backend>(be: &B, p: &AugmentParams, a: &[f32], dy: &[f32]) -> Result<Vec<f32>> {
            let (a, dy) = (up(be, a)?, up(be, dy)?);
            let mut dx = poisoned(be, p.len())?;
            be.augment_backward_input(p, &a, &dy, &mut dx)?;
            down(be, &dx, p.len())
        }
        self.case("augment_forward_f32", shape.clone(), tol, |g| forward(g, &p, &x, &a), |cpu| forward(cpu, &p, &x, &a))?;
        self.case("augment_backward_input_f32", shape, tol, |g| backward(g, &p, &a, &dy), |cpu| backward(cpu, &p, &a, &dy))
    }
}

fn as_f64(a: &[f32]) -> Vec<f64> {
    a.iter().map(|v| *v as f64).collect()
}

/// Finite differences of the input gradient through the f64 twin: random parameters on odd
/// grids (every sample coloured, and a mix), the extreme parameters, and a single sample.
pub fn gradchecks(h: &OpHarness, rng: &mut Rng, out: &mut Vec<CheckResult>) -> Result<()> {
    let be = &h.be;
    for (n, c, hh, w, draw_as) in
        [(3, 3, 5, 7, Draw::Random(1.0)), (4, 2, 6, 6, Draw::Random(0.5)), (6, 3, 4, 5, Draw::Extreme), (1, 1, 3, 3, Draw::Random(1.0))]
    {
        let p = AugmentParams::new(n, c, hh, w);
        let label = format!("augment {n}x{c}x{hh}x{w} {draw_as:?}");
        let a = h.buf(&as_f64(&params(rng, draw_as, n, hh, w)))?;
        let (x, r) = (rand_vec(rng, p.len()), rand_vec(rng, p.len()));
        let fwd = |x: &[f64]| -> Result<f64> {
            let mut y = be.alloc(p.len())?;
            be.augment_forward(&p, &h.buf(x)?, &a, &mut y)?;
            Ok(dot(&y, &r))
        };
        let mut dx = be.alloc(p.len())?;
        be.augment_backward_input(&p, &a, &h.buf(&r)?, &mut dx)?;
        out.push(check_all(&label, &x, &dx, fwd)?);
    }
    Ok(())
}

/// The CPU twin in f64 against the direct loops.
pub fn direct_checks(rng: &mut Rng) -> Result<Vec<DirectCheck>> {
    let be = Cpu64::new();
    let mut out = Vec::new();
    for (n, c, h, w, draw_as) in [
        (4, 3, 8, 8, Draw::Random(1.0)),
        (5, 3, 7, 9, Draw::Random(0.6)),
        (6, 2, 5, 4, Draw::Extreme),
        (2, 3, 4, 4, Draw::Identity),
        (1, 4, 3, 5, Draw::Random(1.0)),
    ] {
        let p = AugmentParams::new(n, c, h, w);
        let label = format!("augment n{n} c{c} {h}x{w} {draw_as:?}");
        let a = as_f64(&params(rng, draw_as, n, h, w));
        let (x, dy) = (rand_vec(rng, p.len()), rand_vec(rng, p.len()));
        let ab = be.alloc(a.len()).and_then(|mut b| be.upload_f64(&mut b, &a).map(|_| b))?;
        let mut y = vec![0.0; p.len()];
        be.augment_forward(&p, &x, &ab, &mut y)?;
        out.push(DirectCheck::new(format!("{label} forward"), &direct::forward(&p, &x, &a), &y));
        let mut dx = vec![0.0; p.len()];
        be.augment_backward_input(&p, &ab, &dy, &mut dx)?;
        out.push(DirectCheck::new(format!("{label} backward_input"), &direct::backward(&p, &a, &dy), &dx));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(p: &AugmentParams, x: &[f64], a: &[f32]) -> Vec<f64> {
        let be = Cpu64::new();
        let mut y = vec![f64::NAN; p.len()];
        be.augment_forward(p, &x.to_vec(), &as_f64(a), &mut y).unwrap();
        y
    }

    #[test]
    fn identity_parameters_copy_exactly_and_each_policy_does_what_it_says() {
        let p = AugmentParams::new(1, 3, 4, 4);
        let x: Vec<f64> = (0..48).map(|i| (i as f64 * 0.37).sin()).collect();
        assert_eq!(run(&p, &x, &AUGMENT_IDENTITY), x);
        // A shift of one column: output column j reads input column j + 1; the last is the
        // fill (zero by default, white when asked).
        for fill in [0.0, 1.0] {
            let mut a = AUGMENT_IDENTITY;
            a[AUGMENT_SHIFT_X] = 1.0;
            a[AUGMENT_FILL] = fill;
            let y = run(&p, &x, &a);
            for (q, v) in y.iter().enumerate() {
                assert_eq!(*v, if q % 4 == 3 { fill as f64 } else { x[q + 1] }, "{q}");
            }
        }
        // A 2x2 cutout at (1, 1): those pixels the fill in every channel, the rest untouched.
        for fill in [0.0, -0.5] {
            let mut a = AUGMENT_IDENTITY;
            a[AUGMENT_CUT_X0..=AUGMENT_CUT_H].copy_from_slice(&[1.0, 1.0, 2.0, 2.0]);
            a[AUGMENT_FILL] = fill;
            let y = run(&p, &x, &a);
            for (q, v) in y.iter().enumerate() {
                let (i, j) = ((q % 16) / 4, q % 4);
                assert_eq!(*v, if (1..3).contains(&i) && (1..3).contains(&j) { fill as f64 } else { x[q] }, "{q}");
            }
        }
        // Saturation 0 makes every pixel grey (its channels equal); contrast 0 makes the
        // whole sample its mean; brightness adds.
        let mut a = AUGMENT_IDENTITY;
        a[AUGMENT_SATURATION] = 0.0;
        let y = run(&p, &x, &a);
        (0..16).for_each(|q| assert!((y[q] - y[16 + q]).abs() < 1e-12 && (y[q] - y[32 + q]).abs() < 1e-12));
        let mut a = AUGMENT_IDENTITY;
        a[AUGMENT_CONTRAST] = 0.0;
        a[AUGMENT_BRIGHTNESS] = 0.25;
        let mean = x.iter().sum::<f64>() / 48.0;
        run(&p, &x, &a).iter().for_each(|v| assert!((v - mean - 0.25).abs() < 1e-12));
    }
}
