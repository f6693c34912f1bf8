use anyhow::{bail, Result};
use gan_engine::backend::cuda::{source, GpuBackend};
use gan_engine::backend::device::{self, Opened};
use gan_engine::backend::{Core, Precision};
use gan_engine::verify::torch::{self as reference, Check};
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
    println!(
        "gradient checks, central differences in f64, pass below {:e} max relative error (CPU loops at SIMD level {})",
        gradcheck::TOLERANCE,
        gan_engine::backend::cpu::simd::active().label()
    );
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
    let verdict = if r.passed { "PASS" } else { "FAIL" };
    println!("{:<width$}  {:<58} {:>8} {:>10.2e} {:>10.2e}  {:<18} {verdict}", r.kernel_label(), r.shape, r.values, r.max_abs, r.max_rel, r.tol_label());
}

/// The rows, a group of rows (one per tensor of a whole iteration) as one summary line
/// while all of them pass: how many tensors, and the one nearest its bound. A failing
/// group prints every row.
fn print_rows(rows: &[Row], width: usize) {
    let mut i = 0;
    while i < rows.len() {
        let Some(group) = &rows[i].group else {
            print_row(&rows[i], width);
            i += 1;
            continue;
        };
        let end = rows[i..].iter().position(|r| r.group.as_ref() != Some(group)).map_or(rows.len(), |k| i + k);
        let members = &rows[i..end];
        if members.iter().all(|r| r.passed) {
            let worst = members.iter().max_by(|a, b| (a.max_rel / a.tol.rel).total_cmp(&(b.max_rel / b.tol.rel))).expect("a group has rows");
            let label = format!("{group} ({} tensors; nearest its bound: {})", members.len(), worst.kernel_label().split_whitespace().nth(2).unwrap_or(""));
            let values: usize = members.iter().map(|r| r.values).sum();
            println!(
                "{label:<width$}  {:<58} {values:>8} {:>10.2e} {:>10.2e}  {:<18} PASS",
                worst.shape,
                members.iter().map(|r| r.max_abs).fold(0.0, f64::max),
                worst.max_rel,
                worst.tol_label()
            );
        } else {
            members.iter().for_each(|r| print_row(r, width));
        }
        i = end;
    }
}

/// One row of the PyTorch reference comparison, in the columns of the kernel rows.
fn print_reference_row(c: &Check, shape: &str, width: usize) {
    let label = if c.loose > 0 { format!("torch-ref: {} ({} loose)", c.name, c.loose) } else { format!("torch-ref: {}", c.name) };
    let tol = format!("{:.1e}+{:.0e}*ref{}", c.tol.atol, c.tol.rtol, if c.widened { "+tf32" } else { "" });
    let verdict = if c.passed() { "PASS" } else { "FAIL" };
    println!("{label:<width$}  {shape:<58} {:>8} {:>10.2e} {:>10.2e}  {tol:<18} {verdict}", c.len, c.max_abs_err, c.worst_ratio);
}

/// Every kernel against its CPU twin, the models' layers, whole training iterations, and
/// the iterations of the embedded PyTorch references (verify::selftest).
fn kernels(gpu: &GpuBackend, small: bool) -> Result<()> {
    let start = Instant::now();
    println!("kernel checks on {}", gpu.name());
    println!("each row: the kernels launched, one output tensor compared with the CPU twin in f32; a value passes when |gpu - cpu| <= a*max|cpu| + r*|cpu| (tolerance a*max+r*ref; +tf32*S in GEMM mode tf32, S the value's sum of |products|: verify::twin::TOL_GEMM_TF32), rel err the largest |gpu - cpu| / (|cpu| + a*max|cpu|); the training rows compare each tensor by relative L2 error against the CPU in f64 (relL2), one line per group while all of its tensors pass");
    let t = verify::selftest(gpu, small)?;
    let width = t.rows.iter().map(|r| r.kernel_label().len()).max().unwrap_or(6).clamp(6, 120);
    println!("{:<width$}  {:<58} {:>8} {:>10} {:>10}  {:<18} result", "kernel", "shape", "values", "max abs", "rel err", "tolerance");
    print_rows(&t.rows, width);
    if gpu.precision() == Precision::Bf16 {
        println!(
            "bf16: each reference tensor's relative L2 error against float64 must stay under {} x PyTorch bf16 autocast's own + {:.3} (verify::torch::run_bf16); the tolerance column of those rows is that bound",
            reference::BF16_PEER_FACTOR,
            reference::bf16_floor()
        );
    }
    for note in &t.not_compared {
        println!("not compared: {note}");
    }
    for (r, checks) in &t.references {
        println!(
            "PyTorch reference ({}), {}: training from PyTorch's weights and batches, each tensor against PyTorch in float64; a value passes when |gpu - ref| <= atol + rtol*|ref| (tolerance atol+rtol*ref: the GPU bounds of verify::torch, 4x the CPU's; in GEMM mode tf32 widened entry by entry by the TF32 yardstick, verify::torch::tf32_widening), err/tol the largest |gpu - ref| / (atol + rtol*|ref|); loose entries (reference gradient zero within rounding) get one Adam step (lr) more per step",
            r.note,
            r.shape()
        );
        let rwidth = checks.iter().map(|c| c.name.len() + 24).max().unwrap_or(16);
        println!("{:<rwidth$}  {:<58} {:>8} {:>10} {:>10}  {:<18} result", "reference tensor", "shape", "values", "max abs", "err/tol", "tolerance");
        for ch in checks {
            print_reference_row(ch, &r.shape(), rwidth);
        }
    }
    let failed = t.failed_rows().len();
    let (ref_total, ref_failed) = (t.references.iter().map(|(_, c)| c.len()).sum::<usize>(), t.failed_checks().len());
    let kernels = source::kernels().len();
    println!(
        "{} rows: {} passed, {} failed; PyTorch references: {} of {} tensors passed; {} of {} kernels launched; {:.1} s",
        t.rows.len(),
        t.rows.len() - failed,
        failed,
        ref_total - ref_failed,
        ref_total,
        kernels - t.missing.len(),
        kernels,
        start.elapsed().as_secs_f64()
    );
    if !t.missing.is_empty() {
        bail!("kernels without a selftest row: {}", t.missing.join(", "));
    }
    if failed > 0 {
        bail!("{failed} kernel check(s) failed on {}", gpu.name());
    }
    if ref_failed > 0 {
        bail!("{ref_failed} tensor(s) differ from the PyTorch references beyond the GPU tolerances on {}", gpu.name());
    }
    Ok(())
}
