//! One whole training iteration, on the checked backend and on the CPU in f32 and f64,
//! compared tensor by tensor against the f64 reference.

use super::torch::NOISE_GRAD;
use super::twin::{down, rel_l2, Checker, Row, Tol};
use crate::backend::cpu::{Cpu, Cpu64};
use crate::backend::Backend;
use crate::model::{ModelConfig, Module};
use crate::rng::Rng;
use crate::train::{Gan, Hyper, StepInputs};
use anyhow::{Context, Result};

impl<B: Backend> Checker<'_, B> {
    /// One whole training iteration (D step on real and fake, G step through frozen D,
    /// Adam on both) on the GPU backend and on the CPU (f32 and f64) from the same weights
    /// and data; rows for the losses, and for every parameter tensor its gradient and its
    /// Adam update. In GEMM mode tf32 the CPU's yardstick rounds its GEMM operands to TF32
    /// as the tensor cores do ([`Cpu::with_tf32_operands`]).
    pub fn train_iteration(&mut self, cfg: &ModelConfig, n: usize, seed: u64) -> Result<()> {
        self.train_iteration_with(cfg, &Hyper::default(), n, seed)
    }

    /// `train_iteration` with the loss settings `hp` (the mode-seeking term, say).
    pub fn train_iteration_with(&mut self, cfg: &ModelConfig, hp: &Hyper, n: usize, seed: u64) -> Result<()> {
        self.gpu.take_recent_launches();
        let got = train_iteration_with(self.gpu, cfg, hp, n, seed).with_context(|| format!("training iteration on {}", self.gpu.name()))?;
        let launched = self.gpu.take_recent_launches();
        let tf32 = self.gemm_tol().products > 0.0;
        let yardstick = if tf32 { Cpu::with_tf32_operands() } else { Cpu::new() };
        let cpu32 = train_iteration_with(&yardstick, cfg, hp, n, seed).context("training iteration on the CPU")?;
        let reference = train_iteration_with(&Cpu64::new(), cfg, hp, n, seed).context("training iteration on the CPU in f64")?;
        let mut shape = format!("{} px, width {}, batch {n}", cfg.size, cfg.width);
        if cfg.minibatch_std > 0 {
            shape += &format!(", minibatch std {}", cfg.minibatch_std);
        }
        if cfg.text_in_d != crate::model::TextInD::Tile {
            shape += &format!(", text in D by {}", cfg.text_in_d);
        }
        if cfg.progressive {
            shape += &format!(", progressive at {}", progressive_check_at(cfg).describe());
        }
        if hp.mode_seeking > 0.0 {
            shape += &format!(", mode seeking {}", hp.mode_seeking);
        }
        if tf32 {
            shape += " (yardstick: CPU, TF32 operands)";
        }
        self.rows.extend(iteration_rows(&reference, &cpu32, &got, &shape, launched.len()));
        Ok(())
    }
}

/// Training-iteration tolerances. Value-by-value bounds do not work for a whole model at
/// scale: an activation within rounding of a ReLU kink goes either way in two f32
/// computations, batchnorm's backward pass subtracts nearly equal means, and a first Adam
/// step turns the sign of every tiny gradient into a full step. So each tensor is compared
/// with the f64 CPU reference by its relative L2 error, and the GPU passes when that error
/// is at most TRAIN_ERR_FACTOR times the CPU's own f32 error on the same tensor (the
/// yardstick), plus a relative floor for tensors where that error is near zero, plus an
/// absolute floor of TRAIN_FLOOR_OF_GROUP times the whole group's norm (spread over the
/// tensor's share of the values): a tensor whose gradient is rounding noise (a bias whose
/// effect the next batchnorm removes) has no relative error to speak of. Measured on the
/// CPU at 128 px, batch 64 (tests/cuda_tolerance.rs), f32 against f64 differs by about
/// 3e-2 in the generator's gradients; a GPU may sum in another order, hence the factor.
pub const TRAIN_ERR_FACTOR: f64 = 2.0;
pub const TRAIN_FLOOR_LOSS: f64 = 1e-5;
pub const TRAIN_FLOOR_GRAD: f64 = 1e-4;
/// Parameters are compared by their Adam updates (after - before), the only part that moves.
pub const TRAIN_FLOOR_UPDATE: f64 = 5e-3;
/// The absolute floor of a tensor's row, as a fraction of its group's norm (f32 rounding of
/// the group's scale: a tensor below it is noise in f64 as well).
pub const TRAIN_FLOOR_OF_GROUP: f64 = 1e-6;

