//! The feature network: a small classifier the engine trains on the catalogue's own labels,
//! whose penultimate layer is the space FD, KID, precision, recall and diversity are measured
//! in, and whose heads judge conditioning. Nothing is downloaded, and it is trained on the
//! CPU in f32 from a fixed seed, so its numbers are the same on every machine with the same
//! data.
//!
//! Input: the image brought to 32 px by an average pool (64 px: 2x2, 128 px: 4x4). Then four
//! blocks `conv 3x3 -> batchnorm + LeakyReLU(0.2) -> avg_pool 2x2` (the last one a global
//! average pool) of 16, 32, 64 and 64 channels, `Linear(64, 128) + LeakyReLU` (the
//! embedding: the penultimate layer) and one `Linear(128, classes)` for every head together.
//!
//! Heads: for a Kaggle folder articleType, baseColour, gender and masterCategory, for the
//! synthetic catalogue kind, colour and pattern (softmax cross-entropy over each head's most
//! common values plus "other"); for a folder with captions only, the most frequent caption
//! words as one multi-label head (sigmoid cross-entropy).
//!
//! It trains once per (data set, image size, split) on the training split and is cached in
//! the image cache's folder, keyed by everything it was trained from and `VERSION`.

use super::split::Split;
use crate::backend::cpu::Cpu;
use crate::backend::prelude::*;
use crate::backend::{AdamParams, CrossEntropyParams, PoolParams};
use crate::data::PreparedData;
use crate::hash::Fnv64;
use crate::nn::{ActKind, Activation, BatchNorm2d, Conv, Grads, Layer, Linear, Mode, Param, Sequential, Shape, Slot, Tensor};
use crate::rng::Rng;
use crate::text::tokenize;
use anyhow::{bail, ensure, Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Bump when the network, its training or its label space changes: cached networks of
/// another version are retrained.
pub const VERSION: u64 = 1;
/// The side the network sees.
pub const INPUT: usize = 32;
/// Channels of the four blocks.
pub const WIDTHS: [usize; 4] = [16, 32, 64, 64];
/// Width of the embedding (the penultimate layer).
pub const EMBED: usize = 128;
/// Classes of a label head at most, "other" included.
pub const MAX_CLASSES: usize = 16;
/// Caption words of the multi-label head of a data set without labels.
pub const WORDS: usize = 32;
/// Images the training sees, about (whole epochs, between `MIN_EPOCHS` and `MAX_EPOCHS`).
const TRAIN_IMAGES: usize = 40_000;
const MIN_EPOCHS: usize = 4;
const MAX_EPOCHS: usize = 30;
const BATCH: usize = 64;
const LR: f32 = 2e-3;
/// Training images are degraded at random the way generated images are: their contrast
/// lowered toward a random grey (down to `1 - FADE` of it) and Gaussian pixel noise of a
/// standard deviation up to `NOISE` (in [-1, 1] units) added. The network then reads shape
/// and colour rather than the clean white background and noise-free texture of the
/// catalogue's photos; without it, it called nearly every early generated image one class
/// ("Grey Solid Skirt"), whatever the caption.
const NOISE: f64 = 0.6;
const FADE: f64 = 0.4;
/// Images per forward pass when extracting features.
const CHUNK: usize = 256;
const FORMAT: &str = "gan-engine-features-1";

/// One softmax head: its classes, the most common values of its label first, then "other".
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Head {
    pub name: String,
    pub classes: Vec<String>,
}

/// What the network predicts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum LabelSpace {
    /// One softmax head per label column, in the data set's `label_heads` order (a column
    /// with fewer than two values is left out: `column` is its index there).
    Heads(Vec<(usize, Head)>),
    /// The most frequent caption words, one sigmoid output each.
    Words(Vec<String>),
}

/// The targets of a batch: per head, a class index per image, or per image, 0/1 per word.
pub enum Targets {
    Classes(Vec<Vec<f32>>),
    Words(Vec<f32>),
}

