//! Progressive growing (Karras et al. 2018, ProGAN) for the text-conditioned task: the
//! bodies of `Generator` and `Discriminator` when `ModelConfig::progressive` is set.
//!
//! Both networks hold one block per resolution from 4x4 up to the final size, all
//! allocated from the start; `Progress` says which are in use. At level `s` (resolution
//! `4 * 2^s`) with fade `alpha`:
//!
//! - G: `z -> block 0 -> ... -> block s -> toRGB s`, and while `alpha < 1` the previous
//!   level's output `upsample(toRGB s-1(h))` is faded out: `rgb = (1 - alpha) old +
//!   alpha new`; then `tanh` (the DCGAN's output range, so every consumer of images sees
//!   values in [-1, 1]; ProGAN's toRGB is linear).
//! - D: `x -> fromRGB s -> block s -> ... -> block 1`, and while `alpha < 1` the previous
//!   level's input `fromRGB s-1(avgpool(x))` is faded out after block s; then the head
//!   at 4x4: the caption's projection tiled and joined (as in the DCGAN), the minibatch
//!   standard deviation when asked, a 3x3 and a 4x4 convolution and the logit.
//!
//! A G block is `upsample 2x, conv 3x3, LeakyReLU, pixel norm, conv 3x3, LeakyReLU, pixel
//! norm` (level 0: a 4x4 transposed convolution of the 1x1 input, then one 3x3); a D
//! block is `conv 3x3, LeakyReLU, conv 3x3, LeakyReLU, avgpool 2x`. Every convolution has
//! an equalized learning rate (`EqConv`: weights drawn N(0, 1), scaled by `gain /
//! sqrt(fan_in)` at run time; gain sqrt(2), 1 for toRGB and the logit).

use super::{ModelConfig, Progress};
use crate::backend::Backend;
use crate::nn::{ActKind, Activation, AvgPool, EqConv, Fade, Grads, Layer, Mode, PixelNorm, Sequential, Shape, Tensor, Upsample};
use crate::rng::Rng;
use anyhow::{bail, Context, Result};

/// Negative slope of every LeakyReLU of the progressive networks (ProGAN's).
pub const SLOPE: f32 = 0.2;

const SQRT2: f32 = std::f32::consts::SQRT_2;

fn lrelu<B: Backend>() -> Box<dyn Layer<B>> {
    Box::new(Activation::new(ActKind::LeakyRelu(SLOPE)))
}

/// A 3x3 convolution with padding 1 and an equalized learning rate.
fn conv3<B: Backend>(be: &B, name: &str, c_in: usize, c_out: usize, rng: &mut Rng) -> Result<Box<dyn Layer<B>>> {
    Ok(Box::new(EqConv::new(be, name, false, c_in, c_out, 3, 1, 1, true, SQRT2, c_in * 9, rng)?))
}

/// A 1x1 convolution with an equalized learning rate.
fn conv1<B: Backend>(be: &B, name: &str, c_in: usize, c_out: usize, gain: f32, rng: &mut Rng) -> Result<Box<dyn Layer<B>>> {
    Ok(Box::new(EqConv::new(be, name, false, c_in, c_out, 1, 1, 0, true, gain, c_in, rng)?))
}

/// The name of the next layer of `layers` under `prefix` (PyTorch's `Sequential` index).
fn name<B: Backend>(prefix: &str, layers: &[Box<dyn Layer<B>>]) -> String {
    format!("{prefix}.{}", super::next_index(layers))
}

/// Where a progressive network stands, and where its last forward pass stood (which its
/// backward pass retraces): the one level cursor both networks keep.
struct Cursor {
    levels: usize,
    now: Progress,
    last: Option<Progress>,
}

impl Cursor {
    /// At the last level, stabilised.
    fn new(levels: usize) -> Self {
        Cursor { levels, now: Progress { level: levels - 1, alpha: 1.0 }, last: None }
    }

    /// Moves to `p`, checked against the model's levels.
    fn set(&mut self, p: Progress) -> Result<()> {
        if p.level >= self.levels {
            bail!("level {} is past the last level {} of this model", p.level, self.levels - 1);
        }
        if !(p.alpha.is_finite() && (0.0..=1.0).contains(&p.alpha)) {
            bail!("fade {} is not between 0 and 1", p.alpha);
        }
        self.now = p;
        Ok(())
    }

    /// Records that a forward pass ran at the current progress.
    fn ran(&mut self) {
        self.last = Some(self.now);
    }

