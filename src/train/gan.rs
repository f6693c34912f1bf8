//! One training iteration of the source article's GAN, on any backend.
//!
//! D step: `loss_D = (BCE(D(x, t), 1) + (1 - W) BCE(D(G(z, t), t), 0) + W BCE(D(x, t'), 0)) / 2`
//! (W = `matching_aware`, 0 by default, which is the article's loss), then Adam on D.
//! G step: D is frozen (its backward asked for the image gradient only, `DGrads::G_STEP`)
//! and G learns through it with flipped labels, `loss_G = BCE(D(G(z, t), t), 1)`, then
//! Adam on G. The fake batch is
//! computed once per iteration and reused by both steps.
//!
//! With `Hyper::mode_seeking` = M > 0 (`train --mode-seeking`, MSGAN), the fake batch's
//! second half is drawn for the first half's captions (image `i + n/2` shares image `i`'s
//! caption, with other noise), D sees the fake batch with those captions in both steps, and
//! the G loss gains `M / (r + eps)`, `r` the mean image distance of those pairs per unit of
//! noise distance (the `mode_seeking` op): G is paid to let the noise change the image.
//!
//! With `Gan::augment` set (`train --augment`), D sees every image through the `augment` op
//! (DiffAugment): the real batch (in the real and the mismatched terms), the fake batch of
//! the D step, and the fake batch of the G step, whose gradient flows back through the
//! augmentation into G. A batch whose parameters are all the identity skips the op.

use super::augment::{all_identity, AugmentDraws};
use crate::backend::{AdamParams, AugmentParams, Backend, BceParams, ModeSeekingParams, MODE_SEEKING_EPS};
use crate::model::{DGrads, Discriminator, Generator, ModelConfig, Module, Progress};
use crate::nn::{AvgPool, Fade, Grads, Layer, Mode, Param, Shape, Tensor, Upsample};
use crate::rng::Rng;
use anyhow::{ensure, Context, Result};
use serde::{Deserialize, Serialize};

/// Optimiser and loss settings; saved with every checkpoint.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Hyper {
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    /// Weight of the mismatched-caption term (Reed et al.'s GAN-CLS); 0 = the article.
    pub matching_aware: f32,
    /// Weight of the mode-seeking term (MSGAN) in the G loss; 0 = the article.
    #[serde(default)]
    pub mode_seeking: f32,
}

impl Default for Hyper {
    fn default() -> Self {
        Hyper { lr: 2e-4, beta1: 0.5, beta2: 0.999, eps: 1e-8, matching_aware: 0.0, mode_seeking: 0.0 }
    }
}

impl Hyper {
    /// Refuses settings that cannot train: a learning rate that is not a positive number,
    /// Adam betas outside [0, 1) (a beta of 1 divides by zero in the bias correction), and
    /// a mismatched-caption weight outside [0, 1] (above 1 the fake term's weight 1 - W
    /// turns negative). Each message names the flag.
    pub fn check(&self) -> Result<()> {
        ensure!(self.lr.is_finite() && self.lr > 0.0, "--lr {} must be a positive number (the article uses 2e-4)", self.lr);
        for (flag, b) in [("--beta1", self.beta1), ("--beta2", self.beta2)] {
            ensure!((0.0..1.0).contains(&b), "{flag} {b} must be at least 0 and below 1");
        }
        ensure!(self.eps.is_finite() && self.eps > 0.0, "Adam's epsilon {} must be a positive number", self.eps);
        ensure!((0.0..=1.0).contains(&self.matching_aware), "--matching-aware {} must be between 0 and 1", self.matching_aware);
        ensure!(
            self.mode_seeking.is_finite() && (0.0..=100.0).contains(&self.mode_seeking),
            "--mode-seeking {} must be between 0 and 100 (MSGAN uses 1; 0 is off)",
            self.mode_seeking
        );
        Ok(())
    }
}

/// Host-side inputs of one iteration, NCHW f32.
pub struct StepInputs<'a> {
    /// `n * 3 * size * size`, in [-1, 1].
    pub images: &'a [f32],
    /// `n * text_dim`.
    pub texts: &'a [f32],
    /// `n * noise_dim`, standard normal.
    pub noise: &'a [f32],
    /// `n * text_dim` captions that do not match the images (only read when W > 0).
    pub mismatched: Option<&'a [f32]>,
}

