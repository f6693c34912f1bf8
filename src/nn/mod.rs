//! Layers with manual backprop, written against the op contract only.
//!
//! - `forward(x)` saves what `backward` needs (the input handle, batch statistics) and
//!   returns the output;
//! - `backward(dy, want)` returns `dx` when `want.input` and accumulates (`+=`) parameter
//!   gradients when `want.params`. Freezing is that argument: a network whose parameter
//!   gradients are not wanted never calls a `backward_params` op.
//!
//! Activations live in buffers owned by the layer that produced them and are shared by
//! handle (`Tensor`), so the next layer keeps its input without a copy. Buffers are
//! allocated on the first call with a given shape and reused after that.

mod layers;
mod progressive;

pub use layers::*;
pub use progressive::*;

use crate::backend::{ActParams, Backend, BatchNormParams, ConvParams, LinearParams, MinibatchStdParams, PixelNormParams, PoolParams, UpsampleParams};
use anyhow::Result;
use std::cell::RefCell;
use std::rc::Rc;

/// NCHW shape; vectors are `[n, c, 1, 1]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shape {
    pub n: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
}

impl Shape {
    pub fn new(n: usize, c: usize, h: usize, w: usize) -> Shape {
        Shape { n, c, h, w }
    }
    pub fn len(&self) -> usize {
        self.n * self.c * self.h * self.w
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    pub fn hw(&self) -> usize {
        self.h * self.w
    }
    pub fn per_image(&self) -> usize {
        self.c * self.h * self.w
    }
    pub fn with_batch(self, n: usize) -> Shape {
        Shape { n, ..self }
    }
}

impl std::fmt::Display for Shape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}x{}x{}", self.c, self.h, self.w)
    }
}

/// A shared handle to a backend buffer with its logical shape.
pub struct Tensor<B: Backend> {
    pub shape: Shape,
    pub buf: Rc<RefCell<B::Buf>>,
}

impl<B: Backend> Clone for Tensor<B> {
    fn clone(&self) -> Self {
        Tensor { shape: self.shape, buf: self.buf.clone() }
    }
}

impl<B: Backend> Tensor<B> {
    /// A new tensor of zeros. Refuses shapes of more than `i32::MAX` values: the ops'
    /// parameters and the kernels' indices are 32-bit.
    pub fn zeros(be: &B, shape: Shape) -> Result<Tensor<B>> {
        let len = [shape.c, shape.h, shape.w].iter().try_fold(shape.n, |a, &b| a.checked_mul(b)).filter(|&l| l <= i32::MAX as usize);
        let len = len.ok_or_else(|| {
            anyhow::anyhow!(
                "a batch of {} tensors of {shape} is more than the {} values one tensor may hold (the kernels index with 32-bit integers); use a smaller batch",
                shape.n,
                i32::MAX
            )
        })?;
        Ok(Tensor { shape, buf: Rc::new(RefCell::new(be.alloc(len)?)) })
    }
    pub fn from_f32(be: &B, shape: Shape, data: &[f32]) -> Result<Tensor<B>> {
        anyhow::ensure!(data.len() == shape.len(), "tensor of shape {shape:?} needs {} values, got {}", shape.len(), data.len());
        let t = Tensor::zeros(be, shape)?;
        be.upload(&mut t.buf.borrow_mut(), data)?;
        Ok(t)
    }
    pub fn to_f32(&self, be: &B) -> Result<Vec<f32>> {
        let mut out = vec![0.0; self.shape.len()];
        be.download(&self.buf.borrow(), &mut out)?;
        Ok(out)
    }
    pub fn to_f64(&self, be: &B) -> Result<Vec<f64>> {
        let mut out = vec![0.0; self.shape.len()];
        be.download_f64(&self.buf.borrow(), &mut out)?;
        Ok(out)
    }
    pub fn set_f32(&self, be: &B, data: &[f32]) -> Result<()> {
        anyhow::ensure!(data.len() == self.shape.len(), "tensor of shape {:?} needs {} values, got {}", self.shape, self.shape.len(), data.len());
        be.upload(&mut self.buf.borrow_mut(), data)
    }
    pub fn set_f64(&self, be: &B, data: &[f64]) -> Result<()> {
        anyhow::ensure!(data.len() == self.shape.len(), "tensor of shape {:?} needs {} values, got {}", self.shape, self.shape.len(), data.len());
        be.upload_f64(&mut self.buf.borrow_mut(), data)
    }
}

/// A layer's output buffer, reallocated only when the shape changes.
pub struct Slot<B: Backend>(Option<Tensor<B>>);

impl<B: Backend> Default for Slot<B> {
    fn default() -> Self {
        Slot(None)
    }
}

impl<B: Backend> Slot<B> {
    pub fn get(&mut self, be: &B, shape: Shape) -> Result<Tensor<B>> {
        match &self.0 {
            Some(t) if t.shape == shape => Ok(t.clone()),
            _ => {
                let t = Tensor::zeros(be, shape)?;
                self.0 = Some(t.clone());
                Ok(t)
            }
        }
    }
}

/// A trainable tensor with its gradient and Adam moments.
pub struct Param<B: Backend> {
    pub name: String,
    pub shape: Vec<usize>,
    pub value: B::Buf,
    pub grad: B::Buf,
    pub m: B::Buf,
    pub v: B::Buf,
}

