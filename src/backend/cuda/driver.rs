//! The real GPU: driver context and stream (cudarc), NVRTC compilation at first use with
//! a PTX disk cache, function lookup. Every failure is an `Err` with a sentence for
//! people; cudarc would panic on the first call into a missing driver library, so its
//! presence is checked before anything else is touched. NVRTC is loaded by nvrtc.rs, which
//! also finds NVRTC 13 (cudarc 0.19 looks for the CUDA 12 names only).

use super::{nvrtc, source, GemmMode};
use anyhow::{anyhow, bail, Context, Result};
use cudarc::driver::{CudaContext, CudaFunction, CudaModule, CudaStream};
use cudarc::nvrtc::Ptx;
use std::cell::RefCell;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

pub struct Cuda {
    pub ctx: Arc<CudaContext>,
    pub stream: Arc<CudaStream>,
    pub device_name: String,
    pub capability: (i32, i32),
    /// The virtual architecture PTX is generated for, e.g. `compute_90`.
    pub arch: String,
    pub nvrtc: (i32, i32),
    modules: RefCell<HashMap<&'static str, Arc<CudaModule>>>,
    functions: RefCell<HashMap<&'static str, CudaFunction>>,
}

/// NVRTC's version, e.g. (12, 9). Loads NVRTC (without preferring a version) if nothing has yet.
pub fn nvrtc_version() -> Result<(i32, i32)> {
    Ok(nvrtc::get(None)?.version)
}

/// The file NVRTC was loaded from.
pub fn nvrtc_path() -> Result<String> {
    Ok(nvrtc::get(None)?.path.clone())
}

/// The architectures this NVRTC can generate code for, as numbers (61, 75, 90, ...).
pub fn nvrtc_archs() -> Result<Vec<i32>> {
    nvrtc::get(None)?.archs()
}

/// Compiles one kernel module (`conv`, `batchnorm`, ...) to PTX for `arch` (`compute_90` or
/// `sm_90`) with the GEMM tiles in `mode`. The error carries NVRTC's log.
pub fn compile_module(module: &str, arch: &str, mode: GemmMode) -> Result<String> {
    let src = source::expanded(module).with_context(|| format!("no kernel module named {module}"))?;
    let nv = nvrtc::get(None)?;
    let (major, minor) = nv.version;
    let mut options = vec![format!("--gpu-architecture={arch}"), "--std=c++17".into(), "-lineinfo".into()];
    options.extend(mode.defines());
    match nv
        .compile(&src, &format!("{module}.cu"), &options)
        .with_context(|| format!("NVRTC {major}.{minor} could not compile kernels/{module}.cu for {arch}"))?
    {
        Ok(ptx) => Ok(ptx),
        Err(f) => Err(anyhow!("NVRTC {major}.{minor} failed to compile kernels/{module}.cu for {arch} ({}, options {options:?}):\n{}", f.status, f.log)),
    }
}

/// Where compiled PTX is kept between runs: `$GAN_ENGINE_PTX_CACHE`, else the user's cache
/// folder. `None` when there is no home to put it in (then nothing is cached).
fn cache_dir() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("GAN_ENGINE_PTX_CACHE") {
        return Some(PathBuf::from(d));
    }
    let base = std::env::var_os("XDG_CACHE_HOME").map(PathBuf::from).or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("gan-engine").join("ptx"))
}