/// What one iteration reports (read back from the device once, for logging).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StepStats {
    pub loss_d: f32,
    pub loss_g: f32,
    /// Mean D(x) on the real batch (probability).
    pub d_real: f32,
    /// Mean D(G(z)) on the fake batch in the D step.
    pub d_fake: f32,
    /// Mean sign of D's logits on the (augmented) real batch, ADA's `r_t` of one iteration;
    /// measured only while `Gan::augment` is set (0 otherwise).
    #[serde(default)]
    pub real_sign: f32,
}

impl StepStats {
    pub fn is_finite(&self) -> bool {
        self.loss_d.is_finite() && self.loss_g.is_finite()
    }
}

/// Device buffers for one batch size (and, in a progressive model, one level), allocated
/// once.
struct Io<B: Backend> {
    n: usize,
    /// The side D reads at (the model's size, or a progressive model's level's).
    side: usize,
    /// The real batch at the model's size, as uploaded.
    images: Tensor<B>,
    /// A progressive model's real batch at its level (`Gan::real_at_level`).
    resample: Option<Resample<B>>,
    texts: Tensor<B>,
    noise: Tensor<B>,
    mismatched: Tensor<B>,
    /// The captions of the fake batch with `mode_seeking`: the first half's, twice.
    fake_texts: Tensor<B>,
    /// One over the mean |difference| of the two halves' noise, with `mode_seeking`.
    inv_dz: f32,
    /// `[term, r]` of the mode-seeking term.
    loss_ms: B::Buf,
    dlogits: Tensor<B>,
    /// `[scale * mean loss, mean sigmoid]` of each loss term.
    loss_real: B::Buf,
    loss_fake: B::Buf,
    loss_mismatch: B::Buf,
    loss_g: B::Buf,
    /// The augmented real and fake batches, the gradient of the fake batch through the
    /// augmentation, and the three parameter buffers (`augment::AugmentDraws`).
    aug_real: Tensor<B>,
    aug_fake: Tensor<B>,
    dfake: Tensor<B>,
    aug_params: [B::Buf; 3],
    /// `StepStats::real_sign` of the last D step.
    real_sign: f32,
}

/// How a progressive model's real images reach its level, as ProGAN does it: the batch
/// average-pooled from the model's size to the level's side and, while the level fades in,
/// faded from its own 2x-pooled and upsampled copy (`(1 - alpha) up(pool(x)) + alpha x`),
/// so the reals change as smoothly as the fakes do.
struct Resample<B: Backend> {
    down: AvgPool<B>,
    half: AvgPool<B>,
    up: Upsample<B>,
    mix: Fade<B>,
}

pub struct Gan<B: Backend> {
    pub cfg: ModelConfig,
    pub hp: Hyper,
    pub g: Generator<B>,
    pub d: Discriminator<B>,
    /// Optimizer steps taken by each network.
    pub step: u64,
    /// The step count when Adam's state was last cleared (`reset_adam`, `train --adam-reset
    /// phase`); Adam's t, for its bias correction, is `step - adam_since`. 0: never.
    pub adam_since: u64,
    /// The augmentation of the next iteration (`train --augment`); `None`: none.
    pub augment: Option<AugmentDraws>,
    /// The moving average of G's weights (`train --ema-half-life`, `train/ema.rs`), with
    /// batchnorm statistics of its own; `None` when off.
    pub g_ema: Option<Generator<B>>,
    /// Its half-life schedule (`Some` exactly when `g_ema` is).
    pub ema: Option<super::ema::EmaSchedule>,
    /// Whether `g_ema`'s batchnorm statistics were recomputed since its last update.
    pub(super) ema_stats_fresh: bool,
    /// What `draw` draws with.
    pub drawing: super::ema::Drawing,
    /// Real images shown before the next iteration, for the EMA's schedule, when the batch
    /// changes during the run (`train --batch-schedule`); `None`: `(step - 1) * batch`.
    pub images_shown: Option<u64>,
    io: Option<Io<B>>,
}

impl<B: Backend> Io<B> {
    /// The captions G draws the fake batch for, and D reads it with in both steps: the
    /// first half's twice with `mode_seeking` (the pairs its term compares), the batch's
    /// own otherwise.
    fn fake_texts(&self, hp: &Hyper) -> &Tensor<B> {
        if hp.mode_seeking > 0.0 {
            &self.fake_texts
        } else {
            &self.texts
        }
    }
}

