//! The weight-freeze flag through the training loop's G step, counted: the op calls every
//! backend records (`Core::timed`) and, on a GPU backend or the simulation, the kernels it
//! launched (`take_recent_launches`). A frozen backward runs `backward_input` only: no
//! `*_backward_params` op, no parameter-gradient kernel (`*_backward_params_*`, the bias
//! gradient's `bias_backward_params_f32` included) and no split-K reduction
//! (`gemm_splitk_reduce_f32`, the weight gradients' second pass).

use super::twin::down;
use crate::backend::Backend;
use crate::model::{ModelConfig, Module};
use crate::train::{synthetic_batch, Gan, Hyper, StepInputs};
use anyhow::Result;
use std::collections::{BTreeMap, BTreeSet};

/// What one stretch of work ran: op calls by name, and the kernels launched (none on the CPU).
#[derive(Clone, Debug, Default)]
pub struct Observed {
    pub ops: BTreeMap<&'static str, u64>,
    pub kernels: BTreeSet<&'static str>,
}

impl Observed {
    pub fn calls(&self, op: &str) -> u64 {
        self.ops.get(op).copied().unwrap_or(0)
    }

    /// Every parameter-gradient op and kernel in it: what a frozen backward must not run.
    pub fn param_work(&self) -> Vec<&'static str> {
        let ops = self.ops.iter().filter(|(k, n)| **n > 0 && k.ends_with("_backward_params")).map(|(k, _)| *k);
        let kernels = self.kernels.iter().copied().filter(|k| k.contains("_backward_params") || *k == "gemm_splitk_reduce_f32");
        ops.chain(kernels).collect()
    }
}

/// Runs `f` and returns what it ran on `be`.
pub fn observe<B: Backend, R>(be: &B, f: impl FnOnce() -> Result<R>) -> Result<(R, Observed)> {
    let before = be.profiler().counts();
    be.take_recent_launches();
    let r = f()?;
    let kernels = be.take_recent_launches();
    let ops = be.profiler().counts().into_iter().map(|(k, n)| (k, n - before.get(k).copied().unwrap_or(0))).filter(|(_, n)| *n > 0).collect();
    Ok((r, Observed { ops, kernels }))
}

/// The training loop's steps on one batch, observed.
pub struct GStepFreeze {
    /// The D step (`Gan::d_step_grads`, matching-aware): D's parameters train.
    pub d_step: Observed,
    /// The G step's backward through the frozen D (`Gan::g_step_image_grad`).
    pub d_backward: Observed,
    /// The whole G step (`Gan::g_step_grads`): D frozen, G's parameters train.
    pub g_step: Observed,
    /// D's parameter gradients after the G step are bit for bit those of the D step.
    pub d_grads_kept: bool,
    /// G's transposed convolutions and batchnorms: the parameter ops the G step runs.
    pub g_convs: u64,
    pub g_norms: u64,
    /// D has the text projection's bias (tiled text; the projection discriminator's
    /// embedding has none).
    pub d_text_bias: bool,
}

/// Runs the D step and then the G step of `train::Gan` on `be` (model `cfg`, batch `n`,
/// the matching-aware loss on so every D path runs), observing each.
pub fn g_step_freeze<B: Backend>(be: &B, cfg: &ModelConfig, n: usize) -> Result<GStepFreeze> {
    let mut gan = Gan::new(be, cfg, &Hyper { matching_aware: 0.5, ..Hyper::default() }, 3)?;
    let (images, texts, noise) = synthetic_batch(cfg, n, 5);
    let mut mismatched = texts.clone();
    mismatched.rotate_left(cfg.text_dim);
    let inputs = StepInputs { images: &images, texts: &texts, noise: &noise, mismatched: Some(&mismatched) };
    let (fake, d_step) = observe(be, || gan.d_step_grads(be, n, &inputs))?;
    let d_grads = |gan: &Gan<B>| -> Result<Vec<Vec<f32>>> { gan.d.params().into_iter().map(|p| down(be, &p.grad, p.len())).collect() };
    let before = d_grads(&gan)?;
    let (_, d_backward) = observe(be, || gan.g_step_image_grad(be, &fake))?;
    let (_, g_step) = observe(be, || gan.g_step_grads(be, &fake))?;
    let after = d_grads(&gan)?;
    let d_grads_kept = before.iter().zip(&after).all(|(a, b)| a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits()));
    let g_convs = gan.g.params().iter().filter(|p| p.shape.len() == 4).count() as u64;
    let g_norms = gan.g.params().iter().filter(|p| p.shape.len() == 1 && p.name.ends_with(".weight")).count() as u64;
    let d_text_bias = gan.d.params().iter().any(|p| p.name.starts_with("discriminator.text.") && p.name.ends_with(".bias"));
    Ok(GStepFreeze { d_step, d_backward, g_step, d_grads_kept, g_convs, g_norms, d_text_bias })
}

