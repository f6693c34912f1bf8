//! The CPU backend: the reference for every op, and the way to train without a GPU.
//!
//! Generic over the element type so the same code runs in f32 (training) and f64
//! (gradient checks). Convolutions go through im2col + a maintained GEMM (`gemm` crate),
//! image by image on each thread or over chunks of images (see `conv`); the im2col scratch
//! lives in a workspace that grows once and is reused, so the hot path does not allocate.
//! Work is spread over all cores with rayon.

mod conv;
mod gemm;
mod math;
mod ops;
mod simd;

use super::*;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

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
    /// Calls of any `*_backward_params` op, so tests can prove a frozen layer never
    /// launches one.
    param_grad_calls: AtomicU64,
}

impl<T: Elem> Default for CpuBackend<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Elem> CpuBackend<T> {
    pub fn new() -> Self {
        CpuBackend { ws: Mutex::new(Workspace::default()), chunk_elems: 1 << 23, split: conv::Split::Auto, param_grad_calls: AtomicU64::new(0) }
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

    /// How many parameter-gradient ops have run on this backend.
    pub fn param_grad_calls(&self) -> u64 {
        self.param_grad_calls.load(Ordering::Relaxed)
    }

    fn count_param_grad(&self) {
        self.param_grad_calls.fetch_add(1, Ordering::Relaxed);
    }
}

pub type Cpu = CpuBackend<f32>;
pub type Cpu64 = CpuBackend<f64>;

fn check_len<T>(what: &str, buf: &[T], need: usize) -> Result<()> {
    anyhow::ensure!(buf.len() >= need, "{what}: buffer holds {} values, op needs {need}", buf.len());
    Ok(())
}

impl<T: Elem> Backend for CpuBackend<T> {
    type Buf = Vec<T>;

    fn name(&self) -> String {
        format!("cpu ({}, {} threads)", T::NAME, rayon::current_num_threads())
    }

    fn alloc(&self, len: usize) -> Result<Vec<T>> {
        Ok(vec![T::zero(); len])
    }
    fn len(&self, buf: &Vec<T>) -> usize {
        buf.len()
    }
    fn upload(&self, dst: &mut Vec<T>, src: &[f32]) -> Result<()> {
        check_len("upload", dst, src.len())?;
        dst.iter_mut().zip(src).for_each(|(d, s)| *d = T::from_f32(*s));
        Ok(())
    }
    fn download(&self, src: &Vec<T>, dst: &mut [f32]) -> Result<()> {
        check_len("download", src, dst.len())?;
        dst.iter_mut().zip(src).for_each(|(d, s)| *d = s.to_f32());
        Ok(())
    }
    fn upload_f64(&self, dst: &mut Vec<T>, src: &[f64]) -> Result<()> {
        check_len("upload", dst, src.len())?;
        dst.iter_mut().zip(src).for_each(|(d, s)| *d = T::from_f64(*s));
        Ok(())
    }
    fn download_f64(&self, src: &Vec<T>, dst: &mut [f64]) -> Result<()> {
        check_len("download", src, dst.len())?;
        dst.iter_mut().zip(src).for_each(|(d, s)| *d = s.to_f64());
        Ok(())
    }
    fn fill(&self, buf: &mut Vec<T>, value: f32) -> Result<()> {
        // Large buffers (zero_grad of the big convolutions' weights, 2M values) on every
        // core; one core alone wrote them at about 7 GB/s.
        const PAR_CHUNK: usize = 1 << 16;
        let v = T::from_f32(value);
        if buf.len() > PAR_CHUNK {
            use rayon::prelude::*;
            buf.par_chunks_mut(PAR_CHUNK).for_each(|c| c.fill(v));
        } else {
            buf.fill(v);
        }
        Ok(())
    }

    fn conv2d_forward(&self, p: &ConvParams, x: &Vec<T>, w: &Vec<T>, bias: Option<&Vec<T>>, y: &mut Vec<T>) -> Result<()> {
        check_len("conv2d_forward x", x, p.in_len())?;
        check_len("conv2d_forward w", w, p.weight_len())?;
        check_len("conv2d_forward y", y, p.out_len())?;
        conv::conv2d_forward(self, p, x, w, bias.map(|b| b.as_slice()), y);
        Ok(())
    }
    fn conv2d_backward_input(&self, p: &ConvParams, dy: &Vec<T>, w: &Vec<T>, dx: &mut Vec<T>) -> Result<()> {
        check_len("conv2d_backward_input dy", dy, p.out_len())?;
        check_len("conv2d_backward_input dx", dx, p.in_len())?;
        conv::conv2d_backward_input(self, p, dy, w, dx);
        Ok(())
    }
    fn conv2d_backward_params(&self, p: &ConvParams, x: &Vec<T>, dy: &Vec<T>, dw: &mut Vec<T>, dbias: Option<&mut Vec<T>>) -> Result<()> {
        self.count_param_grad();
        check_len("conv2d_backward_params dw", dw, p.weight_len())?;
        conv::conv2d_backward_params(self, p, x, dy, dw);
        if let Some(db) = dbias {
            ops::bias_backward_params(p.n as usize, p.c_out as usize, (p.h_out * p.w_out) as usize, dy, db);
        }
        Ok(())
    }

