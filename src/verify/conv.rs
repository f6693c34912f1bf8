//! conv2d and conv_transpose2d: the direct loops, the finite-difference checks and the
//! twin rows (CPU twin `backend/cpu/conv.rs`, kernels `kernels/conv.cu`).

use super::gradcheck::{check_all, dot, rand_vec, CheckResult, DirectCheck, OpHarness};
use super::twin::{abs, down, normal, poisoned, up, Checker, Part, TOL_REDUCE};
use crate::backend::cpu::Cpu64;
use crate::backend::prelude::*;
use crate::backend::ConvParams;
use crate::rng::Rng;
use anyhow::Result;

/// The ops by their definitions, in f64: the reference the CPU twin is held to.
pub mod direct {
    use crate::backend::ConvParams;

    /// conv2d by its definition: every output a sum over its window.
    pub fn conv2d(p: &ConvParams, x: &[f64], w: &[f64]) -> Vec<f64> {
        let mut y = vec![0.0; p.out_len()];
        let (n, ci, hi, wi, co, ho, wo, k, s, pd) = (p.n, p.c_in, p.h_in, p.w_in, p.c_out, p.h_out, p.w_out, p.k, p.stride, p.pad);
        for b in 0..n {
            for o in 0..co {
                for oy in 0..ho {
                    for ox in 0..wo {
                        let mut acc = 0.0;
                        for c in 0..ci {
                            for ky in 0..k {
                                for kx in 0..k {
                                    let (iy, ix) = (oy * s - pd + ky, ox * s - pd + kx);
                                    if iy >= 0 && iy < hi && ix >= 0 && ix < wi {
                                        acc += x[(((b * ci + c) * hi + iy) * wi + ix) as usize] * w[(((o * ci + c) * k + ky) * k + kx) as usize];
                                    }
                                }
                            }
                        }
                        y[(((b * co + o) * ho + oy) * wo + ox) as usize] = acc;
                    }
                }
            }
        }
        y
    }

