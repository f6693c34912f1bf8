//! conv2d and conv_transpose2d on the CPU: im2col / col2im around a GEMM, split between
//! the threads in one of two ways (`Split`). Planes of 8x8 windows and more give each
//! thread its own range of images, and each image (or few) its own single-threaded GEMM,
//! so the column matrix never leaves the core's cache. Smaller planes run in chunks of
//! images around one GEMM that all threads share: one image has too few columns (16 for a
//! 4x4 layer) for a GEMM of its own. Chunking keeps the column matrix under the workspace
//! bound.

use super::bf16::Bf16Kernel;
use super::gemm::{matmul, matmul_lhs, matmul_on, Lhs};
use super::simd::wide;
use super::{CpuBackend, Elem, SharedMut};
use crate::backend::{ConvOps, ConvParams, Core};
use anyhow::Result;
use rayon::prelude::*;

impl<T: Elem> ConvOps for CpuBackend<T> {
    fn conv2d_forward(&self, p: &ConvParams, x: &Vec<T>, w: &Vec<T>, bias: Option<&Vec<T>>, y: &mut Vec<T>) -> Result<()> {
        self.timed(
            "conv2d_forward",
            || p.conv2d_work(),
            || {
                p.check_forward(self, "conv2d_forward", x, w, bias, y)?;
                conv2d_forward(self, p, &self.gemm_operand(x), &self.gemm_operand(w), bias.map(|b| b.as_slice()), y);
                Ok(())
            },
        )
    }
    fn conv2d_backward_input(&self, p: &ConvParams, dy: &Vec<T>, w: &Vec<T>, dx: &mut Vec<T>) -> Result<()> {
        self.timed(
            "conv2d_backward_input",
            || p.conv2d_work(),
            || {
                p.check_backward_input(self, "conv2d_backward_input", dy, w, dx)?;
                if self.tf32_operands && crate::backend::cuda::ops::conv::conv2d_backward_input_is_thin(p) {
                    // The GPU's thin kernel multiplies in fp32 whatever the GEMM mode.
                    conv2d_backward_input(self, p, dy, w, dx);
                } else {
                    conv2d_backward_input(self, p, &self.gemm_operand(dy), &self.gemm_operand(w), dx);
                }
                Ok(())
            },
        )
    }
    fn conv2d_backward_params(&self, p: &ConvParams, x: &Vec<T>, dy: &Vec<T>, dw: &mut Vec<T>, dbias: Option<&mut Vec<T>>) -> Result<()> {
        self.timed(
            "conv2d_backward_params",
            || p.conv2d_work(),
            || {
                p.check_backward_params(self, "conv2d_backward_params", x, dy, dw, dbias.as_deref())?;
                conv2d_backward_params(self, p, &self.gemm_operand(x), &self.gemm_operand(dy), dw);
                if let Some(db) = dbias {
                    bias_backward_params(p.n as usize, p.c_out as usize, (p.h_out * p.w_out) as usize, dy, db);
                }
                Ok(())
            },
        )
    }

    fn conv_transpose2d_forward(&self, p: &ConvParams, x: &Vec<T>, w: &Vec<T>, bias: Option<&Vec<T>>, y: &mut Vec<T>) -> Result<()> {
        self.timed(
            "conv_transpose2d_forward",
            || p.conv_transpose2d_work(),
            || {
                p.check_forward(self, "conv_transpose2d_forward", x, w, bias, y)?;
                if self.tf32_operands && crate::backend::cuda::ops::conv::conv_transpose2d_forward_is_thin(p) {
                    conv_transpose2d_forward(self, p, x, w, bias.map(|b| b.as_slice()), y);
                } else {
                    conv_transpose2d_forward(self, p, &self.gemm_operand(x), &self.gemm_operand(w), bias.map(|b| b.as_slice()), y);
                }
                Ok(())
            },
        )
    }
    fn conv_transpose2d_backward_input(&self, p: &ConvParams, dy: &Vec<T>, w: &Vec<T>, dx: &mut Vec<T>) -> Result<()> {
        self.timed(
            "conv_transpose2d_backward_input",
            || p.conv_transpose2d_work(),
            || {
                p.check_backward_input(self, "conv_transpose2d_backward_input", dy, w, dx)?;
                conv_transpose2d_backward_input(self, p, &self.gemm_operand(dy), &self.gemm_operand(w), dx);
                Ok(())
            },
        )
    }
    fn conv_transpose2d_backward_params(&self, p: &ConvParams, x: &Vec<T>, dy: &Vec<T>, dw: &mut Vec<T>, dbias: Option<&mut Vec<T>>) -> Result<()> {
        self.timed(
            "conv_transpose2d_backward_params",
            || p.conv_transpose2d_work(),
            || {
                p.check_backward_params(self, "conv_transpose2d_backward_params", x, dy, dw, dbias.as_deref())?;
                conv_transpose2d_backward_params(self, p, &self.gemm_operand(x), &self.gemm_operand(dy), dw);
                if let Some(db) = dbias {
                    bias_backward_params(p.n as usize, p.c_out as usize, (p.h_out * p.w_out) as usize, dy, db);
                }
                Ok(())
            },
        )
    }
}

/// `db[c] += sum over n and the grid of dy[n, c, q]`: the bias gradient of conv2d,
/// conv_transpose2d and linear (`hw = 1`).
pub(super) fn bias_backward_params<T: Elem>(n: usize, c: usize, hw: usize, dy: &[T], db: &mut [T]) {
    db[..c].par_iter_mut().enumerate().for_each(|(ch, d)| {
        let mut s = 0.0f64;
        for i in 0..n {
            s += dy[(i * c + ch) * hw..][..hw].iter().map(|v| v.to_f64()).sum::<f64>();
        }
        *d += T::from_f64(s);
    });
}

/// The geometry of the "column" view: a `c x h x w` plane stack seen through a `k x k`
/// window with `stride` and `pad`, giving `ho x wo` window positions. For conv2d the
/// planes are the input; for conv_transpose2d they are the (larger) output.
#[derive(Clone, Copy)]
struct Geo {
    c: usize,
    h: usize,
    w: usize,
    k: usize,
    stride: usize,
    pad: usize,
    ho: usize,
    wo: usize,
}

