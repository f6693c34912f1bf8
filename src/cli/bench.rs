//! `gan-engine bench`: the full-iteration benchmark (the same measurement as
//! `benches/train_step.rs`) for machines without cargo, and a per-op profile of one
//! iteration (`--profile`).
//!
//! On a GPU each timed iteration is measured with CUDA events recorded on the backend's
//! stream before and after it (`timer=cuda-events`); the op contract has no event API, so
//! this asks the concrete CUDA backend for them. The CPU and the simulation (which runs each
//! launch to completion on the host) are timed on the host clock between synchronisations
//! (`timer=host`).
//!
//! One line per configuration, `key=value` fields that scripts/compare.sh parses:
//! `ours ... timer=host median_s=1.0400 ... vs_1070ti=0.83`.

use anyhow::{ensure, Result};
use gan_engine::backend::cuda::EventTimer;
use gan_engine::backend::device::{self, Opened};
use gan_engine::backend::{Backend, Precision};
use gan_engine::model::{iteration_flops, ModelConfig, Progress, TextInD};
use gan_engine::train::augment::{AugmentDraws, Policies};
use gan_engine::train::ema::EmaSchedule;
use gan_engine::train::{synthetic_batch, Gan, Hyper, StepInputs};
use std::time::Instant;

/// The article's run: 300,000 iterations in 72 hours on a GTX 1070 Ti, 128 px.
pub const BASELINE_S: f64 = 0.864;

#[derive(clap::Args)]
pub struct Args {
    #[cfg_attr(not(feature = "sim"), doc = "cpu, cuda, or auto (see `train --help`).")]
    #[cfg_attr(feature = "sim", doc = "cpu, cuda, sim, or auto (see `train --help`).")]
    #[arg(long, default_value = "cpu")]
    device: String,
    /// The discriminator with `train --minibatch-std G` (0: without).
    #[arg(long, value_name = "G", num_args = 0..=1, default_value_t = 0, default_missing_value = "4")]
    minibatch_std: usize,
    /// The discriminator with `train --text-in-d MODE` (tile or projection).
    #[arg(long, value_name = "MODE", default_value_t = TextInD::Tile)]
    text_in_d: TextInD,
    /// Also keep the EMA generator, as `train --ema-half-life 10000` does: one `ema_update`
    /// over G's weights after every G step.
    #[arg(long)]
    ema: bool,
    /// Also augment every image D sees, as `train --augment POLICIES --augment-p 1` does
    /// (the parameters drawn on the host in every timed iteration, as in training).
    #[arg(long, value_name = "POLICIES")]
    augment: Option<String>,
    /// Also run the mismatched-caption term of `train --matching-aware W` (one more forward
    /// and backward pass of D, over the real images with other captions).
    #[arg(long, value_name = "W", default_value_t = 0.0)]
    matching_aware: f32,
    /// Also run the mode-seeking term of `train --mode-seeking M` (the fake batch's second
    /// half repeats the first half's captions; needs an even --batch).
    #[arg(long, value_name = "M", default_value_t = 0.0)]
    mode_seeking: f32,
    /// The networks of `train --progressive`, at --level (stabilised; a fading level with
    /// --fade): --size is the final size.
    #[arg(long)]
    progressive: bool,
    /// With --progressive: the level timed, 0 for 4x4 [default: the last].
    #[arg(long, requires = "progressive")]
    level: Option<usize>,
    /// With --progressive: time the level while it fades in (alpha 0.5: the previous
    /// level's toRGB and fromRGB run too).
    #[arg(long, requires = "progressive")]
    fade: bool,
    /// Image sizes, comma-separated (32, 64, 128).
    #[arg(long, value_delimiter = ',', default_value = "64")]
    size: Vec<usize>,
    /// Batch sizes, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "64")]
    batch: Vec<usize>,
    /// Base channel count of both networks.
    #[arg(long, default_value_t = 64)]
    width: usize,
    /// Timed iterations; the median is reported.
    #[arg(long, default_value_t = 5)]
    iters: usize,
    /// Untimed iterations first (allocation, caches, kernel compilation).
    #[arg(long, default_value_t = 2)]
    warmup: usize,
    /// CPU threads (default: all cores, or RAYON_NUM_THREADS).
    #[arg(long)]
    threads: Option<usize>,
    /// GEMM precisions, comma-separated: f32, bf16 (operands rounded to bf16, sums in f32).
    #[arg(long, value_delimiter = ',', default_value = "f32")]
    precision: Vec<String>,
    /// Also time every op call of the timed iterations and print where the time goes.
    #[arg(long)]
    profile: bool,
}

