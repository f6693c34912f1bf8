//! softmax_cross_entropy and sigmoid_cross_entropy: the direct definitions, the
//! finite-difference checks and the twin rows (CPU twin `backend/cpu/cross_entropy.rs`,
//! kernels `kernels/cross_entropy.cu`).

use super::gradcheck::{check_all, rand_vec, CheckResult, DirectCheck, OpHarness};
use super::twin::{down, normal, poisoned, up, Checker, Part, TOL_ELEM, TOL_REDUCE};
use crate::backend::cpu::Cpu64;
use crate::backend::prelude::*;
use crate::backend::CrossEntropyParams;
use crate::rng::Rng;
use anyhow::Result;

/// The ops by their definitions, in f64, naively (no max subtracted: the test logits are
/// moderate).
pub mod direct {
    use crate::backend::CrossEntropyParams;

    fn head(p: &CrossEntropyParams, logits: &[f64], i: usize) -> Vec<f64> {
        let s = i * p.stride as usize + p.offset as usize;
        logits[s..s + p.classes as usize].to_vec()
    }
    fn softmax(x: &[f64]) -> Vec<f64> {
        let z: f64 = x.iter().map(|v| v.exp()).sum();
        x.iter().map(|v| v.exp() / z).collect()
    }
    /// `[scale * mean_i -ln softmax(x_i)[t_i], fraction of rows with argmax == t]`.
    pub fn softmax_forward(p: &CrossEntropyParams, logits: &[f64], targets: &[f64]) -> [f64; 2] {
        let (mut loss, mut hits) = (0.0, 0.0);
        for (i, &target) in targets[..p.n as usize].iter().enumerate() {
            let x = head(p, logits, i);
            let t = target as usize;
            loss -= softmax(&x)[t].ln();
            let arg = (0..x.len()).fold(0, |a, j| if x[j] > x[a] { j } else { a });
            hits += (arg == t) as u8 as f64;
        }
        [p.scale as f64 * loss / p.n as f64, hits / p.n as f64]
    }
    /// `dlogits` with the head's columns written: `scale * (softmax - onehot) / n`.
    pub fn softmax_backward(p: &CrossEntropyParams, logits: &[f64], targets: &[f64], dlogits0: &[f64]) -> Vec<f64> {
        let mut d = dlogits0.to_vec();
        for i in 0..p.n as usize {
            let s = softmax(&head(p, logits, i));
            for (j, sj) in s.iter().enumerate() {
                d[i * p.stride as usize + p.offset as usize + j] = p.scale as f64 * (sj - (j == targets[i] as usize) as u8 as f64) / p.n as f64;
            }
        }
        d
    }
    fn sigmoid(x: f64) -> f64 {
        1.0 / (1.0 + (-x).exp())
    }
    /// `[scale * mean -(t ln s(x) + (1 - t) ln(1 - s(x))), fraction with (x > 0) == (t > 1/2)]`.
    pub fn sigmoid_forward(p: &CrossEntropyParams, logits: &[f64], targets: &[f64]) -> [f64; 2] {
        let c = p.classes as usize;
        let (mut loss, mut hits) = (0.0, 0.0);
        for i in 0..p.n as usize {
            for (j, x) in head(p, logits, i).into_iter().enumerate() {
                let t = targets[i * c + j];
                loss -= t * sigmoid(x).ln() + (1.0 - t) * (1.0 - sigmoid(x)).ln();
                hits += ((x > 0.0) == (t > 0.5)) as u8 as f64;
            }
        }
        let count = (p.n as usize * c) as f64;
        [p.scale as f64 * loss / count, hits / count]
    }
    /// `dlogits` with the head's columns written: `scale * (s(x) - t) / (n classes)`.
    pub fn sigmoid_backward(p: &CrossEntropyParams, logits: &[f64], targets: &[f64], dlogits0: &[f64]) -> Vec<f64> {
        let c = p.classes as usize;
        let count = (p.n as usize * c) as f64;
        let mut d = dlogits0.to_vec();
        for i in 0..p.n as usize {
            for (j, x) in head(p, logits, i).into_iter().enumerate() {
                d[i * p.stride as usize + p.offset as usize + j] = p.scale as f64 * (sigmoid(x) - targets[i * c + j]) / count;
            }
        }
        d
    }
}

