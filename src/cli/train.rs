use anyhow::{bail, Context, Result};
use gan_engine::backend::device::{self, Opened};
use gan_engine::backend::{Core, Precision};
use gan_engine::eval::split::DEFAULT_EVAL_SPLIT;
use gan_engine::model::TextInD;
use gan_engine::text::DEFAULT_MAX_FEATURES;
use gan_engine::train::augment::{parse_fill, AugmentOptions, AugmentP, Policies};
use gan_engine::train::checkpoint;
use gan_engine::train::grow::{parse_batch_schedule, AdamReset, GrowSchedule, DEFAULT_PHASE_IMAGES};
use gan_engine::train::run::{iters_for_epochs, train_until, RunState, TrainOptions};
use gan_engine::train::Hyper;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

#[derive(clap::Args)]
pub struct Args {
    /// Training data: a Kaggle-layout folder (styles.csv + images/) or a folder with
    /// captions.csv / captions.jsonl. Default: the built-in synthetic catalogue.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Image side in pixels: 32, 64 or 128 [default: 64].
    #[arg(long, allow_negative_numbers = true, value_parser = super::count::<usize>)]
    size: Option<usize>,
    /// Base channel count of both networks [default: 64].
    #[arg(long, allow_negative_numbers = true, value_parser = super::count::<usize>)]
    width: Option<usize>,
    /// Images per batch [default: 64].
    #[arg(long, allow_negative_numbers = true, value_parser = super::count::<usize>)]
    batch: Option<usize>,
    /// Total iterations (a resumed run counts the ones already done).
    #[arg(long, conflicts_with = "epochs", allow_negative_numbers = true, value_parser = super::count::<u64>)]
    iters: Option<u64>,
    /// Train for this many passes over the data set instead of --iters.
    #[arg(long, allow_negative_numbers = true, value_parser = super::count::<u64>)]
    epochs: Option<u64>,
    /// Adam learning rate [default: 2e-4].
    #[arg(long, allow_negative_numbers = true)]
    lr: Option<f32>,
    /// Adam beta1 [default: 0.5].
    #[arg(long, allow_negative_numbers = true)]
    beta1: Option<f32>,
    /// Adam beta2 [default: 0.999].
    #[arg(long, allow_negative_numbers = true)]
    beta2: Option<f32>,
    /// Weight W of the mismatched-caption term (GAN-CLS); 0 is the article's loss [default: 0].
    #[arg(long, allow_negative_numbers = true)]
    matching_aware: Option<f32>,
    /// Weight M of the mode-seeking term (MSGAN, Mao et al. 2019): the second half of each
    /// fake batch repeats the first half's captions with other noise, and G is rewarded
    /// for drawing those pairs apart (`M / (r + 1e-5)` in its loss, r the image distance
    /// per unit of noise distance); against samples that ignore the noise. Needs an even
    /// --batch; 0 is off, MSGAN uses 1 [default: 0].
    #[arg(long, value_name = "M", allow_negative_numbers = true)]
    mode_seeking: Option<f32>,
    #[cfg_attr(not(feature = "sim"), doc = "cpu, cuda, or auto (cuda when a GPU is usable, else cpu).")]
    #[cfg_attr(feature = "sim", doc = "cpu, cuda, sim, or auto (cuda when a GPU is usable, else cpu; sim: the kernels in the CPU simulation).")]
    #[arg(long, default_value = "auto")]
    device: String,
    /// Run folder: checkpoints/, samples/, metrics.csv, loss.png. Default: the --resume
    /// folder, else runs/train.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Seed of the weights, the noise and the data order [default: 1].
    #[arg(long, allow_negative_numbers = true, value_parser = super::seed)]
    seed: Option<u64>,
    /// Write a checkpoint every N iterations [default: 500].
    #[arg(long, allow_negative_numbers = true, value_parser = super::count::<u64>)]
    save_every: Option<u64>,
    /// Write a sample grid every N iterations [default: 250].
    #[arg(long, allow_negative_numbers = true, value_parser = super::count::<u64>)]
    sample_every: Option<u64>,
    /// Keep the newest K checkpoints [default: 3].
    #[arg(long, allow_negative_numbers = true, value_parser = super::count::<usize>)]
    keep: Option<usize>,
    /// Continue the run in this folder (or from this checkpoint file) exactly where it stopped.
    #[arg(long)]
    resume: Option<PathBuf>,
    /// Centre-crop non-square images instead of padding them with white.
    #[arg(long)]
    crop: bool,
    /// Do not flip training images horizontally at random.
    #[arg(long)]
    no_flip: bool,
    /// Vocabulary size of the TF-IDF text vectors [default: 256].
    #[arg(long, allow_negative_numbers = true, value_parser = super::count::<usize>)]
    max_features: Option<usize>,
    /// Folder for decoded-image caches (default: the user cache folder).
    #[arg(long)]
    cache_dir: Option<PathBuf>,
    /// GEMM precision of the convolutions and linear layers: f32, or bf16 (operands rounded
    /// to bf16, products summed in f32, as PyTorch's autocast; weights, Adam and batchnorm
    /// stay f32) [default: f32].
    #[arg(long)]
    precision: Option<String>,
    /// Fraction of the products held out for evaluation (by a hash of each product id) and
    /// never trained on; 0 trains on every product [default: 0.1].
    #[arg(long)]
    eval_split: Option<f64>,
    /// Measure SWD, FD and conditioning on up to 256 held-out products every N iterations
    /// (`--eval-every` alone: every 500) into metrics.csv and loss.png [default: off].
    #[arg(long, num_args = 0..=1, default_missing_value = "500")]
    eval_every: Option<u64>,
    /// Minibatch standard deviation (ProGAN) at the head of the discriminator, over groups
    /// of G images of a batch (`--minibatch-std` alone: 4); G divides --batch; 0 is off
    /// [default: 0].
    #[arg(long, value_name = "G", num_args = 0..=1, default_missing_value = "4")]
    minibatch_std: Option<usize>,
    /// Differentiable augmentation (DiffAugment) of every image D sees, real and fake, in
    /// both steps: a comma-separated subset of translation, cutout, color [default: none].
    #[arg(long, value_name = "POLICIES")]
    augment: Option<String>,
    /// Probability with which each --augment policy is applied to each image, or `auto`:
    /// ADA's adaptive probability, from 0, raised while D is overconfident on the real
    /// images (needs --augment) [default: 1].
    #[arg(long, value_name = "P|auto")]
    augment_p: Option<String>,
    /// Target of `--augment-p auto` for the mean sign of D's logits on the real images
    /// [default: 0.6].
    #[arg(long, value_name = "T")]
    augment_target: Option<f64>,
    /// What --augment's translation shifts in from outside the image and its cutout covers:
    /// grey (DiffAugment's), white, black, or a pixel value from 0 to 255. On a catalogue
    /// shot on white, white keeps the grey out of the generator's background [default: grey].
    #[arg(long, value_name = "grey|white|black|LEVEL")]
    augment_fill: Option<String>,
    /// Keep an exponential moving average of the generator's weights (ProGAN, StyleGAN) with
    /// this half-life in images (StyleGAN uses 10000); `sample`, `eval`, `serve` and the
    /// sample grids draw with it. 0 is off [default: 0].
    #[arg(long, value_name = "IMAGES", allow_negative_numbers = true)]
    ema_half_life: Option<f64>,
    /// StyleGAN's ramp-up of the EMA: its half-life is at most the images seen so far
    /// times R; 0 is no ramp-up [default: 0.05].
    #[arg(long, value_name = "R", allow_negative_numbers = true)]
    ema_ramp: Option<f64>,
    /// How the discriminator reads the caption: `tile` (the article's: its projection tiled
    /// over the 4x4 features) or `projection` (Miyato and Koyama 2018: the logit plus the
    /// inner product of a caption embedding with the pooled features) [default: tile].
    #[arg(long, value_name = "MODE")]
    text_in_d: Option<TextInD>,
    /// Progressive growing (ProGAN): G and D grow from 4x4 by one block per level, doubling
    /// the side up to --size (a power of two of at least 16, 256 included), each new block
    /// faded in over --fade-images real images, then stabilised over --stage-images.
    #[arg(long)]
    progressive: bool,
    /// With --progressive: real images over which each new level is faded in linearly
    /// [default: 100000, about 26 epochs of the 3,834 shared products, as ProGAN's 800k
    /// images are of its 30k faces].
    #[arg(long, value_name = "IMAGES", allow_negative_numbers = true, value_parser = super::count::<u64>)]
    fade_images: Option<u64>,
    /// With --progressive: real images over which each level is stabilised after its fade
    /// (the first level: trained) [default: 100000].
    #[arg(long, value_name = "IMAGES", allow_negative_numbers = true, value_parser = super::count::<u64>)]
    stage_images: Option<u64>,
    /// With --progressive: the batch of each level by its side, as ProGAN trains the small
    /// levels on larger batches: e.g. `4=128,8=128,16=64,32=32`; a side not listed trains
    /// at --batch. Each batch is checked against the memory of the device at its level.
    #[arg(long, value_name = "SIDE=BATCH,...", value_parser = |s: &str| parse_batch_schedule(s).map(BatchSchedule))]
    batch_schedule: Option<BatchSchedule>,
    /// With --progressive: `phase` clears Adam's moments and restarts its bias correction
    /// when each fade and each stabilisation starts, as ProGAN does; `never` keeps one Adam
    /// for the whole run, which measured as well or better at 64 px (README) [default: never].
    #[arg(long, value_name = "WHEN")]
    adam_reset: Option<AdamReset>,
    /// A set of the flags above chosen by measurement (README, "Better images"): `quality`
    /// is PRESET_QUALITY's flags. Flags given as well win; with --resume, a preset whose
    /// flags differ from the run's is refused, as those flags would be.
    #[arg(long, value_name = "NAME")]
    preset: Option<Preset>,
    /// No progress bar (one line per checkpoint instead).
    #[arg(long)]
    quiet: bool,
}