impl<B: Backend> Gan<B> {
    /// Fresh networks with DCGAN initialisation drawn from `seed`.
    pub fn new(be: &B, cfg: &ModelConfig, hp: &Hyper, seed: u64) -> Result<Gan<B>> {
        let mut rng = Rng::derive(seed, "init");
        let g = Generator::new(be, cfg, &mut rng)?;
        let d = Discriminator::new(be, cfg, &mut rng)?;
        Ok(Gan {
            cfg: cfg.clone(),
            hp: hp.clone(),
            g,
            d,
            step: 0,
            adam_since: 0,
            augment: None,
            g_ema: None,
            ema: None,
            ema_stats_fresh: true,
            drawing: Default::default(),
            images_shown: None,
            io: None,
        })
    }

    fn io(&mut self, be: &B, n: usize) -> Result<&mut Io<B>> {
        let side = self.d.side();
        if self.io.as_ref().map(|io| (io.n, io.side)) != Some((n, side)) {
            let c = &self.cfg;
            let image = Shape::new(n, 3, side, side);
            let k = n * crate::backend::augment::AUGMENT_K;
            let resample = c.progressive.then(|| Resample { down: AvgPool::new(c.size / side), half: AvgPool::new(2), up: Upsample::new(2), mix: Fade::new() });
            self.io = Some(Io {
                n,
                side,
                resample,
                images: Tensor::zeros(be, Shape::new(n, 3, c.size, c.size))?,
                texts: Tensor::zeros(be, Shape::new(n, c.text_dim, 1, 1))?,
                noise: Tensor::zeros(be, Shape::new(n, c.noise_dim, 1, 1))?,
                mismatched: Tensor::zeros(be, Shape::new(n, c.text_dim, 1, 1))?,
                fake_texts: Tensor::zeros(be, Shape::new(n, c.text_dim, 1, 1))?,
                inv_dz: 0.0,
                loss_ms: be.alloc(2)?,
                dlogits: Tensor::zeros(be, Shape::new(n, 1, 1, 1))?,
                loss_real: be.alloc(2)?,
                loss_fake: be.alloc(2)?,
                loss_mismatch: be.alloc(2)?,
                loss_g: be.alloc(2)?,
                aug_real: Tensor::zeros(be, image)?,
                aug_fake: Tensor::zeros(be, image)?,
                dfake: Tensor::zeros(be, image)?,
                aug_params: [be.alloc(k)?, be.alloc(k)?, be.alloc(k)?],
                real_sign: 0.0,
            });
        }
        Ok(self.io.as_mut().expect("io allocated above"))
    }

    /// Uploads one batch; checks every length against the model.
    fn upload(&mut self, be: &B, n: usize, inp: &StepInputs) -> Result<()> {
        let c = self.cfg.clone();
        ensure!(n > 0, "batch size must be at least 1");
        ensure!(inp.images.len() == n * 3 * c.size * c.size, "images: {} values for a batch of {n} at {} px", inp.images.len(), c.size);
        ensure!(inp.texts.len() == n * c.text_dim, "texts: {} values for a batch of {n} vectors of {}", inp.texts.len(), c.text_dim);
        ensure!(inp.noise.len() == n * c.noise_dim, "noise: {} values for a batch of {n} vectors of {}", inp.noise.len(), c.noise_dim);
        let w = self.hp.matching_aware;
        let ms = self.hp.mode_seeking > 0.0;
        if ms {
            ensure!(n >= 2 && n.is_multiple_of(2), "--mode-seeking pairs the two halves of the batch: the batch ({n}) must be even; use an even --batch");
        }
        let io = self.io(be, n)?;
        io.images.set_f32(be, inp.images)?;
        io.texts.set_f32(be, inp.texts)?;
        io.noise.set_f32(be, inp.noise)?;
        if ms {
            let half = n / 2;
            let first = &inp.texts[..half * c.text_dim];
            io.fake_texts.set_f32(be, &[first, first].concat())?;
            io.inv_dz = ModeSeekingParams::inv_noise_distance(inp.noise)
                .context("--mode-seeking: the two halves of the batch have the same noise, so the term has no ratio to take")?;
        }
        if w > 0.0 {
            let m = inp.mismatched.ok_or_else(|| anyhow::anyhow!("the matching-aware loss needs mismatched captions"))?;
            io.mismatched.set_f32(be, m)?;
        }
        Ok(())
    }