/// Random class indices (as floats) and random 0/1 targets for a head.
fn targets(rng: &mut Rng, p: &CrossEntropyParams) -> (Vec<f64>, Vec<f64>) {
    let classes: Vec<f64> = (0..p.n).map(|_| rng.below(p.classes as usize) as f64).collect();
    let bits: Vec<f64> = (0..p.n * p.classes).map(|_| rng.below(2) as f64).collect();
    (classes, bits)
}

fn f32s(v: &[f64]) -> Vec<f32> {
    v.iter().map(|x| *x as f32).collect()
}

impl<B: Backend> Checker<'_, B> {
    /// Both heads over columns `offset .. offset + classes` of `[n, stride]` logits.
    pub fn cross_entropy(&mut self, n: usize, classes: usize, stride: usize, offset: usize, spread: f64) -> Result<()> {
        let p = CrossEntropyParams { n: n as i32, classes: classes as i32, stride: stride as i32, offset: offset as i32, scale: 0.5 };
        let shape = format!("n{n} classes {classes} of {stride} at {offset} |logit|~{spread}");
        let logits = normal(&mut self.rng, p.logits_len(), spread);
        let d0 = normal(&mut self.rng, p.logits_len(), 1.0);
        let (cls, bits) = targets(&mut self.rng, &p);
        let (cls, bits) = (f32s(&cls), f32s(&bits));
        type Fwd<B> = fn(&B, &CrossEntropyParams, &<B as Core>::Buf, &<B as Core>::Buf, &mut <B as Core>::Buf) -> Result<()>;
        fn forward<B: Backend>(be: &B, op: Fwd<B>, p: &CrossEntropyParams, l: &[f32], t: &[f32]) -> Result<Vec<f32>> {
            let (l, t) = (up(be, l)?, up(be, t)?);
            let mut out = poisoned(be, 2)?;
            op(be, p, &l, &t, &mut out)?;
            down(be, &out, 2)
        }
        fn backward<B: Backend>(be: &B, op: Fwd<B>, p: &CrossEntropyParams, l: &[f32], t: &[f32], d0: &[f32]) -> Result<Vec<f32>> {
            let (l, t, mut d) = (up(be, l)?, up(be, t)?, up(be, d0)?);
            op(be, p, &l, &t, &mut d)?;
            down(be, &d, d0.len())
        }
        // The loss and the accuracy apart, each at its own scale.
        let parts = |_| vec![Part::new("loss", 1, TOL_REDUCE), Part::new("accuracy", 1, TOL_REDUCE)];
        let (sf, sb, gf, gb): (Fwd<B>, Fwd<B>, Fwd<B>, Fwd<B>) = (
            B::softmax_cross_entropy_forward,
            B::softmax_cross_entropy_backward_input,
            B::sigmoid_cross_entropy_forward,
            B::sigmoid_cross_entropy_backward_input,
        );
        let (csf, csb, cgf, cgb): (Fwd<_>, Fwd<_>, Fwd<_>, Fwd<_>) = (
            crate::backend::cpu::Cpu::softmax_cross_entropy_forward,
            crate::backend::cpu::Cpu::softmax_cross_entropy_backward_input,
            crate::backend::cpu::Cpu::sigmoid_cross_entropy_forward,
            crate::backend::cpu::Cpu::sigmoid_cross_entropy_backward_input,
        );
        self.case_parts(
            "softmax_cross_entropy_forward_f32",
            shape.clone(),
            parts,
            |g| forward(g, sf, &p, &logits, &cls),
            |c| forward(c, csf, &p, &logits, &cls),
        )?;
        self.case(
            "softmax_cross_entropy_backward_input_f32",
            shape.clone(),
            TOL_ELEM,
            |g| backward(g, sb, &p, &logits, &cls, &d0),
            |c| backward(c, csb, &p, &logits, &cls, &d0),
        )?;
        self.case_parts(
            "sigmoid_cross_entropy_forward_f32",
            shape.clone(),
            parts,
            |g| forward(g, gf, &p, &logits, &bits),
            |c| forward(c, cgf, &p, &logits, &bits),
        )?;
        self.case(
            "sigmoid_cross_entropy_backward_input_f32",
            shape,
            TOL_ELEM,
            |g| backward(g, gb, &p, &logits, &bits, &d0),
            |c| backward(c, cgb, &p, &logits, &bits, &d0),
        )
    }
}