/// The bound of one tensor's row: `TRAIN_ERR_FACTOR * yardstick + floor` relative, plus
/// the absolute floor turned relative to this tensor.
fn limit(yardstick: f64, floor: f64, tensor_norm: f64, group_norm: f64, share: f64) -> f64 {
    let abs_floor = TRAIN_FLOOR_OF_GROUP * group_norm * share.sqrt();
    TRAIN_ERR_FACTOR * yardstick + floor + if tensor_norm > 0.0 { abs_floor / tensor_norm } else { f64::INFINITY }
}

/// Which entries of the f64 gradient `grad` the yardstick's gradient `yard` resolves: above
/// `NOISE_GRAD` of the largest (f32 rounding) and above TRAIN_ERR_FACTOR times the
/// yardstick's own largest error on the tensor (TF32 operands err by about 1e-2 of a
/// gradient; an entry below that has no sign to speak of).
fn resolved(grad: &[f32], yard: &[f32]) -> Vec<bool> {
    let scale = grad.iter().fold(0.0f64, |m, v| m.max(v.abs() as f64));
    let err = if yard.len() == grad.len() { grad.iter().zip(yard).fold(0.0f64, |m, (a, b)| m.max((*a as f64 - *b as f64).abs())) } else { 0.0 };
    let floor = (NOISE_GRAD * scale).max(TRAIN_ERR_FACTOR * err);
    grad.iter().map(|g| (*g as f64).abs() > floor).collect()
}

fn norm(v: &[f32]) -> f64 {
    v.iter().map(|x| (*x as f64) * (*x as f64)).sum::<f64>().sqrt()
}

/// The rows comparing one training iteration: `got` (the GPU, f32) and `cpu32` (the CPU in
/// f32, the yardstick), both against `reference` (the CPU in f64): the losses, then for
/// every parameter tensor its gradient (D's from the D step, G's from the G step) and its
/// Adam update. `kernels` is how many distinct kernels the GPU launched. In these rows
/// "rel err" is the relative L2 error against the f64 reference and the tolerance is the
/// bound it must stay under. The tensor rows carry their group ("train: D gradients", ...)
/// so a table can print one line per group while all of its tensors pass.
pub fn iteration_rows(reference: &IterationOut, cpu32: &IterationOut, got: &IterationOut, shape: &str, kernels: usize) -> Vec<Row> {
    let row = |label: String, want: &[f32], got: &[f32], limit: f64, group: Option<&str>| {
        let max_abs = if want.len() == got.len() { want.iter().zip(got).fold(0.0f64, |m, (w, g)| m.max((*w as f64 - *g as f64).abs())) } else { f64::INFINITY };
        let err = rel_l2(want, got);
        Row {
            kernels: vec![label],
            shape: shape.to_string(),
            values: want.len(),
            max_abs,
            max_rel: err,
            tol: Tol { abs_of_max: f64::NAN, rel: limit, products: 0.0 },
            passed: err <= limit,
            group: group.map(str::to_string),
        }
    };
    let mut rows = vec![row(
        format!("train: losses [loss D, D(x), D(G(z)), loss G] ({kernels} kernels)"),
        &reference.losses,
        &got.losses,
        TRAIN_ERR_FACTOR * rel_l2(&reference.losses, &cpu32.losses) + TRAIN_FLOOR_LOSS,
        None,
    )];
    let update = |p: &ParamOut| p.after.iter().zip(&p.before).map(|(a, b)| a - b).collect::<Vec<f32>>();
    let lookup = |o: &IterationOut, name: &str| o.params.iter().find(|p| p.name == name).cloned();
    for (kind, floor) in [("gradients", TRAIN_FLOOR_GRAD), ("Adam updates", TRAIN_FLOOR_UPDATE)] {
        for net in ["discriminator", "generator"] {
            let tensors: Vec<&ParamOut> = reference.params.iter().filter(|p| p.name.starts_with(net)).collect();
            let pick = |p: &ParamOut| if kind == "gradients" { p.grad.clone() } else { update(p) };
            let group_values: Vec<f32> = tensors.iter().flat_map(|p| pick(p)).collect();
            let (group_norm, group_len) = (norm(&group_values), group_values.len().max(1));
            let group = format!("train: {} {kind}", if net == "generator" { "G" } else { "D" });
            for r in tensors {
                let mut want = pick(r);
                // A tensor missing from one side compares as empty, which fails.
                let (mut cpu, mut gpu) =
                    (lookup(cpu32, &r.name).map(|p| pick(&p)).unwrap_or_default(), lookup(got, &r.name).map(|p| pick(&p)).unwrap_or_default());
                let share = want.len() as f64 / group_len as f64;
                let mut label = format!("train: {} {}", if kind == "gradients" { "grad" } else { "update" }, r.name);
                if kind != "gradients" && cpu.len() == want.len() && gpu.len() == want.len() {
                    // Adam's first step is lr * g / (|g| + eps): where the f64 gradient is
                    // within rounding of zero, each side steps by the sign of its own
                    // error. Those entries (`resolved`) are left out; their gradients are
                    // in the gradient rows.
                    let yard_grad = lookup(cpu32, &r.name).map(|p| p.grad).unwrap_or_default();
                    let keep = resolved(&r.grad, &yard_grad);
                    let noise = keep.iter().filter(|k| !**k).count();
                    if noise > 0 {
                        let pick_kept = |v: &[f32]| v.iter().zip(&keep).filter(|(_, k)| **k).map(|(x, _)| *x).collect::<Vec<f32>>();
                        (want, cpu, gpu) = (pick_kept(&want), pick_kept(&cpu), pick_kept(&gpu));
                        label += &format!(" ({noise} unresolved entries left out)");
                    }
                }
                let bound = limit(rel_l2(&want, &cpu), floor, norm(&want), group_norm, share);
                rows.push(row(label, &want, &gpu, bound, Some(&group)));
            }
        }
    }
    rows
}

