//! Twin rows: an op on a checked backend (a GPU or the simulation of its kernels) against
//! its CPU twin in f32, from the same random inputs, compared value by value.

use crate::backend::cpu::{Bf16Kernel, Cpu};
use crate::backend::cuda::{GemmPrecision, GpuBackend};
use crate::backend::Backend;
use crate::rng::Rng;
use anyhow::{Context, Result};
use std::collections::BTreeSet;

/// Tolerance of one row: `abs_of_max * max|cpu| + rel * |cpu| + products * S` per value,
/// where `S` is that value's sum of |products| (GEMM results in TF32 only; see
/// [`TOL_GEMM_TF32`]).
#[derive(Clone, Copy, Debug)]
pub struct Tol {
    pub abs_of_max: f64,
    pub rel: f64,
    pub products: f64,
}

/// GEMM-shaped results (convolutions, linear): f32 sums in a different order than the
/// CPU's GEMM.
pub const TOL_GEMM: Tol = Tol { abs_of_max: 2e-5, rel: 1e-4, products: 0.0 };
/// The error model of GEMM-shaped results on TF32 tensor cores (GemmMode::Tf32, tf32 and
/// tf32-async). TF32 keeps 10 explicit mantissa bits: each operand is rounded to nearest
/// with a relative error of at most u = 2^-11 (kernels/gemm.cuh, `tf32_operand`). The
/// product of two rounded operands is then off by at most `((1 + u)^2 - 1) |a b| =
/// (2^-10 + 2^-22) |a b|`, and is exact in the fp32 accumulator's precision, so a length-K
/// dot product is off by at most `(2^-10 + 2^-22) S` with `S = sum_k |a_k b_k|`, plus the
/// rounding of its f32 sums, which TOL_GEMM bounds for fp32. Each value is held to both:
/// TOL_GEMM's terms plus `TF32_PRODUCTS * S`, where the checker computes `S` with the CPU
/// twin on the operands' absolute values (`Checker::products`). A kernel that skipped the
/// rounding passes (the bound is an upper one); one whose error grows past the rounding of
/// its operands (a wrong fragment, an unrounded operand mixed with a rounded one, a lost
/// term) fails. Bias terms and bias gradients are fp32 (no `S`).
pub const TF32_PRODUCTS: f64 = 1.0 / 1024.0 + 1.0 / 4_194_304.0;
pub const TOL_GEMM_TF32: Tol = Tol { products: TF32_PRODUCTS, ..TOL_GEMM };
/// Reductions to per-channel statistics (batchnorm, losses, bias gradients).
pub const TOL_REDUCE: Tol = Tol { abs_of_max: 2e-5, rel: 1e-4, products: 0.0 };
/// Elementwise maps: a few ulp (tanhf, expf differ from Rust's by an ulp or two).
pub const TOL_ELEM: Tol = Tol { abs_of_max: 1e-6, rel: 1e-6, products: 0.0 };
/// Values that are copies (concat, fill): bit for bit.
pub const TOL_EXACT: Tol = Tol { abs_of_max: 0.0, rel: 0.0, products: 0.0 };

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
    /// Rows of one group (a whole iteration's gradients, say) that a table may print as one
    /// summary line while they all pass.
    pub group: Option<String>,
}

impl Row {
    pub fn kernel_label(&self) -> String {
        self.kernels.join(" + ")
    }

    /// The tolerance as one word (scripts/gpu-check.sh makes a markdown table of the rows).
    pub fn tol_label(&self) -> String {
        let t = &self.tol;
        if t.abs_of_max.is_nan() {
            return format!("relL2:{:.1e}", t.rel);
        }
        let mut s = format!("{:.0e}*max+{:.0e}*ref", t.abs_of_max, t.rel);
        if t.products == TF32_PRODUCTS {
            s += "+tf32*S";
        } else if t.products > 0.0 {
            s += &format!("+{:.0e}*S", t.products);
        }
        s
    }
}

/// Compares `got` with `want` under `tol`.
pub fn compare(kernels: Vec<String>, shape: String, want: &[f32], got: &[f32], tol: Tol) -> Row {
    compare_products(kernels, shape, want, got, tol, &[])
}

