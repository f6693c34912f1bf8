//! The training run: data, the loop, progress, samples, metrics, checkpoints, resume.

use super::augment::{AdaState, AugmentDraws, AugmentOptions, AugmentP};
use super::checkpoint::{self, Checkpoint, NamedTensor};
use super::grow::{GrowSchedule, Position};
use super::lock::RunLock;
use super::report::{self, MetricsRow};
use super::{Gan, Hyper, StepInputs};
use crate::backend::{Backend, Precision};
use crate::data::{self, DataSource, DataStamp, LoaderOptions, LoaderState, PrepareOptions, PreparedData};
use crate::model::{ModelConfig, Progress, TextInD, Usage};
use crate::rng::Rng;
use crate::text::Tfidf;
use anyhow::{anyhow, bail, ensure, Context, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

/// Everything that defines a run; stored in every checkpoint so `--resume` continues
/// the same run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainOptions {
    /// `None`: the built-in synthetic catalogue.
    pub data: Option<PathBuf>,
    pub size: usize,
    pub width: usize,
    pub batch: usize,
    /// Total iterations of the run (resumed iterations included).
    pub iters: u64,
    pub hyper: Hyper,
    pub seed: u64,
    pub save_every: u64,
    pub sample_every: u64,
    /// Checkpoints kept (the newest).
    pub keep: usize,
    pub flip: bool,
    pub crop: bool,
    pub max_features: usize,
    pub cache_dir: Option<PathBuf>,
    /// `--precision` of the GEMMs (checkpoints from before it trained in f32).
    #[serde(default)]
    pub precision: Precision,
    /// Fraction of the catalogue held out for evaluation, by a hash of each product's id
    /// (`eval::split`); never trained on. 0 trains on every product, which is also what a
    /// checkpoint from before this option means.
    #[serde(default)]
    pub eval_split: f64,
    /// Measure SWD, FD and conditioning every N iterations into metrics.csv (0: never).
    #[serde(default)]
    pub eval_every: u64,
    /// Group size of the discriminator's minibatch standard deviation channel
    /// (`--minibatch-std`, `ModelConfig::minibatch_std`); 0, also for checkpoints from
    /// before it: none.
    #[serde(default)]
    pub minibatch_std: usize,
    /// How the discriminator reads the caption (`--text-in-d`, `ModelConfig::text_in_d`);
    /// tiled, also for checkpoints from before it.
    #[serde(default)]
    pub text_in_d: TextInD,
    /// DiffAugment before D (`--augment`, `--augment-p`); none, also for checkpoints from
    /// before it.
    #[serde(default)]
    pub augment: AugmentOptions,
    /// Half-life in images of the EMA generator, the moving average of G's weights
    /// (`--ema-half-life`, `train/ema.rs`); 0, also for checkpoints from before it: none.
    #[serde(default)]
    pub ema_half_life: f64,
    /// Its ramp-up (`--ema-ramp`): the half-life is at most `images seen * ramp`; 0: none.
    #[serde(default = "default_ema_ramp")]
    pub ema_ramp: f64,
    /// Progressive growing (`--progressive`, `ModelConfig::progressive`); off, also for
    /// checkpoints from before it.
    #[serde(default)]
    pub progressive: bool,
    /// Its schedule (`--fade-images`, `--stage-images`, `train/grow.rs`).
    #[serde(default = "default_phase_images")]
    pub fade_images: u64,
    #[serde(default = "default_phase_images")]
    pub stage_images: u64,
    /// The batch of a progressive run's levels by side (`--batch-schedule`, sorted by
    /// side); a side not listed, and every level when it is empty (also for checkpoints
    /// from before it), trains at `batch`.
    #[serde(default)]
    pub batch_schedule: Vec<(usize, usize)>,
    /// When a progressive run clears Adam's state (`--adam-reset`); never, also for
    /// checkpoints from before it.
    #[serde(default)]
    pub adam_reset: super::grow::AdamReset,
}

fn default_ema_ramp() -> f64 {
    super::ema::DEFAULT_EMA_RAMP
}

fn default_phase_images() -> u64 {
    super::grow::DEFAULT_PHASE_IMAGES
}

