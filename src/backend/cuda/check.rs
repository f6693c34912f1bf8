//! Every kernel against its CPU twin (verification ladder, steps 3 and 4): the same op
//! contract call on the GPU backend (real or simulated) and on the CPU backend in f32,
//! from the same random inputs, compared value by value.
//!
//! A value passes when `|gpu - cpu| <= abs + rel * |cpu|`, where `abs` is a small multiple
//! of the output's largest magnitude (the rounding of a long sum scales with its terms,
//! not with the result) and `rel` bounds the rest. A row passes when every value does and
//! no value is NaN. Shapes are deliberately awkward: batch 1 and 3, 3 channels, planes
//! like 13x11 that match no tile, channel counts just past a tile (66), and the models'
//! real layer shapes at small batch and width.

use super::GpuBackend;
use crate::backend::cpu::{Cpu, Cpu64};
use crate::backend::{ActParams, AdamParams, Backend, BatchNormParams, BceParams, ConcatParams, ConvParams, LinearParams, BN_ACT_LEAKY_RELU, BN_ACT_RELU};
use crate::model::{Discriminator, Generator, ModelConfig, Module};
use crate::nn::{Layer, Shape};
use crate::rng::Rng;
use crate::train::{Gan, Hyper, StepInputs};
use anyhow::{Context, Result};
use std::collections::BTreeSet;

/// Tolerance of one row: `abs_of_max * max|cpu| + rel * |cpu|` per value.
#[derive(Clone, Copy, Debug)]
pub struct Tol {
    pub abs_of_max: f64,
    pub rel: f64,
}

/// GEMM-shaped results (convolutions, linear): f32 sums in a different order than the
/// CPU's GEMM.
pub const TOL_GEMM: Tol = Tol { abs_of_max: 2e-5, rel: 1e-4 };
/// GEMM-shaped results with TF32 tensor cores (GemmMode::Tf32): each operand rounded to
/// 10 mantissa bits (relative error up to 2^-11), so about 1e-3 of the terms' size.
pub const TOL_GEMM_TF32: Tol = Tol { abs_of_max: 5e-3, rel: 5e-3 };
/// Reductions to per-channel statistics (batchnorm, losses, bias gradients).
pub const TOL_REDUCE: Tol = Tol { abs_of_max: 2e-5, rel: 1e-4 };
/// Elementwise maps: a few ulp (tanhf, expf differ from Rust's by an ulp or two).
pub const TOL_ELEM: Tol = Tol { abs_of_max: 1e-6, rel: 1e-6 };

#[derive(Clone, Debug)]
pub struct Row {
    /// The kernels the GPU backend launched for this row, main one first.
    pub kernels: Vec<String>,
    pub shape: String,
    pub values: usize,
    pub max_abs: f64,
    /// Largest `|gpu - cpu| / (|cpu| + abs)`, with `abs` the row's absolute tolerance.
    pub max_rel: f64,
    pub tol: Tol,
    pub passed: bool,
}

impl Row {
    pub fn kernel_label(&self) -> String {
        self.kernels.join(" + ")
    }
}

/// Compares `got` with `want` under `tol`.
pub fn compare(kernels: Vec<String>, shape: String, want: &[f32], got: &[f32], tol: Tol) -> Row {
    let scale = want.iter().fold(0.0f64, |m, v| m.max((*v as f64).abs()));
    let abs = (tol.abs_of_max * scale).max(1e-30);
    let (mut max_abs, mut max_rel, mut passed) = (0.0f64, 0.0f64, want.len() == got.len());
    for (w, g) in want.iter().zip(got) {
        let (w, g) = (*w as f64, *g as f64);
        let d = (w - g).abs();
        if !d.is_finite() {
            passed = false;
            max_abs = f64::NAN;
            max_rel = f64::NAN;
            continue;
        }
        max_abs = max_abs.max(d);
        max_rel = max_rel.max(d / (w.abs() + abs));
        passed &= d <= abs + tol.rel * w.abs();
    }
    Row { kernels, shape, values: want.len(), max_abs, max_rel, tol, passed }
}