/// Compares `got` with `want` under `tol`, `products[i]` being value i's sum of |products|
/// (see [`TOL_GEMM_TF32`]): required when `tol.products > 0`, else ignored.
pub fn compare_products(kernels: Vec<String>, shape: String, want: &[f32], got: &[f32], tol: Tol, products: &[f64]) -> Row {
    let scale = want.iter().fold(0.0f64, |m, v| m.max((*v as f64).abs()));
    let abs = (tol.abs_of_max * scale).max(1e-30);
    let with_products = tol.products > 0.0;
    let (mut max_abs, mut max_rel) = (0.0f64, 0.0f64);
    let mut passed = want.len() == got.len() && (!with_products || products.len() == want.len());
    for (i, (w, g)) in want.iter().zip(got).enumerate() {
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
        let s = if with_products { products.get(i).copied().unwrap_or(f64::NAN) } else { 0.0 };
        passed &= d <= abs + tol.rel * w.abs() + tol.products * s;
    }
    Row { kernels, shape, values: want.len(), max_abs, max_rel, tol, passed, group: None }
}

/// One output of a twin case: `label` (appended to the row's shape), how many values, its
/// tolerance and, for a GEMM result in TF32, each value's sum of |products|.
pub struct Part {
    pub label: &'static str,
    pub len: usize,
    pub tol: Tol,
    pub products: Option<Vec<f64>>,
}

impl Part {
    pub fn new(label: &'static str, len: usize, tol: Tol) -> Part {
        Part { label, len, tol, products: None }
    }
    /// A GEMM result: `products` as [`Checker::products`] returns them.
    pub fn gemm(label: &'static str, len: usize, tol: Tol, products: Option<Vec<f64>>) -> Part {
        Part { label, len, tol, products }
    }
}

/// The rows of one case: `want` and `got` cut into `parts`, one row each, so every output
/// is held to its own scale (a per-channel sum of 265 beside a gradient of 1 would let
/// the gradient be wrong by far more than its own rounding).
pub fn compare_parts(kernels: &[String], shape: &str, want: &[f32], got: &[f32], parts: &[Part]) -> Result<Vec<Row>> {
    let total: usize = parts.iter().map(|p| p.len).sum();
    anyhow::ensure!(total == want.len(), "{shape}: the parts cover {total} values, the case returned {}", want.len());
    let mut at = 0;
    let mut rows = Vec::new();
    for p in parts {
        let end = at + p.len;
        let shape = if p.label.is_empty() { shape.to_string() } else { format!("{shape} {}", p.label) };
        let got_part = got.get(at..end).unwrap_or(&[]);
        rows.push(compare_products(kernels.to_vec(), shape, &want[at..end], got_part, p.tol, p.products.as_deref().unwrap_or(&[])));
        at = end;
    }
    if got.len() != want.len() {
        rows.iter_mut().for_each(|r| r.passed = false);
    }
    Ok(rows)
}

/// A fresh output buffer of `len` values for an op that writes every one of them, filled
/// with NaN first: `Core::alloc` zeroes, so a kernel that skipped a value would leave a zero
/// that may equal the twin's; a NaN it leaves fails its row (`compare` fails on NaN). Used
/// on both sides of a twin row, so a twin that skipped a value fails too. Outputs an op
/// accumulates into (weight gradients, running statistics) start from real values instead.
pub fn poisoned<B: Backend>(be: &B, len: usize) -> Result<B::Buf> {
    let mut b = be.alloc(len)?;
    be.fill(&mut b, f32::NAN)?;
    Ok(b)
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

/// Changes a checked backend's output of one op before it is compared: the negative
/// controls use it to show that a row fails on a wrong kernel (see the tests).
pub type Tamper = Box<dyn Fn(&str, &mut Vec<f32>)>;

/// Runs the kernel checks and collects one row per output of each case.
pub struct Checker<'a, B: Backend> {
    pub(super) gpu: &'a B,
    pub(super) cpu: Cpu,
    pub(super) rng: Rng,
    gemm_tol: Tol,
    tamper: Option<Tamper>,
    pub rows: Vec<Row>,
}