impl Geo {
    fn conv2d(p: &ConvParams) -> Geo {
        Geo {
            c: p.c_in as usize,
            h: p.h_in as usize,
            w: p.w_in as usize,
            k: p.k as usize,
            stride: p.stride as usize,
            pad: p.pad as usize,
            ho: p.h_out as usize,
            wo: p.w_out as usize,
        }
    }
    fn conv_transpose2d(p: &ConvParams) -> Geo {
        Geo {
            c: p.c_out as usize,
            h: p.h_out as usize,
            w: p.w_out as usize,
            k: p.k as usize,
            stride: p.stride as usize,
            pad: p.pad as usize,
            ho: p.h_in as usize,
            wo: p.w_in as usize,
        }
    }
    fn rows(&self) -> usize {
        self.c * self.k * self.k
    }
    fn cols_per_image(&self) -> usize {
        self.ho * self.wo
    }
    fn plane(&self) -> usize {
        self.h * self.w
    }
    /// A 1x1 window with stride 1 and no padding: the column view of an image is its
    /// plane stack itself.
    fn is_pointwise(&self) -> bool {
        self.k == 1 && self.stride == 1 && self.pad == 0
    }
    /// The window covers the whole plane exactly once (one position, no padding): the
    /// column matrix of image `j` is then its plane stack as one column, so
    /// `cols = planes^T` and the convolution is a plain matrix product.
    fn is_dense(&self) -> bool {
        self.ho == 1 && self.wo == 1 && self.pad == 0 && self.k == self.h && self.k == self.w
    }
}

/// Images per chunk so that a `rows x (nc * cols)` matrix stays under the bound.
fn chunk_images(n: usize, rows: usize, cols: usize, bound: usize) -> usize {
    (bound / (rows * cols).max(1)).clamp(1, n.max(1))
}

fn grow<T: Elem>(v: &mut Vec<T>, len: usize) {
    if v.len() < len {
        v.resize(len, T::zero());
    }
}

/// Runs `f(task, scratch)` for `task < n`: spread over the pool, or in order on this
/// thread when the caller has already given each thread its own work.
fn tasks<T: Elem>(par: bool, n: usize, f: impl Fn(usize, &mut Vec<T>) + Sync + Send) {
    if par {
        (0..n).into_par_iter().for_each_init(Vec::new, |buf, task| f(task, buf));
    } else {
        let mut buf = Vec::new();
        (0..n).for_each(|task| f(task, &mut buf));
    }
}

/// Runs `f(index, chunk)` for the `size`-long chunks of `s`, like `tasks`.
fn chunks<T: Elem>(par: bool, s: &mut [T], size: usize, f: impl Fn(usize, &mut [T]) + Sync + Send) {
    if par {
        s.par_chunks_mut(size).enumerate().for_each(|(i, c)| f(i, c));
    } else {
        s.chunks_mut(size).enumerate().for_each(|(i, c)| f(i, c));
    }
}

/// One axis of the window view: kernel offset `kk` at window position `o` reads coordinate
/// `stride * o + kk - pad`, which lies in phase `(kk - pad) mod stride` (coordinates
/// grouped by their remainder) at position `o + d(kk)`, `d(kk) = floor((kk - pad) / stride)`.
#[derive(Clone, Copy)]
struct Axis {
    size: usize,
    outs: usize,
    k: usize,
    s: usize,
    pad: usize,
}

impl Axis {
    #[inline(always)]
    fn phase(&self, kk: usize) -> (usize, isize) {
        let (t, s) = (kk as isize - self.pad as isize, self.s as isize);
        (t.rem_euclid(s) as usize, t.div_euclid(s))
    }
    /// The lowest position any window reads (0 or below: the halo before the plane).
    fn dmin(&self) -> isize {
        self.phase(0).1
    }
    /// Positions per phase that windows read, the halo on both sides included.
    fn len(&self) -> usize {
        (self.outs as isize + self.phase(self.k - 1).1 - self.dmin()) as usize
    }
    /// How many coordinates of phase `r` the phase buffer holds: those inside the plane
    /// that some window reads.
    fn held(&self, r: usize) -> usize {
        if r >= self.size {
            return 0;
        }
        (self.size - r).div_ceil(self.s).min((self.len() as isize + self.dmin()) as usize)
    }
}

/// A plane split into `stride x stride` phases by the remainders of its coordinates, each
/// phase surrounded by the zero halo that windows reach outside the plane. Every row of
/// the column view (one kernel tap, one image) is then one `ho x wo` block of one phase,
/// copied or added without a bounds branch; a stride-2 window no longer reads every other
/// value.
struct Phases {
    y: Axis,
    x: Axis,
    rows: usize,
    cols: usize,
    /// `block(ky, kx)` at `ky * k + kx`.
    blocks: Vec<usize>,
    /// `(buffer offset, plane offset, count)` of each run of plane coordinates the buffer
    /// holds: one row of one phase, whose plane coordinates step by `stride`.
    runs: Vec<(usize, usize, usize)>,
    /// Stride 2 (every strided layer): the runs of each plane row (phase columns 0 and 1)
    /// as one pair, `(buffer offsets of the even and odd phase rows, plane offset, counts)`,
    /// so that a plane row is split or merged in one pass; the even count is the odd one or
    /// one more, so the pair covers the row's first `n0 + n1` values.
    pairs: Vec<(usize, usize, usize, usize, usize)>,
    /// Whether the runs cover the whole plane (then `merge` need not zero it first).
    covers: bool,
}

