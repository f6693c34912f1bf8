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

/// What a compared tensor is, which decides its bound.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    /// Forward values (G output, logits, losses, probabilities).
    Forward,
    /// A parameter gradient.
    Grad,
    /// A parameter after its Adam step.
    AfterAdam,
    /// A batchnorm running statistic after the iteration.
    Running,
}

/// Our values for every tensor the reference compares: `(key, ours, kind)`.
fn ours<B: Backend>(be: &B, r: &Reference) -> Result<Vec<(String, Vec<f32>, Kind)>> {
    let (cfg, n) = (&r.cfg, r.batch);
    let weights = r.group("weights");
    let (images, texts, noise) = (r.get("inputs.images")?, r.get("inputs.texts")?, r.get("inputs.noise")?);
    let hp = Hyper::default();
    let mut out = Vec::new();

    // A probe copy for the values `iteration` does not hand out: the G output and D's
    // logits in the D step. Training-mode batchnorm normalises with batch statistics,
    // so these do not depend on the running statistics the probe updates.
    let mut probe = Gan::new(be, cfg, &hp, 0)?;
    probe.import(be, &weights)?;
    let z = Tensor::from_f32(be, Shape::new(n, cfg.noise_dim, 1, 1), noise)?;
    let t = Tensor::from_f32(be, Shape::new(n, cfg.text_dim, 1, 1), texts)?;
    let x = Tensor::from_f32(be, Shape::new(n, 3, cfg.size, cfg.size), images)?;
    let fake = probe.g.forward(be, &z, &t, Mode::Train)?;
    out.push(("outputs.fake".to_string(), fake.to_f32(be)?, Kind::Forward));
    out.push(("outputs.logits_real".to_string(), probe.d.forward(be, &x, &t, Mode::Train)?.to_f32(be)?, Kind::Forward));
    out.push(("outputs.logits_fake".to_string(), probe.d.forward(be, &fake, &t, Mode::Train)?.to_f32(be)?, Kind::Forward));

    // The real thing: one full iteration, as training runs it.
    let mut gan = Gan::new(be, cfg, &hp, 0)?;
    gan.import(be, &weights)?;
    let stats = gan.iteration(be, n, &StepInputs { images, texts, noise, mismatched: None })?;
    for (name, v) in [("loss_d", stats.loss_d), ("loss_g", stats.loss_g), ("d_real", stats.d_real), ("d_fake", stats.d_fake)] {
        out.push((format!("outputs.{name}"), vec![v], Kind::Forward));
    }

    // Gradients survive the Adam step (it reads them, nothing zeroes them until the next
    // step): D's are the D step's (frozen in the G step), G's are the G step's.
    let mut compared = 0;
    for p in gan.d.params().into_iter().chain(gan.g.params()) {
        out.push((format!("grads.{}", p.name), download(be, &p.grad, p.len())?, Kind::Grad));
        compared += 1;
    }
    ensure!(compared == r.group("grads").len(), "the reference holds {} gradients, our model has {compared} parameters", r.group("grads").len());

    // Weights after one Adam step each, running statistics after the iteration.
    let after = r.group("after");
    let exported: BTreeMap<String, NamedTensor> =
        gan.export(be)?.into_iter().filter(|t| !t.name.starts_with("optimizer.")).map(|t| (t.name.clone(), t)).collect();
    ensure!(exported.len() == after.len(), "the reference holds {} tensors after the step, our model exports {}", after.len(), exported.len());
    for rt in &after {
        let o = exported.get(&rt.name).with_context(|| format!("our model has no tensor {}", rt.name))?;
        let kind = if rt.name.contains("running_") { Kind::Running } else { Kind::AfterAdam };
        out.push((format!("after.{}", rt.name), o.data.clone(), kind));
    }

    // D's logits in the G step: the same fake batch through D after its Adam step.
    out.push(("outputs.logits_g".to_string(), gan.d.forward(be, &fake, &t, Mode::Train)?.to_f32(be)?, Kind::Forward));
    be.synchronize()?;
    Ok(out)
}

/// Runs one iteration of our engine on `be` from the reference weights and inputs and
/// compares everything the reference holds, under `tol`.
pub fn run<B: Backend>(be: &B, r: &Reference, tol: &Tolerances) -> Result<Vec<Check>> {
    let lr = Hyper::default().lr;
    let mut checks = Vec::new();
    for (key, v, kind) in ours(be, r)? {
        let reference = r.get(&key)?;
        let name = if key == "outputs.fake" {
            "outputs.fake (G output)".to_string()
        } else if key == "outputs.logits_g" {
            "outputs.logits_g (G step, updated D)".to_string()
        } else {
            key.clone()
        };
        checks.push(match kind {
            Kind::Forward => compare(&name, &v, reference, tol.forward),
            Kind::Grad => compare(&name, &v, reference, grad_tol(reference, tol)),
            Kind::Running => compare(&name, &v, reference, tol.running),
            Kind::AfterAdam => {
                let extra = adam_allowance(r.get(&format!("grads.{}", &key["after.".len()..]))?, lr);
                compare_with(&name, &v, reference, tol.after_adam, &extra)
            }
        });
    }
    Ok(checks)
}

