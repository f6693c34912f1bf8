//! Data: catalogue readers, image preparation, the memory-mapped cache, batches and the
//! synthetic catalogue.
//!
//! `prepare` turns a data source into `PreparedData`: captions, the TF-IDF encoder fitted on
//! them (or a saved one), every caption's vector, and every image at the requested size.
//! Folder data sets go through the on-disk cache (`cache`). The synthetic catalogue is drawn
//! in memory instead: its 2,000 default products take about a second at 64 px and a few at
//! 128 px (`cargo bench --bench decode`), small next to training, and need no cache folder.
//!
//! The TF-IDF vocabulary of a folder is fitted on the captions of the rows whose image file
//! exists, before decoding, so it does not depend on the image size or fit mode, and
//! `gan-engine text` reproduces it without decoding a single image.

pub mod cache;
pub mod captions;
pub mod catalogue;
pub mod image;
pub mod kaggle;
pub mod loader;
pub mod records;
pub mod synth;

pub use catalogue::{read_catalogue, Catalogue, Item, Layout, ReadCounts, SkipReason};
pub use image::Fit;
pub use loader::{Batch, Loader, LoaderOptions, LoaderState};
pub use synth::{write_synthetic, SYNTHETIC_DEFAULT_N, SYNTHETIC_DEFAULT_SEED};

use crate::hash::Fnv64;
use crate::text::{Tfidf, DEFAULT_MAX_FEATURES};
use anyhow::{bail, ensure, Result};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

#[derive(Clone, Debug, PartialEq)]
pub enum DataSource {
    Synthetic { n: usize, seed: u64 },
    Folder(PathBuf),
}

impl DataSource {
    /// `--data DIR` if given, else the default synthetic catalogue (the same products whatever
    /// the training seed, so runs with different seeds see the same data).
    pub fn from_arg(data: Option<PathBuf>) -> DataSource {
        match data {
            Some(dir) => DataSource::Folder(dir),
            None => DataSource::Synthetic { n: SYNTHETIC_DEFAULT_N, seed: SYNTHETIC_DEFAULT_SEED },
        }
    }

    pub fn describe(&self) -> String {
        match self {
            DataSource::Synthetic { n, seed } => format!("synthetic catalogue ({n} products, seed {seed})"),
            DataSource::Folder(dir) => dir.display().to_string(),
        }
    }
}

#[derive(Clone, Debug)]
pub struct PrepareOptions {
    /// Image side: a power of two from 16 to 512 (the models use 32, 64 or 128).
    pub size: usize,
    /// Centre crop instead of white padding for non-square images.
    pub crop: bool,
    /// Where caches go; `None`: the user cache folder (`cache::default_cache_dir`).
    pub cache_dir: Option<PathBuf>,
    pub max_features: usize,
    /// Show a progress bar while building a cache.
    pub progress: bool,
    /// Reuse a saved vocabulary (resume) instead of fitting one.
    pub tfidf: Option<Tfidf>,
}

impl Default for PrepareOptions {
    fn default() -> Self {
        PrepareOptions { size: 64, crop: false, cache_dir: None, max_features: DEFAULT_MAX_FEATURES, progress: true, tfidf: None }
    }
}

enum ImageStore {
    /// The memory-mapped cache file.
    Cached(cache::Cache),
    Memory(Vec<u8>),
}

pub struct PreparedData {
    pub size: usize,
    pub captions: Vec<String>,
    /// Which products these are: a resumed run checks it is given the same ones.
    pub stamp: DataStamp,
    pub tfidf: Tfidf,
    /// The one summary line printed by `prepare`.
    pub summary: String,
    /// The cache file behind the images (`None` for the synthetic catalogue).
    pub cache_path: Option<PathBuf>,
    /// Each row's product id (`Item::id`; the synthetic product's number).
    pub ids: Vec<String>,
    /// Names of the label heads (`Catalogue::label_heads`; kind, colour and pattern for the
    /// synthetic catalogue); empty when the data set has no labels.
    pub label_heads: Vec<String>,
    /// Each row's labels, one per head (empty string: not given).
    pub labels: Vec<Vec<String>>,
    images: ImageStore,
    /// The stored image of each row (rows may be a subset of the store: `keep_rows`).
    stored: Vec<usize>,
    /// `len() * tfidf.dim()` values.
    texts: Vec<f32>,
}

