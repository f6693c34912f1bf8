use super::{Buffer, Grads, Layer, LayerOp, Mode, Param, Shape, Slot, Tensor};
use crate::backend::{
    ActParams, Backend, BatchNormParams, ConcatParams, ConvParams, LinearParams, MinibatchStdParams, PoolParams, ProjectionParams, BN_ACT_LEAKY_RELU,
    BN_ACT_RELU,
};
use crate::rng::Rng;
use anyhow::{bail, Context, Result};

fn saved<'a, B: Backend>(x: &'a Option<Tensor<B>>, layer: &str) -> Result<&'a Tensor<B>> {
    x.as_ref().with_context(|| format!("{layer}: backward called before forward"))
}

/// conv2d or conv_transpose2d with a square kernel.
pub struct Conv<B: Backend> {
    pub transposed: bool,
    pub c_in: usize,
    pub c_out: usize,
    pub k: usize,
    pub stride: usize,
    pub pad: usize,
    pub weight: Param<B>,
    pub bias: Option<Param<B>>,
    x: Option<Tensor<B>>,
    out: Slot<B>,
    dx: Slot<B>,
}

impl<B: Backend> Conv<B> {
    /// DCGAN initialisation: weights N(0, 0.02), bias zero.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        be: &B,
        name: &str,
        transposed: bool,
        c_in: usize,
        c_out: usize,
        k: usize,
        stride: usize,
        pad: usize,
        bias: bool,
        rng: &mut Rng,
    ) -> Result<Self> {
        let shape = if transposed { [c_in, c_out, k, k] } else { [c_out, c_in, k, k] };
        let mut w = vec![0.0; shape.iter().product()];
        rng.fill_normal(&mut w, 0.0, 0.02);
        let weight = Param::new(be, &format!("{name}.weight"), &shape, &w)?;
        let bias = if bias { Some(Param::new(be, &format!("{name}.bias"), &[c_out], &vec![0.0; c_out])?) } else { None };
        Ok(Conv { transposed, c_in, c_out, k, stride, pad, weight, bias, x: None, out: Slot::default(), dx: Slot::default() })
    }

    /// A convolution around parameters made elsewhere (`EqConv`'s runtime weight); refuses
    /// a weight or bias whose shape is not the one `new` would make.
    #[allow(clippy::too_many_arguments)]
    pub fn from_params(
        transposed: bool,
        c_in: usize,
        c_out: usize,
        k: usize,
        stride: usize,
        pad: usize,
        weight: Param<B>,
        bias: Option<Param<B>>,
    ) -> Result<Self> {
        let shape = if transposed { [c_in, c_out, k, k] } else { [c_out, c_in, k, k] };
        anyhow::ensure!(weight.shape == shape, "convolution weight {}: shape {:?}, the layer needs {shape:?}", weight.name, weight.shape);
        if let Some(b) = &bias {
            anyhow::ensure!(b.shape == [c_out], "convolution bias {}: shape {:?}, the layer needs [{c_out}]", b.name, b.shape);
        }
        Ok(Conv { transposed, c_in, c_out, k, stride, pad, weight, bias, x: None, out: Slot::default(), dx: Slot::default() })
    }

    pub fn params_for(&self, x: Shape) -> ConvParams {
        if self.transposed {
            ConvParams::conv_transpose2d(x.n, self.c_in, x.h, x.w, self.c_out, self.k, self.stride, self.pad)
        } else {
            ConvParams::conv2d(x.n, self.c_in, x.h, x.w, self.c_out, self.k, self.stride, self.pad)
        }
    }
}

