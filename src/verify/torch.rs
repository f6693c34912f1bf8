//! Same numbers as PyTorch: one training iteration of the small model (32 px, width 8,
//! batch 4) on any backend against the reference state that `scripts/dev/torch_reference.py`
//! wrote with PyTorch in float64 (stored as f32, so the reference is exact to f32 rounding).
//! The reference, `src/verify/torch_reference.safetensors`, is part of the verification
//! suite and embedded in the library ([`EMBEDDED`]), so `gan-engine selftest --device
//! sim|cuda` compares without the source tree; `tests/torch_reference.rs` runs the same
//! comparison on the CPU (and can be pointed at another file).
//!
//! Loaded into our `Gan` through `Gan::import`: the weights and batchnorm running
//! statistics. Compared, each with its own tolerance `|ours - ref| <= atol + rtol * |ref|`:
//! the G output, D's logits on the real and the fake batch, both losses, D(x) and
//! D(G(z)), every D parameter gradient of the D step and every G parameter gradient of
//! the G step (before Adam), D's logits in the G step (after the D Adam step), every
//! parameter after its Adam step, and every running statistic after the iteration.
//!
//! A convention mismatch (transposed-conv padding, batchnorm eps or momentum, BCE
//! reduction, concat order, the order of the D Adam step and the G step) moves some of
//! these by far more than f32 rounding; `scripts/dev/torch_reference.py --perturb ...`
//! writes such a wrong reference.

use crate::backend::Backend;
use crate::model::{ModelConfig, Module};
use crate::nn::{Mode, Shape, Tensor};
use crate::train::checkpoint::NamedTensor;
use crate::train::{Gan, Hyper, StepInputs};
use anyhow::{ensure, Context, Result};
use safetensors::tensor::{Dtype, SafeTensors};
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// The committed reference file, `src/verify/torch_reference.safetensors`.
pub const EMBEDDED: &[u8] = include_bytes!("torch_reference.safetensors");

/// A reference state: model configuration, batch size, and every tensor by name.
pub struct Reference {
    pub cfg: ModelConfig,
    pub batch: usize,
    /// What wrote it (PyTorch version, precision), from the file's metadata.
    pub note: String,
    pub tensors: BTreeMap<String, (Vec<usize>, Vec<f32>)>,
}

impl Reference {
    pub fn parse(bytes: &[u8]) -> Result<Reference> {
        let (_, header) = SafeTensors::read_metadata(bytes).map_err(|e| anyhow::anyhow!("not a safetensors file: {e:?}"))?;
        let meta = header.metadata().clone().context("the reference has no metadata: regenerate it with scripts/dev/torch_reference.py")?;
        let get = |k: &str| meta.get(k).with_context(|| format!("the reference metadata has no `{k}`"));
        let cfg: ModelConfig = serde_json::from_str(get("config")?).context("reference metadata `config`")?;
        let batch: usize = get("batch")?.parse().context("reference metadata `batch`")?;
        let note = meta.get("note").cloned().unwrap_or_default();
        let st = SafeTensors::deserialize(bytes).map_err(|e| anyhow::anyhow!("{e:?}"))?;
        let mut tensors = BTreeMap::new();
        for (name, view) in st.tensors() {
            ensure!(view.dtype() == Dtype::F32, "reference tensor {name} is {:?}, not F32", view.dtype());
            let data = view.data().chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
            tensors.insert(name, (view.shape().to_vec(), data));
        }
        Ok(Reference { cfg, batch, note, tensors })
    }

    /// The reference embedded in the library.
    pub fn embedded() -> Result<Reference> {
        Reference::parse(EMBEDDED).context("the embedded src/verify/torch_reference.safetensors")
    }

    pub fn get(&self, name: &str) -> Result<&[f32]> {
        Ok(&self.tensors.get(name).with_context(|| format!("the reference has no tensor {name}"))?.1)
    }

    /// Every tensor under `prefix.`, with the prefix removed.
    pub fn group(&self, prefix: &str) -> Vec<NamedTensor> {
        let p = format!("{prefix}.");
        self.tensors
            .iter()
            .filter_map(|(k, (shape, data))| k.strip_prefix(&p).map(|name| NamedTensor { name: name.to_string(), shape: shape.clone(), data: data.clone() }))
            .collect()
    }