/// `--batch-schedule`, read (one value, not a list of them).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BatchSchedule(Vec<(usize, usize)>);

/// `train --preset`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Preset {
    /// The flags the ablation on the shared products chose (README, "Better images").
    Quality,
}

/// What `--preset quality` sets, as the flags one would type.
pub const PRESET_QUALITY: &str =
    "--minibatch-std 4 --ema-half-life 10000 --matching-aware 0.5 --mode-seeking 0.2 --text-in-d projection --augment translation,cutout,color --augment-p auto";

/// Fills every flag the preset sets and the command line left out; returns the flags it
/// filled with their values, so that a refusal can say they came from the preset.
fn apply_preset(a: &mut Args) -> Vec<(&'static str, &'static str)> {
    let Some(Preset::Quality) = a.preset else { return Vec::new() };
    let mut filled = Vec::new();
    let words: Vec<&'static str> = PRESET_QUALITY.split_whitespace().collect();
    for pair in words.chunks(2) {
        let (flag, value) = (pair[0], pair[1]);
        let set = match flag {
            "--minibatch-std" => a.minibatch_std.is_none().then(|| a.minibatch_std = value.parse().ok()),
            "--ema-half-life" => a.ema_half_life.is_none().then(|| a.ema_half_life = value.parse().ok()),
            "--matching-aware" => a.matching_aware.is_none().then(|| a.matching_aware = value.parse().ok()),
            "--mode-seeking" => a.mode_seeking.is_none().then(|| a.mode_seeking = value.parse().ok()),
            // The progressive discriminator reads the caption tiled only: the preset leaves it.
            "--text-in-d" if a.progressive => None,
            "--text-in-d" => a.text_in_d.is_none().then(|| a.text_in_d = <TextInD as clap::ValueEnum>::from_str(value, false).ok()),
            "--augment" => a.augment.is_none().then(|| a.augment = Some(value.to_string())),
            "--augment-p" => a.augment_p.is_none().then(|| a.augment_p = Some(value.to_string())),
            _ => unreachable!("PRESET_QUALITY names a flag apply_preset does not know: {flag}"),
        };
        if set.is_some() {
            filled.push((flag, value));
        }
    }
    filled
}

