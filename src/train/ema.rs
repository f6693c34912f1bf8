//! The EMA generator (ProGAN, StyleGAN): an exponential moving average of G's weights,
//! updated after every G step with the `ema_update` op, with batchnorm running statistics
//! of its own; and the choice of what draws (`Drawing`): the average or the raw G, with
//! the running statistics or the batch's.
//!
//! Schedule (StyleGAN 2's `ema_kimg` and `ema_rampup`): before step `t` the run has seen
//! `seen = (t - 1) * batch` images; the half-life is `--ema-half-life` images, or
//! `seen * --ema-ramp` when that is smaller (ramp > 0), and
//! `beta = 0.5 ^ (batch / half_life)`. With the ramp the first step copies G (a half-life
//! of 0 images gives beta 0), and the average then forgets its young weights quickly.
//!
//! The averaged weights never saw the activations their batchnorm statistics would
//! describe, so the statistics are recomputed before the EMA generator is used (see
//! [`Gan::recompute_ema_stats`]): the running statistics are reset and the generator runs
//! in training mode over a few batches with momentum `1 / (k + 1)` for the `k`-th, so that
//! they end as the mean of the batches' statistics.

use super::Gan;
use crate::backend::{Backend, EmaParams};
use crate::model::{Generator, Module};
use crate::nn::{Mode, Shape, Tensor};
use crate::rng::Rng;
use anyhow::{ensure, Context, Result};
use serde::{Deserialize, Serialize};

/// `--ema-ramp` when not given: StyleGAN 2's `ema_rampup`.
pub const DEFAULT_EMA_RAMP: f64 = 0.05;

/// Batches of the training batch size the EMA generator's batchnorm statistics are
/// recomputed over.
pub const EMA_BN_BATCHES: usize = 4;

/// The half-life schedule of the moving average.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EmaSchedule {
    /// Half-life in images (`--ema-half-life`), above 0.
    pub half_life: f64,
    /// StyleGAN's ramp-up (`--ema-ramp`): the half-life is at most `seen * ramp`; 0 is no
    /// ramp.
    pub ramp: f64,
}

impl EmaSchedule {
    /// The half-life, in images, of the update that follows `seen` images.
    pub fn half_life_at(&self, seen: u64) -> f64 {
        if self.ramp > 0.0 {
            self.half_life.min(seen as f64 * self.ramp)
        } else {
            self.half_life
        }
    }

    /// How much of the average the update after a step of `batch` images keeps, `seen`
    /// images having been trained on before that step: `0.5 ^ (batch / half_life)` (0, a
    /// copy, when the half-life is 0 images).
    pub fn beta(&self, batch: usize, seen: u64) -> f64 {
        let h = self.half_life_at(seen);
        if h > 0.0 {
            0.5f64.powf(batch as f64 / h)
        } else {
            0.0
        }
    }
}

/// `--ema-half-life` and `--ema-ramp`: a half-life of 0 (off) or more images, finite, and a
/// ramp in [0, 1]. Each message names its flag.
pub fn check_ema(half_life: f64, ramp: f64) -> Result<()> {
    ensure!(
        half_life.is_finite() && half_life >= 0.0,
        "--ema-half-life {half_life} must be a number of images, 0 (no EMA generator) or more (StyleGAN uses 10000)"
    );
    ensure!(ramp.is_finite() && (0.0..=1.0).contains(&ramp), "--ema-ramp {ramp} must be between 0 (no ramp-up) and 1 (StyleGAN uses 0.05)");
    Ok(())
}

/// Which batchnorm statistics a generator draws with (`--bn`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BnStats {
    /// The running statistics stored with the weights (inference mode).
    #[default]
    Running,
    /// The statistics of the batch being drawn (training mode); the stored running
    /// statistics are left as they are.
    Batch,
}

impl BnStats {
    pub fn name(self) -> &'static str {
        match self {
            BnStats::Running => "running",
            BnStats::Batch => "batch",
        }
    }
}

