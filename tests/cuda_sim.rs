//! The CUDA kernels on the CPU simulation, beyond the selftest (run with `cargo test
//! --release --features sim --test cuda_sim`; scripts/dev/cuda-tools.sh does). Every kernel
//! against its CPU twin at awkward shapes, the models' layers, whole iterations and the
//! PyTorch references, in every GEMM mode, is `gan-engine selftest --device sim`, which
//! cuda-tools.sh runs once per mode (GAN_ENGINE_GEMM) and which fails on a failing row or a
//! kernel never launched. Here: that the comparisons can fail, that the TF32 modes really
//! round, that the freeze flag holds in the kernels, and that a resumed run continues the
//! saved state.
#![cfg(feature = "sim")]

mod resume;

use gan_engine::backend::cpu::Cpu;
use gan_engine::backend::cuda::{source, GemmMode, GpuBackend};
use gan_engine::backend::ConvParams;
use gan_engine::model::{ModelConfig, TextInD};
use gan_engine::verify::freeze::g_step_freeze;
use gan_engine::verify::{awkward_shapes, compare, Checker, Row, TOL_ELEM, TOL_GEMM};

#[test]
fn tf32_tensor_cores_round_and_stay_within_their_bounds() {
    // Within the TF32 error model (verify::twin::TOL_GEMM_TF32), and visibly coarser than
    // fp32 on the GEMM rows: the simulated tensor cores drop the low 13 mantissa bits, so
    // a kernel that skipped the TF32 path would show fp32-sized errors here. The selftest
    // runs every shape in these modes; these are the ones with long reductions.
    for mode in [GemmMode::TF32, GemmMode::TF32_ASYNC] {
        let gpu = GpuBackend::sim(mode).expect("built with the sim feature");
        let mut c = Checker::new(&gpu, 3);
        c.conv(ConvParams::conv2d(3, 4, 7, 9, 66, 3, 1, 1), false).unwrap();
        c.conv(ConvParams::conv_transpose2d(2, 8, 16, 16, 3, 4, 2, 1), true).unwrap();
        c.linear(3, 700, 70).unwrap();
        let failed: Vec<String> = c.rows.iter().filter(|r| !r.passed).map(|r| format!("{} {} (max abs {:e})", r.kernel_label(), r.shape, r.max_abs)).collect();
        assert!(failed.is_empty(), "GEMM {}: failed: {failed:#?}", mode.label());
        let worst = c.rows.iter().filter(|r| r.kernels[0].starts_with("conv")).map(|r| r.max_rel).fold(0.0f64, f64::max);
        assert!(worst > 10.0 * TOL_GEMM.rel, "{}: GEMM rows as accurate as fp32 (worst rel err {worst:e}): is the tensor-core path running?", mode.label());
    }
}

#[test]
fn tf32_kernels_equal_the_twin_with_tf32_operands() {
    // Tighter than the error model: against the CPU twin that rounds the same operands to
    // TF32 (Cpu::with_tf32_operands, fp32 where the thin kernels run), the simulated tensor
    // cores agree to fp32's bounds, so they round to nearest exactly where and as modelled.
    // The same twin without the rounding (the plain CPU) fails those bounds.
    let shapes = [
        (false, ConvParams::conv2d(4, 3, 32, 32, 8, 4, 2, 1)),
        (false, ConvParams::conv2d(4, 40, 4, 4, 32, 1, 1, 0)),
        (true, ConvParams::conv_transpose2d(4, 24, 1, 1, 32, 4, 1, 0)),
        (true, ConvParams::conv_transpose2d(2, 8, 16, 16, 3, 4, 2, 1)),
    ];
    let gpu = GpuBackend::sim(GemmMode::TF32).unwrap();
    let run = |twin: Cpu| {
        let mut c = Checker::with_gemm_tol(&gpu, 3, TOL_GEMM).against(twin);
        for (t, p) in shapes {
            c.conv(p, t).unwrap();
        }
        c.linear(4, 700, 8).unwrap();
        c.rows
    };
    let rows = run(Cpu::with_tf32_operands());
    let failed: Vec<String> = rows.iter().filter(|r| !r.passed).map(|r| format!("{} {} (max rel {:e})", r.kernel_label(), r.shape, r.max_rel)).collect();
    assert!(failed.is_empty(), "the simulated TF32 kernels differ from TF32 operands: {failed:#?}");
    assert!(run(Cpu::new()).iter().any(|r| !r.passed), "TF32 results within fp32's bounds of the exact twin: no rounding happened");
}