    /// One BCE term on logits: writes its loss/probability pair and the logits'
    /// gradient into `io.dlogits`, and backpropagates it through D.
    fn d_term(be: &B, d: &mut Discriminator<B>, dlogits: &Tensor<B>, logits: &Tensor<B>, p: &BceParams, out: &mut B::Buf) -> Result<()> {
        Self::bce(be, dlogits, logits, p, out)?;
        d.backward(be, dlogits, DGrads::D_STEP).map(|_| ())
    }

    /// `x` through the augmentation with the host parameters `a` (uploaded into `params`),
    /// written into `out`; `x` itself when there are none or all are the identity.
    fn augmented(be: &B, a: Option<&[f32]>, x: &Tensor<B>, params: &mut B::Buf, out: &Tensor<B>) -> Result<Tensor<B>> {
        let Some(a) = a.filter(|a| !all_identity(a)) else { return Ok(x.clone()) };
        let s = x.shape;
        be.upload(params, a)?;
        be.augment_forward(&AugmentParams::new(s.n, s.c, s.h, s.w), &x.buf.borrow(), params, &mut out.buf.borrow_mut())?;
        Ok(out.clone())
    }

    /// The real batch as a progressive model's D sees it at `progress` (`Resample`); the
    /// batch itself for a DCGAN or at the last level, stabilised.
    fn real_at_level(be: &B, progress: Option<Progress>, images: &Tensor<B>, resample: &mut Option<Resample<B>>) -> Result<Tensor<B>> {
        let (Some(p), Some(r)) = (progress, resample.as_mut()) else { return Ok(images.clone()) };
        let x = if p.side() < images.shape.h { r.down.forward(be, images, Mode::Train)? } else { images.clone() };
        if p.level == 0 || p.alpha >= 1.0 {
            return Ok(x);
        }
        let low = r.half.forward(be, &x, Mode::Train)?;
        let low = r.up.forward(be, &low, Mode::Train)?;
        r.mix.forward(be, &low, &x, 1.0 - p.alpha, p.alpha)
    }

    /// Moves a progressive model (G, D and the EMA generator) to `p`; refuses a DCGAN.
    pub fn set_progress(&mut self, p: Progress) -> Result<()> {
        self.g.set_progress(p)?;
        self.d.set_progress(p)?;
        if let Some(g) = &mut self.g_ema {
            g.set_progress(p)?;
        }
        Ok(())
    }

    /// Clears Adam's moments of G and D and restarts its step count, so that its bias
    /// correction starts again (ProGAN's optimizer reset when a new level fades in and when
    /// it is stabilised: without it, the moments of a level's first steps are corrected as
    /// if they had been averaged over every earlier step). The EMA generator has no Adam.
    pub fn reset_adam(&mut self, be: &B) -> Result<()> {
        for p in self.g.params_mut().into_iter().chain(self.d.params_mut()) {
            be.fill(&mut p.m, 0.0)?;
            be.fill(&mut p.v, 0.0)?;
        }
        self.adam_since = self.step;
        Ok(())
    }

    /// Where a progressive model stands; `None` for a DCGAN.
    pub fn progress(&self) -> Option<Progress> {
        self.g.progress()
    }

    fn bce(be: &B, dlogits: &Tensor<B>, logits: &Tensor<B>, p: &BceParams, out: &mut B::Buf) -> Result<()> {
        be.bce_with_logits_forward(p, &logits.buf.borrow(), out)?;
        be.bce_with_logits_backward_input(p, &logits.buf.borrow(), &mut dlogits.buf.borrow_mut())
    }

    /// The D step's gradients (accumulated into D's zeroed gradients); returns the fake
    /// batch for the G step. Does not update weights.
    pub fn d_step_grads(&mut self, be: &B, n: usize, inp: &StepInputs) -> Result<Tensor<B>> {
        self.upload(be, n, inp)?;
        self.d_step_grads_loaded(be)
    }

