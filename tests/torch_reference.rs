//! Same numbers as PyTorch: one training iteration of the small model (32 px, width 8,
//! batch 4) on our engine against the reference state that `scripts/torch_reference.py`
//! wrote with PyTorch in float64 (stored as f32, so the reference is exact to f32
//! rounding).
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
//! these by far more than f32 rounding; `scripts/torch_reference.py --perturb ...`
//! writes such a wrong reference, and `TORCH_REFERENCE=that/file` points this test at it.
//!
//! The comparison is generic over `Backend`: the CPU backend runs it always, the CUDA
//! backend where a GPU is present (without one that test says it compared nothing).

use anyhow::{bail, ensure, Context, Result};
use gan_engine::backend::cpu::Cpu;
use gan_engine::backend::cuda::GpuBackend;
use gan_engine::backend::Backend;
use gan_engine::model::{ModelConfig, Module};
use gan_engine::nn::{Mode, Shape, Tensor};
use gan_engine::train::checkpoint::NamedTensor;
use gan_engine::train::{Gan, Hyper, StepInputs};
use safetensors::tensor::{Dtype, SafeTensors};
use std::collections::BTreeMap;

/// The committed reference file.
const DEFAULT_PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/torch_reference.safetensors");

struct Reference {
    cfg: ModelConfig,
    batch: usize,
    note: String,
    tensors: BTreeMap<String, (Vec<usize>, Vec<f32>)>,
}

