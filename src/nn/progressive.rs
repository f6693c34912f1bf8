//! The layers of progressive growing (ProGAN, Karras et al. 2018): nearest upsampling,
//! average-pool downsampling, pixelwise feature normalisation, the equalised-learning-rate
//! convolution and the fade of two paths.

use super::{Conv, Grads, Layer, LayerOp, Mode, Param, Shape, Slot, Tensor};
use crate::backend::{Backend, FadeParams, PixelNormParams, PoolParams, ScaleParams, UpsampleParams};
use crate::rng::Rng;
use anyhow::{bail, ensure, Context, Result};

/// Nearest-neighbour upsampling by an integer factor (`upsample_nearest`). No parameters.
pub struct Upsample<B: Backend> {
    pub k: usize,
    x: Option<Shape>,
    out: Slot<B>,
    dx: Slot<B>,
}

impl<B: Backend> Upsample<B> {
    pub fn new(k: usize) -> Self {
        Upsample { k, x: None, out: Slot::default(), dx: Slot::default() }
    }
    fn params_for(&self, x: Shape) -> Result<UpsampleParams> {
        UpsampleParams::new(x.n, x.c, x.h, x.w, self.k).with_context(|| format!("{} of a {x} input", self.describe()))
    }
}

impl<B: Backend> Layer<B> for Upsample<B> {
    fn describe(&self) -> String {
        format!("Upsample(nearest, x{})", self.k)
    }
    fn out_shape(&self, x: Shape) -> Shape {
        Shape::new(x.n, x.c, x.h * self.k, x.w * self.k)
    }
    fn op(&self, x: Shape) -> LayerOp {
        LayerOp::Upsample(UpsampleParams { n: x.n as i32, c: x.c as i32, h_in: x.h as i32, w_in: x.w as i32, k: self.k as i32 })
    }
    fn forward(&mut self, be: &B, x: &Tensor<B>, _mode: Mode) -> Result<Tensor<B>> {
        let p = self.params_for(x.shape)?;
        let y = self.out.get(be, self.out_shape(x.shape))?;
        be.upsample_nearest_forward(&p, &x.buf.borrow(), &mut y.buf.borrow_mut())?;
        self.x = Some(x.shape);
        Ok(y)
    }
    /// No parameters: only the input gradient, when wanted.
    fn backward(&mut self, be: &B, dy: &Tensor<B>, want: Grads) -> Result<Option<Tensor<B>>> {
        if !want.input {
            return Ok(None);
        }
        let s = self.x.context("upsample: backward called before forward")?;
        let p = self.params_for(s)?;
        let dx = self.dx.get(be, s)?;
        be.upsample_nearest_backward_input(&p, &dy.buf.borrow(), &mut dx.buf.borrow_mut())?;
        Ok(Some(dx))
    }
}

/// Average pooling over `k x k` windows, stride `k` (the `pool` family's `avg_pool2d`):
/// ProGAN's downsampling. No parameters.
pub struct AvgPool<B: Backend> {
    pub k: usize,
    x: Option<Shape>,
    out: Slot<B>,
    dx: Slot<B>,
}

impl<B: Backend> AvgPool<B> {
    pub fn new(k: usize) -> Self {
        AvgPool { k, x: None, out: Slot::default(), dx: Slot::default() }
    }
    /// Refuses a plane the window does not tile, naming the layer and the input's shape.
    fn params_for(&self, x: Shape) -> Result<PoolParams> {
        PoolParams::new(x.n, x.c, x.h, x.w, self.k).with_context(|| format!("{} of a {x} input", self.describe()))
    }
}

impl<B: Backend> Layer<B> for AvgPool<B> {
    fn describe(&self) -> String {
        format!("AvgPool2d(k{})", self.k)
    }
    fn out_shape(&self, x: Shape) -> Shape {
        let k = self.k.max(1);
        Shape::new(x.n, x.c, x.h / k, x.w / k)
    }
    fn op(&self, x: Shape) -> LayerOp {
        LayerOp::Pool(PoolParams { n: x.n as i32, c: x.c as i32, h_in: x.h as i32, w_in: x.w as i32, k: self.k as i32 })
    }
    fn forward(&mut self, be: &B, x: &Tensor<B>, _mode: Mode) -> Result<Tensor<B>> {
        let p = self.params_for(x.shape)?;
        let y = self.out.get(be, self.out_shape(x.shape))?;
        be.avg_pool2d_forward(&p, &x.buf.borrow(), &mut y.buf.borrow_mut())?;
        self.x = Some(x.shape);
        Ok(y)
    }
    /// No parameters: only the input gradient, when wanted.
    fn backward(&mut self, be: &B, dy: &Tensor<B>, want: Grads) -> Result<Option<Tensor<B>>> {
        if !want.input {
            return Ok(None);
        }
        let s = self.x.context("avg_pool: backward called before forward")?;
        let p = self.params_for(s)?;
        let dx = self.dx.get(be, s)?;
        be.avg_pool2d_backward_input(&p, &dy.buf.borrow(), &mut dx.buf.borrow_mut())?;
        Ok(Some(dx))
    }
}