impl LabelSpace {
    /// The label space of `data`, from its training rows: the label columns when it has
    /// any with two values or more, else its caption words.
    pub fn from_data(data: &PreparedData, rows: &[usize]) -> LabelSpace {
        let mut heads = Vec::new();
        for (h, name) in data.label_heads.iter().enumerate() {
            let mut counts: HashMap<&str, usize> = HashMap::new();
            for &r in rows {
                let v = data.labels[r][h].as_str();
                if !v.is_empty() {
                    *counts.entry(v).or_insert(0) += 1;
                }
            }
            let mut by_count: Vec<(&str, usize)> = counts.into_iter().collect();
            by_count.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
            if by_count.len() < 2 {
                continue;
            }
            let mut classes: Vec<String> = by_count.iter().take(MAX_CLASSES - 1).map(|(v, _)| v.to_string()).collect();
            classes.push("other".to_string());
            heads.push((h, Head { name: name.clone(), classes }));
        }
        if !heads.is_empty() {
            return LabelSpace::Heads(heads);
        }
        let mut df: HashMap<String, usize> = HashMap::new();
        for &r in rows {
            let mut words = tokenize(&data.captions[r]);
            words.sort();
            words.dedup();
            for w in words {
                *df.entry(w).or_insert(0) += 1;
            }
        }
        let mut by_count: Vec<(String, usize)> = df.into_iter().collect();
        by_count.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        LabelSpace::Words(by_count.into_iter().take(WORDS).map(|(w, _)| w).collect())
    }

    /// Logits of the network: every head's classes, or one per word.
    pub fn outputs(&self) -> usize {
        match self {
            LabelSpace::Heads(h) => h.iter().map(|(_, h)| h.classes.len()).sum(),
            LabelSpace::Words(w) => w.len(),
        }
    }

    /// The names conditioning is reported under (`cond_<name>`): the heads, or `words`.
    pub fn names(&self) -> Vec<String> {
        match self {
            LabelSpace::Heads(h) => h.iter().map(|(_, h)| h.name.clone()).collect(),
            LabelSpace::Words(_) => vec!["words".to_string()],
        }
    }

    /// Class of `value` in `head`: its own, or "other" (the last).
    fn class_of(head: &Head, value: &str) -> usize {
        head.classes.iter().position(|c| c == value).filter(|&i| i + 1 < head.classes.len()).unwrap_or(head.classes.len() - 1)
    }

    /// The targets of `rows` of `data`.
    pub fn targets(&self, data: &PreparedData, rows: &[usize]) -> Targets {
        match self {
            LabelSpace::Heads(heads) => {
                Targets::Classes(heads.iter().map(|(col, h)| rows.iter().map(|&r| Self::class_of(h, &data.labels[r][*col]) as f32).collect()).collect())
            }
            LabelSpace::Words(words) => Targets::Words(
                rows.iter()
                    .flat_map(|&r| {
                        let toks = tokenize(&data.captions[r]);
                        words.iter().map(move |w| toks.contains(w) as u8 as f32).collect::<Vec<_>>()
                    })
                    .collect(),
            ),
        }
    }
}

/// A 2x2 (or k x k, or global) average pool with the buffers it needs; not a `Layer`, the
/// network calls it between its blocks.
struct Pool {
    /// `None`: global.
    k: Option<usize>,
    x: Option<Shape>,
    out: Slot<Cpu>,
    dx: Slot<Cpu>,
}

impl Pool {
    fn new(k: Option<usize>) -> Pool {
        Pool { k, x: None, out: Slot::default(), dx: Slot::default() }
    }
    fn params(&self, s: Shape) -> Result<PoolParams> {
        match self.k {
            Some(k) => PoolParams::new(s.n, s.c, s.h, s.w, k),
            None => Ok(PoolParams::global(s.n, s.c, s.h)),
        }
    }
    fn forward(&mut self, be: &Cpu, x: &Tensor<Cpu>) -> Result<Tensor<Cpu>> {
        let p = self.params(x.shape)?;
        let y = self.out.get(be, Shape::new(x.shape.n, x.shape.c, p.h_out(), p.w_out()))?;
        be.avg_pool2d_forward(&p, &x.buf.borrow(), &mut y.buf.borrow_mut())?;
        self.x = Some(x.shape);
        Ok(y)
    }
    fn backward(&mut self, be: &Cpu, dy: &Tensor<Cpu>) -> Result<Tensor<Cpu>> {
        let s = self.x.context("pool: backward before forward")?;
        let p = self.params(s)?;
        let dx = self.dx.get(be, s)?;
        be.avg_pool2d_backward_input(&p, &dy.buf.borrow(), &mut dx.buf.borrow_mut())?;
        Ok(dx)
    }
}