    /// The progress of the last forward pass, for `network`'s backward pass.
    fn last(&self, network: &str) -> Result<Progress> {
        self.last.with_context(|| format!("the progressive {network}: backward called before forward"))
    }
}

/// The progressive generator's body (after the noise and the caption are joined).
pub struct ProgGenerator<B: Backend> {
    pub blocks: Vec<Sequential<B>>,
    pub to_rgb: Vec<Sequential<B>>,
    up: Upsample<B>,
    fade: Fade<B>,
    sum: Fade<B>,
    tanh: Activation<B>,
    cursor: Cursor,
}

impl<B: Backend> ProgGenerator<B> {
    pub fn new(be: &B, cfg: &ModelConfig, rng: &mut Rng, prefix: &str) -> Result<Self> {
        let (mut blocks, mut to_rgb) = (Vec::new(), Vec::new());
        let c_in = cfg.noise_dim + cfg.text_dim;
        for l in 0..cfg.levels() {
            let p = format!("{prefix}.block{l}");
            let ch = cfg.level_channels(l);
            let mut b: Vec<Box<dyn Layer<B>>> = Vec::new();
            if l == 0 {
                // The 1x1 input to 4x4: each output value reads every input channel once.
                b.push(Box::new(EqConv::new(be, &name(&p, &b), true, c_in, ch, 4, 1, 0, true, SQRT2, c_in, rng)?));
            } else {
                b.push(Box::new(Upsample::new(2)));
                b.push(conv3(be, &name(&p, &b), cfg.level_channels(l - 1), ch, rng)?);
            }
            b.push(lrelu());
            b.push(Box::new(PixelNorm::new()));
            b.push(conv3(be, &name(&p, &b), ch, ch, rng)?);
            b.push(lrelu());
            b.push(Box::new(PixelNorm::new()));
            blocks.push(Sequential::new(b));
            let p = format!("{prefix}.torgb{l}");
            to_rgb.push(Sequential::new(vec![conv1(be, &format!("{p}.0"), ch, 3, 1.0, rng)?]));
        }
        Ok(ProgGenerator {
            blocks,
            to_rgb,
            up: Upsample::new(2),
            fade: Fade::new(),
            sum: Fade::new(),
            tanh: Activation::new(ActKind::Tanh),
            cursor: Cursor::new(cfg.levels()),
        })
    }

    pub fn progress(&self) -> Progress {
        self.cursor.now
    }

    pub fn set_progress(&mut self, p: Progress) -> Result<()> {
        self.cursor.set(p)
    }

    /// The joined input `[n, noise + text, 1, 1]` -> images at the current level's side.
    pub fn forward(&mut self, be: &B, z: &Tensor<B>, mode: Mode) -> Result<Tensor<B>> {
        let Progress { level: s, alpha: a } = self.cursor.now;
        let mut h = z.clone();
        for b in &mut self.blocks[..s] {
            h = b.forward(be, &h, mode)?;
        }
        let new = self.blocks[s].forward(be, &h, mode)?;
        let new = self.to_rgb[s].forward(be, &new, mode)?;
        let rgb = if s > 0 && a < 1.0 {
            let old = self.to_rgb[s - 1].forward(be, &h, mode)?;
            let old = self.up.forward(be, &old, mode)?;
            self.fade.forward(be, &old, &new, 1.0 - a, a)?
        } else {
            new
        };
        self.cursor.ran();
        self.tanh.forward(be, &rgb, mode)
    }

    /// The input's gradient when `want.input`; parameter gradients of the layers in use
    /// accumulate when `want.params`.
    pub fn backward(&mut self, be: &B, dy: &Tensor<B>, want: Grads) -> Result<Option<Tensor<B>>> {
        let Progress { level: s, alpha: a } = self.cursor.last("generator")?;
        let inner = Grads { input: true, params: want.params };
        let drgb = self.tanh.backward(be, dy, inner)?.context("tanh's input gradient")?;
        let (dold, dnew) = if s > 0 && a < 1.0 {
            let (o, n) = self.fade.backward(be, &drgb)?;
            (Some(o), n)
        } else {
            (None, drgb)
        };
        let dnew = self.to_rgb[s].backward(be, &dnew, inner)?.context("toRGB's input gradient")?;
        let mut dh = self.blocks[s].backward(be, &dnew, if s == 0 { want } else { inner })?;
        if let Some(dold) = dold {
            let d = self.up.backward(be, &dold, Grads::FROZEN)?.context("the upsampling's input gradient")?;
            let d = self.to_rgb[s - 1].backward(be, &d, inner)?.context("the old toRGB's input gradient")?;
            let dnew = dh.context("the new block's input gradient")?;
            dh = Some(self.sum.forward(be, &dnew, &d, 1.0, 1.0)?);
        }
        for l in (0..s).rev() {
            let Some(g) = dh else { return Ok(None) };
            dh = self.blocks[l].backward(be, &g, if l == 0 { want } else { inner })?;
        }
        Ok(dh)
    }