impl Phases {
    fn new(g: &Geo) -> Phases {
        let y = Axis { size: g.h, outs: g.ho, k: g.k, s: g.stride, pad: g.pad };
        let x = Axis { size: g.w, outs: g.wo, k: g.k, s: g.stride, pad: g.pad };
        let mut ph = Phases { y, x, rows: y.len(), cols: x.len(), blocks: Vec::new(), runs: Vec::new(), pairs: Vec::new(), covers: false };
        ph.blocks = (0..g.k * g.k).map(|t| ph.block(t / g.k, t % g.k)).collect();
        let (s, oy, ox) = (g.stride, (-y.dmin()) as usize, (-x.dmin()) as usize);
        for ry in 0..s {
            for uy in 0..y.held(ry) {
                for rx in 0..s {
                    let n = x.held(rx);
                    if n > 0 {
                        ph.runs.push((ph.phase_base(ry, rx) + (uy + oy) * ph.cols + ox, (uy * s + ry) * g.w + rx, n));
                    }
                }
            }
        }
        if s == 2 {
            // A plane row's runs are consecutive, phase column 0's first (it holds as many
            // coordinates as column 1 or one more); column 1's is absent in a 1-wide plane.
            ph.pairs = ph
                .runs
                .chunk_by(|a, b| a.1 / g.w == b.1 / g.w)
                .map(|row| {
                    let (b0, p, n0) = row[0];
                    // No odd run: an empty one just past the even run.
                    let (b1, _, n1) = row.get(1).copied().unwrap_or((b0 + n0, p, 0));
                    debug_assert!(p % g.w == 0 && n1 <= n0 && n0 <= n1 + 1);
                    (b0, b1, p, n0, n1)
                })
                .collect();
        }
        ph.covers = ph.runs.iter().map(|r| r.2).sum::<usize>() == g.h * g.w;
        ph
    }
    fn len(&self) -> usize {
        self.y.s * self.x.s * self.rows * self.cols
    }
    fn phase_base(&self, ry: usize, rx: usize) -> usize {
        (ry * self.x.s + rx) * self.rows * self.cols
    }
    /// Offset of the `ho x wo` block (row stride `cols`) that kernel tap `(ky, kx)` reads.
    fn block(&self, ky: usize, kx: usize) -> usize {
        let ((ry, dy), (rx, dx)) = (self.y.phase(ky), self.x.phase(kx));
        self.phase_base(ry, rx) + (dy - self.y.dmin()) as usize * self.cols + (dx - self.x.dmin()) as usize
    }
    /// `buf` = the plane's phases, with zero halos. Inlined, so that it is compiled for the
    /// SIMD level of its caller's `wide`.
    #[inline(always)]
    fn split<T: Elem>(&self, plane: &[T], buf: &mut Vec<T>) {
        buf.clear();
        buf.resize(self.len(), T::zero());
        let s = self.x.s;
        if s == 2 {
            for &(b0, b1, p, n0, n1) in &self.pairs {
                // The odd phase lies after the even one (b1 >= b0 + n0).
                let (lo, hi) = buf.split_at_mut(b1);
                deinterleave(&plane[p..p + n0 + n1], &mut lo[b0..b0 + n0], &mut hi[..n1]);
            }
            return;
        }
        for &(b, p, n) in &self.runs {
            for (d, v) in buf[b..b + n].iter_mut().zip(plane[p..].iter().step_by(s)) {
                *d = *v;
            }
        }
    }
    /// `plane` = the values the phases hold; coordinates no window reads are zero.
    /// Inlined, as `split`.
    #[inline(always)]
    fn merge<T: Elem>(&self, buf: &[T], plane: &mut [T]) {
        if !self.covers {
            plane.fill(T::zero());
        }
        let s = self.x.s;
        if s == 2 {
            for &(b0, b1, p, n0, n1) in &self.pairs {
                interleave(&buf[b0..b0 + n0], &buf[b1..b1 + n1], &mut plane[p..p + n0 + n1]);
            }
            return;
        }
        for &(b, p, n) in &self.runs {
            for (d, v) in plane[p..].iter_mut().step_by(s).zip(&buf[b..b + n]) {
                *d = *v;
            }
        }
    }
}

/// Pairs per step of `deinterleave` and `interleave`, whose operands are copied to local
/// arrays first: the compiler then knows they do not overlap and uses vector instructions.
/// (`block_op`'s additions go through local arrays of its width for the same reason:
/// reading and writing through the slices, col2im added one value at a time, `vaddss` in
/// `perf annotate` of `bench --precision bf16`.)
const STEP: usize = 16;

/// `even[i] = row[2 i]`, `odd[i] = row[2 i + 1]`, with `even` as long as `odd` or one longer
/// (an odd-length row's last value): in steps of 16 pairs, then 8 and 4 (phase rows of 8
/// and 4 values are common: the planes of 16 and 8), then one at a time.
#[inline(always)]
fn deinterleave<T: Elem>(row: &[T], even: &mut [T], odd: &mut [T]) {
    let n = odd.len();
    assert!(row.len() == even.len() + n && (even.len() == n || even.len() == n + 1));
    let mut i = deinterleave_steps::<T, STEP>(0, row, even, odd);
    i = deinterleave_steps::<T, { STEP / 2 }>(i, row, even, odd);
    i = deinterleave_steps::<T, { STEP / 4 }>(i, row, even, odd);
    for i in i..n {
        (even[i], odd[i]) = (row[2 * i], row[2 * i + 1]);
    }
    if even.len() > n {
        even[n] = row[2 * n];
    }
}

/// `deinterleave` of pairs `from..` in steps of `N`, as many as fit; returns where it stopped.
#[inline(always)]
fn deinterleave_steps<T: Elem, const N: usize>(from: usize, row: &[T], even: &mut [T], odd: &mut [T]) -> usize {
    let mut i = from;
    while i + N <= odd.len() {
        let r: &[T] = &row[2 * i..2 * (i + N)];
        let (mut a, mut b) = ([T::zero(); N], [T::zero(); N]);
        for q in 0..N {
            (a[q], b[q]) = (r[2 * q], r[2 * q + 1]);
        }
        even[i..i + N].copy_from_slice(&a);
        odd[i..i + N].copy_from_slice(&b);
        i += N;
    }
    i
}

/// `row[2 i] = even[i]`, `row[2 i + 1] = odd[i]`, lengths and steps as in `deinterleave`.
#[inline(always)]
fn interleave<T: Elem>(even: &[T], odd: &[T], row: &mut [T]) {
    let n = odd.len();
    assert!(row.len() == even.len() + n && (even.len() == n || even.len() == n + 1));
    let mut i = interleave_steps::<T, STEP>(0, even, odd, row);
    i = interleave_steps::<T, { STEP / 2 }>(i, even, odd, row);
    i = interleave_steps::<T, { STEP / 4 }>(i, even, odd, row);
    for i in i..n {
        (row[2 * i], row[2 * i + 1]) = (even[i], odd[i]);
    }
    if even.len() > n {
        row[2 * n] = even[n];
    }
}

