//! Calibration of the training-iteration comparison of `selftest --device sim|cuda` without
//! a GPU: another f32 computation of the same iteration (the CPU backend with its
//! convolutions cut into one-image chunks, so its GEMMs sum in other blocks) plays the GPU
//! against the f64 reference, with the default CPU backend in f32 as the yardstick, and
//! must pass every tensor's row; a corrupted tensor must fail its row. Prints the measured
//! errors. The large case takes minutes on two cores, hence ignored by default:
//! `cargo test --release --test cuda_tolerance -- --include-ignored --nocapture`.

use gan_engine::backend::cpu::{Cpu, Cpu64, CpuBackend};
use gan_engine::model::ModelConfig;
use gan_engine::verify::iteration::{iteration_rows, train_iteration, IterationOut};
use gan_engine::verify::rel_l2;

fn print_rows(rows: &[gan_engine::verify::Row]) {
    for r in rows {
        println!("{:<60} {:<28} rel L2 {:.2e} (bound {:.2e}) {}", r.kernel_label(), r.shape, r.max_rel, r.tol.rel, if r.passed { "PASS" } else { "FAIL" });
    }
}

fn check(size: usize, width: usize, batch: usize) {
    let cfg = ModelConfig::new(size, width).unwrap();
    let shape = format!("{size} px, width {width}, batch {batch}");
    let reference = train_iteration(&Cpu64::new(), &cfg, batch, 13).unwrap();
    let cpu32 = train_iteration(&Cpu::new(), &cfg, batch, 13).unwrap();
    let other = train_iteration(&CpuBackend::<f32>::with_chunk_elems(1), &cfg, batch, 13).unwrap();
    let differ = other.params.iter().zip(&cpu32.params).filter(|(a, b)| a.grad != b.grad).count();
    println!("{shape}: the chunked CPU's gradients differ from the default CPU's in {differ} of {} tensors", other.params.len());
    let rows = iteration_rows(&reference, &cpu32, &other, &shape, 0);
    print_rows(&rows);
    let failed: Vec<String> = rows.iter().filter(|r| !r.passed).map(|r| r.kernel_label()).collect();
    assert!(failed.is_empty(), "another f32 summation order failed: {failed:?}");
    corrupt_one_small_tensor(&reference, &cpu32, &other, &shape);
    // A 10% error in every G gradient fails every G gradient row.
    let mut bad = other.clone();
    bad.params.iter_mut().filter(|p| p.name.starts_with("generator")).for_each(|p| p.grad.iter_mut().for_each(|g| *g *= 1.1));
    let rows = iteration_rows(&reference, &cpu32, &bad, "perturbed", 0);
    let g_rows: Vec<_> = rows.iter().filter(|r| r.kernel_label().starts_with("train: grad generator")).collect();
    assert!(!g_rows.is_empty() && g_rows.iter().all(|r| !r.passed), "a 10% error in the G gradients passed a row");
}

/// The negative control of the per-tensor rows: the tensor holding the smallest share of
/// G's gradient norm, replaced by its negation, fails its own row. Printed beside it: the
/// error of G's gradients joined into one vector (the rows before this test), which grows
/// only by twice that share.
fn corrupt_one_small_tensor(reference: &IterationOut, cpu32: &IterationOut, good: &IterationOut, shape: &str) {
    let g: Vec<_> = reference.params.iter().filter(|p| p.name.starts_with("generator")).collect();
    let norm = |v: &[f32]| v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    let total = norm(&g.iter().flat_map(|p| p.grad.clone()).collect::<Vec<f32>>());
    let smallest = g.iter().filter(|p| norm(&p.grad) > 0.0).min_by(|a, b| norm(&a.grad).total_cmp(&norm(&b.grad))).unwrap();
    let share = norm(&smallest.grad) / total;
    let mut bad = good.clone();
    bad.param_mut(&smallest.name).unwrap().grad.iter_mut().for_each(|v| *v = -*v);
    let rows = iteration_rows(reference, cpu32, &bad, shape, 0);
    let row = rows.iter().find(|r| r.kernel_label() == format!("train: grad {}", smallest.name)).unwrap();
    let joined = |o: &IterationOut| o.params.iter().filter(|p| p.name.starts_with("generator")).flat_map(|p| p.grad.clone()).collect::<Vec<f32>>();
    println!(
        "negated {} ({:.1e} of G's gradient norm): its row {:.2e} against {:.2e}; G's gradients joined: {:.2e}",
        smallest.name,
        share,
        row.max_rel,
        row.tol.rel,
        rel_l2(&joined(reference), &joined(&bad))
    );
    assert!(!row.passed, "a wrong {} passed its row", smallest.name);
    let others_failed: Vec<String> = rows.iter().filter(|r| !r.passed && r.kernel_label() != row.kernel_label()).map(|r| r.kernel_label()).collect();
    assert!(others_failed.is_empty(), "only the corrupted tensor may fail: {others_failed:?}");
}

#[test]
#[ignore = "minutes of CPU time; run by hand when changing the tolerances"]
fn cpu_f32_against_f64_at_128px_batch_64() {
    check(128, 64, 64);
}

#[test]
fn cpu_f32_against_f64_at_32px_batch_2() {
    check(32, 8, 2);
}

#[test]
fn cpu_f32_against_f64_at_64px_width_16_batch_4() {
    // The size of the training iteration `selftest --device cuda` runs first.
    check(64, 16, 4);
}