/// Accuracy of the network on the held-out products, per head (`LabelSpace::names`).
pub type Accuracy = BTreeMap<String, f64>;

/// What the cache file's metadata says about the network.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FeatureInfo {
    pub format: String,
    pub version: u64,
    /// Hex of the key the network was trained for.
    pub key: String,
    /// Side of the data set's images.
    pub size: usize,
    pub space: LabelSpace,
    /// On the held-out split (empty when it is empty).
    pub held_out_accuracy: Accuracy,
    pub train_images: usize,
    pub epochs: usize,
    pub seconds: f64,
    /// The root mean square of the raw embedding's values over training images: features
    /// are divided by it, so every figure sees values of about unit size.
    pub embed_scale: f32,
}

pub struct FeatureNet {
    pub info: FeatureInfo,
    resize: Option<Pool>,
    blocks: Vec<(Sequential<Cpu>, Pool)>,
    embed: Sequential<Cpu>,
    head: Sequential<Cpu>,
}

/// Features of a set of images: the embedding (`EMBED` per image) and the logits.
pub struct Features {
    pub n: usize,
    pub embed: Vec<f32>,
    pub logits: Vec<f32>,
    pub outputs: usize,
}

impl Features {
    pub fn row(&self, i: usize) -> &[f32] {
        &self.embed[i * EMBED..(i + 1) * EMBED]
    }
    /// The images `rows` of this set.
    pub fn select(&self, rows: std::ops::Range<usize>) -> Features {
        Features {
            n: rows.len(),
            embed: self.embed[rows.start * EMBED..rows.end * EMBED].to_vec(),
            logits: self.logits[rows.start * self.outputs..rows.end * self.outputs].to_vec(),
            outputs: self.outputs,
        }
    }
}

impl FeatureNet {
    /// A fresh network for images of `size` px, initialised from `seed`.
    pub fn new(be: &Cpu, size: usize, space: LabelSpace, seed: u64) -> Result<FeatureNet> {
        ensure!(size >= INPUT && size.is_power_of_two(), "the feature network reads images of 32 px or more, not {size}");
        let mut rng = Rng::derive(seed, "feature-init");
        let leaky = ActKind::LeakyRelu(0.2);
        let mut blocks = Vec::new();
        let mut c_in = 3;
        for (b, &w) in WIDTHS.iter().enumerate() {
            let conv = Conv::new(be, &format!("features.blocks.{b}.0"), false, c_in, w, 3, 1, 1, false, &mut rng)?;
            let bn = BatchNorm2d::new(be, &format!("features.blocks.{b}.1"), w, &mut rng)?.with_act(leaky)?;
            let pool = Pool::new(if b + 1 == WIDTHS.len() { None } else { Some(2) });
            blocks.push((Sequential::new(vec![Box::new(conv) as Box<dyn Layer<Cpu>>, Box::new(bn)]), pool));
            c_in = w;
        }
        let embed = Sequential::new(vec![
            Box::new(Linear::new(be, "features.embed.0", c_in, EMBED, true, &mut rng)?) as Box<dyn Layer<Cpu>>,
            Box::new(Activation::new(leaky)),
        ]);
        let head = Sequential::new(vec![Box::new(Linear::new(be, "features.head.0", EMBED, space.outputs(), true, &mut rng)?) as Box<dyn Layer<Cpu>>]);
        let info = FeatureInfo {
            format: FORMAT.to_string(),
            version: VERSION,
            key: String::new(),
            size,
            space,
            held_out_accuracy: Accuracy::new(),
            train_images: 0,
            epochs: 0,
            seconds: 0.0,
            embed_scale: 1.0,
        };
        Ok(FeatureNet { info, resize: (size > INPUT).then(|| Pool::new(Some(size / INPUT))), blocks, embed, head })
    }