impl TrainOptions {
    /// The model these options train, reading captions of `text_dim` values.
    pub fn model_config(&self, text_dim: usize) -> Result<ModelConfig> {
        let cfg = ModelConfig {
            text_dim,
            minibatch_std: self.minibatch_std,
            text_in_d: self.text_in_d,
            progressive: self.progressive,
            ..ModelConfig::new(self.size, self.width)?
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// The schedule of a progressive run.
    pub fn grow(&self) -> Option<GrowSchedule> {
        super::grow::check_size(self.size).ok()?;
        let levels = crate::model::progressive_levels(self.size);
        self.progressive.then_some(GrowSchedule { levels, fade_images: self.fade_images, stage_images: self.stage_images })
    }

    /// The batch of each level of a progressive run (`--batch-schedule`, else `--batch`);
    /// one entry, `batch`, for a DCGAN.
    pub fn level_batches(&self) -> Result<Vec<usize>> {
        match self.grow() {
            Some(g) => super::grow::level_batches(&self.batch_schedule, g.levels, self.batch),
            None => Ok(vec![self.batch]),
        }
    }

    /// Where a progressive run stands before iteration `iteration` (counted from 0): its
    /// level and fade, the images shown before it, and its batch (`None` for a DCGAN, or
    /// options whose batch schedule does not fit the size, which `train` refuses first).
    pub fn position_at(&self, iteration: u64) -> Option<Position> {
        let g = self.grow()?;
        let batches = self.level_batches().ok()?;
        Some(g.position(iteration, &batches))
    }

    /// The level and fade of `position_at` (what a checkpoint after `iteration`
    /// iterations records).
    pub fn progress_at(&self, iteration: u64) -> Option<Progress> {
        self.position_at(iteration).map(|p| p.progress)
    }

    /// The batch of iteration `iteration`: its level's in a progressive run, else `batch`.
    pub fn batch_at(&self, iteration: u64) -> usize {
        self.position_at(iteration).map_or(self.batch, |p| p.batch)
    }

    /// The fewest iterations that show at least `images` real images, each at its batch
    /// (`--epochs` with a batch schedule).
    pub fn iters_for_images(&self, images: u64) -> u64 {
        let shown = |it: u64| self.position_at(it).map_or(it.saturating_mul(self.batch as u64), |p| p.images);
        // Every iteration shows at least one image, so `images` iterations are enough.
        let (mut lo, mut hi) = (0u64, images);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if shown(mid) >= images {
                hi = mid;
            } else {
                lo = mid + 1;
            }
        }
        lo
    }

    /// Refuses loss, augmentation, EMA and minibatch-statistics flags that cannot train with
    /// this batch (each error names its flag).
    pub fn check_training_flags(&self) -> Result<()> {
        check_minibatch_std(self.minibatch_std, self.batch)?;
        self.hyper.check()?;
        check_mode_seeking(self.hyper.mode_seeking, self.batch)?;
        self.augment.check()?;
        super::ema::check_ema(self.ema_half_life, self.ema_ramp)
    }

    /// Refuses a batch schedule that does not fit these options, naming `--batch-schedule`:
    /// one without `--progressive`, a side that is not a level, a batch of 0, and a batch
    /// that `--minibatch-std` does not divide or whose indices would overflow.
    pub fn check_batch_schedule(&self) -> Result<()> {
        if self.batch_schedule.is_empty() {
            return Ok(());
        }
        let text = super::grow::describe_batch_schedule(&self.batch_schedule);
        ensure!(self.progressive, "--batch-schedule {text} sets the batch of each level of progressive growing: add --progressive, or drop --batch-schedule");
        self.level_batches()?;
        for &(side, batch) in &self.batch_schedule {
            check_minibatch_std(self.minibatch_std, batch).map_err(|e| anyhow!("--batch-schedule {text}: the batch {batch} of side {side}: {e}"))?;
            check_mode_seeking(self.hyper.mode_seeking, batch).map_err(|e| anyhow!("--batch-schedule {text}: the batch {batch} of side {side}: {e}"))?;
        }
        Ok(())
    }

    /// Refuses `--adam-reset phase` without `--progressive`: a DCGAN has no phases.
    pub fn check_adam_reset(&self) -> Result<()> {
        ensure!(
            self.progressive || self.adam_reset == super::grow::AdamReset::Never,
            "--adam-reset {} clears Adam's state when a progressive run enters a new phase: add --progressive, or drop --adam-reset",
            self.adam_reset
        );
        Ok(())
    }

    /// The EMA generator's schedule, when the run has one.
    pub fn ema(&self) -> Option<super::EmaSchedule> {
        (self.ema_half_life > 0.0).then_some(super::EmaSchedule { half_life: self.ema_half_life, ramp: self.ema_ramp })
    }
}

/// `--mode-seeking` for batches of `batch`: the term pairs the batch's two halves, so the
/// batch must be even.
pub fn check_mode_seeking(weight: f32, batch: usize) -> Result<()> {
    ensure!(
        weight == 0.0 || (batch >= 2 && batch.is_multiple_of(2)),
        "--mode-seeking pairs image i with image i + batch/2 (the same caption, other noise): --batch {batch} must be even"
    );
    Ok(())
}

/// `--minibatch-std group` for batches of `batch`: 0 (off), or a group of 2 or more that
/// divides the batch. A group is drawn from one batch, so a group larger than the batch,
/// or one that leaves a remainder, is refused rather than quietly shrunk to a divisor.
pub fn check_minibatch_std(group: usize, batch: usize) -> Result<()> {
    if group == 0 {
        return Ok(());
    }
    ensure!(group >= 2, "--minibatch-std 1 would add a constant channel (a group of one sample has no spread); use 2 or more (ProGAN uses 4), or 0 for none");
    ensure!(group <= batch, "--minibatch-std {group} is larger than --batch {batch}: each group is taken from one batch; use at most {batch}");
    if !batch.is_multiple_of(group) {
        // The largest divisor of the batch below the group; 1 is no group (refused above).
        let divisor = crate::backend::minibatch_std::effective_group(batch, group);
        let hint = if divisor >= 2 {
            format!("use a divisor of {batch} such as {divisor}")
        } else {
            format!("{batch} has no divisor from 2 to {group}: use a --batch that {group} divides, or --minibatch-std 0 for none")
        };
        bail!("--minibatch-std {group} does not divide --batch {batch}: the batch is cut into groups of equal size; {hint}");
    }
    Ok(())
}

/// How many iterations `--epochs E` means for a data set of `len` items.
pub fn iters_for_epochs(epochs: u64, len: usize, batch: usize) -> u64 {
    epochs * (len / batch.max(1)).max(1) as u64
}

/// The metadata document of a checkpoint.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunState {
    pub format: String,
    pub config: ModelConfig,
    pub options: TrainOptions,
    pub tfidf: Tfidf,
    /// Iterations completed.
    pub iteration: u64,
    /// Optimizer steps (Adam's t).
    pub step: u64,
    pub noise_rng: Rng,
    pub loader: LoaderState,
    pub sample_captions: Vec<String>,
    pub elapsed_seconds: f64,
    /// The products the run trains on (absent from checkpoints of earlier versions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_stamp: Option<DataStamp>,
    /// ADA's controller of the augmentation probability, in runs with `--augment-p auto`
    /// (absent otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ada: Option<AdaState>,
    /// A progressive run's level and fade after `iteration` iterations: what the saved
    /// networks draw at (absent for a DCGAN).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<Progress>,
}