/// `--augment`, `--augment-p`, `--augment-target` and `--augment-fill` as given, each
/// checked; the probability and the fill only with the policies, the fill only with a
/// policy that fills.
struct AugmentFlags {
    policies: Option<Policies>,
    p: Option<AugmentP>,
    fill: Option<f32>,
}

fn augment_flags(a: &Args) -> Result<AugmentFlags> {
    let policies = a.augment.as_deref().map(Policies::parse).transpose()?;
    if a.augment.is_none() && (a.augment_p.is_some() || a.augment_target.is_some()) {
        let flag = if a.augment_p.is_some() { "--augment-p" } else { "--augment-target" };
        bail!("{flag} sets the probability of --augment, which is not given; add --augment translation,cutout,color (or a subset)");
    }
    if a.augment_target.is_some() && a.augment_p.is_none() {
        bail!("--augment-target is the target of --augment-p auto; add --augment-p auto");
    }
    let p = a.augment_p.as_deref().map(|p| AugmentP::parse(p, a.augment_target)).transpose()?;
    let fill = a.augment_fill.as_deref().map(parse_fill).transpose()?;
    if fill.is_some() {
        match policies {
            None => bail!("--augment-fill sets what --augment's translation and cutout fill with, and --augment is not given; add --augment translation,cutout,color (or a subset)"),
            Some(p) if !p.translation && !p.cutout => {
                bail!("--augment-fill sets what translation and cutout fill with, and --augment {} has neither; add translation or cutout, or drop --augment-fill", p.names())
            }
            Some(_) => {}
        }
    }
    Ok(AugmentFlags { policies, p, fill })
}