/// `interleave` of pairs `from..` in steps of `N`; returns where it stopped.
#[inline(always)]
fn interleave_steps<T: Elem, const N: usize>(from: usize, even: &[T], odd: &[T], row: &mut [T]) -> usize {
    let mut i = from;
    while i + N <= odd.len() {
        let (a, b): ([T; N], [T; N]) = (even[i..i + N].try_into().unwrap(), odd[i..i + N].try_into().unwrap());
        let mut v = [[T::zero(); 2]; N];
        for q in 0..N {
            v[q] = [a[q], b[q]];
        }
        row[2 * i..2 * (i + N)].copy_from_slice(v.as_flattened());
        i += N;
    }
    i
}

/// `dst[r * dld + i] (=|+=) src[r * sld + i]` for `r < rows`, `i < width`: the block
/// moves of im2col and col2im, with the common widths unrolled at compile time.
#[inline(always)]
fn block_op<T: Elem>(rows: usize, width: usize, src: &[T], sld: usize, dst: &mut [T], dld: usize, add: bool) {
    #[inline(always)]
    fn fixed<T: Elem, const W: usize>(rows: usize, src: &[T], sld: usize, dst: &mut [T], dld: usize, add: bool) {
        for r in 0..rows {
            let s: &[T; W] = src[r * sld..r * sld + W].try_into().unwrap();
            let d: &mut [T; W] = (&mut dst[r * dld..r * dld + W]).try_into().unwrap();
            if add {
                // In local arrays, which cannot overlap (see STEP).
                let (mut sum, s) = (*d, *s);
                for i in 0..W {
                    sum[i] += s[i];
                }
                *d = sum;
            } else {
                *d = *s;
            }
        }
    }
    match width {
        4 => fixed::<T, 4>(rows, src, sld, dst, dld, add),
        8 => fixed::<T, 8>(rows, src, sld, dst, dld, add),
        16 => fixed::<T, 16>(rows, src, sld, dst, dld, add),
        32 => fixed::<T, 32>(rows, src, sld, dst, dld, add),
        _ => {
            for r in 0..rows {
                let (s, d) = (&src[r * sld..][..width], &mut dst[r * dld..][..width]);
                if add {
                    d.iter_mut().zip(s).for_each(|(d, s)| *d += *s);
                } else {
                    d.copy_from_slice(s);
                }
            }
        }
    }
}

/// Where im2col and col2im find things: image `j` of the chunk starting at `n0`, channel
/// `c`, kernel tap `t = ky * k + kx`. Both run one task per (channel, image), numbered
/// image-fastest (`task = c * nc + j`), so consecutive tasks touch adjacent column segments.
struct ColumnLayout {
    /// Window positions per image: the length of one segment.
    p: usize,
    ld: usize,
    img: usize,
    plane: usize,
    taps: usize,
    n0: usize,
    nc: usize,
}

impl ColumnLayout {
    /// Checks that a `cols` and a `planes` buffer of these lengths hold the chunk.
    fn new(g: &Geo, n0: usize, nc: usize, cols_len: usize, planes_len: usize) -> ColumnLayout {
        let l = ColumnLayout { p: g.cols_per_image(), ld: nc * g.cols_per_image(), img: g.c * g.plane(), plane: g.plane(), taps: g.k * g.k, n0, nc };
        assert!(cols_len >= g.rows() * l.ld && planes_len >= (n0 + nc) * l.img);
        l
    }
    /// `(c, j)` of a task.
    fn task(&self, task: usize) -> (usize, usize) {
        (task / self.nc, task % self.nc)
    }
    /// Offset of plane `c` of image `j` in the planes buffer.
    fn plane_at(&self, c: usize, j: usize) -> usize {
        (self.n0 + j) * self.img + c * self.plane
    }
    /// Offset of image `j`'s segment of column-matrix row `(c, t)`.
    fn segment_at(&self, c: usize, t: usize, j: usize) -> usize {
        (c * self.taps + t) * self.ld + j * self.p
    }
}

/// `cols[row, j * P + o] = planes[n0 + j][c, window(o) + (ky, kx)]`, for `row = (c, ky, kx)`.
/// One task per (channel, image) splits its plane into phases once; each of its `k * k`
/// rows is then one block copy.
fn im2col<T: Elem>(g: &Geo, planes: &[T], n0: usize, nc: usize, cols: &mut [T], par: bool) {
    if g.is_pointwise() {
        return gather(planes, g.c, g.plane(), n0, nc, cols, par);
    }
    let (l, ph) = (ColumnLayout::new(g, n0, nc, cols.len(), planes.len()), Phases::new(g));
    let out = SharedMut(cols.as_mut_ptr());
    tasks(par, g.c * nc, |task, buf| {
        let (c, j) = l.task(task);
        wide(
            #[inline(always)]
            || {
                ph.split(&planes[l.plane_at(c, j)..][..l.plane], buf);
                for (t, &block) in ph.blocks.iter().enumerate() {
                    // SAFETY: task (c, j) alone writes image j's segments of rows (c, *), inside
                    // `cols` as ColumnLayout::new checked.
                    let dst = unsafe { std::slice::from_raw_parts_mut(out.ptr().add(l.segment_at(c, t, j)), l.p) };
                    block_op(g.ho, g.wo, &buf[block..], ph.cols, dst, g.wo, false);
                }
            },
        );
    });
}

/// `xp[j, c] = planes[n0 + j, c]` inside a zero border of `pad`, so that every window
/// lies inside its padded plane.
fn pad_planes<T: Elem>(g: &Geo, planes: &[T], n0: usize, nc: usize, xp: &mut Vec<T>, par: bool) -> (usize, usize) {
    let (hp, wp) = (g.h + 2 * g.pad, g.w + 2 * g.pad);
    grow(xp, nc * g.c * hp * wp);
    chunks(par, &mut xp[..nc * g.c * hp * wp], hp * wp, |idx, out| {
        let src = &planes[(n0 * g.c + idx) * g.plane()..][..g.plane()];
        out[..g.pad * wp].fill(T::zero());
        out[(g.pad + g.h) * wp..].fill(T::zero());
        for (y, row) in src.chunks_exact(g.w).enumerate() {
            let o = &mut out[(g.pad + y) * wp..(g.pad + y + 1) * wp];
            o[..g.pad].fill(T::zero());
            o[g.pad + g.w..].fill(T::zero());
            o[g.pad..g.pad + g.w].copy_from_slice(row);
        }
    });
    (hp, wp)
}

