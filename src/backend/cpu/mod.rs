//! The CPU backend: the reference for every op, and the way to train without a GPU.
//!
//! Generic over the element type so the same code runs in f32 (training) and f64
//! (gradient checks). Convolutions go through im2col + a maintained GEMM (`gemm` crate),
//! image by image on each thread or over chunks of images (see `conv`); the im2col scratch
//! lives in a workspace that grows once and is reused, so the hot path does not allocate.
//! Work is spread over all cores with rayon.
//!
//! A backend of `--precision bf16` ([`Cpu::with_precision`]) runs its convolution and
//! linear GEMMs on bf16 operands with f32 sums (`bf16.rs`); everything else stays f32.

mod activation;
mod adam;
pub(crate) mod augment;
mod batchnorm;
mod bce;
pub mod bf16;
mod concat;
mod conv;
mod cross_entropy;
mod ema;
mod fade;
mod fill;
pub(crate) mod gemm;
mod linear;
mod math;
mod minibatch_std;
mod mode_seeking;
mod pixel_norm;
mod pool;
mod projection;
mod scale;
pub mod simd;
mod upsample;

pub use bf16::Bf16Kernel;

use super::precision::Precision;
use super::{check_len, Core, Profiler, Work};
use anyhow::Result;
use std::sync::Mutex;

/// Elementwise work is split into blocks of this many values across threads.
const BLOCK: usize = 1 << 14;

/// A pointer that tasks writing disjoint parts of one buffer may share.
#[derive(Clone, Copy)]
struct SharedMut<T>(*mut T);
// SAFETY: only used where each task writes its own disjoint elements (see the callers).
unsafe impl<T: Send> Send for SharedMut<T> {}
unsafe impl<T: Send> Sync for SharedMut<T> {}

impl<T> SharedMut<T> {
    /// The pointer itself (a method, so closures capture the `Sync` wrapper, not the field).
    fn ptr(&self) -> *mut T {
        self.0
    }
}

/// The element types the CPU backend runs in.
pub trait Elem:
    Copy
    + Send
    + Sync
    + Default
    + PartialOrd
    + std::fmt::Debug
    + std::ops::Add<Output = Self>
    + std::ops::Sub<Output = Self>
    + std::ops::Mul<Output = Self>
    + std::ops::Div<Output = Self>
    + std::ops::Neg<Output = Self>
    + std::ops::AddAssign
    + std::ops::SubAssign
    + std::ops::MulAssign
    + 'static
{
    const NAME: &'static str;
    fn from_f32(v: f32) -> Self;
    fn from_f64(v: f64) -> Self;
    fn to_f32(self) -> f32;
    fn to_f64(self) -> f64;
    fn zero() -> Self {
        Self::default()
    }
    fn one() -> Self {
        Self::from_f32(1.0)
    }
    fn exp(self) -> Self;
    fn ln_1p(self) -> Self;
    fn tanh(self) -> Self;
    fn sqrt(self) -> Self;
    fn abs(self) -> Self;
}

macro_rules! impl_elem {
    ($t:ty, $name:expr, $tanh:path) => {
        impl Elem for $t {
            const NAME: &'static str = $name;
            #[inline(always)]
            fn from_f32(v: f32) -> Self {
                v as $t
            }
            #[inline(always)]
            fn from_f64(v: f64) -> Self {
                v as $t
            }
            #[inline(always)]
            fn to_f32(self) -> f32 {
                self as f32
            }
            #[inline(always)]
            fn to_f64(self) -> f64 {
                self as f64
            }
            #[inline(always)]
            fn exp(self) -> Self {
                <$t>::exp(self)
            }
            #[inline(always)]
            fn ln_1p(self) -> Self {
                <$t>::ln_1p(self)
            }
            #[inline(always)]
            fn tanh(self) -> Self {
                $tanh(self)
            }
            #[inline(always)]
            fn sqrt(self) -> Self {
                <$t>::sqrt(self)
            }
            #[inline(always)]
            fn abs(self) -> Self {
                <$t>::abs(self)
            }
        }
    };
}
// f32's tanh is the vectorising one (the generator's output layer); f64, the reference of
// the gradient checks, keeps libm's.
impl_elem!(f32, "f32", math::tanh_f32);
impl_elem!(f64, "f64", f64::tanh);