/// Options of a new run from the flags and defaults.
fn fresh(a: &Args, precision: Option<Precision>) -> TrainOptions {
    let d = Hyper::default();
    TrainOptions {
        data: a.data.clone(),
        size: a.size.unwrap_or(64),
        width: a.width.unwrap_or(64),
        batch: a.batch.unwrap_or(64),
        iters: a.iters.unwrap_or(5000),
        hyper: Hyper {
            lr: a.lr.unwrap_or(d.lr),
            beta1: a.beta1.unwrap_or(d.beta1),
            beta2: a.beta2.unwrap_or(d.beta2),
            matching_aware: a.matching_aware.unwrap_or(0.0),
            mode_seeking: a.mode_seeking.unwrap_or(0.0),
            ..d
        },
        seed: a.seed.unwrap_or(1),
        save_every: a.save_every.unwrap_or(500),
        sample_every: a.sample_every.unwrap_or(250),
        keep: a.keep.unwrap_or(3),
        flip: !a.no_flip,
        crop: a.crop,
        max_features: a.max_features.unwrap_or(DEFAULT_MAX_FEATURES),
        cache_dir: a.cache_dir.clone(),
        precision: precision.unwrap_or_default(),
        eval_split: a.eval_split.unwrap_or(DEFAULT_EVAL_SPLIT),
        eval_every: a.eval_every.unwrap_or(0),
        minibatch_std: a.minibatch_std.unwrap_or(0),
        // Filled in by `run` from `augment_flags`, which checks them first.
        augment: AugmentOptions::default(),
        ema_half_life: a.ema_half_life.unwrap_or(0.0),
        ema_ramp: a.ema_ramp.unwrap_or(gan_engine::train::ema::DEFAULT_EMA_RAMP),
        text_in_d: a.text_in_d.unwrap_or_default(),
        progressive: a.progressive,
        fade_images: a.fade_images.unwrap_or(DEFAULT_PHASE_IMAGES),
        stage_images: a.stage_images.unwrap_or(DEFAULT_PHASE_IMAGES),
        batch_schedule: a.batch_schedule.clone().map(|b| b.0).unwrap_or_default(),
        adam_reset: a.adam_reset.unwrap_or(AdamReset::Never),
    }
}