/// Captions of a source without preparing any image: the rows whose image exists (folder),
/// or the synthetic products. The second value is the summary line.
pub fn read_captions(source: &DataSource) -> Result<(Vec<String>, String)> {
    match source {
        DataSource::Synthetic { n, seed } => {
            ensure!(*n > 0, "the synthetic catalogue needs at least one product");
            let caps = synth::products(*n, *seed).iter().map(|p| p.caption()).collect();
            Ok((caps, format!("data: {}: {n} products", source.describe())))
        }
        DataSource::Folder(dir) => {
            let cat = read_catalogue(dir)?;
            let line = format!("data: {} ({}): {}", dir.display(), cat.layout.name(), cat.counts.summary(cat.items.len()));
            Ok((cat.captions(), line))
        }
    }
}

/// Product ids of a source without preparing any image (the rows `read_captions` gives):
/// what the held-out split is a function of.
pub fn read_ids(source: &DataSource) -> Result<Vec<String>> {
    match source {
        DataSource::Synthetic { n, seed } => Ok(synth::products(*n, *seed).iter().map(|p| p.id.to_string()).collect()),
        DataSource::Folder(dir) => Ok(read_catalogue(dir)?.items.into_iter().map(|i| i.id).collect()),
    }
}

/// The products of a run's data set (all of them, before any held-out split): how many,
/// and a hash of each one's image name and caption,
/// in order. Saved with every checkpoint, so a resumed run notices a changed data set.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataStamp {
    pub products: usize,
    /// FNV-1a of the image names (relative to the data folder) and captions, in hex.
    pub fingerprint: String,
}

impl DataStamp {
    fn of<'a>(products: impl Iterator<Item = (String, &'a str)>) -> DataStamp {
        let mut h = Fnv64::default();
        let mut n = 0;
        for (image, caption) in products {
            h.str(&image).str(caption);
            n += 1;
        }
        DataStamp { products: n, fingerprint: format!("{:016x}", h.finish()) }
    }
}

fn check_size(size: usize) -> Result<()> {
    if !size.is_power_of_two() || !(16..=512).contains(&size) {
        bail!("image size {size} is not supported: use 32, 64 or 128");
    }
    Ok(())
}

fn fit_or_reuse(captions: &[String], opts: &PrepareOptions, what: &str) -> Result<Tfidf> {
    if let Some(t) = &opts.tfidf {
        t.validate()?;
        return Ok(t.clone());
    }
    ensure!(opts.max_features > 0, "--max-features must be at least 1");
    let t = Tfidf::fit(captions, opts.max_features);
    ensure!(t.dim() > 0, "{what}: no caption has a word of two or more letters, so there is no vocabulary");
    Ok(t)
}

