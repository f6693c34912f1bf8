//! The CUDA backend: `kernels/*.cu`, compiled by NVRTC at first use (driver.rs), launched
//! from one site per kernel (`ops/F.rs` for the family F of `kernels/F.cu`). The same
//! launch sites drive the CPU simulation of the kernels (`--device sim`, cargo feature
//! `sim`), which is how the kernels are checked on machines without a GPU.
//!
//! The op methods check buffer lengths, compute launch shapes and pick the kernel; they
//! never copy data to the host. Buffers are allocated by the layers once per shape
//! (nn::Slot) and the split-K scratch of the weight gradients grows once and stays, so a
//! training iteration allocates nothing after the first.

mod driver;
mod gemm_mode;
mod nvrtc;
pub mod ops;
#[cfg(feature = "sim")]
mod sim;
#[cfg(feature = "sim")]
pub use sim::SimChecks;
pub mod source;
pub mod tiles;
mod timing;

pub use driver::{compile_module, nvrtc_archs, nvrtc_path, nvrtc_version};
pub use gemm_mode::{GemmFeed, GemmMode, GemmPrecision};
pub use timing::EventTimer;

use super::{check_len, Core, Profiler, Work};
use anyhow::{anyhow, bail, Result};
use cudarc::driver::{CudaSlice, DevicePtr};
use ops::Ptr;
use std::cell::RefCell;
use std::collections::BTreeSet;

pub(crate) enum ExecKind {
    Cuda(driver::Cuda),
    #[cfg(feature = "sim")]
    Sim(SimChecks),
}

/// Where kernels run, in which GEMM mode (chosen once, when the backend opens), and which
/// have run: all of them (for the selftest's coverage check) and those since the last
/// `take_recent_launches` (to label its rows).
pub(crate) struct Exec {
    kind: ExecKind,
    mode: GemmMode,
    launched: RefCell<BTreeSet<&'static str>>,
    recent: RefCell<BTreeSet<&'static str>>,
}

impl Exec {
    fn new(kind: ExecKind, mode: GemmMode) -> Exec {
        Exec { kind, mode, launched: RefCell::default(), recent: RefCell::default() }
    }
    fn note_launch(&self, name: &'static str) {
        self.launched.borrow_mut().insert(name);
        self.recent.borrow_mut().insert(name);
    }
}

/// A flat f32 buffer on the GPU, or in host memory for the simulation.
pub struct GpuBuf {
    len: usize,
    ptr: Ptr,
    mem: Mem,
}

enum Mem {
    Device(#[allow(dead_code)] CudaSlice<f32>),
    /// A buffer of the simulation (kernels/sim.cpp), `len.max(1)` floats.
    #[cfg(feature = "sim")]
    Sim(*mut f32),
}

impl Drop for GpuBuf {
    fn drop(&mut self) {
        #[cfg(feature = "sim")]
        if let Mem::Sim(p) = self.mem {
            // SAFETY: `p` came from sim::alloc and is freed only here.
            unsafe { sim::free(p) };
        }
    }
}

pub struct GpuBackend {
    exec: Exec,
    /// Split-K partial sums of the weight gradients: grows to the largest need, then stays.
    splitk: RefCell<Option<GpuBuf>>,
    /// Batchnorm's per-slice partial statistics: grows the same way.
    bn_part: RefCell<Option<GpuBuf>>,
    profiler: Profiler,
}

/// `buf` holds at least `need` values.
fn check(what: &str, buf: &GpuBuf, need: usize) -> Result<()> {
    check_len(what, buf.len, need)
}

fn opt_ptr(b: Option<&GpuBuf>) -> Ptr {
    b.map_or(0, |b| b.ptr)
}

impl GpuBackend {
    fn with(kind: ExecKind, mode: GemmMode) -> GpuBackend {
        GpuBackend { exec: Exec::new(kind, mode), splitk: RefCell::new(None), bn_part: RefCell::new(None), profiler: Profiler::default() }
    }

    /// The first GPU, in the GEMM mode `asked` or the GPU's default (GemmMode::for_device).
    /// `Err` with a sentence when there is no driver, GPU or NVRTC.
    pub fn cuda(asked: Option<GemmMode>) -> Result<GpuBackend> {
        let cuda = driver::Cuda::open()?;
        let sm = cuda.capability.0 * 10 + cuda.capability.1;
        let mode = GemmMode::for_device(asked, sm).map_err(|e| anyhow!("{} (unset it for the GPU's default): {e}", GemmMode::ENV))?;
        Ok(GpuBackend::with(ExecKind::Cuda(cuda), mode))
    }

