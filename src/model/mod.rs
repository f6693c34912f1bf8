//! The text-conditioned DCGAN: generator and discriminator for 32, 64 and 128 px at any
//! base width, written against the op contract only.

mod progressive;
mod table;

pub use progressive::{ProgDiscriminator, ProgGenerator};
pub use table::{iteration_flops, layer_table, LayerRow};

use crate::backend::{Available, Backend};
use crate::nn::{
    ActKind, Activation, BatchNorm2d, Buffer, ConcatTile, Conv, EqConv, Grads, Layer, Linear, MinibatchStd, Mode, Param, Projection, Sequential, Shape, Tensor,
};
use crate::rng::Rng;
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

pub const SIZES: [usize; 3] = [32, 64, 128];

/// The largest width of any part (`width`, `noise_dim`, `text_dim`, `text_proj`) a
/// configuration may name: far above what any memory holds, low enough that no size
/// computed from it overflows.
pub const MAX_DIM: usize = 1 << 32;

/// What a model is allocated for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Usage {
    /// Training iterations at this batch size.
    Training { batch: usize },
    /// The generator alone, in inference mode, on this many images at a time.
    Drawing { batch: usize },
}

/// Bytes a model needs at least (see `ModelConfig::memory_need`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MemoryNeed {
    pub parameters: f64,
    pub layers: f64,
}

impl MemoryNeed {
    pub fn total(&self) -> f64 {
        self.parameters + self.layers
    }
}

/// `2.9 TB`, `512.0 MB`: bytes for people, in powers of 1000.
pub fn human_bytes(b: f64) -> String {
    let (v, unit) =
        [(1e15, "PB"), (1e12, "TB"), (1e9, "GB"), (1e6, "MB"), (1e3, "kB")].into_iter().find(|(s, _)| b >= *s).map_or((b, "bytes"), |(s, u)| (b / s, u));
    if unit == "bytes" {
        format!("{b} bytes")
    } else {
        format!("{v:.1} {unit}")
    }
}

/// Levels of a progressive model of side `size` (a power of two of at least 4; a
/// progressive run takes 16 or more, `train::grow::check_size`): 4x4, 8x8, ... up to `size`.
pub fn progressive_levels(size: usize) -> usize {
    size.trailing_zeros() as usize - 1
}

/// How the discriminator reads the caption (`train --text-in-d`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum TextInD {
    /// The article's: the caption's projection (`text_proj` values, a linear layer and a
    /// LeakyReLU) tiled over the 4x4 grid and joined to the image features before the head.
    #[default]
    Tile,
    /// The projection discriminator (Miyato and Koyama 2018): the head sees the image
    /// features alone, and the logit is `psi(h) + <V t, phi(h)>`, with `h` the head's last
    /// hidden features (the output of `head`'s batchnorm and LeakyReLU, top channels x 4 x
    /// 4), `psi` the head's last convolution (the unconditional logit), `phi(h)` the average
    /// of `h` over the 4x4 grid and `V` a linear map of the TF-IDF vector to the top
    /// channels, without bias (`discriminator.embed.0`).
    Projection,
}

impl std::fmt::Display for TextInD {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TextInD::Tile => "tile",
            TextInD::Projection => "projection",
        })
    }
}

/// Architecture of one G/D pair; saved with every checkpoint.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    /// Image side in pixels: 32, 64 or 128.
    pub size: usize,
    /// Base channel count (ngf = ndf).
    pub width: usize,
    pub noise_dim: usize,
    /// Length of the TF-IDF vector.
    pub text_dim: usize,
    /// Width of the discriminator's text projection.
    pub text_proj: usize,
    /// Negative slope of the discriminator's LeakyReLU.
    pub slope: f32,
    /// Group size of the minibatch standard deviation channel at the head of the
    /// discriminator (ProGAN; `train --minibatch-std`); 0 is off, which is also what a
    /// checkpoint from before it means. 1 is refused: a group of one has no spread.
    #[serde(default)]
    pub minibatch_std: usize,
    /// How the discriminator reads the caption (`train --text-in-d`); a checkpoint from
    /// before it tiles. With `Projection`, `text_proj` is not used.
    #[serde(default)]
    pub text_in_d: TextInD,
    /// Progressive growing (ProGAN, `train --progressive`, `model/progressive.rs`): one
    /// block per resolution from 4x4 up to `size`, grown in by `Progress`; a checkpoint
    /// from before it is a DCGAN.
    #[serde(default)]
    pub progressive: bool,
}

/// Where a progressive model stands: its `level` (resolution `4 * 2^level`) and how far the
/// level's new block is faded in (`alpha`, 0 to 1; 1 once it is stabilising).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    pub level: usize,
    pub alpha: f32,
}