impl RunState {
    /// The metadata of `ck`, every field checked (`validate`). Errors name the field.
    pub fn from_checkpoint(ck: &Checkpoint) -> Result<RunState> {
        let state: RunState = serde_path_to_error::deserialize(&ck.meta).map_err(|e| {
            let at = if e.path().to_string() == "." { String::new() } else { format!(" field `{}`", e.path()) };
            anyhow!("metadata{at}: {} (a checkpoint of another version of gan-engine, or a damaged one)", e.inner())
        })?;
        state.validate(&ck.tensors)?;
        Ok(state)
    }

    /// The networks of a checkpoint on `be` (with its EMA generator when the run has one),
    /// ready to draw; `tensors` are the checkpoint's.
    pub fn build_gan<B: Backend>(&self, be: &B, tensors: &[NamedTensor]) -> Result<Gan<B>> {
        let mut gan = Gan::new(be, &self.config, &self.options.hyper, 0)?;
        if let Some(schedule) = self.options.ema() {
            gan.enable_ema(be, schedule)?;
        }
        gan.import(be, tensors)?;
        if let Some(p) = self.progress {
            gan.set_progress(p)?;
        }
        Ok(gan)
    }

    /// Checks every field against the others and against the tensors, so that a damaged or
    /// hand-edited checkpoint is refused with the field named before anything is built from
    /// it. (The tensors' full list and shapes are checked when they are imported.)
    pub fn validate(&self, tensors: &[NamedTensor]) -> Result<()> {
        let (c, o) = (&self.config, &self.options);
        c.validate().map_err(|e| anyhow!("metadata field `config`: {e}"))?;
        let shape_of = |name: &str| tensors.iter().find(|t| t.name == name).map(|t| t.shape.clone());
        let field = |name: &str, ok: bool, why: String| if ok { Ok(()) } else { Err(anyhow!("metadata field `{name}` {why}")) };
        field("options.progressive", o.progressive == c.progressive, format!("is {}, the model's `config.progressive` {}", o.progressive, c.progressive))?;
        if c.progressive {
            super::grow::check_size(c.size).map_err(|e| anyhow!("metadata field `config.size`: {e}"))?;
            super::grow::GrowSchedule::check(o.fade_images, o.stage_images)
                .map_err(|e| anyhow!("metadata field `options.fade_images` or `options.stage_images`: {e}"))?;
        }
        o.check_batch_schedule().map_err(|e| anyhow!("metadata field `options.batch_schedule`: {e}"))?;
        o.check_adam_reset().map_err(|e| anyhow!("metadata field `options.adam_reset`: {e}"))?;
        let want = o.progress_at(self.iteration);
        field("progress", self.progress == want, format!("is {:?}, but the run's schedule is at {want:?} after {} iterations", self.progress, self.iteration))?;
        // Each tie checks fields the earlier ones have not: D's first layer depends on the
        // width alone, G's last on the size (which layer it is) and the width, G's first on
        // the noise and text sizes, D's text projection on its width.
        let last = c.levels().saturating_sub(1);
        let ties = if c.progressive {
            // The last level's fromRGB and toRGB (the width and the size), G's first block
            // (the noise and text sizes), the text projection and the head's first convolution.
            vec![
                ("config.width", format!("discriminator.fromrgb{last}.0.weight"), vec![c.width, 3, 1, 1]),
                ("config.size", format!("generator.torgb{last}.0.weight"), vec![3, c.width, 1, 1]),
                ("config.noise_dim` and `config.text_dim", "generator.block0.0.weight".to_string(), vec![c.noise_dim + c.text_dim, c.top_channels(), 4, 4]),
                ("config.text_proj", "discriminator.text.0.weight".to_string(), vec![c.text_proj, c.text_dim]),
                (
                    "config.minibatch_std",
                    format!("discriminator.head.{}.weight", (c.minibatch_std > 0) as usize),
                    vec![c.top_channels(), c.head_channels(), 3, 3],
                ),
            ]
        } else {
            self.dcgan_ties()
        };
        let ema_first = if c.progressive { "generator_ema.block0.0.weight" } else { "generator_ema.main.0.weight" };
        let ema_tie = ("options.ema_half_life", ema_first.to_string(), vec![c.noise_dim + c.text_dim, c.top_channels(), 4, 4]);
        let ties = ties.into_iter().chain((o.ema_half_life > 0.0).then_some(ema_tie));
        for (field, tensor, want) in ties {
            match shape_of(&tensor) {
                Some(have) if have == want => {}
                Some(have) => bail!("metadata field `{field}` does not match the tensors: {tensor} has shape {have:?}, the configuration needs {want:?}"),
                None => bail!("metadata field `{field}` does not match the tensors: the configuration needs {tensor} of shape {want:?}, which the file lacks"),
            }
        }
        self.validate_fields()
    }

    /// The tensors that tie a DCGAN's configuration fields to the file.
    fn dcgan_ties(&self) -> Vec<(&'static str, String, Vec<usize>)> {
        let c = &self.config;
        vec![
            ("config.width", "discriminator.main.0.weight".to_string(), vec![c.width, 3, 4, 4]),
            ("config.size", format!("generator.main.{}.weight", 3 * c.blocks()), vec![c.width, 3, 4, 4]),
            ("config.noise_dim` and `config.text_dim", "generator.main.0.weight".to_string(), vec![c.noise_dim + c.text_dim, c.top_channels(), 4, 4]),
            match c.text_in_d {
                TextInD::Tile => ("config.text_proj", "discriminator.text.0.weight".to_string(), vec![c.text_proj, c.text_dim]),
                // The projection discriminator's embedding V, in place of the text projection.
                TextInD::Projection => ("config.text_in_d", "discriminator.embed.0.weight".to_string(), vec![c.top_channels(), c.text_dim]),
            },
            // The minibatch std layer, when there is one, is the head's first module.
            ("config.minibatch_std", format!("discriminator.head.{}.weight", (c.minibatch_std > 0) as usize), vec![c.top_channels(), c.head_channels(), 1, 1]),
        ]
    }

