//! Twin rows: an op on a checked backend (a GPU or the simulation of its kernels) against
//! its CPU twin in f32, from the same random inputs, compared value by value.

use crate::backend::cpu::{Bf16Kernel, Cpu};
use crate::backend::cuda::{GemmPrecision, GpuBackend};
use crate::backend::Backend;
use crate::rng::Rng;
use anyhow::{Context, Result};
use std::collections::BTreeSet;

/// Tolerance of one row: `abs_of_max * max|cpu| + rel * |cpu|` per value.
#[derive(Clone, Copy, Debug)]
pub struct Tol {
    pub abs_of_max: f64,
    pub rel: f64,
}

/// GEMM-shaped results (convolutions, linear): f32 sums in a different order than the
/// CPU's GEMM.
pub const TOL_GEMM: Tol = Tol { abs_of_max: 2e-5, rel: 1e-4 };
/// GEMM-shaped results with TF32 tensor cores (GemmMode::Tf32): each operand rounded to
/// 10 mantissa bits (relative error up to 2^-11), so about 1e-3 of the terms' size.
pub const TOL_GEMM_TF32: Tol = Tol { abs_of_max: 5e-3, rel: 5e-3 };
/// Reductions to per-channel statistics (batchnorm, losses, bias gradients).
pub const TOL_REDUCE: Tol = Tol { abs_of_max: 2e-5, rel: 1e-4 };
/// Elementwise maps: a few ulp (tanhf, expf differ from Rust's by an ulp or two).
pub const TOL_ELEM: Tol = Tol { abs_of_max: 1e-6, rel: 1e-6 };

#[derive(Clone, Debug)]
pub struct Row {
    /// The kernels the GPU backend launched for this row, main one first.
    pub kernels: Vec<String>,
    pub shape: String,
    pub values: usize,
    pub max_abs: f64,
    /// Largest `|gpu - cpu| / (|cpu| + abs)`, with `abs` the row's absolute tolerance.
    pub max_rel: f64,
    pub tol: Tol,
    pub passed: bool,
}

impl Row {
    pub fn kernel_label(&self) -> String {
        self.kernels.join(" + ")
    }
}

/// Compares `got` with `want` under `tol`.
pub fn compare(kernels: Vec<String>, shape: String, want: &[f32], got: &[f32], tol: Tol) -> Row {
    let scale = want.iter().fold(0.0f64, |m, v| m.max((*v as f64).abs()));
    let abs = (tol.abs_of_max * scale).max(1e-30);
    let (mut max_abs, mut max_rel, mut passed) = (0.0f64, 0.0f64, want.len() == got.len());
    for (w, g) in want.iter().zip(got) {
        let (w, g) = (*w as f64, *g as f64);
        let d = (w - g).abs();
        if !d.is_finite() {
            passed = false;
            max_abs = f64::NAN;
            max_rel = f64::NAN;
            continue;
        }
        max_abs = max_abs.max(d);
        max_rel = max_rel.max(d / (w.abs() + abs));
        passed &= d <= abs + tol.rel * w.abs();
    }
    Row { kernels, shape, values: want.len(), max_abs, max_rel, tol, passed }
}

pub fn up<B: Backend>(be: &B, v: &[f32]) -> Result<B::Buf> {
    let mut b = be.alloc(v.len())?;
    be.upload(&mut b, v)?;
    Ok(b)
}

pub fn down<B: Backend>(be: &B, b: &B::Buf, n: usize) -> Result<Vec<f32>> {
    let mut v = vec![0.0; n];
    be.download(b, &mut v)?;
    Ok(v)
}

pub fn normal(rng: &mut Rng, n: usize, std: f64) -> Vec<f32> {
    let mut v = vec![0.0; n];
    rng.fill_normal(&mut v, 0.0, std);
    v
}

/// Runs the kernel checks and collects one row per case.
pub struct Checker<'a, B: Backend> {
    pub(super) gpu: &'a B,
    pub(super) cpu: Cpu,
    pub(super) rng: Rng,
    gemm_tol: Tol,
    pub rows: Vec<Row>,
}

