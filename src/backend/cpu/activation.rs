//! The CPU twins of relu, leaky_relu and tanh: elementwise maps over blocks of values on
//! every core, each block compiled for the widest vector unit (`simd::wide`).

use super::simd::wide;
use super::{CpuBackend, Elem, BLOCK};
use crate::backend::{ActParams, ActivationOps, Core};
use anyhow::Result;
use rayon::prelude::*;

/// `y = f(x)` over the first `len` values.
pub(super) fn map2<T: Elem>(len: usize, x: &[T], y: &mut [T], f: impl Fn(T) -> T + Sync) {
    y[..len].par_chunks_mut(BLOCK).zip(x[..len].par_chunks(BLOCK)).for_each(|(y, x)| {
        wide(
            #[inline(always)]
            || y.iter_mut().zip(x).for_each(|(y, x)| *y = f(*x)),
        );
    });
}

/// `out = f(a, b)` over the first `len` values.
pub(super) fn map3<T: Elem>(len: usize, a: &[T], b: &[T], out: &mut [T], f: impl Fn(T, T) -> T + Sync) {
    out[..len].par_chunks_mut(BLOCK).zip(a[..len].par_chunks(BLOCK).zip(b[..len].par_chunks(BLOCK))).for_each(|(o, (a, b))| {
        wide(
            #[inline(always)]
            || o.iter_mut().zip(a.iter().zip(b)).for_each(|(o, (a, b))| *o = f(*a, *b)),
        );
    });
}

impl<T: Elem> CpuBackend<T> {
    /// A forward pass `y = f(x)` of the op `op`.
    fn act_forward(&self, op: &'static str, p: &ActParams, x: &Vec<T>, y: &mut Vec<T>, f: impl Fn(T) -> T + Sync) -> Result<()> {
        self.timed(
            op,
            || p.work(2.0),
            || {
                p.check_forward(self, op, x, y)?;
                map2(p.len as usize, x, y, f);
                Ok(())
            },
        )
    }
    /// A backward pass `dx = f(y, dy)` of the op `op`.
    fn act_backward(&self, op: &'static str, p: &ActParams, y: &Vec<T>, dy: &Vec<T>, dx: &mut Vec<T>, f: impl Fn(T, T) -> T + Sync) -> Result<()> {
        self.timed(
            op,
            || p.work(3.0),
            || {
                p.check_backward(self, op, y, dy, dx)?;
                map3(p.len as usize, y, dy, dx, f);
                Ok(())
            },
        )
    }
}

impl<T: Elem> ActivationOps for CpuBackend<T> {
    fn relu_forward(&self, p: &ActParams, x: &Vec<T>, y: &mut Vec<T>) -> Result<()> {
        self.act_forward(
            "relu_forward",
            p,
            x,
            y,
            #[inline(always)]
            |v| if v > T::zero() { v } else { T::zero() },
        )
    }
    fn relu_backward_input(&self, p: &ActParams, y: &Vec<T>, dy: &Vec<T>, dx: &mut Vec<T>) -> Result<()> {
        self.act_backward(
            "relu_backward_input",
            p,
            y,
            dy,
            dx,
            #[inline(always)]
            |y, g| if y > T::zero() { g } else { T::zero() },
        )
    }
    fn leaky_relu_forward(&self, p: &ActParams, x: &Vec<T>, y: &mut Vec<T>) -> Result<()> {
        let s = T::from_f32(p.slope);
        self.act_forward(
            "leaky_relu_forward",
            p,
            x,
            y,
            #[inline(always)]
            |v| if v > T::zero() { v } else { v * s },
        )
    }
    fn leaky_relu_backward_input(&self, p: &ActParams, y: &Vec<T>, dy: &Vec<T>, dx: &mut Vec<T>) -> Result<()> {
        let s = T::from_f32(p.slope);
        self.act_backward(
            "leaky_relu_backward_input",
            p,
            y,
            dy,
            dx,
            #[inline(always)]
            |y, g| if y > T::zero() { g } else { g * s },
        )
    }
    fn tanh_forward(&self, p: &ActParams, x: &Vec<T>, y: &mut Vec<T>) -> Result<()> {
        self.act_forward(
            "tanh_forward",
            p,
            x,
            y,
            #[inline(always)]
            |v| v.tanh(),
        )
    }
    fn tanh_backward_input(&self, p: &ActParams, y: &Vec<T>, dy: &Vec<T>, dx: &mut Vec<T>) -> Result<()> {
        self.act_backward(
            "tanh_backward_input",
            p,
            y,
            dy,
            dx,
            #[inline(always)]
            |y, g| g * (T::one() - y * y),
        )
    }
}
