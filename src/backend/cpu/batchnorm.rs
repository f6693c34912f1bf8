//! The CPU twin of batchnorm2d: per-channel statistics in f64 totals fed by lanes of
//! element-type partial sums, and each pass over the activations one block of channels at
//! a time, so each input is read from memory once.

use super::simd::wide;
use super::{CpuBackend, Elem, SharedMut};
use crate::backend::{BatchNormOps, BatchNormParams, Core, Work, BN_ACT_NONE};
use anyhow::Result;
use rayon::prelude::*;

impl<T: Elem> BatchNormOps for CpuBackend<T> {
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
        self.timed(
            "batchnorm2d_forward_train",
            || p.work(2.0),
            || {
                p.check_forward_train(self, x, gamma, beta, running_mean, running_var, mean, invstd, y)?;
                batchnorm2d_forward_train(p, x, gamma, beta, running_mean, running_var, mean, invstd, y);
                Ok(())
            },
        )
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
        self.timed(
            "batchnorm2d_forward_infer",
            || p.work(2.0),
            || {
                p.check_forward_infer(self, x, gamma, beta, running_mean, running_var, y)?;
                batchnorm2d_forward_infer(p, x, gamma, beta, running_mean, running_var, y);
                Ok(())
            },
        )
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
        let tensors = if p.act == BN_ACT_NONE { 3.0 } else { 4.0 };
        self.timed(
            "batchnorm2d_backward_input",
            || p.work(tensors),
            || {
                p.check_backward_input(self, x, y, dy, gamma, mean, invstd, sums, dx)?;
                batchnorm2d_backward_input(p, x, y, dy, gamma, mean, invstd, sums, dx);
                Ok(())
            },
        )
    }
    fn batchnorm2d_backward_params(&self, p: &BatchNormParams, sums: &Vec<T>, dgamma: &mut Vec<T>, dbeta: &mut Vec<T>) -> Result<()> {
        self.timed(
            "batchnorm2d_backward_params",
            || Work::bytes(p.label(), 4.0 * 4.0 * p.c as f64),
            || {
                p.check_backward_params(self, sums, dgamma, dbeta)?;
                batchnorm2d_backward_params(p, sums, dgamma, dbeta);
                Ok(())
            },
        )
    }
}

/// Lanes of independent partial sums in the batchnorm reductions.
const LANES: usize = 16;
/// Values per lane summed in the element type before the lanes join the f64 total: in
/// f32, 16 values per lane keep the rounding error near 16 ulps of a lane's sum, while the
/// loop runs at the vector width.
const LANE_ROWS: usize = 16;

/// A channel's running `(sum a, sum b)` over `(a, b) = f(x, y, dy)`, fed one plane at a
/// time: `LANES` sums in `T`, joined to the f64 totals every `LANE_ROWS` values per lane.
/// The lanes carry over from one plane to the next, so small planes (16 values at 4x4)
/// do not pay an f64 flush each.
#[derive(Clone, Copy)]
struct LaneSums<T> {
    a: [T; LANES],
    b: [T; LANES],
    /// Values added to each lane since the last flush (at most; a tail adds to some).
    rows: usize,
    total: (f64, f64),
}

impl<T: Elem> LaneSums<T> {
    fn new() -> Self {
        LaneSums { a: [T::zero(); LANES], b: [T::zero(); LANES], rows: 0, total: (0.0, 0.0) }
    }

    #[inline(always)]
    fn flush(a: &mut [T; LANES], b: &mut [T; LANES], total: &mut (f64, f64)) {
        total.0 += a.iter().map(|v| v.to_f64()).sum::<f64>();
        total.1 += b.iter().map(|v| v.to_f64()).sum::<f64>();
        *a = [T::zero(); LANES];
        *b = [T::zero(); LANES];
    }