fn up<B: Backend>(be: &B, v: &[f32]) -> Result<B::Buf> {
    let mut b = be.alloc(v.len())?;
    be.upload(&mut b, v)?;
    Ok(b)
}

fn down<B: Backend>(be: &B, b: &B::Buf, n: usize) -> Result<Vec<f32>> {
    let mut v = vec![0.0; n];
    be.download(b, &mut v)?;
    Ok(v)
}

fn normal(rng: &mut Rng, n: usize, std: f64) -> Vec<f32> {
    let mut v = vec![0.0; n];
    rng.fill_normal(&mut v, 0.0, std);
    v
}

/// Runs the kernel checks and collects one row per case.
pub struct Checker<'a> {
    gpu: &'a GpuBackend,
    cpu: Cpu,
    rng: Rng,
    pub rows: Vec<Row>,
}

impl<'a> Checker<'a> {
    pub fn new(gpu: &'a GpuBackend, seed: u64) -> Self {
        Checker { gpu, cpu: Cpu::new(), rng: Rng::new(seed), rows: Vec::new() }
    }

    /// The tolerance of GEMM-shaped results in the GPU backend's GEMM mode.
    pub fn gemm_tol(&self) -> Tol {
        if self.gpu.gemm_mode().precision() == super::GemmMode::Tf32 {
            TOL_GEMM_TF32
        } else {
            TOL_GEMM
        }
    }

    /// Runs `f` on the GPU backend, then on the CPU, and records the comparison with the
    /// kernels the GPU launched for it (`main` first).
    fn case<F, G>(&mut self, main: &str, shape: String, tol: Tol, gpu_run: F, cpu_run: G) -> Result<()>
    where
        F: FnOnce(&GpuBackend) -> Result<Vec<f32>>,
        G: FnOnce(&Cpu) -> Result<Vec<f32>>,
    {
        self.gpu.take_recent_launches();
        let got = gpu_run(self.gpu).with_context(|| format!("{main} ({shape}) on {}", self.gpu.name()))?;
        let launched: BTreeSet<&str> = self.gpu.take_recent_launches();
        let want = cpu_run(&self.cpu).with_context(|| format!("{main} ({shape}) on the CPU"))?;
        // The op's own kernel first; when the op chose another (a thin variant, say), what ran.
        let others = launched.iter().filter(|k| **k != main && **k != "fill_f32").map(|k| k.to_string());
        let mut kernels = if launched.contains(main) { vec![main.to_string()] } else { Vec::new() };
        kernels.extend(others);
        self.rows.push(compare(kernels, shape, &want, &got, tol));
        Ok(())
    }