/// The transpose of `im2col`: `rows[j * P + o, row] = cols[row, j * P + o]`, one
/// contiguous `c * k * k` row per window position. The parameter-gradient GEMM reduces
/// over window positions, and the GEMM runs about twice as fast with that operand
/// row-major as with the column matrix read transposed. Reads the padded planes, where
/// each (channel, kernel row) of a window is `k` consecutive values.
fn im2row<T: Elem>(g: &Geo, planes: &[T], n0: usize, nc: usize, xp: &mut Vec<T>, rows: &mut [T], par: bool) {
    let kd = g.rows();
    if g.is_pointwise() {
        // Each image's `c x plane` stack, transposed.
        let img = g.c * g.plane();
        chunks(par, &mut rows[..nc * img], img, |j, out| transpose(&planes[(n0 + j) * img..][..img], g.c, g.plane(), out, false));
        return;
    }
    let (hp, wp) = pad_planes(g, planes, n0, nc, xp, par);
    let xp = &xp[..];
    chunks(par, &mut rows[..nc * g.cols_per_image() * kd], g.wo * kd, |line, out| {
        let (j, oy) = (line / g.ho, line % g.ho);
        let src = &xp[j * g.c * hp * wp..][..g.c * hp * wp];
        let l = WindowLine { g, src, plane: hp * wp, wp, oy };
        wide(
            #[inline(always)]
            || match g.k {
                // Every strided layer's window: its rows copied as fixed-size arrays, in
                // the SIMD level's code (through `block_op`, outside `wide`, each 4-value
                // copy went through a width match and its own bounds checks).
                4 => l.write::<4>(out),
                _ => l.write_any(out),
            },
        );
    });
}

/// One output row's windows for `im2row`: image `src` (padded planes of `plane` values,
/// rows of `wp`), output row `oy`.
struct WindowLine<'a, T> {
    g: &'a Geo,
    src: &'a [T],
    plane: usize,
    wp: usize,
    oy: usize,
}

impl<T: Elem> WindowLine<'_, T> {
    /// `out[ox * kd + (c, ky, kx)]` = the window's value: `copy(window, dst)` for each
    /// position and channel, with `window` the plane from the window's corner on (rows
    /// `wp` apart) and `dst` its `k * k` values.
    #[inline(always)]
    fn each_window(&self, out: &mut [T], copy: impl Fn(&[T], &mut [T])) {
        let (g, kd) = (self.g, self.g.rows());
        for (ox, dst) in out.chunks_exact_mut(kd).take(g.wo).enumerate() {
            let corner = self.oy * g.stride * self.wp + ox * g.stride;
            for (c, d) in dst.chunks_exact_mut(g.k * g.k).enumerate() {
                copy(&self.src[c * self.plane + corner..], d);
            }
        }
    }

    /// The windows of a `K x K` kernel, each row copied as a fixed-size array.
    #[inline(always)]
    fn write<const K: usize>(&self, out: &mut [T]) {
        debug_assert_eq!(self.g.k, K);
        self.each_window(
            out,
            #[inline(always)]
            |window, d| {
                for ky in 0..K {
                    let v: [T; K] = window[ky * self.wp..][..K].try_into().unwrap();
                    d[ky * K..][..K].copy_from_slice(&v);
                }
            },
        );
    }

    /// `write` for any window size.
    #[inline(always)]
    fn write_any(&self, out: &mut [T]) {
        let k = self.g.k;
        self.each_window(
            out,
            #[inline(always)]
            |window, d| block_op(k, k, window, self.wp, d, k, false),
        );
    }
}

/// The adjoint of `im2col`: `planes[n0 + j] = sum over windows of cols` (written, not
/// accumulated). Each kernel tap's row adds as one block into the plane's phases, which
/// are then interleaved back into the plane. Tasks run image-fastest, so the `k * k` rows
/// a task reads continue where the previous task's ended: sequential streams through the
/// column matrix, not one short segment per row and page.
fn col2im<T: Elem>(g: &Geo, cols: &[T], n0: usize, nc: usize, planes: &mut [T], par: bool) {
    if g.is_pointwise() {
        return scatter(cols, g.c, g.plane(), n0, nc, None, planes, par);
    }
    let (l, ph) = (ColumnLayout::new(g, n0, nc, cols.len(), planes.len()), Phases::new(g));
    let out = SharedMut(planes.as_mut_ptr());
    tasks(par, g.c * nc, |task, buf| {
        let (c, j) = l.task(task);
        // SAFETY: task (c, j) alone writes plane c of image n0 + j, inside `planes` as
        // ColumnLayout::new checked.
        let plane = unsafe { std::slice::from_raw_parts_mut(out.ptr().add(l.plane_at(c, j)), l.plane) };
        wide(
            #[inline(always)]
            || {
                buf.clear();
                buf.resize(ph.len(), T::zero());
                for (t, &block) in ph.blocks.iter().enumerate() {
                    block_op(g.ho, g.wo, &cols[l.segment_at(c, t, j)..][..l.p], g.wo, &mut buf[block..], ph.cols, true);
                }
                ph.merge(buf, plane);
            },
        );
    });
}

/// `m[c, j * hw + q] = t[n0 + j, c, q]`: NCHW images to one channel-major matrix.
fn gather<T: Elem>(t: &[T], channels: usize, hw: usize, n0: usize, nc: usize, m: &mut [T], par: bool) {
    let ld = nc * hw;
    chunks(par, &mut m[..channels * ld], ld, |c, row| {
        for j in 0..nc {
            row[j * hw..(j + 1) * hw].copy_from_slice(&t[((n0 + j) * channels + c) * hw..][..hw]);
        }
    });
}

/// Images `n0..n0 + nc` of `t` as one channel-major `channels x (nc * hw)` matrix: one
/// image already is one, more are gathered into `tmp`.
fn matrix<'a, T: Elem>(t: &'a [T], channels: usize, hw: usize, n0: usize, nc: usize, tmp: &'a mut [T], par: bool) -> &'a [T] {
    if nc == 1 {
        &t[n0 * channels * hw..][..channels * hw]
    } else {
        gather(t, channels, hw, n0, nc, tmp, par);
        tmp
    }
}

