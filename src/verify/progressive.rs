//! The layers of progressive growing (`nn::progressive`) by finite differences on the CPU
//! f64 twin: each layer through the `Layer` trait, then a small chain that uses all of them
//! the way a growing generator and discriminator do (a block, its toRGB, the old toRGB
//! upsampled, the fade of the two, the pool), and the freeze of an equalised convolution.

use super::gradcheck::{compare, dot, numeric, rand_vec, CheckResult};
use super::model::layer_check;
use crate::backend::cpu::Cpu64;
use crate::backend::prelude::*;
use crate::backend::FadeParams;
use crate::nn::{ActKind, Activation, AvgPool, Conv, EqConv, Fade, Grads, Layer, Mode, Param, PixelNorm, Shape, Tensor, Upsample};
use crate::rng::Rng;
use anyhow::{Context, Result};

/// Every progressive layer through the `Layer` trait, the chain, the freeze and the
/// equalised convolution against a plain one with the scaled weight.
pub fn layer_checks() -> Result<Vec<CheckResult>> {
    let be = Cpu64::new();
    let mut rng = Rng::new(29);
    let mut out = Vec::new();
    let mut up = Upsample::new(2);
    out.extend(layer_check("Upsample(x2)", &mut up, Shape::new(2, 3, 3, 2), &mut rng)?);
    let mut pool = AvgPool::new(2);
    out.extend(layer_check("AvgPool2d(k2)", &mut pool, Shape::new(3, 2, 4, 6), &mut rng)?);
    let mut norm = PixelNorm::new();
    out.extend(layer_check("PixelNorm", &mut norm, Shape::new(2, 5, 2, 3), &mut rng)?);
    let mut conv = EqConv::new(&be, "eqconv", false, 3, 4, 3, 1, 1, true, 2f32.sqrt(), 27, &mut rng)?;
    out.extend(layer_check("EqConv2d(3,4,k3s1p1)", &mut conv, Shape::new(2, 3, 4, 5), &mut rng)?);
    let mut convt = EqConv::new(&be, "eqconvt", true, 5, 3, 4, 1, 0, true, 2f32.sqrt() / 4.0, 5, &mut rng)?;
    out.extend(layer_check("EqConvTranspose2d(5,3,k4s1p0)", &mut convt, Shape::new(2, 5, 1, 1), &mut rng)?);
    let mut to_rgb = EqConv::new(&be, "to_rgb", false, 4, 3, 1, 1, 0, false, 1.0, 4, &mut rng)?;
    out.extend(layer_check("EqConv2d(4,3,k1) no bias", &mut to_rgb, Shape::new(3, 4, 2, 2), &mut rng)?);
    out.extend(chain_checks(&mut rng)?);
    out.push(eqconv_freeze_check(&mut rng)?);
    out.push(eqconv_is_the_scaled_conv(&mut rng)?);
    Ok(out)
}

/// A grown block and its fade, on `[2, 3, 3, 3]`:
/// `h = Upsample(PixelNorm(LeakyReLU(EqConv3x3(x))))` (ProGAN's block, 3x3 to 6x6), the
/// new path `EqConv1x1(h)`, the old path `Upsample(EqConv1x1'(PixelNorm(..)))` (the previous
/// resolution's toRGB, upsampled), `Fade(new, old, 0.3, 0.7)`, then `AvgPool(2)` (the
/// discriminator's downsampling). The two gradients reaching the shared activation are
/// added by `fade_backward_input`'s forward twin, `fade_forward` with weights 1 and 1.
struct Chain {
    conv: EqConv<Cpu64>,
    act: Activation<Cpu64>,
    norm: PixelNorm<Cpu64>,
    up_new: Upsample<Cpu64>,
    rgb_new: EqConv<Cpu64>,
    rgb_old: EqConv<Cpu64>,
    up_old: Upsample<Cpu64>,
    fade: Fade<Cpu64>,
    pool: AvgPool<Cpu64>,
}

const ALPHA: f32 = 0.3;

