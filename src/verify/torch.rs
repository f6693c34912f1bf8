//! Same numbers as PyTorch: training iterations of small models on any backend against the
//! reference states that `scripts/dev/torch_reference.py` wrote with PyTorch in float64
//! (stored as f32, so each reference is exact to f32 rounding). The references are part of
//! the verification suite and embedded in the library ([`EMBEDDED`]: one iteration at
//! 32 px, width 8, batch 4; [`EMBEDDED_GANCLS_64`]: two iterations, so Adam reaches t = 2,
//! at 64 px, width 4, batch 2, with the matching-aware loss at W = 0.5), so `gan-engine
//! selftest --device sim|cuda` compares without the source tree; `tests/torch_reference.rs`
//! runs the same comparisons on the CPU, and lays the committed wrong references over the
//! first one to prove they fail.
//!
//! Loaded into our `Gan` through `Gan::import`: the weights and batchnorm running
//! statistics. Compared, each with its own tolerance `|ours - ref| <= atol + rtol * |ref|`:
//! the G output, D's logits on the real and the fake batch (first iteration), both losses,
//! D(x) and D(G(z)) of every iteration, every D parameter gradient of the last D step and
//! every G parameter gradient of the last G step (before Adam), D's logits in the last G
//! step (after the D Adam step), every parameter after its last Adam step, and every
//! running statistic after the last iteration.
//!
//! A convention mismatch (transposed-conv padding, batchnorm eps or momentum, BCE
//! reduction, concat order, the order of the D Adam step and the G step) moves some of
//! these by far more than f32 rounding; `scripts/dev/torch_reference.py --perturb ...`
//! writes such a wrong reference as an overlay of the tensors it changes
//! (tests/fixtures/torch/, [`Reference::overlay`]).

use crate::backend::cpu::Cpu;
use crate::backend::Backend;
use crate::model::{ModelConfig, Module};
use crate::nn::{Mode, Shape, Tensor};
use crate::train::checkpoint::NamedTensor;
use crate::train::{Gan, Hyper, StepInputs};
use anyhow::{ensure, Context, Result};
use safetensors::tensor::{Dtype, SafeTensors};
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// The committed reference file, `src/verify/torch_reference.safetensors`: one iteration
/// at 32 px, width 8, batch 4.
pub const EMBEDDED: &[u8] = include_bytes!("torch_reference.safetensors");
/// `src/verify/torch_reference_64px_gancls.safetensors`: two iterations at 64 px, width 4,
/// batch 2, matching-aware loss W = 0.5 (`scripts/dev/torch_reference.py --size 64 --width
/// 4 --batch 2 --iterations 2 --matching-aware 0.5`).
pub const EMBEDDED_GANCLS_64: &[u8] = include_bytes!("torch_reference_64px_gancls.safetensors");

/// A reference state: model configuration, batch size, iterations, loss weight, and every
/// tensor by name.
pub struct Reference {
    pub cfg: ModelConfig,
    pub batch: usize,
    /// Training iterations it ran (Adam's t at the end).
    pub iterations: usize,
    /// The mismatched-caption weight W (`Hyper::matching_aware`).
    pub matching_aware: f32,
    /// What wrote it (PyTorch version, precision), from the file's metadata.
    pub note: String,
    /// The metadata that must agree between a reference and an overlay of it.
    settings: BTreeMap<String, String>,
    pub tensors: BTreeMap<String, (Vec<usize>, Vec<f32>)>,
}

type Parsed = (BTreeMap<String, String>, BTreeMap<String, (Vec<usize>, Vec<f32>)>);

fn parse_file(bytes: &[u8]) -> Result<Parsed> {
    let (_, header) = SafeTensors::read_metadata(bytes).map_err(|e| anyhow::anyhow!("not a safetensors file: {e:?}"))?;
    let meta: BTreeMap<String, String> =
        header.metadata().clone().context("the reference has no metadata: regenerate it with scripts/dev/torch_reference.py")?.into_iter().collect();
    let st = SafeTensors::deserialize(bytes).map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let mut tensors = BTreeMap::new();
    for (name, view) in st.tensors() {
        ensure!(view.dtype() == Dtype::F32, "reference tensor {name} is {:?}, not F32", view.dtype());
        let data = view.data().chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
        tensors.insert(name, (view.shape().to_vec(), data));
    }
    Ok((meta, tensors))
}

