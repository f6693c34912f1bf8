//! The CUDA backend: `kernels/*.cu`, compiled by NVRTC at first use (driver.rs), launched
//! from one site per kernel (launch.rs). The same launch sites drive the CPU simulation of
//! the kernels (`--device sim`, cargo feature `sim`), which is how the kernels are checked
//! on machines without a GPU.
//!
//! The methods here check buffer lengths, compute launch shapes and pick the kernel; they
//! never copy data to the host. Buffers are allocated by the layers once per shape
//! (nn::Slot) and the split-K scratch of the weight gradients grows once and stays, so a
//! training iteration allocates nothing after the first.

pub mod check;
mod driver;
mod launch;
mod nvrtc;
#[cfg(feature = "sim")]
mod sim;
pub mod source;
mod timing;

pub use driver::{compile_module, nvrtc_archs, nvrtc_path, nvrtc_version};
pub use launch::LAUNCHED_KERNELS;
pub use timing::EventTimer;

use super::*;
use anyhow::{anyhow, bail, Result};
use cudarc::driver::{CudaSlice, DevicePtr};
use launch::{FillParams, Launch, Ptr, SplitParams};
use std::cell::RefCell;
use std::collections::BTreeSet;

const GEMM_BM: usize = 64;
const GEMM_BN: usize = 64;
const GEMM_BK: usize = 16;
const GEMM_THREADS: u32 = 256;
/// The thin GEMMs (kernels/gemm.cuh): at most THIN_M rows and THIN_A values of A.
const THIN_M: usize = 4;
const THIN_A: usize = 4096;
const THIN_THREADS: u32 = 256;
const REDUCE_THREADS: u32 = 256;
const ELEM_THREADS: u32 = 256;
/// Dynamic shared memory of the block reductions: one float per warp.
const REDUCE_SHARED: u32 = REDUCE_THREADS / 32 * 4;

/// How the GEMM tiles of the convolutions and linear layers multiply (`GEMM_MODE` in
/// kernels/common.cuh). Chosen with `GAN_ENGINE_GEMM=fp32|tf32x3|tf32|tf32x3-async|tf32-async`;
/// by default `tf32x3` on GPUs with TF32 tensor cores (compute capability 8.0 and newer),
/// `fp32` below.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GemmMode {
    /// fp32 FMAs on the CUDA cores: every GPU.
    Fp32,
    /// TF32 tensor cores, each operand split into a TF32 high and low part, three
    /// products: the accuracy of fp32.
    Tf32x3,
    /// TF32 tensor cores, one product of the rounded operands: about three decimal
    /// digits, as cuDNN's default for fp32 convolutions.
    Tf32,
    /// `Tf32x3` with the tiles fed by asynchronous copies (cp.async) through a ring of
    /// shared buffers instead of through registers: the same results.
    Tf32x3Async,
    /// `Tf32` fed the same way.
    Tf32Async,
}

impl GemmMode {
    pub const ALL: [GemmMode; 5] = [GemmMode::Fp32, GemmMode::Tf32x3, GemmMode::Tf32, GemmMode::Tf32x3Async, GemmMode::Tf32Async];
    /// The environment variable that picks the mode.
    pub const ENV: &'static str = "GAN_ENGINE_GEMM";

    /// `GAN_GEMM_MODE` of the kernels.
    pub fn code(self) -> i32 {
        match self {
            GemmMode::Fp32 => 0,
            GemmMode::Tf32x3 => 1,
            GemmMode::Tf32 => 2,
            GemmMode::Tf32x3Async => 3,
            GemmMode::Tf32Async => 4,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            GemmMode::Fp32 => "fp32",
            GemmMode::Tf32x3 => "tf32x3",
            GemmMode::Tf32 => "tf32",
            GemmMode::Tf32x3Async => "tf32x3-async",
            GemmMode::Tf32Async => "tf32-async",
        }
    }

    /// The precision alone: the mode without the way its tiles are fed.
    pub fn precision(self) -> GemmMode {
        match self {
            GemmMode::Tf32x3Async => GemmMode::Tf32x3,
            GemmMode::Tf32Async => GemmMode::Tf32,
            m => m,
        }
    }

    pub fn uses_tensor_cores(self) -> bool {
        self != GemmMode::Fp32
    }

    pub fn parse(s: &str) -> Result<GemmMode> {
        GemmMode::ALL
            .into_iter()
            .find(|m| m.label() == s.trim())
            .ok_or_else(|| anyhow!("{}={s:?}: expected fp32, tf32x3, tf32, tf32x3-async or tf32-async", GemmMode::ENV))
    }

    /// The mode named by `GAN_ENGINE_GEMM`, if it is set.
    pub fn from_env() -> Result<Option<GemmMode>> {
        match std::env::var(GemmMode::ENV) {
            Ok(s) if !s.trim().is_empty() => GemmMode::parse(&s).map(Some),
            _ => Ok(None),
        }
    }

