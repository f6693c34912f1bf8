//! Checkpoints: one safetensors file with PyTorch-style tensor names (the weights load
//! in Python as they are) and a JSON metadata document in the safetensors header.
//!
//! Written to a temporary file in the same folder, synced, then renamed over the final
//! name, so a crash never leaves a half-written file in place of a good one.

use super::gan::Gan;
use crate::backend::Backend;
use crate::model::Module;
use anyhow::{bail, Context, Result};
use safetensors::tensor::{Dtype, SafeTensorError, SafeTensors, TensorView};
use std::borrow::Cow;
use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

/// The metadata key under which the JSON document is stored.
const META_KEY: &str = "gan_engine";
pub const FORMAT: &str = "gan-engine-checkpoint-1";

pub struct NamedTensor {
    pub name: String,
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

pub struct Checkpoint {
    pub meta: serde_json::Value,
    pub tensors: Vec<NamedTensor>,
}

impl Checkpoint {
    pub fn get(&self, name: &str) -> Option<&NamedTensor> {
        self.tensors.iter().find(|t| t.name == name)
    }
}

/// Adam moment names follow PyTorch's optimizer state: `exp_avg`, `exp_avg_sq`.
fn moment_names(param: &str) -> (String, String) {
    (format!("optimizer.{param}.exp_avg"), format!("optimizer.{param}.exp_avg_sq"))
}

impl<B: Backend> Gan<B> {
    /// Every parameter, batchnorm running statistic and Adam moment, in checkpoint order:
    /// name, shape and the buffer on the device. The EMA generator, when there is one,
    /// comes last (`generator_ema.*`: its weights and statistics; it has no optimizer).
    fn state_tensors(&self) -> Vec<(String, Vec<usize>, &B::Buf)> {
        let mut out = Vec::new();
        for module in [&self.g as &dyn Module<B>, &self.d as &dyn Module<B>] {
            for p in module.params() {
                out.push((p.name.clone(), p.shape.clone(), &p.value));
            }
            for b in module.buffers() {
                out.push((b.name.clone(), vec![b.len], &b.value));
            }
            for p in module.params() {
                let (m, v) = moment_names(&p.name);
                out.push((m, p.shape.clone(), &p.m));
                out.push((v, p.shape.clone(), &p.v));
            }
        }
        if let Some(avg) = &self.g_ema {
            for p in avg.params() {
                out.push((p.name.clone(), p.shape.clone(), &p.value));
            }
            for b in avg.buffers() {
                out.push((b.name.clone(), vec![b.len], &b.value));
            }
        }
        out
    }

    /// Every parameter, batchnorm running statistic and Adam moment, on the host.
    pub fn export(&self, be: &B) -> Result<Vec<NamedTensor>> {
        self.state_tensors()
            .into_iter()
            .map(|(name, shape, buf)| {
                let mut data = vec![0.0; shape.iter().product()];
                be.download(buf, &mut data)?;
                Ok(NamedTensor { name, shape, data })
            })
            .collect()
    }

    /// The first value of the state (as `export` lists it) that is not finite, named; read
    /// back one tensor at a time.
    pub fn first_non_finite(&self, be: &B) -> Result<Option<String>> {
        let mut host = Vec::new();
        for (name, shape, buf) in self.state_tensors() {
            host.resize(shape.iter().product(), 0.0);
            be.download(buf, &mut host)?;
            if let Some(i) = host.iter().position(|v| !v.is_finite()) {
                return Ok(Some(format!("tensor {name} holds {} at index {i}", host[i])));
            }
        }
        Ok(None)
    }