impl GStepFreeze {
    /// Every way the G step broke the freeze, or the check could not have seen it: empty
    /// when D's backward in the G step ran no parameter-gradient work (while the D step,
    /// the positive control, did), the whole G step ran exactly G's parameter ops and none
    /// of D's, and D's gradients kept their values.
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        let work = self.d_backward.param_work();
        if !work.is_empty() {
            p.push(format!("the frozen D's backward in the G step ran parameter-gradient work: {work:?}"));
        }
        if self.d_backward.calls("conv2d_backward_input") == 0 {
            p.push("the frozen D's backward ran no conv2d_backward_input: no image gradient flowed".into());
        }
        // The positive control: unfrozen, the same counting sees D's parameter work.
        for op in ["conv2d_backward_params", "linear_backward_params", "batchnorm2d_backward_params"] {
            if self.d_step.calls(op) == 0 {
                p.push(format!("the D step ran no {op}: the counting would not see it"));
            }
        }
        if self.d_text_bias && !self.d_step.kernels.is_empty() && !self.d_step.kernels.contains("bias_backward_params_f32") {
            p.push("the D step launched no bias_backward_params_f32 (the text projection's bias)".into());
        }
        // The whole G step: G's transposed convolutions and batchnorms, nothing of D's (D
        // alone has conv2d, linear and biases).
        for (op, want) in [
            ("conv_transpose2d_backward_params", self.g_convs),
            ("batchnorm2d_backward_params", self.g_norms),
            ("conv2d_backward_params", 0),
            ("linear_backward_params", 0),
        ] {
            if self.g_step.calls(op) != want {
                p.push(format!("the G step ran {op} {} times, G has {want} such layers", self.g_step.calls(op)));
            }
        }
        for k in ["conv2d_backward_params_f32", "linear_backward_params_f32", "bias_backward_params_f32"] {
            if self.g_step.kernels.contains(k) {
                p.push(format!("the G step launched {k}, which only D's layers use"));
            }
        }
        if !self.d_grads_kept {
            p.push("D's parameter gradients changed in the G step".into());
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cpu::Cpu;
    use crate::verify::model::small_config;

    #[test]
    fn the_g_step_keeps_d_frozen_on_the_cpu() {
        let f = g_step_freeze(&Cpu::new(), &small_config(), 2).unwrap();
        assert_eq!(f.problems(), Vec::<String>::new());
        // The negative control: an unfrozen D backward (the D step's) in the G step's place
        // is reported.
        let unfrozen = GStepFreeze { d_backward: f.d_step.clone(), ..f };
        let problems = unfrozen.problems();
        assert!(problems.iter().any(|p| p.contains("ran parameter-gradient work") && p.contains("conv2d_backward_params")), "{problems:?}");
    }

    #[test]
    fn the_g_step_keeps_a_projection_discriminator_frozen_on_the_cpu() {
        use crate::model::TextInD;
        let cfg = ModelConfig { text_in_d: TextInD::Projection, ..small_config() };
        let f = g_step_freeze(&Cpu::new(), &cfg, 2).unwrap();
        assert_eq!(f.problems(), Vec::<String>::new());
        // The projection ran in both steps, and V (a linear without bias) trained in the D step only.
        for op in ["projection_forward", "projection_backward_input", "projection_backward_features"] {
            assert!(f.d_step.calls(op) > 0 && f.d_backward.calls(op) > 0, "{op}: {:?} {:?}", f.d_step.ops, f.d_backward.ops);
        }
        assert!(!f.d_text_bias);
        let unfrozen = GStepFreeze { d_backward: f.d_step.clone(), ..f };
        assert!(unfrozen.problems().iter().any(|p| p.contains("linear_backward_params")), "{:?}", unfrozen.problems());
    }
}