    fn parts(&self) -> Vec<&Sequential<Cpu>> {
        self.blocks.iter().map(|(s, _)| s).chain([&self.embed, &self.head]).collect()
    }
    fn parts_mut(&mut self) -> Vec<&mut Sequential<Cpu>> {
        let (blocks, embed, head) = (&mut self.blocks, &mut self.embed, &mut self.head);
        blocks.iter_mut().map(|(s, _)| s).chain([embed, head]).collect()
    }
    fn params_mut(&mut self) -> Vec<&mut Param<Cpu>> {
        self.parts_mut().into_iter().flat_map(|s| s.layers.iter_mut().flat_map(|l| l.params_mut())).collect()
    }

    /// `images [n, 3, size, size]` in [-1, 1] -> (embedding `[n, EMBED]`, logits).
    fn forward(&mut self, be: &Cpu, images: &Tensor<Cpu>, mode: Mode) -> Result<(Tensor<Cpu>, Tensor<Cpu>)> {
        let mut h = match &mut self.resize {
            Some(p) => p.forward(be, images)?,
            None => images.clone(),
        };
        for (seq, pool) in &mut self.blocks {
            h = seq.forward(be, &h, mode)?;
            h = pool.forward(be, &h)?;
        }
        let e = self.embed.forward(be, &h, mode)?;
        let logits = self.head.forward(be, &e, mode)?;
        Ok((e, logits))
    }

    /// Accumulates every parameter's gradient from the logits' gradient.
    fn backward(&mut self, be: &Cpu, dlogits: &Tensor<Cpu>) -> Result<()> {
        let de = self.head.backward(be, dlogits, Grads::ALL)?.context("head input gradient")?;
        let mut g = self.embed.backward(be, &de, Grads::ALL)?.context("embedding input gradient")?;
        let last = self.blocks.len() - 1;
        for (b, (seq, pool)) in self.blocks.iter_mut().enumerate().rev() {
            let d = pool.backward(be, &g)?;
            let want = if b == 0 { Grads::PARAMS } else { Grads::ALL };
            if let Some(dx) = seq.backward(be, &d, want)? {
                g = dx;
            }
            let _ = last;
        }
        Ok(())
    }

    /// Features of `n` images, `fill(i, out)` writing image `i` (3 x size x size values in
    /// [-1, 1]); inference mode, CHUNK images per pass.
    pub fn features(&mut self, be: &Cpu, n: usize, fill: impl Fn(usize, &mut [f32])) -> Result<Features> {
        let size = self.info.size;
        let per = 3 * size * size;
        let outputs = self.info.space.outputs();
        let (mut embed, mut logits) = (Vec::with_capacity(n * EMBED), Vec::with_capacity(n * outputs));
        let mut host = Vec::new();
        for start in (0..n).step_by(CHUNK) {
            let m = CHUNK.min(n - start);
            host.resize(m * per, 0.0);
            for (k, img) in host.chunks_exact_mut(per).enumerate() {
                fill(start + k, img);
            }
            let x = Tensor::from_f32(be, Shape::new(m, 3, size, size), &host)?;
            let (e, l) = self.forward(be, &x, Mode::Eval)?;
            let inv = 1.0 / self.info.embed_scale;
            embed.extend(e.to_f32(be)?.into_iter().map(|v| v * inv));
            logits.extend(l.to_f32(be)?);
        }
        Ok(Features { n, embed, logits, outputs })
    }

    /// Features of planar u8 images (what the cache stores and generated images become).
    pub fn features_u8(&mut self, be: &Cpu, images: &[u8]) -> Result<Features> {
        let per = 3 * self.info.size * self.info.size;
        ensure!(images.len().is_multiple_of(per), "{} bytes are not whole images of {} px", images.len(), self.info.size);
        let size = self.info.size;
        self.features(be, images.len() / per, |i, out| crate::data::image::planar_to_unit(&images[i * per..(i + 1) * per], size, false, out))
    }

