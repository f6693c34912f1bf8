use anyhow::{Context, Result};
use gan_engine::backend::cpu::Cpu;
use gan_engine::backend::device::{self, Opened};
use gan_engine::backend::Backend;
use gan_engine::data::{self, DataSource, PrepareOptions};
use gan_engine::eval::split::{self, DEFAULT_EVAL_SPLIT};
use gan_engine::eval::{self, features, EvalOptions, Figures};
use gan_engine::train::run::RunState;
use gan_engine::train::{checkpoint, BnStats, Drawing};
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(clap::Args)]
pub struct Args {
    /// A run folder (its newest checkpoint) or a checkpoint file.
    #[arg(long)]
    checkpoint: PathBuf,
    /// The data set whose held-out products are the reference (default: the one the model
    /// was trained on). Another one works too, with a warning: its held-out split is chosen
    /// the same way.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Generated images, one per held-out caption, and as many held-out real images
    /// [default: 1000, or the whole held-out split when it is smaller].
    #[arg(short = 'n')]
    n: Option<usize>,
    /// Seed of the choice of products, the noise and the random projections.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Also write every figure, by name, to this JSON file.
    #[arg(long)]
    json: Option<PathBuf>,
    #[cfg_attr(
        not(feature = "sim"),
        doc = "cpu, cuda, or auto: where the generator runs (the feature network always runs on the CPU, so its numbers are the same everywhere)."
    )]
    #[cfg_attr(
        feature = "sim",
        doc = "cpu, cuda, sim, or auto: where the generator runs (the feature network always runs on the CPU, so its numbers are the same everywhere)."
    )]
    #[arg(long, default_value = "auto")]
    device: String,
    /// Folder for decoded-image caches and feature networks (default: the user cache folder).
    #[arg(long)]
    cache_dir: Option<PathBuf>,
    /// Draw with the raw generator even when the checkpoint has an EMA generator
    /// (`train --ema-half-life`), which is used by default.
    #[arg(long)]
    no_ema: bool,
    /// Batchnorm statistics the generator draws with: `running` (those stored with the
    /// weights) or `batch` (each drawn batch's own; the stored ones are left unchanged)
    /// [default: running].
    #[arg(long, value_name = "running|batch")]
    bn: Option<BnStats>,
}

fn same_folder(a: &Path, b: &Path) -> bool {
    let c = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    c(a) == c(b)
}