/// A resumed run keeps its stored options; flags that would change the model, the data
/// or the random streams are refused, while the schedule (iterations, saving) may change.
fn resumed(a: &Args, precision: Option<Precision>, stored: &TrainOptions, from_preset: &[(&str, &str)]) -> Result<TrainOptions> {
    let mut o = stored.clone();
    let aug = augment_flags(a)?;
    let fixed: [(&str, bool); 26] = [
        ("--precision", precision.is_some_and(|p| p != stored.precision)),
        ("--data", a.data.as_ref().is_some_and(|d| !same_data_folder(d, stored.data.as_deref()))),
        ("--size", a.size.is_some_and(|v| v != stored.size)),
        ("--width", a.width.is_some_and(|v| v != stored.width)),
        ("--batch", a.batch.is_some_and(|v| v != stored.batch)),
        ("--seed", a.seed.is_some_and(|v| v != stored.seed)),
        ("--lr", a.lr.is_some_and(|v| v != stored.hyper.lr)),
        ("--beta1", a.beta1.is_some_and(|v| v != stored.hyper.beta1)),
        ("--beta2", a.beta2.is_some_and(|v| v != stored.hyper.beta2)),
        ("--matching-aware", a.matching_aware.is_some_and(|v| v != stored.hyper.matching_aware)),
        ("--mode-seeking", a.mode_seeking.is_some_and(|v| v != stored.hyper.mode_seeking)),
        ("--max-features", a.max_features.is_some_and(|v| v != stored.max_features)),
        ("--crop/--no-flip", a.crop != stored.crop || a.no_flip == stored.flip),
        ("--eval-split", a.eval_split.is_some_and(|v| v != stored.eval_split)),
        ("--minibatch-std", a.minibatch_std.is_some_and(|v| v != stored.minibatch_std)),
        ("--augment", aug.policies.is_some_and(|v| v != stored.augment.policies)),
        ("--augment-p/--augment-target", aug.p.is_some_and(|v| v != stored.augment.p)),
        ("--augment-fill", aug.fill.is_some_and(|v| v != stored.augment.fill)),
        ("--ema-half-life", a.ema_half_life.is_some_and(|v| v != stored.ema_half_life)),
        ("--ema-ramp", a.ema_ramp.is_some_and(|v| v != stored.ema_ramp)),
        ("--text-in-d", a.text_in_d.is_some_and(|v| v != stored.text_in_d)),
        ("--progressive", a.progressive && !stored.progressive),
        ("--fade-images", a.fade_images.is_some_and(|v| v != stored.fade_images)),
        ("--stage-images", a.stage_images.is_some_and(|v| v != stored.stage_images)),
        ("--batch-schedule", a.batch_schedule.as_ref().is_some_and(|v| v.0 != stored.batch_schedule)),
        ("--adam-reset", a.adam_reset.is_some_and(|v| v != stored.adam_reset)),
    ];
    if let Some((flag, _)) = fixed.iter().find(|f| f.1) {
        if from_preset.iter().any(|(p, _)| flag.split('/').any(|f| f == *p)) {
            bail!("--preset quality sets {flag}, which differs from the run being resumed; a resumed run keeps its settings (drop --preset, or start a new run with another --out)");
        }
        bail!("{flag} differs from the run being resumed; a resumed run keeps its settings (drop the flag, or start a new run with another --out)");
    }
    if a.data.is_some() {
        // The same folder, perhaps spelled or reached differently: the one named now.
        o.data = a.data.clone();
    }
    if let Some(v) = a.iters {
        o.iters = v;
    }
    if let Some(v) = a.save_every {
        o.save_every = v;
    }
    if let Some(v) = a.sample_every {
        o.sample_every = v;
    }
    if let Some(v) = a.keep {
        o.keep = v;
    }
    if let Some(v) = a.eval_every {
        o.eval_every = v;
    }
    if a.cache_dir.is_some() {
        o.cache_dir = a.cache_dir.clone();
    }
    Ok(o)
}

/// Whether `--data given` names the run's data folder `stored`: the same folder after
/// canonicalisation (`base/` and `./base` are `base`), or any folder when the stored one is
/// no longer there (a moved data set; the resumed run checks it holds the same products).
fn same_data_folder(given: &Path, stored: Option<&Path>) -> bool {
    let Some(stored) = stored else { return false };
    match (std::fs::canonicalize(given), std::fs::canonicalize(stored)) {
        (Ok(g), Ok(s)) => g == s,
        (_, Err(_)) => true,
        (Err(_), Ok(_)) => given == stored,
    }
}