#[test]
fn a_wrong_result_fails_its_row() {
    // The comparison itself must be able to fail.
    let row = compare(vec!["k".into()], "s".into(), &[1.0, 2.0], &[1.0, 2.1], TOL_GEMM);
    assert!(!row.passed);
    let nan = compare(vec!["k".into()], "s".into(), &[1.0], &[f32::NAN], TOL_ELEM);
    assert!(!nan.passed);
}

#[test]
fn a_wrong_kernel_fails_its_row_in_the_simulation() {
    // End to end through the checker: the simulated conv forward with one value moved by
    // a thousandth of the output's scale fails its row, the untouched rows pass.
    let gpu = GpuBackend::sim(GemmMode::FP32).unwrap();
    let mut c = Checker::new(&gpu, 3).tampered(|kernel, out| {
        if kernel == "conv2d_forward_f32" {
            let scale = out.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            out[7] += 1e-3 * scale;
        }
    });
    c.conv(ConvParams::conv2d(1, 3, 13, 11, 5, 4, 2, 1), false).unwrap();
    let failed: Vec<&str> = c.rows.iter().filter(|r| !r.passed).map(|r| r.kernels[0].as_str()).collect();
    assert_eq!(failed, ["conv2d_forward_f32", "conv2d_forward_f32"], "both forward rows (with and without bias), and only they");
}

#[test]
fn the_g_step_keeps_d_frozen_in_the_kernels() {
    // verify::freeze: the G step's backward through D launches no `*_backward_params_*`,
    // bias-gradient or split-K reduce kernel, while the D step (the positive control) does.
    let gpu = GpuBackend::sim(GemmMode::FP32).unwrap();
    let cfg = ModelConfig { width: 4, ..ModelConfig::new(32, 4).unwrap() };
    let f = g_step_freeze(&gpu, &cfg, 2).unwrap();
    println!("D step launched {:?}", f.d_step.kernels);
    println!("G step's D backward launched {:?}", f.d_backward.kernels);
    println!("G step launched {:?}", f.g_step.kernels);
    assert_eq!(f.problems(), Vec::<String>::new());
    for k in ["conv2d_backward_params_f32", "linear_backward_params_f32", "bias_backward_params_f32", "batchnorm2d_backward_params_f32"] {
        assert!(f.d_step.kernels.contains(k), "the D step launched no {k}: the launch record would not see it");
    }
    assert!(f.d_backward.kernels.iter().any(|k| k.starts_with("conv2d_backward_input")), "{:?}", f.d_backward.kernels);
}

#[test]
fn the_projection_discriminator_stays_frozen_in_the_simulated_g_step() {
    // As above with `--text-in-d projection`: the projection kernels run in both steps, and
    // the G step's backward through D launches no parameter-gradient kernel.
    let gpu = GpuBackend::sim(GemmMode::FP32).unwrap();
    let cfg = ModelConfig { text_in_d: TextInD::Projection, ..ModelConfig::new(32, 4).unwrap() };
    let f = g_step_freeze(&gpu, &cfg, 2).unwrap();
    assert_eq!(f.problems(), Vec::<String>::new());
    for k in ["projection_forward_f32", "projection_backward_input_f32", "projection_backward_features_f32"] {
        assert!(f.d_step.kernels.contains(k) && f.d_backward.kernels.contains(k), "{k}: {:?} / {:?}", f.d_step.kernels, f.d_backward.kernels);
    }
    assert!(f.d_step.kernels.contains("linear_backward_params_f32"), "V trains in the D step: {:?}", f.d_step.kernels);
}

/// tests/resume in the simulation: the state that lives on the device (weights, Adam
/// moments) perturbed; the host's (Adam's step, the loader, the noise generator) is the
/// same code on every backend and is perturbed on the CPU (tests/train_e2e.rs).
#[test]
fn resume_continues_the_saved_state_in_the_simulation() {
    resume::check(&GpuBackend::sim(GemmMode::FP32).unwrap(), "sim", resume::Pieces::Device);
}

/// A `--text-in-d projection` run resumed in the simulation equals the straight run bit for bit.
#[test]
fn resume_of_a_projection_run_is_exact_in_the_simulation() {
    resume::check_projection(&GpuBackend::sim(GemmMode::FP32).unwrap(), "sim-projection");
}

/// Every kernel at the awkward shapes in one GEMM mode, against the twin of that mode; the
/// rows. (The selftest runs these in the modes of scripts/dev/cuda-tools.sh; the bf16 modes
/// are checked here.)
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