impl Chain {
    fn new(be: &Cpu64, rng: &mut Rng) -> Result<Chain> {
        let gain = 2f32.sqrt();
        Ok(Chain {
            conv: EqConv::new(be, "block.conv", false, 3, 4, 3, 1, 1, true, gain, 27, rng)?,
            act: Activation::new(ActKind::LeakyRelu(0.2)),
            norm: PixelNorm::new(),
            up_new: Upsample::new(2),
            rgb_new: EqConv::new(be, "to_rgb.new", false, 4, 3, 1, 1, 0, true, 1.0, 4, rng)?,
            rgb_old: EqConv::new(be, "to_rgb.old", false, 4, 3, 1, 1, 0, true, 1.0, 4, rng)?,
            up_old: Upsample::new(2),
            fade: Fade::new(),
            pool: AvgPool::new(2),
        })
    }
    fn params_mut(&mut self) -> Vec<&mut Param<Cpu64>> {
        let mut v = self.conv.params_mut();
        v.extend(self.rgb_new.params_mut());
        v.extend(self.rgb_old.params_mut());
        v
    }
    fn forward(&mut self, be: &Cpu64, x: &Tensor<Cpu64>) -> Result<Tensor<Cpu64>> {
        let h = self.conv.forward(be, x, Mode::Train)?;
        let h = self.act.forward(be, &h, Mode::Train)?;
        let h = self.norm.forward(be, &h, Mode::Train)?;
        let new = self.up_new.forward(be, &h, Mode::Train)?;
        let new = self.rgb_new.forward(be, &new, Mode::Train)?;
        let old = self.rgb_old.forward(be, &h, Mode::Train)?;
        let old = self.up_old.forward(be, &old, Mode::Train)?;
        let y = self.fade.forward(be, &new, &old, ALPHA, 1.0 - ALPHA)?;
        self.pool.forward(be, &y, Mode::Train)
    }
    fn backward(&mut self, be: &Cpu64, dz: &Tensor<Cpu64>) -> Result<Tensor<Cpu64>> {
        let dy = self.pool.backward(be, dz, Grads::ALL)?.context("pool dx")?;
        let (dnew, dold) = self.fade.backward(be, &dy)?;
        let dnew = self.rgb_new.backward(be, &dnew, Grads::ALL)?.context("to_rgb.new dx")?;
        let dh_new = self.up_new.backward(be, &dnew, Grads::ALL)?.context("upsample dx")?;
        let dold = self.up_old.backward(be, &dold, Grads::ALL)?.context("upsample dx")?;
        let dh_old = self.rgb_old.backward(be, &dold, Grads::ALL)?.context("to_rgb.old dx")?;
        // The activation feeds both paths: its gradient is the sum of the two.
        let dh = Tensor::zeros(be, dh_new.shape)?;
        be.fade_forward(&FadeParams::new(dh.shape.len(), 1.0, 1.0), &dh_new.buf.borrow(), &dh_old.buf.borrow(), &mut dh.buf.borrow_mut())?;
        let dh = self.norm.backward(be, &dh, Grads::ALL)?.context("pixel_norm dx")?;
        let dh = self.act.backward(be, &dh, Grads::ALL)?.context("activation dx")?;
        self.conv.backward(be, &dh, Grads::ALL)?.context("conv dx")
    }
}

/// Finite differences of the chain's loss `<chain(x), r>`: the input and every entry of every
/// parameter (three stored weights and three biases).
fn chain_checks(rng: &mut Rng) -> Result<Vec<CheckResult>> {
    let be = Cpu64::new();
    let mut chain = Chain::new(&be, rng)?;
    for p in chain.params_mut() {
        let v = rand_vec(rng, p.len());
        be.upload_f64(&mut p.value, &v)?;
        be.fill(&mut p.grad, 0.0)?;
    }
    let input = Shape::new(2, 3, 3, 3);
    let x = rand_vec(rng, input.len());
    let xt = Tensor::zeros(&be, input)?;
    xt.set_f64(&be, &x)?;
    let out_shape = chain.forward(&be, &xt)?.shape;
    let r = rand_vec(rng, out_shape.len());
    let rt = Tensor::zeros(&be, out_shape)?;
    rt.set_f64(&be, &r)?;
    let dx = chain.backward(&be, &rt)?.to_f64(&be)?;
    let loss = |chain: &mut Chain, x: &[f64]| -> Result<f64> {
        let t = Tensor::zeros(&be, input)?;
        t.set_f64(&be, x)?;
        Ok(dot(&chain.forward(&be, &t)?.to_f64(&be)?, &r))
    };
    let mut out = Vec::new();
    let idx: Vec<usize> = (0..x.len()).collect();
    out.push(compare("progressive chain input".into(), &dx, &numeric(&x, &idx, |v| loss(&mut chain, v))?));
    let count = chain.params_mut().len();
    for pi in 0..count {
        let (name, value, grad) = {
            let p = &chain.params_mut()[pi];
            (p.name.clone(), p.value.clone(), p.grad.clone())
        };
        let idx: Vec<usize> = (0..value.len()).collect();
        let num = numeric(&value, &idx, |v| {
            be.upload_f64(&mut chain.params_mut()[pi].value, v)?;
            loss(&mut chain, &x)
        })?;
        be.upload_f64(&mut chain.params_mut()[pi].value, &value)?;
        out.push(compare(format!("progressive chain {name}"), &grad, &num));
    }
    Ok(out)
}