impl Progress {
    /// The image side at this level.
    pub fn side(&self) -> usize {
        4 << self.level
    }
    /// `32 px (fading in, 0.42)` or `32 px`.
    pub fn describe(&self) -> String {
        if self.alpha < 1.0 {
            format!("{} px, fading in at {:.3}", self.side(), self.alpha)
        } else {
            format!("{} px", self.side())
        }
    }
}

impl ModelConfig {
    pub fn new(size: usize, width: usize) -> Result<ModelConfig> {
        let cfg = ModelConfig {
            size,
            width,
            noise_dim: 100,
            text_dim: 256,
            text_proj: 128,
            slope: 0.2,
            minibatch_std: 0,
            text_in_d: TextInD::Tile,
            progressive: false,
        };
        cfg.validate()?;
        Ok(cfg)
    }
    pub fn validate(&self) -> Result<()> {
        if !self.size.is_power_of_two() || !(16..=512).contains(&self.size) {
            bail!("image size {} is not supported: use 32, 64 or 128", self.size);
        }
        if self.width == 0 || self.noise_dim == 0 || self.text_dim == 0 || self.text_proj == 0 {
            bail!("model widths must be positive (width {}, noise {}, text {}, text projection {})", self.width, self.noise_dim, self.text_dim, self.text_proj);
        }
        if [self.width, self.noise_dim, self.text_dim, self.text_proj].iter().any(|&v| v > MAX_DIM) {
            bail!(
                "model widths must be at most {MAX_DIM} (width {}, noise {}, text {}, text projection {})",
                self.width,
                self.noise_dim,
                self.text_dim,
                self.text_proj
            );
        }
        if !(0.0..1.0).contains(&self.slope) {
            bail!("the discriminator's LeakyReLU slope {} must be at least 0 and below 1", self.slope);
        }
        if self.minibatch_std == 1 {
            bail!("a minibatch standard deviation over groups of 1 is a constant channel: use groups of 2 or more (ProGAN uses 4), or 0 for none");
        }
        if self.progressive && self.text_in_d != TextInD::Tile {
            bail!(
                "the progressive discriminator reads the caption tiled at 4x4, as the DCGAN does: --text-in-d {} is not available with --progressive",
                self.text_in_d
            );
        }
        Ok(())
    }

    /// Levels of a progressive model: 4x4, 8x8, ... up to `size`.
    pub fn levels(&self) -> usize {
        progressive_levels(self.size)
    }
    /// Channels of a progressive model at `level`: `width` at the final size, doubling
    /// with every halving of the side, at most `8 * width` (ProGAN's 512 channels up to 32
    /// px, then halving, at width 64).
    pub fn level_channels(&self, level: usize) -> usize {
        self.width * (self.size / (4 << level)).min(8)
    }

    /// Parameters of the generator and of the discriminator, counted from the configuration
    /// before anything is built (the layer table's totals: a test holds the two together).
    /// In f64, so that no configuration, however large, overflows.
    pub fn param_counts(&self) -> (f64, f64) {
        if self.progressive {
            return self.progressive_param_counts();
        }
        let (blocks, top) = (self.blocks(), self.top_channels() as f64);
        let (mut g, mut d) = (0.0, 0.0);
        let (mut c_in, mut ch) = ((self.noise_dim + self.text_dim) as f64, top);
        for _ in 0..blocks {
            g += c_in * ch * 16.0 + 2.0 * ch;
            (c_in, ch) = (ch, ch / 2.0);
        }
        g += c_in * 3.0 * 16.0;
        let (mut c_in, mut ch) = (3.0, self.width as f64);
        for b in 0..blocks {
            d += c_in * ch * 16.0 + if b > 0 { 2.0 * ch } else { 0.0 };
            (c_in, ch) = (ch, ch * 2.0);
        }
        d += self.head_channels() as f64 * top + 2.0 * top + top * 16.0;
        d += match self.text_in_d {
            TextInD::Tile => self.text_dim as f64 * self.text_proj as f64 + self.text_proj as f64,
            // V: the TF-IDF vector to the top channels, without bias.
            TextInD::Projection => self.text_dim as f64 * top,
        };
        (g, d)
    }