impl std::str::FromStr for BnStats {
    type Err = anyhow::Error;
    /// `running` or `batch` (`--bn`).
    fn from_str(s: &str) -> Result<BnStats> {
        match s {
            "running" => Ok(BnStats::Running),
            "batch" => Ok(BnStats::Batch),
            _ => anyhow::bail!("--bn {s:?}: use running (the stored running statistics) or batch (each drawn batch's own statistics)"),
        }
    }
}

/// What draws: the EMA generator when there is one and `ema` asks for it, else G; with the
/// batchnorm statistics `bn` says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Drawing {
    pub ema: bool,
    pub bn: BnStats,
}

impl Default for Drawing {
    fn default() -> Self {
        Drawing { ema: true, bn: BnStats::Running }
    }
}

impl<B: Backend> Gan<B> {
    /// Adds the moving average of G's weights, starting as a copy of G (and of its running
    /// statistics), updated after every G step by `schedule`.
    pub fn enable_ema(&mut self, be: &B, schedule: EmaSchedule) -> Result<()> {
        let mut g = Generator::named(be, &self.cfg, &mut Rng::derive(0, "ema-shape"), "generator_ema")?;
        for (avg, w) in g.params_mut().into_iter().zip(self.g.params()) {
            be.ema_update(&EmaParams::new(avg.len(), 0.0), &mut avg.value, &w.value)?;
        }
        for (avg, w) in g.buffers_mut().into_iter().zip(self.g.buffers()) {
            be.ema_update(&EmaParams::new(avg.len, 0.0), &mut avg.value, &w.value)?;
        }
        self.g_ema = Some(g);
        self.ema = Some(schedule);
        Ok(())
    }

    /// The average's update after the G step of an iteration on `batch` images (Adam's
    /// `step` already counts it). Nothing without an EMA generator.
    pub(super) fn update_ema(&mut self, be: &B, batch: usize) -> Result<()> {
        let (Some(avg), Some(schedule)) = (self.g_ema.as_mut(), self.ema) else { return Ok(()) };
        // A model without batchnorm (the progressive one) has no statistics to go stale.
        let has_bn = !avg.buffers().is_empty();
        let seen = self.images_shown.unwrap_or(self.step.saturating_sub(1) * batch as u64);
        let beta = schedule.beta(batch, seen) as f32;
        for (a, w) in avg.params_mut().into_iter().zip(self.g.params()) {
            be.ema_update(&EmaParams::new(a.len(), beta), &mut a.value, &w.value)?;
        }
        self.ema_stats_fresh = !has_bn;
        Ok(())
    }

    /// Whether the EMA generator's batchnorm statistics describe its current weights (they
    /// do after [`Gan::recompute_ema_stats`], and in a loaded checkpoint).
    pub fn ema_stats_fresh(&self) -> bool {
        self.g_ema.is_none() || self.ema_stats_fresh
    }

    /// Recomputes the EMA generator's batchnorm running statistics from `batches` of
    /// `(noise, texts)`: reset, then a training-mode forward per batch with momentum
    /// `1 / (k + 1)`, so they end as the mean of the batches' statistics. Nothing without an
    /// EMA generator.
    pub fn recompute_ema_stats(&mut self, be: &B, batches: &[(Vec<f32>, Vec<f32>)]) -> Result<()> {
        let cfg = self.cfg.clone();
        let Some(g) = self.g_ema.as_mut() else { return Ok(()) };
        ensure!(!batches.is_empty(), "the EMA generator's batchnorm statistics need at least one batch");
        for b in g.buffers_mut() {
            be.fill(&mut b.value, if b.name.ends_with("running_var") { 1.0 } else { 0.0 })?;
        }
        let old = momenta(g);
        for (k, (noise, texts)) in batches.iter().enumerate() {
            let n = noise.len() / cfg.noise_dim;
            ensure!(
                n > 0 && noise.len() == n * cfg.noise_dim && texts.len() == n * cfg.text_dim,
                "EMA statistics batch {k}: {n} noise vectors and {} text values",
                texts.len()
            );
            set_momenta(g, &[1.0 / (k + 1) as f32]);
            let z = Tensor::from_f32(be, Shape::new(n, cfg.noise_dim, 1, 1), noise)?;
            let t = Tensor::from_f32(be, Shape::new(n, cfg.text_dim, 1, 1), texts)?;
            let drawn = g.forward(be, &z, &t, Mode::Train);
            if drawn.is_err() {
                set_momenta(g, &old);
            }
            drawn.context("recomputing the EMA generator's batchnorm statistics")?;
        }
        set_momenta(g, &old);
        self.ema_stats_fresh = true;
        Ok(())
    }