impl<B: Backend> Layer<B> for Conv<B> {
    fn describe(&self) -> String {
        let kind = if self.transposed { "ConvTranspose2d" } else { "Conv2d" };
        format!("{kind}({}, {}, k{} s{} p{})", self.c_in, self.c_out, self.k, self.stride, self.pad)
    }
    fn out_shape(&self, x: Shape) -> Shape {
        let p = self.params_for(x);
        Shape::new(x.n, self.c_out, p.h_out as usize, p.w_out as usize)
    }
    fn op(&self, x: Shape) -> LayerOp {
        LayerOp::Conv { p: self.params_for(x), transposed: self.transposed }
    }
    fn forward_macs(&self, x: Shape) -> u64 {
        let p = self.params_for(x);
        if self.transposed {
            p.conv_transpose2d_macs()
        } else {
            p.conv2d_macs()
        }
    }
    fn forward(&mut self, be: &B, x: &Tensor<B>, _mode: Mode) -> Result<Tensor<B>> {
        if x.shape.c != self.c_in {
            bail!("{}: input has {} channels", self.describe(), x.shape.c);
        }
        let p = self.params_for(x.shape);
        let y = self.out.get(be, self.out_shape(x.shape))?;
        let bias = self.bias.as_ref().map(|b| &b.value);
        let (xb, mut yb) = (x.buf.borrow(), y.buf.borrow_mut());
        if self.transposed {
            be.conv_transpose2d_forward(&p, &xb, &self.weight.value, bias, &mut yb)?;
        } else {
            be.conv2d_forward(&p, &xb, &self.weight.value, bias, &mut yb)?;
        }
        drop((xb, yb));
        self.x = Some(x.clone());
        Ok(y)
    }
    fn backward(&mut self, be: &B, dy: &Tensor<B>, want: Grads) -> Result<Option<Tensor<B>>> {
        let x = saved(&self.x, "conv")?.clone();
        let p = self.params_for(x.shape);
        let dx = if want.input {
            let dx = self.dx.get(be, x.shape)?;
            let (dyb, mut dxb) = (dy.buf.borrow(), dx.buf.borrow_mut());
            if self.transposed {
                be.conv_transpose2d_backward_input(&p, &dyb, &self.weight.value, &mut dxb)?;
            } else {
                be.conv2d_backward_input(&p, &dyb, &self.weight.value, &mut dxb)?;
            }
            drop((dyb, dxb));
            Some(dx)
        } else {
            None
        };
        if want.params {
            let (xb, dyb) = (x.buf.borrow(), dy.buf.borrow());
            let db = self.bias.as_mut().map(|b| &mut b.grad);
            if self.transposed {
                be.conv_transpose2d_backward_params(&p, &xb, &dyb, &mut self.weight.grad, db)?;
            } else {
                be.conv2d_backward_params(&p, &xb, &dyb, &mut self.weight.grad, db)?;
            }
        }
        Ok(dx)
    }
    fn params(&self) -> Vec<&Param<B>> {
        std::iter::once(&self.weight).chain(self.bias.as_ref()).collect()
    }
    fn params_mut(&mut self) -> Vec<&mut Param<B>> {
        std::iter::once(&mut self.weight).chain(self.bias.as_mut()).collect()
    }
}

/// Batchnorm over channels, PyTorch conventions (eps 1e-5, momentum 0.1), optionally
/// with its following ReLU or LeakyReLU fused in (`with_act`): one layer, one pass.
pub struct BatchNorm2d<B: Backend> {
    pub c: usize,
    pub eps: f32,
    pub momentum: f32,
    /// The fused activation, if any (ReLU or LeakyReLU).
    pub act: Option<ActKind>,
    pub gamma: Param<B>,
    pub beta: Param<B>,
    pub running_mean: Buffer<B>,
    pub running_var: Buffer<B>,
    mean: B::Buf,
    invstd: B::Buf,
    /// Per-channel gradient sums from the backward pass (`[sum g, sum g * xhat]`).
    sums: B::Buf,
    x: Option<Tensor<B>>,
    y: Option<Tensor<B>>,
    trained_forward: bool,
    out: Slot<B>,
    dx: Slot<B>,
}