impl<B: Backend> Param<B> {
    pub fn new(be: &B, name: &str, shape: &[usize], init: &[f32]) -> Result<Param<B>> {
        let len: usize = shape.iter().product();
        anyhow::ensure!(init.len() == len, "parameter {name}: {} initial values for shape {shape:?}", init.len());
        let mut value = be.alloc(len)?;
        be.upload(&mut value, init)?;
        Ok(Param { name: name.to_string(), shape: shape.to_vec(), value, grad: be.alloc(len)?, m: be.alloc(len)?, v: be.alloc(len)? })
    }
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A non-trainable tensor saved with the model (batchnorm running statistics).
pub struct Buffer<B: Backend> {
    pub name: String,
    pub value: B::Buf,
    pub len: usize,
}

/// Whether batchnorm uses batch statistics (and updates the running ones) or the
/// running statistics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Train,
    Eval,
}

/// Which gradients a backward pass computes: the input's (`input`) and the parameters'
/// (`params`, accumulated). `params: false` is how a network is frozen: its parameter
/// gradients keep their values and no `*_backward_params` op runs. `input: false` is for
/// a layer whose input is data (the first layer in training).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Grads {
    pub input: bool,
    pub params: bool,
}

impl Grads {
    /// Both: gradient checks.
    pub const ALL: Grads = Grads { input: true, params: true };
    /// Frozen: the input gradient flows through, no parameter gradient is touched.
    pub const FROZEN: Grads = Grads { input: true, params: false };
    /// Training on data: parameter gradients only.
    pub const PARAMS: Grads = Grads { input: false, params: true };
    /// Nothing: the backward pass has no work.
    pub const NONE: Grads = Grads { input: false, params: false };
}

/// The op a layer runs on an input of a given shape, as values (tables, benchmarks and
/// kernel checks read these, never the description string).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum LayerOp {
    Conv { p: ConvParams, transposed: bool },
    BatchNorm(BatchNormParams),
    Linear(LinearParams),
    Activation { p: ActParams, kind: ActKind },
    MinibatchStd(MinibatchStdParams),
    Upsample(UpsampleParams),
    Pool(PoolParams),
    PixelNorm(PixelNormParams),
}

pub trait Layer<B: Backend> {
    /// A short description for tables, e.g. `ConvTranspose2d(356, 512, k4 s1 p0)`.
    fn describe(&self) -> String;
    fn out_shape(&self, x: Shape) -> Shape;
    /// The op the layer runs on an input of shape `x`, with its parameters.
    fn op(&self, x: Shape) -> LayerOp;
    /// Multiply-adds of one forward pass over `x` (the convolutions and linears; the
    /// elementwise layers count zero).
    fn forward_macs(&self, _x: Shape) -> u64 {
        0
    }
    fn forward(&mut self, be: &B, x: &Tensor<B>, mode: Mode) -> Result<Tensor<B>>;
    /// The gradients `want` asks for: returns `dx` when `want.input`, accumulates the
    /// parameter gradients when `want.params`.
    fn backward(&mut self, be: &B, dy: &Tensor<B>, want: Grads) -> Result<Option<Tensor<B>>>;
    /// How many PyTorch `Sequential` indices the layer stands for (2 for a batchnorm
    /// with its activation fused), so parameter names keep PyTorch's numbering.
    fn slots(&self) -> usize {
        1
    }
    fn params(&self) -> Vec<&Param<B>> {
        Vec::new()
    }
    fn params_mut(&mut self) -> Vec<&mut Param<B>> {
        Vec::new()
    }
    fn buffers(&self) -> Vec<&Buffer<B>> {
        Vec::new()
    }
    fn buffers_mut(&mut self) -> Vec<&mut Buffer<B>> {
        Vec::new()
    }
    /// The momentum of the running statistics a training-mode forward updates (batchnorm);
    /// `None` for layers without running statistics. The EMA generator's statistics are
    /// recomputed as a cumulative average by setting it batch by batch.
    fn momentum_mut(&mut self) -> Option<&mut f32> {
        None
    }
}

/// Layers applied in order.
pub struct Sequential<B: Backend> {
    pub layers: Vec<Box<dyn Layer<B>>>,
}

impl<B: Backend> Sequential<B> {
    pub fn new(layers: Vec<Box<dyn Layer<B>>>) -> Self {
        Sequential { layers }
    }
    pub fn forward(&mut self, be: &B, x: &Tensor<B>, mode: Mode) -> Result<Tensor<B>> {
        let mut h = x.clone();
        for l in self.layers.iter_mut() {
            h = l.forward(be, &h, mode)?;
        }
        Ok(h)
    }
    /// Backward through every layer: `want.params` applies to all of them, `want.input`
    /// to the first (the others must pass their input gradient on). Returns the input's
    /// gradient when wanted; with nothing wanted, runs no op at all.
    pub fn backward(&mut self, be: &B, dy: &Tensor<B>, want: Grads) -> Result<Option<Tensor<B>>> {
        if want == Grads::NONE {
            return Ok(None);
        }
        let mut g = dy.clone();
        for (i, l) in self.layers.iter_mut().enumerate().rev() {
            let w = if i == 0 { want } else { Grads { input: true, params: want.params } };
            match l.backward(be, &g, w)? {
                Some(dx) => g = dx,
                None => return Ok(None),
            }
        }
        Ok(Some(g))
    }
    pub fn out_shape(&self, x: Shape) -> Shape {
        self.layers.iter().fold(x, |s, l| l.out_shape(s))
    }
}