    /// The checks of `validate` that read the metadata alone.
    fn validate_fields(&self) -> Result<()> {
        let (c, o) = (&self.config, &self.options);
        self.tfidf.check().map_err(|(field, why)| anyhow!("metadata field `tfidf.{field}` {why}"))?;
        ensure!(
            self.tfidf.dim() == c.text_dim,
            "metadata field `tfidf.vocab` has {} terms, but the model reads {} values of text (`config.text_dim`)",
            self.tfidf.dim(),
            c.text_dim
        );
        let field = |name: &str, ok: bool, why: String| if ok { Ok(()) } else { Err(anyhow!("metadata field `{name}` {why}")) };
        field("options.size", o.size == c.size, format!("is {}, the model's `config.size` {}", o.size, c.size))?;
        field("options.width", o.width == c.width, format!("is {}, the model's `config.width` {}", o.width, c.width))?;
        field(
            "options.minibatch_std",
            o.minibatch_std == c.minibatch_std,
            format!("is {}, the model's `config.minibatch_std` {}", o.minibatch_std, c.minibatch_std),
        )?;
        field("options.text_in_d", o.text_in_d == c.text_in_d, format!("is {}, the model's `config.text_in_d` {}", o.text_in_d, c.text_in_d))?;
        field("options.batch", o.batch > 0, "is 0".into())?;
        c.check_batch(o.batch).map_err(|e| anyhow!("metadata field `options.batch`: {e}"))?;
        for &(_, b) in &o.batch_schedule {
            c.check_batch(b).map_err(|e| anyhow!("metadata field `options.batch_schedule`: {e}"))?;
        }
        check_minibatch_std(o.minibatch_std, o.batch).map_err(|e| anyhow!("metadata field `options.minibatch_std`: {e}"))?;
        super::ema::check_ema(o.ema_half_life, o.ema_ramp).map_err(|e| anyhow!("metadata field `options.ema_half_life` or `options.ema_ramp`: {e}"))?;
        field("options.iters", o.iters >= self.iteration, format!("is {}, below the iterations done ({})", o.iters, self.iteration))?;
        for (name, v) in [("options.save_every", o.save_every), ("options.sample_every", o.sample_every), ("options.keep", o.keep as u64)] {
            field(name, v > 0, "is 0; it must be at least 1".into())?;
        }
        o.hyper.check().map_err(|e| anyhow!("metadata field `options.hyper`: {e}"))?;
        crate::eval::split::check_fraction(o.eval_split).map_err(|e| anyhow!("metadata field `options.eval_split`: {e}"))?;
        o.augment.check().map_err(|e| anyhow!("metadata field `options.augment`: {e}"))?;
        let auto = o.augment.is_on() && matches!(o.augment.p, AugmentP::Auto { .. });
        match &self.ada {
            Some(a) => {
                field("ada", auto, "is present, but the run does not adapt its augmentation probability (`options.augment`)".into())?;
                a.check().map_err(|e| anyhow!("metadata field `ada`: {e}"))?;
            }
            None => field("ada", !auto, "is missing: a run with `--augment-p auto` saves its probability there".into())?,
        }
        field(
            "options.max_features",
            o.max_features >= self.tfidf.dim(),
            format!("is {}, below the {} terms of the vocabulary", o.max_features, self.tfidf.dim()),
        )?;
        field("step", self.step == self.iteration, format!("is {}, but every iteration takes one step and `iteration` is {}", self.step, self.iteration))?;
        field("noise_rng", !self.noise_rng.is_stuck(), "is the all-zero state, which draws nothing but zeros".into())?;
        field("sample_captions", !self.sample_captions.is_empty(), "is empty".into())?;
        field("elapsed_seconds", self.elapsed_seconds.is_finite() && self.elapsed_seconds >= 0.0, format!("is {}", self.elapsed_seconds))?;
        Ok(())
    }
}

/// What a finished run reports.
#[derive(Debug)]
pub struct RunSummary {
    pub iterations: u64,
    pub last_checkpoint: PathBuf,
    pub seconds: f64,
    pub final_stats: super::StepStats,
    /// Stopped before --iters because `stop` asked; the last checkpoint is of the last
    /// finished iteration, so `--resume` continues exactly.
    pub interrupted: bool,
}

/// Output files of a run folder.
pub struct RunPaths {
    pub dir: PathBuf,
}

impl RunPaths {
    pub fn metrics(&self) -> PathBuf {
        self.dir.join("metrics.csv")
    }
    pub fn loss_plot(&self) -> PathBuf {
        self.dir.join("loss.png")
    }
    pub fn samples_dir(&self) -> PathBuf {
        self.dir.join("samples")
    }
    pub fn sample(&self, iteration: u64) -> PathBuf {
        self.samples_dir().join(format!("step-{iteration:08}.png"))
    }
    pub fn sample_captions(&self) -> PathBuf {
        self.samples_dir().join("captions.txt")
    }
}

/// Up to 8 distinct captions spread over the data set, for the fixed sample grid.
pub fn pick_sample_captions(captions: &[String], k: usize) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let n = captions.len();
    let mut i = 0;
    while out.len() < k && i < n {
        // Golden-ratio stride visits the data set evenly without a random generator.
        let idx = (i as f64 * 0.618_033_988_75 * n as f64) as usize % n;
        if !out.contains(&captions[idx]) {
            out.push(captions[idx].clone());
        }
        i += 1;
    }
    out
}

/// Samples per caption in the grid.
pub const GRID_COLUMNS: usize = 8;