/// Finite differences of the logits' gradient of both heads, on a head in the middle of
/// wider rows (the other columns' gradient is zero and must stay as it was).
pub fn gradchecks(h: &OpHarness, rng: &mut Rng, out: &mut Vec<CheckResult>) -> Result<()> {
    let be = &h.be;
    let p = CrossEntropyParams { n: 3, classes: 4, stride: 7, offset: 2, scale: 0.5 };
    let x = rand_vec(rng, p.logits_len());
    let (cls, bits) = targets(rng, &p);
    let (cls, bits) = (h.buf(&cls)?, h.buf(&bits)?);
    let sm = |x: &[f64]| -> Result<f64> {
        let mut o = be.alloc(2)?;
        be.softmax_cross_entropy_forward(&p, &h.buf(x)?, &cls, &mut o)?;
        Ok(o[0])
    };
    let mut dx = be.alloc(p.logits_len())?;
    be.softmax_cross_entropy_backward_input(&p, &h.buf(&x)?, &cls, &mut dx)?;
    out.push(check_all("softmax_cross_entropy 3 rows, classes 2..6 of 7, logits", &x, &dx, sm)?);
    let sg = |x: &[f64]| -> Result<f64> {
        let mut o = be.alloc(2)?;
        be.sigmoid_cross_entropy_forward(&p, &h.buf(x)?, &bits, &mut o)?;
        Ok(o[0])
    };
    let mut dx = be.alloc(p.logits_len())?;
    be.sigmoid_cross_entropy_backward_input(&p, &h.buf(&x)?, &bits, &mut dx)?;
    out.push(check_all("sigmoid_cross_entropy 3 rows, classes 2..6 of 7, logits", &x, &dx, sg)?);
    Ok(())
}

/// The CPU twins in f64 against the direct definitions.
pub fn direct_checks(rng: &mut Rng) -> Result<Vec<DirectCheck>> {
    let be = Cpu64::new();
    let mut out = Vec::new();
    for (n, classes, stride, offset) in [(5, 3, 3, 0), (4, 6, 11, 5), (1, 1, 2, 1)] {
        let p = CrossEntropyParams { n, classes, stride, offset, scale: 0.75 };
        let label = format!("cross_entropy n{n} classes {classes} of {stride} at {offset}");
        let (x, d0) = (rand_vec(rng, p.logits_len()), rand_vec(rng, p.logits_len()));
        let (cls, bits) = targets(rng, &p);
        let mut o = vec![0.0; 2];
        be.softmax_cross_entropy_forward(&p, &x, &cls, &mut o)?;
        out.push(DirectCheck::new(format!("softmax {label} forward"), &direct::softmax_forward(&p, &x, &cls), &o));
        let mut d = d0.clone();
        be.softmax_cross_entropy_backward_input(&p, &x, &cls, &mut d)?;
        out.push(DirectCheck::new(format!("softmax {label} backward_input"), &direct::softmax_backward(&p, &x, &cls, &d0), &d));
        be.sigmoid_cross_entropy_forward(&p, &x, &bits, &mut o)?;
        out.push(DirectCheck::new(format!("sigmoid {label} forward"), &direct::sigmoid_forward(&p, &x, &bits), &o));
        let mut d = d0.clone();
        be.sigmoid_cross_entropy_backward_input(&p, &x, &bits, &mut d)?;
        out.push(DirectCheck::new(format!("sigmoid {label} backward_input"), &direct::sigmoid_backward(&p, &x, &bits, &d0), &d));
    }
    Ok(out)
}