impl<B: Backend> BatchNorm2d<B> {
    /// DCGAN initialisation: gamma N(1, 0.02), beta zero.
    pub fn new(be: &B, name: &str, c: usize, rng: &mut Rng) -> Result<Self> {
        let mut g = vec![0.0; c];
        rng.fill_normal(&mut g, 1.0, 0.02);
        let mut running_var = be.alloc(c)?;
        be.fill(&mut running_var, 1.0)?;
        Ok(BatchNorm2d {
            c,
            eps: 1e-5,
            momentum: 0.1,
            act: None,
            gamma: Param::new(be, &format!("{name}.weight"), &[c], &g)?,
            beta: Param::new(be, &format!("{name}.bias"), &[c], &vec![0.0; c])?,
            running_mean: Buffer { name: format!("{name}.running_mean"), value: be.alloc(c)?, len: c },
            running_var: Buffer { name: format!("{name}.running_var"), value: running_var, len: c },
            mean: be.alloc(c)?,
            invstd: be.alloc(c)?,
            sums: be.alloc(2 * c)?,
            x: None,
            y: None,
            trained_forward: false,
            out: Slot::default(),
            dx: Slot::default(),
        })
    }
    /// Fuses `act` (ReLU or LeakyReLU) into the layer's output.
    pub fn with_act(mut self, act: ActKind) -> Result<Self> {
        if act == ActKind::Tanh {
            bail!("batchnorm fuses ReLU or LeakyReLU, not Tanh");
        }
        self.act = Some(act);
        Ok(self)
    }
    fn params_for(&self, x: Shape) -> BatchNormParams {
        let p = BatchNormParams::new(x.n, self.c, x.hw(), self.eps, self.momentum);
        match self.act {
            Some(ActKind::Relu) => p.with_act(BN_ACT_RELU, 0.0),
            Some(ActKind::LeakyRelu(s)) => p.with_act(BN_ACT_LEAKY_RELU, s),
            _ => p,
        }
    }
}