impl<'a> Checker<'a, GpuBackend> {
    /// The kernels of `gpu` (a GPU or the simulation) against the CPU twins, with the GEMM
    /// tolerance of its GEMM mode.
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
    /// rounded operands; the twin with TF32 operands), with `gemm_tol` for GEMM-shaped results.
    pub fn with_twin(gpu: &'a B, twin: Cpu, seed: u64, gemm_tol: Tol) -> Self {
        Checker { gpu, cpu: twin, rng: Rng::new(seed), gemm_tol, tamper: None, rows: Vec::new() }
    }

    /// Compares against `cpu` instead of the plain CPU twin (the twin with TF32 operands,
    /// say).
    pub fn against(mut self, cpu: Cpu) -> Self {
        self.cpu = cpu;
        self
    }

    /// The checked backend's outputs pass through `f(kernel, outputs)` before comparison:
    /// a deliberately wrong kernel, for negative controls.
    pub fn tampered(mut self, f: impl Fn(&str, &mut Vec<f32>) + 'static) -> Self {
        self.tamper = Some(Box::new(f));
        self
    }

    /// The tolerance of GEMM-shaped results in the checked backend's GEMM mode.
    pub fn gemm_tol(&self) -> Tol {
        self.gemm_tol
    }

    /// Each value's sum of |products| for the TF32 bound, when the GEMM tolerance has one:
    /// `run` is the op on the CPU twin with every GEMM operand replaced by its absolute
    /// value (and nothing added: no bias, a zero accumulator).
    pub(super) fn products(&self, run: impl FnOnce(&Cpu) -> Result<Vec<f32>>) -> Result<Option<Vec<f64>>> {
        if self.gemm_tol.products == 0.0 {
            return Ok(None);
        }
        Ok(Some(run(&self.cpu)?.into_iter().map(f64::from).collect()))
    }

    /// Runs `f` on the GPU backend, then on the CPU, and records one row (the whole output
    /// under `tol`) with the kernels the GPU launched for it (`main` first).
    pub(super) fn case<F, G>(&mut self, main: &str, shape: String, tol: Tol, gpu_run: F, cpu_run: G) -> Result<()>
    where
        F: FnOnce(&B) -> Result<Vec<f32>>,
        G: FnOnce(&Cpu) -> Result<Vec<f32>>,
    {
        self.case_parts(main, shape, |len| vec![Part::new("", len, tol)], gpu_run, cpu_run)
    }

    /// `case` with one row per output: `parts(len)` cuts the `len` values of the case.
    pub(super) fn case_parts<F, G>(&mut self, main: &str, shape: String, parts: impl FnOnce(usize) -> Vec<Part>, gpu_run: F, cpu_run: G) -> Result<()>
    where
        F: FnOnce(&B) -> Result<Vec<f32>>,
        G: FnOnce(&Cpu) -> Result<Vec<f32>>,
    {
        self.gpu.take_recent_launches();
        let mut got = gpu_run(self.gpu).with_context(|| format!("{main} ({shape}) on {}", self.gpu.name()))?;
        let launched: BTreeSet<&str> = self.gpu.take_recent_launches();
        if let Some(t) = &self.tamper {
            t(main, &mut got);
        }
        let want = cpu_run(&self.cpu).with_context(|| format!("{main} ({shape}) on the CPU"))?;
        // The op's own kernel first; when the op chose another (a thin variant, say), what ran.
        let others = launched.iter().filter(|k| **k != main && **k != "fill_f32").map(|k| k.to_string());
        let mut kernels = if launched.contains(main) { vec![main.to_string()] } else { Vec::new() };
        kernels.extend(others);
        let rows = compare_parts(&kernels, &shape, &want, &got, &parts(want.len()))?;
        self.rows.extend(rows);
        Ok(())
    }
}