    /// Direct-loop transposed conv: every input pixel scatters its kernel.
    pub fn conv_transpose2d(p: &ConvParams, x: &[f64], w: &[f64]) -> Vec<f64> {
        let mut y = vec![0.0; p.out_len()];
        let (n, ci, hi, wi, co, ho, wo, k, s, pd) = (p.n, p.c_in, p.h_in, p.w_in, p.c_out, p.h_out, p.w_out, p.k, p.stride, p.pad);
        for b in 0..n {
            for c in 0..ci {
                for iy in 0..hi {
                    for ix in 0..wi {
                        let v = x[(((b * ci + c) * hi + iy) * wi + ix) as usize];
                        for o in 0..co {
                            for ky in 0..k {
                                for kx in 0..k {
                                    let (oy, ox) = (iy * s - pd + ky, ix * s - pd + kx);
                                    if oy >= 0 && oy < ho && ox >= 0 && ox < wo {
                                        y[(((b * co + o) * ho + oy) * wo + ox) as usize] += v * w[(((c * co + o) * k + ky) * k + kx) as usize];
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        y
    }

    /// `(dx, dw, db)` of conv2d, each output's gradient spread back over its window.
    pub fn conv2d_backward(p: &ConvParams, x: &[f64], w: &[f64], dy: &[f64]) -> [Vec<f64>; 3] {
        let (mut dx, mut dw, mut db) = (vec![0.0; p.in_len()], vec![0.0; p.weight_len()], vec![0.0; p.c_out as usize]);
        let (n, ci, hi, wi, co, ho, wo, k, s, pd) = (p.n, p.c_in, p.h_in, p.w_in, p.c_out, p.h_out, p.w_out, p.k, p.stride, p.pad);
        for b in 0..n {
            for o in 0..co {
                for oy in 0..ho {
                    for ox in 0..wo {
                        let g = dy[(((b * co + o) * ho + oy) * wo + ox) as usize];
                        db[o as usize] += g;
                        for c in 0..ci {
                            for ky in 0..k {
                                for kx in 0..k {
                                    let (iy, ix) = (oy * s - pd + ky, ox * s - pd + kx);
                                    if iy >= 0 && iy < hi && ix >= 0 && ix < wi {
                                        let (xi, wj) = ((((b * ci + c) * hi + iy) * wi + ix) as usize, (((o * ci + c) * k + ky) * k + kx) as usize);
                                        dx[xi] += w[wj] * g;
                                        dw[wj] += x[xi] * g;
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        [dx, dw, db]
    }

    /// `(dx, dw, db)` of conv_transpose2d, each input's gradient gathered from the outputs
    /// its kernel reached.
    pub fn conv_transpose2d_backward(p: &ConvParams, x: &[f64], w: &[f64], dy: &[f64]) -> [Vec<f64>; 3] {
        let (mut dx, mut dw, mut db) = (vec![0.0; p.in_len()], vec![0.0; p.weight_len()], vec![0.0; p.c_out as usize]);
        let (n, ci, hi, wi, co, ho, wo, k, s, pd) = (p.n, p.c_in, p.h_in, p.w_in, p.c_out, p.h_out, p.w_out, p.k, p.stride, p.pad);
        for (i, g) in dy.iter().enumerate() {
            db[(i / (ho * wo) as usize) % co as usize] += g;
        }
        for b in 0..n {
            for c in 0..ci {
                for iy in 0..hi {
                    for ix in 0..wi {
                        let xi = (((b * ci + c) * hi + iy) * wi + ix) as usize;
                        for o in 0..co {
                            for ky in 0..k {
                                for kx in 0..k {
                                    let (oy, ox) = (iy * s - pd + ky, ix * s - pd + kx);
                                    if oy >= 0 && oy < ho && ox >= 0 && ox < wo {
                                        let (g, wj) = (dy[(((b * co + o) * ho + oy) * wo + ox) as usize], (((c * co + o) * k + ky) * k + kx) as usize);
                                        dx[xi] += w[wj] * g;
                                        dw[wj] += x[xi] * g;
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        [dx, dw, db]
    }
}

impl<B: Backend> Checker<'_, B> {
    /// forward (with and without bias), backward_input, backward_params (accumulating
    /// into a nonzero gradient, with a bias gradient) of one conv or transposed conv.
    pub fn conv(&mut self, p: ConvParams, transposed: bool) -> Result<()> {
        let op = if transposed { "conv_transpose2d" } else { "conv2d" };
        let shape = format!("n{} {}x{}x{} -> {}x{}x{} k{} s{} p{}", p.n, p.c_in, p.h_in, p.w_in, p.c_out, p.h_out, p.w_out, p.k, p.stride, p.pad);
        let fan_in = if transposed { p.c_in * p.k * p.k / (p.stride * p.stride) } else { p.c_in * p.k * p.k }.max(1);
        let x = normal(&mut self.rng, p.in_len(), 1.0);
        let w = normal(&mut self.rng, p.weight_len(), 1.0 / (fan_in as f64).sqrt());
        let bias = normal(&mut self.rng, p.c_out as usize, 1.0);
        let dy = normal(&mut self.rng, p.out_len(), 1.0);
        let dw0 = normal(&mut self.rng, p.weight_len(), 1.0);
        let db0 = normal(&mut self.rng, p.c_out as usize, 1.0);

        fn forward<B: Backend>(be: &B, p: &ConvParams, t: bool, x: &[f32], w: &[f32], bias: Option<&[f32]>) -> Result<Vec<f32>> {
            let (x, w) = (up(be, x)?, up(be, w)?);
            let b = bias.map(|b| up(be, b)).transpose()?;
            let mut y = poisoned(be, p.out_len())?;
            if t {
                be.conv_transpose2d_forward(p, &x, &w, b.as_ref(), &mut y)?;
            } else {
                be.conv2d_forward(p, &x, &w, b.as_ref(), &mut y)?;
            }
            down(be, &y, p.out_len())
        }
        fn backward_input<B: Backend>(be: &B, p: &ConvParams, t: bool, dy: &[f32], w: &[f32]) -> Result<Vec<f32>> {
            let (dy, w) = (up(be, dy)?, up(be, w)?);
            let mut dx = poisoned(be, p.in_len())?;
            if t {
                be.conv_transpose2d_backward_input(p, &dy, &w, &mut dx)?;
            } else {
                be.conv2d_backward_input(p, &dy, &w, &mut dx)?;
            }
            down(be, &dx, p.in_len())
        }
        #[allow(clippy::too_many_arguments)]
        fn backward_params<B: Backend>(be: &B, p: &ConvParams, t: bool, x: &[f32], dy: &[f32], dw0: &[f32], db0: &[f32]) -> Result<Vec<f32>> {
            let (x, dy, mut dw, mut db) = (up(be, x)?, up(be, dy)?, up(be, dw0)?, up(be, db0)?);
            if t {
                be.conv_transpose2d_backward_params(p, &x, &dy, &mut dw, Some(&mut db))?;
            } else {
                be.conv2d_backward_params(p, &x, &dy, &mut dw, Some(&mut db))?;
            }
            let mut out = down(be, &dw, p.weight_len())?;
            out.extend(down(be, &db, p.c_out as usize)?);
            Ok(out)
        }

        let name = |pass: &str| format!("{op}_{pass}_f32");
        let (xr, wr, br) = (&x, &w, &bias);
        let tol = self.gemm_tol();
        // The TF32 bound's sums of |products|: each pass on the operands' magnitudes.
        let (xa, wa, dya) = (abs(&x), abs(&w), abs(&dy));
        let y_products = self.products(|c| forward(c, &p, transposed, &xa, &wa, None))?;
        let dx_products = self.products(|c| backward_input(c, &p, transposed, &dya, &wa))?;
        let zeros = |n: usize| vec![0.0f32; n];
        let dw_products = self.products(|c| {
            backward_params(c, &p, transposed, &xa, &dya, &zeros(p.weight_len()), &zeros(p.c_out as usize)).map(|v| v[..p.weight_len()].to_vec())
        })?;
        let y_parts = |len| vec![Part::gemm("", len, tol, y_products.clone())];
        self.case_parts(
            &name("forward"),
            format!("{shape} +bias"),
            y_parts,
            |g| forward(g, &p, transposed, xr, wr, Some(br)),
            |c| forward(c, &p, transposed, xr, wr, Some(br)),
        )?;
        self.case_parts(&name("forward"), shape.clone(), y_parts, |g| forward(g, &p, transposed, xr, wr, None), |c| forward(c, &p, transposed, xr, wr, None))?;
        self.case_parts(
            &name("backward_input"),
            shape.clone(),
            |len| vec![Part::gemm("", len, tol, dx_products)],
            |g| backward_input(g, &p, transposed, &dy, wr),
            |c| backward_input(c, &p, transposed, &dy, wr),
        )?;
        // The weight gradient (a GEMM) and the bias gradient (a reduction) apart: each at
        // its own scale.
        self.case_parts(
            &name("backward_params"),
            format!("{shape} +="),
            |_| vec![Part::gemm("dw", p.weight_len(), tol, dw_products), Part::new("db", p.c_out as usize, TOL_REDUCE)],
            |g| backward_params(g, &p, transposed, xr, &dy, &dw0, &db0),
            |c| backward_params(c, &p, transposed, xr, &dy, &dw0, &db0),
        )
    }
}

/// Finite differences of the input, weight and bias gradients at small awkward shapes.
pub fn gradchecks(h: &OpHarness, rng: &mut Rng, out: &mut Vec<CheckResult>) -> Result<()> {
    for (label, p) in [
        ("k4s2p1 2x3x7x6->4", ConvParams::conv2d(2, 3, 7, 6, 4, 4, 2, 1)),
        ("k4s1p0 1x5x4x4->2", ConvParams::conv2d(1, 5, 4, 4, 2, 4, 1, 0)),
        ("k1s1p0 3x6x4x4->5", ConvParams::conv2d(3, 6, 4, 4, 5, 1, 1, 0)),
        ("k3s1p1 2x2x5x3->3", ConvParams::conv2d(2, 2, 5, 3, 3, 3, 1, 1)),
    ] {
        gradcheck_one(h, rng, false, p, label, out)?;
    }
    for (label, p) in [
        ("k4s2p1 2x4x3x5->3", ConvParams::conv_transpose2d(2, 4, 3, 5, 3, 4, 2, 1)),
        ("k4s1p0 3x7x1x1->4", ConvParams::conv_transpose2d(3, 7, 1, 1, 4, 4, 1, 0)),
        ("k3s2p1 1x3x3x4->2", ConvParams::conv_transpose2d(1, 3, 3, 4, 2, 3, 2, 1)),
    ] {
        gradcheck_one(h, rng, true, p, label, out)?;
    }
    Ok(())
}

fn gradcheck_one(h: &OpHarness, rng: &mut Rng, transposed: bool, p: ConvParams, label: &str, out: &mut Vec<CheckResult>) -> Result<()> {
    let be = &h.be;
    let op = if transposed { "conv_transpose2d" } else { "conv2d" };
    let x = rand_vec(rng, p.in_len());
    let w = rand_vec(rng, p.weight_len());
    let b = rand_vec(rng, p.c_out as usize);
    let r = rand_vec(rng, p.out_len());
    let fwd = |x: &[f64], w: &[f64], b: &[f64]| -> Result<f64> {
        let mut y = be.alloc(p.out_len())?;
        if transposed {
            be.conv_transpose2d_forward(&p, &h.buf(x)?, &h.buf(w)?, Some(&h.buf(b)?), &mut y)?;
        } else {
            be.conv2d_forward(&p, &h.buf(x)?, &h.buf(w)?, Some(&h.buf(b)?), &mut y)?;
        }
        Ok(dot(&y, &r))
    };
    let rb = h.buf(&r)?;
    let mut dx = be.alloc(p.in_len())?;
    let mut dw = be.alloc(p.weight_len())?;
    let mut db = be.alloc(p.c_out as usize)?;
    if transposed {
        be.conv_transpose2d_backward_input(&p, &rb, &h.buf(&w)?, &mut dx)?;
        be.conv_transpose2d_backward_params(&p, &h.buf(&x)?, &rb, &mut dw, Some(&mut db))?;
    } else {
        be.conv2d_backward_input(&p, &rb, &h.buf(&w)?, &mut dx)?;
        be.conv2d_backward_params(&p, &h.buf(&x)?, &rb, &mut dw, Some(&mut db))?;
    }
    out.push(check_all(&format!("{op} {label} input"), &x, &dx, |v| fwd(v, &w, &b))?);
    out.push(check_all(&format!("{op} {label} weight"), &w, &dw, |v| fwd(&x, v, &b))?);
    out.push(check_all(&format!("{op} {label} bias"), &b, &db, |v| fwd(&x, &w, v))?);
    Ok(())
}

/// The CPU twin in f64 against the direct loops, every pass, bias included, at shapes that
/// take each of its paths (strided windows, a 1x1 window, a window covering the plane, a
/// 1x1 input).
pub fn direct_checks(rng: &mut Rng) -> Result<Vec<DirectCheck>> {
    let be = Cpu64::new();
    let mut out = Vec::new();
    for (transposed, p) in [
        (false, ConvParams::conv2d(2, 3, 7, 9, 4, 4, 2, 1)),
        (false, ConvParams::conv2d(3, 5, 4, 4, 2, 1, 1, 0)),
        (false, ConvParams::conv2d(2, 6, 4, 4, 1, 4, 1, 0)),
        (true, ConvParams::conv_transpose2d(2, 4, 3, 5, 3, 4, 2, 1)),
        (true, ConvParams::conv_transpose2d(3, 7, 1, 1, 4, 4, 1, 0)),
    ] {
        let op = if transposed { "conv_transpose2d" } else { "conv2d" };
        let label = format!("{op} {}", p.label());
        let (x, w, b, dy) = (rand_vec(rng, p.in_len()), rand_vec(rng, p.weight_len()), rand_vec(rng, p.c_out as usize), rand_vec(rng, p.out_len()));
        let plane = (p.h_out * p.w_out) as usize;
        let mut want_y = if transposed { direct::conv_transpose2d(&p, &x, &w) } else { direct::conv2d(&p, &x, &w) };
        for (i, v) in want_y.iter_mut().enumerate() {
            *v += b[(i / plane) % p.c_out as usize];
        }
        let [dx_w, dw_w, db_w] = if transposed { direct::conv_transpose2d_backward(&p, &x, &w, &dy) } else { direct::conv2d_backward(&p, &x, &w, &dy) };
        let (mut y, mut dx, mut dw, mut db) = (vec![0.0; p.out_len()], vec![0.0; p.in_len()], vec![0.0; p.weight_len()], vec![0.0; p.c_out as usize]);
        if transposed {
            be.conv_transpose2d_forward(&p, &x, &w, Some(&b), &mut y)?;
            be.conv_transpose2d_backward_input(&p, &dy, &w, &mut dx)?;
            be.conv_transpose2d_backward_params(&p, &x, &dy, &mut dw, Some(&mut db))?;
        } else {
            be.conv2d_forward(&p, &x, &w, Some(&b), &mut y)?;
            be.conv2d_backward_input(&p, &dy, &w, &mut dx)?;
            be.conv2d_backward_params(&p, &x, &dy, &mut dw, Some(&mut db))?;
        }
        out.push(DirectCheck::new(format!("{label} forward +bias"), &want_y, &y));
        out.push(DirectCheck::new(format!("{label} backward_input"), &dx_w, &dx));
        out.push(DirectCheck::new(format!("{label} backward_params dw"), &dw_w, &dw));
        out.push(DirectCheck::new(format!("{label} backward_params db"), &db_w, &db));
    }
    Ok(out)
}
