use anyhow::{Context, Result};
use gan_engine::backend::cuda::{compile_module, nvrtc_archs, nvrtc_path, nvrtc_version, source, GemmMode};
use std::path::PathBuf;

/// Compile every kernel module with NVRTC (no GPU needed) and write the PTX.
#[derive(clap::Args)]
pub struct Args {
    /// Target architectures, e.g. sm_61,sm_75 or compute_90.
    #[arg(long, value_delimiter = ',', required = true)]
    arch: Vec<String>,
    /// Folder for `<module>.<arch>.ptx`, and for `params.cuh`, the header of what the
    /// kernels share with Rust (generated from the Rust definitions).
    #[arg(long)]
    out: Option<PathBuf>,
    /// GEMM mode compiled in: fp32, tf32x3, tf32, tf32x3-async, tf32-async, bf16 or
    /// bf16-async (all but fp32 need sm_80 or newer). Default: what a GPU of that
    /// architecture runs.
    #[arg(long)]
    gemm: Option<String>,
}

pub fn run(a: Args) -> Result<()> {
    let (major, minor) = nvrtc_version()?;
    println!("NVRTC {major}.{minor} ({}), architectures {:?}", nvrtc_path()?, nvrtc_archs()?);
    if let Some(out) = &a.out {
        std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
        let header = source::HEADERS.iter().find(|(name, _)| *name == "params.cuh").map(|(_, text)| *text).context("no generated params.cuh in this build")?;
        let path = out.join("params.cuh");
        std::fs::write(&path, header).with_context(|| format!("writing {}", path.display()))?;
    }
    let asked = a.gemm.as_deref().map(GemmMode::parse).transpose().context("--gemm")?;
    for arch in &a.arch {
        let sm: i32 = arch.trim_start_matches(|c: char| !c.is_ascii_digit()).parse().with_context(|| format!("--arch {arch}: expected sm_NN or compute_NN"))?;
        let mode = GemmMode::for_device(asked, sm).with_context(|| format!("--arch {arch}"))?;
        println!("{arch}: GEMM {}", mode.label());
        for (module, _) in source::MODULES {
            let ptx = compile_module(module, arch, mode)?;
            let kernels = source::kernel_names(source::MODULES.iter().find(|(m, _)| m == module).map(|(_, s)| *s).unwrap_or(""));
            for k in &kernels {
                anyhow::ensure!(ptx.contains(&format!(".entry {k}(")), "kernels/{module}.cu for {arch}: no entry {k} in the PTX");
            }
            println!("compiled kernels/{module}.cu for {arch}: {} kernels, {} bytes of PTX", kernels.len(), ptx.len());
            if let Some(out) = &a.out {
                let path = out.join(format!("{module}.{arch}.ptx"));
                std::fs::write(&path, ptx).with_context(|| format!("writing {}", path.display()))?;
            }
        }
    }
    Ok(())
}