/// `v` with every value replaced by its magnitude (the operands of [`Checker::products`]).
pub fn abs(v: &[f32]) -> Vec<f32> {
    v.iter().map(|x| x.abs()).collect()
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::prelude::*;
    use crate::backend::{AdamParams, BatchNormParams, ConvParams};

    /// The case of one channel of 70001 values: batchnorm's dx (about 1) beside the
    /// per-channel sums (about 265). dx without its mean term (`gamma invstd mean(g)`,
    /// about 2.5e-3 here) hides under a bound scaled by the sums, and fails its own row.
    #[test]
    fn batchnorm_dx_without_its_mean_term_fails_its_own_row() {
        let cpu = Cpu::new();
        let mut rng = Rng::new(4);
        let p = BatchNormParams::new(1, 1, 70001, 1e-5, 0.1);
        let len = p.len();
        let x = normal(&mut rng, len, 1.5);
        let dy = normal(&mut rng, len, 1.0);
        let (gamma, beta) = (vec![1.1f32], vec![0.2f32]);
        let (mut rm, mut rv, mut mean, mut invstd, mut y) = (vec![0.0], vec![1.0], vec![0.0], vec![0.0], vec![0.0; len]);
        cpu.batchnorm2d_forward_train(&p, &x, &gamma, &beta, &mut rm, &mut rv, &mut mean, &mut invstd, &mut y).unwrap();
        let (mut sums, mut dx) = (vec![0.0; 2], vec![0.0; len]);
        cpu.batchnorm2d_backward_input(&p, &x, &y, &dy, &gamma, &mean, &invstd, &mut sums, &mut dx).unwrap();
        let want: Vec<f32> = dx.iter().chain(&sums).copied().collect();
        // The mean term, from its definition: gamma * invstd * sum(dy) / count.
        let mean_term = gamma[0] as f64 * invstd[0] as f64 * dy.iter().map(|v| *v as f64).sum::<f64>() / len as f64;
        let mut got = want.clone();
        got[..len].iter_mut().for_each(|v| *v += mean_term as f32);
        assert!(mean_term.abs() > 1e-4, "the mean term {mean_term:e} is too small to show anything");
        let joined = compare(vec!["bn".into()], "joined".into(), &want, &got, TOL_REDUCE);
        assert!(joined.passed, "as one row the wrong dx passes (the reason for per-tensor rows): {joined:?}");
        let parts = [Part::new("dx", len, TOL_REDUCE), Part::new("sums", 2, TOL_REDUCE)];
        let rows = compare_parts(&["bn".into()], "n1 c1 hw70001", &want, &got, &parts).unwrap();
        assert_eq!(rows.iter().map(|r| (r.shape.as_str(), r.passed)).collect::<Vec<_>>(), [("n1 c1 hw70001 dx", false), ("n1 c1 hw70001 sums", true)]);
    }

    /// Adam's v (about 1e-4) beside the parameters (about 0.02): v off by 2e-4 of itself
    /// (a beta2 of 0.9998 for 0.999 on the old v moves it about that much) hides under a
    /// bound scaled by the parameters, and fails its own row.
    #[test]
    fn a_wrong_adam_v_fails_its_own_row() {
        let cpu = Cpu::new();
        let mut rng = Rng::new(5);
        let len = 1000;
        let p = AdamParams { len: len as i32, lr: 2e-4, beta1: 0.5, beta2: 0.999, eps: 1e-8, bc1: 0.5, bc2: 0.001 };
        let (mut param, grad, mut m) = (normal(&mut rng, len, 0.02), normal(&mut rng, len, 1e-2), normal(&mut rng, len, 1e-2));
        let mut v: Vec<f32> = normal(&mut rng, len, 1e-4).iter().map(|x| x.abs()).collect();
        cpu.adam_step(&p, &mut param, &grad, &mut m, &mut v).unwrap();
        let want: Vec<f32> = param.iter().chain(&m).chain(&v).copied().collect();
        let mut got = want.clone();
        got[2 * len..].iter_mut().for_each(|x| *x *= 1.0 + 2e-4);
        let tol = Tol { abs_of_max: 1e-6, rel: 1e-5, products: 0.0 };
        assert!(compare(vec!["adam".into()], "joined".into(), &want, &got, tol).passed, "as one row the wrong v passes");
        let parts = [Part::new("param", len, tol), Part::new("m", len, tol), Part::new("v", len, tol)];
        let rows = compare_parts(&["adam".into()], "len 1000", &want, &got, &parts).unwrap();
        assert_eq!(rows.iter().map(|r| r.passed).collect::<Vec<_>>(), [true, true, false]);
    }

    /// The negative control of `poisoned`: an op that stops one value short (here the CPU
    /// relu told one value fewer) passes its row on a zeroed buffer when the skipped value
    /// is zero anyway, and fails on a poisoned one.
    #[test]
    fn an_unwritten_output_value_fails_its_row() {
        use crate::backend::ActParams;
        let cpu = Cpu::new();
        let x = vec![0.5f32, 1.0, -2.0]; // relu(-2) = 0: what a zeroed buffer already holds
        let mut want = vec![0.0f32; 3];
        cpu.relu_forward(&ActParams { len: 3, slope: 0.0 }, &x, &mut want).unwrap();
        let short = |mut y: Vec<f32>| {
            cpu.relu_forward(&ActParams { len: 2, slope: 0.0 }, &x, &mut y).unwrap();
            y
        };
        let zeroed = compare(vec!["relu".into()], "zeroed".into(), &want, &short(cpu.alloc(3).unwrap()), TOL_ELEM);
        assert!(zeroed.passed, "on a zeroed buffer the skipped value passes unseen (the reason for poisoning)");
        let poison = compare(vec!["relu".into()], "poisoned".into(), &want, &short(poisoned(&cpu, 3).unwrap()), TOL_ELEM);
        assert!(!poison.passed, "a value left unwritten in a poisoned buffer must fail its row");
    }

    #[test]
    fn parts_must_cover_the_case() {
        assert!(compare_parts(&[], "s", &[1.0, 2.0], &[1.0, 2.0], &[Part::new("a", 1, TOL_ELEM)]).is_err());
        let rows = compare_parts(&[], "s", &[1.0, 2.0], &[1.0], &[Part::new("a", 1, TOL_ELEM), Part::new("b", 1, TOL_ELEM)]).unwrap();
        assert!(rows.iter().all(|r| !r.passed), "a short result fails every part");
    }

    /// The TF32 error model against an independent TF32 emulation: the CPU twin with its
    /// GEMM operands rounded to TF32 (`Cpu::with_tf32_operands`) passes every GEMM row
    /// under TOL_GEMM_TF32, fails some under fp32's TOL_GEMM (the rounding shows, so the
    /// model is needed), and a value past the bound fails.
    #[test]
    fn the_tf32_error_model_holds_for_tf32_operands_and_no_further() {
        let tf32 = Cpu::with_tf32_operands();
        let run = |tol: Tol| {
            let mut c = Checker::with_gemm_tol(&tf32, 9, tol);
            c.conv(ConvParams::conv2d(3, 4, 7, 9, 66, 3, 1, 1), false).unwrap();
            c.conv(ConvParams::conv2d(1, 512, 8, 8, 16, 4, 2, 1), false).unwrap();
            c.conv(ConvParams::conv_transpose2d(2, 8, 16, 16, 3, 4, 2, 1), true).unwrap();
            c.linear(3, 8192, 70).unwrap();
            c.rows
        };
        let rows = run(TOL_GEMM_TF32);
        let failed: Vec<String> = rows.iter().filter(|r| !r.passed).map(|r| format!("{} {}", r.kernel_label(), r.shape)).collect();
        assert!(failed.is_empty(), "TF32 operands broke the TF32 model: {failed:?}");
        assert!(run(TOL_GEMM).iter().any(|r| !r.passed), "TF32 operands passed fp32's bounds: the rounding did not happen");
        // The bound itself: 0.9 of it passes, 1.5 of it fails.
        let (want, s) = ([1.0f32, -2.0, 0.5], [300.0f64, 10.0, 2000.0]);
        let tol = Tol { abs_of_max: 0.0, rel: 0.0, products: TF32_PRODUCTS };
        let moved = |k: f64| want.iter().zip(&s).map(|(w, s)| (*w as f64 + k * TF32_PRODUCTS * s) as f32).collect::<Vec<f32>>();
        assert!(compare_products(vec![], "s".into(), &want, &moved(0.9), tol, &s).passed);
        assert!(!compare_products(vec![], "s".into(), &want, &moved(1.5), tol, &s).passed);
        assert!(!compare_products(vec![], "s".into(), &want, &want, tol, &[]).passed, "a TF32 bound without its sums fails");
    }
}