    fn conv_transpose2d_forward(&self, p: &ConvParams, x: &Vec<T>, w: &Vec<T>, bias: Option<&Vec<T>>, y: &mut Vec<T>) -> Result<()> {
        check_len("conv_transpose2d_forward x", x, p.in_len())?;
        check_len("conv_transpose2d_forward w", w, p.weight_len())?;
        check_len("conv_transpose2d_forward y", y, p.out_len())?;
        conv::conv_transpose2d_forward(self, p, x, w, bias.map(|b| b.as_slice()), y);
        Ok(())
    }
    fn conv_transpose2d_backward_input(&self, p: &ConvParams, dy: &Vec<T>, w: &Vec<T>, dx: &mut Vec<T>) -> Result<()> {
        check_len("conv_transpose2d_backward_input dy", dy, p.out_len())?;
        check_len("conv_transpose2d_backward_input dx", dx, p.in_len())?;
        conv::conv_transpose2d_backward_input(self, p, dy, w, dx);
        Ok(())
    }
    fn conv_transpose2d_backward_params(&self, p: &ConvParams, x: &Vec<T>, dy: &Vec<T>, dw: &mut Vec<T>, dbias: Option<&mut Vec<T>>) -> Result<()> {
        self.count_param_grad();
        check_len("conv_transpose2d_backward_params dw", dw, p.weight_len())?;
        conv::conv_transpose2d_backward_params(self, p, x, dy, dw);
        if let Some(db) = dbias {
            ops::bias_backward_params(p.n as usize, p.c_out as usize, (p.h_out * p.w_out) as usize, dy, db);
        }
        Ok(())
    }

    fn batchnorm2d_forward_train(
        &self,
        p: &BatchNormParams,
        x: &Vec<T>,
        gamma: &Vec<T>,
        beta: &Vec<T>,
        running_mean: &mut Vec<T>,
        running_var: &mut Vec<T>,
        mean: &mut Vec<T>,
        invstd: &mut Vec<T>,
        y: &mut Vec<T>,
    ) -> Result<()> {
        p.check_act(y.len())?;
        check_len("batchnorm2d x", x, p.len())?;
        check_len("batchnorm2d y", y, p.len())?;
        ops::batchnorm2d_forward_train(p, x, gamma, beta, running_mean, running_var, mean, invstd, y);
        Ok(())
    }
    fn batchnorm2d_forward_infer(
        &self,
        p: &BatchNormParams,
        x: &Vec<T>,
        gamma: &Vec<T>,
        beta: &Vec<T>,
        running_mean: &Vec<T>,
        running_var: &Vec<T>,
        y: &mut Vec<T>,
    ) -> Result<()> {
        check_len("batchnorm2d x", x, p.len())?;
        check_len("batchnorm2d y", y, p.len())?;
        ops::batchnorm2d_forward_infer(p, x, gamma, beta, running_mean, running_var, y);
        Ok(())
    }
    fn batchnorm2d_backward_input(
        &self,
        p: &BatchNormParams,
        x: &Vec<T>,
        y: &Vec<T>,
        dy: &Vec<T>,
        gamma: &Vec<T>,
        mean: &Vec<T>,
        invstd: &Vec<T>,
        sums: &mut Vec<T>,
        dx: &mut Vec<T>,
    ) -> Result<()> {
        check_len("batchnorm2d sums", sums, 2 * p.c as usize)?;
        p.check_act(y.len())?;
        check_len("batchnorm2d dx", dx, p.len())?;
        ops::batchnorm2d_backward_input(p, x, y, dy, gamma, mean, invstd, sums, dx);
        Ok(())
    }
    fn batchnorm2d_backward_params(&self, p: &BatchNormParams, sums: &Vec<T>, dgamma: &mut Vec<T>, dbeta: &mut Vec<T>) -> Result<()> {
        self.count_param_grad();
        check_len("batchnorm2d sums", sums, 2 * p.c as usize)?;
        check_len("batchnorm2d dgamma", dgamma, p.c as usize)?;
        check_len("batchnorm2d dbeta", dbeta, p.c as usize)?;
        ops::batchnorm2d_backward_params(p, sums, dgamma, dbeta);
        Ok(())
    }

