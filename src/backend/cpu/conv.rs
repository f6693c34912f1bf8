//! conv2d and conv_transpose2d on the CPU: im2col / col2im around one GEMM per chunk of
//! images. Chunking keeps the column matrix under the workspace bound while giving the
//! GEMM wide operands even for the 4x4 layers (where one image has only 16 columns).

use super::gemm::matmul;
use super::simd::wide;
use super::{CpuBackend, Elem, SharedMut};
use crate::backend::ConvParams;
use rayon::prelude::*;

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
        Geo { c: p.c_in as usize, h: p.h_in as usize, w: p.w_in as usize, k: p.k as usize, stride: p.stride as usize, pad: p.pad as usize, ho: p.h_out as usize, wo: p.w_out as usize }
    }
    fn conv_transpose2d(p: &ConvParams) -> Geo {
        Geo { c: p.c_out as usize, h: p.h_out as usize, w: p.w_out as usize, k: p.k as usize, stride: p.stride as usize, pad: p.pad as usize, ho: p.h_in as usize, wo: p.w_in as usize }
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
}

impl Phases {
    fn new(g: &Geo) -> Phases {
        let y = Axis { size: g.h, outs: g.ho, k: g.k, s: g.stride, pad: g.pad };
        let x = Axis { size: g.w, outs: g.wo, k: g.k, s: g.stride, pad: g.pad };
        let mut ph = Phases { y, x, rows: y.len(), cols: x.len(), blocks: Vec::new(), runs: Vec::new() };
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
    /// `buf` = the plane's phases, with zero halos.
    fn split<T: Elem>(&self, plane: &[T], buf: &mut Vec<T>) {
        buf.clear();
        buf.resize(self.len(), T::zero());
        let s = self.x.s;
        for &(b, p, n) in &self.runs {
            for (d, v) in buf[b..b + n].iter_mut().zip(plane[p..].iter().step_by(s)) {
                *d = *v;
            }
        }
    }
    /// `plane` = the values the phases hold; coordinates no window reads are zero.
    fn merge<T: Elem>(&self, buf: &[T], plane: &mut [T]) {
        plane.fill(T::zero());
        let s = self.x.s;
        for &(b, p, n) in &self.runs {
            for (d, v) in plane[p..].iter_mut().step_by(s).zip(&buf[b..b + n]) {
                *d = *v;
            }
        }
    }
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
                for i in 0..W {
                    d[i] += s[i];
                }
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
fn im2col<T: Elem>(g: &Geo, planes: &[T], n0: usize, nc: usize, cols: &mut [T]) {
    let (l, ph) = (ColumnLayout::new(g, n0, nc, cols.len(), planes.len()), Phases::new(g));
    let out = SharedMut(cols.as_mut_ptr());
    (0..g.c * nc).into_par_iter().for_each_init(Vec::new, |buf, task| {
        let (c, j) = l.task(task);
        wide(#[inline(always)] || {
            ph.split(&planes[l.plane_at(c, j)..][..l.plane], buf);
            for (t, &block) in ph.blocks.iter().enumerate() {
                // SAFETY: task (c, j) alone writes image j's segments of rows (c, *), inside
                // `cols` as ColumnLayout::new checked.
                let dst = unsafe { std::slice::from_raw_parts_mut(out.ptr().add(l.segment_at(c, t, j)), l.p) };
                block_op(g.ho, g.wo, &buf[block..], ph.cols, dst, g.wo, false);
            }
        });
    });
}

/// `xp[j, c] = planes[n0 + j, c]` inside a zero border of `pad`, so that every window
/// lies inside its padded plane.
fn pad_planes<T: Elem>(g: &Geo, planes: &[T], n0: usize, nc: usize, xp: &mut Vec<T>) -> (usize, usize) {
    let (hp, wp) = (g.h + 2 * g.pad, g.w + 2 * g.pad);
    grow(xp, nc * g.c * hp * wp);
    xp[..nc * g.c * hp * wp].par_chunks_mut(hp * wp).enumerate().for_each(|(idx, out)| {
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
fn im2row<T: Elem>(g: &Geo, planes: &[T], n0: usize, nc: usize, xp: &mut Vec<T>, rows: &mut [T]) {
    let kd = g.rows();
    let (hp, wp) = pad_planes(g, planes, n0, nc, xp);
    let xp = &xp[..];
    rows[..nc * g.cols_per_image() * kd].par_chunks_mut(g.wo * kd).enumerate().for_each(|(line, out)| {
        let (j, oy) = (line / g.ho, line % g.ho);
        let src = &xp[j * g.c * hp * wp..][..g.c * hp * wp];
        for ox in 0..g.wo {
            let dst = &mut out[ox * kd..(ox + 1) * kd];
            let corner = oy * g.stride * wp + ox * g.stride;
            for c in 0..g.c {
                // The window's k rows of channel c: k x k values, row stride wp.
                block_op(g.k, g.k, &src[c * hp * wp + corner..], wp, &mut dst[c * g.k * g.k..], g.k, false);
            }
        }
    });
}

/// The adjoint of `im2col`: `planes[n0 + j] = sum over windows of cols` (written, not
/// accumulated). Each kernel tap's row adds as one block into the plane's phases, which
/// are then interleaved back into the plane. Tasks run image-fastest, so the `k * k` rows
/// a task reads continue where the previous task's ended: sequential streams through the
/// column matrix, not one short segment per row and page.
fn col2im<T: Elem>(g: &Geo, cols: &[T], n0: usize, nc: usize, planes: &mut [T]) {
    let (l, ph) = (ColumnLayout::new(g, n0, nc, cols.len(), planes.len()), Phases::new(g));
    let out = SharedMut(planes.as_mut_ptr());
    (0..g.c * nc).into_par_iter().for_each_init(Vec::new, |buf, task| {
        let (c, j) = l.task(task);
        // SAFETY: task (c, j) alone writes plane c of image n0 + j, inside `planes` as
        // ColumnLayout::new checked.
        let plane = unsafe { std::slice::from_raw_parts_mut(out.ptr().add(l.plane_at(c, j)), l.plane) };
        wide(#[inline(always)] || {
            buf.clear();
            buf.resize(ph.len(), T::zero());
            for (t, &block) in ph.blocks.iter().enumerate() {
                block_op(g.ho, g.wo, &cols[l.segment_at(c, t, j)..][..l.p], g.wo, &mut buf[block..], ph.cols, true);
            }
            ph.merge(buf, plane);
        });
    });
}

/// `m[c, j * hw + q] = t[n0 + j, c, q]`: NCHW images to one channel-major matrix.
fn gather<T: Elem>(t: &[T], channels: usize, hw: usize, n0: usize, nc: usize, m: &mut [T]) {
    let ld = nc * hw;
    m[..channels * ld].par_chunks_mut(ld).enumerate().for_each(|(c, row)| {
        for j in 0..nc {
            row[j * hw..(j + 1) * hw].copy_from_slice(&t[((n0 + j) * channels + c) * hw..][..hw]);
        }
    });
}

/// The inverse of `gather`, adding `bias[c]` when given.
fn scatter<T: Elem>(m: &[T], channels: usize, hw: usize, n0: usize, nc: usize, bias: Option<&[T]>, t: &mut [T]) {
    let ld = nc * hw;
    t[n0 * channels * hw..(n0 + nc) * channels * hw].par_chunks_mut(hw).enumerate().for_each(|(idx, out)| {
        let j = idx / channels;
        let c = idx % channels;
        let src = &m[c * ld + j * hw..][..hw];
        match bias {
            Some(b) => out.iter_mut().zip(src).for_each(|(o, s)| *o = *s + b[c]),
            None => out.copy_from_slice(src),
        }
    });
}

/// Adds `bias[c]` to every value of channel `c`.
fn add_bias<T: Elem>(t: &mut [T], channels: usize, hw: usize, n0: usize, nc: usize, bias: &[T]) {
    t[n0 * channels * hw..(n0 + nc) * channels * hw].par_chunks_mut(hw).enumerate().for_each(|(idx, out)| {
        let b = bias[idx % channels];
        out.iter_mut().for_each(|o| *o += b);
    });
}

/// Runs `body(n0, nc, ld, cols, tmp, pad)` over chunks of `nc` images starting at `n0`, with
/// the workspace's column matrix sized `g.rows() x ld` and a second matrix `other x ld`,
/// where `ld = nc * columns per image`, and the padded-plane scratch of `im2row`.
fn for_each_chunk<T: Elem>(be: &CpuBackend<T>, g: &Geo, n: usize, other: usize, mut body: impl FnMut(usize, usize, usize, &mut [T], &mut [T], &mut Vec<T>)) {
    let (kdim, pp) = (g.rows(), g.cols_per_image());
    let nc_max = chunk_images(n, kdim.max(other), pp, be.chunk_elems);
    let mut ws = be.ws.lock().unwrap_or_else(|e| e.into_inner());
    let ws = &mut *ws;
    grow(&mut ws.cols, kdim * nc_max * pp);
    grow(&mut ws.tmp, other * nc_max * pp);
    for n0 in (0..n).step_by(nc_max) {
        let nc = nc_max.min(n - n0);
        body(n0, nc, nc * pp, &mut ws.cols, &mut ws.tmp, &mut ws.pad);
    }
}

pub fn conv2d_forward<T: Elem>(be: &CpuBackend<T>, p: &ConvParams, x: &[T], w: &[T], bias: Option<&[T]>, y: &mut [T]) {
    let g = Geo::conv2d(p);
    let (co, kdim, pp) = (p.c_out as usize, g.rows(), g.cols_per_image());
    if g.is_dense() {
        // y[n, co] = x[n, kdim] . w^T[kdim, co]
        let n = p.n as usize;
        matmul(n, co, kdim, y, co, false, x, kdim as isize, 1, w, 1, kdim as isize);
        if let Some(b) = bias {
            add_bias(y, co, 1, 0, n, b);
        }
        return;
    }
    for_each_chunk(be, &g, p.n as usize, co, |n0, nc, ld, cols, tmp, _| {
        im2col(&g, x, n0, nc, cols);
        matmul(co, ld, kdim, tmp, ld, false, w, kdim as isize, 1, cols, ld as isize, 1);
        scatter(tmp, co, pp, n0, nc, bias, y);
    });
}

pub fn conv2d_backward_input<T: Elem>(be: &CpuBackend<T>, p: &ConvParams, dy: &[T], w: &[T], dx: &mut [T]) {
    let g = Geo::conv2d(p);
    let (co, kdim, pp) = (p.c_out as usize, g.rows(), g.cols_per_image());
    if g.is_dense() {
        // dx[n, kdim] = dy[n, co] . w[co, kdim]
        matmul(p.n as usize, kdim, co, dx, kdim, false, dy, co as isize, 1, w, kdim as isize, 1);
        return;
    }
    for_each_chunk(be, &g, p.n as usize, co, |n0, nc, ld, cols, tmp, _| {
        gather(dy, co, pp, n0, nc, tmp);
        // cols[kdim, ld] = w^T[kdim, co] . dy[co, ld]
        matmul(kdim, ld, co, cols, ld, false, w, 1, kdim as isize, tmp, ld as isize, 1);
        col2im(&g, cols, n0, nc, dx);
    });
}

pub fn conv2d_backward_params<T: Elem>(be: &CpuBackend<T>, p: &ConvParams, x: &[T], dy: &[T], dw: &mut [T]) {
    let g = Geo::conv2d(p);
    let (co, kdim, pp) = (p.c_out as usize, g.rows(), g.cols_per_image());
    if g.is_dense() {
        // dw[co, kdim] += dy^T[co, n] . x[n, kdim]
        matmul(co, kdim, p.n as usize, dw, kdim, true, dy, 1, co as isize, x, kdim as isize, 1);
        return;
    }
    for_each_chunk(be, &g, p.n as usize, co, |n0, nc, ld, cols, tmp, pad| {
        im2row(&g, x, n0, nc, pad, cols);
        gather(dy, co, pp, n0, nc, tmp);
        // dw[co, kdim] += dy[co, ld] . rows[ld, kdim]
        matmul(co, kdim, ld, dw, kdim, true, tmp, ld as isize, 1, cols, kdim as isize, 1);
    });
}

pub fn conv_transpose2d_forward<T: Elem>(be: &CpuBackend<T>, p: &ConvParams, x: &[T], w: &[T], bias: Option<&[T]>, y: &mut [T]) {
    let g = Geo::conv_transpose2d(p);
    let (ci, kdim, pp) = (p.c_in as usize, g.rows(), g.cols_per_image());
    if g.is_dense() {
        // y[n, kdim] = x[n, ci] . w[ci, kdim]
        let n = p.n as usize;
        matmul(n, kdim, ci, y, kdim, false, x, ci as isize, 1, w, kdim as isize, 1);
        if let Some(b) = bias {
            add_bias(y, g.c, g.plane(), 0, n, b);
        }
        return;
    }
    for_each_chunk(be, &g, p.n as usize, ci, |n0, nc, ld, cols, tmp, _| {
        gather(x, ci, pp, n0, nc, tmp);
        // cols[kdim, ld] = w^T[kdim, ci] . x[ci, ld]   (w is [ci, kdim])
        matmul(kdim, ld, ci, cols, ld, false, w, 1, kdim as isize, tmp, ld as isize, 1);
        col2im(&g, cols, n0, nc, y);
        if let Some(b) = bias {
            add_bias(y, g.c, g.plane(), n0, nc, b);
        }
    });
}

pub fn conv_transpose2d_backward_input<T: Elem>(be: &CpuBackend<T>, p: &ConvParams, dy: &[T], w: &[T], dx: &mut [T]) {
    let g = Geo::conv_transpose2d(p);
    let (ci, kdim, pp) = (p.c_in as usize, g.rows(), g.cols_per_image());
    if g.is_dense() {
        // dx[n, ci] = dy[n, kdim] . w^T[kdim, ci]
        matmul(p.n as usize, ci, kdim, dx, ci, false, dy, kdim as isize, 1, w, 1, kdim as isize);
        return;
    }
    for_each_chunk(be, &g, p.n as usize, ci, |n0, nc, ld, cols, tmp, _| {
        im2col(&g, dy, n0, nc, cols);
        // dx[ci, ld] = w[ci, kdim] . cols[kdim, ld]
        matmul(ci, ld, kdim, tmp, ld, false, w, kdim as isize, 1, cols, ld as isize, 1);
        scatter(tmp, ci, pp, n0, nc, None, dx);
    });
}

pub fn conv_transpose2d_backward_params<T: Elem>(be: &CpuBackend<T>, p: &ConvParams, x: &[T], dy: &[T], dw: &mut [T]) {
    let g = Geo::conv_transpose2d(p);
    let (ci, kdim, pp) = (p.c_in as usize, g.rows(), g.cols_per_image());
    if g.is_dense() {
        // dw[ci, kdim] += x^T[ci, n] . dy[n, kdim]
        matmul(ci, kdim, p.n as usize, dw, kdim, true, x, 1, ci as isize, dy, kdim as isize, 1);
        return;
    }
    for_each_chunk(be, &g, p.n as usize, ci, |n0, nc, ld, cols, tmp, pad| {
        gather(x, ci, pp, n0, nc, tmp);
        im2row(&g, dy, n0, nc, pad, cols);
        // dw[ci, kdim] += x[ci, ld] . rows[ld, kdim]
        matmul(ci, kdim, ld, dw, kdim, true, tmp, ld as isize, 1, cols, kdim as isize, 1);
    });
}