/// The metadata keys that define what a reference ran.
const SETTINGS: [&str; 5] = ["config", "batch", "iterations", "matching_aware", "seed"];

impl Reference {
    pub fn parse(bytes: &[u8]) -> Result<Reference> {
        let (meta, tensors) = parse_file(bytes)?;
        ensure!(
            !meta.contains_key("overlay"),
            "this is an overlay of a reference (a deliberately wrong one): lay it over its reference with Reference::overlay"
        );
        let get = |k: &str| meta.get(k).with_context(|| format!("the reference metadata has no `{k}`"));
        let cfg: ModelConfig = serde_json::from_str(get("config")?).context("reference metadata `config`")?;
        let batch: usize = get("batch")?.parse().context("reference metadata `batch`")?;
        let iterations: usize = meta.get("iterations").map_or(Ok(1), |v| v.parse()).context("reference metadata `iterations`")?;
        let matching_aware: f32 = meta.get("matching_aware").map_or(Ok(0.0), |v| v.parse()).context("reference metadata `matching_aware`")?;
        ensure!(iterations >= 1, "reference metadata `iterations` is 0");
        let note = meta.get("note").cloned().unwrap_or_default();
        let settings = SETTINGS.iter().filter_map(|k| meta.get(*k).map(|v| (k.to_string(), v.clone()))).collect();
        Ok(Reference { cfg, batch, iterations, matching_aware, note, settings, tensors })
    }

    /// The first embedded reference (32 px, one iteration).
    pub fn embedded() -> Result<Reference> {
        Reference::parse(EMBEDDED).context("the embedded src/verify/torch_reference.safetensors")
    }

    /// Every embedded reference, in the order the selftest runs them.
    pub fn all_embedded() -> Result<Vec<Reference>> {
        Ok(vec![Reference::embedded()?, Reference::parse(EMBEDDED_GANCLS_64).context("the embedded src/verify/torch_reference_64px_gancls.safetensors")?])
    }

