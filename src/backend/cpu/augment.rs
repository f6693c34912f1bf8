//! The CPU twin of augment: one sample per task, the means in f64.

use super::{CpuBackend, Elem};
use crate::backend::augment::*;
use crate::backend::{AugmentOps, AugmentParams, Core};
use anyhow::Result;
use rayon::prelude::*;

impl<T: Elem> AugmentOps for CpuBackend<T> {
    fn augment_forward(&self, p: &AugmentParams, x: &Vec<T>, a: &Vec<T>, y: &mut Vec<T>) -> Result<()> {
        self.timed(
            "augment_forward",
            || p.work(),
            || {
                p.check_forward(self, x, a, y)?;
                augment_forward(p, x, a, y);
                Ok(())
            },
        )
    }
    fn augment_backward_input(&self, p: &AugmentParams, a: &Vec<T>, dy: &Vec<T>, dx: &mut Vec<T>) -> Result<()> {
        self.timed(
            "augment_backward_input",
            || p.work(),
            || {
                p.check_backward_input(self, a, dy, dx)?;
                augment_backward_input(p, a, dy, dx);
                Ok(())
            },
        )
    }
}

/// One sample's parameters, read from the buffer.
pub(crate) struct Sample {
    pub tx: i64,
    pub ty: i64,
    pub cx0: i64,
    pub cy0: i64,
    pub cw: i64,
    pub ch: i64,
    pub b: f64,
    pub s: f64,
    pub k: f64,
    /// What translation shifts in and cutout covers.
    pub fill: f64,
    /// The colour parameters are not the identity.
    pub color: bool,
}

impl Sample {
    pub(crate) fn read<T: Elem>(a: &[T]) -> Sample {
        let f: Vec<f32> = a[..AUGMENT_K].iter().map(|v| v.to_f64() as f32).collect();
        let int = |i: usize| f[i] as i64;
        Sample {
            tx: int(AUGMENT_SHIFT_X),
            ty: int(AUGMENT_SHIFT_Y),
            cx0: int(AUGMENT_CUT_X0),
            cy0: int(AUGMENT_CUT_Y0),
            cw: int(AUGMENT_CUT_W),
            ch: int(AUGMENT_CUT_H),
            b: f[AUGMENT_BRIGHTNESS] as f64,
            s: f[AUGMENT_SATURATION] as f64,
            k: f[AUGMENT_CONTRAST] as f64,
            fill: f[AUGMENT_FILL] as f64,
            color: !color_is_identity(&f),
        }
    }
    /// Whether output pixel `(i, j)` is inside the cutout square.
    pub(crate) fn cut(&self, i: i64, j: i64) -> bool {
        i >= self.cy0 && i < self.cy0 + self.ch && j >= self.cx0 && j < self.cx0 + self.cw
    }
    /// The input pixel output pixel `(i, j)` reads, if it reads one (not cut out, not
    /// shifted in from outside).
    pub(crate) fn source(&self, i: i64, j: i64, h: i64, w: i64) -> Option<usize> {
        let (si, sj) = (i + self.ty, j + self.tx);
        (!self.cut(i, j) && (0..h).contains(&si) && (0..w).contains(&sj)).then_some((si * w + sj) as usize)
    }
}

fn augment_forward<T: Elem>(p: &AugmentParams, x: &[T], a: &[T], y: &mut [T]) {
    let (c, h, w) = (p.c as usize, p.h as i64, p.w as i64);
    let hw = (h * w) as usize;
    y[..p.len()].par_chunks_mut(c * hw).enumerate().for_each(|(n, out)| {
        let s = Sample::read(&a[n * AUGMENT_K..]);
        let xs = &x[n * c * hw..][..c * hw];
        // The means of x: per pixel over channels, and over the whole sample.
        let (mut mc, mut m) = (vec![0.0f64; hw], 0.0f64);
        if s.color {
            for ch in 0..c {
                mc.iter_mut().zip(&xs[ch * hw..][..hw]).for_each(|(acc, v)| *acc += v.to_f64());
            }
            m = mc.iter().sum::<f64>() / (c * hw) as f64;
            mc.iter_mut().for_each(|v| *v /= c as f64);
        }
        for i in 0..h {
            for j in 0..w {
                let q = (i * w + j) as usize;
                let src = s.source(i, j, h, w);
                for ch in 0..c {
                    out[ch * hw + q] = match src {
                        None => T::from_f64(s.fill),
                        Some(sq) if s.color => {
                            let v = xs[ch * hw + sq].to_f64();
                            T::from_f64(s.k * s.s * (v - mc[sq]) + s.k * (mc[sq] - m) + m + s.b)
                        }
                        Some(sq) => xs[ch * hw + sq],
                    };
                }
            }
        }
    });
}

fn augment_backward_input<T: Elem>(p: &AugmentParams, a: &[T], dy: &[T], dx: &mut [T]) {
    let (c, h, w) = (p.c as usize, p.h as i64, p.w as i64);
    let hw = (h * w) as usize;
    dx[..p.len()].par_chunks_mut(c * hw).enumerate().for_each(|(n, out)| {
        let s = Sample::read(&a[n * AUGMENT_K..]);
        let dys = &dy[n * c * hw..][..c * hw];
        // g: dy moved back to the pixel each output read (zero elsewhere).
        let mut g = vec![0.0f64; c * hw];
        for i in 0..h {
            for j in 0..w {
                if let Some(sq) = s.source(i, j, h, w) {
                    let q = (i * w + j) as usize;
                    for ch in 0..c {
                        g[ch * hw + sq] = dys[ch * hw + q].to_f64();
                    }
                }
            }
        }
        if !s.color {
            out.iter_mut().zip(&g).for_each(|(o, v)| *o = T::from_f64(*v));
            return;
        }
        let mut gc = vec![0.0f64; hw];
        for ch in 0..c {
            gc.iter_mut().zip(&g[ch * hw..][..hw]).for_each(|(acc, v)| *acc += v);
        }
        let total = gc.iter().sum::<f64>();
        let (fc, ft) = (s.k * (1.0 - s.s) / c as f64, (1.0 - s.k) / (c * hw) as f64 * total);
        for ch in 0..c {
            for q in 0..hw {
                out[ch * hw + q] = T::from_f64(s.k * s.s * g[ch * hw + q] + fc * gc[q] + ft);
            }
        }
    });
}