    // ---- convolutions ----------------------------------------------------------------

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
            let mut y = be.alloc(p.out_len())?;
            if t {
                be.conv_transpose2d_forward(p, &x, &w, b.as_ref(), &mut y)?;
            } else {
                be.conv2d_forward(p, &x, &w, b.as_ref(), &mut y)?;
            }
            down(be, &y, p.out_len())
        }
        fn backward_input<B: Backend>(be: &B, p: &ConvParams, t: bool, dy: &[f32], w: &[f32]) -> Result<Vec<f32>> {
            let (dy, w) = (up(be, dy)?, up(be, w)?);
            let mut dx = be.alloc(p.in_len())?;
            be.fill(&mut dx, f32::NAN)?; // every value must be written
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
        self.case(
            &name("forward"),
            format!("{shape} +bias"),
            tol,
            |g| forward(g, &p, transposed, xr, wr, Some(br)),
            |c| forward(c, &p, transposed, xr, wr, Some(br)),
        )?;
        self.case(&name("forward"), shape.clone(), tol, |g| forward(g, &p, transposed, xr, wr, None), |c| forward(c, &p, transposed, xr, wr, None))?;
        self.case(&name("backward_input"), shape.clone(), tol, |g| backward_input(g, &p, transposed, &dy, wr), |c| backward_input(c, &p, transposed, &dy, wr))?;
        self.case(
            &name("backward_params"),
            format!("{shape} dw,db +="),
            tol,
            |g| backward_params(g, &p, transposed, xr, &dy, &dw0, &db0),
            |c| backward_params(c, &p, transposed, xr, &dy, &dw0, &db0),
        )
    }

    // ---- batchnorm -------------------------------------------------------------------

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
            let (mut mean, mut invstd, mut y) = (be.alloc(c)?, be.alloc(c)?, be.alloc(p.len())?);
            be.batchnorm2d_forward_train(p, &x, &gamma, &beta, &mut rm, &mut rv, &mut mean, &mut invstd, &mut y)?;
            let mut out = down(be, &y, p.len())?;
            for b in [&mean, &invstd, &rm, &rv] {
                out.extend(down(be, b, c)?);
            }
            Ok(out)
        }
        fn infer<B: Backend>(be: &B, p: &BatchNormParams, x: &[f32], gamma: &[f32], beta: &[f32], rm: &[f32], rv: &[f32]) -> Result<Vec<f32>> {
            let (x, gamma, beta, rm, rv) = (up(be, x)?, up(be, gamma)?, up(be, beta)?, up(be, rm)?, up(be, rv)?);
            let mut y = be.alloc(p.len())?;
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
            let (mut dx, mut sums) = (be.alloc(p.len())?, be.alloc(2 * p.c as usize)?);
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
        self.case(
            "batchnorm2d_forward_train_f32",
            format!("{shape} y,mean,invstd,running"),
            TOL_REDUCE,
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
        self.case(
            "batchnorm2d_backward_input_f32",
            format!("{shape} dx,sums"),
            TOL_REDUCE,
            |g| backward_input(g, &p, xr, yr, &dy, gr, mr, ir),
            |c| backward_input(c, &p, xr, yr, &dy, gr, mr, ir),
        )?;
        let sums = normal(&mut self.rng, 2 * c, 10.0);
        self.case(
            "batchnorm2d_backward_params_f32",
            format!("c{c} dgamma,dbeta += sums"),
            TOL_ELEM,
            |g| backward_params(g, &p, &sums, &dg0, &db0),
            |c| backward_params(c, &p, &sums, &dg0, &db0),
        )
    }

    // ---- activations ---------------------------------------------------------------------

    pub fn activations(&mut self, len: usize) -> Result<()> {
        let x = normal(&mut self.rng, len, 2.0);
        let dy = normal(&mut self.rng, len, 1.0);
        #[derive(Clone, Copy)]
        enum Kind {
            Relu,
            Leaky,
            Tanh,
        }
        fn fwd<B: Backend>(be: &B, k: Kind, p: &ActParams, x: &[f32]) -> Result<B::Buf> {
            let x = up(be, x)?;
            let mut y = be.alloc(p.len as usize)?;
            match k {
                Kind::Relu => be.relu_forward(p, &x, &mut y)?,
                Kind::Leaky => be.leaky_relu_forward(p, &x, &mut y)?,
                Kind::Tanh => be.tanh_forward(p, &x, &mut y)?,
            }
            Ok(y)
        }
        fn forward<B: Backend>(be: &B, k: Kind, p: &ActParams, x: &[f32]) -> Result<Vec<f32>> {
            let y = fwd(be, k, p, x)?;
            down(be, &y, p.len as usize)
        }
        // The backward pass reads the saved output, made here by the CPU twin so both
        // backends see identical `y`.
        fn backward<B: Backend>(be: &B, k: Kind, p: &ActParams, y: &[f32], dy: &[f32]) -> Result<Vec<f32>> {
            let (y, dy) = (up(be, y)?, up(be, dy)?);
            let mut dx = be.alloc(p.len as usize)?;
            match k {
                Kind::Relu => be.relu_backward_input(p, &y, &dy, &mut dx)?,
                Kind::Leaky => be.leaky_relu_backward_input(p, &y, &dy, &mut dx)?,
                Kind::Tanh => be.tanh_backward_input(p, &y, &dy, &mut dx)?,
            }
            down(be, &dx, p.len as usize)
        }
        for (k, name, slope) in [(Kind::Relu, "relu", 0.0), (Kind::Leaky, "leaky_relu", 0.2), (Kind::Tanh, "tanh", 0.0)] {
            let p = ActParams { len: len as i32, slope };
            let shape = format!("len {len}");
            self.case(&format!("{name}_forward_f32"), shape.clone(), TOL_ELEM, |g| forward(g, k, &p, &x), |c| forward(c, k, &p, &x))?;
            let y = forward(&self.cpu, k, &p, &x)?;
            self.case(&format!("{name}_backward_input_f32"), shape, TOL_ELEM, |g| backward(g, k, &p, &y, &dy), |c| backward(c, k, &p, &y, &dy))?;
        }
        Ok(())
    }

    // ---- linear --------------------------------------------------------------------------

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
            let mut y = be.alloc((p.n * p.out_features) as usize)?;
            be.linear_forward(p, &x, &w, Some(&b), &mut y)?;
            down(be, &y, (p.n * p.out_features) as usize)
        }
        fn backward_input<B: Backend>(be: &B, p: &LinearParams, dy: &[f32], w: &[f32]) -> Result<Vec<f32>> {
            let (dy, w) = (up(be, dy)?, up(be, w)?);
            let mut dx = be.alloc((p.n * p.in_features) as usize)?;
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
        self.case("linear_forward_f32", format!("{shape} +bias"), tol, |g| forward(g, &p, &x, &w, &b), |c| forward(c, &p, &x, &w, &b))?;
        self.case("linear_backward_input_f32", shape.clone(), tol, |g| backward_input(g, &p, &dy, &w), |c| backward_input(c, &p, &dy, &w))?;
        self.case(
            "linear_backward_params_f32",
            format!("{shape} dw,db +="),
            tol,
            |g| backward_params(g, &p, &x, &dy, &dw0, &db0),
            |c| backward_params(c, &p, &x, &dy, &dw0, &db0),
        )
    }

    // ---- concat / tile ---------------------------------------------------------------------

    pub fn concat(&mut self, n: usize, c_a: usize, c_b: usize, hw: usize) -> Result<()> {
        let p = ConcatParams { n: n as i32, c_a: c_a as i32, c_b: c_b as i32, hw: hw as i32 };
        let shape = format!("n{n} {c_a}x{hw} ++ {c_b} tiled");
        let a = normal(&mut self.rng, n * c_a * hw, 1.0);
        let b = normal(&mut self.rng, n * c_b, 1.0);
        let dy = normal(&mut self.rng, p.out_len(), 1.0);
        fn forward<B: Backend>(be: &B, p: &ConcatParams, a: &[f32], b: &[f32]) -> Result<Vec<f32>> {
            let (a, b) = (up(be, a)?, up(be, b)?);
            let mut y = be.alloc(p.out_len())?;
            be.concat_tile_forward(p, &a, &b, &mut y)?;
            down(be, &y, p.out_len())
        }
        fn backward<B: Backend>(be: &B, p: &ConcatParams, dy: &[f32]) -> Result<Vec<f32>> {
            let (la, lb) = ((p.n * p.c_a * p.hw) as usize, (p.n * p.c_b) as usize);
            let dy = up(be, dy)?;
            let (mut da, mut db) = (be.alloc(la)?, be.alloc(lb)?);
            be.concat_tile_backward_input(p, &dy, &mut da, &mut db)?;
            let mut out = down(be, &da, la)?;
            out.extend(down(be, &db, lb)?);
            Ok(out)
        }
        self.case("concat_tile_forward_f32", shape.clone(), TOL_ELEM, |g| forward(g, &p, &a, &b), |c| forward(c, &p, &a, &b))?;
        self.case("concat_tile_backward_input_f32", format!("{shape} da,db"), TOL_REDUCE, |g| backward(g, &p, &dy), |c| backward(c, &p, &dy))
    }

    // ---- loss, optimizer, fill -------------------------------------------------------------

    pub fn bce(&mut self, n: usize, target: f32, scale: f32, spread: f64) -> Result<()> {
        let p = BceParams { n: n as i32, target, scale };
        let shape = format!("n{n} target {target} scale {scale} |logit|~{spread}");
        let logits = normal(&mut self.rng, n, spread);
        fn forward<B: Backend>(be: &B, p: &BceParams, l: &[f32]) -> Result<Vec<f32>> {
            let l = up(be, l)?;
            let mut out = be.alloc(2)?;
            be.bce_with_logits_forward(p, &l, &mut out)?;
            down(be, &out, 2)
        }
        fn backward<B: Backend>(be: &B, p: &BceParams, l: &[f32]) -> Result<Vec<f32>> {
            let l = up(be, l)?;
            let mut d = be.alloc(p.n as usize)?;
            be.bce_with_logits_backward_input(p, &l, &mut d)?;
            down(be, &d, p.n as usize)
        }
        self.case("bce_with_logits_forward_f32", format!("{shape} [loss, mean p]"), TOL_REDUCE, |g| forward(g, &p, &logits), |c| forward(c, &p, &logits))?;
        self.case("bce_with_logits_backward_input_f32", shape, TOL_ELEM, |g| backward(g, &p, &logits), |c| backward(c, &p, &logits))
    }

    pub fn adam(&mut self, len: usize, step: i32) -> Result<()> {
        let (beta1, beta2) = (0.5f32, 0.999f32);
        let p = AdamParams { len: len as i32, lr: 2e-4, beta1, beta2, eps: 1e-8, bc1: 1.0 - beta1.powi(step), bc2: 1.0 - beta2.powi(step) };
        let param = normal(&mut self.rng, len, 0.02);
        let grad = normal(&mut self.rng, len, 1e-2);
        let m = normal(&mut self.rng, len, 1e-2);
        let v: Vec<f32> = normal(&mut self.rng, len, 1e-4).iter().map(|x| x.abs()).collect();
        fn run<B: Backend>(be: &B, p: &AdamParams, param: &[f32], grad: &[f32], m: &[f32], v: &[f32]) -> Result<Vec<f32>> {
            let (mut pa, g, mut m, mut v) = (up(be, param)?, up(be, grad)?, up(be, m)?, up(be, v)?);
            be.adam_step(p, &mut pa, &g, &mut m, &mut v)?;
            let n = p.len as usize;
            let mut out = down(be, &pa, n)?;
            out.extend(down(be, &m, n)?);
            out.extend(down(be, &v, n)?);
            Ok(out)
        }
        let tol = Tol { abs_of_max: 1e-6, rel: 1e-5 };
        self.case(
            "adam_step_f32",
            format!("len {len} step {step} param,m,v"),
            tol,
            |g| run(g, &p, &param, &grad, &m, &v),
            |c| run(c, &p, &param, &grad, &m, &v),
        )
    }

    pub fn fill(&mut self, len: usize) -> Result<()> {
        fn run<B: Backend>(be: &B, len: usize) -> Result<Vec<f32>> {
            let mut b = be.alloc(len)?;
            be.fill(&mut b, 0.375)?;
            down(be, &b, len)
        }
        self.gpu.take_recent_launches();
        let got = run(self.gpu, len)?;
        let want = run(&self.cpu, len)?;
        self.gpu.take_recent_launches();
        self.rows.push(compare(vec!["fill_f32".into()], format!("len {len}"), &want, &got, Tol { abs_of_max: 0.0, rel: 0.0 }));
        Ok(())
    }

    // ---- the models' own layers ------------------------------------------------------------

    /// Every convolution, batchnorm, linear and concat shape of the generator and
    /// discriminator for `cfg`, at batch `n`.
    pub fn model_layers(&mut self, cfg: &ModelConfig, n: usize) -> Result<()> {
        let mut rng = Rng::new(0);
        let g = Generator::new(&self.cpu, cfg, &mut rng)?;
        let d = Discriminator::new(&self.cpu, cfg, &mut rng)?;
        let mut convs = Vec::new();
        let mut norms = Vec::new();
        for (_, layer, s) in g.layers().into_iter().chain(d.layers()) {
            let s = s.with_batch(n);
            if let Some(conv) = as_conv(layer, s) {
                convs.push(conv);
            } else if let Some(p) = layer.batchnorm_params(s) {
                norms.push(p);
            }
        }
        for (p, t) in convs {
            self.conv(p, t)?;
        }
        for p in norms {
            self.batchnorm(p)?;
        }
        self.linear(n, cfg.text_dim, cfg.text_proj)?;
        self.concat(n, cfg.noise_dim, cfg.text_dim, 1)?;
        self.concat(n, cfg.top_channels(), cfg.text_proj, 16)?;
        Ok(())
    }

    /// One whole training iteration (D step on real and fake, G step through frozen D,
    /// Adam on both) on the GPU backend and on the CPU (f32 and f64) from the same weights
    /// and data; rows for the losses, the gradients of each step and the Adam updates.
    pub fn train_iteration(&mut self, cfg: &ModelConfig, n: usize, seed: u64) -> Result<()> {
        self.gpu.take_recent_launches();
        let got = train_iteration(self.gpu, cfg, n, seed).with_context(|| format!("training iteration on {}", self.gpu.name()))?;
        let launched = self.gpu.take_recent_launches();
        let cpu32 = train_iteration(&self.cpu, cfg, n, seed).context("training iteration on the CPU")?;
        let reference = train_iteration(&Cpu64::new(), cfg, n, seed).context("training iteration on the CPU in f64")?;
        let shape = format!("{} px, width {}, batch {n}", cfg.size, cfg.width);
        self.rows.extend(iteration_rows(&reference, &cpu32, &got, &shape, launched.len()));
        Ok(())
    }
}

