use anyhow::{bail, ensure, Context, Result};
use gan_engine::backend::device::{self, Opened};
use gan_engine::backend::Backend;
use gan_engine::sample::{Drawer, Loaded, Sheet, CHUNK};
use gan_engine::train::report;
use gan_engine::train::run::zoom_for;
use gan_engine::train::{BnStats, Drawing};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// A run folder (the --out of train; its newest checkpoint is used) or a checkpoint file.
    #[arg(long)]
    checkpoint: PathBuf,
    /// A product description; repeat for several (one grid row each).
    #[arg(long = "text", required_unless_present = "interpolate")]
    texts: Vec<String>,
    /// Walk from caption A to caption B with the noise held fixed.
    #[arg(long, num_args = 2, value_names = ["A", "B"], conflicts_with = "texts")]
    interpolate: Option<Vec<String>>,
    /// Steps of the walk, ends included.
    #[arg(long, default_value_t = 8, allow_negative_numbers = true, value_parser = super::count::<usize>)]
    steps: usize,
    /// Images per caption (grid columns), or noise vectors of the walk (grid rows).
    #[arg(short = 'n', default_value_t = 8, allow_negative_numbers = true, value_parser = super::count::<usize>)]
    n: usize,
    #[arg(long, default_value_t = 0, allow_negative_numbers = true, value_parser = super::seed)]
    seed: u64,
    /// The grid PNG to write.
    #[arg(long, default_value = "samples.png", conflicts_with = "out_dir")]
    out: PathBuf,
    /// Write one PNG per image into this folder instead of a grid.
    #[arg(long)]
    out_dir: Option<PathBuf>,
    #[cfg_attr(not(feature = "sim"), doc = "cpu, cuda, or auto.")]
    #[cfg_attr(feature = "sim", doc = "cpu, cuda, sim, or auto.")]
    #[arg(long, default_value = "auto")]
    device: String,
    /// GEMM precision, f32 or bf16 (see `train --help`) [default: the run's].
    #[arg(long)]
    precision: Option<String>,
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

pub fn run(a: Args) -> Result<()> {
    ensure!(a.n > 0, "-n must be at least 1");
    let loaded = gan_engine::sample::load(&a.checkpoint)?;
    let precision = device::parse_precision(a.precision.as_deref())?.unwrap_or(loaded.state.options.precision);
    match device::open(&a.device, Some(precision))? {
        Opened::Cpu(be) => sample(&be, &a, &loaded),
        Opened::Gpu(be) => sample(&be, &a, &loaded),
    }
}

fn sample<B: Backend>(be: &B, a: &Args, loaded: &Loaded) -> Result<()> {
    let cfg = &loaded.state.config;
    let mut drawer = Drawer::new(be, loaded, Drawing { ema: !a.no_ema, bn: a.bn.unwrap_or_default() })?;
    eprintln!("{}", drawer.note());
    let tfidf = &loaded.state.tfidf;
    let encode = |t: &str| -> Vec<f32> {
        if tfidf.has_no_known_word(t) {
            eprintln!("warning: no word of {t:?} is in the model's vocabulary; it is drawn from noise alone");
        }
        tfidf.encode(t)
    };
    // The grid: rows x cols images, image k at row k / cols, column k % cols. A row is a
    // caption (with fresh noise in every column) or, for a walk, one noise vector (with the
    // caption moving from A to B along the columns); `Sheet` holds the layout and the noise.
    let mut sheet = match &a.interpolate {
        Some(ab) => {
            ensure!(a.steps >= 2, "--steps must be at least 2");
            Sheet::walk(encode(&ab[0]), encode(&ab[1]), a.steps, a.n, a.seed, cfg.noise_dim)
        }
        None => Sheet::captions(a.texts.iter().map(|t| encode(t)).collect(), a.n, a.seed, cfg.noise_dim),
    };
    let (rows, cols) = (sheet.rows, sheet.cols);
    let total = rows
        .checked_mul(cols)
        .filter(|&t| t <= MAX_IMAGES)
        .with_context(|| format!("{rows} rows of {cols} images: sample draws at most {MAX_IMAGES} images per call; ask for fewer with -n"))?;
    // The generator runs on at most CHUNK images at a time: memory stays that of one small
    // batch however many images are asked for.
    let mut generate = |k0: usize| -> Result<Vec<f32>> { drawer.draw(be, &mut sheet, k0, (k0 + CHUNK).min(total)) };
    let per = 3 * cfg.size * cfg.size;
    match &a.out_dir {
        Some(dir) => {
            std::fs::create_dir_all(dir).with_context(|| format!("--out-dir {}: cannot create the folder", dir.display()))?;
            let (row_digits, col_digits) = (digits(rows - 1).max(2), digits(cols - 1).max(2));
            for k0 in (0..total).step_by(CHUNK) {
                for (i, img) in generate(k0)?.chunks(per).enumerate() {
                    let k = k0 + i;
                    let p = dir.join(format!("row{:0row_digits$}-col{:0col_digits$}.png", k / cols, k % cols));
                    report::write_atomic(&p, &gan_engine::sample::png(img, cfg.size)?).with_context(|| format!("--out-dir {}", dir.display()))?;
                }
            }
            eprintln!("wrote {total} images of {} px to {}", cfg.size, dir.display());
        }
        None => {
            if a.out.extension().and_then(|e| e.to_str()).map(|e| e.to_ascii_lowercase()) != Some("png".into()) {
                bail!("--out {} must name a .png file", a.out.display());
            }
            let zoom = zoom_for(cfg.size);
            let (w, h) = report::grid_pixels(cfg.size, rows, cols, zoom);
            if w.max(h) > MAX_GRID_SIDE {
                bail!("--out {}: a {rows}x{cols} grid of {} px cells would be {w}x{h} pixels, over {MAX_GRID_SIDE} on a side; ask for fewer images (-n, --text, --steps), or write one PNG per image with --out-dir", a.out.display(), cfg.size * zoom);
            }
            if let Some(parent) = a.out.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent).with_context(|| format!("--out {}: cannot create its folder", a.out.display()))?;
            }
            let mut images = Vec::with_capacity(total * per);
            for k0 in (0..total).step_by(CHUNK) {
                images.extend(generate(k0)?);
            }
            report::save_png(&a.out, &report::grid_image(&images, cfg.size, rows, cols, zoom)).with_context(|| format!("--out {}", a.out.display()))?;
            eprintln!("wrote a {rows}x{cols} grid of {} px images to {}", cfg.size, a.out.display());
        }
    }
    Ok(())
}

/// The most images one `sample` call draws.
const MAX_IMAGES: usize = 1_000_000;
/// The largest grid side, in pixels, `sample` writes as one PNG.
const MAX_GRID_SIDE: usize = 16384;

/// Decimal digits of `v`.
fn digits(v: usize) -> usize {
    v.checked_ilog10().map_or(1, |d| d as usize + 1)
}
