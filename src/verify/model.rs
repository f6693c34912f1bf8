//! The models' own layers: their shapes as twin rows (`Checker::model_layers`), and finite
//! differences through the `Layer` trait and through whole small generators and
//! discriminators.

use super::gradcheck::{check_all_h, compare, dot, numeric, numeric_h, rand_vec, CheckResult, H, H_MODEL_INPUT};
use super::twin::Checker;
use crate::backend::cpu::Cpu64;
use crate::backend::prelude::*;
use crate::backend::BceParams;
use crate::model::{DGrads, Discriminator, Generator, ModelConfig, Module, Progress, TextInD};
use crate::nn::{ActKind, Activation, BatchNorm2d, Conv, Grads, Layer, LayerOp, Linear, MinibatchStd, Mode, Shape, Tensor};
use crate::rng::Rng;
use anyhow::{Context, Result};

impl<B: Backend> Checker<'_, B> {
    /// Every convolution, batchnorm, linear and concat shape of the generator and
    /// discriminator for `cfg`, at batch `n`.
    pub fn model_layers(&mut self, cfg: &ModelConfig, n: usize) -> Result<()> {
        let mut rng = Rng::new(0);
        let g = Generator::new(&self.cpu, cfg, &mut rng)?;
        let d = Discriminator::new(&self.cpu, cfg, &mut rng)?;
        let mut convs = Vec::new();
        let mut norms = Vec::new();
        let mut spreads = Vec::new();
        let (mut ups, mut pools, mut pixel_norms) = (Vec::new(), Vec::new(), Vec::new());
        for (_, layer, s) in g.layers().into_iter().chain(d.layers()) {
            match layer.op(s.with_batch(n)) {
                LayerOp::Conv { p, transposed } => convs.push((p, transposed)),
                LayerOp::BatchNorm(p) => norms.push(p),
                LayerOp::MinibatchStd(p) => spreads.push(p),
                LayerOp::Upsample(p) => ups.push(p),
                LayerOp::Pool(p) => pools.push(p),
                LayerOp::PixelNorm(p) => pixel_norms.push(p),
                LayerOp::Linear(_) | LayerOp::Activation { .. } => {}
            }
        }
        for (p, t) in convs {
            self.conv(p, t)?;
        }
        for p in norms {
            self.batchnorm(p)?;
        }
        for p in spreads {
            self.minibatch_std(p.n as usize, p.c as usize, p.hw as usize, p.group as usize)?;
        }
        for p in ups {
            self.upsample(p)?;
        }
        for p in pools {
            self.pool(p)?;
        }
        for p in pixel_norms {
            self.pixel_norm(p)?;
        }
        match cfg.text_in_d {
            TextInD::Tile => {
                self.linear(n, cfg.text_dim, cfg.text_proj)?;
                self.concat(n, cfg.noise_dim, cfg.text_dim, 1)?;
                self.concat(n, cfg.top_channels(), cfg.text_proj, 16)?;
            }
            TextInD::Projection => {
                self.linear(n, cfg.text_dim, cfg.top_channels())?;
                self.concat(n, cfg.noise_dim, cfg.text_dim, 1)?;
                self.pool(crate::backend::PoolParams::global(n, cfg.top_channels(), 4))?;
                self.projection(n, cfg.top_channels(), 16)?;
            }
        }
        Ok(())
    }
}

/// Gradient check of one layer through the `Layer` trait (input and every parameter).
pub(super) fn layer_check(name: &str, layer: &mut dyn Layer<Cpu64>, input: Shape, rng: &mut Rng) -> Result<Vec<CheckResult>> {
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
    let dx = layer.backward(&be, &rt, Grads::ALL)?.context("the layer's input gradient")?.to_f64(&be)?;
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
    let mut spread = MinibatchStd::new(2);
    out.extend(layer_check("MinibatchStd(group 2)", &mut spread, Shape::new(4, 3, 2, 2), &mut rng)?);
    Ok(out)
}

/// A small model configuration for the whole-model checks: every block type, the
/// batchnorm layers and the text paths, at a size finite differences can afford.
pub fn small_config() -> ModelConfig {
    ModelConfig { size: 32, width: 4, noise_dim: 5, text_dim: 6, text_proj: 3, slope: 0.2, minibatch_std: 0, text_in_d: TextInD::Tile, progressive: false }
}

