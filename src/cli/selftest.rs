use anyhow::{bail, Context, Result};
use gan_engine::backend::cuda::{source, GpuBackend};
use gan_engine::backend::device::{self, Opened};
use gan_engine::backend::{Core, Precision};
use gan_engine::verify::torch::{self as reference, Check, Reference};
use gan_engine::verify::{self, gradcheck, Row};
use std::time::Instant;

#[derive(clap::Args)]
pub struct Args {
    /// cpu: gradient checks in f64. sim: every CUDA kernel run on the CPU (build with
    /// `--features sim`) against its CPU twin, and one training iteration against the
    /// PyTorch reference. cuda: the same on the GPU, plus a full training iteration at
    /// 128 px, batch 64.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Entries checked per parameter tensor in the whole-model checks.
    #[arg(long, default_value_t = 6)]
    per_param: usize,
    /// On a GPU, the simulation's sizes (the 32 px, width 8 model; no 128 px iteration):
    /// for slow checkers such as compute-sanitizer.
    #[arg(long)]
    small: bool,
}

pub fn run(a: Args) -> Result<()> {
    if a.device == "cpu" {
        return cpu(a.per_param);
    }
    match device::open(&a.device, None)? {
        Opened::Gpu(gpu) => kernels(&gpu, a.small),
        Opened::Cpu(_) => cpu(a.per_param),
    }
}

fn cpu(per_param: usize) -> Result<()> {
    println!("gradient checks, central differences in f64, pass below {:e} max relative error", gradcheck::TOLERANCE);
    println!("{:<58} {:>8} {:>12}  result", "check", "entries", "max rel err");
    let results = verify::all_gradchecks(per_param)?;
    let mut failed = 0;
    for r in &results {
        let verdict = if r.passed() { "PASS" } else { "FAIL" };
        failed += usize::from(!r.passed());
        println!("{:<58} {:>8} {:>12.3e}  {verdict}", r.name, r.entries, r.max_rel_err);
    }
    println!("{} passed, {} failed", results.len() - failed, failed);
    if failed > 0 {
        bail!("{failed} gradient check(s) failed");
    }
    Ok(())
}

fn print_row(r: &Row, width: usize) {
    // One word, no `|`: scripts/gpu-check.sh turns these rows into a markdown table.
    let tol = if r.tol.abs_of_max.is_nan() { format!("relL2:{:.1e}", r.tol.rel) } else { format!("{:.0e}*max+{:.0e}*ref", r.tol.abs_of_max, r.tol.rel) };
    let verdict = if r.passed { "PASS" } else { "FAIL" };
    println!("{:<width$}  {:<58} {:>8} {:>10.2e} {:>10.2e}  {:<18} {verdict}", r.kernel_label(), r.shape, r.values, r.max_abs, r.max_rel, tol);
}

/// One row of the PyTorch reference comparison, in the columns of the kernel rows.
fn print_reference_row(c: &Check, shape: &str, width: usize) {
    let label = if c.loose > 0 { format!("torch-ref: {} ({} loose)", c.name, c.loose) } else { format!("torch-ref: {}", c.name) };
    let tol = format!("{:.1e}+{:.0e}*ref", c.tol.atol, c.tol.rtol);
    let verdict = if c.passed() { "PASS" } else { "FAIL" };
    println!("{label:<width$}  {shape:<58} {:>8} {:>10.2e} {:>10.2e}  {tol:<18} {verdict}", c.len, c.max_abs_err, c.worst_ratio);
}

/// Every kernel against its CPU twin, the models' layers, whole training iterations, and
/// one iteration against the PyTorch reference.
fn kernels(gpu: &GpuBackend, small: bool) -> Result<()> {
    let start = Instant::now();
    println!("kernel checks on {}", gpu.name());
    println!("each row: the kernels launched, compared with the CPU twin in f32; a value passes when |gpu - cpu| <= a*max|cpu| + r*|cpu| (tolerance a*max+r*ref), rel err the largest |gpu - cpu| / (|cpu| + a*max|cpu|); the training rows compare whole groups by relative L2 error (relL2)");
    let rows = verify::kernel_checks(gpu, small)?;
    // The PyTorch reference (verify::torch), embedded in the binary.
    let torch = Reference::embedded()?;
    // Under --precision bf16 against the float64 reference with the bf16 model, anchored on
    // PyTorch's bf16 autocast run (verify::torch::run_bf16).
    let bf16 = gpu.precision() == Precision::Bf16;
    let checks = if bf16 { reference::run_bf16(gpu, &torch) } else { reference::run(gpu, &torch, &reference::GPU) }
        .with_context(|| format!("the PyTorch reference iteration on {}", gpu.name()))?;
    let width = rows.iter().map(|r| r.kernel_label().len()).max().unwrap_or(6).max(6);
    println!("{:<width$}  {:<58} {:>8} {:>10} {:>10}  {:<18} result", "kernel", "shape", "values", "max abs", "rel err", "tolerance");
    for r in &rows {
        print_row(r, width);
    }
    if bf16 {
        println!(
            "bf16: each tensor's relative L2 error against float64 must stay under {} x PyTorch bf16 autocast's own + {:.3} (verify::torch::run_bf16); the tolerance column is that bound",
            reference::BF16_PEER_FACTOR,
            reference::bf16_floor()
        );
    }
    println!(
        "PyTorch reference ({}): one training iteration from PyTorch's weights and batch, each tensor against PyTorch in float64; a value passes when |gpu - ref| <= atol + rtol*|ref| (tolerance atol+rtol*ref: the GPU bounds of verify::torch, 4x the CPU's), err/tol the largest |gpu - ref| / (atol + rtol*|ref|); loose entries (reference gradient zero within rounding) get one Adam step (lr) more",
        torch.note
    );
    let rwidth = checks.iter().map(|c| c.name.len() + 24).max().unwrap_or(16);
    println!("{:<rwidth$}  {:<58} {:>8} {:>10} {:>10}  {:<18} result", "reference tensor", "shape", "values", "max abs", "err/tol", "tolerance");
    for ch in &checks {
        print_reference_row(ch, &torch.shape(), rwidth);
    }
    let failed = rows.iter().filter(|r| !r.passed).count();
    let ref_failed = checks.iter().filter(|c| !c.passed()).count();
    // Coverage: every extern "C" kernel in kernels/ must have been launched and compared.
    let launched = gpu.launched_kernels();
    let missing: Vec<&str> = source::kernels().into_iter().map(|(k, _)| k).filter(|k| !launched.contains(k)).collect();
    println!(
        "{} rows: {} passed, {} failed; PyTorch reference: {} of {} tensors passed; {} of {} kernels launched; {:.1} s",
        rows.len(),
        rows.len() - failed,
        failed,
        checks.len() - ref_failed,
        checks.len(),
        source::kernels().len() - missing.len(),
        source::kernels().len(),
        start.elapsed().as_secs_f64()
    );
    if !missing.is_empty() {
        bail!("kernels without a selftest row: {}", missing.join(", "));
    }
    if failed > 0 {
        bail!("{failed} kernel check(s) failed on {}", gpu.name());
    }
    if ref_failed > 0 {
        bail!("{ref_failed} tensor(s) differ from the PyTorch reference beyond the GPU tolerances on {}", gpu.name());
    }
    Ok(())
}
