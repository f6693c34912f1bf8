//! Calibration of the training-iteration tolerances of `selftest --device cuda` without a
//! GPU: the CPU backend in f32 against itself in f64 at the size the GPU check uses
//! (128 px, width 64, batch 64). A GPU's f32 result differs from the CPU's f32 by rounding
//! of the same order, so if f32 rounding alone came near the tolerances, the GPU check
//! would be flaky. Slow (minutes on two cores), hence ignored by default:
//! `cargo test --release --test cuda_tolerance -- --ignored --nocapture`.

use gan_engine::backend::cpu::{Cpu, Cpu64};
use gan_engine::backend::cuda::check::{iteration_rows, train_iteration};
use gan_engine::model::ModelConfig;

fn check(size: usize, width: usize, batch: usize) {
    let cfg = ModelConfig::new(size, width).unwrap();
    let want = train_iteration(&Cpu64::new(), &cfg, batch, 13).unwrap();
    let got = train_iteration(&Cpu::new(), &cfg, batch, 13).unwrap();
    let rows = iteration_rows(&want, &got, &format!("{size} px, width {width}, batch {batch}"), 0);
    for r in &rows {
        println!("{:<60} {:<60} max abs {:.2e} max rel {:.2e} {}", r.kernel_label(), r.shape, r.max_abs, r.max_rel, if r.passed { "PASS" } else { "FAIL" });
    }
    assert!(rows.iter().all(|r| r.passed), "f32 rounding alone exceeds the training-iteration tolerances");
}

#[test]
#[ignore = "minutes of CPU time; run by hand when changing the tolerances"]
fn f32_rounding_fits_the_tolerances_at_128px_batch_64() {
    check(128, 64, 64);
}

#[test]
fn f32_rounding_fits_the_tolerances_at_32px_batch_2() {
    check(32, 8, 2);
}
