use anyhow::Result;
use gan_engine::data::synth::{write_synthetic_sized, SYNTHETIC_DEFAULT_N, SYNTHETIC_DEFAULT_SEED, SYNTHETIC_FILE_SIZE};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// Folder to write styles.csv and images/<id>.jpg into (created if needed).
    #[arg(long)]
    out: PathBuf,
    /// Number of products.
    #[arg(short = 'n', default_value_t = SYNTHETIC_DEFAULT_N)]
    n: usize,
    /// Catalogue seed; the default is the catalogue `train` uses without --data.
    #[arg(long, default_value_t = SYNTHETIC_DEFAULT_SEED)]
    seed: u64,
    /// Side of the written images in pixels.
    #[arg(long, default_value_t = SYNTHETIC_FILE_SIZE)]
    size: usize,
}

pub fn run(a: Args) -> Result<()> {
    write_synthetic_sized(&a.out, a.n, a.seed, a.size)?;
    println!("wrote {} synthetic products (seed {}, {} px) to {}", a.n, a.seed, a.size, a.out.display());
    Ok(())
}