/// `Grads { input: true, params: false }` through an `EqConv`: the stored weight's and the
/// bias's gradients keep their values bit for bit, and the input gradient is the one of
/// `Grads::ALL`. Passes only when both hold exactly.
pub fn eqconv_freeze_check(rng: &mut Rng) -> Result<CheckResult> {
    freeze_check_with(rng, Grads::FROZEN)
}

/// The freeze check with the backward pass asked for `want` (the negative control asks for
/// the parameters' gradients, which must fail it).
fn freeze_check_with(rng: &mut Rng, want: Grads) -> Result<CheckResult> {
    let be = Cpu64::new();
    let mut conv = EqConv::new(&be, "frozen", false, 3, 4, 3, 1, 1, true, 2f32.sqrt(), 27, rng)?;
    let input = Shape::new(2, 3, 4, 4);
    let xt = Tensor::zeros(&be, input)?;
    xt.set_f64(&be, &rand_vec(rng, input.len()))?;
    let dyt = Tensor::zeros(&be, conv.out_shape(input))?;
    dyt.set_f64(&be, &rand_vec(rng, dyt.shape.len()))?;
    let mut before = Vec::new();
    for p in conv.params_mut() {
        let g = rand_vec(rng, p.len());
        be.upload_f64(&mut p.grad, &g)?;
        before.push(g);
    }
    conv.forward(&be, &xt, Mode::Train)?;
    let dx_frozen = conv.backward(&be, &dyt, want)?.context("a frozen EqConv hands back dx")?.to_f64(&be)?;
    let mut err = 0.0f64;
    let mut entries = 0;
    for (p, b) in conv.params().iter().zip(&before) {
        err = err.max(p.grad.iter().zip(b).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max));
        entries += p.len();
    }
    let dx_all = conv.backward(&be, &dyt, Grads::ALL)?.context("dx")?.to_f64(&be)?;
    err = err.max(dx_frozen.iter().zip(&dx_all).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max));
    // Exact: any change at all fails.
    let max_rel_err = if err == 0.0 { 0.0 } else { f64::INFINITY };
    Ok(CheckResult { name: "EqConv frozen: stored gradients untouched, dx as unfrozen".into(), max_rel_err, entries: entries + dx_all.len() })
}

/// The equalised convolution's forward pass is the plain convolution with the weight
/// `c * weight`, `c = gain / sqrt(fan_in)`.
fn eqconv_is_the_scaled_conv(rng: &mut Rng) -> Result<CheckResult> {
    let be = Cpu64::new();
    let mut eq = EqConv::new(&be, "eq", false, 3, 5, 3, 2, 1, true, 2f32.sqrt(), 27, rng)?;
    let mut plain = Conv::new(&be, "plain", false, 3, 5, 3, 2, 1, true, rng)?;
    let (w, b) = (rand_vec(rng, eq.weight.len()), rand_vec(rng, 5));
    be.upload_f64(&mut eq.weight.value, &w)?;
    be.upload_f64(&mut eq.params_mut()[1].value, &b)?;
    let c = eq.runtime_scale() as f64;
    let scaled: Vec<f64> = w.iter().map(|v| c * v).collect();
    be.upload_f64(&mut plain.weight.value, &scaled)?;
    be.upload_f64(&mut plain.params_mut()[1].value, &b)?;
    let input = Shape::new(2, 3, 7, 6);
    let xt = Tensor::zeros(&be, input)?;
    xt.set_f64(&be, &rand_vec(rng, input.len()))?;
    let want = plain.forward(&be, &xt, Mode::Train)?.to_f64(&be)?;
    let got = eq.forward(&be, &xt, Mode::Train)?.to_f64(&be)?;
    Ok(compare("EqConv forward = Conv with weight gain/sqrt(fan_in) * weight".into(), &got, &want))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_freeze_check_fails_when_the_stored_gradients_are_written() {
        let mut rng = Rng::new(3);
        assert!(eqconv_freeze_check(&mut rng).unwrap().passed());
        assert!(!freeze_check_with(&mut rng, Grads::ALL).unwrap().passed(), "a backward that writes the stored gradients must fail the freeze check");
    }

    #[test]
    fn every_progressive_layer_check_passes() {
        let failed: Vec<_> = layer_checks().unwrap().into_iter().filter(|c| !c.passed()).collect();
        assert!(failed.is_empty(), "{failed:#?}");
    }
}
