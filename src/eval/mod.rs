//! Quality measured by the engine itself (`gan-engine eval`, `train --eval-every`): the
//! held-out split (`split`), the feature network trained on the catalogue's own labels
//! (`features`), and the figures (`metrics`): SWD, FD, KID, precision and recall,
//! conditioning and diversity, each next to the same figure for real images against real
//! images (the floor).

pub mod features;
pub mod metrics;
pub mod split;

use crate::backend::cpu::Cpu;
use crate::backend::Backend;
use crate::data::PreparedData;
use crate::nn::Mode;
use crate::rng::Rng;
use crate::train::Gan;
use anyhow::{ensure, Result};
use features::{accuracy, FeatureNet, Features, LabelSpace, EMBED};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Captions of the diversity figure at most, and images drawn for each.
pub const DIVERSITY_CAPTIONS: usize = 64;
pub const DIVERSITY_PER_CAPTION: usize = 8;
/// Held-out products `train --eval-every` measures on at most.
pub const TRAIN_EVAL_N: usize = 256;
/// Images per generator pass.
const GEN_CHUNK: usize = 64;

/// `[-1, 1]` floats to planar u8 bytes, rounded as the PNGs are.
pub fn to_u8(images: &[f32]) -> Vec<u8> {
    images.iter().map(|v| ((v + 1.0) * 127.5).round().clamp(0.0, 255.0) as u8).collect()
}

/// Images of `gan` for `texts` (one `text_dim` vector each) with noise from `rng`, as planar
/// u8, GEN_CHUNK at a time in inference mode.
pub fn generate<B: Backend>(be: &B, gan: &mut Gan<B>, texts: &[f32], rng: &mut Rng) -> Result<Vec<u8>> {
    let (td, nd) = (gan.cfg.text_dim, gan.cfg.noise_dim);
    let n = texts.len() / td;
    let mut out = Vec::with_capacity(n * 3 * gan.cfg.size * gan.cfg.size);
    let mut noise = Vec::new();
    for start in (0..n).step_by(GEN_CHUNK) {
        let m = GEN_CHUNK.min(n - start);
        noise.resize(m * nd, 0.0);
        rng.fill_normal(&mut noise, 0.0, 1.0);
        out.extend(to_u8(&gan.generate(be, &noise, &texts[start * td..(start + m) * td], Mode::Eval)?));
    }
    Ok(out)
}

/// Every figure of one evaluation, by name (`swd`, `fd`, `cond_<head>`, `real_swd`, ...), in
/// the order they are printed.
pub type Figures = Vec<(String, f64)>;

/// The planar bytes of `rows` of `data`, one after another.
pub fn real_images(data: &PreparedData, rows: &[usize]) -> Vec<u8> {
    rows.iter().flat_map(|&r| data.image_bytes(r).iter().copied()).collect()
}

/// What `gan-engine eval` measures, on `n` held-out products.
pub struct EvalOptions {
    pub n: usize,
    pub seed: u64,
}

/// Groups of rows (of `rows`) that share every label (or, without labels, a caption).
fn label_groups(data: &PreparedData, rows: &[usize], space: &LabelSpace) -> Vec<Vec<usize>> {
    let mut groups: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (k, &r) in rows.iter().enumerate() {
        let key = match space {
            LabelSpace::Heads(heads) => heads.iter().map(|(c, _)| data.labels[r][*c].as_str()).collect::<Vec<_>>().join("\u{1f}"),
            LabelSpace::Words(_) => data.captions[r].clone(),
        };
        groups.entry(key).or_default().push(k);
    }
    groups.into_values().collect()
}