pub fn run(a: Args) -> Result<()> {
    ensure!(a.iters > 0, "--iters must be at least 1");
    if let Some(p) = &a.augment {
        Policies::parse(p).map_err(|e| anyhow::anyhow!("--augment: {e:#}"))?;
    }
    ensure!(a.batch.iter().all(|b| *b > 0), "--batch must be at least 1");
    extras(&a)?.hyper.check()?;
    if let Some(t) = a.threads {
        ensure!(t > 0, "--threads must be at least 1");
        rayon::ThreadPoolBuilder::new().num_threads(t).build_global().map_err(|e| anyhow::anyhow!("cannot start {t} threads: {e}"))?;
    }
    let precisions = a.precision.iter().map(|p| p.parse::<Precision>()).collect::<Result<Vec<_>>>()?;
    // An explicit --device cuda on a machine without a GPU is an error with the reason
    // (exit code 2), never a line that could be mistaken for a result.
    for precision in precisions {
        match device::open(&a.device, Some(precision))? {
            Opened::Cpu(cpu) => run_on(cpu, &a, precision, Timer::Host)?,
            Opened::Gpu(gpu) => {
                let timer = gpu.event_timer()?.map_or(Timer::Host, Timer::Events);
                run_on(gpu, &a, precision, timer)?
            }
        }
    }
    Ok(())
}

/// The clock of the timed iterations.
pub enum Timer {
    /// The host clock, between device synchronisations.
    Host,
    /// CUDA events on the GPU's stream.
    Events(EventTimer),
}

impl Timer {
    pub fn label(&self) -> &'static str {
        match self {
            Timer::Host => "host",
            Timer::Events(_) => "cuda-events",
        }
    }

    /// Runs `f` (which queues device work on `be` and may wait for some of it) and returns its
    /// result and the seconds its work took, all queued work included. The device is idle
    /// when the interval starts.
    fn time<B: Backend, R>(&self, be: &B, f: impl FnOnce() -> Result<R>) -> Result<(R, f64)> {
        be.synchronize()?;
        match self {
            Timer::Host => {
                let t0 = Instant::now();
                let r = f()?;
                be.synchronize()?;
                Ok((r, t0.elapsed().as_secs_f64()))
            }
            Timer::Events(ev) => {
                ev.start()?;
                let r = f()?;
                let dt = ev.stop()?;
                Ok((r, dt))
            }
        }
    }
}

/// Every configuration plainly first, then (with --profile) again with the backend's
/// profiler on: its per-op synchronisation must not leak into the figures above.
fn run_on<B: Backend>(be: B, a: &Args, precision: Precision, timer: Timer) -> Result<()> {
    let mut configs = Vec::new();
    for &size in &a.size {
        for &batch in &a.batch {
            gan_engine::train::run::check_minibatch_std(a.minibatch_std, batch)?;
            gan_engine::train::run::check_mode_seeking(a.mode_seeking, batch)?;
            if a.progressive {
                gan_engine::train::grow::check_size(size)?;
            }
            let cfg = ModelConfig { minibatch_std: a.minibatch_std, text_in_d: a.text_in_d, progressive: a.progressive, ..ModelConfig::new(size, a.width)? };
            cfg.validate()?;
            cfg.check_batch(batch)?;
            if let Some(l) = a.level {
                ensure!(l < cfg.levels(), "--level {l}: a progressive model of {size} px has levels 0 to {}", cfg.levels() - 1);
            }
            configs.push((cfg, batch));
        }
    }
    for (cfg, batch) in &configs {
        let m = measure(&be, cfg, *batch, a.warmup, a.iters, &timer, false, &extras(a)?)?;
        println!("{}", m.line(&be, cfg, *batch, a.iters, precision, timer.label()));
    }
    if a.profile {
        for (cfg, batch) in &configs {
            println!("profile of {} px, width {}, batch {batch}, precision {precision}:", cfg.size, cfg.width);
            // Every op synchronises here: the host clock is the profile's clock.
            measure(&be, cfg, *batch, a.warmup, a.iters, &Timer::Host, true, &extras(a)?)?;
            print!("{}", be.profiler().report(a.iters));
            be.profiler().set_enabled(false);
            be.profiler().reset();
        }
    }
    Ok(())
}

pub struct Measurement {
    pub times: Vec<f64>,
    pub gflop: f64,
    /// What was timed besides the article's iteration.
    pub extras: Extras,
}

/// Work `train` can add to an iteration, timed with it: the EMA generator's update, the
/// augmentation of every image D sees, and the loss's extra terms.
#[derive(Clone, Debug, Default)]
pub struct Extras {
    pub ema: bool,
    pub augment: Option<Policies>,
    /// The training hyperparameters timed: the article's, with `--matching-aware` and
    /// `--mode-seeking` as asked (0: off).
    pub hyper: Hyper,
    /// Where a progressive model is timed: its level, and whether it fades in (alpha 0.5);
    /// `None`: the last level, stabilised.
    pub level: Option<(usize, bool)>,
}

