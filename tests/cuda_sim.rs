//! The CUDA kernels on the CPU simulation against their CPU twins (run with
//! `cargo test --release --features sim`). `gan-engine selftest --device sim` runs the
//! same checks plus the models' layers and a training iteration, and prints the table.
#![cfg(feature = "sim")]

use gan_engine::backend::cuda::check::{awkward_shapes, Checker};
use gan_engine::backend::cuda::{source, GpuBackend};

#[test]
fn every_kernel_matches_its_cpu_twin_at_awkward_shapes() {
    let gpu = GpuBackend::sim().expect("built with the sim feature");
    let mut c = Checker::new(&gpu, 3);
    awkward_shapes(&mut c).expect("checks ran");
    let failed: Vec<String> = c.rows.iter().filter(|r| !r.passed).map(|r| format!("{} {} (max abs {:e})", r.kernel_label(), r.shape, r.max_abs)).collect();
    assert!(failed.is_empty(), "failed: {failed:#?}");
    let launched = gpu.launched_kernels();
    let missing: Vec<&str> = source::kernels().into_iter().map(|(k, _)| k).filter(|k| !launched.contains(k)).collect();
    assert!(missing.is_empty(), "kernels never launched: {missing:?}");
}

#[test]
fn a_wrong_result_fails_its_row() {
    // The comparison itself must be able to fail.
    let row = gan_engine::backend::cuda::check::compare(vec!["k".into()], "s".into(), &[1.0, 2.0], &[1.0, 2.1], gan_engine::backend::cuda::check::TOL_GEMM);
    assert!(!row.passed);
    let nan = gan_engine::backend::cuda::check::compare(vec!["k".into()], "s".into(), &[1.0], &[f32::NAN], gan_engine::backend::cuda::check::TOL_ELEM);
    assert!(!nan.passed);
}