/// ProGAN's pixelwise feature normalisation (`pixel_norm`, eps 1e-8). No parameters; the
/// backward pass recomputes from the saved input.
pub struct PixelNorm<B: Backend> {
    pub eps: f32,
    x: Option<Tensor<B>>,
    out: Slot<B>,
    dx: Slot<B>,
}

impl<B: Backend> Default for PixelNorm<B> {
    fn default() -> Self {
        Self::new()
    }
}

impl<B: Backend> PixelNorm<B> {
    /// ProGAN's eps, 1e-8.
    pub fn new() -> Self {
        PixelNorm { eps: 1e-8, x: None, out: Slot::default(), dx: Slot::default() }
    }
    fn params_for(&self, x: Shape) -> PixelNormParams {
        PixelNormParams::new(x.n, x.c, x.hw(), self.eps)
    }
}

impl<B: Backend> Layer<B> for PixelNorm<B> {
    fn describe(&self) -> String {
        "PixelNorm".into()
    }
    fn out_shape(&self, x: Shape) -> Shape {
        x
    }
    fn op(&self, x: Shape) -> LayerOp {
        LayerOp::PixelNorm(self.params_for(x))
    }
    fn forward(&mut self, be: &B, x: &Tensor<B>, _mode: Mode) -> Result<Tensor<B>> {
        let p = self.params_for(x.shape);
        let y = self.out.get(be, x.shape)?;
        be.pixel_norm_forward(&p, &x.buf.borrow(), &mut y.buf.borrow_mut())?;
        self.x = Some(x.clone());
        Ok(y)
    }
    /// No parameters: only the input gradient, when wanted.
    fn backward(&mut self, be: &B, dy: &Tensor<B>, want: Grads) -> Result<Option<Tensor<B>>> {
        if !want.input {
            return Ok(None);
        }
        let x = self.x.clone().context("pixel_norm: backward called before forward")?;
        let p = self.params_for(x.shape);
        let dx = self.dx.get(be, x.shape)?;
        be.pixel_norm_backward_input(&p, &x.buf.borrow(), &dy.buf.borrow(), &mut dx.buf.borrow_mut())?;
        Ok(Some(dx))
    }
}

/// The equalised-learning-rate convolution (ProGAN 4.1): the stored weight `{name}.weight`
/// is N(0, 1) and the convolution runs with `c * weight`, `c = gain / sqrt(fan_in)`, written
/// by `scale_forward` into the inner `Conv`'s weight (the runtime weight) before each
/// forward. Backward runs the convolution's backward into the runtime weight's gradient and
/// adds `c` times it into the stored weight's gradient. The bias `{name}.bias` (zeros) is
/// not scaled. Checkpoints, Adam and the EMA see the stored weight and the bias only.
pub struct EqConv<B: Backend> {
    /// The convolution; its `weight` is the runtime weight `c * weight` (no Adam moments).
    pub conv: Conv<B>,
    /// The stored weight, the parameter that is trained and saved.
    pub weight: Param<B>,
    pub gain: f32,
    pub fan_in: usize,
}

