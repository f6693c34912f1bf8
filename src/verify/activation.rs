//! relu, leaky_relu and tanh: the direct loops, the finite-difference checks and the twin
//! rows (CPU twin `backend/cpu/activation.rs`, kernels `kernels/activation.cu`).

use super::gradcheck::{check_all, dot, rand_vec, CheckResult, DirectCheck, OpHarness};
use super::twin::{down, normal, poisoned, up, Checker, TOL_ELEM};
use crate::backend::cpu::Cpu64;
use crate::backend::prelude::*;
use crate::backend::ActParams;
use crate::rng::Rng;
use anyhow::Result;

/// The ops by their definitions, in f64: `(forward, derivative from the output)`.
pub mod direct {
    pub fn relu(x: f64) -> f64 {
        x.max(0.0)
    }
    pub fn leaky_relu(x: f64, slope: f64) -> f64 {
        if x > 0.0 {
            x
        } else {
            slope * x
        }
    }
    /// The derivative of relu or leaky_relu (slope 0 for relu), from the sign of the output.
    pub fn rectifier_grad(y: f64, slope: f64) -> f64 {
        if y > 0.0 {
            1.0
        } else {
            slope
        }
    }
    /// tanh' = 1 - tanh^2, from the output.
    pub fn tanh_grad(y: f64) -> f64 {
        1.0 - y * y
    }
}

impl<B: Backend> Checker<'_, B> {
    pub fn activations(&mut self, len: usize) -> Result<()> {
        let x = normal(&mut self.rng, len, 2.0);
        let dy = normal(&mut self.rng, len, 1.0);
        #[derive(Clone, Copy)]
        enum Kind {
            Relu,
            Leaky,
            Tanh,
        }
        fn fwd<B: Backend>(be: &B, k: Kind, p: &ActParams, x: &[f32]) -> Result<B::Buf> {
            let x = up(be, x)?;
            let mut y = poisoned(be, p.len as usize)?;
            match k {
                Kind::Relu => be.relu_forward(p, &x, &mut y)?,
                Kind::Leaky => be.leaky_relu_forward(p, &x, &mut y)?,
                Kind::Tanh => be.tanh_forward(p, &x, &mut y)?,
            }
            Ok(y)
        }
        fn forward<B: Backend>(be: &B, k: Kind, p: &ActParams, x: &[f32]) -> Result<Vec<f32>> {
            let y = fwd(be, k, p, x)?;
            down(be, &y, p.len as usize)
        }
        // The backward pass reads the saved output, made here by the CPU twin so both
        // backends see identical `y`.
        fn backward<B: Backend>(be: &B, k: Kind, p: &ActParams, y: &[f32], dy: &[f32]) -> Result<Vec<f32>> {
            let (y, dy) = (up(be, y)?, up(be, dy)?);
            let mut dx = poisoned(be, p.len as usize)?;
            match k {
                Kind::Relu => be.relu_backward_input(p, &y, &dy, &mut dx)?,
                Kind::Leaky => be.leaky_relu_backward_input(p, &y, &dy, &mut dx)?,
                Kind::Tanh => be.tanh_backward_input(p, &y, &dy, &mut dx)?,
            }
            down(be, &dx, p.len as usize)
        }
        for (k, name, slope) in [(Kind::Relu, "relu", 0.0), (Kind::Leaky, "leaky_relu", 0.2), (Kind::Tanh, "tanh", 0.0)] {
            let p = ActParams { len: len as i32, slope };
            let shape = format!("len {len}");
            self.case(&format!("{name}_forward_f32"), shape.clone(), TOL_ELEM, |g| forward(g, k, &p, &x), |c| forward(c, k, &p, &x))?;
            let y = forward(&self.cpu, k, &p, &x)?;
            self.case(&format!("{name}_backward_input_f32"), shape, TOL_ELEM, |g| backward(g, k, &p, &y, &dy), |c| backward(c, k, &p, &y, &dy))?;
        }
        Ok(())
    }
}

/// Finite differences of each activation's input gradient.
pub fn gradchecks(h: &OpHarness, rng: &mut Rng, out: &mut Vec<CheckResult>) -> Result<()> {
    let be = &h.be;
    for kind in ["relu", "leaky_relu", "tanh"] {
        let n = 37;
        let p = ActParams { len: n as i32, slope: 0.2 };
        let (x, r) = (rand_vec(rng, n), rand_vec(rng, n));
        let run = |x: &[f64]| -> Result<Vec<f64>> {
            let mut y = be.alloc(n)?;
            let xb = h.buf(x)?;
            match kind {
                "relu" => be.relu_forward(&p, &xb, &mut y)?,
                "leaky_relu" => be.leaky_relu_forward(&p, &xb, &mut y)?,
                _ => be.tanh_forward(&p, &xb, &mut y)?,
            }
            Ok(y)
        };
        let y = run(&x)?;
        let mut dx = be.alloc(n)?;
        let rb = h.buf(&r)?;
        match kind {
            "relu" => be.relu_backward_input(&p, &y, &rb, &mut dx)?,
            "leaky_relu" => be.leaky_relu_backward_input(&p, &y, &rb, &mut dx)?,
            _ => be.tanh_backward_input(&p, &y, &rb, &mut dx)?,
        }
        out.push(check_all(&format!("{kind} 37 input"), &x, &dx, |v| Ok(dot(&run(v)?, &r)))?);
    }
    Ok(())
}

/// The CPU twin in f64 against the direct definitions, forward and backward.
pub fn direct_checks(rng: &mut Rng) -> Result<Vec<DirectCheck>> {
    let be = Cpu64::new();
    let n = 1000;
    let (x, dy) = (rand_vec(rng, n), rand_vec(rng, n));
    let p = ActParams { len: n as i32, slope: 0.2 };
    let mut out = Vec::new();
    let (mut y, mut dx) = (vec![0.0; n], vec![0.0; n]);
    let s = p.slope as f64;
    be.relu_forward(&p, &x, &mut y)?;
    out.push(DirectCheck::new("relu forward".into(), &x.iter().map(|v| direct::relu(*v)).collect::<Vec<_>>(), &y));
    be.relu_backward_input(&p, &y, &dy, &mut dx)?;
    out.push(DirectCheck::new("relu backward_input".into(), &y.iter().zip(&dy).map(|(y, g)| g * direct::rectifier_grad(*y, 0.0)).collect::<Vec<_>>(), &dx));
    be.leaky_relu_forward(&p, &x, &mut y)?;
    out.push(DirectCheck::new("leaky_relu forward".into(), &x.iter().map(|v| direct::leaky_relu(*v, s)).collect::<Vec<_>>(), &y));
    be.leaky_relu_backward_input(&p, &y, &dy, &mut dx)?;
    out.push(DirectCheck::new("leaky_relu backward_input".into(), &y.iter().zip(&dy).map(|(y, g)| g * direct::rectifier_grad(*y, s)).collect::<Vec<_>>(), &dx));
    be.tanh_forward(&p, &x, &mut y)?;
    out.push(DirectCheck::new("tanh forward".into(), &x.iter().map(|v| v.tanh()).collect::<Vec<_>>(), &y));
    be.tanh_backward_input(&p, &y, &dy, &mut dx)?;
    out.push(DirectCheck::new("tanh backward_input".into(), &y.iter().zip(&dy).map(|(y, g)| g * direct::tanh_grad(*y)).collect::<Vec<_>>(), &dx));
    Ok(out)
}