    /// Values of every layer's output for one image, in the generator and in the
    /// discriminator (the layer table's output shapes, summed).
    pub fn outputs_per_image(&self) -> (f64, f64) {
        if self.progressive {
            return self.progressive_outputs_per_image();
        }
        let (blocks, top) = (self.blocks(), self.top_channels() as f64);
        let (mut g, mut d) = (0.0, 0.0);
        let (mut side, mut ch) = (4.0, top);
        for _ in 0..blocks {
            // The convolution and its batchnorm (with the activation fused).
            g += 2.0 * ch * side * side;
            (side, ch) = (side * 2.0, ch / 2.0);
        }
        g += 2.0 * 3.0 * side * side;
        let (mut side, mut ch) = (self.size as f64 / 2.0, self.width as f64);
        for _ in 0..blocks {
            d += 2.0 * ch * side * side;
            (side, ch) = (side / 2.0, ch * 2.0);
        }
        d += 2.0 * top * 16.0 + 1.0;
        d += match self.text_in_d {
            // The text projection and its LeakyReLU.
            TextInD::Tile => 2.0 * self.text_proj as f64,
            // The embedding V t.
            TextInD::Projection => top,
        };
        if self.minibatch_std > 0 {
            // The minibatch standard deviation layer's output: the joined features and its channel.
            d += self.head_channels() as f64 * 16.0;
        }
        (g, d)
    }

    /// The bytes this model needs at least for `usage`, counted before anything is
    /// allocated: every parameter of G and D with its gradient and Adam's two moments (all
    /// four exist whenever the networks do), and each layer's output and input gradient
    /// for every image of a training batch, or the generator's outputs for a drawn one.
    pub fn memory_need(&self, usage: Usage) -> MemoryNeed {
        let (pg, pd) = self.param_counts();
        let (og, od) = self.outputs_per_image();
        let layers = match usage {
            Usage::Training { batch } => 2.0 * (og + od) * batch as f64,
            Usage::Drawing { batch } => og * batch as f64,
        };
        MemoryNeed { parameters: 16.0 * (pg + pd), layers: 4.0 * layers }
    }

    /// `memory_need` of a progressive model training at `level` on batches of `batch`
    /// (`--batch-schedule`): every parameter (all levels' exist from the start), and the
    /// outputs and gradients of the layers in use at that level for each image.
    pub fn memory_need_at_level(&self, level: usize, batch: usize) -> MemoryNeed {
        let (pg, pd) = self.param_counts();
        let (og, od) = self.outputs_per_image_at_level(level);
        MemoryNeed { parameters: 16.0 * (pg + pd), layers: 4.0 * 2.0 * (og + od) * batch as f64 }
    }

    /// Refuses a level of a progressive run whose batch (`--batch-schedule`) does not fit
    /// in `available` memory, before anything is allocated (`check_memory` counts the last
    /// level at `--batch`). Without a figure for the memory it checks nothing.
    pub fn check_memory_at_level(&self, level: usize, batch: usize, available: Option<Available>) -> Result<()> {
        let need = self.memory_need_at_level(level, batch);
        let Some(avail) = available else { return Ok(()) };
        if need.total() > avail.bytes as f64 {
            bail!(
                "--batch-schedule: the model ({} px, width {}, text {}) needs at least {} to train level {level} ({} px) at batch {batch} ({} of parameters with their gradients and Adam moments, {} of layer outputs), but {} has {}; use a smaller batch for side {} in --batch-schedule, or a smaller --width",
                self.size,
                self.width,
                self.text_dim,
                human_bytes(need.total()),
                4usize << level,
                human_bytes(need.parameters),
                human_bytes(need.layers),
                avail.what,
                human_bytes(avail.bytes as f64),
                4usize << level
            );
        }
        Ok(())
    }

    /// Refuses a model that does not fit in `available` memory, before anything is
    /// allocated, with how much it needs. Without a figure for the memory (`None`) it
    /// checks nothing.
    pub fn check_memory(&self, usage: Usage, available: Option<Available>) -> Result<()> {
        let need = self.memory_need(usage);
        let Some(avail) = available else { return Ok(()) };
        if need.total() > avail.bytes as f64 {
            let what = match usage {
                Usage::Training { batch } => format!("to train at batch {batch}"),
                Usage::Drawing { batch } => format!("to draw {batch} images at a time"),
            };
            bail!(
                "the model ({} px, width {}, text {}) needs at least {} {what} ({} of parameters with their gradients and Adam moments, {} of layer outputs), but {} has {}; use a smaller --width, --size or --batch",
                self.size,
                self.width,
                self.text_dim,
                human_bytes(need.total()),
                human_bytes(need.parameters),
                human_bytes(need.layers),
                avail.what,
                human_bytes(avail.bytes as f64)
            );
        }
        Ok(())
    }
    /// Number of stride-2 blocks: log2(size) - 2 (4x4 at the bottom).
    pub fn blocks(&self) -> usize {
        self.size.trailing_zeros() as usize - 2
    }
    /// Channels at the 4x4 level.
    pub fn top_channels(&self) -> usize {
        if self.progressive {
            return self.level_channels(0);
        }
        self.width << (self.blocks() - 1)
    }