impl Reference {
    fn parse(bytes: &[u8]) -> Result<Reference> {
        let (_, header) = SafeTensors::read_metadata(bytes).map_err(|e| anyhow::anyhow!("not a safetensors file: {e:?}"))?;
        let meta = header.metadata().clone().context("the reference has no metadata: regenerate it with scripts/torch_reference.py")?;
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

    fn get(&self, name: &str) -> Result<&[f32]> {
        Ok(&self.tensors.get(name).with_context(|| format!("the reference has no tensor {name}"))?.1)
    }

    /// Every tensor under `prefix.`, with the prefix removed.
    fn group(&self, prefix: &str) -> Vec<NamedTensor> {
        let p = format!("{prefix}.");
        self.tensors
            .iter()
            .filter_map(|(k, (shape, data))| k.strip_prefix(&p).map(|name| NamedTensor { name: name.to_string(), shape: shape.clone(), data: data.clone() }))
            .collect()
    }
}

/// `|ours - ref| <= atol + rtol * |ref|`, per element.
#[derive(Clone, Copy, Debug)]
struct Tol {
    atol: f64,
    rtol: f64,
}

/// Forward values (G output, logits, losses, probabilities): f32 rounding through a few
/// layers, a few 1e-7 relative.
const FORWARD: Tol = Tol { atol: 1e-5, rtol: 1e-4 };
/// Parameter gradients: backprop through batchnorm at batch 4 cancels terms, so errors
/// are relative to the tensor's scale rather than to each entry; the absolute part is
/// `GRAD_SCALE * max |ref|` of the tensor, computed per tensor.
const GRAD_SCALE: f64 = 1e-4;
const GRAD_RTOL: f64 = 1e-3;
/// Weights after one Adam step move by about lr = 2e-4 each; an error of 1e-3 of that
/// step is 2e-7.
const AFTER_ADAM: Tol = Tol { atol: 2e-7, rtol: 1e-6 };
/// Running statistics: averages of batch statistics, forward precision.
const RUNNING: Tol = Tol { atol: 1e-5, rtol: 1e-4 };

struct Check {
    name: String,
    len: usize,
    tol: Tol,
    /// Entries given a looser bound (see `adam_allowance`).
    loose: usize,
    max_abs_err: f64,
    /// max |ours - ref| / (atol + rtol |ref|): pass below 1.
    worst_ratio: f64,
}

impl Check {
    fn passed(&self) -> bool {
        self.worst_ratio <= 1.0
    }
}

fn compare(name: &str, ours: &[f32], reference: &[f32], tol: Tol) -> Check {
    compare_with(name, ours, reference, tol, &[])
}

/// `extra[i]`, when given, is added to entry i's absolute tolerance.
fn compare_with(name: &str, ours: &[f32], reference: &[f32], tol: Tol, extra: &[f64]) -> Check {
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

fn grad_tol(reference: &[f32]) -> Tol {
    let scale = reference.iter().fold(0.0f64, |m, v| m.max(v.abs() as f64));
    Tol { atol: GRAD_SCALE * scale.max(1e-6), rtol: GRAD_RTOL }
}

/// Adam's first step moves a weight by `lr * g / (|g| + eps)`. Where the true gradient
/// is zero up to rounding (it happens: a bias whose effect the next batchnorm removes),
/// both sides hold rounding noise of about 1e-9 to 1e-18, and dividing by eps = 1e-8
/// turns that noise into any step in [-lr, lr]. Entries whose reference gradient is
/// below `NOISE_GRAD * max |g|` of its tensor (f32 rounding level) therefore get `lr` of
/// extra room; every other entry keeps the tight bound: there `g / (|g| + eps)` moves by
/// `eps * err / g^2`, under 1e-5 of the step for the errors we see.
const NOISE_GRAD: f64 = 1e-5;
fn adam_allowance(grad_ref: &[f32], lr: f32) -> Vec<f64> {
    let scale = grad_ref.iter().fold(0.0f64, |m, v| m.max(v.abs() as f64));
    grad_ref.iter().map(|g| if (*g as f64).abs() <= NOISE_GRAD * scale { lr as f64 } else { 0.0 }).collect()
}

fn download<B: Backend>(be: &B, buf: &B::Buf, len: usize) -> Result<Vec<f32>> {
    let mut v = vec![0.0; len];
    be.download(buf, &mut v)?;
    Ok(v)
}

/// Runs one iteration of our engine on `be` from the reference weights and inputs and
/// compares everything the reference holds.
fn run_reference<B: Backend>(be: &B, r: &Reference) -> Result<Vec<Check>> {
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
    checks.push(compare("outputs.fake (G output)", &fake_v, r.get("outputs.fake")?, FORWARD));
    let logits_real = probe.d.forward(be, &x, &t, Mode::Train)?.to_f32(be)?;
    checks.push(compare("outputs.logits_real", &logits_real, r.get("outputs.logits_real")?, FORWARD));
    let logits_fake = probe.d.forward(be, &fake, &t, Mode::Train)?.to_f32(be)?;
    checks.push(compare("outputs.logits_fake", &logits_fake, r.get("outputs.logits_fake")?, FORWARD));

    // The real thing: one full iteration, as training runs it.
    let mut gan = Gan::new(be, cfg, &hp, 0)?;
    gan.import(be, &weights)?;
    let stats = gan.iteration(be, n, &StepInputs { images, texts, noise, mismatched: None })?;
    for (name, v) in [("loss_d", stats.loss_d), ("loss_g", stats.loss_g), ("d_real", stats.d_real), ("d_fake", stats.d_fake)] {
        let key = format!("outputs.{name}");
        checks.push(compare(&key, &[v], r.get(&key)?, FORWARD));
    }

    // Gradients survive the Adam step (it reads them, nothing zeroes them until the next
    // step): D's are the D step's (frozen in the G step), G's are the G step's.
    let mut compared = 0;
    for p in gan.d.params().into_iter().chain(gan.g.params()) {
        let key = format!("grads.{}", p.name);
        let reference = r.get(&key)?;
        checks.push(compare(&key, &download(be, &p.grad, p.len())?, reference, grad_tol(reference)));
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
            checks.push(compare(&key, &o.data, &rt.data, RUNNING));
        } else {
            let extra = adam_allowance(r.get(&format!("grads.{}", rt.name))?, hp.lr);
            checks.push(compare_with(&key, &o.data, &rt.data, AFTER_ADAM, &extra));
        }
    }

    // D's logits in the G step: the same fake batch through D after its Adam step.
    let logits_g = gan.d.forward(be, &fake, &t, Mode::Train)?.to_f32(be)?;
    checks.push(compare("outputs.logits_g (G step, updated D)", &logits_g, r.get("outputs.logits_g")?, FORWARD));
    Ok(checks)
}

fn report(device: &str, r: &Reference, checks: &[Check]) -> usize {
    println!("PyTorch reference ({}), {} px, width {}, batch {}, on {device}", r.note, r.cfg.size, r.cfg.width, r.batch);
    println!("{:<48} {:>6} {:>10} {:>8} {:>11} {:>9} {:>6}  result", "tensor", "len", "atol", "rtol", "max |err|", "err/tol", "loose");
    let mut failed = 0;
    for c in checks {
        failed += usize::from(!c.passed());
        let verdict = if c.passed() { "ok" } else { "FAIL" };
        let loose = if c.loose > 0 { c.loose.to_string() } else { String::new() };
        println!("{:<48} {:>6} {:>10.2e} {:>8.0e} {:>11.3e} {:>9.3} {loose:>6}  {verdict}", c.name, c.len, c.tol.atol, c.tol.rtol, c.max_abs_err, c.worst_ratio);
    }
    println!("{} tensors compared, {failed} failed (loose: entries whose reference gradient is zero within tolerance, allowed one Adam step of difference)", checks.len());
    failed
}

fn load() -> Result<Reference> {
    let path = std::env::var("TORCH_REFERENCE").unwrap_or_else(|_| DEFAULT_PATH.to_string());
    let bytes = std::fs::read(&path).with_context(|| format!("cannot read {path}: run scripts/torch_reference.py to write it"))?;
    Reference::parse(&bytes).with_context(|| format!("reading {path}"))
}

#[test]
fn cpu_matches_pytorch_reference() -> Result<()> {
    let r = load()?;
    let be = Cpu::new();
    let checks = run_reference(&be, &r)?;
    let failed = report(&be.name(), &r, &checks);
    if failed > 0 {
        bail!("{failed} tensor(s) differ from the PyTorch reference beyond tolerance");
    }
    Ok(())
}

#[test]
fn cuda_matches_pytorch_reference() -> Result<()> {
    // Same comparison, same tolerances, on the GPU when this machine has one.
    let be = match GpuBackend::cuda() {
        Ok(be) => be,
        Err(e) => {
            println!("cuda: skipped, nothing compared: {e:#}");
            return Ok(());
        }
    };
    let r = load()?;
    let checks = run_reference(&be, &r)?;
    let failed = report(&be.name(), &r, &checks);
    if failed > 0 {
        bail!("{failed} tensor(s) differ from the PyTorch reference beyond tolerance on the GPU");
    }
    Ok(())
}

#[test]
fn a_wrong_reference_is_rejected() -> Result<()> {
    // The negative control: the same reference with one convention changed by hand (the
    // loss halved twice, as a summed-then-halved D loss would give) must fail, so the
    // comparison above cannot pass vacuously.
    let mut r = load()?;
    if let Some((_, v)) = r.tensors.get_mut("outputs.loss_d") {
        v[0] *= 0.5;
    }
    let be = Cpu::new();
    let checks = run_reference(&be, &r)?;
    let bad: Vec<&str> = checks.iter().filter(|c| !c.passed()).map(|c| c.name.as_str()).collect();
    assert_eq!(bad, ["outputs.loss_d"], "exactly the altered tensor must fail");
    Ok(())
}