/// Trains on `be`. `resume` is the checkpoint to continue (already chosen by the caller).
pub fn train<B: Backend>(be: &B, opts: &TrainOptions, out: &Path, resume: Option<(PathBuf, Checkpoint)>, progress: bool) -> Result<RunSummary> {
    train_until(be, opts, out, resume, progress, &mut |_| false)
}

/// `train`, asking `stop(iteration)` after every iteration whether to end the run there
/// (Ctrl-C in the CLI). Stopping writes what a --save-every iteration writes (metrics, a
/// sample grid, a checkpoint of that iteration), so no finished iteration is lost.
pub fn train_until<B: Backend>(
    be: &B,
    opts: &TrainOptions,
    out: &Path,
    resume: Option<(PathBuf, Checkpoint)>,
    progress: bool,
    stop: &mut dyn FnMut(u64) -> bool,
) -> Result<RunSummary> {
    ensure!(opts.batch > 0, "--batch must be at least 1");
    ensure!(opts.save_every > 0 && opts.sample_every > 0, "--save-every and --sample-every must be at least 1");
    ensure!(opts.keep > 0, "--keep must be at least 1");
    ensure!(
        be.precision() == opts.precision,
        "the run trains in --precision {} but the backend {} multiplies in {}",
        opts.precision,
        be.name(),
        be.precision()
    );
    opts.check_training_flags()?;
    if opts.progressive {
        super::grow::check_size(opts.size)?;
        GrowSchedule::check(opts.fade_images, opts.stage_images)?;
    }
    opts.check_batch_schedule()?;
    opts.check_adam_reset()?;
    let model = opts.model_config(ModelConfig::new(opts.size, opts.width)?.text_dim)?;
    model.check_batch(opts.batch)?;
    for &(side, b) in &opts.batch_schedule {
        model.check_batch(b).with_context(|| format!("--batch-schedule: the batch of side {side}"))?;
    }
    let state = match &resume {
        Some((path, ck)) => Some(RunState::from_checkpoint(ck).with_context(|| format!("--resume {}", path.display()))?),
        None => None,
    };
    ensure!(state.is_some() || opts.iters > 0, "--iters must be at least 1: a new run needs iterations to run");
    // Memory, before anything is allocated: with the checkpoint's text size, or for a new
    // run the largest its vocabulary can have.
    let text_dim = state.as_ref().map_or(opts.max_features.max(1), |s| s.config.text_dim);
    let usage = Usage::Training { batch: opts.batch };
    ModelConfig { text_dim, ..model }.check_memory(usage, be.memory_available()).with_context(|| match &resume {
        Some((path, _)) => format!("--resume {}", path.display()),
        None => format!("--size {} --width {} --batch {}", opts.size, opts.width, opts.batch),
    })?;
    // A batch schedule: each level at its own batch (the larger batches are the lower
    // levels', whose layers are smaller).
    if !opts.batch_schedule.is_empty() {
        for (level, b) in opts.level_batches()?.into_iter().enumerate() {
            ModelConfig { text_dim, ..model.clone() }.check_memory_at_level(level, b, be.memory_available()).with_context(|| match &resume {
                Some((path, _)) => format!("--resume {}", path.display()),
                None => format!("--size {} --width {} --batch-schedule {}", opts.size, opts.width, super::grow::describe_batch_schedule(&opts.batch_schedule)),
            })?;
        }
    }

    let lock = RunLock::acquire(out)?;
    let mut started = false;
    let result = train_locked(be, opts, out, resume, state, progress, stop, &mut started);
    if result.is_err() && !started {
        // Refused before the first file of the run: leave no folder behind.
        lock.discard();
    }
    result
}

/// How many iterations in a row D's outputs stay pinned at 0 or 1 before the run says it is
/// dead.
pub const PINNED_ITERATIONS: u64 = 20;

/// Whether a mean probability of D is pinned at 0 or 1: the logits are so large that the
/// sigmoid has no slope left, and neither network gets a gradient through it.
fn pinned(p: f32) -> bool {
    !(1e-4..=1.0 - 1e-4).contains(&p)
}