impl<'a> Checker<'a, GpuBackend> {
    /// The kernels of `gpu` (a GPU or the simulation) against the CPU twins.
    /// In GEMM mode bf16 the twin is the CPU's bf16 backend on its f32 kernel: the f32 GEMM
    /// of the operands rounded to bf16, the same rounding the tiles do. The products of
    /// bf16 values are exact in f32, so what is left is the order of the f32 sums: TOL_GEMM.
    pub fn new(gpu: &'a GpuBackend, seed: u64) -> Self {
        match gpu.gemm_mode().precision {
            GemmPrecision::Tf32 => Checker::with_gemm_tol(gpu, seed, TOL_GEMM_TF32),
            GemmPrecision::Bf16 => Checker::with_twin(gpu, Cpu::with_bf16_kernel(Bf16Kernel::F32).expect("the f32 kernel runs anywhere"), seed, TOL_GEMM),
            GemmPrecision::Fp32 | GemmPrecision::Tf32x3 => Checker::with_gemm_tol(gpu, seed, TOL_GEMM),
        }
    }
}

impl<'a, B: Backend> Checker<'a, B> {
    /// Any backend against the CPU twins, with `gemm_tol` for GEMM-shaped results.
    pub fn with_gemm_tol(gpu: &'a B, seed: u64, gemm_tol: Tol) -> Self {
        Checker::with_twin(gpu, Cpu::new(), seed, gemm_tol)
    }

    /// Any backend against `twin` (a bf16 CPU backend for bf16 GEMMs: the f32 GEMM of the
    /// rounded operands), with `gemm_tol` for GEMM-shaped results.
    pub fn with_twin(gpu: &'a B, twin: Cpu, seed: u64, gemm_tol: Tol) -> Self {
        Checker { gpu, cpu: twin, rng: Rng::new(seed), gemm_tol, rows: Vec::new() }
    }

    /// The tolerance of GEMM-shaped results in the checked backend's GEMM mode.
    pub fn gemm_tol(&self) -> Tol {
        self.gemm_tol
    }

    /// Runs `f` on the GPU backend, then on the CPU, and records the comparison with the
    /// kernels the GPU launched for it (`main` first).
    pub(super) fn case<F, G>(&mut self, main: &str, shape: String, tol: Tol, gpu_run: F, cpu_run: G) -> Result<()>
    where
        F: FnOnce(&B) -> Result<Vec<f32>>,
        G: FnOnce(&Cpu) -> Result<Vec<f32>>,
    {
        self.gpu.take_recent_launches();
        let got = gpu_run(self.gpu).with_context(|| format!("{main} ({shape}) on {}", self.gpu.name()))?;
        let launched: BTreeSet<&str> = self.gpu.take_recent_launches();
        let want = cpu_run(&self.cpu).with_context(|| format!("{main} ({shape}) on the CPU"))?;
        // The op's own kernel first; when the op chose another (a thin variant, say), what ran.
        let others = launched.iter().filter(|k| **k != main && **k != "fill_f32").map(|k| k.to_string());
        let mut kernels = if launched.contains(main) { vec![main.to_string()] } else { Vec::new() };
        kernels.extend(others);
        self.rows.push(compare(kernels, shape, &want, &got, tol));
        Ok(())
    }
}

/// `||got - want|| / ||want||` (Euclidean norms; NaN when anything is not finite).
pub fn rel_l2(want: &[f32], got: &[f32]) -> f64 {
    let (mut d2, mut w2) = (0.0f64, 0.0f64);
    for (w, g) in want.iter().zip(got) {
        let (w, g) = (*w as f64, *g as f64);
        d2 += (w - g) * (w - g);
        w2 += w * w;
    }
    if want.len() != got.len() || !d2.is_finite() {
        return f64::NAN;
    }
    if w2 == 0.0 {
        return if d2 == 0.0 { 0.0 } else { f64::INFINITY };
    }
    (d2 / w2).sqrt()
}