impl Cuda {
    /// Opens GPU 0. `Err` (never a panic) when the driver, a GPU or NVRTC is missing.
    pub fn open() -> Result<Cuda> {
        // SAFETY: only tries to dlopen the driver library by its candidate names.
        if !unsafe { cudarc::driver::sys::is_culib_present() } {
            bail!("no NVIDIA driver found (libcuda.so could not be loaded): install the driver, or use --device cpu");
        }
        let count = CudaContext::device_count()
            .map_err(|e| anyhow!("the NVIDIA driver did not initialise ({e:?}): is a GPU visible to this process? Use --device cpu otherwise"))?;
        if count < 1 {
            bail!("the NVIDIA driver reports no GPU: use --device cpu");
        }
        // The driver loads PTX only from an NVRTC no newer than itself: look for its own
        // major version first.
        let mut driver_version = 0;
        // SAFETY: the driver library is present (checked above); the pointer is valid.
        let prefer = match unsafe { cudarc::driver::sys::cuDriverGetVersion(&mut driver_version) } {
            cudarc::driver::sys::CUresult::CUDA_SUCCESS if driver_version > 0 => Some(driver_version / 1000),
            _ => None,
        };
        let nvrtc = nvrtc::get(prefer)?.version;
        let ctx = CudaContext::new(0).map_err(|e| anyhow!("creating a CUDA context on GPU 0 failed: {e:?}"))?;
        // One stream carries all work and buffers are addressed by raw pointer, so
        // cudarc's per-buffer event bookkeeping would only add cost.
        // SAFETY: every launch and copy of this backend goes to `stream`, in order.
        unsafe { ctx.disable_event_tracking() };
        let stream = ctx.default_stream();
        let capability = ctx.compute_capability().map_err(|e| anyhow!("reading the GPU's compute capability: {e:?}"))?;
        let device_name = ctx.name().unwrap_or_else(|_| "unknown GPU".into());
        // PTX for the device's own virtual architecture, or for the newest one this NVRTC
        // knows when the GPU is newer than NVRTC; the driver JIT-compiles it either way.
        let want = capability.0 * 10 + capability.1;
        let archs = nvrtc_archs()?;
        let pick = archs
            .iter()
            .copied()
            .filter(|a| *a <= want)
            .max()
            .with_context(|| format!("NVRTC {}.{} cannot generate code for this GPU (sm_{want}); it supports {archs:?}", nvrtc.0, nvrtc.1))?;
        Ok(Cuda {
            ctx,
            stream,
            device_name,
            capability,
            arch: format!("compute_{pick}"),
            nvrtc,
            modules: RefCell::new(HashMap::new()),
            functions: RefCell::new(HashMap::new()),
        })
    }

    /// The kernel `name`, compiling (with the GEMM tiles in `mode`) and loading its module
    /// at first use.
    pub fn function(&self, name: &'static str, mode: GemmMode) -> Result<CudaFunction> {
        if let Some(f) = self.functions.borrow().get(name) {
            return Ok(f.clone());
        }
        let module =
            source::kernels().into_iter().find(|(k, _)| *k == name).map(|(_, m)| m).with_context(|| format!("kernel {name} is in no module of kernels/"))?;
        let loaded = self.module(module, mode)?;
        let f = loaded.load_function(name).map_err(|e| anyhow!("kernel {name} not found in the PTX of kernels/{module}.cu: {e:?}"))?;
        self.functions.borrow_mut().insert(name, f.clone());
        Ok(f)
    }

    fn module(&self, module: &'static str, mode: GemmMode) -> Result<Arc<CudaModule>> {
        if let Some(m) = self.modules.borrow().get(module) {
            return Ok(m.clone());
        }
        let ptx = self.ptx(module, mode)?;
        let m = self.ctx.load_module(Ptx::from_src(ptx)).map_err(|e| {
            anyhow!("the driver rejected the PTX of kernels/{module}.cu ({}, NVRTC {}.{}): {e:?}; a driver older than the NVRTC that made the PTX cannot load it, so use the NVRTC of the driver's CUDA version", self.arch, self.nvrtc.0, self.nvrtc.1)
        })?;
        self.modules.borrow_mut().insert(module, m.clone());
        Ok(m)
    }

    /// PTX from the disk cache, keyed by source hash, architecture and NVRTC version, or
    /// freshly compiled (and then cached; a cache that cannot be written is skipped).
    fn ptx(&self, module: &str, mode: GemmMode) -> Result<String> {
        let src = source::expanded(module).with_context(|| format!("no kernel module named {module}"))?;
        let key = format!("{module}-{:016x}-{}-{}-nvrtc{}.{}.ptx", source::fnv1a(src.as_bytes()), self.arch, mode.label(), self.nvrtc.0, self.nvrtc.1);
        let path = cache_dir().map(|d| d.join(key));
        if let Some(p) = &path {
            if let Ok(ptx) = std::fs::read_to_string(p) {
                return Ok(ptx);
            }
        }
        let ptx = compile_module(module, &self.arch, mode)?;
        if let Some(p) = &path {
            let tmp = p.with_extension(format!("tmp{}", std::process::id()));
            let written = p.parent().map(std::fs::create_dir_all).transpose().and_then(|_| std::fs::write(&tmp, &ptx)).and_then(|_| std::fs::rename(&tmp, p));
            if written.is_err() {
                let _ = std::fs::remove_file(&tmp);
            }
        }
        Ok(ptx)
    }
}