/// `train_until` with the run folder locked; sets `started` once it writes into it.
#[allow(clippy::too_many_arguments)]
fn train_locked<B: Backend>(
    be: &B,
    opts: &TrainOptions,
    out: &Path,
    resume: Option<(PathBuf, Checkpoint)>,
    state: Option<RunState>,
    progress: bool,
    stop: &mut dyn FnMut(u64) -> bool,
    started: &mut bool,
) -> Result<RunSummary> {
    let paths = RunPaths { dir: out.to_path_buf() };
    if resume.is_none() && !checkpoint::list(out)?.is_empty() {
        bail!("--out {} already holds a run (checkpoints/); continue it with --resume {} or choose another --out", out.display(), out.display());
    }
    let source = DataSource::from_arg(opts.data.clone());
    let prep = PrepareOptions {
        size: opts.size,
        crop: opts.crop,
        cache_dir: opts.cache_dir.clone(),
        max_features: opts.max_features,
        progress,
        tfidf: state.as_ref().map(|s| s.tfidf.clone()),
    };
    crate::eval::split::check_fraction(opts.eval_split)?;
    let mut data = data::prepare(&source, &prep)?;
    let split = crate::eval::split::split(&data.ids, opts.eval_split);
    let mut evaluator = if opts.eval_every > 0 {
        let cache_dir = crate::eval::cache_dir(opts.cache_dir.as_ref())?;
        Some(crate::eval::TrainEval::new(&data, &split, opts.eval_split, &crate::eval::source_name(&source), &cache_dir, opts.seed, progress)?)
    } else {
        None
    };
    if opts.eval_split > 0.0 {
        ensure!(!split.train.is_empty(), "--eval-split {} holds out every product of {}; use a smaller fraction", opts.eval_split, source.describe());
        eprintln!(
            "eval split: {} of {} products held out for evaluation (--eval-split {}), training on {}",
            split.held_out.len(),
            data.len(),
            opts.eval_split,
            split.train.len()
        );
        data.keep_rows(&split.train);
    }
    let data: Arc<PreparedData> = Arc::new(data);
    ensure!(
        data.len() >= opts.batch,
        "--batch {} is larger than the data set ({} usable products in {}); use a smaller --batch",
        opts.batch,
        data.len(),
        source.describe()
    );
    if let Some(&(side, b)) = opts.batch_schedule.iter().find(|e| e.1 > data.len()) {
        bail!(
            "--batch-schedule {}: the batch {b} of side {side} is larger than the data set ({} usable products in {}); use a batch of at most {}",
            super::grow::describe_batch_schedule(&opts.batch_schedule),
            data.len(),
            source.describe(),
            data.len()
        );
    }
    let cfg = opts.model_config(data.tfidf.dim())?;
    cfg.check_batch(opts.batch)?;
    ensure!(cfg.text_dim > 0, "the captions of {} give an empty vocabulary: no word of two or more letters", source.describe());

    if let (Some(s), Some((path, _))) = (&state, &resume) {
        if s.config != cfg {
            bail!(
                "--resume {}: the checkpoint's model ({} px, width {}, text {}, minibatch std {}, text in D {}, progressive {}) does not match this run's ({} px, width {}, text {}, minibatch std {}, text in D {}, progressive {})",
                path.display(),
                s.config.size,
                s.config.width,
                s.config.text_dim,
                s.config.minibatch_std,
                s.config.text_in_d,
                s.config.progressive,
                cfg.size,
                cfg.width,
                cfg.text_dim,
                cfg.minibatch_std,
                cfg.text_in_d,
                cfg.progressive
            );
        }
        if let Some(then) = s.data_stamp.as_ref().filter(|then| **then != data.stamp) {
            let change = match data.stamp.products.cmp(&then.products) {
                std::cmp::Ordering::Greater => format!("{} products added", data.stamp.products - then.products),
                std::cmp::Ordering::Less => format!("{} products removed", then.products - data.stamp.products),
                std::cmp::Ordering::Equal => "as many products, but other images or captions".to_string(),
            };
            bail!(
                "--resume {}: the data set {} has changed since the run started: {} usable products then, {} now ({change}); an exact resume needs the same products: restore the data set, or train a new run on it with another --out",
                path.display(),
                source.describe(),
                then.products,
                data.stamp.products
            );
        }
        let (cursor, batch) = (s.loader.cursor, opts.batch);
        if opts.batch_schedule.is_empty() {
            ensure!(
                cursor.is_multiple_of(batch) && cursor + batch <= data.len(),
                "--resume {}: metadata field `loader.cursor` is {cursor}, not the start of a batch of {batch} in a data set of {}",
                path.display(),
                data.len()
            );
        } else {
            // With a batch schedule the loader continues its epoch at the new batch when the
            // batch changes, so the cursor is a multiple of no single batch; it is where the
            // next batch starts (the loader moves a batch that does not fit to the next epoch).
            ensure!(
                cursor < data.len(),
                "--resume {}: metadata field `loader.cursor` is {cursor}, past the end of a data set of {}",
                path.display(),
                data.len()
            );
        }
    }

    let mut gan = Gan::new(be, &cfg, &opts.hyper, opts.seed)?;
    if let Some(schedule) = opts.ema() {
        gan.enable_ema(be, schedule)?;
    }
    let (mut iteration, mut noise_rng, loader_state, sample_captions, elapsed0) = match (&state, &resume) {
        (Some(s), Some((path, ck))) => {
            gan.import(be, &ck.tensors).with_context(|| format!("--resume {}", path.display()))?;
            gan.step = s.step;
            (s.iteration, s.noise_rng.clone(), s.loader.clone(), s.sample_captions.clone(), s.elapsed_seconds)
        }
        _ => (0, Rng::derive(opts.seed, "noise"), LoaderState::default(), pick_sample_captions(&data.captions, 8), 0.0),
    };
    // The augmentation probability: fixed, or ADA's, continued from the checkpoint.
    let ada_target = match opts.augment.p {
        AugmentP::Auto { target } if opts.augment.is_on() => Some(target),
        _ => None,
    };
    let mut ada = match (&state, ada_target) {
        (_, None) => None,
        (Some(s), Some(_)) => Some(s.ada.clone().context("the checkpoint holds no `ada` state for --augment-p auto")?),
        (None, Some(_)) => Some(AdaState::default()),
    };
    let with_augment = opts.augment.is_on();
    if iteration >= opts.iters {
        bail!("the run is already at iteration {iteration}; ask for more with --iters (now {})", opts.iters);
    }
    let loader_options = |batch| LoaderOptions { batch, seed: opts.seed, flip: opts.flip, mismatched: opts.hyper.matching_aware > 0.0 };
    let mut loader_batch = opts.batch_at(iteration);
    let mut loader = data::Loader::new(data.clone(), loader_options(loader_batch), loader_state)?;

    // Fixed noise and captions for the sample grids.
    let mut sample_noise = vec![0.0f32; sample_captions.len() * GRID_COLUMNS * cfg.noise_dim];
    Rng::derive(opts.seed, "samples").fill_normal(&mut sample_noise, 0.0, 1.0);
    let sample_texts: Vec<f32> = sample_captions.iter().flat_map(|c| std::iter::repeat_n(data.tfidf.encode(c), GRID_COLUMNS).flatten()).collect();
    *started = true;
    if resume.is_some() {
        report::truncate_metrics(&paths.metrics(), iteration, opts.eval_every > 0, with_augment)?;
        set_aside_newer_checkpoints(out, iteration)?;
    }
    std::fs::create_dir_all(paths.samples_dir()).with_context(|| format!("cannot create {}", paths.samples_dir().display()))?;
    report::write_atomic(&paths.sample_captions(), (sample_captions.join("\n") + "\n").as_bytes())?;

    let mut noise: Vec<f32> = Vec::new();
    let started_at = Instant::now();
    let bar = progress_bar(progress, iteration, opts.iters);
    let mut pending: Vec<MetricsRow> = Vec::new();
    let mut last_checkpoint = resume.as_ref().map(|(p, _)| p.clone());
    let mut stats = super::StepStats::default();
    let mut interrupted = false;
    let mut checked_at = iteration;
    let mut pinned_since: Option<u64> = None;
    let mut stages = super::grow::StageClock::default();
    let kept = |last: &Option<PathBuf>| match last {
        Some(p) => format!("the last good checkpoint is {}", p.display()),
        None => "no checkpoint was written before it".to_string(),
    };

    let save = |gan: &Gan<B>, iteration: u64, noise_rng: &Rng, loader: &LoaderState, elapsed: f64, ada: &Option<AdaState>| -> Result<PathBuf> {
        let meta = RunState {
            format: checkpoint::FORMAT.to_string(),
            config: cfg.clone(),
            options: opts.clone(),
            tfidf: data.tfidf.clone(),
            iteration,
            step: gan.step,
            noise_rng: noise_rng.clone(),
            loader: loader.clone(),
            sample_captions: sample_captions.clone(),
            elapsed_seconds: elapsed,
            data_stamp: Some(data.stamp.clone()),
            ada: ada.clone(),
            progress: gan.progress(),
        };
        let path = checkpoint::path_for(out, iteration);
        checkpoint::save(&path, &Checkpoint { meta: serde_json::to_value(&meta)?, tensors: gan.export(be)? })?;
        checkpoint::prune(out, opts.keep)?;
        Ok(path)
    };

    // Where a progressive run stands before each iteration, computed once per iteration:
    // after each step it is the next iteration's (what the networks draw at, and what a
    // checkpoint records).
    let mut position = opts.position_at(iteration);
    if let Some(pos) = position {
        gan.set_progress(pos.progress)?;
    }
    while iteration < opts.iters {
        // The batch of this iteration's level (`--batch-schedule`); the loader goes on from
        // where it is at a new batch when it changes.
        let n = position.map_or(opts.batch, |p| p.batch);
        if n != loader_batch {
            loader = data::Loader::new(data.clone(), loader_options(n), loader.state())?;
            loader_batch = n;
        }
        noise.resize(n * cfg.noise_dim, 0.0);
        let batch = loader.next_batch()?;
        let loader_after = loader.state();
        noise_rng.fill_normal(&mut noise, 0.0, 1.0);
        let inputs = StepInputs { images: &batch.images, texts: &batch.texts, noise: &noise, mismatched: batch.mismatched_texts.as_deref() };
        if let Some(pos) = position {
            gan.images_shown = Some(pos.images);
            if opts.adam_reset == super::grow::AdamReset::Phase {
                // Cleared when a phase starts; a run resumed inside a phase has the moments
                // from its checkpoint and takes the phase's step count from the schedule.
                if pos.since == iteration {
                    gan.reset_adam(be)?;
                }
                gan.adam_since = pos.since;
            }
            if progress {
                stages.enter(pos.progress, iteration, elapsed0 + started_at.elapsed().as_secs_f64(), &bar);
            }
        }
        let augment_p = with_augment.then(|| ada.as_ref().map_or(opts.augment.initial_p(), |a| a.p));
        gan.augment = augment_p.map(|p| AugmentDraws::draw(opts.seed, iteration, opts.augment.policies, p, opts.augment.fill, n, gan.d.side()));
        stats = gan.iteration(be, n, &inputs)?;
        if let (Some(a), Some(target)) = (&mut ada, ada_target) {
            a.update(stats.real_sign as f64, target, n);
        }
        iteration += 1;
        position = opts.position_at(iteration);
        if let Some(pos) = position {
            gan.set_progress(pos.progress)?;
        }
        if !stats.is_finite() {
            bar.abandon();
            bail!(
                "the loss became non-finite at iteration {iteration} (loss_D {}, loss_G {}); training stopped and {}; try a lower --lr",
                stats.loss_d,
                stats.loss_g,
                kept(&last_checkpoint)
            );
        }
        if pinned(stats.d_real) && pinned(stats.d_fake) {
            let since = *pinned_since.get_or_insert(iteration);
            if iteration - since + 1 == PINNED_ITERATIONS {
                bar.suspend(|| {
                    eprintln!(
                        "warning: iteration {iteration}: D's outputs have been pinned at 0 or 1 since iteration {since} (D(x) {}, D(G(z)) {}): the discriminator's sigmoid is saturated and passes no gradient, so this run is dead; start again with a lower --lr",
                        stats.d_real, stats.d_fake
                    )
                });
            }
        } else {
            pinned_since = None;
        }
        let elapsed = elapsed0 + started_at.elapsed().as_secs_f64();
        pending.push(MetricsRow {
            iteration,
            epoch: loader_after.epoch,
            loss_d: stats.loss_d,
            loss_g: stats.loss_g,
            d_real: stats.d_real,
            d_fake: stats.d_fake,
            seconds: elapsed,
            eval: None,
            augment_p,
        });
        bar.set_position(iteration);
        bar.set_message(format!("loss_D {:.3}  loss_G {:.3}  D(x) {:.2}  D(G(z)) {:.2}", stats.loss_d, stats.loss_g, stats.d_real, stats.d_fake));

        interrupted = iteration < opts.iters && stop(iteration);
        let last = iteration == opts.iters || interrupted;
        let grid = iteration.is_multiple_of(opts.sample_every) || last;
        let save_now = iteration.is_multiple_of(opts.save_every) || last;
        let eval_now = evaluator.is_some() && (iteration.is_multiple_of(opts.eval_every) || last);
        let flush = pending.len() >= 50 || save_now;
        // The whole state (weights, batchnorm statistics, Adam moments) is checked before
        // anything is measured, drawn or saved from it, and at least every 50 iterations: a
        // diverged run stops there, and no grid or checkpoint of it is written (its metrics
        // rows are, to show how it diverged).
        if flush || grid || eval_now {
            if let Some(bad) = gan.first_non_finite(be)? {
                bar.abandon();
                report::append_metrics(&paths.metrics(), &pending, opts.eval_every > 0, with_augment)?;
                bail!(
                    "the run diverged between iterations {checked_at} and {iteration}: {bad}; training stopped and {}; try a lower --lr",
                    kept(&last_checkpoint)
                );
            }
            checked_at = iteration;
        }
        if (grid || save_now || eval_now) && !gan.ema_stats_fresh() {
            gan.recompute_ema_stats(be, &ema_stat_batches(&data, opts.batch, cfg.noise_dim, opts.seed, iteration))?;
        }
        if let (Some(ev), true) = (&mut evaluator, eval_now) {
            let f = ev.measure(be, &mut gan)?;
            if let Some(row) = pending.last_mut() {
                row.eval = Some([f.swd, f.fd, f.cond]);
            }
        }
        if flush {
            report::append_metrics(&paths.metrics(), &pending, opts.eval_every > 0, with_augment)?;
            pending.clear();
        }
        if grid {
            let imgs = gan.draw(be, &sample_noise, &sample_texts)?;
            if imgs.iter().any(|v| !v.is_finite()) {
                bar.abandon();
                bail!(
                    "the run diverged at iteration {iteration}: the generator draws non-finite pixels; training stopped and {}; try a lower --lr",
                    kept(&last_checkpoint)
                );
            }
            report::save_png(&paths.sample(iteration), &report::grid_image(&imgs, cfg.size, sample_captions.len(), GRID_COLUMNS, zoom_for(cfg.size)))?;
        }
        if save_now {
            last_checkpoint = Some(save(&gan, iteration, &noise_rng, &loader_after, elapsed, &ada)?);
            report::plot_losses(&paths.loss_plot(), &report::read_metrics(&paths.metrics())?)?;
            if bar.is_hidden() && progress {
                eprintln!(
                    "iteration {iteration}/{}: loss_D {:.4} loss_G {:.4} D(x) {:.3} D(G(z)) {:.3} ({:.2} it/s)",
                    opts.iters,
                    stats.loss_d,
                    stats.loss_g,
                    stats.d_real,
                    stats.d_fake,
                    (iteration as f64 - state.as_ref().map_or(0, |s| s.iteration) as f64) / started_at.elapsed().as_secs_f64()
                );
            }
        }
        if interrupted {
            bar.abandon();
            break;
        }
    }
    if !interrupted {
        bar.finish();
    }
    if opts.progressive && progress {
        stages.finish(iteration, elapsed0 + started_at.elapsed().as_secs_f64());
        for line in stages.report() {
            eprintln!("{line}");
        }
    }
    Ok(RunSummary {
        iterations: iteration,
        last_checkpoint: last_checkpoint.context("no checkpoint written")?,
        seconds: started_at.elapsed().as_secs_f64(),
        final_stats: stats,
        interrupted,
    })
}