/// A small progressive configuration: three levels (4, 8 and 16 px) of 8, 4 and 2 channels.
pub fn small_progressive_config() -> ModelConfig {
    ModelConfig { size: 16, width: 2, progressive: true, ..small_config() }
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
    let cfg = small_config();
    let mut rng = Rng::new(5);
    let n = 3;
    let mut out = Vec::new();

    let text = generator_checks(&cfg, None, n, per_param, &mut rng, &mut out)?;
    discriminator_checks(&cfg, n, &text, per_param, &mut rng, &mut out)?;
    // The same with the minibatch standard deviation channel at the head: a batch of 4 in
    // two group columns of 2, so the gradient flows between the samples of each column.
    let spread = ModelConfig { minibatch_std: 2, ..cfg };
    let text4 = rand_vec(&mut rng, 4 * spread.text_dim);
    discriminator_checks(&spread, 4, &text4, per_param, &mut rng, &mut out)?;
    // The projection discriminator: the caption's embedding against the pooled features,
    // alone and with the minibatch standard deviation channel. Its parameters take a smaller
    // step: one entry of an early convolution's weight moves hundreds of pre-activations of
    // the LeakyReLU after it, and with the usual step of 1e-5 some of them crossed the kink
    // (the first convolutions' samples off by 0.4 to 14% on the streams tried, while the
    // image gradient through the same layers agreed to 2e-7; at 1e-7 those entries agree to
    // 2e-8 and every entry to 2e-6).
    let projection = ModelConfig { text_in_d: TextInD::Projection, ..cfg.clone() };
    discriminator_checks_h(&projection, n, &text, per_param, H_PROJECTION_PARAMS, &mut rng, &mut out)?;
    discriminator_checks_h(&ModelConfig { minibatch_std: 2, ..projection }, 4, &text4, per_param, H_PROJECTION_PARAMS, &mut rng, &mut out)?;
    // The progressive networks: mid-fade at the last level (both paths of G's output and of
    // D's input, the fade and the sums of their gradients), and at the first level.
    let prog = small_progressive_config();
    for (p, group, n) in [(Progress { level: 2, alpha: 0.3 }, 0, 3), (Progress { level: 0, alpha: 1.0 }, 2, 4), (Progress { level: 1, alpha: 1.0 }, 0, 3)] {
        let cfg = ModelConfig { minibatch_std: group, ..prog.clone() };
        let text = generator_checks(&cfg, Some(p), n, per_param, &mut rng, &mut out)?;
        discriminator_checks_at(&cfg, Some(p), n, &text, per_param, H_PROGRESSIVE, &mut rng, &mut out)?;
    }
    Ok(out)
}

/// The step of the progressive networks' finite differences, inputs and parameters alike:
/// they have no batchnorm, so every LeakyReLU sees its pre-activation unnormalised, and
/// with two to eight channels a step of 1e-4 or 1e-5 moves some of them across the kink
/// (the image gradient of D at level 1, stabilised, off by 0.67 on one draw, G's noise
/// gradient by 7e-4 at the last level mid-fade); at 1e-7 they agree.
const H_PROGRESSIVE: f64 = 1e-7;

/// The progressive D's image step: its image gradient is spread over every pixel, so at
/// 1e-7 the rounding of the loss shows (1e-4 off mid-fade), while at 1e-5 one
/// pre-activation of level 1 crosses its kink (0.37 off); at 3e-6 the worst is 3.5e-6.
const H_PROGRESSIVE_IMAGE: f64 = 3e-6;

/// Whole generator of `cfg` (at `progress` when progressive) at batch `n`, with the loss
/// `sum(image r)`: the noise and text inputs in full, and up to `per_param` entries of
/// every parameter; returns the text it drew.
fn generator_checks(cfg: &ModelConfig, progress: Option<Progress>, n: usize, per_param: usize, rng: &mut Rng, out: &mut Vec<CheckResult>) -> Result<Vec<f64>> {
    let be = Cpu64::new();
    let mut g = Generator::new(&be, cfg, rng)?;
    if let Some(p) = progress {
        g.set_progress(p)?;
    }
    let label = match progress {
        Some(p) => format!("progressive generator ({}px, width {}, at {})", cfg.size, cfg.width, p.describe()),
        None => format!("generator ({}px, width {})", cfg.size, cfg.width),
    };
    let noise = rand_vec(rng, n * cfg.noise_dim);
    let text = rand_vec(rng, n * cfg.text_dim);
    let img_shape = Shape::new(n, 3, g.side(), g.side());
    let r = rand_vec(rng, img_shape.len());
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
    let (dz, dt) = g.backward(&be, &rt, Grads::ALL)?.context("the generator's input gradients")?;
    let (dz, dt) = (dz.to_f64(&be)?, dt.to_f64(&be)?);
    let (h_input, h_params) = if progress.is_some() { (H_PROGRESSIVE, H_PROGRESSIVE) } else { (H_MODEL_INPUT, H) };
    out.push(check_all_h(&format!("{label} noise"), &noise, &dz, h_input, |v| Ok(g_loss(&mut g, v, &text)?.0))?);
    out.push(check_all_h(&format!("{label} text"), &text, &dt, h_input, |v| Ok(g_loss(&mut g, &noise, v)?.0))?);
    let count = g.params().len();
    for pi in 0..count {
        let (name, value, grad) = {
            let p = &g.params()[pi];
            (p.name.clone(), p.value.clone(), p.grad.clone())
        };
        let idx = sample_indices(value.len(), per_param, rng);
        let num = numeric_h(&value, &idx, h_params, |v| {
            be.upload_f64(&mut g.params_mut()[pi].value, v)?;
            Ok(g_loss(&mut g, &noise, &text)?.0)
        })?;
        be.upload_f64(&mut g.params_mut()[pi].value, &value)?;
        let ana: Vec<f64> = idx.iter().map(|&i| grad[i]).collect();
        out.push(compare(format!("{label} {name}"), &ana, &num));
    }

    Ok(text)
}

