//! Subcommands, one file each.

mod kernels;
mod model;
mod selftest;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "gan-engine", version, about = "Train a text-conditioned GAN that draws fashion products from their descriptions")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Print the generator and discriminator layer tables: shapes, parameters, FLOP.
    Model(model::Args),
    /// Check the engine: gradient checks on the CPU, kernels against their CPU twins.
    Selftest(selftest::Args),
    /// Compile every CUDA kernel with NVRTC for the given architectures (no GPU needed).
    Kernels(kernels::Args),
}

pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Model(a) => model::run(a),
        Command::Selftest(a) => selftest::run(a),
        Command::Kernels(a) => kernels::run(a),
    }
}