/// `||got - want|| / ||want||` (Euclidean norms; NaN when anything is not finite).
pub fn rel_l2(want: &[f32], got: &[f32]) -> f64 {
    let (mut d2, mut w2) = (0.0f64, 0.0f64);
    for (w, g) in want.iter().zip(got) {
        let (w, g) = (*w as f64, *g as f64);
        d2 += (w - g) * (w - g);
        w2 += w * w;
    }
    if want.len() != got.len() || !d2.is_finite() {
        return f64::NAN;
    }
    if w2 == 0.0 {
        return if d2 == 0.0 { 0.0 } else { f64::INFINITY };
    }
    (d2 / w2).sqrt()
}

/// Training-iteration tolerances. Value-by-value bounds do not work for a whole model at
/// scale: an activation within rounding of a ReLU kink goes either way in two f32
/// computations, batchnorm's backward pass subtracts nearly equal means, and a first Adam
/// step turns the sign of every tiny gradient into a full step. Measured on the CPU at
/// 128 px, batch 64 (tests/cuda_tolerance.rs), f32 against f64 differs by a relative L2 error
/// of about 3e-2 in the generator's gradients. So each group is compared with the f64 CPU
/// reference, and the GPU passes when its relative L2 error is at most twice the CPU's own
/// f32 error, plus a floor for groups where that error is near zero.
pub const TRAIN_ERR_FACTOR: f64 = 2.0;
pub const TRAIN_FLOOR_LOSS: f64 = 1e-5;
pub const TRAIN_FLOOR_GRAD: f64 = 1e-4;
/// Parameters are compared by their Adam updates (after - before), the only part that moves.
pub const TRAIN_FLOOR_UPDATE: f64 = 5e-3;