    /// Trains a fresh network on the `split.train` rows of `data` and measures it on
    /// `split.held_out`.
    pub fn train(be: &Cpu, data: &PreparedData, split: &Split, key: u64, progress: bool) -> Result<FeatureNet> {
        let started = Instant::now();
        let rows = &split.train;
        ensure!(rows.len() >= 2, "the feature network needs at least 2 training products, the training split has {}", rows.len());
        let space = LabelSpace::from_data(data, rows);
        ensure!(space.outputs() > 0, "the feature network has nothing to learn: no labels and no caption word of two or more letters");
        let mut net = FeatureNet::new(be, data.size, space, 0xfea7)?;
        let batch = BATCH.min(rows.len());
        let epochs = (TRAIN_IMAGES / rows.len()).clamp(MIN_EPOCHS, MAX_EPOCHS);
        let steps = epochs * (rows.len() / batch);
        let per = data.image_len();
        let outputs = net.info.space.outputs();
        let mut rng = Rng::derive(0xfea7, "feature-train");
        let mut host = vec![0.0f32; batch * per];
        let x = Tensor::zeros(be, Shape::new(batch, 3, data.size, data.size))?;
        let dlogits = Tensor::zeros(be, Shape::new(batch, outputs, 1, 1))?;
        let mut loss_out = be.alloc(2)?;
        let mut step = 0u64;
        let bar = if progress {
            let b = indicatif::ProgressBar::new(steps as u64);
            b.set_style(
                indicatif::ProgressStyle::with_template("training the feature network {pos}/{len} steps [{bar:30}] eta {eta}")
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                    .progress_chars("=> "),
            );
            b
        } else {
            indicatif::ProgressBar::hidden()
        };
        for _ in 0..epochs {
            let mut order = rows.clone();
            rng.shuffle(&mut order);
            for chunk in order.chunks_exact(batch) {
                for (k, img) in host.chunks_exact_mut(per).enumerate() {
                    let flip = rng.below(2) == 1;
                    data.image_flipped(chunk[k], flip, img);
                    let (keep, grey, sigma) = (1.0 - FADE * rng.uniform(), 0.8 * rng.uniform() - 0.2, NOISE * rng.uniform());
                    img.iter_mut().for_each(|v| *v = (keep * *v as f64 + (1.0 - keep) * grey + sigma * rng.normal()).clamp(-1.0, 1.0) as f32);
                }
                x.set_f32(be, &host)?;
                let (_, logits) = net.forward(be, &x, Mode::Train)?;
                let targets = net.info.space.targets(data, chunk);
                loss(be, &net.info.space, batch, &logits, &targets, Some(&dlogits), &mut loss_out)?;
                for p in net.params_mut() {
                    be.fill(&mut p.grad, 0.0)?;
                }
                net.backward(be, &dlogits)?;
                step += 1;
                let lr = LR * (1.0 - (step - 1) as f32 / steps as f32);
                let ap =
                    AdamParams { len: 0, lr, beta1: 0.9, beta2: 0.999, eps: 1e-8, bc1: 1.0 - 0.9f32.powi(step as i32), bc2: 1.0 - 0.999f32.powi(step as i32) };
                for p in net.params_mut() {
                    be.adam_step(&AdamParams { len: p.len() as i32, ..ap }, &mut p.value, &p.grad, &mut p.m, &mut p.v)?;
                }
                bar.inc(1);
            }
        }
        bar.finish_and_clear();
        let probe: Vec<usize> = rows.iter().copied().take(1024).collect();
        let raw = net.features(be, probe.len(), |i, out| data.image(probe[i], out))?.embed;
        net.info.embed_scale = ((raw.iter().map(|v| (*v as f64).powi(2)).sum::<f64>() / raw.len().max(1) as f64).sqrt() as f32).max(1e-12);
        let held = &split.held_out;
        let acc = if held.is_empty() {
            Accuracy::new()
        } else {
            let f = net.features(be, held.len(), |i, out| data.image(held[i], out))?;
            accuracy(&net.info.space, &f, &net.info.space.targets(data, held))
        };
        net.info.key = format!("{key:016x}");
        net.info.held_out_accuracy = acc;
        net.info.train_images = rows.len();
        net.info.epochs = epochs;
        net.info.seconds = started.elapsed().as_secs_f64();
        Ok(net)
    }