/// The batches the EMA generator's batchnorm statistics are recomputed over at
/// `iteration`: `EMA_BN_BATCHES` of `batch` training captions with fresh noise, all drawn
/// from a stream of their own derived from the seed and the iteration, so that a resumed
/// run recomputes exactly what the uninterrupted one did (and the training streams are
/// not touched).
fn ema_stat_batches(data: &PreparedData, batch: usize, noise_dim: usize, seed: u64, iteration: u64) -> Vec<(Vec<f32>, Vec<f32>)> {
    let mut rng = Rng::derive(seed, &format!("ema-bn-{iteration}"));
    (0..super::ema::EMA_BN_BATCHES)
        .map(|_| {
            let texts: Vec<f32> = (0..batch).flat_map(|_| data.tfidf.encode(&data.captions[rng.below(data.len())])).collect();
            let mut noise = vec![0.0f32; batch * noise_dim];
            rng.fill_normal(&mut noise, 0.0, 1.0);
            (noise, texts)
        })
        .collect()
}

/// Checkpoints of `out` newer than the resumed `iteration` (a damaged newest one that the
/// resume skipped, or a later history when an older file is resumed) are renamed to
/// `step-N.safetensors.set-aside`, so the resumed run neither replaces nor prunes them.
fn set_aside_newer_checkpoints(out: &Path, iteration: u64) -> Result<()> {
    for p in checkpoint::list(out)?.into_iter().filter(|p| checkpoint::step_of(p).is_some_and(|s| s > iteration)) {
        let mut aside = p.clone().into_os_string();
        aside.push(".set-aside");
        std::fs::rename(&p, &aside).with_context(|| format!("cannot set aside {}, newer than the resumed iteration {iteration}", p.display()))?;
        eprintln!(
            "warning: {} is newer than the resumed iteration {iteration}: renamed to {} so that this run neither replaces nor prunes it",
            p.display(),
            PathBuf::from(aside).display()
        );
    }
    Ok(())
}

/// Small images are scaled up in grids so they stay visible.
pub fn zoom_for(size: usize) -> usize {
    (128 / size).max(1)
}

fn progress_bar(show: bool, pos: u64, len: u64) -> indicatif::ProgressBar {
    use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
    let bar = if show { ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr()) } else { ProgressBar::hidden() };
    bar.set_style(ProgressStyle::with_template("{bar:30} {pos}/{len} it  {per_sec}  ETA {eta}  {msg}").expect("static template").progress_chars("=> "));
    bar.set_position(pos);
    bar.reset_eta();
    bar
}