    /// `asked` (or the default) for a GPU of compute capability `sm` (e.g. 90): an error
    /// when it asks for tensor cores the GPU does not have.
    pub fn for_device(asked: Option<GemmMode>, sm: i32) -> Result<GemmMode> {
        let tensor = sm >= 80;
        match asked {
            None => Ok(if tensor { GemmMode::Tf32x3 } else { GemmMode::Fp32 }),
            Some(m) if m.uses_tensor_cores() && !tensor => {
                bail!("GEMM mode {} needs TF32 tensor cores (compute capability 8.0 or newer) and sm_{sm} has none: use fp32", m.label())
            }
            Some(m) => Ok(m),
        }
    }
}

pub(crate) enum ExecKind {
    Cuda(driver::Cuda),
    #[cfg(feature = "sim")]
    Sim,
}

/// Where kernels run, and which have run: all of them (for the selftest's coverage
/// check) and those since the last `take_recent_launches` (to label its rows).
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
    #[cfg(feature = "sim")]
    Host(*mut [f32]),
}

impl Drop for GpuBuf {
    fn drop(&mut self) {
        #[cfg(feature = "sim")]
        if let Mem::Host(p) = self.mem {
            // SAFETY: `p` came from Box::into_raw in `alloc` and is freed only here.
            drop(unsafe { Box::from_raw(p) });
        }
    }
}

pub struct GpuBackend {
    exec: Exec,
    /// Split-K partial sums of the weight gradients: grows to the largest need, then stays.
    splitk: RefCell<Option<GpuBuf>>,
    /// Batchnorm's per-slice partial statistics: grows the same way.
    bn_part: RefCell<Option<GpuBuf>>,
}

fn check_len(what: &str, buf: &GpuBuf, need: usize) -> Result<()> {
    anyhow::ensure!(buf.len >= need, "{what}: buffer holds {} values, op needs {need}", buf.len);
    Ok(())
}

fn blocks(n: usize, per: usize) -> u32 {
    n.div_ceil(per).max(1) as u32
}

fn elementwise(len: usize) -> Launch {
    Launch { grid: (blocks(len, ELEM_THREADS as usize), 1, 1), block: ELEM_THREADS, shared_bytes: 0 }
}

fn per_channel(c: usize) -> Launch {
    Launch { grid: (c.max(1) as u32, 1, 1), block: REDUCE_THREADS, shared_bytes: REDUCE_SHARED }
}

/// One warp per channel, REDUCE_THREADS / 32 channels per block.
fn warp_per_channel(c: usize) -> Launch {
    Launch { grid: (blocks(c, REDUCE_THREADS as usize / 32), 1, 1), block: REDUCE_THREADS, shared_bytes: 0 }
}

/// How batchnorm cuts each channel's `n * hw` values (kernels/batchnorm.cu): equal slices
/// of 1025 to 2048 values (4 to 8 per thread), or 64 longer ones for channels of more than
/// 131,072 values, so that even a layer of 64 wide channels fills a large GPU. Returns the
/// slice length, the slice count and the (slice, channel) grid of the per-slice kernels.
fn bn_slices(p: &BatchNormParams) -> (usize, usize, Launch) {
    let count = (p.n as usize * p.hw as usize).max(1);
    let len = count.div_ceil(count.div_ceil(2048).clamp(1, 64));
    let slices = count.div_ceil(len);
    (len, slices, Launch { grid: (slices as u32, p.c.max(1) as u32, 1), block: REDUCE_THREADS, shared_bytes: REDUCE_SHARED })
}

/// Whether a parity-split pass with `rows` GEMM rows, reducing over `channels` times the
/// taps of a parity class, takes the thin kernels (kernels/gemm.cuh, gemm_thin_column):
/// at most THIN_M rows, and A small enough for their shared memory.
fn thin(rows: i32, channels: i32, p: &ConvParams) -> bool {
    let taps = (p.k.max(0) as usize).div_ceil(p.stride.max(1) as usize);
    (rows.max(0) as usize) <= THIN_M && channels.max(0) as usize * taps * taps * THIN_M <= THIN_A
}

/// One thread per column of a thin GEMM, grid.z over the parity classes.
fn thin_launch(cols: usize, classes: usize) -> Launch {
    Launch { grid: (blocks(cols, THIN_THREADS as usize), 1, classes as u32), block: THIN_THREADS, shared_bytes: 0 }
}

fn gemm(m: usize, n: usize, z: usize) -> Launch {
    Launch { grid: (blocks(n, GEMM_BN), blocks(m, GEMM_BM), z.max(1) as u32), block: GEMM_THREADS, shared_bytes: 0 }
}

/// Slices of the reduction dimension for a weight gradient of `m x n` values reduced over
/// `k`: enough blocks to fill a large GPU when the gradient itself has few tiles, slices of
/// at least 256, at most 64 slices, and at most 2^24 floats of partial sums.
fn splitk_slices(m: usize, n: usize, k: usize) -> (usize, usize) {
    let tiles = m.div_ceil(GEMM_BM) * n.div_ceil(GEMM_BN);
    let by_work = 512usize.div_ceil(tiles.max(1));
    let by_depth = k.div_ceil(256);
    let by_memory = ((1usize << 24) / (m * n).max(1)).max(1);
    let splits = by_work.min(by_depth).min(by_memory).clamp(1, 64);
    let chunk = k.div_ceil(splits).div_ceil(GEMM_BK) * GEMM_BK;
    (chunk.max(GEMM_BK), k.div_ceil(chunk.max(GEMM_BK)).max(1))
}