    /// Every parameter and batchnorm statistic, by name.
    fn tensors(&self, be: &Cpu) -> Result<Vec<crate::train::checkpoint::NamedTensor>> {
        use crate::train::checkpoint::NamedTensor;
        let mut out = Vec::new();
        for s in self.parts() {
            for l in &s.layers {
                for p in l.params() {
                    out.push(NamedTensor { name: p.name.clone(), shape: p.shape.clone(), data: p.value.clone() });
                }
                for b in l.buffers() {
                    out.push(NamedTensor { name: b.name.clone(), shape: vec![b.len], data: b.value.clone() });
                }
            }
        }
        let _ = be;
        Ok(out)
    }

    pub fn save(&self, be: &Cpu, path: &Path) -> Result<()> {
        let ck = crate::train::checkpoint::Checkpoint { meta: serde_json::to_value(&self.info)?, tensors: self.tensors(be)? };
        crate::train::checkpoint::save(path, &ck)
    }

    /// The network in `path` if it was trained for `key` by this version; `None`: retrain.
    pub fn load(be: &Cpu, path: &Path, key: u64) -> Option<FeatureNet> {
        let bytes = std::fs::read(path).ok()?;
        let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).ok()?;
        let info: FeatureInfo = serde_json::from_str(header.metadata().as_ref()?.get("gan_engine")?).ok()?;
        if info.format != FORMAT || info.version != VERSION || info.key != format!("{key:016x}") {
            return None;
        }
        let st = safetensors::SafeTensors::deserialize(&bytes).ok()?;
        let mut net = FeatureNet::new(be, info.size, info.space.clone(), 0).ok()?;
        for s in net.parts_mut() {
            for l in s.layers.iter_mut() {
                for p in l.params_mut() {
                    let v = st.tensor(&p.name).ok()?;
                    (v.shape() == p.shape.as_slice()).then_some(())?;
                    p.value = f32s(v.data());
                }
                for b in l.buffers_mut() {
                    let v = st.tensor(&b.name).ok()?;
                    (v.shape() == [b.len]).then_some(())?;
                    b.value = f32s(v.data());
                }
            }
        }
        net.info = info;
        Some(net)
    }
}

fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
}

/// The training loss of a batch over every head (each head's mean loss divided by the
/// number of heads), with the logits' gradient written into `dlogits` when given.
fn loss(be: &Cpu, space: &LabelSpace, n: usize, logits: &Tensor<Cpu>, targets: &Targets, dlogits: Option<&Tensor<Cpu>>, out: &mut Vec<f32>) -> Result<f64> {
    let stride = space.outputs() as i32;
    let mut total = 0.0;
    match (space, targets) {
        (LabelSpace::Heads(heads), Targets::Classes(t)) => {
            let mut offset = 0;
            for ((_, h), t) in heads.iter().zip(t) {
                let p = CrossEntropyParams { n: n as i32, classes: h.classes.len() as i32, stride, offset, scale: 1.0 / heads.len() as f32 };
                let tb = t.clone();
                be.softmax_cross_entropy_forward(&p, &logits.buf.borrow(), &tb, out)?;
                total += out[0] as f64;
                if let Some(d) = dlogits {
                    be.softmax_cross_entropy_backward_input(&p, &logits.buf.borrow(), &tb, &mut d.buf.borrow_mut())?;
                }
                offset += h.classes.len() as i32;
            }
        }
        (LabelSpace::Words(w), Targets::Words(t)) => {
            let p = CrossEntropyParams { n: n as i32, classes: w.len() as i32, stride, offset: 0, scale: 1.0 };
            be.sigmoid_cross_entropy_forward(&p, &logits.buf.borrow(), t, out)?;
            total += out[0] as f64;
            if let Some(d) = dlogits {
                be.sigmoid_cross_entropy_backward_input(&p, &logits.buf.borrow(), t, &mut d.buf.borrow_mut())?;
            }
        }
        _ => bail!("targets of another label space"),
    }
    Ok(total)
}