    /// `d_step_grads` on the batch already on the device.
    fn d_step_grads_loaded(&mut self, be: &B) -> Result<Tensor<B>> {
        let w = self.hp.matching_aware;
        let io = self.io.as_mut().context("no batch on the device: load_batch or iteration first")?;
        let n = io.n;
        self.d.zero_grad(be)?;
        let fake = self.g.forward(be, &io.noise, io.fake_texts(&self.hp), Mode::Train)?;
        let nn = n as i32;
        let aug = self.augment.as_ref();
        let at_level = Self::real_at_level(be, self.d.progress(), &io.images, &mut io.resample)?;
        let [pr, pf, _] = &mut io.aug_params;
        let real = Self::augmented(be, aug.map(|a| a.real.as_slice()), &at_level, pr, &io.aug_real)?;
        let logits = self.d.forward(be, &real, &io.texts, Mode::Train)?;
        if aug.is_some() {
            let l = logits.to_f32(be)?;
            io.real_sign = l
                .iter()
                .map(|v| {
                    if *v > 0.0 {
                        1.0
                    } else if *v < 0.0 {
                        -1.0
                    } else {
                        0.0
                    }
                })
                .sum::<f32>()
                / l.len() as f32;
        }
        Self::d_term(be, &mut self.d, &io.dlogits, &logits, &BceParams { n: nn, target: 1.0, scale: 0.5 }, &mut io.loss_real)?;
        let fake_seen = Self::augmented(be, aug.map(|a| a.fake.as_slice()), &fake, pf, &io.aug_fake)?;
        let logits = self.d.forward(be, &fake_seen, io.fake_texts(&self.hp), Mode::Train)?;
        Self::d_term(be, &mut self.d, &io.dlogits, &logits, &BceParams { n: nn, target: 0.0, scale: 0.5 * (1.0 - w) }, &mut io.loss_fake)?;
        if w > 0.0 {
            let logits = self.d.forward(be, &real, &io.mismatched, Mode::Train)?;
            Self::d_term(be, &mut self.d, &io.dlogits, &logits, &BceParams { n: nn, target: 0.0, scale: 0.5 * w }, &mut io.loss_mismatch)?;
        }
        Ok(fake)
    }

    /// The G step's gradients through a frozen D (D's gradients stay untouched).
    pub fn g_step_grads(&mut self, be: &B, fake: &Tensor<B>) -> Result<()> {
        let dimage = self.g_step_image_grad(be, fake)?;
        self.g.zero_grad(be)?;
        self.g.backward(be, &dimage, Grads::PARAMS)?;
        Ok(())
    }

    /// The first half of the G step: the G loss on D's logits for the fake batch, and its
    /// gradient with respect to the images through the frozen D (`DGrads::G_STEP`: no D
    /// parameter gradient is computed or touched). verify::freeze counts what it runs.
    /// With `augment`, D sees the fake batch augmented and the gradient is taken back
    /// through the augmentation.
    pub fn g_step_image_grad(&mut self, be: &B, fake: &Tensor<B>) -> Result<Tensor<B>> {
        let io = self.io.as_mut().context("d_step_grads runs first")?;
        let n = io.n as i32;
        let a = self.augment.as_ref().map(|a| a.fake_g.as_slice()).filter(|a| !all_identity(a));
        let seen = Self::augmented(be, a, fake, &mut io.aug_params[2], &io.aug_fake)?;
        let logits = self.d.forward(be, &seen, io.fake_texts(&self.hp), Mode::Train)?;
        Self::bce(be, &io.dlogits, &logits, &BceParams { n, target: 1.0, scale: 1.0 }, &mut io.loss_g)?;
        let ms = self.hp.mode_seeking;
        let dseen = self.d.backward(be, &io.dlogits, DGrads::G_STEP)?.0.context("the frozen discriminator's image gradient")?;
        let s = fake.shape;
        let dfake = if a.is_none() {
            dseen
        } else {
            be.augment_backward_input(&AugmentParams::new(s.n, s.c, s.h, s.w), &io.aug_params[2], &dseen.buf.borrow(), &mut io.dfake.buf.borrow_mut())?;
            io.dfake.clone()
        };
        if ms > 0.0 {
            let p = ModeSeekingParams { pairs: (s.n / 2) as i32, len: (s.c * s.h * s.w) as i32, inv_dz: io.inv_dz, weight: ms, eps: MODE_SEEKING_EPS };
            be.mode_seeking_forward(&p, &fake.buf.borrow(), &mut io.loss_ms)?;
            be.mode_seeking_backward_input(&p, &fake.buf.borrow(), &io.loss_ms, &mut dfake.buf.borrow_mut())?;
        }
        Ok(dfake)
    }