    pub fn parts(&self) -> Vec<&Sequential<B>> {
        self.blocks.iter().chain(&self.to_rgb).collect()
    }
    pub fn parts_mut(&mut self) -> Vec<&mut Sequential<B>> {
        self.blocks.iter_mut().chain(self.to_rgb.iter_mut()).collect()
    }

    /// The rows of the layer table at the current progress: the blocks in use, the new
    /// toRGB and, while fading, the old toRGB and its upsampling.
    pub fn layers<'a>(&'a self, prefix: &str, rows: &mut Vec<(String, &'a dyn Layer<B>, Shape)>, input: Shape) {
        let Progress { level: s, alpha: a } = self.cursor.now;
        let mut h = input;
        for (l, b) in self.blocks[..s].iter().enumerate() {
            h = super::named_rows(rows, &format!("{prefix}.block{l}"), b, h);
        }
        let new = super::named_rows(rows, &format!("{prefix}.block{s}"), &self.blocks[s], h);
        let rgb = super::named_rows(rows, &format!("{prefix}.torgb{s}"), &self.to_rgb[s], new);
        if s > 0 && a < 1.0 {
            let old = super::named_rows(rows, &format!("{prefix}.torgb{}", s - 1), &self.to_rgb[s - 1], h);
            rows.push((format!("{prefix}.fade.upsample"), &self.up as &dyn Layer<B>, old));
        }
        rows.push((format!("{prefix}.tanh"), &self.tanh as &dyn Layer<B>, rgb));
    }
}

/// The progressive discriminator's body: the image to its 4x4 features (the head, the
/// caption's path and the logit are `Discriminator`'s).
pub struct ProgDiscriminator<B: Backend> {
    pub from_rgb: Vec<Sequential<B>>,
    /// `blocks[l]` takes level `l`'s features to level `l - 1`'s; `blocks[0]` is empty.
    pub blocks: Vec<Sequential<B>>,
    pool: AvgPool<B>,
    fade: Fade<B>,
    sum: Fade<B>,
    cursor: Cursor,
}

impl<B: Backend> ProgDiscriminator<B> {
    pub fn new(be: &B, cfg: &ModelConfig, rng: &mut Rng) -> Result<Self> {
        let (mut from_rgb, mut blocks) = (Vec::new(), Vec::new());
        for l in 0..cfg.levels() {
            let ch = cfg.level_channels(l);
            from_rgb.push(Sequential::new(vec![conv1(be, &format!("discriminator.fromrgb{l}.0"), 3, ch, SQRT2, rng)?, lrelu()]));
            let mut b: Vec<Box<dyn Layer<B>>> = Vec::new();
            if l > 0 {
                let p = format!("discriminator.block{l}");
                b.push(conv3(be, &name(&p, &b), ch, ch, rng)?);
                b.push(lrelu());
                b.push(conv3(be, &name(&p, &b), ch, cfg.level_channels(l - 1), rng)?);
                b.push(lrelu());
                b.push(Box::new(AvgPool::new(2)));
            }
            blocks.push(Sequential::new(b));
        }
        Ok(ProgDiscriminator { from_rgb, blocks, pool: AvgPool::new(2), fade: Fade::new(), sum: Fade::new(), cursor: Cursor::new(cfg.levels()) })
    }

    pub fn progress(&self) -> Progress {
        self.cursor.now
    }

    pub fn set_progress(&mut self, p: Progress) -> Result<()> {
        self.cursor.set(p)
    }