    /// `param_counts` of a progressive model: every level's block, toRGB and fromRGB.
    fn progressive_param_counts(&self) -> (f64, f64) {
        let ch = |l: usize| self.level_channels(l) as f64;
        let conv = |c_in: f64, c_out: f64, k: f64| c_in * c_out * k * k + c_out;
        let (mut g, mut d) = (0.0, 0.0);
        for l in 0..self.levels() {
            g += if l == 0 { conv((self.noise_dim + self.text_dim) as f64, ch(0), 4.0) } else { conv(ch(l - 1), ch(l), 3.0) };
            g += conv(ch(l), ch(l), 3.0) + conv(ch(l), 3.0, 1.0);
            d += conv(3.0, ch(l), 1.0);
            if l > 0 {
                d += conv(ch(l), ch(l), 3.0) + conv(ch(l), ch(l - 1), 3.0);
            }
        }
        let top = ch(0);
        d += self.text_dim as f64 * self.text_proj as f64 + self.text_proj as f64;
        d += conv(self.head_channels() as f64, top, 3.0) + conv(top, top, 4.0) + conv(top, 1.0, 1.0);
        (g, d)
    }

    /// `outputs_per_image` of a progressive model at its last level while it fades in (the
    /// most layers at once: both toRGB and both fromRGB paths).
    fn progressive_outputs_per_image(&self) -> (f64, f64) {
        self.outputs_per_image_at_level(self.levels() - 1)
    }

    /// `outputs_per_image` of a progressive model training at `level` while it fades in:
    /// the layers in use there (blocks 0..=level, both toRGB and both fromRGB paths), at
    /// the level's side.
    pub fn outputs_per_image_at_level(&self, level: usize) -> (f64, f64) {
        let ch = |l: usize| self.level_channels(l) as f64;
        let side = |l: usize| (4usize << l) as f64;
        let s = level.min(self.levels() - 1);
        let (mut g, mut d) = (0.0, 0.0);
        for l in 0..=s {
            let px = side(l) * side(l);
            // Upsampled input (above level 0), then conv, LeakyReLU, pixel norm twice.
            g += if l == 0 { 0.0 } else { ch(l - 1) * px } + 6.0 * ch(l) * px;
        }
        let px = side(s) * side(s);
        // The new toRGB, the old one (at the level below) with its upsampling, and tanh.
        g += 3.0 * px + if s > 0 { 3.0 * px / 4.0 + 3.0 * px } else { 0.0 } + 3.0 * px;
        // fromRGB and its LeakyReLU at the last level, and at the level below on the pooled image.
        d += 2.0 * ch(s) * px;
        if s > 0 {
            d += 3.0 * px / 4.0 + 2.0 * ch(s - 1) * px / 4.0;
        }
        for l in 1..=s {
            let px = side(l) * side(l);
            // Two convolutions with their LeakyReLUs, then the pooling.
            d += 2.0 * ch(l) * px + 2.0 * ch(l - 1) * px + ch(l - 1) * px / 4.0;
        }
        // The text projection and its LeakyReLU, the minibatch std channel's layer, the
        // 3x3 convolution and LeakyReLU, the 4x4 and LeakyReLU, the logit.
        d += 2.0 * self.text_proj as f64;
        if self.minibatch_std > 0 {
            d += self.head_channels() as f64 * 16.0;
        }
        d += 2.0 * ch(0) * 16.0 + 2.0 * ch(0) + 1.0;
        (g, d)
    }
    /// Channels of the discriminator's joined 4x4 features, the input of its head's first
    /// convolution: image features, the text projection (when the text is tiled), and the
    /// minibatch standard deviation channel when there is one.
    pub fn head_channels(&self) -> usize {
        let text = if self.text_in_d == TextInD::Tile { self.text_proj } else { 0 };
        self.top_channels() + text + (self.minibatch_std > 0) as usize
    }
    /// Values per image of the largest tensor either network makes: the image itself, the
    /// widest hidden layer (`width` channels at half the image side, in both networks), or
    /// the discriminator's joined 4x4 features.
    pub fn largest_tensor_per_image(&self) -> usize {
        let half = self.size / 2;
        // Progressive: the level below the last's channels, upsampled to the full side.
        let upsampled = if self.progressive { self.level_channels(self.levels().saturating_sub(2)) * self.size * self.size } else { 0 };
        [3 * self.size * self.size, self.width * half * half, self.head_channels() * 16, self.text_dim, self.noise_dim, upsampled]
            .into_iter()
            .max()
            .unwrap_or(0)
    }
    /// Refuses a batch whose largest tensor would pass the `i32::MAX` values the ops and
    /// kernels can index, before anything is allocated.
    pub fn check_batch(&self, batch: usize) -> Result<()> {
        let per = self.largest_tensor_per_image();
        let max = i32::MAX as usize / per;
        if batch > max {
            bail!("--batch {batch} is too large for {} px at width {}: its largest tensor has {per} values per image, so a batch holds at most {max} images (the kernels index with 32-bit integers)", self.size, self.width);
        }
        Ok(())
    }
}