/// Accuracy of the features' logits against `targets`, per name of `space.names()`: the
/// fraction of images whose largest logit is the target class; for caption words, the F1
/// score of the words predicted (logit > 0) against the words of the captions.
pub fn accuracy(space: &LabelSpace, f: &Features, targets: &Targets) -> Accuracy {
    let mut out = Accuracy::new();
    match (space, targets) {
        (LabelSpace::Heads(heads), Targets::Classes(t)) => {
            let mut offset = 0;
            for ((_, h), t) in heads.iter().zip(t) {
                let c = h.classes.len();
                let hits = (0..f.n)
                    .filter(|&i| {
                        let row = &f.logits[i * f.outputs + offset..i * f.outputs + offset + c];
                        let arg = (1..c).fold(0, |a, j| if row[j] > row[a] { j } else { a });
                        arg == t[i] as usize
                    })
                    .count();
                out.insert(h.name.clone(), hits as f64 / f.n.max(1) as f64);
                offset += c;
            }
        }
        (LabelSpace::Words(w), Targets::Words(t)) => {
            let (mut tp, mut fp, mut fnn) = (0usize, 0usize, 0usize);
            for i in 0..f.n {
                for j in 0..w.len() {
                    let (pred, truth) = (f.logits[i * f.outputs + j] > 0.0, t[i * w.len() + j] > 0.5);
                    tp += (pred && truth) as usize;
                    fp += (pred && !truth) as usize;
                    fnn += (!pred && truth) as usize;
                }
            }
            out.insert("words".to_string(), 2.0 * tp as f64 / (2 * tp + fp + fnn).max(1) as f64);
        }
        _ => {}
    }
    out
}

/// The cache key of the network for `data` at `fraction`: the version, the image size, the
/// split, every row's id, caption and labels, and every image's bytes.
pub fn cache_key(data: &PreparedData, fraction: f64) -> u64 {
    let mut h = Fnv64::default();
    h.u64(VERSION).u64(data.size as u64).u64(fraction.to_bits()).u64(data.len() as u64);
    for name in &data.label_heads {
        h.str(name);
    }
    for i in 0..data.len() {
        h.str(&data.ids[i]).str(&data.captions[i]);
        for l in &data.labels[i] {
            h.str(l);
        }
        h.bytes(data.image_bytes(i));
    }
    h.finish()
}

/// `features-<name>-<key>-<size>px.safetensors` in the cache folder.
pub fn cache_path(cache_dir: &Path, name: &str, key: u64, size: usize) -> PathBuf {
    let name: String = name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).take(40).collect();
    cache_dir.join(format!("features-{name}-{key:016x}-{size}px.safetensors"))
}

/// The cached network for `data` at `fraction`, or a new one trained and cached; says which
/// on stderr, with its held-out accuracy.
pub fn load_or_train(be: &Cpu, data: &PreparedData, split: &Split, fraction: f64, name: &str, cache_dir: &Path, progress: bool) -> Result<FeatureNet> {
    let key = cache_key(data, fraction);
    let path = cache_path(cache_dir, name, key, data.size);
    if let Some(net) = FeatureNet::load(be, &path, key) {
        eprintln!("feature network: {} (held-out accuracy {})", path.display(), describe(&net.info.held_out_accuracy));
        return Ok(net);
    }
    let net = FeatureNet::train(be, data, split, key, progress)?;
    std::fs::create_dir_all(cache_dir)
        .with_context(|| format!("cannot create the cache folder {}: pass --cache-dir with a writable folder", cache_dir.display()))?;
    net.save(be, &path)?;
    eprintln!(
        "feature network: trained on {} products, {} epochs, in {:.1} s -> {}; held-out accuracy {}",
        net.info.train_images,
        net.info.epochs,
        net.info.seconds,
        path.display(),
        describe(&net.info.held_out_accuracy)
    );
    Ok(net)
}

/// `articleType 0.812, baseColour 0.540, ...`
pub fn describe(acc: &Accuracy) -> String {
    if acc.is_empty() {
        return "not measured (no held-out products)".to_string();
    }
    acc.iter().map(|(k, v)| format!("{k} {v:.3}")).collect::<Vec<_>>().join(", ")
}