    /// Lays a deliberately wrong reference over this one: `bytes` is an overlay that
    /// `scripts/dev/torch_reference.py --perturb NAME` wrote (the tensors the perturbation
    /// changed, with the same settings in its metadata); its tensors replace these and its
    /// note says what is wrong. Returns the names of the replaced tensors.
    pub fn overlay(&mut self, bytes: &[u8]) -> Result<Vec<String>> {
        let (meta, tensors) = parse_file(bytes)?;
        let what = meta.get("overlay").context("not an overlay: its metadata has no `overlay`")?;
        for k in SETTINGS {
            ensure!(
                meta.get(k) == self.settings.get(k),
                "the overlay `{what}` was written for another reference: `{k}` is {:?}, here {:?}",
                meta.get(k),
                self.settings.get(k)
            );
        }
        let mut replaced = Vec::new();
        for (name, (shape, data)) in tensors {
            let own = self.tensors.get_mut(&name).with_context(|| format!("the overlay `{what}` has a tensor {name} the reference lacks"))?;
            ensure!(own.0 == shape, "the overlay `{what}`: {name} has shape {shape:?}, the reference {:?}", own.0);
            own.1 = data;
            replaced.push(name);
        }
        self.note = meta.get("note").cloned().unwrap_or_default();
        Ok(replaced)
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

    /// Iteration `i`'s rows of the input `name` (`inputs.images`, ...): `per_row` values each.
    fn batch_of(&self, name: &str, i: usize, per_row: usize) -> Result<&[f32]> {
        let all = self.get(name)?;
        let len = self.batch * per_row;
        all.get(i * len..(i + 1) * len).with_context(|| format!("{name} holds {} values, {} iterations of {len} needed", all.len(), self.iterations))
    }

    /// Whether it holds PyTorch's bf16 autocast run of the same iteration (`bf16.*`), the
    /// peer of `--precision bf16` ([`run_bf16`]).
    pub fn has_bf16(&self) -> bool {
        self.iterations == 1 && self.tensors.contains_key("bf16.outputs.loss_d")
    }

    /// "32 px, width 8, batch 4" (and the iterations and W when not 1 and 0).
    pub fn shape(&self) -> String {
        let mut s = format!("{} px, width {}, batch {}", self.cfg.size, self.cfg.width, self.batch);
        if self.iterations > 1 {
            s += &format!(", {} iterations", self.iterations);
        }
        if self.matching_aware > 0.0 {
            s += &format!(", W {}", self.matching_aware);
        }
        s
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
    /// The bound was widened entry by entry by the TF32 error model ([`tf32_widening`]).
    pub widened: bool,
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
    compare_widened(name, ours, reference, tol, extra, &[])
}

/// `compare_with`, with `widen[i]` (when given) added to entry i's absolute tolerance too;
/// `loose` counts the entries of `extra` only.
pub fn compare_widened(name: &str, ours: &[f32], reference: &[f32], tol: Tol, extra: &[f64], widen: &[f64]) -> Check {
    let loose = extra.iter().filter(|e| **e > 0.0).count();
    let mut c = Check { name: name.to_string(), len: reference.len(), tol, loose, widened: !widen.is_empty(), max_abs_err: 0.0, worst_ratio: 0.0 };
    let fits = |v: &[f64]| v.is_empty() || v.len() == reference.len();
    if ours.len() != reference.len() || !fits(extra) || !fits(widen) {
        c.worst_ratio = f64::INFINITY;
        c.max_abs_err = f64::INFINITY;
        return c;
    }
    for (i, (o, r)) in ours.iter().zip(reference).enumerate() {
        let (o, r) = (*o as f64, *r as f64);
        let err = (o - r).abs();
        let room = tol.atol + extra.get(i).copied().unwrap_or(0.0) + widen.get(i).copied().unwrap_or(0.0) + tol.rtol * r.abs();
        let ratio = err / room;
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
/// extra room per step taken (`steps`; the last step's gradient picks them); every other
/// entry keeps the tight bound: there `g / (|g| + eps)` moves by `eps * err / g^2`, under
/// 1e-5 of the step for the errors we see.
pub const NOISE_GRAD: f64 = 1e-5;
pub fn adam_allowance(grad_ref: &[f32], lr: f32) -> Vec<f64> {
    adam_allowance_steps(&[grad_ref], lr)
}

/// The most one Adam step t (1-based) can move a weight, in units of lr:
/// `max |m_hat| / sqrt(v_hat)` over all gradient histories, which by Cauchy-Schwarz is
/// `sqrt(sum_k a_k^2 / b_k)` with `a_k = (1 - b1) b1^(t-k) / (1 - b1^t)` and
/// `b_k = (1 - b2) b2^(t-k) / (1 - b2^t)`: 1 at t = 1, 1.054 at t = 2 for the article's
/// betas (0.5, 0.999).
pub fn adam_step_bound(t: usize, beta1: f64, beta2: f64) -> f64 {
    let (bc1, bc2) = (1.0 - beta1.powi(t as i32), 1.0 - beta2.powi(t as i32));
    (1..=t)
        .map(|k| {
            let a = (1.0 - beta1) * beta1.powi((t - k) as i32) / bc1;
            let b = (1.0 - beta2) * beta2.powi((t - k) as i32) / bc2;
            a * a / b
        })
        .sum::<f64>()
        .sqrt()
}

/// The most `steps` Adam steps can move a weight, in units of lr (article's betas).
fn adam_steps_bound(steps: usize) -> f64 {
    let h = Hyper::default();
    (1..=steps).map(|t| adam_step_bound(t, h.beta1 as f64, h.beta2 as f64)).sum()
}

/// `adam_allowance` over several steps, `grads[k]` the reference gradient of step k: an
/// entry whose gradient is noise in any step gets as much room as the steps can move it
/// ([`adam_step_bound`]; a noise step moves the moments, and through them the later steps).
pub fn adam_allowance_steps(grads: &[&[f32]], lr: f32) -> Vec<f64> {
    let len = grads.first().map_or(0, |g| g.len());
    let mut noise = vec![false; len];
    for g in grads {
        let scale = g.iter().fold(0.0f64, |m, v| m.max(v.abs() as f64));
        noise.iter_mut().zip(g.iter()).for_each(|(n, v)| *n |= (*v as f64).abs() <= NOISE_GRAD * scale);
    }
    let room = adam_steps_bound(grads.len()) * lr as f64;
    noise.into_iter().map(|n| if n { room } else { 0.0 }).collect()
}

impl Reference {
    /// The key of the reference gradient of `param` in iteration `k` (1-based): `grads.`
    /// for the last, `iter<k>.grads.` for the ones before.
    fn grad_key(&self, param: &str, k: usize) -> String {
        if k == self.iterations {
            format!("grads.{param}")
        } else {
            format!("iter{k}.grads.{param}")
        }
    }

    /// The Adam allowance of `param` after all iterations.
    fn allowance(&self, param: &str, lr: f32) -> Result<Vec<f64>> {
        let grads = (1..=self.iterations).map(|k| self.get(&self.grad_key(param, k))).collect::<Result<Vec<&[f32]>>>()?;
        Ok(adam_allowance_steps(&grads, lr))
    }
}

fn download<B: Backend>(be: &B, buf: &B::Buf, len: usize) -> Result<Vec<f32>> {
    let mut v = vec![0.0; len];
    be.download(buf, &mut v)?;
    Ok(v)
}

/// What a compared tensor is, for its tolerance.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Forward,
    Grad,
    /// A parameter after Adam: the reference gradient `grads.<name>` sets its allowance.
    AfterAdam,
    Running,
}

/// One of our tensors beside the reference's.
struct Output {
    /// The check's name (the reference key, annotated).
    name: String,
    key: String,
    ours: Vec<f32>,
    kind: Kind,
}

/// One iteration's images, texts, noise and mismatched texts, as the reference holds them.
type Batch<'a> = (&'a [f32], &'a [f32], &'a [f32], Option<&'a [f32]>);

/// Runs the reference's iterations on `be` from its weights and inputs; our value of every
/// tensor it holds.
fn outputs<B: Backend>(be: &B, r: &Reference) -> Result<Vec<Output>> {
    let (cfg, n) = (&r.cfg, r.batch);
    let weights = r.group("weights");
    let hp = Hyper { matching_aware: r.matching_aware, ..Hyper::default() };
    let image_len = 3 * cfg.size * cfg.size;
    let batch = |i: usize| -> Result<Batch> {
        let mismatched = if r.matching_aware > 0.0 { Some(r.batch_of("inputs.mismatched", i, cfg.text_dim)?) } else { None };
        Ok((
            r.batch_of("inputs.images", i, image_len)?,
            r.batch_of("inputs.texts", i, cfg.text_dim)?,
            r.batch_of("inputs.noise", i, cfg.noise_dim)?,
            mismatched,
        ))
    };
    let mut out = Vec::new();
    let mut push = |name: &str, key: &str, ours: Vec<f32>, kind: Kind| out.push(Output { name: name.to_string(), key: key.to_string(), ours, kind });

    // A probe copy for the values `iteration` does not hand out: the G output and D's
    // logits in the first D step. Training-mode batchnorm normalises with batch
    // statistics, so these do not depend on the running statistics the probe updates.
    let mut probe = Gan::new(be, cfg, &hp, 0)?;
    probe.import(be, &weights)?;
    let (images, texts, noise, _) = batch(0)?;
    let z = Tensor::from_f32(be, Shape::new(n, cfg.noise_dim, 1, 1), noise)?;
    let t = Tensor::from_f32(be, Shape::new(n, cfg.text_dim, 1, 1), texts)?;
    let x = Tensor::from_f32(be, Shape::new(n, 3, cfg.size, cfg.size), images)?;
    let fake = probe.g.forward(be, &z, &t, Mode::Train)?;
    push("outputs.fake (G output)", "outputs.fake", fake.to_f32(be)?, Kind::Forward);
    push("outputs.logits_real", "outputs.logits_real", probe.d.forward(be, &x, &t, Mode::Train)?.to_f32(be)?, Kind::Forward);
    push("outputs.logits_fake", "outputs.logits_fake", probe.d.forward(be, &fake, &t, Mode::Train)?.to_f32(be)?, Kind::Forward);

    // The real thing: the iterations as training runs them.
    let mut gan = Gan::new(be, cfg, &hp, 0)?;
    gan.import(be, &weights)?;
    let (mut loss_d, mut loss_g, mut d_real, mut d_fake) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut last = (fake, t);
    for i in 0..r.iterations {
        let (images, texts, noise, mismatched) = batch(i)?;
        if i > 0 && i + 1 == r.iterations {
            // The last iteration's fake batch (for D's logits in its G step), from a copy
            // of the state it starts from, so the copy's batchnorm updates stay its own.
            let mut copy = Gan::new(be, cfg, &hp, 0)?;
            copy.import(be, &gan.export(be)?)?;
            let z = Tensor::from_f32(be, Shape::new(n, cfg.noise_dim, 1, 1), noise)?;
            let t = Tensor::from_f32(be, Shape::new(n, cfg.text_dim, 1, 1), texts)?;
            last = (copy.g.forward(be, &z, &t, Mode::Train)?, t);
        }
        let s = gan.iteration(be, n, &StepInputs { images, texts, noise, mismatched })?;
        if i + 1 < r.iterations {
            // This iteration's gradients, as the last one's below.
            for p in gan.d.params().into_iter().chain(gan.g.params()) {
                let key = r.grad_key(&p.name, i + 1);
                push(&key, &key, download(be, &p.grad, p.len())?, Kind::Grad);
            }
        }
        loss_d.push(s.loss_d);
        loss_g.push(s.loss_g);
        d_real.push(s.d_real);
        d_fake.push(s.d_fake);
    }
    for (name, v) in [("loss_d", loss_d), ("loss_g", loss_g), ("d_real", d_real), ("d_fake", d_fake)] {
        let key = format!("outputs.{name}");
        push(&key, &key, v, Kind::Forward);
    }

    // Gradients survive the Adam step (it reads them, nothing zeroes them until the next
    // step): D's are the last D step's (frozen in the G step), G's the last G step's.
    let mut compared = 0;
    for p in gan.d.params().into_iter().chain(gan.g.params()) {
        let key = format!("grads.{}", p.name);
        push(&key, &key, download(be, &p.grad, p.len())?, Kind::Grad);
        compared += 1;
    }
    ensure!(compared == r.group("grads").len(), "the reference holds {} gradients, our model has {compared} parameters", r.group("grads").len());

    // Weights after the last Adam step, running statistics after the last iteration.
    let after = r.group("after");
    let exported: BTreeMap<String, NamedTensor> =
        gan.export(be)?.into_iter().filter(|t| !t.name.starts_with("optimizer.")).map(|t| (t.name.clone(), t)).collect();
    ensure!(exported.len() == after.len(), "the reference holds {} tensors after the step, our model exports {}", after.len(), exported.len());
    for rt in &after {
        let o = exported.get(&rt.name).with_context(|| format!("our model has no tensor {}", rt.name))?;
        let key = format!("after.{}", rt.name);
        let kind = if rt.name.contains("running_") { Kind::Running } else { Kind::AfterAdam };
        push(&key, &key, o.data.clone(), kind);
    }

    // D's logits in the last G step: that iteration's fake batch through D after its Adam step.
    let logits_g = gan.d.forward(be, &last.0, &last.1, Mode::Train)?.to_f32(be)?;
    push("outputs.logits_g (G step, updated D)", "outputs.logits_g", logits_g, Kind::Forward);
    be.synchronize()?;
    Ok(out)
}

/// Per tensor, per entry: more room for each value, added to its absolute tolerance.
pub type Widening = BTreeMap<String, Vec<f64>>;

/// Runs the reference's iterations on `be` from its weights and inputs and compares every
/// tensor it holds, under `tol`.
pub fn run<B: Backend>(be: &B, r: &Reference, tol: &Tolerances) -> Result<Vec<Check>> {
    run_widened(be, r, tol, None)
}

/// `run`, with each tensor's bound widened entry by entry by `widen` (by check name).
pub fn run_widened<B: Backend>(be: &B, r: &Reference, tol: &Tolerances, widen: Option<&Widening>) -> Result<Vec<Check>> {
    let lr = Hyper::default().lr;
    let mut checks = Vec::new();
    for o in outputs(be, r)? {
        let reference = r.get(&o.key)?;
        let w = widen.and_then(|w| w.get(&o.name)).map(Vec::as_slice).unwrap_or(&[]);
        let (t, extra) = match o.kind {
            Kind::Forward => (tol.forward, Vec::new()),
            Kind::Grad => (grad_tol(reference, tol), Vec::new()),
            Kind::Running => (tol.running, Vec::new()),
            Kind::AfterAdam => (tol.after_adam, r.allowance(&o.key["after.".len()..], lr)?),
        };
        checks.push(compare_widened(&o.name, &o.ours, reference, t, &extra, w));
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
    ensure!(r.has_bf16(), "the reference ({}) has no PyTorch bf16 run: regenerate it with scripts/dev/torch_reference.py", r.shape());
    let outs = outputs(be, r)?;
    let our_grads: std::collections::HashMap<&str, &[f32]> =
        outs.iter().filter(|o| o.kind == Kind::Grad).map(|o| (&o.key["grads.".len()..], o.ours.as_slice())).collect();
    let peer_err_of = |key: &str| -> Result<f64> {
        let peer = r.get(&format!("bf16.{key}")).context("the reference has no PyTorch bf16 run: regenerate it with scripts/dev/torch_reference.py")?;
        Ok(super::rel_l2(r.get(key)?, peer))
    };
    for o in &outs {
        let (key, v, kind) = (o.key.as_str(), o.ours.as_slice(), o.kind);
        let reference = r.get(key)?;
        let peer = r.get(&format!("bf16.{key}")).context("the reference has no PyTorch bf16 run: regenerate it with scripts/dev/torch_reference.py")?;
        let mut loose = 0;
        let (ours_v, ref_v, peer_v) = if kind == Kind::AfterAdam {
            let name = &key["after.".len()..];
            let before = r.get(&format!("weights.{name}"))?;
            // Adam's first step is about lr * sign(g): where the reference gradient lies within
            // the bf16 noise of its tensor (three times the bound below, as an RMS), the sign,
            // and so the step, is a coin toss on either side; those entries are left out. So
            // are entries where our gradient's sign is not the reference's: there the steps
            // differ by 2 lr however right Adam is, and that difference is a gradient error,
            // which the tensor's gradient row judges (G's first layer had one such entry of
            // 1,456 beyond the noise, which alone put its update at the bound).
            let (g, g_peer) = (r.get(&format!("grads.{name}"))?, r.get(&format!("bf16.grads.{name}"))?);
            let g_ours = *our_grads.get(name).with_context(|| format!("no gradient of {name} among our outputs"))?;
            let rms = (g.iter().map(|v| (*v as f64).powi(2)).sum::<f64>() / g.len().max(1) as f64).sqrt();
            let noise = 3.0 * (BF16_PEER_FACTOR * super::rel_l2(g, g_peer) + bf16_floor()) * rms;
            let keep: Vec<bool> = g.iter().zip(g_ours).map(|(v, o)| (*v as f64).abs() > noise && (*v > 0.0) == (*o > 0.0)).collect();
            loose = keep.iter().filter(|k| !**k).count();
            let update = |t: &[f32]| t.iter().zip(before).zip(&keep).map(|((a, b), k)| if *k { a - b } else { 0.0 }).collect::<Vec<f32>>();
            (Cow::Owned(update(v)), Cow::Owned(update(reference)), Cow::Owned(update(peer)))
        } else {
            (Cow::Borrowed(v), Cow::Borrowed(reference), Cow::Borrowed(peer))
        };
        let (err, mut peer_err) = (super::rel_l2(&ref_v, &ours_v), super::rel_l2(&ref_v, &peer_v));
        // A layer's bias gradient sums its output gradient over the batch and the positions,
        // its weight gradient multiplies the same output gradient by the layer's input: both
        // inherit that gradient's error. A bias of a few values measures PyTorch's draw of it
        // poorly (D's text layer, 8 values: PyTorch 1.6e-2 on the bias, 9.3e-2 on the
        // weight; ours 1.2e-1 and 1.1e-1), so a bias is anchored on the larger of the two.
        if kind == Kind::Grad {
            if let Some(layer) = key.strip_suffix(".bias") {
                let weight = format!("{layer}.weight");
                if r.get(&weight).is_ok() {
                    peer_err = peer_err.max(peer_err_of(&weight)?);
                }
            }
        }
        // Forward values are held to the model alone; the peer anchors the rest.
        let limit = if kind == Kind::Forward { bf16_floor() } else { BF16_PEER_FACTOR * peer_err + bf16_floor() };
        let max_abs = ref_v.iter().zip(ours_v.iter()).fold(0.0f64, |m, (a, b)| m.max((*a as f64 - *b as f64).abs()));
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
            widened: false,
            max_abs_err: if max_abs.is_nan() { f64::INFINITY } else { max_abs },
            worst_ratio: ratio,
        });
    }
    Ok(checks)
}

/// How far TF32 tensor cores may move each compared value, from a yardstick: the CPU twin
/// with its GEMM operands rounded to TF32 ([`Cpu::with_tf32_operands`], the error model of
/// `verify::twin::TOL_GEMM_TF32` carried through whole iterations, fp32 where the GPU runs
/// its thin fp32 kernels), run on the reference. Each operand's rounding moves a GEMM
/// result by up to 2^-10 of its terms, and an iteration carries that through batchnorm and
/// the backward passes to gradients off by up to about 1e-2 of their scale. The GPU rounds
/// the same operands, but sums in other orders (and its tensor cores truncate their sums),
/// so the rounding of later operands drifts apart: the errors keep their size, not their
/// places. So every entry of a tensor gets `TF32_FACTOR` times the yardstick's largest
/// error on that tensor as more room. After Adam, an entry whose reference gradient in
/// some step lies within the gradient comparison's own bound (`tol`'s gradient bound,
/// widened so) of zero has no determined sign (Adam's first step is lr * sign(g)): it gets
/// room for the other sign (twice what the steps can move it: [`adam_step_bound`]), and the
/// largest error is taken over the other entries.
///
/// Measured in the simulation (2026-12-06, GEMM tf32 and tf32-async, both embedded
/// references, each tensor's largest |sim - ref| over the yardstick's): at most 1.75,
/// outside running variances at f32 rounding level (3.0), which the base bounds hold. A
/// yardstick that also rounded the thin kernels' operands measured another computation:
/// D gradients up to 35 times off the simulation's.
pub const TF32_FACTOR: f64 = 2.0;
pub fn tf32_widening(r: &Reference, tol: &Tolerances) -> Result<Widening> {
    let lr = Hyper::default().lr;
    let outs = outputs(&Cpu::with_tf32_operands(), r)?;
    let errors: BTreeMap<&str, Vec<f64>> = outs
        .iter()
        .map(|o| -> Result<(&str, Vec<f64>)> {
            let reference = r.get(&o.key)?;
            ensure!(o.ours.len() == reference.len(), "{}: {} values, the reference {}", o.name, o.ours.len(), reference.len());
            Ok((o.key.as_str(), o.ours.iter().zip(reference).map(|(a, b)| (*a as f64 - *b as f64).abs()).collect()))
        })
        .collect::<Result<_>>()?;
    let max = |v: &[f64]| v.iter().fold(0.0f64, |m, x| m.max(*x));
    let mut w = Widening::new();
    for o in &outs {
        let e = &errors[o.key.as_str()];
        if o.kind != Kind::AfterAdam {
            w.insert(o.name.clone(), vec![TF32_FACTOR * max(e); e.len()]);
            continue;
        }
        // Entries whose gradient TF32 leaves without a sign, in any step.
        let param = &o.key["after.".len()..];
        let mut unsigned = vec![false; e.len()];
        for k in 1..=r.iterations {
            let key = r.grad_key(param, k);
            let (g, ge) = (r.get(&key)?, errors.get(key.as_str()).with_context(|| format!("no comparison of {key}"))?);
            let t = grad_tol(g, tol);
            let room = t.atol + TF32_FACTOR * max(ge);
            unsigned.iter_mut().zip(g).for_each(|(u, g)| *u |= (*g as f64).abs() * (1.0 - t.rtol) <= room);
        }
        let signed: Vec<f64> = e.iter().zip(&unsigned).filter(|(_, u)| !**u).map(|(e, _)| *e).collect();
        let room = TF32_FACTOR * max(&signed);
        // The reference steps by about +-lr there (its gradient is far above eps), so the
        // other sign is up to twice the most the steps can move a weight away.
        let steps = 2.0 * adam_steps_bound(r.iterations) * lr as f64;
        w.insert(o.name.clone(), unsigned.iter().map(|u| if *u { room + steps } else { room }).collect());
    }
    Ok(w)
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
        let verdict = if c.widened { format!("{verdict} (tf32)") } else { verdict.to_string() };
        let _ = writeln!(
            s,
            "{:<48} {:>6} {:>10.2e} {:>8.0e} {:>11.3e} {:>9.3} {loose:>6}  {verdict}",
            c.name, c.len, c.tol.atol, c.tol.rtol, c.max_abs_err, c.worst_ratio
        );
    }
    let _ = writeln!(
        s,
        "{} tensors compared, {failed} failed (loose: entries whose reference gradient is zero within tolerance, allowed one Adam step of difference; in bf16 update rows, entries whose reference gradient lies in the bf16 noise or whose sign ours does not share, left out)",
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
    fn the_embedded_gancls_reference_parses() {
        let r = Reference::parse(EMBEDDED_GANCLS_64).unwrap();
        assert_eq!((r.cfg.size, r.cfg.width, r.batch, r.iterations, r.matching_aware), (64, 4, 2, 2, 0.5));
        assert_eq!(r.get("inputs.mismatched").unwrap().len(), 2 * 2 * r.cfg.text_dim, "two iterations of mismatched captions");
        assert_eq!(r.get("outputs.loss_d").unwrap().len(), 2, "one loss per iteration");
    }

    #[test]
    fn an_overlay_must_match_its_reference() {
        let mut r = Reference::embedded().unwrap();
        let other = Reference::parse(EMBEDDED_GANCLS_64).unwrap();
        // A full reference is no overlay, and an overlay is no reference.
        assert!(r.overlay(EMBEDDED).expect_err("a full reference").to_string().contains("not an overlay"));
        // Settings must agree: build an overlay from the other reference's metadata.
        let mut meta = other.settings.clone();
        meta.insert("overlay".into(), "test".into());
        let tensors = [("outputs.loss_d".to_string(), safetensors::tensor::TensorView::new(Dtype::F32, vec![2], &[0u8; 8]).unwrap())];
        let bytes = safetensors::serialize(tensors, Some(meta.into_iter().collect())).unwrap();
        assert!(r.overlay(&bytes).expect_err("other settings").to_string().contains("written for another reference"));
        assert!(Reference::parse(&bytes).err().expect("an overlay").to_string().contains("overlay"));
    }

    #[test]
    fn adam_steps_are_bounded_as_stated() {
        // t = 1: lr * g / |g|; t = 2 with betas (0.5, 0.999): sqrt(2 (1/9 + 4/9)) nearly.
        assert!((adam_step_bound(1, 0.5, 0.999) - 1.0).abs() < 1e-12);
        let b2 = adam_step_bound(2, 0.5, 0.999);
        assert!((b2 - 1.0541).abs() < 1e-3, "{b2}");
        // The bound is reached: the gradient history that aligns with the weights.
        let (m, v) = (0.25 * 1.0 + 0.5 * 2.0, 0.000999 * 1.0 + 0.001 * 4.0);
        let step = (m / 0.75) / (v / (1.0 - 0.999f64 * 0.999)).sqrt();
        assert!(step <= b2 + 1e-12 && step > 1.05, "{step}");
    }

    #[test]
    fn nan_and_length_mismatch_fail() {
        let t = Tol { atol: 1.0, rtol: 0.0 };
        assert!(!compare("nan", &[f32::NAN], &[0.0], t).passed());
        assert!(!compare("short", &[0.0], &[0.0, 0.0], t).passed());
        assert!(compare("equal", &[0.5, 2.0], &[0.5, 2.0], t).passed());
    }
}