    /// Adds one plane.
    #[inline(always)]
    fn add(&mut self, xs: &[T], ys: &[T], ds: &[T], f: impl Fn(T, T, T) -> (T, T) + Copy) {
        // Locals, so the lanes stay in registers through the loop.
        let (mut a, mut b, mut rows, mut total) = (self.a, self.b, self.rows, self.total);
        // Whole rows as fixed-size arrays (no bounds checks: a row becomes one vector),
        // then the tail. The rows go in runs up to the next flush, so the loop that
        // sums them has no branch.
        let ((mut xc, xt), (mut yc, yt), (mut dc, dt)) = (xs.as_chunks::<LANES>(), ys.as_chunks::<LANES>(), ds.as_chunks::<LANES>());
        while !xc.is_empty() {
            let take = (LANE_ROWS - rows).min(xc.len());
            for ((xl, yl), dl) in xc[..take].iter().zip(&yc[..take]).zip(&dc[..take]) {
                // One loop per sum: in one loop the compiler paired a[l] with b[l] in
                // two-wide vectors instead of running each across the lanes.
                for l in 0..LANES {
                    a[l] += f(xl[l], yl[l], dl[l]).0;
                }
                for l in 0..LANES {
                    b[l] += f(xl[l], yl[l], dl[l]).1;
                }
            }
            (xc, yc, dc) = (&xc[take..], &yc[take..], &dc[take..]);
            rows += take;
            if rows == LANE_ROWS {
                Self::flush(&mut a, &mut b, &mut total);
                rows = 0;
            }
        }
        if !xt.is_empty() {
            for (l, ((xv, yv), dv)) in xt.iter().zip(yt).zip(dt).enumerate() {
                let (u, v) = f(*xv, *yv, *dv);
                a[l] += u;
                b[l] += v;
            }
            rows += 1;
            if rows == LANE_ROWS {
                Self::flush(&mut a, &mut b, &mut total);
                rows = 0;
            }
        }
        (self.a, self.b, self.rows, self.total) = (a, b, rows, total);
    }

    /// The totals, lanes included.
    fn sums(mut self) -> (f64, f64) {
        Self::flush(&mut self.a, &mut self.b, &mut self.total);
        self.total
    }
}

/// `out = f(x, constants of x's channel)`, in parallel over groups of planes of at least a
/// few thousand values.
fn per_channel_map<T: Elem, K: Copy + Sync>(p: &BatchNormParams, x: &[T], k: &[K], out: &mut [T], f: impl Fn(T, K) -> T + Sync + Copy) {
    let (c, hw) = (p.c as usize, p.hw as usize);
    let group = (4096 / hw.max(1)).max(1);
    out[..p.len()].par_chunks_mut(hw * group).enumerate().for_each(|(gi, o)| {
        // One `wide` per group, not per plane (a 4x4 plane is 16 values).
        wide(
            #[inline(always)]
            move || {
                for (q, o) in o.chunks_mut(hw).enumerate() {
                    let plane = gi * group + q;
                    let kc = k[plane % c];
                    o.iter_mut().zip(&x[plane * hw..(plane + 1) * hw]).for_each(|(o, x)| *o = f(*x, kc));
                }
            },
        );
    });
}