/// The rows comparing one training iteration: `got` (the GPU, f32) and `cpu32` (the CPU in
/// f32), both against `reference` (the CPU in f64), for the losses, the gradients of each
/// step and the parameter updates of Adam. `kernels` is how many distinct kernels the GPU
/// launched. In these rows "rel err" is the relative L2 error against the f64 reference and
/// the tolerance is the bound it must stay under.
pub fn iteration_rows(reference: &IterationOut, cpu32: &IterationOut, got: &IterationOut, shape: &str, kernels: usize) -> Vec<Row> {
    let row = |what: &str, want: &[f32], cpu: &[f32], got: &[f32], floor: f64| {
        let max_abs = want.iter().zip(got).fold(0.0f64, |m, (w, g)| m.max((*w as f64 - *g as f64).abs()));
        let err = rel_l2(want, got);
        let limit = TRAIN_ERR_FACTOR * rel_l2(want, cpu) + floor;
        let mut k = vec![format!("train: {what}")];
        if what.starts_with("losses") {
            k.push(format!("({kernels} kernels)"));
        }
        Row {
            kernels: k,
            shape: shape.to_string(),
            values: want.len(),
            max_abs,
            max_rel: err,
            tol: Tol { abs_of_max: f64::NAN, rel: limit },
            passed: err <= limit,
        }
    };
    let update = |o: &IterationOut| o.params.iter().zip(&o.params_before).map(|(a, b)| a - b).collect::<Vec<f32>>();
    vec![
        row("losses [loss D, D(x), D(G(z)), loss G]", &reference.losses, &cpu32.losses, &got.losses, TRAIN_FLOOR_LOSS),
        row("D gradients", &reference.d_grads, &cpu32.d_grads, &got.d_grads, TRAIN_FLOOR_GRAD),
        row("G gradients", &reference.g_grads, &cpu32.g_grads, &got.g_grads, TRAIN_FLOOR_GRAD),
        row("Adam updates of G and D", &update(reference), &update(cpu32), &update(got), TRAIN_FLOOR_UPDATE),
    ]
}

