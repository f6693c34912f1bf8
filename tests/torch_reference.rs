//! Same numbers as PyTorch: training iterations of small models on our engine against the
//! reference states that `scripts/dev/torch_reference.py` wrote with PyTorch in float64 (one
//! iteration at 32 px, width 8, batch 4; two iterations at 64 px, width 4, batch 2 with the
//! matching-aware loss), and the committed wrong references (tests/fixtures/torch/, one per
//! convention a port could get wrong), each of which must fail, naming its tensors. The comparison itself (what is compared, under which
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

/// Two iterations (Adam at t = 2), 64 px, the matching-aware loss at W = 0.5, with
/// mismatched captions: the second embedded reference.
#[test]
fn cpu_matches_the_64px_matching_aware_two_iteration_reference() -> Result<()> {
    let r = Reference::parse(reference::EMBEDDED_GANCLS_64)?;
    let checks = reference::run(&Cpu::new(), &r, &reference::CPU)?;
    let (table, failed) = reference::table("cpu", &r, &checks);
    print!("{table}");
    assert_eq!(failed, 0, "{failed} tensor(s) differ from the reference");
    Ok(())
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

/// What each committed wrong reference must show: the tensors that must fail (by name),
/// and those that must not (the parts of the iteration the convention does not reach).
struct Expect {
    file: &'static str,
    must_fail: fn(&str) -> bool,
    must_pass: fn(&str) -> bool,
}

fn is_grad(n: &str) -> bool {
    n.starts_with("grads.")
}
fn is_forward(n: &str) -> bool {
    n.starts_with("outputs.")
}
fn is_running(n: &str) -> bool {
    n.contains("running_")
}

const EXPECT: [Expect; 5] = [
    // The loss summed over the batch of 4 scales every gradient by 4 (Adam's first step
    // hardly notices: g / |g|).
    Expect { file: "bce_sum", must_fail: |n| n == "outputs.loss_d" || n == "outputs.loss_g" || is_grad(n), must_pass: |n| n.starts_with("outputs.fake") },
    // Another eps moves every normalised activation: every output and gradient.
    Expect { file: "bn_eps", must_fail: |n| is_forward(n) || is_grad(n), must_pass: |_| false },
    // Momentum reaches the running statistics only.
    Expect { file: "bn_momentum", must_fail: is_running, must_pass: |n| !is_running(n) },
    // The G step through D before its Adam step: G's loss, gradients and step, D's logits
    // in the G step; the D step is untouched.
    Expect {
        file: "g_before_d_adam",
        must_fail: |n| n == "outputs.loss_g" || n.starts_with("outputs.logits_g") || n.starts_with("grads.generator."),
        must_pass: |n| n.starts_with("grads.discriminator.") || n == "outputs.loss_d" || n.starts_with("outputs.fake"),
    },
    // The text before the image features in D: every logit and D gradient; G's own
    // forward pass from the same weights is untouched.
    Expect {
        file: "text_first",
        must_fail: |n| n.starts_with("outputs.logits") || n.starts_with("grads.discriminator.") || n.starts_with("grads.generator."),
        must_pass: |n| n.starts_with("outputs.fake"),
    },
];

/// Each committed wrong reference (scripts/dev/torch_reference.py --all-perturbations
/// tests/fixtures/torch), laid over the embedded one, fails: the tensors its convention
/// reaches, and no others, under the CPU bounds, the GPU bounds of the selftest and the
/// GPU bounds widened for TF32 (so the widening does not hide a convention).
#[test]
fn every_committed_wrong_reference_fails() -> Result<()> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/torch");
    let mut files: Vec<String> = std::fs::read_dir(&dir)?.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    files.sort();
    let mut expected: Vec<String> = EXPECT.iter().map(|e| format!("{}.safetensors", e.file)).collect();
    expected.sort();
    assert_eq!(files, expected, "every committed wrong reference has its expectation, and every expectation its file");
    let widen = reference::tf32_widening(&Reference::embedded()?, &reference::GPU)?;
    for e in &EXPECT {
        let mut r = Reference::embedded()?;
        let replaced = r.overlay(&std::fs::read(dir.join(format!("{}.safetensors", e.file)))?)?;
        for (label, tol, w) in [("cpu", &reference::CPU, None), ("gpu", &reference::GPU, None), ("gpu+tf32", &reference::GPU, Some(&widen))] {
            let checks = reference::run_widened(&Cpu::new(), &r, tol, w)?;
            let failed: Vec<&str> = checks.iter().filter(|c| !c.passed()).map(|c| c.name.as_str()).collect();
            println!("{} under {label}: {} of {} replaced tensors fail", e.file, failed.len(), replaced.len());
            let missed: Vec<&str> = checks.iter().filter(|c| c.passed() && (e.must_fail)(&c.name)).map(|c| c.name.as_str()).collect();
            assert!(missed.is_empty(), "{} under {label}: these must fail and passed: {missed:?}", e.file);
            let wrong: Vec<&str> = failed.iter().copied().filter(|n| (e.must_pass)(n)).collect();
            assert!(wrong.is_empty(), "{} under {label}: these must pass and failed: {wrong:?}", e.file);
            assert!(!failed.is_empty());
        }
    }
    Ok(())
}

/// `--precision bf16` on the CPU, every bf16 kernel this CPU runs (the f32 twin everywhere),
/// against the float64 reference under the bf16 model of `verify::torch::run_bf16`, anchored
/// on PyTorch's bf16 autocast run of the same iteration.
#[test]
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

/// The two bf16 rows whose anchor is not the tensor's own PyTorch error still reject a value
/// both PyTorch runs (float64 and bf16) agree on and we do not: D's text-layer bias
/// gradient (anchored on the layer's weight gradient) twice ours, the factor of the loss's
/// (real + fake) / 2, and G's first-layer Adam update (entries whose gradient signs differ
/// left out) 3.16 times ours, what a first step without Adam's bias correction moves.
#[test]
fn bf16_rows_with_a_borrowed_anchor_reject_a_wrong_reference() -> Result<()> {
    use gan_engine::backend::cpu::Bf16Kernel;
    let be = Cpu::with_bf16_kernel(Bf16Kernel::F32)?;
    let passed = |r: &Reference, name: &str| -> Result<bool> {
        let checks = reference::run_bf16(&be, r)?;
        Ok(checks.iter().find(|c| c.name.starts_with(&format!("{name} "))).unwrap_or_else(|| panic!("{name} compared")).passed())
    };
    // `key` and its PyTorch bf16 twin moved away from `origin` by `factor`.
    let scaled = |key: &str, origin: Option<&str>, factor: f32| -> Result<Reference> {
        let mut r = load()?;
        for k in [key.to_string(), format!("bf16.{key}")] {
            let from = origin.map(|o| r.get(o).map(|v| v.to_vec())).transpose()?;
            let v = &mut r.tensors.get_mut(&k).unwrap_or_else(|| panic!("the reference holds {k}")).1;
            for (i, x) in v.iter_mut().enumerate() {
                let o = from.as_ref().map_or(0.0, |f| f[i]);
                *x = o + factor * (*x - o);
            }
        }
        Ok(r)
    };
    let (bias, update) = ("grads.discriminator.text.0.bias", "after.generator.main.0.weight");
    let r = load()?;
    assert!(passed(&r, bias)? && passed(&r, update)?);
    assert!(!passed(&scaled(bias, None, 2.0)?, bias)?, "a bias gradient twice ours passed");
    assert!(!passed(&scaled(update, Some("weights.generator.main.0.weight"), 3.16)?, update)?, "an update 3.16 times ours passed");
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