    /// Images for `noise` and `texts` from the generator `self.drawing` chooses (the EMA
    /// generator when there is one and it is asked for), with the batchnorm statistics it
    /// asks for, as host f32. Batch statistics leave the stored running statistics as they
    /// were, bit for bit.
    pub fn draw(&mut self, be: &B, noise: &[f32], texts: &[f32]) -> Result<Vec<f32>> {
        let bn = self.drawing.bn;
        let g = match (self.drawing.ema, self.g_ema.as_mut()) {
            (true, Some(avg)) => avg,
            _ => &mut self.g,
        };
        match bn {
            BnStats::Running => generate_with(be, g, noise, texts, Mode::Eval),
            BnStats::Batch => {
                // The training-mode forward moves the running statistics: keep a copy and
                // put it back whatever happens.
                let mut kept = Vec::new();
                for b in g.buffers() {
                    let mut v = vec![0.0f32; b.len];
                    be.download(&b.value, &mut v)?;
                    kept.push(v);
                }
                let images = generate_with(be, g, noise, texts, Mode::Train);
                for (b, v) in g.buffers_mut().into_iter().zip(&kept) {
                    be.upload(&mut b.value, v)?;
                }
                images
            }
        }
    }

    /// The line `sample`, `eval` and `serve` print once: which generator draws, and why.
    pub fn drawing_note(&self) -> String {
        let which = match (self.drawing.ema, self.g_ema.is_some()) {
            (true, true) => format!("drawing with {} (--no-ema for the raw generator)", self.drawing_label()),
            (true, false) => format!("this checkpoint has no EMA generator (trained without --ema-half-life): drawing with {}", self.drawing_label()),
            (false, _) => format!("drawing with {} (--no-ema)", self.drawing_label()),
        };
        match self.progress() {
            Some(p) => format!("{which}; a progressive model at level {} of {} ({}){}", p.level, self.cfg.levels() - 1, p.describe(), self.upscale_note()),
            None => which,
        }
    }

    /// `, upscaled to 64 px` while a progressive model draws below its size.
    fn upscale_note(&self) -> String {
        match self.progress() {
            Some(p) if p.side() < self.cfg.size => format!(", upscaled to {} px", self.cfg.size),
            _ => String::new(),
        }
    }

    /// Whether `draw` uses the EMA generator.
    pub fn draws_ema(&self) -> bool {
        self.drawing.ema && self.g_ema.is_some()
    }

    /// What `draw` uses, for people: "the EMA generator (batchnorm: running statistics)".
    pub fn drawing_label(&self) -> String {
        let which = if self.draws_ema() { "the EMA generator" } else { "the raw generator" };
        let bn = match self.drawing.bn {
            // The progressive generator has no batchnorm: --bn changes nothing.
            _ if self.cfg.progressive => return format!("{which} (no batchnorm)"),
            BnStats::Running => "running statistics",
            BnStats::Batch => "the batch's statistics",
        };
        format!("{which} (batchnorm: {bn})")
    }
}

/// The batchnorm momenta of `g`, layer by layer.
fn momenta<B: Backend>(g: &mut Generator<B>) -> Vec<f32> {
    g.main.layers.iter_mut().filter_map(|l| l.momentum_mut().map(|m| *m)).collect()
}