    /// "32 px, width 8, batch 4".
    pub fn shape(&self) -> String {
        format!("{} px, width {}, batch {}", self.cfg.size, self.cfg.width, self.batch)
    }
}

/// `|ours - ref| <= atol + rtol * |ref|`, per element.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Tol {
    pub atol: f64,
    pub rtol: f64,
}

impl Tol {
    const fn scaled(self, k: f64) -> Tol {
        Tol { atol: self.atol * k, rtol: self.rtol * k }
    }
}

/// The bounds of one comparison, by kind of tensor.
#[derive(Clone, Copy, Debug)]
pub struct Tolerances {
    /// Forward values (G output, logits, losses, probabilities).
    pub forward: Tol,
    /// Parameter gradients: the absolute part is `grad_scale * max |ref|` of each tensor.
    pub grad_scale: f64,
    pub grad_rtol: f64,
    /// Parameters after one Adam step.
    pub after_adam: Tol,
    /// Batchnorm running statistics after the iteration.
    pub running: Tol,
}

impl Tolerances {
    /// Every bound multiplied by `k`.
    pub const fn scaled(self, k: f64) -> Tolerances {
        Tolerances {
            forward: self.forward.scaled(k),
            grad_scale: self.grad_scale * k,
            grad_rtol: self.grad_rtol * k,
            after_adam: self.after_adam.scaled(k),
            running: self.running.scaled(k),
        }
    }
}

/// The CPU backend in f32.
///
/// Forward values: f32 rounding through a few layers, a few 1e-7 relative. Gradients:
/// backprop through batchnorm at batch 4 cancels terms, so errors are relative to the
/// tensor's scale rather than to each entry. Weights after one Adam step move by about
/// lr = 2e-4 each; an error of 1e-3 of that step is 2e-7. Running statistics are averages of
/// batch statistics, forward precision.
pub const CPU: Tolerances = Tolerances {
    forward: Tol { atol: 1e-5, rtol: 1e-4 },
    grad_scale: 1e-4,
    grad_rtol: 1e-3,
    after_adam: Tol { atol: 2e-7, rtol: 1e-6 },
    running: Tol { atol: 1e-5, rtol: 1e-4 },
};

/// The CUDA kernels (on a GPU or in the simulation): four times the CPU's bounds everywhere.
/// Their sums run in other orders (block reductions, split-K partial sums added afterwards)
/// and a GPU contracts multiply-adds into FMAs, so the rounding differs from the CPU's; the
/// simulation, compiled for the CPU, stays within the CPU's bounds (docs/benchmarks.md).
pub const GPU: Tolerances = CPU.scaled(4.0);

/// One tensor compared.
#[derive(Clone, Debug)]
pub struct Check {
    pub name: String,
    pub len: usize,
    pub tol: Tol,
    /// Entries given a looser bound (see [`adam_allowance`]).
    pub loose: usize,
    pub max_abs_err: f64,
    /// max |ours - ref| / (atol + rtol |ref|): pass at or below 1.
    pub worst_ratio: f64,
}

impl Check {
    pub fn passed(&self) -> bool {
        self.worst_ratio <= 1.0
    }
}

pub fn compare(name: &str, ours: &[f32], reference: &[f32], tol: Tol) -> Check {
    compare_with(name, ours, reference, tol, &[])
}

/// `extra[i]`, when given, is added to entry i's absolute tolerance.
pub fn compare_with(name: &str, ours: &[f32], reference: &[f32], tol: Tol, extra: &[f64]) -> Check {
    let loose = extra.iter().filter(|e| **e > 0.0).count();
    let mut c = Check { name: name.to_string(), len: reference.len(), tol, loose, max_abs_err: 0.0, worst_ratio: 0.0 };
    if ours.len() != reference.len() || !(extra.is_empty() || extra.len() == reference.len()) {
        c.worst_ratio = f64::INFINITY;
        c.max_abs_err = f64::INFINITY;
        return c;
    }
    for (i, (o, r)) in ours.iter().zip(reference).enumerate() {
        let (o, r) = (*o as f64, *r as f64);
        let err = (o - r).abs();
        let ratio = err / (tol.atol + extra.get(i).copied().unwrap_or(0.0) + tol.rtol * r.abs());
        // NaN compares false: count it as a failure explicitly.
        c.max_abs_err = if err.is_nan() { f64::INFINITY } else { c.max_abs_err.max(err) };
        c.worst_ratio = if ratio.is_nan() { f64::INFINITY } else { c.worst_ratio.max(ratio) };
    }
    c
}