fn extras(a: &Args) -> Result<Extras> {
    let level = a.progressive.then(|| (a.level.unwrap_or(usize::MAX), a.fade));
    Ok(Extras {
        ema: a.ema,
        augment: a.augment.as_deref().map(Policies::parse).transpose()?,
        hyper: Hyper { matching_aware: a.matching_aware, mode_seeking: a.mode_seeking, ..Hyper::default() },
        level,
    })
}

impl Measurement {
    pub fn median(&self) -> f64 {
        median(&self.times)
    }
    fn line<B: Backend>(&self, be: &B, cfg: &ModelConfig, batch: usize, iters: usize, precision: Precision, timer: &str) -> String {
        let med = self.median();
        let min = self.times.iter().cloned().fold(f64::INFINITY, f64::min);
        let mut spread = if cfg.minibatch_std > 0 { format!(" minibatch_std={}", cfg.minibatch_std) } else { String::new() };
        if cfg.text_in_d != TextInD::Tile {
            spread += &format!(" text_in_d={}", cfg.text_in_d);
        }
        if self.extras.ema {
            spread += " ema=10000";
        }
        if let Some(p) = self.extras.augment {
            spread += &format!(" augment={}", p.names());
        }
        if self.extras.hyper.matching_aware > 0.0 {
            spread += &format!(" matching_aware={}", self.extras.hyper.matching_aware);
        }
        if self.extras.hyper.mode_seeking > 0.0 {
            spread += &format!(" mode_seeking={}", self.extras.hyper.mode_seeking);
        }
        if let (true, Some((level, fade))) = (cfg.progressive, self.extras.level) {
            let level = level.min(cfg.levels() - 1);
            spread += &format!(" progressive_level={level} side={}{}", 4 << level, if fade && level > 0 { " fade=0.5" } else { "" });
        }
        format!(
            "ours gan-engine {} backend=\"{}\" size={} width={} batch={batch}{spread} precision={precision} threads={} iters={iters} timer={timer} median_s={med:.4} min_s={min:.4} it_per_s={:.3} gflop_per_s={:.1} vs_1070ti={:.3}",
            env!("CARGO_PKG_VERSION"),
            be.name(),
            cfg.size,
            cfg.width,
            rayon::current_num_threads(),
            1.0 / med,
            self.gflop / med,
            BASELINE_S / med
        )
    }
}

pub fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        0.5 * (s[n / 2 - 1] + s[n / 2])
    }
}

/// Warm-up, then `iters` timed full iterations (D step + G step, with both Adam steps)
/// on a fixed batch. Each timed iteration starts on an idle device and its interval ends
/// after all the work it queued (`Timer::time`); `iteration` also reads the losses back.
/// With `profile`, the backend's profiler times the iterations after the warm-up.
#[allow(clippy::too_many_arguments)] // the configuration, its clock and what is timed besides the iteration
pub fn measure<B: Backend>(
    be: &B,
    cfg: &ModelConfig,
    batch: usize,
    warmup: usize,
    iters: usize,
    timer: &Timer,
    profile: bool,
    extras: &Extras,
) -> Result<Measurement> {
    let mut gan = Gan::new(be, cfg, &extras.hyper, 1)?;
    if extras.ema {
        gan.enable_ema(be, EmaSchedule { half_life: 10_000.0, ramp: 0.05 })?;
    }
    if let (true, Some((level, fade))) = (cfg.progressive, extras.level) {
        let level = level.min(cfg.levels() - 1);
        gan.set_progress(Progress { level, alpha: if fade && level > 0 { 0.5 } else { 1.0 } })?;
    }
    let (images, texts, noise) = synthetic_batch(cfg, batch, 2);
    // The mismatched captions: each image with the next one's, as a shuffle would pair them.
    let mismatched = (extras.hyper.matching_aware > 0.0).then(|| [&texts[cfg.text_dim..], &texts[..cfg.text_dim]].concat());
    let inputs = StepInputs { images: &images, texts: &texts, noise: &noise, mismatched: mismatched.as_deref() };
    // One batch on the device for every iteration, as the PyTorch peer does: the timing
    // is the training step, not the host-to-device copy (training itself uploads a new
    // batch each iteration).
    gan.load_batch(be, batch, &inputs)?;
    let gflop = iteration_flops(&gan.g, &gan.d, batch) / 1e9;
    let mut times = Vec::with_capacity(iters);
    for i in 0..warmup + iters {
        if i == warmup && profile {
            be.profiler().reset();
            be.profiler().set_enabled(true);
        }
        let (stats, dt) = timer.time(be, || {
            if let Some(p) = extras.augment {
                gan.augment = Some(AugmentDraws::draw(1, i as u64, p, 1.0, 0.0, batch, gan.d.side()));
            }
            gan.iteration_loaded(be)
        })?;
        ensure!(stats.is_finite(), "non-finite loss at iteration {i}: {stats:?}");
        if i >= warmup {
            times.push(dt);
        }
    }
    Ok(Measurement { times, gflop, extras: extras.clone() })
}