/// The inverse of `gather`, adding `bias[c]` when given.
#[allow(clippy::too_many_arguments)]
fn scatter<T: Elem>(m: &[T], channels: usize, hw: usize, n0: usize, nc: usize, bias: Option<&[T]>, t: &mut [T], par: bool) {
    let ld = nc * hw;
    chunks(par, &mut t[n0 * channels * hw..(n0 + nc) * channels * hw], hw, |idx, out| {
        let j = idx / channels;
        let c = idx % channels;
        let src = &m[c * ld + j * hw..][..hw];
        match bias {
            Some(b) => out.iter_mut().zip(src).for_each(|(o, s)| *o = *s + b[c]),
            None => out.copy_from_slice(src),
        }
    });
}

/// Adds `bias[c]` to every value of channel `c` of images `n0..n0 + nc`.
fn add_bias<T: Elem>(t: &mut [T], channels: usize, hw: usize, n0: usize, nc: usize, bias: &[T], par: bool) {
    chunks(par, &mut t[n0 * channels * hw..(n0 + nc) * channels * hw], hw, |idx, out| {
        let b = bias[idx % channels];
        out.iter_mut().for_each(|o| *o += b);
    });
}

/// How the convolution passes divide their work between the threads.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Split {
    /// By the shape (`MIN_IMAGE_COLS`).
    Auto,
    /// Chunks of images, one after the other, around a GEMM that all threads share.
    Chunks,
    /// One range of images per thread, each thread running its own single-threaded GEMMs
    /// on pieces of a few images.
    Images,
}

/// Window positions per image from which `Split::Images` beats `Split::Chunks`.
///
/// In `Images`, each thread's column matrix is written and read in its own core's cache, a
/// piece of one image needs no gather or scatter, and the GEMMs run without a barrier
/// between the threads; in `Chunks`, the column matrix of many images goes to memory and
/// back, read by both cores. But a thread's GEMM packs the weights again for every piece,
/// so small planes, which give a piece few columns for its weights, stay in `Chunks`.
/// Measured per pass at the 64 px models' shapes (batch 64, 2 threads): from 8x8 windows
/// on, every pass gains or breaks even; at 4x4, all lose.
const MIN_IMAGE_COLS: usize = 64;

/// The fewest images per thread for `Split::Images` in `Split::Auto`.
const IMAGES_PER_THREAD: usize = 4;

/// Window positions a piece of `Split::Images` aims for: small planes are grouped a few
/// images to a piece, so the GEMM gets wide enough operands.
const PIECE_COLS: usize = 256;
/// The most column-matrix values a piece of `Split::Images` holds (1 MiB of f32, half
/// the Intel development VM's per-core L2, all of the AMD EPYC's), which caps the grouping.
const PIECE_ELEMS: usize = 1 << 18;

/// Weight gradients from this many values on (8 MiB of f32, eight times a core's L2 on a
/// 1 MiB-L2 CPU) take pieces of `Split::Images` four times as long, in columns and in
/// column-matrix values. Each piece adds its product into the whole gradient, so with a
/// piece of one image's 64 window positions (the 256 -> 512 layer of D, and the 512 -> 256
/// layer of G, at 128 px) the gradient went to memory and back for every 64 steps of the
/// reduction. Measured per pass (`bench --precision bf16 --profile`, 128 px, AMD EPYC,
/// 2 threads): both layers' weight-gradient passes 14 to 24% faster; the same scaling for
/// every weight-gradient pass made the 64 px model's slower (in this split its gradients
/// are 2 MiB at most).
const LARGE_DW: usize = 1 << 21;

/// `dst[c * rows + r] = src[r * cols + c]`: a row-major `rows x cols` matrix transposed.
fn transpose<T: Elem>(src: &[T], rows: usize, cols: usize, dst: &mut [T], par: bool) {
    const B: usize = 32;
    chunks(par, &mut dst[..rows * cols], B * rows, |cb, out| {
        let c0 = cb * B;
        for r0 in (0..rows).step_by(B) {
            for c in c0..(c0 + B).min(cols) {
                for r in r0..(r0 + B).min(rows) {
                    out[(c - c0) * rows + r] = src[r * cols + c];
                }
            }
        }
    });
}

/// One thread's scratch for `Split::Images`.
#[derive(Default)]
pub(super) struct Local<T> {
    cols: Vec<T>,
    tmp: Vec<T>,
    pad: Vec<T>,
    /// This thread's sum of weight gradients.
    dw: Vec<T>,
}

/// One piece of a pass: `nc` images from image `n0` of the inputs, written from image
/// `at` of the output the body is given; `ld = nc` times the window positions per image;
/// scratch for the column matrix (`kdim x ld`), the other GEMM operand (`other x ld`) and
/// the padded planes; `par`: whether the piece's own steps spread over the pool.
struct Piece<'a, T> {
    /// The backend's bf16 GEMM kernel, under `--precision bf16`.
    bf16: Option<Bf16Kernel>,
    n0: usize,
    at: usize,
    nc: usize,
    ld: usize,
    cols: &'a mut [T],
    tmp: &'a mut [T],
    pad: &'a mut Vec<T>,
    par: bool,
}