    /// One full iteration: D step, Adam on D, G step, Adam on G. Reads the losses back.
    pub fn iteration(&mut self, be: &B, n: usize, inp: &StepInputs) -> Result<StepStats> {
        self.upload(be, n, inp)?;
        self.iteration_loaded(be)
    }

    /// Puts a batch on the device for `iteration_loaded`.
    pub fn load_batch(&mut self, be: &B, n: usize, inp: &StepInputs) -> Result<()> {
        self.upload(be, n, inp)
    }

    /// One full iteration on the batch already on the device (the last one loaded), as the
    /// PyTorch peer runs its benchmark on one batch made on the device: what the benchmarks
    /// time. Training uploads a new batch every iteration (`iteration`).
    pub fn iteration_loaded(&mut self, be: &B) -> Result<StepStats> {
        let fake = self.d_step_grads_loaded(be)?;
        self.step += 1;
        let adam = self.adam_params();
        adam_update(be, &adam, self.d.params_mut())?;
        self.g_step_grads(be, &fake)?;
        adam_update(be, &adam, self.g.params_mut())?;
        let n = fake.shape.n;
        self.update_ema(be, n)?;
        self.read_stats(be)
    }

    fn adam_params(&self) -> AdamParams {
        let t = (self.step - self.adam_since) as i32;
        AdamParams {
            len: 0,
            lr: self.hp.lr,
            beta1: self.hp.beta1,
            beta2: self.hp.beta2,
            eps: self.hp.eps,
            bc1: 1.0 - self.hp.beta1.powi(t),
            bc2: 1.0 - self.hp.beta2.powi(t),
        }
    }

    /// The losses of the last iteration (one small read per term).
    pub fn read_stats(&self, be: &B) -> Result<StepStats> {
        let io = self.io.as_ref().ok_or_else(|| anyhow::anyhow!("no iteration has run"))?;
        let read = |b: &B::Buf| -> Result<[f32; 2]> {
            let mut v = [0.0f32; 2];
            be.download(b, &mut v)?;
            Ok(v)
        };
        let (r, f, g) = (read(&io.loss_real)?, read(&io.loss_fake)?, read(&io.loss_g)?);
        let m = if self.hp.matching_aware > 0.0 { read(&io.loss_mismatch)?[0] } else { 0.0 };
        Ok(StepStats { loss_d: r[0] + f[0] + m, loss_g: g[0], d_real: r[1], d_fake: f[1], real_sign: io.real_sign })
    }

    /// Images of the raw G for `noise` and `texts` (`n` of each) in `mode`, as host f32
    /// (`draw` is what users see: the EMA generator when there is one).
    pub fn generate(&mut self, be: &B, noise: &[f32], texts: &[f32], mode: Mode) -> Result<Vec<f32>> {
        super::ema::generate_with(be, &mut self.g, noise, texts, mode)
    }
}

/// Adam over every parameter of one network.
fn adam_update<B: Backend>(be: &B, base: &AdamParams, params: Vec<&mut Param<B>>) -> Result<()> {
    for p in params {
        let ap = AdamParams { len: p.len() as i32, ..*base };
        be.adam_step(&ap, &mut p.value, &p.grad, &mut p.m, &mut p.v)?;
    }
    Ok(())
}