impl<B: Backend> EqConv<B> {
    /// Weight N(0, 1), bias zeros, run-time scale `gain / sqrt(fan_in)`.
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
        gain: f32,
        fan_in: usize,
        rng: &mut Rng,
    ) -> Result<Self> {
        ensure!(fan_in > 0, "equalised convolution {name}: fan_in must be at least 1");
        ensure!(gain.is_finite() && gain > 0.0, "equalised convolution {name}: gain must be positive and finite (got {gain})");
        let shape = if transposed { [c_in, c_out, k, k] } else { [c_out, c_in, k, k] };
        let len: usize = shape.iter().product();
        let mut w = vec![0.0; len];
        rng.fill_normal(&mut w, 0.0, 1.0);
        let weight = Param::new(be, &format!("{name}.weight"), &shape, &w)?;
        // The runtime weight: a value and a gradient, never stepped (no moments).
        let runtime = Param {
            name: format!("{name}.weight (runtime)"),
            shape: shape.to_vec(),
            value: be.alloc(len)?,
            grad: be.alloc(len)?,
            m: be.alloc(0)?,
            v: be.alloc(0)?,
        };
        let bias = if bias { Some(Param::new(be, &format!("{name}.bias"), &[c_out], &vec![0.0; c_out])?) } else { None };
        let conv = Conv::from_params(transposed, c_in, c_out, k, stride, pad, runtime, bias)?;
        Ok(EqConv { conv, weight, gain, fan_in })
    }

    /// `c = gain / sqrt(fan_in)`, the factor between the stored and the runtime weight.
    pub fn runtime_scale(&self) -> f32 {
        (self.gain as f64 / (self.fan_in as f64).sqrt()) as f32
    }
}

impl<B: Backend> Layer<B> for EqConv<B> {
    fn describe(&self) -> String {
        let kind = if self.conv.transposed { "EqConvTranspose2d" } else { "EqConv2d" };
        let c = &self.conv;
        format!("{kind}({}, {}, k{} s{} p{}, scale {:.4})", c.c_in, c.c_out, c.k, c.stride, c.pad, self.runtime_scale())
    }
    fn out_shape(&self, x: Shape) -> Shape {
        self.conv.out_shape(x)
    }
    fn op(&self, x: Shape) -> LayerOp {
        self.conv.op(x)
    }
    fn forward_macs(&self, x: Shape) -> u64 {
        self.conv.forward_macs(x)
    }
    fn forward(&mut self, be: &B, x: &Tensor<B>, mode: Mode) -> Result<Tensor<B>> {
        let p = ScaleParams::write(self.weight.len(), self.runtime_scale());
        be.scale_forward(&p, &self.weight.value, &mut self.conv.weight.value)?;
        self.conv.forward(be, x, mode)
    }
    /// The convolution's backward with the runtime weight; when `want.params`, its weight
    /// gradient (written afresh each call) is scaled into the stored weight's gradient
    /// (accumulated) and the bias gradient accumulates directly. With `params: false` no
    /// stored gradient is touched.
    fn backward(&mut self, be: &B, dy: &Tensor<B>, want: Grads) -> Result<Option<Tensor<B>>> {
        if want.params {
            be.fill(&mut self.conv.weight.grad, 0.0)?;
        }
        let dx = self.conv.backward(be, dy, want)?;
        if want.params {
            let p = ScaleParams::accumulate(self.weight.len(), self.runtime_scale());
            be.scale_forward(&p, &self.conv.weight.grad, &mut self.weight.grad)?;
        }
        Ok(dx)
    }
    fn params(&self) -> Vec<&Param<B>> {
        std::iter::once(&self.weight).chain(self.conv.bias.as_ref()).collect()
    }
    fn params_mut(&mut self) -> Vec<&mut Param<B>> {
        std::iter::once(&mut self.weight).chain(self.conv.bias.as_mut()).collect()
    }
}

/// ProGAN's fade of two paths, `wa a + wb b` (the `fade` family). Two inputs, so it is not a
/// `Layer`; the models call it directly.
pub struct Fade<B: Backend> {
    /// The inputs' shape and the weights of the last forward pass.
    saved: Option<(Shape, f32, f32)>,
    out: Slot<B>,
    da: Slot<B>,
    db: Slot<B>,
}

impl<B: Backend> Default for Fade<B> {
    fn default() -> Self {
        Self::new()
    }
}