    fn relu_forward(&self, p: &ActParams, x: &Vec<T>, y: &mut Vec<T>) -> Result<()> {
        ops::map2(
            p.len as usize,
            x,
            y,
            #[inline(always)]
            |v| if v > T::zero() { v } else { T::zero() },
        );
        Ok(())
    }
    fn relu_backward_input(&self, p: &ActParams, y: &Vec<T>, dy: &Vec<T>, dx: &mut Vec<T>) -> Result<()> {
        ops::map3(
            p.len as usize,
            y,
            dy,
            dx,
            #[inline(always)]
            |y, g| if y > T::zero() { g } else { T::zero() },
        );
        Ok(())
    }
    fn leaky_relu_forward(&self, p: &ActParams, x: &Vec<T>, y: &mut Vec<T>) -> Result<()> {
        let s = T::from_f32(p.slope);
        ops::map2(
            p.len as usize,
            x,
            y,
            #[inline(always)]
            |v| if v > T::zero() { v } else { v * s },
        );
        Ok(())
    }
    fn leaky_relu_backward_input(&self, p: &ActParams, y: &Vec<T>, dy: &Vec<T>, dx: &mut Vec<T>) -> Result<()> {
        let s = T::from_f32(p.slope);
        ops::map3(
            p.len as usize,
            y,
            dy,
            dx,
            #[inline(always)]
            |y, g| if y > T::zero() { g } else { g * s },
        );
        Ok(())
    }
    fn tanh_forward(&self, p: &ActParams, x: &Vec<T>, y: &mut Vec<T>) -> Result<()> {
        ops::map2(
            p.len as usize,
            x,
            y,
            #[inline(always)]
            |v| v.tanh(),
        );
        Ok(())
    }
    fn tanh_backward_input(&self, p: &ActParams, y: &Vec<T>, dy: &Vec<T>, dx: &mut Vec<T>) -> Result<()> {
        ops::map3(
            p.len as usize,
            y,
            dy,
            dx,
            #[inline(always)]
            |y, g| g * (T::one() - y * y),
        );
        Ok(())
    }

    fn linear_forward(&self, p: &LinearParams, x: &Vec<T>, w: &Vec<T>, b: Option<&Vec<T>>, y: &mut Vec<T>) -> Result<()> {
        let (n, i, o) = (p.n as usize, p.in_features as usize, p.out_features as usize);
        check_len("linear x", x, n * i)?;
        check_len("linear w", w, o * i)?;
        check_len("linear y", y, n * o)?;
        ops::linear_forward(n, i, o, x, w, b.map(|b| b.as_slice()), y);
        Ok(())
    }
    fn linear_backward_input(&self, p: &LinearParams, dy: &Vec<T>, w: &Vec<T>, dx: &mut Vec<T>) -> Result<()> {
        let (n, i, o) = (p.n as usize, p.in_features as usize, p.out_features as usize);
        check_len("linear dx", dx, n * i)?;
        // dx[n, i] = dy[n, o] . w[o, i]
        gemm::matmul(n, i, o, dx, i, false, dy, o as isize, 1, w, i as isize, 1);
        Ok(())
    }
    fn linear_backward_params(&self, p: &LinearParams, x: &Vec<T>, dy: &Vec<T>, dw: &mut Vec<T>, db: Option<&mut Vec<T>>) -> Result<()> {
        self.count_param_grad();
        let (n, i, o) = (p.n as usize, p.in_features as usize, p.out_features as usize);
        check_len("linear dw", dw, o * i)?;
        // dw[o, i] += dy^T[o, n] . x[n, i]
        gemm::matmul(o, i, n, dw, i, true, dy, 1, o as isize, x, i as isize, 1);
        if let Some(db) = db {
            ops::bias_backward_params(n, o, 1, dy, db);
        }
        Ok(())
    }

    fn concat_tile_forward(&self, p: &ConcatParams, a: &Vec<T>, b: &Vec<T>, y: &mut Vec<T>) -> Result<()> {
        check_len("concat_tile y", y, p.out_len())?;
        ops::concat_tile_forward(p, a, b, y);
        Ok(())
    }
    fn concat_tile_backward_input(&self, p: &ConcatParams, dy: &Vec<T>, da: &mut Vec<T>, db: &mut Vec<T>) -> Result<()> {
        check_len("concat_tile dy", dy, p.out_len())?;
        ops::concat_tile_backward_input(p, dy, da, db);
        Ok(())
    }

    fn bce_with_logits_forward(&self, p: &BceParams, logits: &Vec<T>, out: &mut Vec<T>) -> Result<()> {
        check_len("bce logits", logits, p.n as usize)?;
        check_len("bce out", out, 2)?;
        ops::bce_with_logits_forward(p, logits, out);
        Ok(())
    }
    fn bce_with_logits_backward_input(&self, p: &BceParams, logits: &Vec<T>, dlogits: &mut Vec<T>) -> Result<()> {
        check_len("bce dlogits", dlogits, p.n as usize)?;
        ops::bce_with_logits_backward_input(p, logits, dlogits);
        Ok(())
    }
    fn adam_step(&self, p: &AdamParams, param: &mut Vec<T>, grad: &Vec<T>, m: &mut Vec<T>, v: &mut Vec<T>) -> Result<()> {
        let len = p.len as usize;
        check_len("adam param", param, len)?;
        check_len("adam grad", grad, len)?;
        ops::adam_step(p, &mut param[..len], &grad[..len], &mut m[..len], &mut v[..len]);
        Ok(())
    }
}
