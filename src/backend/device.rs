//! `--device cpu|cuda|sim|auto`, shared by every command.
//!
//! - `cpu`: the reference backend (f32).
//! - `cuda`: the first GPU; without a driver, a GPU or NVRTC this is an error with one
//!   sentence saying what is missing (the CLI prints it and exits with code 2).
//! - `sim`: the CUDA kernels run on the CPU through kernels/sim.h (needs a build with the
//!   `sim` feature; slow, for verification).
//! - `auto`: `cuda` when it opens, else `cpu`, saying so on stderr.
//!
//! Every backend opens in a `--precision` (f32 or bf16 GEMMs; `None` where a command has no
//! such flag: the GPU's GEMM mode is then GAN_ENGINE_GEMM's or the default).

use super::cpu::Cpu;
use super::cuda::{GemmMode, GpuBackend};
use super::Precision;
use anyhow::{bail, Context, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Device {
    Cpu,
    Cuda,
    Sim,
    Auto,
}

impl std::str::FromStr for Device {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Device> {
        Ok(match s {
            "cpu" => Device::Cpu,
            "cuda" | "gpu" => Device::Cuda,
            "sim" => Device::Sim,
            "auto" => Device::Auto,
            // The choices `--help` lists; `sim` only where this build can run it.
            other if cfg!(feature = "sim") => bail!("--device {other}: choose cpu, cuda, sim or auto"),
            other => bail!("--device {other}: choose cpu, cuda or auto"),
        })
    }
}

/// An opened backend. Commands are generic over `Backend`; they match on this once and
/// call their generic body with the backend inside.
// One of these exists per process, so the size difference of the variants costs nothing.
#[allow(clippy::large_enum_variant)]
pub enum Opened {
    Cpu(Cpu),
    Gpu(GpuBackend),
}

/// The first GPU, or the simulation of the kernels, in the GEMM mode of `--precision` and
/// `GAN_ENGINE_GEMM` (GemmMode::for_precision) or by default the GPU's (the simulation's:
/// tf32x3). This is where a GPU backend's GEMM mode is chosen, once; and the simulation's
/// checks: `GAN_ENGINE_SIM_ORDERS=1` runs each launch in one order of threads instead of
/// three (the access checker stays on).
pub fn gpu(simulated: bool, precision: Option<Precision>) -> Result<GpuBackend> {
    let gemm = GemmMode::for_precision(precision, GemmMode::from_env()?)?;
    if !simulated {
        return GpuBackend::cuda(gemm);
    }
    let mode = gemm.unwrap_or(GemmMode::TF32X3);
    #[cfg(feature = "sim")]
    {
        let all_orders = match std::env::var("GAN_ENGINE_SIM_ORDERS").as_deref().map(str::trim) {
            Err(_) | Ok("") | Ok("3") => true,
            Ok("1") => false,
            Ok(other) => bail!("GAN_ENGINE_SIM_ORDERS={other:?}: expected 1 (forward only) or 3 (forward, reverse and shuffled, the default)"),
        };
        Ok(GpuBackend::sim_with(mode, crate::backend::cuda::SimChecks { all_orders }))
    }
    #[cfg(not(feature = "sim"))]
    GpuBackend::sim(mode)
}

/// Opens the backend named on the command line, in `precision` (`None`: the command has
/// no `--precision`; f32 on the CPU).
pub fn open(name: &str, precision: Option<Precision>) -> Result<Opened> {
    let cpu = || Cpu::with_precision(precision.unwrap_or_default()).context("--precision bf16");
    match name.parse::<Device>()? {
        Device::Cpu => Ok(Opened::Cpu(cpu()?)),
        Device::Cuda => Ok(Opened::Gpu(gpu(false, precision).context("--device cuda")?)),
        Device::Sim => Ok(Opened::Gpu(gpu(true, precision).context("--device sim")?)),
        Device::Auto => {
            // A mistyped GEMM mode is the user's error to fix, not a reason to train on the CPU.
            let gemm = GemmMode::for_precision(precision, GemmMode::from_env()?).context("--device auto")?;
            match GpuBackend::cuda(gemm) {
                Ok(gpu) => Ok(Opened::Gpu(gpu)),
                Err(e) => {
                    eprintln!("--device auto: using cpu ({e:#})");
                    Ok(Opened::Cpu(cpu()?))
                }
            }
        }
    }
}

/// `--precision` of a command: `f32` or `bf16`, an error naming the flag otherwise.
pub fn parse_precision(s: Option<&str>) -> Result<Option<Precision>> {
    s.map(str::parse).transpose()
}