/// The weights a pass multiplies every piece by, as its GEMMs' left operand.
enum Weights<'a, T> {
    /// None (the weight-gradient passes, whose left operand changes with the piece).
    None,
    /// `other x kdim`, the left operand as it is.
    Rows(&'a [T]),
    /// `other x kdim`, whose transpose (`kdim x other`) is the left operand.
    Transposed(&'a [T]),
}

/// Runs `body(piece, lhs, out, dw)` over the `n` images of a pass, split as `be` says.
/// `lhs` is `weights` as the left operand of the pieces' GEMMs (packed once under bf16),
/// an empty one without weights; `out`
/// is the pass's output (`per_image` values per image), `dw` its weight gradient, into
/// which the pass adds. In `Split::Chunks`, the body sees the whole `out`
/// and `dw`; in `Split::Images`, its thread's range of `out` and a zeroed sum of its own,
/// and the threads' sums are added into `dw` at the end in thread order, so the result
/// does not depend on scheduling.
#[allow(clippy::too_many_arguments)]
fn run_pieces<T: Elem>(
    be: &CpuBackend<T>,
    g: &Geo,
    n: usize,
    other: usize,
    weights: Weights<'_, T>,
    out: &mut [T],
    per_image: usize,
    dw: Option<&mut [T]>,
    body: impl Fn(Piece<'_, T>, &Lhs<'_, T>, &mut [T], &mut [T]) + Sync + Send,
) {
    let (kdim, pp) = (g.rows(), g.cols_per_image());
    let rows = kdim.max(other);
    let threads = rayon::current_num_threads().clamp(1, n.max(1));
    let images = match be.split {
        // Ranges differ by up to one image, and a thread that finishes early waits: a
        // batch of fewer than 4 images per thread keeps the shared GEMM.
        Split::Auto => pp >= MIN_IMAGE_COLS && n >= IMAGES_PER_THREAD * rayon::current_num_threads(),
        Split::Chunks => false,
        Split::Images => true,
    };
    let mut ws = be.ws.lock().unwrap_or_else(|e| e.into_inner());
    let ws = &mut *ws;
    // The GEMM-then-col2im passes read the weights transposed, which the f32 GEMM's
    // packing does more slowly (5 to 9% on one thread for one image of D's 64 -> 128 layer
    // at 64 px: `cargo bench --bench gemm_layout -- gemm_layout_one_thread`), and packs
    // them again for every piece: they are transposed once here, `kdim x other`
    // row-major. A bf16 kernel packs them once instead, transposed or not.
    let lhs = match weights {
        Weights::None => Lhs::new(None, 0, 0, &[], 0, 0),
        Weights::Rows(w) => Lhs::new(be.bf16, other, kdim, w, kdim as isize, 1),
        Weights::Transposed(w) => match Lhs::new(be.bf16, kdim, other, w, 1, kdim as isize) {
            packed if packed.is_packed() => packed,
            _ => {
                grow(&mut ws.wt, other * kdim);
                transpose(&w[..other * kdim], other, kdim, &mut ws.wt, true);
                Lhs::new(be.bf16, kdim, other, &ws.wt[..other * kdim], other as isize, 1)
            }
        },
    };
    if !images {
        let nc_max = chunk_images(n, rows, pp, be.chunk_elems);
        grow(&mut ws.cols, kdim * nc_max * pp);
        grow(&mut ws.tmp, other * nc_max * pp);
        let dw = dw.unwrap_or_default();
        for n0 in (0..n).step_by(nc_max) {
            let nc = nc_max.min(n - n0);
            body(Piece { bf16: be.bf16, n0, at: n0, nc, ld: nc * pp, cols: &mut ws.cols, tmp: &mut ws.tmp, pad: &mut ws.pad, par: true }, &lhs, out, dw);
        }
        return;
    }
    let dw_len = dw.as_ref().map_or(0, |d| d.len());
    // A large weight gradient is read and written once per piece: pieces four times as
    // long amortise that over four times the reduction (see LARGE_DW).
    let scale = if dw_len >= LARGE_DW { 4 } else { 1 };
    let nb = (scale * PIECE_COLS / pp.max(1)).min(scale * PIECE_ELEMS / (rows * pp).max(1)).max(1);
    let locals = &mut ws.local;
    locals.resize_with(locals.len().max(threads), Local::default);
    let mut parts = Vec::with_capacity(threads);
    let mut rest = &mut out[..n * per_image];
    for t in 0..threads {
        let range = n * t / threads..n * (t + 1) / threads;
        let (part, tail) = std::mem::take(&mut rest).split_at_mut(range.len() * per_image);
        rest = tail;
        parts.push((range, part));
    }
    locals[..threads].par_iter_mut().zip(parts).for_each(|(l, (range, part))| {
        grow(&mut l.cols, kdim * nb * pp);
        grow(&mut l.tmp, other * nb * pp);
        grow(&mut l.dw, dw_len);
        l.dw[..dw_len].fill(T::zero());
        for n0 in range.clone().step_by(nb) {
            let nc = nb.min(range.end - n0);
            body(
                Piece { bf16: be.bf16, n0, at: n0 - range.start, nc, ld: nc * pp, cols: &mut l.cols, tmp: &mut l.tmp, pad: &mut l.pad, par: false },
                &lhs,
                part,
                &mut l.dw[..dw_len],
            );
        }
    });
    if let Some(dw) = dw {
        let locals = &locals[..threads];
        dw.par_chunks_mut(1 << 12).enumerate().for_each(|(i, d)| {
            for l in locals {
                d.iter_mut().zip(&l.dw[i << 12..]).for_each(|(d, s)| *d += *s);
            }
        });
    }
}

/// im2col, then the GEMM, on one piece (conv2d forward, conv_transpose2d backward_input): `out[m, ld] = w[m, kdim] . cols[kdim, ld]` with
/// `cols = im2col(src)`, written to the piece's images of `out` (`m` planes each), plus
/// `bias[c]` on plane `c` when given.
fn gather_piece<T: Elem>(g: &Geo, pc: Piece<'_, T>, src: &[T], w: &Lhs<'_, T>, m: usize, out: &mut [T], bias: Option<&[T]>) {
    let Piece { n0, at, nc, ld, cols, tmp, par, .. } = pc;
    let pp = g.cols_per_image();
    im2col(g, src, n0, nc, cols, par);
    if nc == 1 {
        // One image's product is already its planes.
        matmul_lhs(par, pp, &mut out[at * m * pp..][..m * pp], pp, false, w, cols, pp as isize, 1);
        if let Some(b) = bias {
            add_bias(out, m, pp, at, 1, b, par);
        }
    } else {
        matmul_lhs(par, ld, tmp, ld, false, w, cols, ld as isize, 1);
        scatter(tmp, m, pp, at, nc, bias, out, par);
    }
}

/// The GEMM, then col2im, on one piece (conv2d backward_input, conv_transpose2d forward): `cols[kdim, ld] = wt[kdim, m] . src[m, ld]` (`wt` the
/// weights transposed by `run_pieces`, `src` the piece's images), then `col2im` into the
/// piece's images of `out`, plus `bias[c]` on plane `c` when given.
fn spread_piece<T: Elem>(g: &Geo, pc: Piece<'_, T>, src: &[T], wt: &Lhs<'_, T>, m: usize, out: &mut [T], bias: Option<&[T]>) {
    let Piece { n0, at, nc, ld, cols, tmp, par, .. } = pc;
    let srcm = matrix(src, m, g.cols_per_image(), n0, nc, tmp, par);
    matmul_lhs(par, ld, cols, ld, false, wt, srcm, ld as isize, 1);
    col2im(g, cols, at, nc, out, par);
    if let Some(b) = bias {
        add_bias(out, g.c, g.plane(), at, nc, b, par);
    }
}

/// im2row, then the GEMM into the weight gradient, on one piece (both backward_params): `dw[m, kdim] += other[m, ld] . rows[ld, kdim]` with
/// `rows = im2row(planes)` and `other` the piece's images of an `m`-channel tensor.
fn params_piece<T: Elem>(g: &Geo, pc: Piece<'_, T>, planes: &[T], other: &[T], m: usize, dw: &mut [T]) {
    let Piece { bf16, n0, nc, ld, cols, tmp, pad, par, .. } = pc;
    let kdim = g.rows();
    im2row(g, planes, n0, nc, pad, cols, par);
    let om = matrix(other, m, g.cols_per_image(), n0, nc, tmp, par);
    matmul_on(bf16, par, m, kdim, ld, dw, kdim, true, om, ld as isize, 1, cols, kdim as isize, 1);
}

fn conv2d_forward<T: Elem>(be: &CpuBackend<T>, p: &ConvParams, x: &[T], w: &[T], bias: Option<&[T]>, y: &mut [T]) {
    let g = Geo::conv2d(p);
    let (co, kdim, pp) = (p.c_out as usize, g.rows(), g.cols_per_image());
    if g.is_dense() {
        // y[n, co] = x[n, kdim] . w^T[kdim, co]
        let n = p.n as usize;
        matmul(be.bf16, n, co, kdim, y, co, false, x, kdim as isize, 1, w, 1, kdim as isize);
        if let Some(b) = bias {
            add_bias(y, co, 1, 0, n, b, true);
        }
        return;
    }
    // y[co, ld] = w[co, kdim] . cols[kdim, ld]
    run_pieces(be, &g, p.n as usize, co, Weights::Rows(w), y, co * pp, None, |pc, w, y, _| gather_piece(&g, pc, x, w, co, y, bias));
}

fn conv2d_backward_input<T: Elem>(be: &CpuBackend<T>, p: &ConvParams, dy: &[T], w: &[T], dx: &mut [T]) {
    let g = Geo::conv2d(p);
    let (co, kdim) = (p.c_out as usize, g.rows());
    if g.is_dense() {
        // dx[n, kdim] = dy[n, co] . w[co, kdim]
        matmul(be.bf16, p.n as usize, kdim, co, dx, kdim, false, dy, co as isize, 1, w, kdim as isize, 1);
        return;
    }
    // cols[kdim, ld] = w^T[kdim, co] . dy[co, ld]
    run_pieces(be, &g, p.n as usize, co, Weights::Transposed(w), dx, g.c * g.plane(), None, |pc, wt, dx, _| spread_piece(&g, pc, dy, wt, co, dx, None));
}

fn conv2d_backward_params<T: Elem>(be: &CpuBackend<T>, p: &ConvParams, x: &[T], dy: &[T], dw: &mut [T]) {
    let g = Geo::conv2d(p);
    let (co, kdim) = (p.c_out as usize, g.rows());
    if g.is_dense() {
        // dw[co, kdim] += dy^T[co, n] . x[n, kdim]
        matmul(be.bf16, co, kdim, p.n as usize, dw, kdim, true, dy, 1, co as isize, x, kdim as isize, 1);
        return;
    }
    // dw[co, kdim] += dy[co, ld] . rows[ld, kdim]
    run_pieces(be, &g, p.n as usize, co, Weights::None, &mut [], 0, Some(dw), |pc, _, _, dw| params_piece(&g, pc, x, dy, co, dw));
}

fn conv_transpose2d_forward<T: Elem>(be: &CpuBackend<T>, p: &ConvParams, x: &[T], w: &[T], bias: Option<&[T]>, y: &mut [T]) {
    let g = Geo::conv_transpose2d(p);
    let (ci, kdim) = (p.c_in as usize, g.rows());
    if g.is_dense() {
        // y[n, kdim] = x[n, ci] . w[ci, kdim]
        let n = p.n as usize;
        matmul(be.bf16, n, kdim, ci, y, kdim, false, x, ci as isize, 1, w, kdim as isize, 1);
        if let Some(b) = bias {
            add_bias(y, g.c, g.plane(), 0, n, b, true);
        }
        return;
    }
    // cols[kdim, ld] = w^T[kdim, ci] . x[ci, ld]   (w is [ci, kdim])
    run_pieces(be, &g, p.n as usize, ci, Weights::Transposed(w), y, g.c * g.plane(), None, |pc, wt, y, _| spread_piece(&g, pc, x, wt, ci, y, bias));
}

fn conv_transpose2d_backward_input<T: Elem>(be: &CpuBackend<T>, p: &ConvParams, dy: &[T], w: &[T], dx: &mut [T]) {
    let g = Geo::conv_transpose2d(p);
    let (ci, kdim, pp) = (p.c_in as usize, g.rows(), g.cols_per_image());
    if g.is_dense() {
        // dx[n, ci] = dy[n, kdim] . w^T[kdim, ci]
        matmul(be.bf16, p.n as usize, ci, kdim, dx, ci, false, dy, kdim as isize, 1, w, 1, kdim as isize);
        return;
    }
    // dx[ci, ld] = w[ci, kdim] . cols[kdim, ld]
    run_pieces(be, &g, p.n as usize, ci, Weights::Rows(w), dx, ci * pp, None, |pc, w, dx, _| gather_piece(&g, pc, dy, w, ci, dx, None));
}

fn conv_transpose2d_backward_params<T: Elem>(be: &CpuBackend<T>, p: &ConvParams, x: &[T], dy: &[T], dw: &mut [T]) {
    let g = Geo::conv_transpose2d(p);
    let (ci, kdim) = (p.c_in as usize, g.rows());
    if g.is_dense() {
        // dw[ci, kdim] += x^T[ci, n] . dy[n, kdim]
        matmul(be.bf16, ci, kdim, p.n as usize, dw, kdim, true, x, 1, ci as isize, dy, kdim as isize, 1);
        return;
    }
    // dw[ci, kdim] += x[ci, ld] . rows[ld, kdim]
    run_pieces(be, &g, p.n as usize, ci, Weights::None, &mut [], 0, Some(dw), |pc, _, _, dw| params_piece(&g, pc, dy, x, ci, dw));
}