impl<B: Backend> Layer<B> for BatchNorm2d<B> {
    fn describe(&self) -> String {
        match self.act {
            Some(a) => format!("BatchNorm2d({}) + {}", self.c, a.describe()),
            None => format!("BatchNorm2d({})", self.c),
        }
    }
    fn out_shape(&self, x: Shape) -> Shape {
        x
    }
    fn slots(&self) -> usize {
        1 + self.act.is_some() as usize
    }
    fn op(&self, x: Shape) -> LayerOp {
        LayerOp::BatchNorm(self.params_for(x))
    }
    fn forward(&mut self, be: &B, x: &Tensor<B>, mode: Mode) -> Result<Tensor<B>> {
        if x.shape.c != self.c {
            bail!("{}: input has {} channels", self.describe(), x.shape.c);
        }
        let p = self.params_for(x.shape);
        let y = self.out.get(be, x.shape)?;
        let (xb, mut yb) = (x.buf.borrow(), y.buf.borrow_mut());
        match mode {
            Mode::Train => be.batchnorm2d_forward_train(
                &p,
                &xb,
                &self.gamma.value,
                &self.beta.value,
                &mut self.running_mean.value,
                &mut self.running_var.value,
                &mut self.mean,
                &mut self.invstd,
                &mut yb,
            )?,
            Mode::Eval => {
                be.batchnorm2d_forward_infer(&p, &xb, &self.gamma.value, &self.beta.value, &self.running_mean.value, &self.running_var.value, &mut yb)?
            }
        }
        drop((xb, yb));
        self.trained_forward = mode == Mode::Train;
        self.x = Some(x.clone());
        self.y = Some(y.clone());
        Ok(y)
    }
    /// The input gradient's op also writes the per-channel sums the parameter gradients
    /// are, so it runs whatever `want` says; `want.input` only decides whether `dx` is
    /// handed back.
    fn backward(&mut self, be: &B, dy: &Tensor<B>, want: Grads) -> Result<Option<Tensor<B>>> {
        if !self.trained_forward {
            bail!("{}: backward needs a training-mode forward", self.describe());
        }
        let (x, y) = (saved(&self.x, "batchnorm")?.clone(), saved(&self.y, "batchnorm")?.clone());
        let p = self.params_for(x.shape);
        let dx = self.dx.get(be, x.shape)?;
        let (xb, yb, dyb) = (x.buf.borrow(), y.buf.borrow(), dy.buf.borrow());
        be.batchnorm2d_backward_input(&p, &xb, &yb, &dyb, &self.gamma.value, &self.mean, &self.invstd, &mut self.sums, &mut dx.buf.borrow_mut())?;
        if want.params {
            be.batchnorm2d_backward_params(&p, &self.sums, &mut self.gamma.grad, &mut self.beta.grad)?;
        }
        Ok(want.input.then_some(dx))
    }
    fn params(&self) -> Vec<&Param<B>> {
        vec![&self.gamma, &self.beta]
    }
    fn momentum_mut(&mut self) -> Option<&mut f32> {
        Some(&mut self.momentum)
    }
    fn params_mut(&mut self) -> Vec<&mut Param<B>> {
        vec![&mut self.gamma, &mut self.beta]
    }
    fn buffers(&self) -> Vec<&Buffer<B>> {
        vec![&self.running_mean, &self.running_var]
    }
    fn buffers_mut(&mut self) -> Vec<&mut Buffer<B>> {
        vec![&mut self.running_mean, &mut self.running_var]
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ActKind {
    Relu,
    LeakyRelu(f32),
    Tanh,
}

/// Elementwise activation; backward works from the saved output.
pub struct Activation<B: Backend> {
    pub kind: ActKind,
    y: Option<Tensor<B>>,
    out: Slot<B>,
    dx: Slot<B>,
}

impl<B: Backend> Activation<B> {
    pub fn new(kind: ActKind) -> Self {
        Activation { kind, y: None, out: Slot::default(), dx: Slot::default() }
    }
    fn params_for(&self, s: Shape) -> ActParams {
        let slope = if let ActKind::LeakyRelu(s) = self.kind { s } else { 0.0 };
        ActParams { len: s.len() as i32, slope }
    }
}

impl ActKind {
    pub fn describe(&self) -> String {
        match self {
            ActKind::Relu => "ReLU".into(),
            ActKind::LeakyRelu(s) => format!("LeakyReLU({s})"),
            ActKind::Tanh => "Tanh".into(),
        }
    }
}

impl<B: Backend> Layer<B> for Activation<B> {
    fn describe(&self) -> String {
        self.kind.describe()
    }
    fn out_shape(&self, x: Shape) -> Shape {
        x
    }
    fn op(&self, x: Shape) -> LayerOp {
        LayerOp::Activation { p: self.params_for(x), kind: self.kind }
    }
    fn forward(&mut self, be: &B, x: &Tensor<B>, _mode: Mode) -> Result<Tensor<B>> {
        let p = self.params_for(x.shape);
        let y = self.out.get(be, x.shape)?;
        let (xb, mut yb) = (x.buf.borrow(), y.buf.borrow_mut());
        match self.kind {
            ActKind::Relu => be.relu_forward(&p, &xb, &mut yb)?,
            ActKind::LeakyRelu(_) => be.leaky_relu_forward(&p, &xb, &mut yb)?,
            ActKind::Tanh => be.tanh_forward(&p, &xb, &mut yb)?,
        }
        drop((xb, yb));
        self.y = Some(y.clone());
        Ok(y)
    }
    /// No parameters: only the input gradient, when wanted.
    fn backward(&mut self, be: &B, dy: &Tensor<B>, want: Grads) -> Result<Option<Tensor<B>>> {
        if !want.input {
            return Ok(None);
        }
        let y = saved(&self.y, "activation")?.clone();
        let p = self.params_for(y.shape);
        let dx = self.dx.get(be, y.shape)?;
        let (yb, dyb, mut dxb) = (y.buf.borrow(), dy.buf.borrow(), dx.buf.borrow_mut());
        match self.kind {
            ActKind::Relu => be.relu_backward_input(&p, &yb, &dyb, &mut dxb)?,
            ActKind::LeakyRelu(_) => be.leaky_relu_backward_input(&p, &yb, &dyb, &mut dxb)?,
            ActKind::Tanh => be.tanh_backward_input(&p, &yb, &dyb, &mut dxb)?,
        }
        drop(dxb);
        Ok(Some(dx))
    }
}

/// `y = x W^T + b` on `[n, in, 1, 1]` vectors.
pub struct Linear<B: Backend> {
    pub in_features: usize,
    pub out_features: usize,
    pub weight: Param<B>,
    pub bias: Option<Param<B>>,
    x: Option<Tensor<B>>,
    out: Slot<B>,
    dx: Slot<B>,
}

impl<B: Backend> Linear<B> {
    /// PyTorch's default initialisation: U(-1/sqrt(in), 1/sqrt(in)) for weight and bias.
    pub fn new(be: &B, name: &str, in_features: usize, out_features: usize, bias: bool, rng: &mut Rng) -> Result<Self> {
        let bound = 1.0 / (in_features as f64).sqrt();
        let mut w = vec![0.0; in_features * out_features];
        rng.fill_uniform(&mut w, -bound, bound);
        let weight = Param::new(be, &format!("{name}.weight"), &[out_features, in_features], &w)?;
        let bias = if bias {
            let mut b = vec![0.0; out_features];
            rng.fill_uniform(&mut b, -bound, bound);
            Some(Param::new(be, &format!("{name}.bias"), &[out_features], &b)?)
        } else {
            None
        };
        Ok(Linear { in_features, out_features, weight, bias, x: None, out: Slot::default(), dx: Slot::default() })
    }
    fn params_for(&self, x: Shape) -> LinearParams {
        LinearParams { n: x.n as i32, in_features: self.in_features as i32, out_features: self.out_features as i32 }
    }
}

impl<B: Backend> Layer<B> for Linear<B> {
    fn describe(&self) -> String {
        format!("Linear({}, {})", self.in_features, self.out_features)
    }
    fn out_shape(&self, x: Shape) -> Shape {
        Shape::new(x.n, self.out_features, 1, 1)
    }
    fn op(&self, x: Shape) -> LayerOp {
        LayerOp::Linear(self.params_for(x))
    }
    fn forward_macs(&self, x: Shape) -> u64 {
        (x.n * self.in_features * self.out_features) as u64
    }
    fn forward(&mut self, be: &B, x: &Tensor<B>, _mode: Mode) -> Result<Tensor<B>> {
        if x.shape.per_image() != self.in_features {
            bail!("{}: input has {} features", self.describe(), x.shape.per_image());
        }
        let p = self.params_for(x.shape);
        let y = self.out.get(be, self.out_shape(x.shape))?;
        be.linear_forward(&p, &x.buf.borrow(), &self.weight.value, self.bias.as_ref().map(|b| &b.value), &mut y.buf.borrow_mut())?;
        self.x = Some(x.clone());
        Ok(y)
    }
    fn backward(&mut self, be: &B, dy: &Tensor<B>, want: Grads) -> Result<Option<Tensor<B>>> {
        let x = saved(&self.x, "linear")?.clone();
        let p = self.params_for(x.shape);
        let dx = if want.input {
            let dx = self.dx.get(be, x.shape)?;
            be.linear_backward_input(&p, &dy.buf.borrow(), &self.weight.value, &mut dx.buf.borrow_mut())?;
            Some(dx)
        } else {
            None
        };
        if want.params {
            let (xb, dyb) = (x.buf.borrow(), dy.buf.borrow());
            be.linear_backward_params(&p, &xb, &dyb, &mut self.weight.grad, self.bias.as_mut().map(|b| &mut b.grad))?;
        }
        Ok(dx)
    }
    fn params(&self) -> Vec<&Param<B>> {
        std::iter::once(&self.weight).chain(self.bias.as_ref()).collect()
    }
    fn params_mut(&mut self) -> Vec<&mut Param<B>> {
        std::iter::once(&mut self.weight).chain(self.bias.as_mut()).collect()
    }
}

/// ProGAN's minibatch standard deviation (Karras et al. 2018): one more channel holding
/// how much the samples of the input's group column differ, so the discriminator sees the
/// spread of a batch and can tell a collapsed generator by it. Groups of `group` samples, or
/// of the largest divisor of the batch below it (`MinibatchStdParams`). No parameters.
pub struct MinibatchStd<B: Backend> {
    /// The requested group size (at least 1).
    pub group: usize,
    x: Option<Tensor<B>>,
    out: Slot<B>,
    dx: Slot<B>,
}

impl<B: Backend> MinibatchStd<B> {
    pub fn new(group: usize) -> Self {
        MinibatchStd { group: group.max(1), x: None, out: Slot::default(), dx: Slot::default() }
    }
    fn params_for(&self, x: Shape) -> MinibatchStdParams {
        MinibatchStdParams::new(x.n, x.c, x.hw(), self.group)
    }
}

impl<B: Backend> Layer<B> for MinibatchStd<B> {
    fn describe(&self) -> String {
        format!("MinibatchStd(group {})", self.group)
    }
    fn out_shape(&self, x: Shape) -> Shape {
        Shape { c: x.c + 1, ..x }
    }
    fn op(&self, x: Shape) -> LayerOp {
        LayerOp::MinibatchStd(self.params_for(x))
    }
    fn forward(&mut self, be: &B, x: &Tensor<B>, _mode: Mode) -> Result<Tensor<B>> {
        let p = self.params_for(x.shape);
        let y = self.out.get(be, self.out_shape(x.shape))?;
        be.minibatch_std_forward(&p, &x.buf.borrow(), &mut y.buf.borrow_mut())?;
        self.x = Some(x.clone());
        Ok(y)
    }
    /// No parameters: only the input gradient, when wanted.
    fn backward(&mut self, be: &B, dy: &Tensor<B>, want: Grads) -> Result<Option<Tensor<B>>> {
        if !want.input {
            return Ok(None);
        }
        let x = saved(&self.x, "minibatch_std")?.clone();
        let p = self.params_for(x.shape);
        let dx = self.dx.get(be, x.shape)?;
        be.minibatch_std_backward_input(&p, &x.buf.borrow(), &dy.buf.borrow(), &mut dx.buf.borrow_mut())?;
        Ok(Some(dx))
    }
}

/// Channel concat of a feature map with a vector tiled over its grid. Two inputs, so it
/// is not a `Layer`; the models call it directly.
#[derive(Default)]
pub struct ConcatTile<B: Backend> {
    p: Option<(Shape, Shape)>,
    out: Slot<B>,
    da: Slot<B>,
    db: Slot<B>,
}

impl<B: Backend> ConcatTile<B> {
    pub fn new() -> Self {
        ConcatTile { p: None, out: Slot::default(), da: Slot::default(), db: Slot::default() }
    }
    fn params_for(a: Shape, b: Shape) -> ConcatParams {
        ConcatParams { n: a.n as i32, c_a: a.c as i32, c_b: b.per_image() as i32, hw: a.hw() as i32 }
    }
    pub fn out_shape(a: Shape, b: Shape) -> Shape {
        Shape::new(a.n, a.c + b.per_image(), a.h, a.w)
    }
    pub fn forward(&mut self, be: &B, a: &Tensor<B>, b: &Tensor<B>) -> Result<Tensor<B>> {
        if a.shape.n != b.shape.n {
            bail!("concat: batch {} vs {}", a.shape.n, b.shape.n);
        }
        let p = Self::params_for(a.shape, b.shape);
        let y = self.out.get(be, Self::out_shape(a.shape, b.shape))?;
        be.concat_tile_forward(&p, &a.buf.borrow(), &b.buf.borrow(), &mut y.buf.borrow_mut())?;
        self.p = Some((a.shape, b.shape));
        Ok(y)
    }
    pub fn backward(&mut self, be: &B, dy: &Tensor<B>) -> Result<(Tensor<B>, Tensor<B>)> {
        let (sa, sb) = self.p.context("concat: backward called before forward")?;
        let p = Self::params_for(sa, sb);
        let (da, db) = (self.da.get(be, sa)?, self.db.get(be, sb)?);
        be.concat_tile_backward_input(&p, &dy.buf.borrow(), &mut da.buf.borrow_mut(), &mut db.buf.borrow_mut())?;
        Ok((da, db))
    }
}

/// The conditional term of the projection discriminator (Miyato and Koyama 2018):
/// `logits = base + <e, phi(h)>`, with `h` the discriminator's last hidden features
/// `[n, c, side, side]`, `phi(h)` their global average pool `[n, c]` and `e` the caption's
/// embedding `V t` `[n, c]`. Three inputs, so it is not a `Layer`; the discriminator calls it
/// directly. No parameters (`V` is a `Linear`).
#[derive(Default)]
pub struct Projection<B: Backend> {
    /// The features' shape, and `phi(h)` and `e` as the forward pass saw them.
    saved: Option<(Shape, Tensor<B>, Tensor<B>)>,
    phi: Slot<B>,
    out: Slot<B>,
    dphi: Slot<B>,
    de: Slot<B>,
    dh: Slot<B>,
}

impl<B: Backend> Projection<B> {
    pub fn new() -> Self {
        Projection { saved: None, phi: Slot::default(), out: Slot::default(), dphi: Slot::default(), de: Slot::default(), dh: Slot::default() }
    }
    fn params_for(h: Shape) -> ProjectionParams {
        ProjectionParams::new(h.n, h.c, h.hw())
    }
    /// `base [n, 1, 1, 1]`, `h [n, c, side, side]`, `e [n, c]` -> logits `[n, 1, 1, 1]`.
    pub fn forward(&mut self, be: &B, base: &Tensor<B>, h: &Tensor<B>, e: &Tensor<B>) -> Result<Tensor<B>> {
        let (s, n) = (h.shape, h.shape.n);
        if s.h != s.w || base.shape.len() != n || e.shape.n != n || e.shape.per_image() != s.c {
            bail!("projection: logits {}, features {s} and embedding {} of a batch of {n} do not fit together", base.shape, e.shape);
        }
        let p = Self::params_for(s);
        let phi = self.phi.get(be, Shape::new(n, s.c, 1, 1))?;
        be.avg_pool2d_forward(&PoolParams::global(n, s.c, s.h), &h.buf.borrow(), &mut phi.buf.borrow_mut())?;
        let y = self.out.get(be, base.shape)?;
        be.projection_forward(&p, &base.buf.borrow(), &phi.buf.borrow(), &e.buf.borrow(), &mut y.buf.borrow_mut())?;
        self.saved = Some((s, phi, e.clone()));
        Ok(y)
    }
    /// From the logits' gradient `dlogits` (which is also the base logits' gradient) and
    /// `dpsi`, the features' gradient through the base path: the features' whole gradient
    /// and the embedding's, `(dh, de)`.
    pub fn backward(&mut self, be: &B, dlogits: &Tensor<B>, dpsi: &Tensor<B>) -> Result<(Tensor<B>, Tensor<B>)> {
        let (s, phi, e) = self.saved.clone().context("projection: backward called before forward")?;
        let p = Self::params_for(s);
        let (dphi, de) = (self.dphi.get(be, phi.shape)?, self.de.get(be, e.shape)?);
        be.projection_backward_input(&p, &dlogits.buf.borrow(), &phi.buf.borrow(), &e.buf.borrow(), &mut dphi.buf.borrow_mut(), &mut de.buf.borrow_mut())?;
        let dh = self.dh.get(be, s)?;
        be.projection_backward_features(&p, &dpsi.buf.borrow(), &dphi.buf.borrow(), &mut dh.buf.borrow_mut())?;
        Ok((dh, de))
    }
}