/// Scratch memory for im2col columns and gathered GEMM operands. Grows to the largest
/// request and stays; a model's layers are called in sequence, so one is enough.
#[derive(Default)]
struct Workspace<T> {
    cols: Vec<T>,
    tmp: Vec<T>,
    /// Zero-padded input planes for im2row.
    pad: Vec<T>,
    /// The weights transposed, for the convolution passes that run the GEMM before col2im.
    wt: Vec<T>,
    /// One scratch set per thread for the convolutions that run image by image.
    local: Vec<conv::Local<T>>,
}

pub struct CpuBackend<T: Elem> {
    ws: Mutex<Workspace<T>>,
    /// Upper bound on im2col scratch elements per chunk of images.
    chunk_elems: usize,
    /// How the convolutions divide their work between the threads.
    split: conv::Split,
    /// The bf16 GEMM kernel of a `--precision bf16` backend; `None`: f32 GEMMs.
    bf16: Option<Bf16Kernel>,
    /// GEMM operands rounded to TF32 first (`with_tf32_operands`).
    tf32_operands: bool,
    profiler: Profiler,
}

impl<T: Elem> Default for CpuBackend<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Elem> CpuBackend<T> {
    pub fn new() -> Self {
        CpuBackend {
            ws: Mutex::new(Workspace::default()),
            chunk_elems: 1 << 23,
            split: conv::Split::Auto,
            bf16: None,
            tf32_operands: false,
            profiler: Profiler::default(),
        }
    }

    /// A backend whose convolutions and linear layers round their GEMM operands to TF32
    /// first, as GPU tensor cores do in GEMM mode tf32 (to nearest, ties away from zero:
    /// kernels/gemm.cuh, `tf32_operand`), and then multiply and sum as usual. Bias terms and
    /// bias gradients stay exact, as on the GPU, and so do the passes the GPU runs on its
    /// thin fp32 kernels (few output channels: cuda::ops::conv, `*_is_thin`). The yardstick of the whole-iteration and
    /// PyTorch-reference checks in that mode (verify::iteration, verify::torch): how far
    /// TF32 operands alone carry a training iteration from the f64 result.
    pub fn with_tf32_operands() -> Self {
        CpuBackend { tf32_operands: true, ..Self::new() }
    }

    /// `v` as the GEMMs of this backend read it: rounded to TF32 (`with_tf32_operands`),
    /// else as it is.
    fn gemm_operand<'a>(&self, v: &'a [T]) -> std::borrow::Cow<'a, [T]> {
        if self.tf32_operands {
            std::borrow::Cow::Owned(v.iter().map(|x| T::from_f32(round_tf32(x.to_f32()))).collect())
        } else {
            std::borrow::Cow::Borrowed(v)
        }
    }

    /// A backend whose convolutions all work on chunks of at most `elems` scratch values
    /// (tests use a tiny bound to exercise chunk boundaries).
    pub fn with_chunk_elems(elems: usize) -> Self {
        CpuBackend { chunk_elems: elems.max(1), split: conv::Split::Chunks, ..Self::new() }
    }

    /// A backend whose convolutions all give each thread its own range of images, whatever
    /// their shape (tests compare it with the chunked path).
    pub fn with_image_tasks() -> Self {
        CpuBackend { split: conv::Split::Images, ..Self::new() }
    }
}

pub type Cpu = CpuBackend<f32>;

impl Cpu {
    /// The f32 backend with its GEMMs in `precision`; for bf16 on the kernel
    /// `GAN_ENGINE_CPU_BF16` names, else the fastest this CPU has.
    pub fn with_precision(precision: Precision) -> Result<Cpu> {
        Ok(match precision {
            Precision::F32 => Cpu::new(),
            Precision::Bf16 => Cpu::with_bf16_kernel(Bf16Kernel::from_env()?)?,
        })
    }