    /// Loads what `export` wrote. Every tensor must be present with its exact shape (the
    /// EMA generator's too, when this model has one); the optimizer moments may be absent
    /// (weights-only files), then they stay zero.
    pub fn import(&mut self, be: &B, tensors: &[NamedTensor]) -> Result<()> {
        let by_name: HashMap<&str, &NamedTensor> = tensors.iter().map(|t| (t.name.as_str(), t)).collect();
        let find = |name: &str, shape: &[usize]| -> Result<&NamedTensor> {
            let t = by_name.get(name).with_context(|| format!("tensor {name} is missing"))?;
            if t.shape != shape {
                bail!("tensor {name} has shape {:?}, the model needs {:?}", t.shape, shape);
            }
            Ok(t)
        };
        for module in [&mut self.g as &mut dyn Module<B>, &mut self.d as &mut dyn Module<B>] {
            for p in module.params_mut() {
                let shape = p.shape.clone();
                be.upload(&mut p.value, &find(&p.name, &shape)?.data)?;
                let (m, v) = moment_names(&p.name);
                if by_name.contains_key(m.as_str()) {
                    be.upload(&mut p.m, &find(&m, &shape)?.data)?;
                    be.upload(&mut p.v, &find(&v, &shape)?.data)?;
                }
            }
            for b in module.buffers_mut() {
                let len = b.len;
                be.upload(&mut b.value, &find(&b.name, &[len])?.data)?;
            }
        }
        if let Some(avg) = &mut self.g_ema {
            let find = |name: &str, shape: &[usize]| {
                find(name, shape).map_err(|e| anyhow::anyhow!("{e}, but the run has an EMA generator (its options give --ema-half-life)"))
            };
            for p in avg.params_mut() {
                let shape = p.shape.clone();
                be.upload(&mut p.value, &find(&p.name, &shape)?.data)?;
            }
            for b in avg.buffers_mut() {
                let len = b.len;
                be.upload(&mut b.value, &find(&b.name, &[len])?.data)?;
            }
            self.ema_stats_fresh = true;
        }
        Ok(())
    }
}

/// The little-endian bytes safetensors stores: the floats' own memory on a little-endian
/// machine (no copy).
fn le_bytes(v: &[f32]) -> Cow<'_, [u8]> {
    if cfg!(target_endian = "little") {
        Cow::Borrowed(bytemuck::cast_slice(v))
    } else {
        Cow::Owned(v.iter().flat_map(|x| x.to_le_bytes()).collect())
    }
}

/// Floats from little-endian bytes. Copied, not cast in place: a tensor's data in a
/// safetensors file need not be 4-byte aligned.
fn f32s_from_le_bytes(bytes: &[u8]) -> Vec<f32> {
    let mut v: Vec<f32> = bytemuck::pod_collect_to_vec(bytes);
    if cfg!(target_endian = "big") {
        v.iter_mut().for_each(|x| *x = f32::from_bits(u32::from_le(x.to_bits())));
    }
    v
}

/// Writes `ck` to `path` atomically (temp file, fsync, rename, fsync of the folder). A
/// state with a non-finite value is refused: no checkpoint holds one.
pub fn save(path: &Path, ck: &Checkpoint) -> Result<()> {
    if let Some(bad) = first_non_finite(&ck.tensors) {
        bail!("not writing the checkpoint {}: {bad}", path.display());
    }
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    fs::create_dir_all(dir).with_context(|| format!("cannot create the folder {}", dir.display()))?;
    let bytes: Vec<Cow<[u8]>> = ck.tensors.iter().map(|t| le_bytes(&t.data)).collect();
    let views: Vec<(String, TensorView)> =
        ck.tensors.iter().zip(&bytes).map(|(t, b)| Ok((t.name.clone(), TensorView::new(Dtype::F32, t.shape.clone(), b)?))).collect::<Result<_>>()?;
    let meta = HashMap::from([(META_KEY.to_string(), serde_json::to_string(&ck.meta)?)]);
    let data = safetensors::serialize(views, Some(meta))?;

    let tmp = dir.join(format!(".{}.tmp", path.file_name().and_then(|n| n.to_str()).unwrap_or("checkpoint")));
    let write = || -> Result<()> {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(&data)?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        if let Ok(d) = fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    };
    write()
        .inspect_err(|_| {
            let _ = fs::remove_file(&tmp);
        })
        .with_context(|| format!("cannot write the checkpoint {}", path.display()))
}

/// Reads a checkpoint file; a truncated, foreign or non-finite file is a clear error.
pub fn load(path: &Path) -> Result<Checkpoint> {
    let data = fs::read(path).with_context(|| format!("cannot read the checkpoint {}", path.display()))?;
    from_bytes(&data).map_err(|why| anyhow::anyhow!("{} is not a readable gan-engine checkpoint ({why:#}); pick another checkpoint or retrain", path.display()))
}