    /// Images at the current level's side -> features `[n, level 0 channels, 4, 4]`.
    pub fn forward(&mut self, be: &B, x: &Tensor<B>, mode: Mode) -> Result<Tensor<B>> {
        let Progress { level: s, alpha: a } = self.cursor.now;
        let new = self.from_rgb[s].forward(be, x, mode)?;
        let mut h = self.blocks[s].forward(be, &new, mode)?;
        if s > 0 && a < 1.0 {
            let low = self.pool.forward(be, x, mode)?;
            let old = self.from_rgb[s - 1].forward(be, &low, mode)?;
            h = self.fade.forward(be, &old, &h, 1.0 - a, a)?;
        }
        for b in self.blocks[1..s.max(1)].iter_mut().rev() {
            h = b.forward(be, &h, mode)?;
        }
        self.cursor.ran();
        Ok(h)
    }

    /// The image's gradient when `want.input`; parameter gradients of the layers in use
    /// accumulate when `want.params`.
    pub fn backward(&mut self, be: &B, dfeatures: &Tensor<B>, want: Grads) -> Result<Option<Tensor<B>>> {
        let Progress { level: s, alpha: a } = self.cursor.last("discriminator")?;
        let inner = Grads { input: true, params: want.params };
        let mut g = dfeatures.clone();
        for b in &mut self.blocks[1..s.max(1)] {
            g = b.backward(be, &g, inner)?.context("a block's input gradient")?;
        }
        let (dold, dnew) = if s > 0 && a < 1.0 {
            let (o, n) = self.fade.backward(be, &g)?;
            (Some(o), n)
        } else {
            (None, g)
        };
        let dnew = self.blocks[s].backward(be, &dnew, inner)?.context("the new block's input gradient")?;
        let dx = self.from_rgb[s].backward(be, &dnew, want)?;
        let Some(dold) = dold else { return Ok(dx) };
        let dlow = self.from_rgb[s - 1].backward(be, &dold, want)?;
        match (dx, dlow) {
            (Some(dx), Some(dlow)) => {
                let d = self.pool.backward(be, &dlow, Grads::FROZEN)?.context("the pooling's input gradient")?;
                Ok(Some(self.sum.forward(be, &dx, &d, 1.0, 1.0)?))
            }
            _ => Ok(None),
        }
    }

    pub fn parts(&self) -> Vec<&Sequential<B>> {
        self.from_rgb.iter().chain(&self.blocks).collect()
    }
    pub fn parts_mut(&mut self) -> Vec<&mut Sequential<B>> {
        self.from_rgb.iter_mut().chain(self.blocks.iter_mut()).collect()
    }

    /// The rows of the layer table at the current progress; returns the features' shape.
    pub fn layers<'a>(&'a self, rows: &mut Vec<(String, &'a dyn Layer<B>, Shape)>, input: Shape) -> Shape {
        let Progress { level: s, alpha: a } = self.cursor.now;
        let new = super::named_rows(rows, &format!("discriminator.fromrgb{s}"), &self.from_rgb[s], input);
        let mut h = super::named_rows(rows, &format!("discriminator.block{s}"), &self.blocks[s], new);
        if s > 0 && a < 1.0 {
            rows.push(("discriminator.fade.pool".to_string(), &self.pool as &dyn Layer<B>, input));
            super::named_rows(rows, &format!("discriminator.fromrgb{}", s - 1), &self.from_rgb[s - 1], self.pool.out_shape(input));
        }
        for l in (1..s.max(1)).rev() {
            h = super::named_rows(rows, &format!("discriminator.block{l}"), &self.blocks[l], h);
        }
        h
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cursor_refuses_a_level_or_fade_outside_the_model_and_a_backward_before_forward() {
        let mut c = Cursor::new(4);
        assert_eq!(c.now, Progress { level: 3, alpha: 1.0 });
        let e = c.last("generator").unwrap_err().to_string();
        assert!(e.contains("progressive generator: backward called before forward"), "{e}");
        for (level, alpha, why) in [(4, 1.0, "level 4 is past the last level 3"), (0, 1.5, "fade 1.5"), (1, -0.1, "fade -0.1"), (1, f32::NAN, "fade NaN")] {
            let e = c.set(Progress { level, alpha }).unwrap_err().to_string();
            assert!(e.contains(why), "{e}");
            assert_eq!(c.now, Progress { level: 3, alpha: 1.0 }, "a refused move leaves the cursor where it was");
        }
        let p = Progress { level: 2, alpha: 0.25 };
        c.set(p).unwrap();
        assert_eq!(c.now, p);
        c.ran();
        c.set(Progress { level: 3, alpha: 0.5 }).unwrap();
        assert_eq!(c.last("discriminator").unwrap(), p, "backward retraces the last forward pass, not the current progress");
    }
}
