//! Subcommands, one file each.

mod bench;
mod eval;
mod kernels;
mod model;
mod prepare;
mod sample;
mod selftest;
mod serve;
mod synth;
mod text;
mod train;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "gan-engine", version, about = "Train a text-conditioned GAN that draws fashion products from their descriptions")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

// Parsed once per process: the size of the largest variant (train's many flags) costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
pub enum Command {
    /// Train the GAN (default data: the built-in synthetic catalogue).
    Train(train::Args),
    /// Draw images for product descriptions from a trained checkpoint.
    Sample(sample::Args),
    /// Serve the design studio: a local web page that draws products from descriptions.
    Serve(serve::Args),
    /// Measure a trained model: SWD, FD, KID, precision and recall, conditioning and
    /// diversity on held-out products, next to the same figures for real images.
    Eval(eval::Args),
    /// Print the generator and discriminator layer tables: shapes, parameters, FLOP.
    Model(model::Args),
    /// Time full training iterations (D step + G step) and, with --profile, every op.
    Bench(bench::Args),
    /// Check the engine: gradient checks on the CPU, kernels against their CPU twins.
    Selftest(selftest::Args),
    /// Print a data set's captions, its TF-IDF vocabulary, or the vectors of given texts.
    Text(text::Args),
    /// Decode and resize a data set's images into its memory-mapped cache.
    Prepare(prepare::Args),
    /// Write the built-in synthetic catalogue in the Kaggle layout.
    Synth(synth::Args),
    /// Compile every CUDA kernel with NVRTC for the given architectures (no GPU needed).
    Kernels(kernels::Args),
}

/// A count flag (`-n`, `--width`, `--iters`...): a whole number of at least 1. The flags that
/// take one also allow a leading `-`, so `-n -1` is refused here, saying why, rather than
/// read as an unknown flag.
pub fn count<T: TryFrom<u128>>(s: &str) -> Result<T, String> {
    match s.trim().parse::<i128>() {
        Ok(v) if v >= 1 => T::try_from(v as u128).map_err(|_| format!("{s} is too large")),
        Ok(_) => Err(format!("{s} is not allowed: it must be at least 1")),
        Err(_) => Err(format!("{s} is not a whole number")),
    }
}

/// A seed: any whole number from 0 to 2^64 - 1.
pub fn seed(s: &str) -> Result<u64, String> {
    s.trim().parse::<u64>().map_err(|_| format!("{s} is not a seed: use a whole number from 0 to {}", u64::MAX))
}

pub fn run(cli: Cli) -> Result<()> {
    // A forced SIMD level the CPU lacks is an error here, before any op could meet it.
    gan_engine::backend::cpu::simd::check_env()?;
    match cli.command {
        Command::Train(a) => train::run(a),
        Command::Sample(a) => sample::run(a),
        Command::Serve(a) => serve::run(a),
        Command::Eval(a) => eval::run(a),
        Command::Bench(a) => bench::run(a),
        Command::Model(a) => model::run(a),
        Command::Selftest(a) => selftest::run(a),
        Command::Text(a) => text::run(a),
        Command::Prepare(a) => prepare::run(a),
        Command::Synth(a) => synth::run(a),
        Command::Kernels(a) => kernels::run(a),
    }
}