/// Host inputs shaped like real ones, for timing: images in [-1, 1], sparse non-negative
/// unit text vectors (about 8 non-zero entries), standard-normal noise.
pub fn synthetic_batch(cfg: &ModelConfig, n: usize, seed: u64) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let mut rng = Rng::derive(seed, "bench-batch");
    let mut images = vec![0.0; n * 3 * cfg.size * cfg.size];
    rng.fill_uniform(&mut images, -1.0, 1.0);
    let keep = (8.0 / cfg.text_dim as f64).min(1.0);
    let mut texts = vec![0.0f32; n * cfg.text_dim];
    for row in texts.chunks_mut(cfg.text_dim) {
        row.iter_mut().for_each(|v| *v = if rng.uniform() < keep { rng.uniform() as f32 } else { 0.0 });
        let norm = row.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
        row.iter_mut().for_each(|v| *v /= norm);
    }
    let mut noise = vec![0.0; n * cfg.noise_dim];
    rng.fill_normal(&mut noise, 0.0, 1.0);
    (images, texts, noise)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cpu::Cpu;

    /// The mean |difference| of the two halves of G's images for the first half's captions
    /// twice and `noise`, after `iters` iterations from seed 5 with mode-seeking weight `w`.
    fn pair_distance_after(w: f32, iters: usize) -> f64 {
        let be = Cpu::new();
        let cfg = ModelConfig::new(32, 4).unwrap();
        let n = 8;
        let (images, texts, noise) = synthetic_batch(&cfg, n, 3);
        let mut gan = Gan::new(&be, &cfg, &Hyper { mode_seeking: w, ..Hyper::default() }, 5).unwrap();
        for _ in 0..iters {
            gan.iteration(&be, n, &StepInputs { images: &images, texts: &texts, noise: &noise, mismatched: None }).unwrap();
        }
        let first = &texts[..n / 2 * cfg.text_dim];
        let out = gan.generate(&be, &noise, &[first, first].concat(), Mode::Eval).unwrap();
        let half = out.len() / 2;
        out[..half].iter().zip(&out[half..]).map(|(a, b)| (a - b).abs() as f64).sum::<f64>() / half as f64
    }

    /// From the same start, G trained with the mode-seeking term draws a caption's two
    /// noises further apart than G trained without it (and the term changes nothing
    /// before the first step).
    #[test]
    fn the_mode_seeking_term_draws_the_pairs_apart() {
        assert_eq!(pair_distance_after(0.0, 0), pair_distance_after(4.0, 0));
        let (without, with) = (pair_distance_after(0.0, 12), pair_distance_after(4.0, 12));
        assert!(with > 1.25 * without, "pair distance with the term {with}, without {without}");
    }

    /// A progressive model's D sees the batch box-averaged to its level's side, channel by
    /// channel; mid-fade, faded from its own 2x-pooled and upsampled copy.
    #[test]
    fn progressive_reals_are_the_box_average_at_the_level() {
        let be = Cpu::new();
        let (n, size) = (2, 16);
        // Channel c of image i holds 10 i + c + (a pattern that averages out over 4x4 boxes).
        let mut x = vec![0.0f32; n * 3 * size * size];
        for (k, v) in x.iter_mut().enumerate() {
            let (i, c, y, xx) = (k / (3 * size * size), (k / (size * size)) % 3, (k / size) % size, k % size);
            *v = (10 * i + c) as f32 + if (y + xx) % 2 == 0 { 0.5 } else { -0.5 };
        }
        let images = Tensor::from_f32(&be, Shape::new(n, 3, size, size), &x).unwrap();
        let mut resample = Some(Resample { down: AvgPool::new(4), half: AvgPool::new(2), up: Upsample::new(2), mix: Fade::new() });
        let at = Gan::real_at_level(&be, Some(Progress { level: 0, alpha: 1.0 }), &images, &mut resample).unwrap();
        assert_eq!(at.shape, Shape::new(n, 3, 4, 4));
        for (k, v) in at.to_f32(&be).unwrap().into_iter().enumerate() {
            let (i, c) = (k / 48, (k / 16) % 3);
            assert_eq!(v, (10 * i + c) as f32, "image {i} channel {c}");
        }
        // Level 1 (8 px) fading in at 0.25: pooled by 2, then faded from its 4x4 average.
        let mut resample = Some(Resample { down: AvgPool::new(2), half: AvgPool::new(2), up: Upsample::new(2), mix: Fade::new() });
        let at = Gan::real_at_level(&be, Some(Progress { level: 1, alpha: 0.25 }), &images, &mut resample).unwrap();
        assert_eq!(at.shape, Shape::new(n, 3, 8, 8));
        for (k, v) in at.to_f32(&be).unwrap().into_iter().enumerate() {
            let (i, c) = (k / 192, (k / 64) % 3);
            assert_eq!(v, (10 * i + c) as f32, "image {i} channel {c}: the checkerboard averages out at 2x2");
        }
    }
}