impl<B: Backend> Fade<B> {
    pub fn new() -> Self {
        Fade { saved: None, out: Slot::default(), da: Slot::default(), db: Slot::default() }
    }
    /// `wa a + wb b`; the shapes must match.
    pub fn forward(&mut self, be: &B, a: &Tensor<B>, b: &Tensor<B>, wa: f32, wb: f32) -> Result<Tensor<B>> {
        if a.shape != b.shape {
            bail!("fade: the two paths have different shapes, {:?} and {:?}", a.shape, b.shape);
        }
        let p = FadeParams::new(a.shape.len(), wa, wb);
        let y = self.out.get(be, a.shape)?;
        be.fade_forward(&p, &a.buf.borrow(), &b.buf.borrow(), &mut y.buf.borrow_mut())?;
        self.saved = Some((a.shape, wa, wb));
        Ok(y)
    }
    /// `(wa dy, wb dy)`, with the weights of the last forward pass.
    pub fn backward(&mut self, be: &B, dy: &Tensor<B>) -> Result<(Tensor<B>, Tensor<B>)> {
        let (s, wa, wb) = self.saved.context("fade: backward called before forward")?;
        if dy.shape != s {
            bail!("fade: gradient of shape {:?} for an output of shape {:?}", dy.shape, s);
        }
        let p = FadeParams::new(s.len(), wa, wb);
        let (da, db) = (self.da.get(be, s)?, self.db.get(be, s)?);
        be.fade_backward_input(&p, &dy.buf.borrow(), &mut da.buf.borrow_mut(), &mut db.buf.borrow_mut())?;
        Ok((da, db))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cpu::Cpu;

    fn tensor(be: &Cpu, s: Shape) -> Tensor<Cpu> {
        Tensor::from_f32(be, s, &(0..s.len()).map(|i| i as f32 * 0.25 - 1.0).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn avg_pool_refuses_a_plane_its_window_does_not_tile_and_names_the_shapes() {
        let be = Cpu::new();
        let mut pool = AvgPool::new(2);
        let err = pool.forward(&be, &tensor(&be, Shape::new(1, 3, 5, 4)), Mode::Train).err().expect("a 5x4 plane is refused");
        let msg = format!("{err:#}");
        assert!(msg.contains("AvgPool2d(k2)") && msg.contains("3x5x4") && msg.contains("2x2 window does not tile a 5x4 plane"), "{msg}");
        let y = pool.forward(&be, &tensor(&be, Shape::new(1, 3, 4, 4)), Mode::Train).unwrap();
        assert_eq!(y.shape, Shape::new(1, 3, 2, 2));
    }

    #[test]
    fn upsample_refuses_factor_zero() {
        let be = Cpu::new();
        assert!(UpsampleParams::new(1, 1, 2, 2, 0).is_err());
        let err = Upsample::new(0).forward(&be, &tensor(&be, Shape::new(1, 1, 2, 2)), Mode::Train).err().expect("factor 0 is refused");
        assert!(format!("{err:#}").contains("at least 1"), "{err:#}");
    }

    #[test]
    fn fade_refuses_paths_of_different_shapes_and_weights_both() {
        let be = Cpu::new();
        let mut fade = Fade::new();
        let (a, b) = (tensor(&be, Shape::new(2, 3, 4, 4)), tensor(&be, Shape::new(2, 3, 2, 2)));
        let err = fade.forward(&be, &a, &b, 0.5, 0.5).err().expect("different shapes are refused");
        assert!(format!("{err}").contains("different shapes"), "{err}");
        let b = Tensor::from_f32(&be, a.shape, &vec![2.0; a.shape.len()]).unwrap();
        let y = fade.forward(&be, &a, &b, 0.25, 0.75).unwrap().to_f32(&be).unwrap();
        let av = a.to_f32(&be).unwrap();
        assert!(y.iter().zip(&av).all(|(y, a)| (y - (0.25 * a + 1.5)).abs() < 1e-6));
        let dy = Tensor::from_f32(&be, a.shape, &vec![4.0; a.shape.len()]).unwrap();
        let (da, db) = fade.backward(&be, &dy).unwrap();
        assert!(da.to_f32(&be).unwrap().iter().all(|v| *v == 1.0));
        assert!(db.to_f32(&be).unwrap().iter().all(|v| *v == 3.0));
    }

    #[test]
    fn eqconv_exposes_the_stored_weight_and_bias_only() {
        let be = Cpu::new();
        let mut rng = Rng::new(1);
        let conv = EqConv::new(&be, "g.block.conv", false, 8, 4, 3, 1, 1, true, 2f32.sqrt(), 72, &mut rng).unwrap();
        let names: Vec<&str> = conv.params().iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["g.block.conv.weight", "g.block.conv.bias"]);
        assert_eq!(conv.weight.shape, [4, 8, 3, 3]);
        assert!((conv.runtime_scale() - (2.0f32 / 72.0).sqrt()).abs() < 1e-7);
        // Stored N(0, 1): its spread is near 1, not the runtime weight's c.
        let w = &conv.weight.value;
        let std = (w.iter().map(|v| (*v as f64).powi(2)).sum::<f64>() / w.len() as f64).sqrt();
        assert!((0.85..1.15).contains(&std), "stored weight std {std}");
        assert!(EqConv::new(&be, "bad", false, 8, 4, 3, 1, 1, true, 1.0, 0, &mut rng).is_err());
    }
}