/// The conv shape of a layer, if it is one (read from its description).
fn as_conv<B: Backend>(layer: &dyn Layer<B>, s: Shape) -> Option<(ConvParams, bool)> {
    let d = layer.describe();
    let transposed = d.starts_with("ConvTranspose2d(");
    if !transposed && !d.starts_with("Conv2d(") {
        return None;
    }
    // "Conv2d(c_in, c_out, k4 s2 p1)"
    let inner = d.split_once('(')?.1.trim_end_matches(')');
    let parts: Vec<&str> = inner.split([',', ' ']).filter(|t| !t.is_empty()).collect();
    let num = |t: &str| t.trim_start_matches(['k', 's', 'p']).parse::<usize>().ok();
    let (c_in, c_out, k, st, pad) = (num(parts.first()?)?, num(parts.get(1)?)?, num(parts.get(2)?)?, num(parts.get(3)?)?, num(parts.get(4)?)?);
    let p = if transposed {
        ConvParams::conv_transpose2d(s.n, c_in, s.h, s.w, c_out, k, st, pad)
    } else {
        ConvParams::conv2d(s.n, c_in, s.h, s.w, c_out, k, st, pad)
    };
    Some((p, transposed))
}

/// What one training iteration produces, flattened for comparison.
pub struct IterationOut {
    pub losses: Vec<f32>,
    pub params_before: Vec<f32>,
    pub d_grads: Vec<f32>,
    pub g_grads: Vec<f32>,
    pub params: Vec<f32>,
}