/// Batchnorm's two passes over one block of channels at a time, channel blocks in
/// parallel: first the per-channel sums of `f(x - center, y, dy)` (images in order), then
/// `out = g(x, y, dy, konst(channel, sums))` over the same planes, which are then still in
/// this core's cache, so each input is read from memory once. A block holds enough
/// channels that each image's part of it is at least a kilobyte of contiguous values.
/// With `pre`, the sums are of `f(x - center, w, w)` with `w = pre(y, dy)`, computed first
/// for each image's part of the block in a plain loop: a choice (an activation's
/// gradient) vectorises there, but not in the sums' loop across lanes, where it ran
/// partly in scalar code. Returns the sums.
#[allow(clippy::too_many_arguments)]
fn two_pass<T: Elem, K: Copy>(
    p: &BatchNormParams,
    center: &[T],
    x: &[T],
    y: &[T],
    dy: &[T],
    out: &mut [T],
    pre: Option<impl Fn(T, T) -> T + Sync + Copy>,
    f: impl Fn(T, T, T) -> (T, T) + Sync + Copy,
    konst: impl Fn(usize, (f64, f64)) -> K + Sync,
    g: impl Fn(T, T, T, K) -> T + Sync + Copy,
) -> Vec<(f64, f64)> {
    let (n, c, hw) = (p.n as usize, p.c as usize, p.hw as usize);
    let len = p.len();
    assert!(x.len() >= len && y.len() >= len && dy.len() >= len && out.len() >= len && center.len() >= c);
    let cb = (256 / hw.max(1)).clamp(1, c.div_ceil(2 * rayon::current_num_threads()).max(1));
    let dst = SharedMut(out.as_mut_ptr());
    let blocks: Vec<Vec<(f64, f64)>> = (0..c.div_ceil(cb))
        .into_par_iter()
        .map(|b| {
            let chans = b * cb..((b + 1) * cb).min(c);
            // One `wide` around each pass over the block, not one per plane: a 4x4 plane
            // is 16 values, and a call per plane cost more than its arithmetic. The
            // closures are `move`: f, g and each channel's constants are copied in, so the
            // compiler keeps them in registers and vectorises the loops (reached through
            // references, they were reloaded per value, in scalar code).
            let mut lanes = vec![LaneSums::<T>::new(); chans.len()];
            let mut w = vec![T::zero(); if pre.is_some() { chans.len() * hw } else { 0 }];
            let (sums_of, block, w) = (&mut lanes[..], chans.clone(), &mut w[..]);
            wide(
                #[inline(always)]
                move || {
                    for i in 0..n {
                        let run = (i * c + block.start) * hw..(i * c + block.end) * hw;
                        if let Some(pre) = pre {
                            for ((w, yv), dv) in w.iter_mut().zip(&y[run.clone()]).zip(&dy[run.clone()]) {
                                *w = pre(*yv, *dv);
                            }
                        }
                        for (j, (s, ch)) in sums_of.iter_mut().zip(block.clone()).enumerate() {
                            let m = center[ch];
                            let r = run.start + j * hw..run.start + (j + 1) * hw;
                            if pre.is_some() {
                                let w = &w[j * hw..(j + 1) * hw];
                                s.add(
                                    &x[r],
                                    w,
                                    w,
                                    #[inline(always)]
                                    move |x, w, _| f(x - m, w, w),
                                );
                            } else {
                                s.add(
                                    &x[r.clone()],
                                    &y[r.clone()],
                                    &dy[r],
                                    #[inline(always)]
                                    move |x, y, dy| f(x - m, y, dy),
                                );
                            }
                        }
                    }
                },
            );
            let sums: Vec<(f64, f64)> = lanes.into_iter().map(LaneSums::sums).collect();
            let ks: Vec<K> = chans.clone().zip(&sums).map(|(ch, s)| konst(ch, *s)).collect();
            let (ks, block) = (&ks[..], chans.clone());
            wide(
                #[inline(always)]
                move || {
                    for i in 0..n {
                        for (&kc, ch) in ks.iter().zip(block.clone()) {
                            let at = (i * c + ch) * hw;
                            // SAFETY: this block alone writes its channels' planes, inside
                            // `out` as asserted above.
                            let o = unsafe { std::slice::from_raw_parts_mut(dst.ptr().add(at), hw) };
                            let r = at..at + hw;
                            for (((o, xv), yv), dv) in o.iter_mut().zip(&x[r.clone()]).zip(&y[r.clone()]).zip(&dy[r]) {
                                *o = g(*xv, *yv, *dv, kc);
                            }
                        }
                    }
                },
            );
            sums
        })
        .collect();
    blocks.concat()
}

/// The factor the fused activation applies to non-positive values: 1 without one.
fn negative_factor<T: Elem>(p: &BatchNormParams) -> T {
    T::from_f32(p.act_grad(false))
}

/// `v` through the fused activation (`neg` = 1 is the identity).
#[inline(always)]
fn act<T: Elem>(neg: T, v: T) -> T {
    if v > T::zero() {
        v
    } else {
        v * neg
    }
}

#[allow(clippy::too_many_arguments)]
fn batchnorm2d_forward_train<T: Elem>(
    p: &BatchNormParams,
    x: &[T],
    gamma: &[T],
    beta: &[T],
    running_mean: &mut [T],
    running_var: &mut [T],
    mean: &mut [T],
    invstd: &mut [T],
    y: &mut [T],
) {
    let count = (p.n * p.hw) as f64;
    // One pass for the sum and the sum of squares of x - center, with each channel
    // centered on its first plane's mean: the cancellation in E[d^2] - E[d]^2 then costs
    // about ((mean - center) / std)^2 block-rounding errors, small for any real batch.
    let (c, hw) = (p.c as usize, p.hw as usize);
    let center: Vec<T> = (0..c).map(|ch| T::from_f64(x[ch * hw..(ch + 1) * hw].iter().map(|v| v.to_f64()).sum::<f64>() / hw as f64)).collect();
    let m = p.momentum as f64;
    let eps = p.eps as f64;
    // (mean, biased variance, unbiased variance) from a channel's centered sums.
    let stats = |ch: usize, (s, ss): (f64, f64)| {
        let mu = center[ch].to_f64() + s / count;
        let m2 = (ss - s * s / count).max(0.0);
        let var = m2 / count;
        (mu, var, if count > 1.0 { m2 / (count - 1.0) } else { var })
    };
    let consts = |ch: usize, s: (f64, f64)| {
        let (mu, var, _) = stats(ch, s);
        let (mu, is) = (T::from_f64(mu), T::from_f64(1.0 / (var + eps).sqrt()));
        (mu, is * gamma[ch], beta[ch], is)
    };
    let neg = negative_factor::<T>(p);
    let sums = two_pass(
        p,
        &center,
        x,
        x,
        x,
        y,
        None::<fn(T, T) -> T>,
        #[inline(always)]
        |d, _, _| (d, d * d),
        consts,
        #[inline(always)]
        move |x, _, _, (mu, scale, shift, _)| act(neg, (x - mu) * scale + shift),
    );
    for (ch, &s) in sums.iter().enumerate() {
        let (mu, _, unbiased) = stats(ch, s);
        let (mu_t, _, _, is) = consts(ch, s);
        mean[ch] = mu_t;
        invstd[ch] = is;
        running_mean[ch] = T::from_f64((1.0 - m) * running_mean[ch].to_f64() + m * mu);
        running_var[ch] = T::from_f64((1.0 - m) * running_var[ch].to_f64() + m * unbiased);
    }
}