    /// The kernels run on the CPU through kernels/sim.h (slow; for verification), in any
    /// GEMM mode, whatever the machine, with every launch checked (SimChecks::default).
    pub fn sim(mode: GemmMode) -> Result<GpuBackend> {
        #[cfg(feature = "sim")]
        {
            Ok(GpuBackend::with(ExecKind::Sim(SimChecks::default()), mode))
        }
        #[cfg(not(feature = "sim"))]
        {
            let _ = mode;
            bail!("this binary was built without the `sim` feature: rebuild with `cargo build --release --features sim` to use --device sim")
        }
    }

    /// `sim` with the checks chosen.
    #[cfg(feature = "sim")]
    pub fn sim_with(mode: GemmMode, checks: SimChecks) -> GpuBackend {
        GpuBackend::with(ExecKind::Sim(checks), mode)
    }

    pub fn gemm_mode(&self) -> GemmMode {
        self.exec.mode
    }

    pub fn is_sim(&self) -> bool {
        !matches!(self.exec.kind, ExecKind::Cuda(_))
    }

    /// Kernels launched so far, by name.
    pub fn launched_kernels(&self) -> BTreeSet<&'static str> {
        self.exec.launched.borrow().clone()
    }

    /// The address of `slot`'s buffer after growing it to at least `need` values. It is
    /// only ever used by the op that asked, so its old contents do not matter: in the
    /// simulation it starts poisoned, and a kernel that reads it before writing is caught.
    fn scratch(&self, slot: &RefCell<Option<GpuBuf>>, need: usize) -> Result<Ptr> {
        let mut scratch = slot.borrow_mut();
        if scratch.as_ref().is_none_or(|s| s.len < need) {
            *scratch = Some(self.alloc_with(need, false)?);
        }
        Ok(scratch.as_ref().map(|s| s.ptr).unwrap_or(0))
    }

    /// A buffer of `len` values, zeroed (`Core::alloc`) or, in the simulation, poisoned
    /// and unwritten as far as its checker knows.
    fn alloc_with(&self, len: usize, zeroed: bool) -> Result<GpuBuf> {
        match &self.exec.kind {
            ExecKind::Cuda(c) => {
                let _ = zeroed;
                // Never zero bytes: a null pointer would read as "no bias" to the kernels.
                let slice = c.stream.alloc_zeros::<f32>(len.max(1)).map_err(|e| anyhow!("allocating {len} floats on the GPU: {e:?}"))?;
                let ptr = {
                    let (ptr, _sync) = slice.device_ptr(&c.stream);
                    ptr
                };
                Ok(GpuBuf { len, ptr, mem: Mem::Device(slice) })
            }
            #[cfg(feature = "sim")]
            ExecKind::Sim(_) => {
                let p = sim::alloc(len, zeroed);
                Ok(GpuBuf { len, ptr: p as Ptr, mem: Mem::Sim(p) })
            }
        }
    }
}

impl Core for GpuBackend {
    type Buf = GpuBuf;

    fn name(&self) -> String {
        match &self.exec.kind {
            ExecKind::Cuda(c) => format!(
                "cuda ({}, sm_{}{}, PTX {} from NVRTC {}.{}, GEMM {})",
                c.device_name,
                c.capability.0,
                c.capability.1,
                c.arch,
                c.nvrtc.0,
                c.nvrtc.1,
                self.exec.mode.label()
            ),
            #[cfg(feature = "sim")]
            ExecKind::Sim(checks) => format!(
                "sim (kernels/*.cu on the CPU through kernels/sim.h, GEMM {}, every access checked{})",
                self.exec.mode.label(),
                if checks.all_orders { ", three thread orders" } else { "" }
            ),
        }
    }