/// Parses the bytes of a checkpoint file: the safetensors layout, the gan-engine metadata
/// and F32 tensors whose every value is finite. The error says what is wrong, in words.
pub fn from_bytes(data: &[u8]) -> Result<Checkpoint> {
    let (_, header) = SafeTensors::read_metadata(data).map_err(describe)?;
    let meta_text = header.metadata().as_ref().and_then(|m| m.get(META_KEY)).context("no gan-engine metadata")?;
    let meta: serde_json::Value = serde_json::from_str(meta_text).context("metadata")?;
    if meta.get("format").and_then(|f| f.as_str()) != Some(FORMAT) {
        bail!("format is not {FORMAT}");
    }
    let st = SafeTensors::deserialize(data).map_err(describe)?;
    let mut tensors = Vec::new();
    for (name, view) in st.tensors() {
        if view.dtype() != Dtype::F32 {
            bail!("tensor {name} is {:?}, not F32", view.dtype());
        }
        tensors.push(NamedTensor { name, shape: view.shape().to_vec(), data: f32s_from_le_bytes(view.data()) });
    }
    if let Some(bad) = first_non_finite(&tensors) {
        bail!("{bad}: a diverged run's state, which no checkpoint may hold");
    }
    Ok(Checkpoint { meta, tensors })
}

/// What a safetensors error means for a person holding the file.
fn describe(e: SafeTensorError) -> anyhow::Error {
    use SafeTensorError::*;
    let words = match e {
        HeaderTooSmall => "the file is too short to hold a safetensors header: truncated or empty".to_string(),
        InvalidHeaderLength => "the header is longer than the file: truncated, or not a safetensors file".to_string(),
        HeaderTooLarge => "the header length is over 100 MB: not a safetensors file".to_string(),
        InvalidHeader(_) | InvalidHeaderDeserialization(_) | JsonError(_) => format!("the header is not valid safetensors JSON ({e})"),
        MetadataIncompleteBuffer => "the tensor data does not end where the file does: truncated, or extra bytes after it".to_string(),
        TensorInvalidInfo | InvalidOffset(_) | ValidationOverflow | MisalignedSlice | InvalidTensorView(..) => {
            format!("a tensor's shape, type and place in the file disagree ({e})")
        }
        other => other.to_string(),
    };
    anyhow::anyhow!(words)
}

/// The first non-finite value among `tensors`, named: "tensor NAME holds NaN at index I".
pub fn first_non_finite(tensors: &[NamedTensor]) -> Option<String> {
    tensors.iter().find_map(|t| t.data.iter().position(|v| !v.is_finite()).map(|i| format!("tensor {} holds {} at index {i}", t.name, t.data[i])))
}