/// Slices of a forward GEMM's reduction: none unless the output has so few tiles that most
/// of a large GPU would idle while each block walks a long `k` alone (then as for a weight
/// gradient).
fn forward_slices(m: usize, n: usize, k: usize) -> (usize, usize) {
    if m.div_ceil(GEMM_BM) * n.div_ceil(GEMM_BN) >= 32 {
        return (k, 1);
    }
    splitk_slices(m, n, k)
}

fn opt_ptr(b: Option<&GpuBuf>) -> Ptr {
    b.map_or(0, |b| b.ptr)
}

impl GpuBackend {
    /// The first GPU. `Err` with a sentence when there is no driver, GPU or NVRTC.
    /// The GEMM mode comes from `GAN_ENGINE_GEMM`, or is the GPU's default (GemmMode).
    pub fn cuda() -> Result<GpuBackend> {
        let cuda = driver::Cuda::open(GemmMode::from_env()?)?;
        let mode = cuda.mode;
        Ok(GpuBackend { exec: Exec::new(ExecKind::Cuda(cuda), mode), splitk: RefCell::new(None), bn_part: RefCell::new(None) })
    }

    /// The kernels run on the CPU through kernels/sim.h (slow; for verification), in the
    /// GEMM mode of `GAN_ENGINE_GEMM`, by default that of a GPU with tensor cores.
    pub fn sim() -> Result<GpuBackend> {
        GpuBackend::sim_with(GemmMode::from_env()?.unwrap_or(GemmMode::Tf32x3))
    }

    /// The simulation in a given GEMM mode: it runs every mode, whatever the machine.
    pub fn sim_with(mode: GemmMode) -> Result<GpuBackend> {
        #[cfg(feature = "sim")]
        {
            Ok(GpuBackend { exec: Exec::new(ExecKind::Sim, mode), splitk: RefCell::new(None), bn_part: RefCell::new(None) })
        }
        #[cfg(not(feature = "sim"))]
        {
            let _ = mode;
            bail!("this binary was built without the `sim` feature: rebuild with `cargo build --release --features sim` to use --device sim")
        }
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

    /// Kernels launched since the last call.
    pub fn take_recent_launches(&self) -> BTreeSet<&'static str> {
        std::mem::take(&mut *self.exec.recent.borrow_mut())
    }

    /// `grad += A . B` over a long reduction, deterministically: one slice adds straight
    /// into the gradient, several write partial buffers added in order afterwards.
    fn weight_gradient(&self, m: usize, n: usize, k: usize, dw: &mut GpuBuf, run: impl Fn(Launch, Ptr, i32, i32) -> Result<()>) -> Result<()> {
        let (chunk, splits) = splitk_slices(m, n, k);
        if splits == 1 {
            return run(gemm(m, n, 1), dw.ptr, chunk as i32, 1);
        }
        self.split_k(m, n, splits, dw.ptr, |l, partial| run(l, partial, chunk as i32, 0))
    }

    /// The address of `slot`'s buffer after growing it to at least `need` values. It is
    /// only ever used by the op that asked, so its old contents do not matter.
    fn scratch(&self, slot: &RefCell<Option<GpuBuf>>, need: usize) -> Result<Ptr> {
        let mut scratch = slot.borrow_mut();
        if scratch.as_ref().is_none_or(|s| s.len < need) {
            *scratch = Some(self.alloc(need)?);
        }
        Ok(scratch.as_ref().map(|s| s.ptr).unwrap_or(0))
    }

    /// `dst += ` the sum of `splits` slices of an `m x n` GEMM: `run(launch, partial)` writes
    /// slice z into partial buffer z (the scratch, grown once to the largest need), then
    /// gemm_splitk_reduce_f32 adds them into `dst` in slice order.
    fn split_k(&self, m: usize, n: usize, splits: usize, dst: Ptr, run: impl FnOnce(Launch, Ptr) -> Result<()>) -> Result<()> {
        let partial = self.scratch(&self.splitk, splits * m * n)?;
        run(gemm(m, n, splits), partial)?;
        let sp = SplitParams { len: (m * n) as i32, splits: splits as i32 };
        self.exec.gemm_splitk_reduce_f32(elementwise(m * n), sp, partial, dst)
    }

    /// `db[c] += sum of dy over n and the grid`: the bias gradient of every layer type.
    fn bias_gradient(&self, n: usize, c: usize, hw: usize, dy: &GpuBuf, db: &mut GpuBuf) -> Result<()> {
        check_len("bias gradient dy", dy, n * c * hw)?;
        check_len("bias gradient db", db, c)?;
        let p = BatchNormParams::new(n, c, hw, 0.0, 0.0);
        self.exec.bias_backward_params_f32(per_channel(c), p, dy.ptr, db.ptr)
    }

