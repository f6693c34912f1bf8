//! Gradient checks by central finite differences in f64 (verification ladder, step 1).
//!
//! Every check builds a scalar loss `L = sum(y * r)` with a fixed random `r` (so the
//! upstream gradient is `r`), or uses the BCE loss itself, and compares the analytic
//! gradient of every input and parameter with `(L(v + h) - L(v - h)) / 2h`.
//!
//! The error of one entry is `|a - n| / max(|a|, |n|, 1e-3 * max_j |n_j|)`: relative, with
//! a floor at a thousandth of the tensor's largest gradient so entries that are zero up
//! to rounding do not divide by zero. A check passes when its largest error is < 1e-5.

use crate::backend::cpu::Cpu64;
use crate::backend::{ActParams, Backend, BatchNormParams, BceParams, ConcatParams, ConvParams, LinearParams, BN_ACT_LEAKY_RELU, BN_ACT_NONE, BN_ACT_RELU};
use crate::model::{Discriminator, Generator, ModelConfig, Module};
use crate::nn::{ActKind, Activation, BatchNorm2d, Conv, Layer, Linear, Mode, Shape, Tensor};
use crate::rng::Rng;
use anyhow::Result;

pub const TOLERANCE: f64 = 1e-5;
/// Step for parameters and op inputs: small enough that no step crosses a ReLU kink.
const H: f64 = 1e-5;
/// Step for whole-model inputs: one pixel moves the loss so little that a smaller step
/// drowns in rounding; pixels sit far from kinks in effect, so a larger step is safe.
const H_MODEL_INPUT: f64 = 1e-4;

#[derive(Clone, Debug)]
pub struct CheckResult {
    pub name: String,
    pub max_rel_err: f64,
    pub entries: usize,
}

impl CheckResult {
    pub fn passed(&self) -> bool {
        self.max_rel_err < TOLERANCE
    }
}

fn compare(name: String, analytic: &[f64], numeric: &[f64]) -> CheckResult {
    let scale = numeric.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    let floor = (1e-3 * scale).max(1e-300);
    let mut worst = 0.0f64;
    for (a, n) in analytic.iter().zip(numeric) {
        let err = (a - n).abs() / a.abs().max(n.abs()).max(floor);
        worst = if err.is_nan() { f64::INFINITY } else { worst.max(err) };
    }
    CheckResult { name, max_rel_err: worst, entries: numeric.len() }
}

/// Numeric gradient of `f` at `v`, for the listed indices.
fn numeric(v: &[f64], idx: &[usize], f: impl FnMut(&[f64]) -> Result<f64>) -> Result<Vec<f64>> {
    numeric_h(v, idx, H, f)
}

fn numeric_h(v: &[f64], idx: &[usize], h: f64, mut f: impl FnMut(&[f64]) -> Result<f64>) -> Result<Vec<f64>> {
    let mut x = v.to_vec();
    idx.iter()
        .map(|&i| {
            let orig = x[i];
            x[i] = orig + h;
            let up = f(&x)?;
            x[i] = orig - h;
            let down = f(&x)?;
            x[i] = orig;
            Ok((up - down) / (2.0 * h))
        })
        .collect()
}

fn check_all(name: &str, v: &[f64], analytic: &[f64], f: impl FnMut(&[f64]) -> Result<f64>) -> Result<CheckResult> {
    check_all_h(name, v, analytic, H, f)
}

fn check_all_h(name: &str, v: &[f64], analytic: &[f64], h: f64, f: impl FnMut(&[f64]) -> Result<f64>) -> Result<CheckResult> {
    let idx: Vec<usize> = (0..v.len()).collect();
    Ok(compare(name.to_string(), analytic, &numeric_h(v, &idx, h, f)?))
}

