use anyhow::{bail, Result};
use gan_engine::serve::{self, Options};
use gan_engine::train::{BnStats, Drawing};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// A run folder (the --out of train; its newest checkpoint is used) or a checkpoint file.
    #[arg(long)]
    checkpoint: Option<PathBuf>,
    /// The port to listen on; 0 picks a free one (the address is printed).
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// The address to listen on. The default is this machine only; the page has no login,
    /// so think twice before 0.0.0.0.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    #[cfg_attr(not(feature = "sim"), doc = "cpu, cuda, or auto.")]
    #[cfg_attr(feature = "sim", doc = "cpu, cuda, sim, or auto.")]
    #[arg(long, default_value = "auto")]
    device: String,
    /// Draw with the raw generator even when the checkpoint has an EMA generator
    /// (`train --ema-half-life`), which is used by default.
    #[arg(long)]
    no_ema: bool,
    /// Batchnorm statistics the generator draws with: `running` or `batch` (see `sample
    /// --help`) [default: running].
    #[arg(long, value_name = "running|batch")]
    bn: Option<BnStats>,
}

pub fn run(a: Args) -> Result<()> {
    let Some(checkpoint) = a.checkpoint else {
        bail!(
            "serve needs a trained model and trains none itself: give --checkpoint RUN, the --out folder of a training run. \
             To make one (a few minutes on a CPU): gan-engine train --size 32 --width 32 --iters 1000 --matching-aware 0.5 --out runs/quick, \
             then gan-engine serve --checkpoint runs/quick"
        );
    };
    serve::run(Options { checkpoint, host: a.host, port: a.port, device: a.device, drawing: Drawing { ema: !a.no_ema, bn: a.bn.unwrap_or_default() } })
}
