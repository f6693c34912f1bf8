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
use gan_engine::backend::{Backend, Core};
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

/// `--precision bf16` on the CPU, every bf16 kernel this CPU runs (the f32 twin everywhere),
/// against the float64 reference under the bf16 model of `verify::torch::run_bf16`, anchored
/// on PyTorch's bf16 autocast run of the same iteration.
#[test]
#[ignore = "open: 64 of 66 tensors pass; D's text-projection bias gradient (8 values) is 8x PyTorch bf16's error and G's first-layer Adam update sits at its bound"]
fn cpu_bf16_matches_pytorch_bf16_autocast() -> Result<()> {
    use gan_engine::backend::cpu::Bf16Kernel;
    let r = load()?;
    for kernel in Bf16Kernel::ALL {
        if !kernel.available() {
            println!("skipped: the {} bf16 kernel does not run on this CPU", kernel.label());
            continue;
        }
        let be = Cpu::with_bf16_kernel(kernel)?;
        let checks = reference::run_bf16(&be, &r)?;
        let (table, failed) = reference::table(&be.name(), &r, &checks);
        print!("{table}");
        if failed > 0 {
            bail!("{failed} tensor(s) beyond the bf16 bounds on {}", be.name());
        }
    }
    Ok(())
}

/// The bf16 bounds still catch a convention error: the wrong loss passes before the change
/// and fails after it.
#[test]
fn bf16_bounds_reject_a_wrong_reference() -> Result<()> {
    let mut r = load()?;
    let loss_ok = |r: &Reference| -> Result<bool> {
        let checks = reference::run_bf16(&Cpu::new(), r)?;
        Ok(checks.iter().find(|c| c.name.starts_with("outputs.loss_d")).expect("loss_d compared").passed())
    };
    assert!(loss_ok(&r)?);
    if let Some((_, v)) = r.tensors.get_mut("outputs.loss_d") {
        v[0] *= 0.5;
    }
    assert!(!loss_ok(&r)?);
    Ok(())
}
