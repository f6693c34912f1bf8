//! The CUDA kernels on the CPU simulation against their CPU twins (run with
//! `cargo test --release --features sim`). `gan-engine selftest --device sim` runs the
//! same checks plus the models' layers and a training iteration, and prints the table.
#![cfg(feature = "sim")]

use gan_engine::backend::cuda::{source, GemmMode, GpuBackend};
use gan_engine::verify::{awkward_shapes, Checker, Row, TOL_GEMM};

/// Every kernel at the awkward shapes in one GEMM mode; the rows.
fn awkward_rows(mode: GemmMode) -> Vec<Row> {
    let gpu = GpuBackend::sim(mode).expect("built with the sim feature");
    let mut c = Checker::new(&gpu, 3);
    awkward_shapes(&mut c).expect("checks ran");
    let failed: Vec<String> = c.rows.iter().filter(|r| !r.passed).map(|r| format!("{} {} (max abs {:e})", r.kernel_label(), r.shape, r.max_abs)).collect();
    assert!(failed.is_empty(), "GEMM {}: failed: {failed:#?}", mode.label());
    let launched = gpu.launched_kernels();
    let missing: Vec<&str> = source::kernels().into_iter().map(|(k, _)| k).filter(|k| !launched.contains(k)).collect();
    assert!(missing.is_empty(), "GEMM {}: kernels never launched: {missing:?}", mode.label());
    c.rows
}

#[test]
fn every_kernel_matches_its_cpu_twin_at_awkward_shapes_fp32() {
    awkward_rows(GemmMode::FP32);
}

#[test]
fn every_kernel_matches_its_cpu_twin_at_awkward_shapes_tf32x3() {
    awkward_rows(GemmMode::TF32X3);
}

#[test]
fn every_kernel_matches_its_cpu_twin_at_awkward_shapes_tf32x3_async() {
    // The tiles fed by asynchronous copies, which the simulation lands only at the wait
    // that covers them: a read before its wait sees the previous step's values.
    awkward_rows(GemmMode::TF32X3_ASYNC);
}

#[test]
fn tf32_tensor_cores_round_and_stay_within_their_bounds() {
    // Within TOL_GEMM_TF32 (checked by awkward_rows), and visibly coarser than fp32 on
    // the GEMM rows: the simulated tensor cores drop the low 13 mantissa bits, so a
    // kernel that skipped the TF32 path would show fp32-sized errors here.
    for mode in [GemmMode::TF32, GemmMode::TF32_ASYNC] {
        let tf32 = awkward_rows(mode);
        let worst = tf32.iter().filter(|r| r.kernels[0].starts_with("conv")).map(|r| r.max_rel).fold(0.0f64, f64::max);
        assert!(worst > 10.0 * TOL_GEMM.rel, "{}: GEMM rows as accurate as fp32 (worst rel err {worst:e}): is the tensor-core path running?", mode.label());
    }
}

#[test]
fn a_wrong_result_fails_its_row() {
    // The comparison itself must be able to fail.
    let row = gan_engine::verify::compare(vec!["k".into()], "s".into(), &[1.0, 2.0], &[1.0, 2.1], gan_engine::verify::TOL_GEMM);
    assert!(!row.passed);
    let nan = gan_engine::verify::compare(vec!["k".into()], "s".into(), &[1.0], &[f32::NAN], gan_engine::verify::TOL_ELEM);
    assert!(!nan.passed);
}

#[test]
fn bf16_tensor_cores_match_the_bf16_twin_and_really_round() {
    // Against the bf16 CPU twin (the f32 GEMM of the rounded operands) within f32
    // summation order (checked by awkward_rows), both feeds; and, as a control, the same
    // kernels against the f32 CPU backend are off by about the bf16 rounding, so a tile
    // that skipped the bf16 path could not pass the first check by accident.
    for mode in [GemmMode::BF16, GemmMode::BF16_ASYNC] {
        awkward_rows(mode);
        let gpu = GpuBackend::sim(mode).expect("built with the sim feature");
        let mut c = Checker::with_gemm_tol(&gpu, 3, TOL_GEMM);
        awkward_shapes(&mut c).expect("checks ran");
        let worst = c.rows.iter().filter(|r| r.kernels[0].starts_with("conv")).map(|r| r.max_rel).fold(0.0f64, f64::max);
        assert!(worst > 1e-3, "{}: GEMM rows within {worst:e} of the f32 twin: is the bf16 path running?", mode.label());
    }
}