    fn alloc(&self, len: usize) -> Result<GpuBuf> {
        self.alloc_with(len, true)
    }
    fn memory_available(&self) -> Option<super::Available> {
        match &self.exec.kind {
            ExecKind::Cuda(c) => c
                .ctx
                .mem_get_info()
                .ok()
                .map(|(free, _total)| super::Available { bytes: free as u64, what: format!("the GPU ({}, free memory)", c.device_name) }),
            #[cfg(feature = "sim")]
            ExecKind::Sim(_) => super::host_memory_available(),
        }
    }
    fn len(&self, buf: &GpuBuf) -> usize {
        buf.len
    }
    fn upload(&self, dst: &mut GpuBuf, src: &[f32]) -> Result<()> {
        let bytes = 4.0 * src.len() as f64;
        self.timed(
            "upload",
            || Work::bytes(String::new(), bytes),
            || {
                anyhow::ensure!(dst.len >= src.len(), "upload: buffer holds {} values, got {}", dst.len, src.len());
                match (&self.exec.kind, &mut dst.mem) {
                    (ExecKind::Cuda(c), Mem::Device(slice)) => {
                        let mut view = slice.slice_mut(0..src.len());
                        c.stream.memcpy_htod(src, &mut view).map_err(|e| anyhow!("copy to the GPU: {e:?}"))
                    }
                    #[cfg(feature = "sim")]
                    (ExecKind::Sim(_), Mem::Sim(p)) => {
                        // SAFETY: `p` is the live allocation of `dst` (at least `dst.len`
                        // floats, checked above to hold `src`), exclusively borrowed here.
                        unsafe {
                            std::slice::from_raw_parts_mut(*p, src.len()).copy_from_slice(src);
                            sim::mark_defined(*p, src.len());
                        }
                        Ok(())
                    }
                    #[allow(unreachable_patterns)]
                    _ => bail!("buffer from another device"),
                }
            },
        )
    }
    fn download(&self, src: &GpuBuf, dst: &mut [f32]) -> Result<()> {
        let bytes = 4.0 * dst.len() as f64;
        self.timed(
            "download",
            || Work::bytes(String::new(), bytes),
            || {
                anyhow::ensure!(src.len >= dst.len(), "download: buffer holds {} values, asked for {}", src.len, dst.len());
                match (&self.exec.kind, &src.mem) {
                    (ExecKind::Cuda(c), Mem::Device(slice)) => {
                        let view = slice.slice(0..dst.len());
                        c.stream.memcpy_dtoh(&view, dst).map_err(|e| anyhow!("copy from the GPU: {e:?}"))?;
                        c.stream.synchronize().map_err(|e| anyhow!("waiting for the GPU: {e:?}"))
                    }
                    #[cfg(feature = "sim")]
                    (ExecKind::Sim(_), Mem::Sim(p)) => {
                        // SAFETY: `p` is the live allocation of `src` (at least `dst.len()`
                        // floats, checked above); no kernel runs concurrently.
                        dst.copy_from_slice(unsafe { std::slice::from_raw_parts(*p, dst.len()) });
                        Ok(())
                    }
                    #[allow(unreachable_patterns)]
                    _ => bail!("buffer from another device"),
                }
            },
        )
    }
    fn upload_f64(&self, dst: &mut GpuBuf, src: &[f64]) -> Result<()> {
        let v: Vec<f32> = src.iter().map(|x| *x as f32).collect();
        self.upload(dst, &v)
    }
    fn download_f64(&self, src: &GpuBuf, dst: &mut [f64]) -> Result<()> {
        let mut v = vec![0.0f32; dst.len()];
        self.download(src, &mut v)?;
        dst.iter_mut().zip(v).for_each(|(d, s)| *d = s as f64);
        Ok(())
    }
    fn fill(&self, buf: &mut GpuBuf, value: f32) -> Result<()> {
        let bytes = 4.0 * buf.len as f64;
        self.timed("fill", || Work::bytes(String::new(), bytes), || self.exec.fill(buf, value))
    }
    fn synchronize(&self) -> Result<()> {
        match &self.exec.kind {
            ExecKind::Cuda(c) => c.stream.synchronize().map_err(|e| anyhow!("waiting for the GPU: {e:?}")),
            #[cfg(feature = "sim")]
            ExecKind::Sim(_) => Ok(()),
        }
    }
    fn profiler(&self) -> &Profiler {
        &self.profiler
    }
    fn precision(&self) -> super::Precision {
        self.exec.mode.precision()
    }
    fn take_recent_launches(&self) -> BTreeSet<&'static str> {
        std::mem::take(&mut *self.exec.recent.borrow_mut())
    }
}