fn grad_tol(reference: &[f32], t: &Tolerances) -> Tol {
    let scale = reference.iter().fold(0.0f64, |m, v| m.max(v.abs() as f64));
    Tol { atol: t.grad_scale * scale.max(1e-6), rtol: t.grad_rtol }
}

/// Adam's first step moves a weight by `lr * g / (|g| + eps)`. Where the true gradient
/// is zero up to rounding (it happens: a bias whose effect the next batchnorm removes),
/// both sides hold rounding noise of about 1e-9 to 1e-18, and dividing by eps = 1e-8
/// turns that noise into any step in [-lr, lr]. Entries whose reference gradient is
/// below `NOISE_GRAD * max |g|` of its tensor (f32 rounding level) therefore get `lr` of
/// extra room; every other entry keeps the tight bound: there `g / (|g| + eps)` moves by
/// `eps * err / g^2`, under 1e-5 of the step for the errors we see.
pub const NOISE_GRAD: f64 = 1e-5;
pub fn adam_allowance(grad_ref: &[f32], lr: f32) -> Vec<f64> {
    let scale = grad_ref.iter().fold(0.0f64, |m, v| m.max(v.abs() as f64));
    grad_ref.iter().map(|g| if (*g as f64).abs() <= NOISE_GRAD * scale { lr as f64 } else { 0.0 }).collect()
}

fn download<B: Backend>(be: &B, buf: &B::Buf, len: usize) -> Result<Vec<f32>> {
    let mut v = vec![0.0; len];
    be.download(buf, &mut v)?;
    Ok(v)
}

/// Runs one iteration of our engine on `be` from the reference weights and inputs and
/// compares everything the reference holds, under `tol`.
pub fn run<B: Backend>(be: &B, r: &Reference, tol: &Tolerances) -> Result<Vec<Check>> {
    let (cfg, n) = (&r.cfg, r.batch);
    let weights = r.group("weights");
    let (images, texts, noise) = (r.get("inputs.images")?, r.get("inputs.texts")?, r.get("inputs.noise")?);
    let hp = Hyper::default();
    let mut checks = Vec::new();

    // A probe copy for the values `iteration` does not hand out: the G output and D's
    // logits in the D step. Training-mode batchnorm normalises with batch statistics,
    // so these do not depend on the running statistics the probe updates.
    let mut probe = Gan::new(be, cfg, &hp, 0)?;
    probe.import(be, &weights)?;
    let z = Tensor::from_f32(be, Shape::new(n, cfg.noise_dim, 1, 1), noise)?;
    let t = Tensor::from_f32(be, Shape::new(n, cfg.text_dim, 1, 1), texts)?;
    let x = Tensor::from_f32(be, Shape::new(n, 3, cfg.size, cfg.size), images)?;
    let fake = probe.g.forward(be, &z, &t, Mode::Train)?;
    let fake_v = fake.to_f32(be)?;
    checks.push(compare("outputs.fake (G output)", &fake_v, r.get("outputs.fake")?, tol.forward));
    let logits_real = probe.d.forward(be, &x, &t, Mode::Train)?.to_f32(be)?;
    checks.push(compare("outputs.logits_real", &logits_real, r.get("outputs.logits_real")?, tol.forward));
    let logits_fake = probe.d.forward(be, &fake, &t, Mode::Train)?.to_f32(be)?;
    checks.push(compare("outputs.logits_fake", &logits_fake, r.get("outputs.logits_fake")?, tol.forward));

    // The real thing: one full iteration, as training runs it.
    let mut gan = Gan::new(be, cfg, &hp, 0)?;
    gan.import(be, &weights)?;
    let stats = gan.iteration(be, n, &StepInputs { images, texts, noise, mismatched: None })?;
    for (name, v) in [("loss_d", stats.loss_d), ("loss_g", stats.loss_g), ("d_real", stats.d_real), ("d_fake", stats.d_fake)] {
        let key = format!("outputs.{name}");
        checks.push(compare(&key, &[v], r.get(&key)?, tol.forward));
    }

    // Gradients survive the Adam step (it reads them, nothing zeroes them until the next
    // step): D's are the D step's (frozen in the G step), G's are the G step's.
    let mut compared = 0;
    for p in gan.d.params().into_iter().chain(gan.g.params()) {
        let key = format!("grads.{}", p.name);
        let reference = r.get(&key)?;
        checks.push(compare(&key, &download(be, &p.grad, p.len())?, reference, grad_tol(reference, tol)));
        compared += 1;
    }
    ensure!(compared == r.group("grads").len(), "the reference holds {} gradients, our model has {compared} parameters", r.group("grads").len());

    // Weights after one Adam step each, running statistics after the iteration.
    let after = r.group("after");
    let ours: BTreeMap<String, NamedTensor> = gan.export(be)?.into_iter().filter(|t| !t.name.starts_with("optimizer.")).map(|t| (t.name.clone(), t)).collect();
    ensure!(ours.len() == after.len(), "the reference holds {} tensors after the step, our model exports {}", after.len(), ours.len());
    for rt in &after {
        let o = ours.get(&rt.name).with_context(|| format!("our model has no tensor {}", rt.name))?;
        let key = format!("after.{}", rt.name);
        if rt.name.contains("running_") {
            checks.push(compare(&key, &o.data, &rt.data, tol.running));
        } else {
            let extra = adam_allowance(r.get(&format!("grads.{}", rt.name))?, hp.lr);
            checks.push(compare_with(&key, &o.data, &rt.data, tol.after_adam, &extra));
        }
    }

    // D's logits in the G step: the same fake batch through D after its Adam step.
    let logits_g = gan.d.forward(be, &fake, &t, Mode::Train)?.to_f32(be)?;
    checks.push(compare("outputs.logits_g (G step, updated D)", &logits_g, r.get("outputs.logits_g")?, tol.forward));
    be.synchronize()?;
    Ok(checks)
}

