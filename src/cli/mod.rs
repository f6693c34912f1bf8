//! Subcommands, one file each.

mod bench;
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
    /// Time full training iterations (D step + G step) and, with --profile, every op.
    Bench(bench::Args),
    /// Check the engine: gradient checks on the CPU, kernels against their CPU twins.
    Selftest(selftest::Args),
}

pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Bench(a) => bench::run(a),
        Command::Model(a) => model::run(a),
        Command::Selftest(a) => selftest::run(a),
    }
}