/// Sets the batchnorm momenta of `g`: `m[i]` for the `i`-th batchnorm, or `m[0]` for all
/// when `m` has one value.
fn set_momenta<B: Backend>(g: &mut Generator<B>, m: &[f32]) {
    for (i, slot) in g.main.layers.iter_mut().filter_map(|l| l.momentum_mut()).enumerate() {
        *slot = if m.len() == 1 { m[0] } else { m[i] };
    }
}

/// `g` on `n` noise and text vectors, as host f32.
pub(super) fn generate_with<B: Backend>(be: &B, g: &mut Generator<B>, noise: &[f32], texts: &[f32], mode: Mode) -> Result<Vec<f32>> {
    let c = g.cfg.clone();
    ensure!(noise.len().is_multiple_of(c.noise_dim), "noise length {} is not a multiple of {}", noise.len(), c.noise_dim);
    let n = noise.len() / c.noise_dim;
    ensure!(texts.len() == n * c.text_dim, "texts: {} values for {n} vectors of {}", texts.len(), c.text_dim);
    let z = Tensor::from_f32(be, Shape::new(n, c.noise_dim, 1, 1), noise)?;
    let t = Tensor::from_f32(be, Shape::new(n, c.text_dim, 1, 1), texts)?;
    let images = g.forward(be, &z, &t, mode)?.to_f32(be)?;
    Ok(upscale_nearest(&images, n * 3, g.side(), g.cfg.size))
}

/// `planes` square planes of side `side` scaled up to `size` by repeating each pixel (a
/// progressive model's images before its last level, so grids, `sample`, `eval` and
/// `serve` always get images of the model's size); the planes themselves at full size.
pub fn upscale_nearest(planes_data: &[f32], planes: usize, side: usize, size: usize) -> Vec<f32> {
    if side >= size {
        return planes_data.to_vec();
    }
    let k = size / side;
    let mut out = vec![0.0f32; planes * size * size];
    for (dst, src) in out.chunks_exact_mut(size * size).zip(planes_data.chunks_exact(side * side)) {
        for (y, row) in dst.chunks_exact_mut(size).enumerate() {
            let from = &src[(y / k) * side..(y / k + 1) * side];
            for (x, v) in row.iter_mut().enumerate() {
                *v = from[x / k];
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_half_life_ramps_up_with_the_images_seen_then_stays() {
        let s = EmaSchedule { half_life: 10_000.0, ramp: 0.05 };
        assert_eq!(s.half_life_at(0), 0.0);
        assert_eq!(s.half_life_at(64_000), 3_200.0);
        assert_eq!(s.half_life_at(200_000), 10_000.0);
        assert_eq!(s.half_life_at(10_000_000), 10_000.0);
        // The first update copies G; later ones follow 0.5 ^ (batch / half-life).
        assert_eq!(s.beta(64, 0), 0.0);
        assert_eq!(s.beta(64, 64_000), 0.5f64.powf(64.0 / 3_200.0));
        assert_eq!(s.beta(64, 1_000_000), 0.5f64.powf(64.0 / 10_000.0));
        // No ramp: the half-life from the first step.
        let flat = EmaSchedule { ramp: 0.0, ..s };
        assert_eq!(flat.beta(64, 0), 0.5f64.powf(0.0064));
        // A batch of one half-life halves the old average's weight.
        assert!((EmaSchedule { half_life: 64.0, ramp: 0.0 }.beta(64, 0) - 0.5).abs() < 1e-15);
    }

    #[test]
    fn the_flags_are_checked_by_name() {
        assert!(check_ema(0.0, 0.05).is_ok() && check_ema(10_000.0, 0.0).is_ok() && check_ema(1.0, 1.0).is_ok());
        for h in [-1.0, f64::NAN, f64::INFINITY] {
            assert!(check_ema(h, 0.05).unwrap_err().to_string().contains("--ema-half-life"), "{h}");
        }
        for r in [-0.01, 1.5, f64::NAN] {
            assert!(check_ema(10_000.0, r).unwrap_err().to_string().contains("--ema-ramp"), "{r}");
        }
    }
}