fn batchnorm2d_forward_infer<T: Elem>(p: &BatchNormParams, x: &[T], gamma: &[T], beta: &[T], running_mean: &[T], running_var: &[T], y: &mut [T]) {
    let eps = T::from_f32(p.eps);
    let k: Vec<(T, T, T)> = (0..p.c as usize).map(|ch| (running_mean[ch], gamma[ch] / (running_var[ch] + eps).sqrt(), beta[ch])).collect();
    let neg = negative_factor::<T>(p);
    per_channel_map(
        p,
        x,
        &k,
        y,
        #[inline(always)]
        move |x, (mu, scale, shift)| act(neg, (x - mu) * scale + shift),
    );
}

/// `dy * act'(y)`: the gradient through the fused activation (`neg` = 1 without one).
#[inline(always)]
fn through_act<T: Elem>(neg: T, y: T, dy: T) -> T {
    if y > T::zero() {
        dy
    } else {
        dy * neg
    }
}

/// `y` when an activation is fused, else `dy` (a same-length stand-in that is not read).
fn act_output<'a, T: Elem>(p: &BatchNormParams, y: &'a [T], dy: &'a [T]) -> &'a [T] {
    if p.act == BN_ACT_NONE {
        dy
    } else {
        y
    }
}

#[allow(clippy::too_many_arguments)]
fn batchnorm2d_backward_input<T: Elem>(
    p: &BatchNormParams,
    x: &[T],
    y: &[T],
    dy: &[T],
    gamma: &[T],
    mean: &[T],
    invstd: &[T],
    out_sums: &mut [T],
    dx: &mut [T],
) {
    let count = (p.n * p.hw) as f64;
    let neg = negative_factor::<T>(p);
    // Sums of g = dy * act'(y) and of g * (x - mean); sum g * xhat = invstd * the latter.
    // dx = gamma * invstd * (g - mean(g) - xhat * mean(g * xhat)).
    let consts = |ch: usize, (sg, sgxc): (f64, f64)| {
        (gamma[ch] * invstd[ch], T::from_f64(sg / count), T::from_f64(invstd[ch].to_f64() * sgxc / count), mean[ch], invstd[ch])
    };
    let sums = two_pass(
        p,
        mean,
        x,
        act_output(p, y, dy),
        dy,
        dx,
        Some(
            #[inline(always)]
            move |y, dy| through_act(neg, y, dy),
        ),
        #[inline(always)]
        |xc, g, _| (g, g * xc),
        consts,
        #[inline(always)]
        move |x, y, dy, (k, mg, mgx, mu, is)| k * (through_act(neg, y, dy) - mg - (x - mu) * is * mgx),
    );
    let c = p.c as usize;
    for (ch, &(sg, sgxc)) in sums.iter().enumerate() {
        out_sums[ch] = T::from_f64(sg);
        out_sums[c + ch] = T::from_f64(invstd[ch].to_f64() * sgxc);
    }
}

fn batchnorm2d_backward_params<T: Elem>(p: &BatchNormParams, sums: &[T], dgamma: &mut [T], dbeta: &mut [T]) {
    let c = p.c as usize;
    for ch in 0..c {
        dbeta[ch] += sums[ch];
        dgamma[ch] += sums[c + ch];
    }
}