pub struct Generator<B: Backend> {
    pub cfg: ModelConfig,
    input: ConcatTile<B>,
    /// The DCGAN's layers (empty in a progressive model).
    pub main: Sequential<B>,
    /// The progressive body, when `cfg.progressive`.
    pub prog: Option<ProgGenerator<B>>,
}

impl<B: Backend> Generator<B> {
    pub fn new(be: &B, cfg: &ModelConfig, rng: &mut Rng) -> Result<Self> {
        Self::named(be, cfg, rng, "generator")
    }

    /// A generator whose tensors are named `{prefix}.main.N...` (`generator_ema` for the
    /// moving average of the weights, stored next to `generator` in checkpoints).
    pub fn named(be: &B, cfg: &ModelConfig, rng: &mut Rng, prefix: &str) -> Result<Self> {
        cfg.validate()?;
        if cfg.progressive {
            let prog = ProgGenerator::new(be, cfg, rng, prefix)?;
            return Ok(Generator { cfg: cfg.clone(), input: ConcatTile::new(), main: Sequential::new(Vec::new()), prog: Some(prog) });
        }
        let mut layers: Vec<Box<dyn Layer<B>>> = Vec::new();
        // PyTorch's index of the next layer: a batchnorm with its fused activation
        // stands for two.
        let name = |layers: &[Box<dyn Layer<B>>]| format!("{prefix}.main.{}", next_index(layers));
        let mut ch = cfg.top_channels();
        let mut c_in = cfg.noise_dim + cfg.text_dim;
        for b in 0..cfg.blocks() {
            let (stride, pad) = if b == 0 { (1, 0) } else { (2, 1) };
            layers.push(Box::new(Conv::new(be, &name(&layers), true, c_in, ch, 4, stride, pad, false, rng)?));
            layers.push(Box::new(BatchNorm2d::new(be, &name(&layers), ch, rng)?.with_act(ActKind::Relu)?));
            c_in = ch;
            ch /= 2;
        }
        layers.push(Box::new(Conv::new(be, &name(&layers), true, c_in, 3, 4, 2, 1, false, rng)?));
        layers.push(Box::new(Activation::new(ActKind::Tanh)));
        Ok(Generator { cfg: cfg.clone(), input: ConcatTile::new(), main: Sequential::new(layers), prog: None })
    }

    pub fn input_shape(&self, n: usize) -> Shape {
        Shape::new(n, self.cfg.noise_dim + self.cfg.text_dim, 1, 1)
    }

    /// `noise [n, noise_dim]`, `text [n, text_dim]` -> images `[n, 3, side, side]` in [-1, 1],
    /// `side` the model's size (a progressive model's: its current level's, `side()`).
    pub fn forward(&mut self, be: &B, noise: &Tensor<B>, text: &Tensor<B>, mode: Mode) -> Result<Tensor<B>> {
        let z = self.input.forward(be, noise, text)?;
        match &mut self.prog {
            Some(p) => p.forward(be, &z, mode),
            None => self.main.forward(be, &z, mode),
        }
    }

    /// Where a progressive model stands; `None` for a DCGAN.
    pub fn progress(&self) -> Option<Progress> {
        self.prog.as_ref().map(|p| p.progress())
    }

    /// Moves a progressive model to `p`; refuses a DCGAN.
    pub fn set_progress(&mut self, p: Progress) -> Result<()> {
        self.prog.as_mut().context("only a progressive generator has levels")?.set_progress(p)
    }

    /// The side of the images `forward` draws now.
    pub fn side(&self) -> usize {
        self.progress().map_or(self.cfg.size, |p| p.side())
    }

    /// The gradients `want` asks for: those of the noise and text inputs (`want.input`),
    /// and the parameters' (`want.params`, accumulated). Training wants the parameters'
    /// only, so the first layer skips its input-gradient op.
    pub fn backward(&mut self, be: &B, dimage: &Tensor<B>, want: Grads) -> Result<Option<(Tensor<B>, Tensor<B>)>> {
        let dz = match &mut self.prog {
            Some(p) => p.backward(be, dimage, want)?,
            None => self.main.backward(be, dimage, want)?,
        };
        match dz {
            Some(dz) => Ok(Some(self.input.backward(be, &dz)?)),
            None => Ok(None),
        }
    }

    pub fn layers(&self) -> Vec<(String, &dyn Layer<B>, Shape)> {
        let mut rows = Vec::new();
        match &self.prog {
            Some(p) => p.layers("generator", &mut rows, self.input_shape(1)),
            None => {
                named_rows(&mut rows, "generator.main", &self.main, self.input_shape(1));
            }
        }
        rows
    }
}