fn grads<B: Backend, M: Module<B>>(be: &B, m: &M) -> Result<Vec<f32>> {
    let mut out = Vec::new();
    for p in m.params() {
        out.extend(down(be, &p.grad, p.len())?);
    }
    Ok(out)
}

fn values<B: Backend>(be: &B, gan: &Gan<B>) -> Result<Vec<f32>> {
    let mut out = Vec::new();
    for p in gan.g.params().into_iter().chain(gan.d.params()) {
        out.extend(down(be, &p.value, p.len())?);
    }
    Ok(out)
}

/// One iteration of the training loop itself (`train::Gan::iteration`: D step on real and
/// fake, Adam on D, G step through the frozen D, Adam on G), weights and batch from
/// `seed`. The gradients are read after the iteration: Adam does not clear them, and the
/// frozen D keeps its D-step gradients through the G step.
pub fn train_iteration<B: Backend>(be: &B, cfg: &ModelConfig, n: usize, seed: u64) -> Result<IterationOut> {
    let mut gan = Gan::new(be, cfg, &Hyper::default(), seed)?;
    let mut rng = Rng::derive(seed, "batch");
    let mut noise = vec![0.0; n * cfg.noise_dim];
    rng.fill_normal(&mut noise, 0.0, 1.0);
    let mut texts = vec![0.0; n * cfg.text_dim];
    rng.fill_uniform(&mut texts, 0.0, 0.3);
    let mut images = vec![0.0; n * 3 * cfg.size * cfg.size];
    rng.fill_uniform(&mut images, -1.0, 1.0);
    let params_before = values(be, &gan)?;
    let s = gan.iteration(be, n, &StepInputs { images: &images, texts: &texts, noise: &noise, mismatched: None })?;
    let losses = vec![s.loss_d, s.d_real, s.d_fake, s.loss_g];
    let d_grads = grads(be, &gan.d)?;
    let g_grads = grads(be, &gan.g)?;
    let params = values(be, &gan)?;
    be.synchronize()?;
    Ok(IterationOut { losses, params_before, d_grads, g_grads, params })
}