/// `DIR/checkpoints/step-NNNNNNNN.safetensors`, ordered by step.
pub fn list(run_dir: &Path) -> Result<Vec<PathBuf>> {
    let dir = run_dir.join("checkpoints");
    if !dir.is_dir() {
        return Ok(Vec::new());
    }
    let mut v: Vec<PathBuf> = fs::read_dir(&dir)
        .with_context(|| format!("cannot list {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("step-") && n.ends_with(".safetensors")))
        .collect();
    v.sort();
    Ok(v)
}

/// The step of a `step-NNNNNNNN.safetensors` file name.
pub fn step_of(path: &Path) -> Option<u64> {
    path.file_name()?.to_str()?.strip_prefix("step-")?.strip_suffix(".safetensors")?.parse().ok()
}

pub fn path_for(run_dir: &Path, step: u64) -> PathBuf {
    run_dir.join("checkpoints").join(format!("step-{step:08}.safetensors"))
}

/// A checkpoint file given directly, or the newest one in a run folder.
pub fn resolve(path: &Path) -> Result<PathBuf> {
    if path.is_file() {
        return Ok(path.to_path_buf());
    }
    if !path.exists() {
        bail!("{} does not exist: give a run folder (the --out of train) or a .safetensors checkpoint", path.display());
    }
    list(path)?.pop().with_context(|| format!("{} holds no checkpoints (expected {}/checkpoints/step-*.safetensors)", path.display(), path.display()))
}

/// A checkpoint that loaded and passed its caller's check, and the newer ones of its run
/// folder that did not.
pub struct Found<T> {
    pub path: PathBuf,
    pub checkpoint: Checkpoint,
    /// What the caller's check made of it (the run state).
    pub checked: T,
    /// Newer checkpoints of the folder that do not load or do not pass, newest first, with
    /// the reason.
    pub skipped: Vec<(PathBuf, String)>,
}

/// Loads `path`, a checkpoint file (which must load and pass `check`) or a run folder: its
/// newest checkpoint that loads and passes `check`. Each newer one that fails is skipped
/// with its reason, so one damaged file does not make the run's good ones unusable.
pub fn load_checked<T>(path: &Path, check: impl Fn(&Checkpoint) -> Result<T>) -> Result<Found<T>> {
    if path.is_file() || !path.exists() {
        let file = resolve(path)?;
        let ck = load(&file)?;
        let checked = check(&ck).with_context(|| file.display().to_string())?;
        return Ok(Found { path: file, checkpoint: ck, checked, skipped: Vec::new() });
    }
    let all = list(path)?;
    if all.is_empty() {
        resolve(path)?;
    }
    let mut skipped = Vec::new();
    for file in all.into_iter().rev() {
        match load(&file).and_then(|ck| Ok((check(&ck)?, ck))) {
            Ok((checked, checkpoint)) => return Ok(Found { path: file, checkpoint, checked, skipped }),
            Err(e) => skipped.push((file, format!("{e:#}"))),
        }
    }
    let reasons: Vec<String> = skipped.iter().map(|(p, why)| format!("{}: {why}", p.display())).collect();
    bail!("{} holds no checkpoint that loads ({})", path.display(), reasons.join("; "))
}

/// Keeps the newest `keep` checkpoints of a run folder.
pub fn prune(run_dir: &Path, keep: usize) -> Result<()> {
    let all = list(run_dir)?;
    if all.len() > keep {
        for p in &all[..all.len() - keep] {
            fs::remove_file(p).with_context(|| format!("cannot remove the old checkpoint {}", p.display()))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tensors_are_stored_as_little_endian_f32() {
        let v = [1.0f32, -2.5, 0.0, -0.0, f32::MIN_POSITIVE / 2.0, f32::from_bits(0x7fc0_1234)];
        let bytes = le_bytes(&v);
        assert_eq!(bytes[..8], [0x00, 0x00, 0x80, 0x3f, 0x00, 0x00, 0x20, 0xc0]);
        let back = f32s_from_le_bytes(&bytes);
        assert_eq!(back.iter().map(|x| x.to_bits()).collect::<Vec<_>>(), v.iter().map(|x| x.to_bits()).collect::<Vec<_>>());
        // Data at an odd offset, as a foreign writer may leave it.
        let mut shifted = vec![0u8];
        shifted.extend_from_slice(&bytes);
        assert_eq!(f32s_from_le_bytes(&shifted[1..]).iter().map(|x| x.to_bits()).collect::<Vec<_>>(), v.iter().map(|x| x.to_bits()).collect::<Vec<_>>());
    }

    #[test]
    fn a_checkpoint_reads_back_bit_for_bit() {
        let dir = std::env::temp_dir().join(format!("gan-engine-checkpoint-test-{}", std::process::id()));
        let path = dir.join("step.safetensors");
        let tensors = vec![
            NamedTensor { name: "a.weight".into(), shape: vec![2, 3], data: vec![0.5, -1.0, 3.25, f32::MAX, -0.0, 1e-40] },
            NamedTensor { name: "b".into(), shape: vec![1], data: vec![7.0] },
        ];
        save(&path, &Checkpoint { meta: serde_json::json!({ "format": FORMAT }), tensors }).unwrap();
        let ck = load(&path).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        let a = ck.get("a.weight").unwrap();
        assert_eq!(a.shape, [2, 3]);
        assert_eq!(a.data.iter().map(|x| x.to_bits()).collect::<Vec<_>>(), [0.5f32, -1.0, 3.25, f32::MAX, -0.0, 1e-40].map(f32::to_bits));
        assert_eq!(ck.get("b").unwrap().data, [7.0]);
    }
}