/// The full evaluation of `gan` on the held-out `held` rows of `data`: `opts.n` of them
/// (a deterministic choice), one generated image per caption, and the diversity images.
pub fn evaluate<B: Backend>(be: &B, gan: &mut Gan<B>, data: &PreparedData, held: &[usize], net: &mut FeatureNet, opts: &EvalOptions) -> Result<Figures> {
    let n = opts.n;
    ensure!(n >= 4, "-n {n}: evaluation needs at least 4 images (2 in each half of the real floor)");
    ensure!(n <= held.len(), "-n {n} is larger than the held-out split ({} products); use -n {} or less", held.len(), held.len());
    let cpu = Cpu::new();
    let size = data.size;
    let mut rows = held.to_vec();
    Rng::derive(opts.seed, "eval-rows").shuffle(&mut rows);
    rows.truncate(n);
    let d = data.tfidf.dim();
    let texts: Vec<f32> = rows.iter().flat_map(|&r| data.text(r).iter().copied()).collect();
    let fake = generate(be, gan, &texts, &mut Rng::derive(opts.seed, "eval-noise"))?;
    let real = real_images(data, &rows);
    let space = net.info.space.clone();
    let targets = space.targets(data, &rows);
    let ff = net.features_u8(&cpu, &fake)?;
    let fr = net.features_u8(&cpu, &real)?;

    // Diversity: DIVERSITY_PER_CAPTION noises for each of the first distinct captions.
    let mut div_rows: Vec<usize> = Vec::new();
    for &r in &rows {
        if div_rows.len() >= DIVERSITY_CAPTIONS.min(n / DIVERSITY_PER_CAPTION).max(1) {
            break;
        }
        if !div_rows.iter().any(|&q| data.captions[q] == data.captions[r]) {
            div_rows.push(r);
        }
    }
    let div_texts: Vec<f32> = div_rows.iter().flat_map(|&r| std::iter::repeat_n(data.text(r), DIVERSITY_PER_CAPTION).flatten().copied()).collect();
    let _ = d;
    let div_images = generate(be, gan, &div_texts, &mut Rng::derive(opts.seed, "eval-diversity"))?;
    let fdiv = net.features_u8(&cpu, &div_images)?;
    let div_groups: Vec<Vec<usize>> = (0..div_rows.len()).map(|g| (g * DIVERSITY_PER_CAPTION..(g + 1) * DIVERSITY_PER_CAPTION).collect()).collect();

    let half = n / 2;
    let (r1, r2) = (fr.select(0..half), fr.select(half..2 * half));
    let per = 3 * size * size;
    let mut out = Figures::new();
    let levels = metrics::swd_levels(size);
    let (swd_levels, swd) = metrics::swd(&real, &fake, size, opts.seed);
    let (real_levels, real_swd) = metrics::swd(&real[..half * per], &real[half * per..2 * half * per], size, opts.seed);
    out.push(("swd".into(), swd));
    out.extend(levels.iter().zip(&swd_levels).map(|(s, v)| (format!("swd_{s}"), *v)));
    out.push(("real_swd".into(), real_swd));
    out.extend(levels.iter().zip(&real_levels).map(|(s, v)| (format!("real_swd_{s}"), *v)));
    out.push(("fd".into(), metrics::fd(&fr.embed, &ff.embed, EMBED)));
    out.push(("kid".into(), metrics::kid(&fr.embed, &ff.embed, EMBED, opts.seed)));
    out.push(("real_fd".into(), metrics::fd(&r1.embed, &r2.embed, EMBED)));
    out.push(("real_kid".into(), metrics::kid(&r1.embed, &r2.embed, EMBED, opts.seed)));
    let (p, r) = metrics::precision_recall(&fr.embed, &ff.embed, EMBED, metrics::PR_K);
    let (rp, rr) = metrics::precision_recall(&r1.embed, &r2.embed, EMBED, metrics::PR_K);
    out.extend([("precision".into(), p), ("recall".into(), r), ("real_precision".into(), rp), ("real_recall".into(), rr)]);
    let cond = accuracy(&space, &ff, &targets);
    let real_cond = accuracy(&space, &fr, &targets);
    for name in space.names() {
        out.push((format!("cond_{name}"), cond.get(&name).copied().unwrap_or(f64::NAN)));
    }
    for name in space.names() {
        out.push((format!("real_cond_{name}"), real_cond.get(&name).copied().unwrap_or(f64::NAN)));
    }
    out.push(("diversity".into(), metrics::diversity(&fdiv.embed, EMBED, &div_groups)));
    out.push(("real_diversity".into(), metrics::diversity(&fr.embed, EMBED, &label_groups(data, &rows, &space))));
    out.push(("background".into(), metrics::background(&fake, size)));
    out.push(("real_background".into(), metrics::background(&real, size)));
    Ok(out)
}

