use anyhow::{bail, ensure, Context, Result};
use gan_engine::backend::device::{self, Opened};
use gan_engine::backend::Backend;
use gan_engine::nn::Mode;
use gan_engine::rng::Rng;
use gan_engine::train::run::{zoom_for, RunState};
use gan_engine::train::{checkpoint, report, Gan};
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
    #[arg(long, default_value_t = 8)]
    steps: usize,
    /// Images per caption (grid columns), or noise vectors of the walk (grid rows).
    #[arg(short = 'n', default_value_t = 8)]
    n: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// The grid PNG to write.
    #[arg(long, default_value = "samples.png", conflicts_with = "out_dir")]
    out: PathBuf,
    /// Write one PNG per image into this folder instead of a grid.
    #[arg(long)]
    out_dir: Option<PathBuf>,
    /// cpu, cuda, or auto.
    #[arg(long, default_value = "auto")]
    device: String,
}

pub fn run(a: Args) -> Result<()> {
    ensure!(a.n > 0, "-n must be at least 1");
    let path = checkpoint::resolve(&a.checkpoint).with_context(|| format!("--checkpoint {}", a.checkpoint.display()))?;
    let ck = checkpoint::load(&path)?;
    let state = RunState::from_checkpoint(&ck).with_context(|| format!("--checkpoint {}", path.display()))?;
    match device::open(&a.device)? {
        Opened::Cpu(be) => sample(&be, &a, &state, &ck.tensors),
        Opened::Gpu(be) => sample(&be, &a, &state, &ck.tensors),
    }
}

fn sample<B: Backend>(be: &B, a: &Args, state: &RunState, tensors: &[checkpoint::NamedTensor]) -> Result<()> {
    let cfg = &state.config;
    let mut gan = Gan::new(be, cfg, &state.options.hyper, 0)?;
    gan.import(be, tensors)?;
    let encode = |t: &str| -> Vec<f32> {
        if state.tfidf.has_no_known_word(t) {
            eprintln!("warning: no word of {t:?} is in the model's vocabulary; it is drawn from noise alone");
        }
        state.tfidf.encode(t)
    };
    let mut rng = Rng::derive(a.seed, "sample");
    // (rows, cols, texts per image, noise per image)
    let (rows, cols, texts, noise) = match &a.interpolate {
        Some(ab) => {
            ensure!(a.steps >= 2, "--steps must be at least 2");
            let (va, vb) = (encode(&ab[0]), encode(&ab[1]));
            let mut texts = Vec::new();
            let mut noise = Vec::new();
            for _ in 0..a.n {
                let mut z = vec![0.0f32; cfg.noise_dim];
                rng.fill_normal(&mut z, 0.0, 1.0);
                for s in 0..a.steps {
                    let w = s as f32 / (a.steps - 1) as f32;
                    texts.extend(va.iter().zip(&vb).map(|(x, y)| (1.0 - w) * x + w * y));
                    noise.extend_from_slice(&z);
                }
            }
            (a.n, a.steps, texts, noise)
        }
        None => {
            let mut texts = Vec::new();
            for t in &a.texts {
                let v = encode(t);
                for _ in 0..a.n {
                    texts.extend_from_slice(&v);
                }
            }
            let mut noise = vec![0.0f32; a.texts.len() * a.n * cfg.noise_dim];
            rng.fill_normal(&mut noise, 0.0, 1.0);
            (a.texts.len(), a.n, texts, noise)
        }
    };
    let images = gan.generate(be, &noise, &texts, Mode::Eval)?;
    let per = 3 * cfg.size * cfg.size;
    match &a.out_dir {
        Some(dir) => {
            std::fs::create_dir_all(dir).with_context(|| format!("--out-dir {}: cannot create the folder", dir.display()))?;
            for (k, img) in images.chunks(per).enumerate() {
                let p = dir.join(format!("row{:02}-col{:02}.png", k / cols, k % cols));
                report::save_png(&p, &report::single_image(img, cfg.size)).with_context(|| format!("--out-dir {}", dir.display()))?;
            }
            eprintln!("wrote {} images of {} px to {}", rows * cols, cfg.size, dir.display());
        }
        None => {
            if a.out.extension().and_then(|e| e.to_str()).map(|e| e.to_ascii_lowercase()) != Some("png".into()) {
                bail!("--out {} must name a .png file", a.out.display());
            }
            if let Some(parent) = a.out.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent).with_context(|| format!("--out {}: cannot create its folder", a.out.display()))?;
            }
            report::save_png(&a.out, &report::grid_image(&images, cfg.size, rows, cols, zoom_for(cfg.size))).with_context(|| format!("--out {}", a.out.display()))?;
            eprintln!("wrote a {rows}x{cols} grid of {} px images to {}", cfg.size, a.out.display());
        }
    }
    Ok(())
}