/// The gradients of the discriminator's inputs, `(image, text)`, each when wanted.
pub type InputGrads<B> = (Option<Tensor<B>>, Option<Tensor<B>>);

/// Which gradients `Discriminator::backward` computes: the image input's, the text
/// input's, and the parameters' (`params: false` is the frozen D of the G step).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DGrads {
    pub image: bool,
    pub text: bool,
    pub params: bool,
}

impl DGrads {
    /// Every gradient: gradient checks.
    pub const ALL: DGrads = DGrads { image: true, text: true, params: true };
    /// The D step: parameter gradients only.
    pub const D_STEP: DGrads = DGrads { image: false, text: false, params: true };
    /// The G step through a frozen D: the image gradient only.
    pub const G_STEP: DGrads = DGrads { image: true, text: false, params: false };
}

pub struct Discriminator<B: Backend> {
    pub cfg: ModelConfig,
    pub main: Sequential<B>,
    /// The caption's path: the text projection and its LeakyReLU (`discriminator.text`)
    /// when tiled, the embedding `V` (`discriminator.embed`) with projection.
    pub text: Sequential<B>,
    concat: ConcatTile<B>,
    pub head: Sequential<B>,
    /// The conditional term `<V t, phi(h)>`, with `TextInD::Projection` only.
    projection: Option<Projection<B>>,
    /// The progressive body (the image to its 4x4 features) in place of `main`, when
    /// `cfg.progressive`.
    pub prog: Option<ProgDiscriminator<B>>,
}

impl<B: Backend> Discriminator<B> {
    // The head's layers are pushed one by one: each name depends on the layers before it.
    #[allow(clippy::vec_init_then_push)]
    pub fn new(be: &B, cfg: &ModelConfig, rng: &mut Rng) -> Result<Self> {
        cfg.validate()?;
        if cfg.progressive {
            return Self::progressive(be, cfg, rng);
        }
        let leaky = ActKind::LeakyRelu(cfg.slope);
        let lrelu = || -> Box<dyn Layer<B>> { Box::new(Activation::new(leaky)) };
        let mut main: Vec<Box<dyn Layer<B>>> = Vec::new();
        let name = |part: &str, layers: &[Box<dyn Layer<B>>]| format!("discriminator.{part}.{}", next_index(layers));
        let mut c_in = 3;
        let mut ch = cfg.width;
        for b in 0..cfg.blocks() {
            main.push(Box::new(Conv::new(be, &name("main", &main), false, c_in, ch, 4, 2, 1, false, rng)?));
            if b > 0 {
                main.push(Box::new(BatchNorm2d::new(be, &name("main", &main), ch, rng)?.with_act(leaky)?));
            } else {
                main.push(lrelu());
            }
            c_in = ch;
            ch *= 2;
        }
        let top = cfg.top_channels();
        let text: Vec<Box<dyn Layer<B>>> = match cfg.text_in_d {
            TextInD::Tile => vec![Box::new(Linear::new(be, "discriminator.text.0", cfg.text_dim, cfg.text_proj, true, rng)?), lrelu()],
            TextInD::Projection => vec![Box::new(Linear::new(be, "discriminator.embed.0", cfg.text_dim, top, false, rng)?)],
        };
        let mut head: Vec<Box<dyn Layer<B>>> = Vec::new();
        // With the minibatch standard deviation on, it is the head's first module (so the
        // head's PyTorch indices move up by one); off, the head is the article's.
        if cfg.minibatch_std > 0 {
            head.push(Box::new(MinibatchStd::new(cfg.minibatch_std)));
        }
        head.push(Box::new(Conv::new(be, &name("head", &head), false, cfg.head_channels(), top, 1, 1, 0, false, rng)?));
        head.push(Box::new(BatchNorm2d::new(be, &name("head", &head), top, rng)?.with_act(leaky)?));
        head.push(Box::new(Conv::new(be, &name("head", &head), false, top, 1, 4, 1, 0, false, rng)?));
        let projection = (cfg.text_in_d == TextInD::Projection).then(Projection::new);
        Ok(Discriminator {
            cfg: cfg.clone(),
            main: Sequential::new(main),
            text: Sequential::new(text),
            concat: ConcatTile::new(),
            head: Sequential::new(head),
            projection,
            prog: None,
        })
    }