/// The comparison as a table, one line per tensor, and how many failed.
pub fn table(device: &str, r: &Reference, checks: &[Check]) -> (String, usize) {
    let mut s = String::new();
    let _ = writeln!(s, "PyTorch reference ({}), {}, on {device}", r.note, r.shape());
    let _ = writeln!(s, "{:<48} {:>6} {:>10} {:>8} {:>11} {:>9} {:>6}  result", "tensor", "len", "atol", "rtol", "max |err|", "err/tol", "loose");
    let mut failed = 0;
    for c in checks {
        failed += usize::from(!c.passed());
        let verdict = if c.passed() { "ok" } else { "FAIL" };
        let loose = if c.loose > 0 { c.loose.to_string() } else { String::new() };
        let _ = writeln!(
            s,
            "{:<48} {:>6} {:>10.2e} {:>8.0e} {:>11.3e} {:>9.3} {loose:>6}  {verdict}",
            c.name, c.len, c.tol.atol, c.tol.rtol, c.max_abs_err, c.worst_ratio
        );
    }
    let _ = writeln!(
        s,
        "{} tensors compared, {failed} failed (loose: entries whose reference gradient is zero within tolerance, allowed one Adam step of difference)",
        checks.len()
    );
    (s, failed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_reference_parses() {
        let r = Reference::embedded().unwrap();
        assert_eq!((r.cfg.size, r.cfg.width, r.batch), (32, 8, 4));
        assert!(r.tensors.len() > 100, "{} tensors", r.tensors.len());
    }

    #[test]
    fn gpu_bounds_are_no_tighter_than_the_cpu_ones() {
        let grads = |t: &Tolerances| Tol { atol: t.grad_scale, rtol: t.grad_rtol };
        let pairs = [(CPU.forward, GPU.forward), (grads(&CPU), grads(&GPU)), (CPU.after_adam, GPU.after_adam), (CPU.running, GPU.running)];
        for (c, g) in pairs {
            assert!(g.atol >= c.atol && g.rtol >= c.rtol, "{c:?} {g:?}");
        }
    }

    #[test]
    fn nan_and_length_mismatch_fail() {
        let t = Tol { atol: 1.0, rtol: 0.0 };
        assert!(!compare("nan", &[f32::NAN], &[0.0], t).passed());
        assert!(!compare("short", &[0.0], &[0.0, 0.0], t).passed());
        assert!(compare("equal", &[0.5, 2.0], &[0.5, 2.0], t).passed());
    }
}
