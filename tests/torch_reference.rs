//! Same numbers as PyTorch: one training iteration of the small model (32 px, width 8,
//! batch 4) on our engine against the reference state that `scripts/dev/torch_reference.py`
//! wrote with PyTorch in float64. The comparison itself (what is compared, under which
//! tolerances) is `gan_engine::verify::torch`, shared with `gan-engine selftest --device
//! sim|cuda`; this test runs it on the CPU backend (and, asked with `--include-ignored`, on
//! the GPU).
//!
//! By default the reference is the committed file embedded in the library;
//! `TORCH_REFERENCE=path` points the test at another one, e.g. a wrong reference written by
//! `scripts/dev/torch_reference.py --perturb NAME -o wrong.safetensors`, which must fail.

use anyhow::{bail, Context, Result};
use gan_engine::backend::cpu::Cpu;
use gan_engine::backend::cuda::GpuBackend;
use gan_engine::backend::Backend;
use gan_engine::verify::torch::{self as reference, Reference, Tolerances};

fn load() -> Result<Reference> {
    match std::env::var("TORCH_REFERENCE") {
        Ok(path) => {
            let bytes = std::fs::read(&path).with_context(|| format!("cannot read TORCH_REFERENCE={path}"))?;
            Reference::parse(&bytes).with_context(|| format!("reading {path}"))
        }
        Err(_) => Reference::embedded(),
    }
}

fn check<B: Backend>(be: &B, tol: &Tolerances) -> Result<()> {
    let r = load()?;
    let checks = reference::run(be, &r, tol)?;
    let (table, failed) = reference::table(&be.name(), &r, &checks);
    print!("{table}");
    if failed > 0 {
        bail!("{failed} tensor(s) differ from the PyTorch reference beyond tolerance on {}", be.name());
    }
    Ok(())
}

#[test]
fn cpu_matches_pytorch_reference() -> Result<()> {
    check(&Cpu::new(), &reference::CPU)
}

/// Same comparison, under the GPU tolerances, on the GPU. Ignored by default, so a
/// machine without a GPU reports it as not run instead of passing it; asked for with
/// `--include-ignored`, it fails where no GPU opens. (`gan-engine selftest --device cuda`,
/// which scripts/gpu-check.sh runs, makes the same comparison without cargo.)
#[test]
#[ignore = "needs an NVIDIA GPU: cargo test --release --test torch_reference -- --include-ignored"]
fn cuda_matches_pytorch_reference() -> Result<()> {
    let be = GpuBackend::cuda(None).context("no GPU to compare on")?;
    check(&be, &reference::GPU)
}

#[test]
fn a_wrong_reference_is_rejected() -> Result<()> {
    // The negative control: the same reference with one convention changed by hand (the
    // loss halved twice, as a summed-then-halved D loss would give) must fail, so the
    // comparison above cannot pass vacuously.
    let mut r = load()?;
    if let Some((_, v)) = r.tensors.get_mut("outputs.loss_d") {
        v[0] *= 0.5;
    }
    // Under the CPU bounds, and under the looser GPU bounds of the selftest rows.
    for tol in [&reference::CPU, &reference::GPU] {
        let checks = reference::run(&Cpu::new(), &r, tol)?;
        let bad: Vec<&str> = checks.iter().filter(|c| !c.passed()).map(|c| c.name.as_str()).collect();
        assert_eq!(bad, ["outputs.loss_d"], "exactly the altered tensor must fail ({tol:?})");
    }
    Ok(())
}