    /// The bf16 backend on a given kernel (tests run each one the CPU has).
    pub fn with_bf16_kernel(kernel: Bf16Kernel) -> Result<Cpu> {
        anyhow::ensure!(kernel.available(), "the bf16 GEMM kernel {} does not run on this CPU", kernel.label());
        Ok(CpuBackend { bf16: Some(kernel), ..Cpu::new() })
    }

    /// The bf16 GEMM kernel, under `--precision bf16`.
    pub fn bf16_kernel(&self) -> Option<Bf16Kernel> {
        self.bf16
    }
}
pub type Cpu64 = CpuBackend<f64>;

/// `x` rounded to TF32 (8 exponent and 10 mantissa bits) to nearest, ties away from zero:
/// half a TF32 unit added to the magnitude, the 13 low bits cleared (kernels/gemm.cuh).
pub fn round_tf32(x: f32) -> f32 {
    if !x.is_finite() {
        return x;
    }
    f32::from_bits(x.to_bits().wrapping_add(0x1000) & 0xffff_e000)
}

/// `buf` holds at least `need` values.
fn check<T>(what: &str, buf: &[T], need: usize) -> Result<()> {
    check_len(what, buf.len(), need)
}

impl<T: Elem> Core for CpuBackend<T> {
    type Buf = Vec<T>;

    fn name(&self) -> String {
        match self.bf16 {
            Some(k) => format!("cpu ({}, bf16 GEMMs on {}, {} threads)", T::NAME, k.label(), rayon::current_num_threads()),
            None => format!("cpu ({}, {} threads)", T::NAME, rayon::current_num_threads()),
        }
    }

    fn alloc(&self, len: usize) -> Result<Vec<T>> {
        // A failed allocation is an error to report, not an abort.
        let mut v = Vec::new();
        v.try_reserve_exact(len)
            .map_err(|_| anyhow::anyhow!("cannot allocate {len} values ({} bytes) in host memory", len.saturating_mul(std::mem::size_of::<T>())))?;
        v.resize(len, T::zero());
        Ok(v)
    }
    fn len(&self, buf: &Vec<T>) -> usize {
        buf.len()
    }
    fn upload(&self, dst: &mut Vec<T>, src: &[f32]) -> Result<()> {
        let bytes = 4.0 * src.len() as f64;
        self.timed(
            "upload",
            || Work::bytes(String::new(), bytes),
            || {
                check("upload", dst, src.len())?;
                dst.iter_mut().zip(src).for_each(|(d, s)| *d = T::from_f32(*s));
                Ok(())
            },
        )
    }
    fn download(&self, src: &Vec<T>, dst: &mut [f32]) -> Result<()> {
        let bytes = 4.0 * dst.len() as f64;
        self.timed(
            "download",
            || Work::bytes(String::new(), bytes),
            || {
                check("download", src, dst.len())?;
                dst.iter_mut().zip(src).for_each(|(d, s)| *d = s.to_f32());
                Ok(())
            },
        )
    }
    fn upload_f64(&self, dst: &mut Vec<T>, src: &[f64]) -> Result<()> {
        check("upload", dst, src.len())?;
        dst.iter_mut().zip(src).for_each(|(d, s)| *d = T::from_f64(*s));
        Ok(())
    }
    fn download_f64(&self, src: &Vec<T>, dst: &mut [f64]) -> Result<()> {
        check("download", src, dst.len())?;
        dst.iter_mut().zip(src).for_each(|(d, s)| *d = s.to_f64());
        Ok(())
    }
    fn fill(&self, buf: &mut Vec<T>, value: f32) -> Result<()> {
        let bytes = 4.0 * buf.len() as f64;
        self.timed(
            "fill",
            || Work::bytes(String::new(), bytes),
            || {
                fill::fill(buf, T::from_f32(value));
                Ok(())
            },
        )
    }
    fn profiler(&self) -> &Profiler {
        &self.profiler
    }
    fn precision(&self) -> Precision {
        if self.bf16.is_some() {
            Precision::Bf16
        } else {
            Precision::F32
        }
    }
}
