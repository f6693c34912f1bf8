//! Drawing from a trained checkpoint: the one path that `gan-engine sample` and
//! `gan-engine serve` share, so both give the same pixels for the same text and seed.
//!
//! - [`load`] reads a run folder's newest checkpoint (or one file) and its metadata;
//! - [`Drawer`] holds the generator built from it on one backend;
//! - a [`Sheet`] lays out what to draw: one row per caption with fresh noise in every
//!   column, or a walk from caption A to caption B with one noise vector per row;
//! - [`Drawer::draw`] runs the generator on any run of the sheet's images, in order.
//!
//! The noise of a sheet is one stream, `Rng::derive(seed, "sample")`, read 100 values (one
//! vector) at a time: image `k` of a caption sheet gets vector `k`, row `r` of a walk gets
//! vector `r`. So image 3 of `-n 8` is image 3 of `-n 64` with the same seed, and a walk row
//! holds the noise of the caption image with the same index.

use crate::backend::Backend;
use crate::model::Usage;
use crate::rng::Rng;
use crate::text::Tfidf;
use crate::train::checkpoint::{self, NamedTensor};
use crate::train::run::RunState;
use crate::train::{report, Drawing, Gan};
use anyhow::{ensure, Context, Result};
use std::path::{Path, PathBuf};

/// Images per generator call: memory stays that of one small batch however many images
/// are asked for. With the running batchnorm statistics (the default) every image is
/// computed on its own, so chunking changes no pixel; with `--bn batch` each chunk is
/// normalised by its own statistics.
pub const CHUNK: usize = 64;

/// A checkpoint read from disk, not yet on a backend.
pub struct Loaded {
    /// The checkpoint file (the newest of a run folder when a folder was given).
    pub path: PathBuf,
    /// The run folder the file belongs to, when it sits in `RUN/checkpoints/`.
    pub run_dir: Option<PathBuf>,
    pub state: RunState,
    pub tensors: Vec<NamedTensor>,
}

/// Reads `path`: a run folder (its newest checkpoint that loads, saying on stderr which newer
/// ones it skipped and why) or a `.safetensors` file. Every metadata field and tensor value
/// is checked (`RunState::from_checkpoint`). Errors name `path`, for the `--checkpoint` flag.
pub fn load(path: &Path) -> Result<Loaded> {
    let found = checkpoint::load_checked(path, RunState::from_checkpoint).with_context(|| format!("--checkpoint {}", path.display()))?;
    for (skipped, why) in &found.skipped {
        eprintln!("warning: --checkpoint {}: skipped {}: {why}", path.display(), skipped.display());
    }
    let file = found.path;
    let run_dir = file.parent().filter(|p| p.file_name().is_some_and(|n| n == "checkpoints")).and_then(|p| p.parent()).map(|p| {
        if p.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            p.to_path_buf()
        }
    });
    Ok(Loaded { path: file, run_dir, state: found.checked, tensors: found.checkpoint.tensors })
}

/// The generator of a checkpoint on one backend, with the text encoder it was trained with.
pub struct Drawer<B: Backend> {
    gan: Gan<B>,
    pub tfidf: Tfidf,
    pub size: usize,
    noise_dim: usize,
    text_dim: usize,
}

impl<B: Backend> Drawer<B> {
    /// The generator users see. This is the one place `sample` and `serve` choose its
    /// weights: the EMA generator when the checkpoint carries one and `drawing.ema` asks for
    /// it (the default; `--no-ema` does not), else the raw G; with the batchnorm statistics
    /// `drawing.bn` names (`--bn`).
    pub fn new(be: &B, loaded: &Loaded, drawing: Drawing) -> Result<Drawer<B>> {
        let cfg = &loaded.state.config;
        cfg.check_memory(Usage::Drawing { batch: CHUNK }, be.memory_available()).with_context(|| format!("--checkpoint {}", loaded.path.display()))?;
        let mut gan = loaded.state.build_gan(be, &loaded.tensors).with_context(|| format!("--checkpoint {}", loaded.path.display()))?;
        gan.drawing = drawing;
        Ok(Drawer { gan, tfidf: loaded.state.tfidf.clone(), size: cfg.size, noise_dim: cfg.noise_dim, text_dim: cfg.text_dim })
    }

    /// Which generator draws, for people (a line on stderr).
    pub fn note(&self) -> String {
        self.gan.drawing_note()
    }

    /// Whether the EMA generator draws.
    pub fn draws_ema(&self) -> bool {
        self.gan.draws_ema()
    }

    /// Values of one noise vector.
    pub fn noise_dim(&self) -> usize {
        self.noise_dim
    }

    /// Values of one image (3 x size x size, NCHW, in [-1, 1]).
    pub fn image_len(&self) -> usize {
        3 * self.size * self.size
    }