/// Loads (building the cache if needed) or draws the data set, fits or reuses the TF-IDF
/// encoder, and prints one summary line to stderr.
pub fn prepare(source: &DataSource, opts: &PrepareOptions) -> Result<PreparedData> {
    check_size(opts.size)?;
    let size = opts.size;
    let (captions, tfidf, images, summary, cache_path, ids, label_heads, labels, stamp) = match source {
        DataSource::Synthetic { n, seed } => {
            ensure!(*n > 0, "the synthetic catalogue needs at least one product");
            let products = synth::products(*n, *seed);
            let captions: Vec<String> = products.iter().map(|p| p.caption()).collect();
            let ids = products.iter().map(|p| p.id.to_string()).collect();
            let labels = products.iter().map(|p| p.labels()).collect();
            let heads = synth::LABEL_HEADS.iter().map(|h| h.to_string()).collect();
            let tfidf = fit_or_reuse(&captions, opts, "synthetic catalogue")?;
            let pixels = synth::draw_planar(&products, size);
            let summary = format!("data: {}: {n} products drawn at {size} px", source.describe());
            let stamp = DataStamp::of(captions.iter().enumerate().map(|(i, c)| (format!("synthetic-{seed}-{i}"), c.as_str())));
            (captions, tfidf, ImageStore::Memory(pixels), summary, None, ids, heads, labels, stamp)
        }
        DataSource::Folder(dir) => {
            let cat = read_catalogue(dir)?;
            let tfidf = fit_or_reuse(&cat.captions(), opts, &dir.display().to_string())?;
            let cache_dir = match &opts.cache_dir {
                Some(d) => d.clone(),
                None => cache::default_cache_dir()?,
            };
            let fit = Fit::from_crop(opts.crop);
            let c = cache::load_or_build(&cat, size, fit, &cache_dir, opts.progress)?;
            for (path, reason) in c.trailer.unreadable.iter().take(if c.built { 10 } else { 0 }) {
                eprintln!("warning: skipped unreadable image {path}: {reason}");
            }
            let mut counts = cat.counts.clone();
            c.count_unreadable(&mut counts);
            let captions: Vec<String> = c.trailer.items.iter().map(|&i| cat.items[i as usize].caption.clone()).collect();
            let ids = c.trailer.items.iter().map(|&i| cat.items[i as usize].id.clone()).collect();
            let labels = c.trailer.items.iter().map(|&i| cat.items[i as usize].labels.clone()).collect();
            let summary = format!("data: {} ({}, {size} px, {}): {}", dir.display(), cat.layout.name(), fit.name(), counts.summary(captions.len()));
            if captions.is_empty() {
                bail!("{}: empty data set: no image could be decoded ({summary})", dir.display());
            }
            let path = c.path.clone();
            let stamp = DataStamp::of(c.trailer.items.iter().map(|&i| {
                let item = &cat.items[i as usize];
                (item.image.strip_prefix(dir).unwrap_or(&item.image).to_string_lossy().into_owned(), item.caption.as_str())
            }));
            (captions, tfidf, ImageStore::Cached(c), summary, Some(path), ids, cat.label_heads.clone(), labels, stamp)
        }
    };
    eprintln!("{summary}");
    let dim = tfidf.dim();
    let mut texts = vec![0.0f32; captions.len() * dim];
    for (cap, out) in captions.iter().zip(texts.chunks_exact_mut(dim)) {
        tfidf.encode_into(cap, out);
    }
    let zero = texts.chunks_exact(dim).filter(|v| v.iter().all(|&x| x == 0.0)).count();
    if zero > 0 {
        eprintln!("warning: {zero} of {} captions have no word in the vocabulary; their text vectors are all zeros", captions.len());
    }
    let stored = (0..captions.len()).collect();
    Ok(PreparedData { size, captions, stamp, tfidf, summary, cache_path, ids, label_heads, labels, images, stored, texts })
}

impl PreparedData {
    pub fn len(&self) -> usize {
        self.captions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.captions.is_empty()
    }

    /// Values per image: 3 * size * size.
    pub fn image_len(&self) -> usize {
        3 * self.size * self.size
    }

    /// Planar CHW bytes of image `i`.
    pub fn image_bytes(&self, i: usize) -> &[u8] {
        let s = self.stored[i];
        match &self.images {
            ImageStore::Cached(c) => c.image(s),
            ImageStore::Memory(v) => &v[s * self.image_len()..(s + 1) * self.image_len()],
        }
    }

    /// Keeps only `rows` (indices of the current rows, in the order given): what `train`
    /// does with the held-out evaluation split.
    pub fn keep_rows(&mut self, rows: &[usize]) {
        let d = self.tfidf.dim();
        self.captions = rows.iter().map(|&i| self.captions[i].clone()).collect();
        self.ids = rows.iter().map(|&i| self.ids[i].clone()).collect();
        self.labels = rows.iter().map(|&i| self.labels[i].clone()).collect();
        self.stored = rows.iter().map(|&i| self.stored[i]).collect();
        self.texts = rows.iter().flat_map(|&i| self.texts[i * d..(i + 1) * d].iter().copied()).collect();
    }

    /// Image `i` as 3*S*S NCHW floats in [-1, 1].
    pub fn image(&self, i: usize, out: &mut [f32]) {
        self.image_flipped(i, false, out)
    }

    /// Image `i`, mirrored left-right if `flip`.
    pub fn image_flipped(&self, i: usize, flip: bool, out: &mut [f32]) {
        image::planar_to_unit(self.image_bytes(i), self.size, flip, out)
    }

    /// The TF-IDF vector of caption `i`.
    pub fn text(&self, i: usize) -> &[f32] {
        let d = self.tfidf.dim();
        &self.texts[i * d..(i + 1) * d]
    }
}
