//! The real GPU: driver context and stream (cudarc), NVRTC compilation at first use with
//! a PTX disk cache, function lookup. Every failure is an `Err` with a sentence for
//! people; cudarc would panic on the first call into a missing library, so presence is
//! checked before anything else is touched.

use super::source;
use anyhow::{anyhow, bail, Context, Result};
use cudarc::driver::{CudaContext, CudaFunction, CudaModule, CudaStream};
use cudarc::nvrtc::{CompileError, CompileOptions, Ptx};
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

/// Whether NVRTC can be loaded, without panicking when it cannot.
pub fn nvrtc_present() -> bool {
    // SAFETY: only tries to dlopen the library by its candidate names.
    unsafe { cudarc::nvrtc::sys::is_culib_present() }
}

const NVRTC_HINT: &str = "NVRTC (libnvrtc.so.12 or libnvrtc.so) was not found: install the CUDA toolkit's NVRTC, or `pip install nvidia-cuda-nvrtc-cu12` and put its lib folder on LD_LIBRARY_PATH (for NVRTC 13, link libnvrtc.so.13 as libnvrtc.so there); scripts/gpu-check.sh does this";

/// NVRTC's version, e.g. (12, 9).
pub fn nvrtc_version() -> Result<(i32, i32)> {
    if !nvrtc_present() {
        bail!("{NVRTC_HINT}");
    }
    let (mut major, mut minor) = (0, 0);
    // SAFETY: the library is present (checked above); both pointers are valid for writes.
    let r = unsafe { cudarc::nvrtc::sys::nvrtcVersion(&mut major, &mut minor) };
    if r != cudarc::nvrtc::sys::nvrtcResult::NVRTC_SUCCESS {
        bail!("nvrtcVersion failed: {r:?}");
    }
    Ok((major, minor))
}

/// The architectures this NVRTC can generate code for, as numbers (61, 75, 90, ...).
pub fn nvrtc_archs() -> Result<Vec<i32>> {
    nvrtc_version()?;
    let mut n = 0;
    // SAFETY: the library is present (nvrtc_version checked); `n` is valid for a write.
    unsafe { cudarc::nvrtc::sys::nvrtcGetNumSupportedArchs(&mut n) }.result().map_err(|e| anyhow!("nvrtcGetNumSupportedArchs: {e:?}"))?;
    let mut archs = vec![0; n.max(0) as usize];
    // SAFETY: `archs` has room for the `n` values NVRTC reported.
    unsafe { cudarc::nvrtc::sys::nvrtcGetSupportedArchs(archs.as_mut_ptr()) }.result().map_err(|e| anyhow!("nvrtcGetSupportedArchs: {e:?}"))?;
    Ok(archs)
}

/// Compiles one kernel module (`conv`, `batchnorm`, ...) to PTX for `arch` (`compute_90` or
/// `sm_90`). The error carries NVRTC's log.
pub fn compile_module(module: &str, arch: &str) -> Result<String> {
    let src = source::expanded(module).with_context(|| format!("no kernel module named {module}"))?;
    let version = nvrtc_version()?;
    let opts = CompileOptions {
        options: vec![format!("--gpu-architecture={arch}"), "--std=c++17".into(), "-lineinfo".into()],
        name: Some(format!("{module}.cu")),
        ..Default::default()
    };
    match cudarc::nvrtc::compile_ptx_with_opts(&src, opts) {
        Ok(ptx) => Ok(ptx.to_src()),
        Err(CompileError::CompileError { nvrtc, options, log }) => Err(anyhow!(
            "NVRTC {}.{} failed to compile kernels/{module}.cu for {arch} ({nvrtc:?}, options {options:?}):\n{}",
            version.0,
            version.1,
            log.to_string_lossy()
        )),
        Err(e) => Err(anyhow!("NVRTC {}.{} could not compile kernels/{module}.cu for {arch}: {e:?}", version.0, version.1)),
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
        let count = CudaContext::device_count().map_err(|e| anyhow!("the NVIDIA driver did not initialise ({e:?}): is a GPU visible to this process? Use --device cpu otherwise"))?;
        if count < 1 {
            bail!("the NVIDIA driver reports no GPU: use --device cpu");
        }
        let nvrtc = nvrtc_version()?;
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
        let pick = archs.iter().copied().filter(|a| *a <= want).max().with_context(|| {
            format!("NVRTC {}.{} cannot generate code for this GPU (sm_{want}); it supports {archs:?}", nvrtc.0, nvrtc.1)
        })?;
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

    /// The kernel `name`, compiling and loading its module at first use.
    pub fn function(&self, name: &'static str) -> Result<CudaFunction> {
        if let Some(f) = self.functions.borrow().get(name) {
            return Ok(f.clone());
        }
        let module = source::kernels().into_iter().find(|(k, _)| *k == name).map(|(_, m)| m).with_context(|| format!("kernel {name} is in no module of kernels/"))?;
        let loaded = self.module(module)?;
        let f = loaded.load_function(name).map_err(|e| anyhow!("kernel {name} not found in the PTX of kernels/{module}.cu: {e:?}"))?;
        self.functions.borrow_mut().insert(name, f.clone());
        Ok(f)
    }

    fn module(&self, module: &'static str) -> Result<Arc<CudaModule>> {
        if let Some(m) = self.modules.borrow().get(module) {
            return Ok(m.clone());
        }
        let ptx = self.ptx(module)?;
        let m = self.ctx.load_module(Ptx::from_src(ptx)).map_err(|e| {
            anyhow!("the driver rejected the PTX of kernels/{module}.cu ({}, NVRTC {}.{}): {e:?}; a driver older than the NVRTC that made the PTX cannot load it, so use the NVRTC of the driver's CUDA version", self.arch, self.nvrtc.0, self.nvrtc.1)
        })?;
        self.modules.borrow_mut().insert(module, m.clone());
        Ok(m)
    }

    /// PTX from the disk cache, keyed by source hash, architecture and NVRTC version, or
    /// freshly compiled (and then cached; a cache that cannot be written is skipped).
    fn ptx(&self, module: &str) -> Result<String> {
        let src = source::expanded(module).with_context(|| format!("no kernel module named {module}"))?;
        let key = format!("{module}-{:016x}-{}-nvrtc{}.{}.ptx", source::fnv1a(src.as_bytes()), self.arch, self.nvrtc.0, self.nvrtc.1);
        let path = cache_dir().map(|d| d.join(key));
        if let Some(p) = &path {
            if let Ok(ptx) = std::fs::read_to_string(p) {
                return Ok(ptx);
            }
        }
        let ptx = compile_module(module, &self.arch)?;
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