/// The bf16 unit roundoff: 8 significant bits, rounded to nearest, `2^-8` relative.
pub const BF16_UNIT: f64 = 1.0 / 256.0;
/// GEMM layers on the longest path of the reference iteration: G's four (transposed)
/// convolutions, then D's three convolutions, its 1x1 and 4x4 heads and the text linear.
pub const BF16_LAYERS: f64 = 10.0;
/// How far `--precision bf16` may be from the float64 reference, per tensor, as a relative
/// L2 error: forward values [`bf16_floor`], gradients and Adam updates at most
/// `BF16_PEER_FACTOR` times PyTorch's own bf16 autocast error on the same tensor plus that.
///
/// The model. A GEMM output `y = sum_k a_k b_k` with both operands rounded to bf16 has the
/// error `sum_k a_k b_k (d_a + d_b)`, `|d| <= 2^-8`; with rounding errors independent and
/// uniform, its standard deviation is `sqrt(2/3) 2^-8 sqrt(sum_k (a_k b_k)^2)`, which for
/// sums of terms of either sign is the size of `y` itself: about `3.2e-3` of a tensor's RMS
/// per GEMM layer whatever the reduction length K (the worst case, errors all of one sign,
/// grows as `sqrt(K)` times that and is not what rounding does). Through L layers the
/// errors add in quadrature: `sqrt(2L/3) 2^-8`, 0.01 for L = 10; five of those is the floor.
/// That holds for values the network computes forward. Gradients and Adam steps are worse
/// conditioned: backprop through batchnorm at batch 4 subtracts nearly equal terms (in f32
/// the CPU's generator gradients already differ from float64 by 1e-3 relative, 2^14 units
/// of f32 rounding), and the same amplification of 2^-8 is what PyTorch's bf16 run shows
/// (16% on one generator gradient). There the peer is the measure: our error and
/// PyTorch's are two draws of the same rounding noise, and ours may be twice theirs.
pub const BF16_PEER_FACTOR: f64 = 2.0;
pub fn bf16_floor() -> f64 {
    5.0 * (2.0 * BF16_LAYERS / 3.0).sqrt() * BF16_UNIT
}

/// `--precision bf16` on `be` against the float64 reference, each tensor held to the bf16
/// model above with PyTorch's bf16 autocast run (`bf16.*` in the reference) as the anchor.
/// Parameters after Adam are compared by their updates (after - before), the part that moves.
/// In these checks `tol.rtol` is the bound on the relative L2 error and `worst_ratio` is the
/// error over that bound.
pub fn run_bf16<B: Backend>(be: &B, r: &Reference) -> Result<Vec<Check>> {
    let mut checks = Vec::new();
    for (key, v, kind) in ours(be, r)? {
        let reference = r.get(&key)?;
        let peer = r.get(&format!("bf16.{key}")).context("the reference has no PyTorch bf16 run: regenerate it with scripts/dev/torch_reference.py")?;
        let mut loose = 0;
        let (ours_v, ref_v, peer_v) = if kind == Kind::AfterAdam {
            let name = &key["after.".len()..];
            let before = r.get(&format!("weights.{name}"))?;
            // Adam's first step is about lr * sign(g): where the reference gradient lies within
            // the bf16 noise of its tensor (three times the bound below, as an RMS), the sign,
            // and so the step, is a coin toss on either side; those entries are left out.
            let (g, g_peer) = (r.get(&format!("grads.{name}"))?, r.get(&format!("bf16.grads.{name}"))?);
            let rms = (g.iter().map(|v| (*v as f64).powi(2)).sum::<f64>() / g.len().max(1) as f64).sqrt();
            let noise = 3.0 * (BF16_PEER_FACTOR * super::rel_l2(g, g_peer) + bf16_floor()) * rms;
            let keep: Vec<bool> = g.iter().map(|v| (*v as f64).abs() > noise).collect();
            loose = keep.iter().filter(|k| !**k).count();
            let update = |t: &[f32]| t.iter().zip(before).zip(&keep).map(|((a, b), k)| if *k { a - b } else { 0.0 }).collect::<Vec<f32>>();
            (update(&v), update(reference), update(peer))
        } else {
            (v, reference.to_vec(), peer.to_vec())
        };
        let (err, peer_err) = (super::rel_l2(&ref_v, &ours_v), super::rel_l2(&ref_v, &peer_v));
        // Forward values are held to the model alone; the peer anchors the rest.
        let limit = if kind == Kind::Forward { bf16_floor() } else { BF16_PEER_FACTOR * peer_err + bf16_floor() };
        let max_abs = ref_v.iter().zip(&ours_v).fold(0.0f64, |m, (a, b)| m.max((*a as f64 - *b as f64).abs()));
        let name = if kind == Kind::AfterAdam {
            format!("{key} (update, relL2; PyTorch bf16 {peer_err:.1e})")
        } else {
            format!("{key} (relL2; PyTorch bf16 {peer_err:.1e})")
        };
        let ratio = if err.is_nan() { f64::INFINITY } else { err / limit };
        checks.push(Check {
            name,
            len: ref_v.len(),
            tol: Tol { atol: 0.0, rtol: limit },
            loose,
            max_abs_err: if max_abs.is_nan() { f64::INFINITY } else { max_abs },
            worst_ratio: ratio,
        });
    }
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