    /// The progressive discriminator: its body (`ProgDiscriminator`), the caption's
    /// projection tiled at 4x4 as in the DCGAN, and ProGAN's head: the minibatch standard
    /// deviation when asked, a 3x3 and a 4x4 convolution with LeakyReLUs and the logit, all
    /// with an equalized learning rate.
    #[allow(clippy::vec_init_then_push)]
    fn progressive(be: &B, cfg: &ModelConfig, rng: &mut Rng) -> Result<Self> {
        let body = ProgDiscriminator::new(be, cfg, rng)?;
        let lrelu = || -> Box<dyn Layer<B>> { Box::new(Activation::new(ActKind::LeakyRelu(progressive::SLOPE))) };
        let text: Vec<Box<dyn Layer<B>>> = vec![Box::new(Linear::new(be, "discriminator.text.0", cfg.text_dim, cfg.text_proj, true, rng)?), lrelu()];
        let name = |layers: &[Box<dyn Layer<B>>]| format!("discriminator.head.{}", next_index(layers));
        let (top, joined) = (cfg.top_channels(), cfg.head_channels());
        let sqrt2 = std::f32::consts::SQRT_2;
        let mut head: Vec<Box<dyn Layer<B>>> = Vec::new();
        if cfg.minibatch_std > 0 {
            head.push(Box::new(MinibatchStd::new(cfg.minibatch_std)));
        }
        head.push(Box::new(EqConv::new(be, &name(&head), false, joined, top, 3, 1, 1, true, sqrt2, joined * 9, rng)?));
        head.push(lrelu());
        head.push(Box::new(EqConv::new(be, &name(&head), false, top, top, 4, 1, 0, true, sqrt2, top * 16, rng)?));
        head.push(lrelu());
        head.push(Box::new(EqConv::new(be, &name(&head), false, top, 1, 1, 1, 0, true, 1.0, top, rng)?));
        Ok(Discriminator {
            cfg: cfg.clone(),
            main: Sequential::new(Vec::new()),
            text: Sequential::new(text),
            concat: ConcatTile::new(),
            head: Sequential::new(head),
            projection: None,
            prog: Some(body),
        })
    }

    /// Where a progressive model stands; `None` for a DCGAN.
    pub fn progress(&self) -> Option<Progress> {
        self.prog.as_ref().map(|p| p.progress())
    }

    /// Moves a progressive model to `p`; refuses a DCGAN.
    pub fn set_progress(&mut self, p: Progress) -> Result<()> {
        self.prog.as_mut().context("only a progressive discriminator has levels")?.set_progress(p)
    }

    /// The side of the images `forward` reads now.
    pub fn side(&self) -> usize {
        self.progress().map_or(self.cfg.size, |p| p.side())
    }

    /// images `[n, 3, size, size]`, text `[n, text_dim]` -> logits `[n, 1, 1, 1]`.
    pub fn forward(&mut self, be: &B, image: &Tensor<B>, text: &Tensor<B>, mode: Mode) -> Result<Tensor<B>> {
        let (s, side) = (image.shape, self.side());
        if s.c != 3 || s.h != side || s.w != side {
            bail!("discriminator for {side} px got images of shape {s}");
        }
        let features = match &mut self.prog {
            Some(p) => p.forward(be, image, mode)?,
            None => self.main.forward(be, image, mode)?,
        };
        let t = self.text.forward(be, text, mode)?;
        let Some(projection) = &mut self.projection else {
            let joined = self.concat.forward(be, &features, &t)?;
            return self.head.forward(be, &joined, mode);
        };
        // h: the head's last hidden features; psi: its last convolution.
        let (psi, hidden) = self.head.layers.split_last_mut().context("the discriminator's head is empty")?;
        let mut h = features;
        for l in hidden {
            h = l.forward(be, &h, mode)?;
        }
        let base = psi.forward(be, &h, mode)?;
        projection.forward(be, &base, &h, &t)
    }

    /// The gradients `want` asks for, returned as `(image, text)`; parameter gradients
    /// accumulate when `want.params`. The D step wants the parameters' only (images and text
    /// are data); the G step wants the image's only (D is frozen).
    pub fn backward(&mut self, be: &B, dlogits: &Tensor<B>, want: DGrads) -> Result<InputGrads<B>> {
        let inner = Grads { input: true, params: want.params };
        let (dfeatures, dt) = match &mut self.projection {
            None => {
                let djoined = self.head.backward(be, dlogits, inner)?.context("the head's input gradient")?;
                self.concat.backward(be, &djoined)?
            }
            Some(projection) => {
                // The logits' gradient is also psi's; h gets psi's and phi's gradients.
                let (psi, hidden) = self.head.layers.split_last_mut().context("the discriminator's head is empty")?;
                let dpsi = psi.backward(be, dlogits, inner)?.context("the head's last convolution's input gradient")?;
                let (mut g, dt) = projection.backward(be, dlogits, &dpsi)?;
                for l in hidden.iter_mut().rev() {
                    g = l.backward(be, &g, inner)?.context("the head's input gradient")?;
                }
                (g, dt)
            }
        };
        let dtext = self.text.backward(be, &dt, Grads { input: want.text, params: want.params })?;
        let want_image = Grads { input: want.image, params: want.params };
        let dimage = match &mut self.prog {
            Some(p) => p.backward(be, &dfeatures, want_image)?,
            None => self.main.backward(be, &dfeatures, want_image)?,
        };
        Ok((dimage, dtext))
    }