pub fn run(a: Args) -> Result<()> {
    let started = Instant::now();
    let found = checkpoint::load_checked(&a.checkpoint, RunState::from_checkpoint).with_context(|| format!("--checkpoint {}", a.checkpoint.display()))?;
    for (skipped, why) in &found.skipped {
        eprintln!("warning: --checkpoint {}: skipped {}: {why}", a.checkpoint.display(), skipped.display());
    }
    let (path, ck, state) = (found.path, found.checkpoint, found.checked);
    let trained_on = DataSource::from_arg(state.options.data.clone());
    let source = match &a.data {
        Some(d) => DataSource::Folder(d.clone()),
        None => trained_on.clone(),
    };
    let foreign = match (&source, &trained_on) {
        (DataSource::Folder(x), DataSource::Folder(y)) => !same_folder(x, y),
        (s, t) => s != t,
    };
    if foreign {
        eprintln!(
            "warning: the model was trained on {}, not on {}: evaluating it against that data set's held-out products all the same",
            trained_on.describe(),
            source.describe()
        );
    }
    let mut fraction = state.options.eval_split;
    if fraction <= 0.0 {
        fraction = DEFAULT_EVAL_SPLIT;
        if !foreign {
            eprintln!(
                "warning: the model was trained on every product (--eval-split 0, or a checkpoint from before the split): the held-out {fraction} it is measured on was seen in training"
            );
        }
    }
    let prep = PrepareOptions {
        size: state.config.size,
        crop: state.options.crop,
        cache_dir: a.cache_dir.clone().or_else(|| state.options.cache_dir.clone()),
        max_features: state.options.max_features,
        progress: true,
        tfidf: Some(state.tfidf.clone()),
    };
    let data = data::prepare(&source, &prep)?;
    let split = split::split(&data.ids, fraction);
    anyhow::ensure!(
        split.held_out.len() >= 4,
        "{}: its held-out split at {fraction} has {} products; evaluation needs at least 4",
        source.describe(),
        split.held_out.len()
    );
    let n = match a.n {
        Some(n) => {
            anyhow::ensure!(
                n <= split.held_out.len(),
                "-n {n} is larger than the held-out split of {} ({} of {} products at --eval-split {fraction}); use -n {} or less",
                source.describe(),
                split.held_out.len(),
                data.len(),
                split.held_out.len()
            );
            n
        }
        None => split.held_out.len().min(1000),
    };
    let cache_dir = eval::cache_dir(prep.cache_dir.as_ref())?;
    let mut net = features::load_or_train(&Cpu::new(), &data, &split, fraction, &eval::source_name(&source), &cache_dir, true)?;
    let opts = EvalOptions { n, seed: a.seed };
    let drawing = Drawing { ema: !a.no_ema, bn: a.bn.unwrap_or_default() };
    // The generator in the run's precision, as `sample` draws it.
    let (figures, ema) = match device::open(&a.device, Some(state.options.precision))? {
        Opened::Cpu(be) => measure(&be, &state, &ck.tensors, &data, &split.held_out, &mut net, &opts, drawing)?,
        Opened::Gpu(be) => measure(&be, &state, &ck.tensors, &data, &split.held_out, &mut net, &opts, drawing)?,
    };
    let generator = if ema { "ema" } else { "raw" };
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "eval: {} (iteration {}, {} px, {generator} generator, --bn {}) against {}: {n} of {} held-out products (--eval-split {fraction}), seed {}",
        path.display(),
        state.iteration,
        state.config.size,
        drawing.bn.name(),
        source.describe(),
        split.held_out.len(),
        a.seed
    );
    for g in 0..5 {
        let line: Vec<String> = figures.iter().filter(|(k, _)| eval::group_of(k) == g).map(|(k, v)| format!("{k}={}", fmt(k, *v))).collect();
        println!("{}", line.join(" "));
    }
    println!();
    println!("{:<22} {:>12} {:>14}  better", "figure", "model", "real (floor)");
    for (k, v) in figures.iter().filter(|(k, _)| !k.starts_with("real_")) {
        let floor = figures.iter().find(|(r, _)| r.strip_prefix("real_") == Some(k)).map(|(_, v)| fmt(k, *v)).unwrap_or_default();
        let name = if k.starts_with("swd") { format!("{k} (x1e3)") } else { k.clone() };
        println!("{name:<22} {:>12} {floor:>14}  {}", fmt(k, *v), if eval::lower_is_better(k) { "lower" } else { "higher" });
    }
    println!("feature network held-out accuracy: {}; {seconds:.1} s", features::describe(&net.info.held_out_accuracy));
    if let Some(j) = &a.json {
        let mut m = serde_json::Map::new();
        for (k, v) in &figures {
            m.insert(k.clone(), serde_json::json!(if v.is_finite() { Some(*v) } else { None }));
        }
        m.insert("n".into(), serde_json::json!(n));
        m.insert("seed".into(), serde_json::json!(a.seed));
        m.insert("checkpoint".into(), serde_json::json!(path.display().to_string()));
        m.insert("iteration".into(), serde_json::json!(state.iteration));
        m.insert("generator".into(), serde_json::json!(generator));
        m.insert("bn".into(), serde_json::json!(drawing.bn.name()));
        m.insert("data".into(), serde_json::json!(source.describe()));
        m.insert("eval_split".into(), serde_json::json!(fraction));
        m.insert("held_out".into(), serde_json::json!(split.held_out.len()));
        m.insert("feature_accuracy".into(), serde_json::json!(net.info.held_out_accuracy));
        m.insert("seconds".into(), serde_json::json!(seconds));
        let text = serde_json::to_string_pretty(&serde_json::Value::Object(m))? + "\n";
        std::fs::write(j, text).with_context(|| format!("--json {}: cannot write the file", j.display()))?;
    }
    Ok(())
}

/// The figures, and whether the EMA generator drew.
#[allow(clippy::too_many_arguments)]
fn measure<B: Backend>(
    be: &B,
    state: &RunState,
    tensors: &[checkpoint::NamedTensor],
    data: &data::PreparedData,
    held: &[usize],
    net: &mut features::FeatureNet,
    opts: &EvalOptions,
    drawing: Drawing,
) -> Result<(Figures, bool)> {
    let mut gan = state.build_gan(be, tensors)?;
    gan.drawing = drawing;
    eprintln!("{}", gan.drawing_note());
    Ok((eval::evaluate(be, &mut gan, data, held, net, opts)?, gan.draws_ema()))
}

/// Four significant figures or so, whatever the magnitude.
fn fmt(name: &str, v: f64) -> String {
    if !v.is_finite() {
        return "nan".into();
    }
    let a = v.abs();
    if name.ends_with("kid") || (a < 0.01 && a > 0.0) {
        format!("{v:.5}")
    } else if a >= 100.0 {
        format!("{v:.1}")
    } else if a >= 10.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}