/// Random values away from zero, so no finite difference crosses a ReLU kink.
fn rand_vec(rng: &mut Rng, n: usize) -> Vec<f64> {
    (0..n)
        .map(|_| {
            let v = rng.normal();
            v.signum() * v.abs().max(0.05)
        })
        .collect()
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Runs `op(inputs...) -> output` on the backend and returns `sum(output * r)`.
struct OpHarness {
    be: Cpu64,
}

impl OpHarness {
    fn buf(&self, v: &[f64]) -> Result<Vec<f64>> {
        let mut b = self.be.alloc(v.len())?;
        self.be.upload_f64(&mut b, v)?;
        Ok(b)
    }
}

fn conv_checks(h: &OpHarness, rng: &mut Rng, transposed: bool, p: ConvParams, label: &str, out: &mut Vec<CheckResult>) -> Result<()> {
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

/// Every op of the contract, every input and every parameter, at small awkward shapes.
pub fn op_checks() -> Result<Vec<CheckResult>> {
    let h = OpHarness { be: Cpu64::new() };
    let be = &h.be;
    let mut rng = Rng::new(11);
    let mut out = Vec::new();

    for (label, p) in [
        ("k4s2p1 2x3x7x6->4", ConvParams::conv2d(2, 3, 7, 6, 4, 4, 2, 1)),
        ("k4s1p0 1x5x4x4->2", ConvParams::conv2d(1, 5, 4, 4, 2, 4, 1, 0)),
        ("k1s1p0 3x6x4x4->5", ConvParams::conv2d(3, 6, 4, 4, 5, 1, 1, 0)),
        ("k3s1p1 2x2x5x3->3", ConvParams::conv2d(2, 2, 5, 3, 3, 3, 1, 1)),
    ] {
        conv_checks(&h, &mut rng, false, p, label, &mut out)?;
    }
    for (label, p) in [
        ("k4s2p1 2x4x3x5->3", ConvParams::conv_transpose2d(2, 4, 3, 5, 3, 4, 2, 1)),
        ("k4s1p0 3x7x1x1->4", ConvParams::conv_transpose2d(3, 7, 1, 1, 4, 4, 1, 0)),
        ("k3s2p1 1x3x3x4->2", ConvParams::conv_transpose2d(1, 3, 3, 4, 2, 3, 2, 1)),
    ] {
        conv_checks(&h, &mut rng, true, p, label, &mut out)?;
    }

    // batchnorm2d, training mode (gradients flow through the batch statistics), plain
    // and with each fused activation.
    for (label, act, slope) in [("", BN_ACT_NONE, 0.0), ("+relu ", BN_ACT_RELU, 0.0), ("+leaky_relu ", BN_ACT_LEAKY_RELU, 0.2)] {
        let p = BatchNormParams::new(3, 4, 5, 1e-5, 0.1).with_act(act, slope);
        let (x, gamma, beta, r) = (rand_vec(&mut rng, p.len()), rand_vec(&mut rng, 4), rand_vec(&mut rng, 4), rand_vec(&mut rng, p.len()));
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

    // activations
    for kind in ["relu", "leaky_relu", "tanh"] {
        let n = 37;
        let p = ActParams { len: n as i32, slope: 0.2 };
        let (x, r) = (rand_vec(&mut rng, n), rand_vec(&mut rng, n));
        let run = |x: &[f64]| -> Result<Vec<f64>> {
            let mut y = be.alloc(n)?;
            let xb = h.buf(x)?;
            match kind {
                "relu" => be.relu_forward(&p, &xb, &mut y)?,
                "leaky_relu" => be.leaky_relu_forward(&p, &xb, &mut y)?,
                _ => be.tanh_forward(&p, &xb, &mut y)?,
            }
            Ok(y)
        };
        let y = run(&x)?;
        let mut dx = be.alloc(n)?;
        let rb = h.buf(&r)?;
        match kind {
            "relu" => be.relu_backward_input(&p, &y, &rb, &mut dx)?,
            "leaky_relu" => be.leaky_relu_backward_input(&p, &y, &rb, &mut dx)?,
            _ => be.tanh_backward_input(&p, &y, &rb, &mut dx)?,
        }
        out.push(check_all(&format!("{kind} 37 input"), &x, &dx, |v| Ok(dot(&run(v)?, &r)))?);
    }

    // linear
    let p = LinearParams { n: 3, in_features: 5, out_features: 4 };
    let (x, w, b, r) = (rand_vec(&mut rng, 15), rand_vec(&mut rng, 20), rand_vec(&mut rng, 4), rand_vec(&mut rng, 12));
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

    // concat / tile
    let p = ConcatParams { n: 2, c_a: 3, c_b: 2, hw: 6 };
    let (a, bv, r) = (rand_vec(&mut rng, 36), rand_vec(&mut rng, 4), rand_vec(&mut rng, p.out_len()));
    let fwd = |a: &[f64], b: &[f64]| -> Result<f64> {
        let mut y = be.alloc(p.out_len())?;
        be.concat_tile_forward(&p, &h.buf(a)?, &h.buf(b)?, &mut y)?;
        Ok(dot(&y, &r))
    };
    let (mut da, mut db) = (be.alloc(36)?, be.alloc(4)?);
    be.concat_tile_backward_input(&p, &h.buf(&r)?, &mut da, &mut db)?;
    out.push(check_all("concat_tile 2x(3+2)x6 image", &a, &da, |v| fwd(v, &bv))?);
    out.push(check_all("concat_tile 2x(3+2)x6 vector", &bv, &db, |v| fwd(&a, v))?);

    // bce_with_logits, both targets, halved as in the D loss
    for target in [0.0f32, 1.0] {
        let p = BceParams { n: 7, target, scale: 0.5 };
        let x = rand_vec(&mut rng, 7);
        let fwd = |x: &[f64]| -> Result<f64> {
            let mut o = be.alloc(2)?;
            be.bce_with_logits_forward(&p, &h.buf(x)?, &mut o)?;
            Ok(o[0])
        };
        let mut dx = be.alloc(7)?;
        be.bce_with_logits_backward_input(&p, &h.buf(&x)?, &mut dx)?;
        out.push(check_all(&format!("bce_with_logits target {target} logits"), &x, &dx, fwd)?);
    }
    Ok(out)
}

/// Gradient check of one layer through the `Layer` trait (input and every parameter).
fn layer_check(name: &str, layer: &mut dyn Layer<Cpu64>, input: Shape, rng: &mut Rng) -> Result<Vec<CheckResult>> {
    let be = Cpu64::new();
    let x = rand_vec(rng, input.len());
    let xt = Tensor::zeros(&be, input)?;
    xt.set_f64(&be, &x)?;
    let out_shape = layer.out_shape(input);
    let r = rand_vec(rng, out_shape.len());
    let rt = Tensor::zeros(&be, out_shape)?;
    rt.set_f64(&be, &r)?;
    for p in layer.params_mut() {
        let v = rand_vec(rng, p.len());
        be.upload_f64(&mut p.value, &v)?;
        be.fill(&mut p.grad, 0.0)?;
    }
    layer.forward(&be, &xt, Mode::Train)?;
    let dx = layer.backward(&be, &rt)?.to_f64(&be)?;
    let mut results = Vec::new();
    let loss = |layer: &mut dyn Layer<Cpu64>, x: &[f64]| -> Result<f64> {
        let t = Tensor::zeros(&be, input)?;
        t.set_f64(&be, x)?;
        let y = layer.forward(&be, &t, Mode::Train)?.to_f64(&be)?;
        Ok(dot(&y, &r))
    };
    let idx: Vec<usize> = (0..x.len()).collect();
    let num = numeric(&x, &idx, |v| loss(layer, v))?;
    results.push(compare(format!("layer {name} input"), &dx, &num));
    let n_params = layer.params().len();
    for pi in 0..n_params {
        let (pname, value, grad) = {
            let p = &layer.params()[pi];
            (p.name.clone(), p.value.clone(), p.grad.clone())
        };
        let idx: Vec<usize> = (0..value.len()).collect();
        let num = numeric(&value, &idx, |v| {
            be.upload_f64(&mut layer.params_mut()[pi].value, v)?;
            loss(layer, &x)
        })?;
        be.upload_f64(&mut layer.params_mut()[pi].value, &value)?;
        results.push(compare(format!("layer {name} {}", pname.rsplit('.').next().unwrap_or(&pname)), &grad, &num));
    }
    Ok(results)
}

/// Every layer type through the `Layer` trait.
pub fn layer_checks() -> Result<Vec<CheckResult>> {
    let be = Cpu64::new();
    let mut rng = Rng::new(23);
    let mut out = Vec::new();
    let mut conv = Conv::new(&be, "conv", false, 3, 4, 4, 2, 1, true, &mut rng)?;
    out.extend(layer_check("Conv2d(3,4,k4s2p1)", &mut conv, Shape::new(2, 3, 6, 5), &mut rng)?);
    let mut convt = Conv::new(&be, "convt", true, 4, 3, 4, 2, 1, true, &mut rng)?;
    out.extend(layer_check("ConvTranspose2d(4,3,k4s2p1)", &mut convt, Shape::new(2, 4, 3, 3), &mut rng)?);
    let mut bn = BatchNorm2d::new(&be, "bn", 3, &mut rng)?;
    out.extend(layer_check("BatchNorm2d(3)", &mut bn, Shape::new(4, 3, 2, 3), &mut rng)?);
    for kind in [ActKind::Relu, ActKind::LeakyRelu(0.2), ActKind::Tanh] {
        let mut act = Activation::new(kind);
        let label = act.describe();
        out.extend(layer_check(&label, &mut act, Shape::new(2, 3, 2, 2), &mut rng)?);
    }
    let mut lin = Linear::new(&be, "linear", 6, 3, true, &mut rng)?;
    out.extend(layer_check("Linear(6,3)", &mut lin, Shape::new(3, 6, 1, 1), &mut rng)?);
    Ok(out)
}

/// A small model configuration for the whole-model checks: every block type, the
/// batchnorm layers and the text paths, at a size finite differences can afford.
pub fn small_config() -> ModelConfig {
    ModelConfig { size: 32, width: 4, noise_dim: 5, text_dim: 6, text_proj: 3, slope: 0.2 }
}

/// Up to `k` indices of `0..len`, spread out (all of them when `len <= k`).
fn sample_indices(len: usize, k: usize, rng: &mut Rng) -> Vec<usize> {
    if len <= k {
        return (0..len).collect();
    }
    (0..k).map(|_| rng.below(len)).collect()
}

/// Whole generator and whole discriminator at small width: the noise and text inputs in
/// full, and up to `per_param` entries of every parameter tensor.
pub fn model_checks(per_param: usize) -> Result<Vec<CheckResult>> {
    let be = Cpu64::new();
    let cfg = small_config();
    let mut rng = Rng::new(5);
    let n = 3;
    let mut out = Vec::new();

    // Generator, loss = sum(image * r).
    let mut g = Generator::new(&be, &cfg, &mut rng)?;
    let noise = rand_vec(&mut rng, n * cfg.noise_dim);
    let text = rand_vec(&mut rng, n * cfg.text_dim);
    let img_shape = Shape::new(n, 3, cfg.size, cfg.size);
    let r = rand_vec(&mut rng, img_shape.len());
    let g_loss = |g: &mut Generator<Cpu64>, noise: &[f64], text: &[f64]| -> Result<(f64, Tensor<Cpu64>, Tensor<Cpu64>)> {
        let zt = Tensor::zeros(&be, Shape::new(n, cfg.noise_dim, 1, 1))?;
        zt.set_f64(&be, noise)?;
        let tt = Tensor::zeros(&be, Shape::new(n, cfg.text_dim, 1, 1))?;
        tt.set_f64(&be, text)?;
        let y = g.forward(&be, &zt, &tt, Mode::Train)?;
        Ok((dot(&y.to_f64(&be)?, &r), zt, tt))
    };
    g.zero_grad(&be)?;
    g_loss(&mut g, &noise, &text)?;
    let rt = Tensor::zeros(&be, img_shape)?;
    rt.set_f64(&be, &r)?;
    let (dz, dt) = g.backward(&be, &rt)?;
    let (dz, dt) = (dz.to_f64(&be)?, dt.to_f64(&be)?);
    out.push(check_all_h("generator (32px, width 4) noise", &noise, &dz, H_MODEL_INPUT, |v| Ok(g_loss(&mut g, v, &text)?.0))?);
    out.push(check_all_h("generator (32px, width 4) text", &text, &dt, H_MODEL_INPUT, |v| Ok(g_loss(&mut g, &noise, v)?.0))?);
    let count = g.params().len();
    for pi in 0..count {
        let (name, value, grad) = {
            let p = &g.params()[pi];
            (p.name.clone(), p.value.clone(), p.grad.clone())
        };
        let idx = sample_indices(value.len(), per_param, &mut rng);
        let num = numeric(&value, &idx, |v| {
            be.upload_f64(&mut g.params_mut()[pi].value, v)?;
            Ok(g_loss(&mut g, &noise, &text)?.0)
        })?;
        be.upload_f64(&mut g.params_mut()[pi].value, &value)?;
        let ana: Vec<f64> = idx.iter().map(|&i| grad[i]).collect();
        out.push(compare(format!("generator {name}"), &ana, &num));
    }

    // Discriminator, loss = BCE(D(x, t), 1) / 2 as in the D step.
    let mut d = Discriminator::new(&be, &cfg, &mut rng)?;
    let image = rand_vec(&mut rng, img_shape.len());
    let bce = BceParams { n: n as i32, target: 1.0, scale: 0.5 };
    let d_loss = |d: &mut Discriminator<Cpu64>, image: &[f64], text: &[f64]| -> Result<(f64, Vec<f64>)> {
        let it = Tensor::zeros(&be, img_shape)?;
        it.set_f64(&be, image)?;
        let tt = Tensor::zeros(&be, Shape::new(n, cfg.text_dim, 1, 1))?;
        tt.set_f64(&be, text)?;
        let logits = d.forward(&be, &it, &tt, Mode::Train)?;
        let mut o = be.alloc(2)?;
        be.bce_with_logits_forward(&bce, &logits.buf.borrow(), &mut o)?;
        Ok((o[0], logits.to_f64(&be)?))
    };
    d.zero_grad(&be)?;
    let (_, logits) = d_loss(&mut d, &image, &text)?;
    let mut dl = be.alloc(n)?;
    let lb = {
        let mut b = be.alloc(n)?;
        be.upload_f64(&mut b, &logits)?;
        b
    };
    be.bce_with_logits_backward_input(&bce, &lb, &mut dl)?;
    let dlt = Tensor::zeros(&be, Shape::new(n, 1, 1, 1))?;
    dlt.set_f64(&be, &dl)?;
    let (di, dtx) = d.backward(&be, &dlt)?;
    let (di, dtx) = (di.to_f64(&be)?, dtx.to_f64(&be)?);
    out.push(check_all_h("discriminator (32px, width 4) image", &image, &di, H_MODEL_INPUT, |v| Ok(d_loss(&mut d, v, &text)?.0))?);
    out.push(check_all_h("discriminator (32px, width 4) text", &text, &dtx, H_MODEL_INPUT, |v| Ok(d_loss(&mut d, &image, v)?.0))?);
    let count = d.params().len();
    for pi in 0..count {
        let (name, value, grad) = {
            let p = &d.params()[pi];
            (p.name.clone(), p.value.clone(), p.grad.clone())
        };
        let idx = sample_indices(value.len(), per_param, &mut rng);
        let num = numeric(&value, &idx, |v| {
            be.upload_f64(&mut d.params_mut()[pi].value, v)?;
            Ok(d_loss(&mut d, &image, &text)?.0)
        })?;
        be.upload_f64(&mut d.params_mut()[pi].value, &value)?;
        let ana: Vec<f64> = idx.iter().map(|&i| grad[i]).collect();
        out.push(compare(format!("discriminator {name}"), &ana, &num));
    }
    Ok(out)
}

/// All gradient checks, in the order `selftest` prints them.
pub fn all_checks(per_param: usize) -> Result<Vec<CheckResult>> {
    let mut v = op_checks()?;
    v.extend(layer_checks()?);
    v.extend(model_checks(per_param)?);
    Ok(v)
}