    fn act(&self, what: &str, p: &ActParams, bufs: &[&GpuBuf]) -> Result<Launch> {
        for b in bufs {
            check_len(what, b, p.len as usize)?;
        }
        Ok(elementwise(p.len as usize))
    }
}

impl Backend for GpuBackend {
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
            ExecKind::Sim => format!("sim (kernels/*.cu on the CPU through kernels/sim.h, GEMM {})", self.exec.mode.label()),
        }
    }

    fn alloc(&self, len: usize) -> Result<GpuBuf> {
        match &self.exec.kind {
            ExecKind::Cuda(c) => {
                // Never zero bytes: a null pointer would read as "no bias" to the kernels.
                let slice = c.stream.alloc_zeros::<f32>(len.max(1)).map_err(|e| anyhow!("allocating {len} floats on the GPU: {e:?}"))?;
                let ptr = {
                    let (ptr, _sync) = slice.device_ptr(&c.stream);
                    ptr
                };
                Ok(GpuBuf { len, ptr, mem: Mem::Device(slice) })
            }
            #[cfg(feature = "sim")]
            ExecKind::Sim => {
                let raw = Box::into_raw(vec![0.0f32; len.max(1)].into_boxed_slice());
                Ok(GpuBuf { len, ptr: raw as *mut f32 as Ptr, mem: Mem::Host(raw) })
            }
        }
    }
    fn len(&self, buf: &GpuBuf) -> usize {
        buf.len
    }
    fn upload(&self, dst: &mut GpuBuf, src: &[f32]) -> Result<()> {
        anyhow::ensure!(dst.len >= src.len(), "upload: buffer holds {} values, got {}", dst.len, src.len());
        match (&self.exec.kind, &mut dst.mem) {
            (ExecKind::Cuda(c), Mem::Device(slice)) => {
                let mut view = slice.slice_mut(0..src.len());
                c.stream.memcpy_htod(src, &mut view).map_err(|e| anyhow!("copy to the GPU: {e:?}"))
            }
            #[cfg(feature = "sim")]
            (ExecKind::Sim, Mem::Host(p)) => {
                // SAFETY: `p` is the live allocation of `dst`, exclusively borrowed here.
                unsafe { (&mut (**p))[..src.len()].copy_from_slice(src) };
                Ok(())
            }
            #[allow(unreachable_patterns)]
            _ => bail!("buffer from another device"),
        }
    }
    fn download(&self, src: &GpuBuf, dst: &mut [f32]) -> Result<()> {
        anyhow::ensure!(src.len >= dst.len(), "download: buffer holds {} values, asked for {}", src.len, dst.len());
        match (&self.exec.kind, &src.mem) {
            (ExecKind::Cuda(c), Mem::Device(slice)) => {
                let view = slice.slice(0..dst.len());
                c.stream.memcpy_dtoh(&view, dst).map_err(|e| anyhow!("copy from the GPU: {e:?}"))?;
                c.stream.synchronize().map_err(|e| anyhow!("waiting for the GPU: {e:?}"))
            }
            #[cfg(feature = "sim")]
            (ExecKind::Sim, Mem::Host(p)) => {
                // SAFETY: `p` is the live allocation of `src`; no kernel runs concurrently.
                dst.copy_from_slice(unsafe { &(&**p)[..dst.len()] });
                Ok(())
            }
            #[allow(unreachable_patterns)]
            _ => bail!("buffer from another device"),
        }
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
        self.exec.fill_f32(elementwise(buf.len), FillParams { len: buf.len as i32, value }, buf.ptr)
    }
    fn synchronize(&self) -> Result<()> {
        match &self.exec.kind {
            ExecKind::Cuda(c) => c.stream.synchronize().map_err(|e| anyhow!("waiting for the GPU: {e:?}")),
            #[cfg(feature = "sim")]
            ExecKind::Sim => Ok(()),
        }
    }

    fn conv2d_forward(&self, p: &ConvParams, x: &GpuBuf, w: &GpuBuf, bias: Option<&GpuBuf>, y: &mut GpuBuf) -> Result<()> {
        check_len("conv2d_forward x", x, p.in_len())?;
        check_len("conv2d_forward w", w, p.weight_len())?;
        check_len("conv2d_forward y", y, p.out_len())?;
        if let Some(b) = bias {
            check_len("conv2d_forward bias", b, p.c_out as usize)?;
        }
        let (m, cols, k) = (p.c_out as usize, (p.n * p.h_out * p.w_out) as usize, (p.c_in * p.k * p.k) as usize);
        let (chunk, splits) = forward_slices(m, cols, k);
        if splits == 1 {
            return self.exec.conv2d_forward_f32(gemm(m, cols, 1), *p, x.ptr, w.ptr, opt_ptr(bias), y.ptr, chunk as i32);
        }
        self.exec.fill_f32(elementwise(m * cols), FillParams { len: (m * cols) as i32, value: 0.0 }, y.ptr)?;
        self.split_k(m, cols, splits, y.ptr, |l, partial| self.exec.conv2d_forward_f32(l, *p, x.ptr, w.ptr, opt_ptr(bias), partial, chunk as i32))
    }
    fn conv2d_backward_input(&self, p: &ConvParams, dy: &GpuBuf, w: &GpuBuf, dx: &mut GpuBuf) -> Result<()> {
        check_len("conv2d_backward_input dy", dy, p.out_len())?;
        check_len("conv2d_backward_input w", w, p.weight_len())?;
        check_len("conv2d_backward_input dx", dx, p.in_len())?;
        let s = p.stride as usize;
        let cols = p.n as usize * (p.h_in as usize).div_ceil(s) * (p.w_in as usize).div_ceil(s);
        if thin(p.c_in, p.c_out, p) {
            return self.exec.conv2d_backward_input_thin_f32(thin_launch(cols, s * s), *p, dy.ptr, w.ptr, dx.ptr);
        }
        self.exec.conv2d_backward_input_f32(gemm(p.c_in as usize, cols, s * s), *p, dy.ptr, w.ptr, dx.ptr)
    }
    fn conv2d_backward_params(&self, p: &ConvParams, x: &GpuBuf, dy: &GpuBuf, dw: &mut GpuBuf, dbias: Option<&mut GpuBuf>) -> Result<()> {
        check_len("conv2d_backward_params x", x, p.in_len())?;
        check_len("conv2d_backward_params dy", dy, p.out_len())?;
        check_len("conv2d_backward_params dw", dw, p.weight_len())?;
        let (m, n, k) = (p.c_out as usize, (p.c_in * p.k * p.k) as usize, (p.n * p.h_out * p.w_out) as usize);
        self.weight_gradient(m, n, k, dw, |l, out, chunk, acc| self.exec.conv2d_backward_params_f32(l, *p, x.ptr, dy.ptr, out, chunk, acc))?;
        if let Some(db) = dbias {
            self.bias_gradient(p.n as usize, p.c_out as usize, (p.h_out * p.w_out) as usize, dy, db)?;
        }
        Ok(())
    }

    fn conv_transpose2d_forward(&self, p: &ConvParams, x: &GpuBuf, w: &GpuBuf, bias: Option<&GpuBuf>, y: &mut GpuBuf) -> Result<()> {
        check_len("conv_transpose2d_forward x", x, p.in_len())?;
        check_len("conv_transpose2d_forward w", w, p.weight_len())?;
        check_len("conv_transpose2d_forward y", y, p.out_len())?;
        if let Some(b) = bias {
            check_len("conv_transpose2d_forward bias", b, p.c_out as usize)?;
        }
        let s = p.stride as usize;
        let cols = p.n as usize * (p.h_out as usize).div_ceil(s) * (p.w_out as usize).div_ceil(s);
        if thin(p.c_out, p.c_in, p) {
            return self.exec.conv_transpose2d_forward_thin_f32(thin_launch(cols, s * s), *p, x.ptr, w.ptr, opt_ptr(bias), y.ptr);
        }
        self.exec.conv_transpose2d_forward_f32(gemm(p.c_out as usize, cols, s * s), *p, x.ptr, w.ptr, opt_ptr(bias), y.ptr)
    }
    fn conv_transpose2d_backward_input(&self, p: &ConvParams, dy: &GpuBuf, w: &GpuBuf, dx: &mut GpuBuf) -> Result<()> {
        check_len("conv_transpose2d_backward_input dy", dy, p.out_len())?;
        check_len("conv_transpose2d_backward_input w", w, p.weight_len())?;
        check_len("conv_transpose2d_backward_input dx", dx, p.in_len())?;
        let cols = (p.n * p.h_in * p.w_in) as usize;
        self.exec.conv_transpose2d_backward_input_f32(gemm(p.c_in as usize, cols, 1), *p, dy.ptr, w.ptr, dx.ptr)
    }
    fn conv_transpose2d_backward_params(&self, p: &ConvParams, x: &GpuBuf, dy: &GpuBuf, dw: &mut GpuBuf, dbias: Option<&mut GpuBuf>) -> Result<()> {
        check_len("conv_transpose2d_backward_params x", x, p.in_len())?;
        check_len("conv_transpose2d_backward_params dy", dy, p.out_len())?;
        check_len("conv_transpose2d_backward_params dw", dw, p.weight_len())?;
        let (m, n, k) = (p.c_in as usize, (p.c_out * p.k * p.k) as usize, (p.n * p.h_in * p.w_in) as usize);
        self.weight_gradient(m, n, k, dw, |l, out, chunk, acc| self.exec.conv_transpose2d_backward_params_f32(l, *p, x.ptr, dy.ptr, out, chunk, acc))?;
        if let Some(db) = dbias {
            self.bias_gradient(p.n as usize, p.c_out as usize, (p.h_out * p.w_out) as usize, dy, db)?;
        }
        Ok(())
    }

    fn batchnorm2d_forward_train(
        &self,
        p: &BatchNormParams,
        x: &GpuBuf,
        gamma: &GpuBuf,
        beta: &GpuBuf,
        running_mean: &mut GpuBuf,
        running_var: &mut GpuBuf,
        mean: &mut GpuBuf,
        invstd: &mut GpuBuf,
        y: &mut GpuBuf,
    ) -> Result<()> {
        p.check_act(y.len)?;
        check_len("batchnorm2d x", x, p.len())?;
        check_len("batchnorm2d y", y, p.len())?;
        for (what, b) in [("gamma", gamma), ("beta", beta), ("running_mean", &*running_mean), ("running_var", running_var), ("mean", mean), ("invstd", invstd)]
        {
            check_len(what, b, p.c as usize)?;
        }
        let (len, slices, grid) = bn_slices(p);
        let part = self.scratch(&self.bn_part, 2 * p.c as usize * slices)?;
        self.exec.batchnorm2d_stats_f32(grid, *p, len as i32, x.ptr, part)?;
        self.exec.batchnorm2d_forward_train_f32(
            warp_per_channel(p.c as usize),
            *p,
            len as i32,
            slices as i32,
            part,
            running_mean.ptr,
            running_var.ptr,
            mean.ptr,
            invstd.ptr,
        )?;
        self.exec.batchnorm2d_normalize_f32(Launch { shared_bytes: 0, ..grid }, *p, len as i32, x.ptr, gamma.ptr, beta.ptr, mean.ptr, invstd.ptr, y.ptr)
    }
    fn batchnorm2d_forward_infer(
        &self,
        p: &BatchNormParams,
        x: &GpuBuf,
        gamma: &GpuBuf,
        beta: &GpuBuf,
        running_mean: &GpuBuf,
        running_var: &GpuBuf,
        y: &mut GpuBuf,
    ) -> Result<()> {
        p.check_act(y.len)?;
        check_len("batchnorm2d x", x, p.len())?;
        check_len("batchnorm2d y", y, p.len())?;
        for (what, b) in [("gamma", gamma), ("beta", beta), ("running_mean", running_mean), ("running_var", running_var)] {
            check_len(what, b, p.c as usize)?;
        }
        self.exec.batchnorm2d_forward_infer_f32(elementwise(p.len()), *p, x.ptr, gamma.ptr, beta.ptr, running_mean.ptr, running_var.ptr, y.ptr)
    }
    fn batchnorm2d_backward_input(
        &self,
        p: &BatchNormParams,
        x: &GpuBuf,
        y: &GpuBuf,
        dy: &GpuBuf,
        gamma: &GpuBuf,
        mean: &GpuBuf,
        invstd: &GpuBuf,
        sums: &mut GpuBuf,
        dx: &mut GpuBuf,
    ) -> Result<()> {
        p.check_act(y.len)?;
        check_len("batchnorm2d sums", sums, 2 * p.c as usize)?;
        check_len("batchnorm2d x", x, p.len())?;
        check_len("batchnorm2d dy", dy, p.len())?;
        check_len("batchnorm2d dx", dx, p.len())?;
        for (what, b) in [("gamma", gamma), ("mean", mean), ("invstd", invstd)] {
            check_len(what, b, p.c as usize)?;
        }
        let (len, slices, grid) = bn_slices(p);
        let part = self.scratch(&self.bn_part, 2 * p.c as usize * slices)?;
        self.exec.batchnorm2d_grad_sums_f32(grid, *p, len as i32, x.ptr, y.ptr, dy.ptr, mean.ptr, invstd.ptr, part)?;
        self.exec.batchnorm2d_backward_input_f32(warp_per_channel(p.c as usize), *p, slices as i32, part, sums.ptr)?;
        self.exec.batchnorm2d_backward_apply_f32(
            Launch { shared_bytes: 0, ..grid },
            *p,
            len as i32,
            x.ptr,
            y.ptr,
            dy.ptr,
            gamma.ptr,
            mean.ptr,
            invstd.ptr,
            sums.ptr,
            dx.ptr,
        )
    }
    fn batchnorm2d_backward_params(&self, p: &BatchNormParams, sums: &GpuBuf, dgamma: &mut GpuBuf, dbeta: &mut GpuBuf) -> Result<()> {
        check_len("batchnorm2d sums", sums, 2 * p.c as usize)?;
        for (what, b) in [("dgamma", &*dgamma), ("dbeta", dbeta)] {
            check_len(what, b, p.c as usize)?;
        }
        self.exec.batchnorm2d_backward_params_f32(elementwise(p.c as usize), *p, sums.ptr, dgamma.ptr, dbeta.ptr)
    }

    fn relu_forward(&self, p: &ActParams, x: &GpuBuf, y: &mut GpuBuf) -> Result<()> {
        let l = self.act("relu", p, &[x, y])?;
        self.exec.relu_forward_f32(l, *p, x.ptr, y.ptr)
    }
    fn relu_backward_input(&self, p: &ActParams, y: &GpuBuf, dy: &GpuBuf, dx: &mut GpuBuf) -> Result<()> {
        let l = self.act("relu", p, &[y, dy, dx])?;
        self.exec.relu_backward_input_f32(l, *p, y.ptr, dy.ptr, dx.ptr)
    }
    fn leaky_relu_forward(&self, p: &ActParams, x: &GpuBuf, y: &mut GpuBuf) -> Result<()> {
        let l = self.act("leaky_relu", p, &[x, y])?;
        self.exec.leaky_relu_forward_f32(l, *p, x.ptr, y.ptr)
    }
    fn leaky_relu_backward_input(&self, p: &ActParams, y: &GpuBuf, dy: &GpuBuf, dx: &mut GpuBuf) -> Result<()> {
        let l = self.act("leaky_relu", p, &[y, dy, dx])?;
        self.exec.leaky_relu_backward_input_f32(l, *p, y.ptr, dy.ptr, dx.ptr)
    }
    fn tanh_forward(&self, p: &ActParams, x: &GpuBuf, y: &mut GpuBuf) -> Result<()> {
        let l = self.act("tanh", p, &[x, y])?;
        self.exec.tanh_forward_f32(l, *p, x.ptr, y.ptr)
    }
    fn tanh_backward_input(&self, p: &ActParams, y: &GpuBuf, dy: &GpuBuf, dx: &mut GpuBuf) -> Result<()> {
        let l = self.act("tanh", p, &[y, dy, dx])?;
        self.exec.tanh_backward_input_f32(l, *p, y.ptr, dy.ptr, dx.ptr)
    }

    fn linear_forward(&self, p: &LinearParams, x: &GpuBuf, w: &GpuBuf, b: Option<&GpuBuf>, y: &mut GpuBuf) -> Result<()> {
        let (n, i, o) = (p.n as usize, p.in_features as usize, p.out_features as usize);
        check_len("linear x", x, n * i)?;
        check_len("linear w", w, o * i)?;
        check_len("linear y", y, n * o)?;
        if let Some(b) = b {
            check_len("linear bias", b, o)?;
        }
        self.exec.linear_forward_f32(gemm(n, o, 1), *p, x.ptr, w.ptr, opt_ptr(b), y.ptr)
    }
    fn linear_backward_input(&self, p: &LinearParams, dy: &GpuBuf, w: &GpuBuf, dx: &mut GpuBuf) -> Result<()> {
        let (n, i, o) = (p.n as usize, p.in_features as usize, p.out_features as usize);
        check_len("linear dy", dy, n * o)?;
        check_len("linear w", w, o * i)?;
        check_len("linear dx", dx, n * i)?;
        self.exec.linear_backward_input_f32(gemm(n, i, 1), *p, dy.ptr, w.ptr, dx.ptr)
    }
    fn linear_backward_params(&self, p: &LinearParams, x: &GpuBuf, dy: &GpuBuf, dw: &mut GpuBuf, db: Option<&mut GpuBuf>) -> Result<()> {
        let (n, i, o) = (p.n as usize, p.in_features as usize, p.out_features as usize);
        check_len("linear x", x, n * i)?;
        check_len("linear dy", dy, n * o)?;
        check_len("linear dw", dw, o * i)?;
        self.exec.linear_backward_params_f32(gemm(o, i, 1), *p, x.ptr, dy.ptr, dw.ptr)?;
        if let Some(db) = db {
            self.bias_gradient(n, o, 1, dy, db)?;
        }
        Ok(())
    }

    fn concat_tile_forward(&self, p: &ConcatParams, a: &GpuBuf, b: &GpuBuf, y: &mut GpuBuf) -> Result<()> {
        check_len("concat_tile a", a, (p.n * p.c_a * p.hw) as usize)?;
        check_len("concat_tile b", b, (p.n * p.c_b) as usize)?;
        check_len("concat_tile y", y, p.out_len())?;
        self.exec.concat_tile_forward_f32(elementwise(p.out_len()), *p, a.ptr, b.ptr, y.ptr)
    }
    fn concat_tile_backward_input(&self, p: &ConcatParams, dy: &GpuBuf, da: &mut GpuBuf, db: &mut GpuBuf) -> Result<()> {
        check_len("concat_tile dy", dy, p.out_len())?;
        check_len("concat_tile da", da, (p.n * p.c_a * p.hw) as usize)?;
        check_len("concat_tile db", db, (p.n * p.c_b) as usize)?;
        let threads = (p.n * p.c_a * p.hw + p.n * p.c_b) as usize;
        self.exec.concat_tile_backward_input_f32(elementwise(threads), *p, dy.ptr, da.ptr, db.ptr)
    }

    fn bce_with_logits_forward(&self, p: &BceParams, logits: &GpuBuf, out: &mut GpuBuf) -> Result<()> {
        check_len("bce logits", logits, p.n as usize)?;
        check_len("bce out", out, 2)?;
        let l = Launch { grid: (1, 1, 1), block: REDUCE_THREADS, shared_bytes: REDUCE_SHARED };
        self.exec.bce_with_logits_forward_f32(l, *p, logits.ptr, out.ptr)
    }
    fn bce_with_logits_backward_input(&self, p: &BceParams, logits: &GpuBuf, dlogits: &mut GpuBuf) -> Result<()> {
        check_len("bce logits", logits, p.n as usize)?;
        check_len("bce dlogits", dlogits, p.n as usize)?;
        self.exec.bce_with_logits_backward_input_f32(elementwise(p.n as usize), *p, logits.ptr, dlogits.ptr)
    }
    fn adam_step(&self, p: &AdamParams, param: &mut GpuBuf, grad: &GpuBuf, m: &mut GpuBuf, v: &mut GpuBuf) -> Result<()> {
        for (what, b) in [("adam param", &*param), ("adam grad", grad), ("adam m", m), ("adam v", v)] {
            check_len(what, b, p.len as usize)?;
        }
        self.exec.adam_step_f32(elementwise(p.len as usize), *p, param.ptr, grad.ptr, m.ptr, v.ptr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kernel_has_exactly_one_launch_site() {
        let mut in_sources: Vec<&str> = source::kernels().into_iter().map(|(k, _)| k).collect();
        let mut declared: Vec<&str> = LAUNCHED_KERNELS.to_vec();
        in_sources.sort();
        declared.sort();
        let before = declared.len();
        declared.dedup();
        assert_eq!(before, declared.len(), "a kernel is declared twice in launch.rs");
        assert_eq!(in_sources, declared, "kernels/*.cu and the launch declarations in launch.rs differ");
    }

    #[test]
    fn gemm_mode_defaults_to_tensor_cores_only_where_they_exist() {
        assert_eq!(GemmMode::for_device(None, 61).unwrap(), GemmMode::Fp32);
        assert_eq!(GemmMode::for_device(None, 75).unwrap(), GemmMode::Fp32);
        assert_eq!(GemmMode::for_device(None, 80).unwrap(), GemmMode::Tf32x3);
        assert_eq!(GemmMode::for_device(None, 90).unwrap(), GemmMode::Tf32x3);
        assert_eq!(GemmMode::for_device(Some(GemmMode::Tf32), 90).unwrap(), GemmMode::Tf32);
        assert_eq!(GemmMode::for_device(Some(GemmMode::Fp32), 61).unwrap(), GemmMode::Fp32);
        let e = GemmMode::for_device(Some(GemmMode::Tf32x3), 75).unwrap_err().to_string();
        assert!(e.contains("tf32x3") && e.contains("sm_75") && e.contains("use fp32"), "{e}");
        for m in GemmMode::ALL {
            assert_eq!(GemmMode::parse(m.label()).unwrap(), m);
        }
        let e = GemmMode::parse("bf16").unwrap_err().to_string();
        assert!(e.contains("fp32, tf32x3, tf32, tf32x3-async or tf32-async"), "{e}");
        // The asynchronous copies need sm_80 as the tensor cores do; the precision is that
        // of the mode they feed.
        assert!(GemmMode::for_device(Some(GemmMode::Tf32Async), 75).is_err());
        assert_eq!(GemmMode::for_device(Some(GemmMode::Tf32x3Async), 80).unwrap(), GemmMode::Tf32x3Async);
        assert_eq!(GemmMode::Tf32x3Async.precision(), GemmMode::Tf32x3);
        assert_eq!(GemmMode::Tf32Async.precision(), GemmMode::Tf32);
        assert_eq!(GemmMode::Fp32.precision(), GemmMode::Fp32);
    }

    #[test]
    fn thin_forward_convs_split_and_wide_ones_do_not() {
        // D's head at 128 px, batch 64: one 64 x 64 tile, K = 16384.
        let (chunk, splits) = forward_slices(1, 64, 16_384);
        assert!(splits > 1 && chunk * splits >= 16_384, "{chunk} x {splits}");
        // D's 512 -> 1024 conv at batch 64: 16 x 16 tiles, no split.
        assert_eq!(forward_slices(1024, 1024, 8192), (8192, 1));
    }

    #[test]
    fn batchnorm_slices_cover_each_channel() {
        for &(n, hw) in &[(1, 1), (1, 35), (2, 2050), (1, 70_001), (64, 16), (64, 4096), (64, 16_384)] {
            let p = BatchNormParams::new(n, 3, hw, 1e-5, 0.1);
            let (len, slices, launch) = bn_slices(&p);
            let count = n * hw;
            assert!(len * slices >= count && len * (slices - 1) < count, "n{n} hw{hw}: {slices} slices of {len}");
            assert!((1..=64).contains(&slices) && (slices == 1 || len > 1024) && (slices == 64 || len <= 2048), "n{n} hw{hw}: {slices} slices of {len}");
            assert_eq!(launch.grid, (slices as u32, 3, 1));
        }
    }

    #[test]
    fn splitk_covers_the_reduction() {
        for &(m, n, k) in &[(8, 48, 512), (1024, 8192, 4096), (64, 48, 262_144), (3, 16, 1), (1, 1, 100_000)] {
            let (chunk, splits) = splitk_slices(m, n, k);
            assert!(chunk % GEMM_BK == 0 && chunk * splits >= k && chunk * (splits - 1) < k, "{m}x{n}x{k}: chunk {chunk}, {splits} slices");
            assert!(splits == 1 || splits * m * n <= 1 << 24);
        }
    }
}