/// One parameter tensor through one iteration.
#[derive(Clone, Debug)]
pub struct ParamOut {
    pub name: String,
    pub before: Vec<f32>,
    /// D's from the D step, G's from the G step (Adam does not clear them).
    pub grad: Vec<f32>,
    pub after: Vec<f32>,
}

/// What one training iteration produces.
#[derive(Clone, Debug)]
pub struct IterationOut {
    pub losses: Vec<f32>,
    /// Every parameter of G, then of D, by name.
    pub params: Vec<ParamOut>,
}

impl IterationOut {
    /// The tensor named `name`, mutable (the negative controls corrupt one).
    pub fn param_mut(&mut self, name: &str) -> Option<&mut ParamOut> {
        self.params.iter_mut().find(|p| p.name == name)
    }
}

fn values<B: Backend>(be: &B, gan: &Gan<B>) -> Result<Vec<Vec<f32>>> {
    gan.g.params().into_iter().chain(gan.d.params()).map(|p| down(be, &p.value, p.len())).collect()
}

/// One iteration of the training loop itself (`train::Gan::iteration`: D step on real and
/// fake, Adam on D, G step through the frozen D, Adam on G), weights and batch from
/// `seed`. The gradients are read after the iteration: Adam does not clear them, and the
/// frozen D keeps its D-step gradients through the G step. A progressive model runs at
/// `PROGRESSIVE_CHECK_AT`: its last level, mid-fade, where every path is in use (both
/// toRGB and fromRGB, the upsampling, the pooling and the fades, of the fakes and of the
/// reals).
pub fn train_iteration<B: Backend>(be: &B, cfg: &ModelConfig, n: usize, seed: u64) -> Result<IterationOut> {
    train_iteration_with(be, cfg, &Hyper::default(), n, seed)
}

/// `train_iteration` with the loss settings `hp` (no mismatched captions: `hp.matching_aware`
/// must be 0).
pub fn train_iteration_with<B: Backend>(be: &B, cfg: &ModelConfig, hp: &Hyper, n: usize, seed: u64) -> Result<IterationOut> {
    let mut gan = Gan::new(be, cfg, hp, seed)?;
    if cfg.progressive {
        gan.set_progress(progressive_check_at(cfg))?;
    }
    let mut rng = Rng::derive(seed, "batch");
    let mut noise = vec![0.0; n * cfg.noise_dim];
    rng.fill_normal(&mut noise, 0.0, 1.0);
    let mut texts = vec![0.0; n * cfg.text_dim];
    rng.fill_uniform(&mut texts, 0.0, 0.3);
    let mut images = vec![0.0; n * 3 * cfg.size * cfg.size];
    rng.fill_uniform(&mut images, -1.0, 1.0);
    let before = values(be, &gan)?;
    let s = gan.iteration(be, n, &StepInputs { images: &images, texts: &texts, noise: &noise, mismatched: None })?;
    let losses = vec![s.loss_d, s.d_real, s.d_fake, s.loss_g];
    let after = values(be, &gan)?;
    let mut params = Vec::new();
    for ((p, before), after) in gan.g.params().into_iter().chain(gan.d.params()).zip(before).zip(after) {
        params.push(ParamOut { name: p.name.clone(), before, grad: down(be, &p.grad, p.len())?, after });
    }
    be.synchronize()?;
    Ok(IterationOut { losses, params })
}

/// Where `train_iteration` runs a progressive model: its last level, faded in halfway.
pub fn progressive_check_at(cfg: &ModelConfig) -> crate::model::Progress {
    crate::model::Progress { level: cfg.levels() - 1, alpha: 0.5 }
}