    pub fn layers(&self) -> Vec<(String, &dyn Layer<B>, Shape)> {
        let mut rows = Vec::new();
        let image = Shape::new(1, 3, self.side(), self.side());
        let features = match &self.prog {
            Some(p) => p.layers(&mut rows, image),
            None => named_rows(&mut rows, "discriminator.main", &self.main, image),
        };
        let text = Shape::new(1, self.cfg.text_dim, 1, 1);
        // Tiled, the caption joins the features before the head; with projection, the head
        // reads the features alone (the layer table's `discriminator.embed.0` is V).
        let head_in = match self.cfg.text_in_d {
            TextInD::Tile => ConcatTile::<B>::out_shape(features, named_rows(&mut rows, "discriminator.text", &self.text, text)),
            TextInD::Projection => {
                named_rows(&mut rows, "discriminator.embed", &self.text, text);
                features
            }
        };
        named_rows(&mut rows, "discriminator.head", &self.head, head_in);
        rows
    }
}

/// PyTorch's `Sequential` index of the layer after `layers`.
fn next_index<B: Backend>(layers: &[Box<dyn Layer<B>>]) -> usize {
    layers.iter().map(|l| l.slots()).sum()
}

/// Appends `(name, layer, input shape)` for each layer of `seq`, named by PyTorch index;
/// returns the output shape.
fn named_rows<'a, B: Backend>(rows: &mut Vec<(String, &'a dyn Layer<B>, Shape)>, prefix: &str, seq: &'a Sequential<B>, input: Shape) -> Shape {
    let (mut s, mut index) = (input, 0);
    for l in &seq.layers {
        rows.push((format!("{prefix}.{index}"), l.as_ref(), s));
        s = l.out_shape(s);
        index += l.slots();
    }
    s
}

/// What every model part offers for optimisers, checkpoints and freezing.
pub trait Module<B: Backend> {
    fn parts(&self) -> Vec<&Sequential<B>>;
    fn parts_mut(&mut self) -> Vec<&mut Sequential<B>>;

    fn params(&self) -> Vec<&Param<B>> {
        self.parts().into_iter().flat_map(|s| s.layers.iter().flat_map(|l| l.params())).collect()
    }
    fn params_mut(&mut self) -> Vec<&mut Param<B>> {
        self.parts_mut().into_iter().flat_map(|s| s.layers.iter_mut().flat_map(|l| l.params_mut())).collect()
    }
    fn buffers(&self) -> Vec<&Buffer<B>> {
        self.parts().into_iter().flat_map(|s| s.layers.iter().flat_map(|l| l.buffers())).collect()
    }
    fn buffers_mut(&mut self) -> Vec<&mut Buffer<B>> {
        self.parts_mut().into_iter().flat_map(|s| s.layers.iter_mut().flat_map(|l| l.buffers_mut())).collect()
    }
    fn param_count(&self) -> usize {
        self.params().iter().map(|p| p.len()).sum()
    }
    /// Zeroes every parameter gradient (once per optimizer step).
    fn zero_grad(&mut self, be: &B) -> Result<()> {
        for p in self.params_mut() {
            be.fill(&mut p.grad, 0.0)?;
        }
        Ok(())
    }
}

impl<B: Backend> Module<B> for Generator<B> {
    fn parts(&self) -> Vec<&Sequential<B>> {
        let prog = self.prog.iter().flat_map(|p| p.parts());
        std::iter::once(&self.main).chain(prog).collect()
    }
    fn parts_mut(&mut self) -> Vec<&mut Sequential<B>> {
        let prog = self.prog.iter_mut().flat_map(|p| p.parts_mut());
        std::iter::once(&mut self.main).chain(prog).collect()
    }
}

impl<B: Backend> Module<B> for Discriminator<B> {
    fn parts(&self) -> Vec<&Sequential<B>> {
        let prog = self.prog.iter().flat_map(|p| p.parts());
        [&self.main].into_iter().chain(prog).chain([&self.text, &self.head]).collect()
    }
    fn parts_mut(&mut self) -> Vec<&mut Sequential<B>> {
        let prog = self.prog.iter_mut().flat_map(|p| p.parts_mut());
        [&mut self.main].into_iter().chain(prog).chain([&mut self.text, &mut self.head]).collect()
    }
}
