//! The training run: data, the loop, progress, samples, metrics, checkpoints, resume.

use super::checkpoint::{self, Checkpoint};
use super::report::{self, MetricsRow};
use super::{Gan, Hyper, StepInputs};
use crate::backend::{Backend, Precision};
use crate::data::{self, DataSource, LoaderOptions, LoaderState, PrepareOptions, PreparedData};
use crate::model::ModelConfig;
use crate::nn::Mode;
use crate::rng::Rng;
use crate::text::Tfidf;
use anyhow::{bail, ensure, Context, Result};
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
}

impl RunState {
    pub fn from_checkpoint(ck: &Checkpoint) -> Result<RunState> {
        serde_json::from_value(ck.meta.clone()).context("the checkpoint metadata is not from this version of gan-engine")
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

/// Makes sure `dir` exists and can be written, with a message that names the flag.
fn ensure_writable(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("--out {}: cannot create the folder; choose a writable --out", dir.display()))?;
    let probe = dir.join(".write-test");
    std::fs::write(&probe, b"").with_context(|| format!("--out {}: the folder is not writable; choose a writable --out", dir.display()))?;
    let _ = std::fs::remove_file(probe);
    Ok(())
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
    opts.hyper.check()?;
    ModelConfig::new(opts.size, opts.width)?.check_batch(opts.batch)?;
    ensure_writable(out)?;
    let paths = RunPaths { dir: out.to_path_buf() };
    if resume.is_none() && !checkpoint::list(out)?.is_empty() {
        bail!("--out {} already holds a run (checkpoints/); continue it with --resume {} or choose another --out", out.display(), out.display());
    }

    let state = match &resume {
        Some((path, ck)) => Some(RunState::from_checkpoint(ck).with_context(|| format!("--resume {}", path.display()))?),
        None => None,
    };
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
    let cfg = ModelConfig { text_dim: data.tfidf.dim(), ..ModelConfig::new(opts.size, opts.width)? };
    cfg.check_batch(opts.batch)?;
    ensure!(cfg.text_dim > 0, "the captions of {} give an empty vocabulary: no word of two or more letters", source.describe());

    let mut gan = Gan::new(be, &cfg, &opts.hyper, opts.seed)?;
    let (mut iteration, mut noise_rng, loader_state, sample_captions, elapsed0) = match (&state, &resume) {
        (Some(s), Some((path, ck))) => {
            if s.config != cfg {
                bail!(
                    "--resume {}: the checkpoint's model ({} px, width {}, text {}) does not match this run's ({} px, width {}, text {})",
                    path.display(),
                    s.config.size,
                    s.config.width,
                    s.config.text_dim,
                    cfg.size,
                    cfg.width,
                    cfg.text_dim
                );
            }
            gan.import(be, &ck.tensors).with_context(|| format!("--resume {}", path.display()))?;
            gan.step = s.step;
            report::truncate_metrics(&paths.metrics(), s.iteration, opts.eval_every > 0)?;
            (s.iteration, s.noise_rng.clone(), s.loader.clone(), s.sample_captions.clone(), s.elapsed_seconds)
        }
        _ => (0, Rng::derive(opts.seed, "noise"), LoaderState::default(), pick_sample_captions(&data.captions, 8), 0.0),
    };
    if iteration >= opts.iters {
        bail!("the run is already at iteration {iteration}; ask for more with --iters (now {})", opts.iters);
    }

    // Fixed noise and captions for the sample grids.
    let mut sample_noise = vec![0.0f32; sample_captions.len() * GRID_COLUMNS * cfg.noise_dim];
    Rng::derive(opts.seed, "samples").fill_normal(&mut sample_noise, 0.0, 1.0);
    let sample_texts: Vec<f32> = sample_captions.iter().flat_map(|c| std::iter::repeat_n(data.tfidf.encode(c), GRID_COLUMNS).flatten()).collect();
    std::fs::create_dir_all(paths.samples_dir()).with_context(|| format!("cannot create {}", paths.samples_dir().display()))?;
    report::write_atomic(&paths.sample_captions(), (sample_captions.join("\n") + "\n").as_bytes())?;

    let mut loader = data::Loader::new(
        data.clone(),
        LoaderOptions { batch: opts.batch, seed: opts.seed, flip: opts.flip, mismatched: opts.hyper.matching_aware > 0.0 },
        loader_state,
    )?;
    let mut noise = vec![0.0f32; opts.batch * cfg.noise_dim];
    let started = Instant::now();
    let bar = progress_bar(progress, iteration, opts.iters);
    let mut pending: Vec<MetricsRow> = Vec::new();
    let mut last_checkpoint = resume.as_ref().map(|(p, _)| p.clone());
    let mut stats = super::StepStats::default();
    let mut interrupted = false;

    let save = |gan: &Gan<B>, iteration: u64, noise_rng: &Rng, loader: &LoaderState, elapsed: f64| -> Result<PathBuf> {
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
        };
        let path = checkpoint::path_for(out, iteration);
        checkpoint::save(&path, &Checkpoint { meta: serde_json::to_value(&meta)?, tensors: gan.export(be)? })?;
        checkpoint::prune(out, opts.keep)?;
        Ok(path)
    };

