//! Calibration of the training-iteration comparison of `selftest --device cuda` without a
//! GPU: the CPU backend in f32 plays the GPU against the f64 reference, at the size the GPU
//! check uses (128 px, width 64, batch 64), and must pass the same rows with its own error
//! as the yardstick times TRAIN_ERR_FACTOR. Prints the measured errors. The large case takes
//! minutes on two cores, hence ignored by default:
//! `cargo test --release --test cuda_tolerance -- --include-ignored --nocapture`.

use gan_engine::backend::cpu::{Cpu, Cpu64};
use gan_engine::model::ModelConfig;
use gan_engine::verify::iteration::{iteration_rows, train_iteration};
use gan_engine::verify::rel_l2;

fn check(size: usize, width: usize, batch: usize) {
    let cfg = ModelConfig::new(size, width).unwrap();
    let reference = train_iteration(&Cpu64::new(), &cfg, batch, 13).unwrap();
    let cpu32 = train_iteration(&Cpu::new(), &cfg, batch, 13).unwrap();
    let rows = iteration_rows(&reference, &cpu32, &cpu32, &format!("{size} px, width {width}, batch {batch}"), 0);
    for r in &rows {
        println!("{:<60} {:<28} f32 vs f64: rel L2 {:.2e} (bound for a GPU {:.2e})", r.kernel_label(), r.shape, r.max_rel, r.tol.rel);
    }
    assert!(rows.iter().all(|r| r.passed));
    // The comparison can fail: a perturbed gradient is caught.
    let mut bad = train_iteration(&Cpu::new(), &cfg, batch, 13).unwrap();
    bad.g_grads.iter_mut().for_each(|g| *g *= 1.1);
    assert!(rel_l2(&reference.g_grads, &bad.g_grads) > 0.05);
    let rows = iteration_rows(&reference, &cpu32, &bad, "perturbed", 0);
    assert!(!rows[2].passed, "a 10% error in the G gradients passed");
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