pub fn run(mut a: Args) -> Result<()> {
    let from_preset = apply_preset(&mut a);
    if !from_preset.is_empty() {
        eprintln!("--preset quality: {}", from_preset.iter().map(|(f, v)| format!("{f} {v}")).collect::<Vec<_>>().join(" "));
    }
    if a.batch == Some(0) {
        bail!("--batch must be at least 1");
    }
    if let Some(s) = a.size {
        if a.progressive {
            gan_engine::train::grow::check_size(s)?;
        } else if ![32, 64, 128].contains(&s) {
            bail!("--size {s} is not supported: use 32, 64 or 128 (or --progressive with a power of two from 16 to 512)");
        }
    }
    if !a.progressive {
        for (flag, given) in [("--fade-images", a.fade_images.is_some()), ("--stage-images", a.stage_images.is_some())] {
            if given && a.resume.is_none() {
                bail!("{flag} sets the schedule of progressive growing: add --progressive, or drop {flag}");
            }
        }
    }
    if let (Some(b), false, None) = (&a.batch_schedule, a.progressive, &a.resume) {
        let text = gan_engine::train::grow::describe_batch_schedule(&b.0);
        bail!("--batch-schedule {text} sets the batch of each level of progressive growing: add --progressive, or drop --batch-schedule");
    }
    GrowSchedule::check(a.fade_images.unwrap_or(1), a.stage_images.unwrap_or(1))?;
    let precision = device::parse_precision(a.precision.as_deref())?;
    let aug = augment_flags(&a)?;
    let (mut opts, resume, out) = match &a.resume {
        Some(dir) => {
            let found = checkpoint::load_checked(dir, RunState::from_checkpoint).with_context(|| format!("--resume {}", dir.display()))?;
            for (skipped, why) in &found.skipped {
                eprintln!("warning: --resume {}: skipped {}: {why}", dir.display(), skipped.display());
            }
            let (path, ck) = (found.path, found.checkpoint);
            let opts = resumed(&a, precision, &found.checked.options, &from_preset)?;
            // The run folder is the one holding checkpoints/, unless --out says otherwise.
            let run_dir =
                if dir.is_dir() { dir.clone() } else { path.parent().and_then(|p| p.parent()).map(PathBuf::from).unwrap_or_else(|| PathBuf::from(".")) };
            (opts, Some((path, ck)), a.out.clone().unwrap_or(run_dir))
        }
        None => {
            let mut opts = fresh(&a, precision);
            opts.augment = AugmentOptions { policies: aug.policies.unwrap_or_default(), p: aug.p.unwrap_or_default(), fill: aug.fill.unwrap_or(0.0) };
            (opts, None, a.out.clone().unwrap_or_else(|| PathBuf::from("runs/train")))
        }
    };
    // Before any data is read: the sides, batches and --minibatch-std groups of the schedule.
    opts.check_batch_schedule()?;
    opts.check_adam_reset()?;
    if let Some(e) = a.epochs {
        // An epoch is a pass over the training split: the products not held out.
        let ids = gan_engine::data::read_ids(&gan_engine::data::DataSource::from_arg(opts.data.clone()))?;
        let trained = gan_engine::eval::split::split(&ids, opts.eval_split).train.len();
        opts.iters = if opts.batch_schedule.is_empty() { iters_for_epochs(e, trained, opts.batch) } else { opts.iters_for_images(e * trained as u64) };
    }
    // Before the device opens (which can take seconds on a GPU); train_until checks again.
    opts.check_training_flags()?;
    let backend = device::open(&a.device, Some(opts.precision))?;
    let name = match &backend {
        Opened::Cpu(be) => be.name(),
        Opened::Gpu(be) => be.name(),
    };
    let mut spread = if opts.minibatch_std > 0 { format!(", minibatch std over groups of {}", opts.minibatch_std) } else { String::new() };
    if opts.hyper.lr != Hyper::default().lr {
        spread += &format!(", learning rate {}", opts.hyper.lr);
    }
    if opts.hyper.matching_aware > 0.0 {
        spread += &format!(", mismatched captions at {}", opts.hyper.matching_aware);
    }
    if opts.hyper.mode_seeking > 0.0 {
        spread += &format!(", mode seeking at {}", opts.hyper.mode_seeking);
    }
    if opts.augment.is_on() {
        spread += &format!(", augment {}", opts.augment.describe());
    }
    if let Some(e) = opts.ema() {
        spread += &format!(", EMA generator with a half-life of {} images (ramp {})", e.half_life, e.ramp);
    }
    if opts.text_in_d != TextInD::Tile {
        spread += &format!(", text in D by {}", opts.text_in_d);
    }
    if opts.progressive {
        spread += &format!(", progressive from 4x4 (fade {} images, stabilise {}, Adam reset: {})", opts.fade_images, opts.stage_images, opts.adam_reset);
    }
    if !opts.batch_schedule.is_empty() {
        spread += &format!(", batch schedule {}", gan_engine::train::grow::describe_batch_schedule(&opts.batch_schedule));
    }
    eprintln!("training {} px, width {}, batch {}{spread}, {} iterations on {name} -> {}", opts.size, opts.width, opts.batch, opts.iters, out.display());
    // Ctrl-C (or SIGTERM, SIGHUP) ends the run after the iteration in progress, with a
    // checkpoint of it; a second one quits at once (checkpoints are written atomically, so
    // that loses at most the iterations since the last one).
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    if let Err(e) = ctrlc::set_handler(move || {
        if flag.swap(true, Ordering::SeqCst) {
            std::process::exit(130);
        }
        eprintln!("\ninterrupted: finishing this iteration and writing a checkpoint (Ctrl-C again quits at once)");
    }) {
        eprintln!("warning: Ctrl-C will stop training without a checkpoint ({e})");
    }
    let mut asked = |_| stop.load(Ordering::SeqCst);
    let summary = match backend {
        Opened::Cpu(be) => train_until(&be, &opts, &out, resume, !a.quiet, &mut asked)?,
        Opened::Gpu(be) => train_until(&be, &opts, &out, resume, !a.quiet, &mut asked)?,
    };
    if summary.interrupted {
        eprintln!(
            "interrupted at iteration {} of {}: checkpoint {}; continue with: gan-engine train --resume {}",
            summary.iterations,
            opts.iters,
            summary.last_checkpoint.display(),
            out.display()
        );
        std::process::exit(130);
    }
    eprintln!(
        "done: {} iterations in {:.1} s; last checkpoint {}; samples in {}",
        summary.iterations,
        summary.seconds,
        summary.last_checkpoint.display(),
        out.join("samples").display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser;

    fn args(line: &[&str]) -> Args {
        match Cli::try_parse_from([&["gan-engine", "train"], line].concat()).unwrap().command {
            Command::Train(a) => a,
            _ => unreachable!(),
        }
    }

    /// Every flag of PRESET_QUALITY is one apply_preset knows, and parses as that flag.
    #[test]
    fn the_preset_fills_what_the_command_line_left_out() {
        let mut a = args(&["--preset", "quality"]);
        let filled = apply_preset(&mut a);
        assert_eq!(filled.len() * 2, PRESET_QUALITY.split_whitespace().count(), "{filled:?}");
        let mut typed = args(&PRESET_QUALITY.split_whitespace().collect::<Vec<_>>());
        assert!(apply_preset(&mut typed).is_empty());
        assert_eq!(
            (a.minibatch_std, a.ema_half_life, a.matching_aware, a.mode_seeking, a.text_in_d, a.augment.clone(), a.augment_p.clone()),
            (
                typed.minibatch_std,
                typed.ema_half_life,
                typed.matching_aware,
                typed.mode_seeking,
                typed.text_in_d,
                typed.augment.clone(),
                typed.augment_p.clone()
            )
        );
        let mut own = args(&["--preset", "quality", "--minibatch-std", "2"]);
        let filled = apply_preset(&mut own);
        assert_eq!(own.minibatch_std, Some(2));
        assert!(!filled.iter().any(|(f, _)| *f == "--minibatch-std"));
    }
}