    while iteration < opts.iters {
        let batch = loader.next_batch()?;
        let loader_after = loader.state();
        noise_rng.fill_normal(&mut noise, 0.0, 1.0);
        let inputs = StepInputs { images: &batch.images, texts: &batch.texts, noise: &noise, mismatched: batch.mismatched_texts.as_deref() };
        stats = gan.iteration(be, opts.batch, &inputs)?;
        iteration += 1;
        if !stats.is_finite() {
            bar.abandon();
            let kept = match &last_checkpoint {
                Some(p) => format!("the last good checkpoint is {}", p.display()),
                None => "no checkpoint was written before it".to_string(),
            };
            bail!(
                "the loss became non-finite at iteration {iteration} (loss_D {}, loss_G {}); training stopped and {kept}; try a lower --lr",
                stats.loss_d,
                stats.loss_g
            );
        }
        let elapsed = elapsed0 + started.elapsed().as_secs_f64();
        pending.push(MetricsRow {
            iteration,
            epoch: loader_after.epoch,
            loss_d: stats.loss_d,
            loss_g: stats.loss_g,
            d_real: stats.d_real,
            d_fake: stats.d_fake,
            seconds: elapsed,
            eval: None,
        });
        bar.set_position(iteration);
        bar.set_message(format!("loss_D {:.3}  loss_G {:.3}  D(x) {:.2}  D(G(z)) {:.2}", stats.loss_d, stats.loss_g, stats.d_real, stats.d_fake));

        interrupted = iteration < opts.iters && stop(iteration);
        let last = iteration == opts.iters || interrupted;
        if let Some(ev) = &mut evaluator {
            if iteration % opts.eval_every == 0 || last {
                let f = ev.measure(be, &mut gan)?;
                if let Some(row) = pending.last_mut() {
                    row.eval = Some([f.swd, f.fd, f.cond]);
                }
            }
        }
        if iteration % opts.sample_every == 0 || last {
            let imgs = gan.generate(be, &sample_noise, &sample_texts, Mode::Eval)?;
            report::save_png(&paths.sample(iteration), &report::grid_image(&imgs, cfg.size, sample_captions.len(), GRID_COLUMNS, zoom_for(cfg.size)))?;
        }
        if pending.len() >= 50 || iteration % opts.save_every == 0 || last {
            report::append_metrics(&paths.metrics(), &pending, opts.eval_every > 0)?;
            pending.clear();
        }
        if iteration % opts.save_every == 0 || last {
            last_checkpoint = Some(save(&gan, iteration, &noise_rng, &loader_after, elapsed)?);
            report::plot_losses(&paths.loss_plot(), &report::read_metrics(&paths.metrics())?)?;
            if bar.is_hidden() && progress {
                eprintln!(
                    "iteration {iteration}/{}: loss_D {:.4} loss_G {:.4} D(x) {:.3} D(G(z)) {:.3} ({:.2} it/s)",
                    opts.iters,
                    stats.loss_d,
                    stats.loss_g,
                    stats.d_real,
                    stats.d_fake,
                    (iteration as f64 - state.as_ref().map_or(0, |s| s.iteration) as f64) / started.elapsed().as_secs_f64()
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
    Ok(RunSummary {
        iterations: iteration,
        last_checkpoint: last_checkpoint.context("no checkpoint written")?,
        seconds: started.elapsed().as_secs_f64(),
        final_stats: stats,
        interrupted,
    })
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