/// The figure names of each printed group, in order: SWD, FD and KID, precision and recall,
/// conditioning, diversity and background.
pub fn group_of(name: &str) -> usize {
    let n = name.strip_prefix("real_").unwrap_or(name);
    match n {
        _ if n.starts_with("swd") => 0,
        "fd" | "kid" => 1,
        "precision" | "recall" => 2,
        _ if n.starts_with("cond_") => 3,
        _ => 4,
    }
}

/// Whether a lower value of the figure is better.
pub fn lower_is_better(name: &str) -> bool {
    let n = name.strip_prefix("real_").unwrap_or(name);
    n.starts_with("swd") || n == "fd" || n == "kid" || n == "background"
}

/// The cheap subset `train --eval-every` measures: SWD, FD and conditioning of a fixed set of
/// up to TRAIN_EVAL_N held-out products, with fixed noise from `Rng::derive(seed, "eval")`
/// (no other random stream is touched).
pub struct TrainEval {
    pub net: FeatureNet,
    size: usize,
    texts: Vec<f32>,
    real: Vec<u8>,
    real_embed: Vec<f32>,
    targets: features::Targets,
    seed: u64,
}

/// The figures of one `--eval-every` evaluation.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TrainFigures {
    pub swd: f64,
    pub fd: f64,
    /// Mean conditioning accuracy over the heads.
    pub cond: f64,
}

impl TrainEval {
    /// Prepares the fixed set from the held-out rows of `data` (the whole data set, before
    /// `train` keeps its training rows), training or loading the feature network.
    pub fn new(
        data: &PreparedData,
        split: &split::Split,
        fraction: f64,
        name: &str,
        cache_dir: &std::path::Path,
        seed: u64,
        progress: bool,
    ) -> Result<TrainEval> {
        ensure!(split.held_out.len() >= 2, "--eval-every needs held-out products: the held-out split has {} (raise --eval-split)", split.held_out.len());
        let cpu = Cpu::new();
        let mut net = features::load_or_train(&cpu, data, split, fraction, name, cache_dir, progress)?;
        let rows: Vec<usize> = split.held_out.iter().copied().take(TRAIN_EVAL_N).collect();
        let texts = rows.iter().flat_map(|&r| data.text(r).iter().copied()).collect();
        let real = real_images(data, &rows);
        let real_embed = net.features_u8(&cpu, &real)?.embed;
        let targets = net.info.space.targets(data, &rows);
        Ok(TrainEval { net, size: data.size, texts, real, real_embed, targets, seed })
    }

    /// Measures `gan` now.
    pub fn measure<B: Backend>(&mut self, be: &B, gan: &mut Gan<B>) -> Result<TrainFigures> {
        let fake = generate(be, gan, &self.texts, &mut Rng::derive(self.seed, "eval"))?;
        let f: Features = self.net.features_u8(&Cpu::new(), &fake)?;
        let (_, swd) = metrics::swd(&self.real, &fake, self.size, self.seed);
        let fd = metrics::fd(&self.real_embed, &f.embed, EMBED);
        let acc = accuracy(&self.net.info.space, &f, &self.targets);
        let cond = acc.values().sum::<f64>() / acc.len().max(1) as f64;
        Ok(TrainFigures { swd, fd, cond })
    }
}

/// The cache folder: `--cache-dir`, else the user cache folder.
pub fn cache_dir(arg: Option<&PathBuf>) -> Result<PathBuf> {
    match arg {
        Some(d) => Ok(d.clone()),
        None => crate::data::cache::default_cache_dir(),
    }
}

/// A short name for a data source's feature-network cache file.
pub fn source_name(source: &crate::data::DataSource) -> String {
    match source {
        crate::data::DataSource::Synthetic { n, seed } => format!("synthetic-{n}-{seed}"),
        crate::data::DataSource::Folder(dir) => {
            let c = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.clone());
            c.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "data".into())
        }
    }
}