/// The awkward shapes every kernel is run at, beyond the models' own layers.
pub fn awkward_shapes(c: &mut Checker) -> Result<()> {
    // conv2d: batch 1, 3 channels, a plane matching no tile; channel counts past a tile.
    c.conv(ConvParams::conv2d(1, 3, 13, 11, 5, 4, 2, 1), false)?;
    c.conv(ConvParams::conv2d(3, 4, 7, 9, 66, 3, 1, 1), false)?;
    c.conv(ConvParams::conv2d(2, 3, 32, 32, 8, 4, 2, 1), false)?; // split-K weight gradient
                                                                  // One output tile and a long reduction (K = 8192): the forward pass is split-K.
    c.conv(ConvParams::conv2d(1, 512, 8, 8, 16, 4, 2, 1), false)?;
    // conv_transpose2d: odd planes, a kernel the stride does not divide (k3 s2: uneven
    // parity classes), the generator's first layer on a 1x1 input.
    c.conv(ConvParams::conv_transpose2d(1, 3, 5, 7, 5, 4, 2, 1), true)?;
    c.conv(ConvParams::conv_transpose2d(1, 4, 6, 5, 3, 3, 2, 0), true)?;
    c.conv(ConvParams::conv_transpose2d(3, 66, 1, 1, 5, 4, 1, 0), true)?;
    c.conv(ConvParams::conv_transpose2d(2, 8, 16, 16, 3, 4, 2, 1), true)?; // split-K weight gradient
    c.batchnorm(BatchNormParams::new(1, 3, 35, 1e-5, 0.1))?;
    c.batchnorm(BatchNormParams::new(3, 5, 1, 1e-5, 0.1).with_act(BN_ACT_RELU, 0.0))?;
    c.batchnorm(BatchNormParams::new(2, 3, 300, 1e-5, 0.1).with_act(BN_ACT_LEAKY_RELU, 0.2))?;
    c.batchnorm(BatchNormParams::new(2, 4, 37, 1e-5, 0.1).with_act(BN_ACT_RELU, 0.0))?;
    // Channels cut into slices (kernels/batchnorm.cu): three, the last one shorter; and
    // more slices than a warp has lanes, so lanes combine several before the shuffles.
    c.batchnorm(BatchNormParams::new(2, 2, 2050, 1e-5, 0.1).with_act(BN_ACT_LEAKY_RELU, 0.2))?;
    c.batchnorm(BatchNormParams::new(1, 1, 70001, 1e-5, 0.1))?;
    c.activations(1000)?;
    c.linear(1, 7, 65)?;
    c.linear(3, 70, 5)?;
    // A long reduction in one chain (linear never splits): the rounding of the tensor
    // cores' sums must not pile up.
    c.linear(3, 8192, 70)?;
    c.concat(1, 3, 5, 7)?;
    c.bce(3, 1.0, 0.5, 2.0)?;
    c.bce(300, 0.0, 1.0, 40.0)?; // more logits than threads; |logit| large
    c.adam(1000, 1)?;
    c.adam(999, 7)?;
    c.fill(1001)?;
    Ok(())
}