/// Whole discriminator of `cfg` at batch `n`, loss = BCE(D(x, t), 1) / 2 as in the D step:
/// the image and the text `text` in full, and up to `per_param` entries of every parameter.
fn discriminator_checks(cfg: &ModelConfig, n: usize, text: &[f64], per_param: usize, rng: &mut Rng, out: &mut Vec<CheckResult>) -> Result<()> {
    discriminator_checks_h(cfg, n, text, per_param, H, rng, out)
}

/// The step of the projection discriminator's parameter checks (see `model_checks`).
const H_PROJECTION_PARAMS: f64 = 1e-7;

/// `discriminator_checks` with the parameters' finite differences taken at step `h`.
fn discriminator_checks_h(cfg: &ModelConfig, n: usize, text: &[f64], per_param: usize, h: f64, rng: &mut Rng, out: &mut Vec<CheckResult>) -> Result<()> {
    discriminator_checks_at(cfg, None, n, text, per_param, h, rng, out)
}

/// `discriminator_checks_h` of a progressive discriminator at `progress`.
#[allow(clippy::too_many_arguments)]
fn discriminator_checks_at(
    cfg: &ModelConfig,
    progress: Option<Progress>,
    n: usize,
    text: &[f64],
    per_param: usize,
    h: f64,
    rng: &mut Rng,
    out: &mut Vec<CheckResult>,
) -> Result<()> {
    let be = Cpu64::new();
    let mut d = Discriminator::new(&be, cfg, rng)?;
    if let Some(p) = progress {
        d.set_progress(p)?;
    }
    let img_shape = Shape::new(n, 3, d.side(), d.side());
    let mut label = match cfg.minibatch_std {
        0 => format!("discriminator ({}px, width {}", cfg.size, cfg.width),
        g => format!("discriminator ({}px, width {}, minibatch std {g} of batch {n}", cfg.size, cfg.width),
    };
    label += if cfg.text_in_d == TextInD::Projection { ", projection" } else { "" };
    label += &progress.map_or(")".to_string(), |p| format!(", progressive at {})", p.describe()));
    let image = rand_vec(rng, img_shape.len());
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
    let (_, logits) = d_loss(&mut d, &image, text)?;
    let mut dl = be.alloc(n)?;
    let lb = {
        let mut b = be.alloc(n)?;
        be.upload_f64(&mut b, &logits)?;
        b
    };
    be.bce_with_logits_backward_input(&bce, &lb, &mut dl)?;
    let dlt = Tensor::zeros(&be, Shape::new(n, 1, 1, 1))?;
    dlt.set_f64(&be, &dl)?;
    let (di, dtx) = d.backward(&be, &dlt, DGrads::ALL)?;
    let (di, dtx) = (di.context("the image gradient")?.to_f64(&be)?, dtx.context("the text gradient")?.to_f64(&be)?);
    let h_input = if progress.is_some() { H_PROGRESSIVE_IMAGE } else { H_MODEL_INPUT };
    out.push(check_all_h(&format!("{label} image"), &image, &di, h_input, |v| Ok(d_loss(&mut d, v, text)?.0))?);
    out.push(check_all_h(&format!("{label} text"), text, &dtx, h_input, |v| Ok(d_loss(&mut d, &image, v)?.0))?);
    let count = d.params().len();
    for pi in 0..count {
        let (name, value, grad) = {
            let p = &d.params()[pi];
            (p.name.clone(), p.value.clone(), p.grad.clone())
        };
        let idx = sample_indices(value.len(), per_param, rng);
        let num = numeric_h(&value, &idx, h, |v| {
            be.upload_f64(&mut d.params_mut()[pi].value, v)?;
            Ok(d_loss(&mut d, &image, text)?.0)
        })?;
        be.upload_f64(&mut d.params_mut()[pi].value, &value)?;
        let ana: Vec<f64> = idx.iter().map(|&i| grad[i]).collect();
        out.push(compare(format!("{label} {name}"), &ana, &num));
    }
    Ok(())
}