    /// Images `k0..k1` of `sheet` (k in grid order: row `k / cols`, column `k % cols`),
    /// `k1 - k0` of at most [`CHUNK`], in one generator call. Calls must come in
    /// increasing `k0`: the sheet's noise stream only moves forward.
    pub fn draw(&mut self, be: &B, sheet: &mut Sheet, k0: usize, k1: usize) -> Result<Vec<f32>> {
        ensure!(k0 < k1 && k1 <= sheet.total() && k1 - k0 <= CHUNK, "images {k0}..{k1} of a sheet of {}", sheet.total());
        ensure!(sheet.text_dim == self.text_dim && sheet.noise.z.len() == self.noise_dim, "the sheet was made for another model");
        let (noise, texts) = sheet.inputs(k0, k1)?;
        let images = self.gan.draw(be, &noise, &texts)?;
        // Finite weights can still overflow on the way (a damaged or diverged model): say so
        // rather than draw black.
        ensure!(
            images.iter().all(|v| v.is_finite()),
            "the generator draws non-finite pixels: its weights overflow, so this checkpoint is of a diverged run; use an earlier one"
        );
        Ok(images)
    }
}

/// What one sheet holds, before the noise.
enum Layout {
    /// One row per caption vector; every image has its own noise vector.
    Captions(Vec<Vec<f32>>),
    /// Rows of `cols` images from caption A to caption B; one noise vector per row.
    Walk(Vec<f32>, Vec<f32>),
}

/// A grid of images to draw: `rows x cols`, image `k` at row `k / cols`, column `k % cols`.
pub struct Sheet {
    layout: Layout,
    pub rows: usize,
    pub cols: usize,
    text_dim: usize,
    noise: NoiseStream,
}

impl Sheet {
    /// One row per caption vector (from [`Tfidf::encode`]), `n` images each.
    pub fn captions(captions: Vec<Vec<f32>>, n: usize, seed: u64, noise_dim: usize) -> Sheet {
        let text_dim = captions.first().map_or(0, |c| c.len());
        Sheet { rows: captions.len(), cols: n, layout: Layout::Captions(captions), text_dim, noise: NoiseStream::new(seed, noise_dim) }
    }

    /// `rows` walks of `steps` images (ends included) from caption vector `a` to `b`.
    pub fn walk(a: Vec<f32>, b: Vec<f32>, steps: usize, rows: usize, seed: u64, noise_dim: usize) -> Sheet {
        Sheet { rows, cols: steps, text_dim: a.len(), layout: Layout::Walk(a, b), noise: NoiseStream::new(seed, noise_dim) }
    }

    /// Images on the sheet.
    pub fn total(&self) -> usize {
        self.rows * self.cols
    }

    /// The noise and text vectors of images `k0..k1`.
    fn inputs(&mut self, k0: usize, k1: usize) -> Result<(Vec<f32>, Vec<f32>)> {
        let cols = self.cols;
        let mut noise = Vec::with_capacity((k1 - k0) * self.noise.z.len());
        let mut texts = Vec::with_capacity((k1 - k0) * self.text_dim);
        for k in k0..k1 {
            let (r, c) = (k / cols, k % cols);
            match &self.layout {
                Layout::Captions(captions) => {
                    noise.extend_from_slice(self.noise.vector(k)?);
                    texts.extend_from_slice(&captions[r]);
                }
                Layout::Walk(va, vb) => {
                    noise.extend_from_slice(self.noise.vector(r)?);
                    let w = if cols > 1 { c as f32 / (cols - 1) as f32 } else { 0.0 };
                    texts.extend(va.iter().zip(vb).map(|(x, y)| (1.0 - w) * x + w * y));
                }
            }
        }
        Ok((noise, texts))
    }
}

/// The noise vectors of one seed, in order; vector `i` is the `i`-th draw of
/// `noise_dim` standard normals from `Rng::derive(seed, "sample")`.
struct NoiseStream {
    rng: Rng,
    z: Vec<f32>,
    /// Vectors drawn so far; `z` holds vector `drawn - 1`.
    drawn: usize,
}

impl NoiseStream {
    fn new(seed: u64, noise_dim: usize) -> NoiseStream {
        NoiseStream { rng: Rng::derive(seed, "sample"), z: vec![0.0; noise_dim], drawn: 0 }
    }

    /// Vector `i`: the current one again, or a later one (the ones in between are drawn
    /// and dropped).
    fn vector(&mut self, i: usize) -> Result<&[f32]> {
        ensure!(i + 1 >= self.drawn, "noise vector {i} was asked for after vector {}", self.drawn - 1);
        while self.drawn <= i {
            self.rng.fill_normal(&mut self.z, 0.0, 1.0);
            self.drawn += 1;
        }
        Ok(&self.z)
    }
}

/// One image (NCHW in [-1, 1]) as PNG bytes: the bytes `sample --out-dir` writes.
pub fn png(img: &[f32], size: usize) -> Result<Vec<u8>> {
    encode_png(&report::single_image(img, size))
}

/// A picture as PNG bytes, with the `image` crate's default encoder settings.
pub fn encode_png(img: &image::RgbImage) -> Result<Vec<u8>> {
    let mut bytes = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut bytes), image::ImageFormat::Png).context("cannot encode PNG")?;
    Ok(bytes)
}
