//! conv2d and conv_transpose2d on the CPU: im2col / col2im around one GEMM per chunk of
//! images. Chunking keeps the column matrix under the workspace bound while giving the
//! GEMM wide operands even for the 4x4 layers (where one image has only 16 columns).

use super::gemm::matmul;
use super::{CpuBackend, Elem};
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
    /// Input coordinate of window position `o` at kernel offset `kk`, if inside the plane.
    #[inline(always)]
    fn src(&self, o: usize, kk: usize, size: usize) -> Option<usize> {
        let v = (o * self.stride + kk) as isize - self.pad as isize;
        (v >= 0 && (v as usize) < size).then_some(v as usize)
    }
    /// The window positions `lo..hi` (of `outs`) whose input coordinate at kernel offset
    /// `kk` lies inside `0..size`, so the inner loops run without bounds branches.
    #[inline(always)]
    fn valid_range(&self, kk: usize, size: usize, outs: usize) -> (usize, usize) {
        let (s, off) = (self.stride as isize, kk as isize - self.pad as isize);
        // o * s + off >= 0  and  o * s + off <= size - 1
        let lo = if off >= 0 { 0 } else { ((-off) + s - 1) / s };
        let hi = if (size as isize - 1 - off) < 0 { 0 } else { (size as isize - 1 - off) / s + 1 };
        let (lo, hi) = (lo.max(0) as usize, (hi.max(0) as usize).min(outs));
        (lo.min(hi), hi)
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

/// `cols[row, j * P + o] = planes[n0 + j][c, window(o) + (ky, kx)]`, for `row = (c, ky, kx)`.
fn im2col<T: Elem>(g: &Geo, planes: &[T], n0: usize, nc: usize, cols: &mut [T]) {
    let p = g.cols_per_image();
    let ld = nc * p;
    let img = g.c * g.plane();
    cols[..g.rows() * ld].par_chunks_mut(ld).enumerate().for_each(|(row, out)| {
        let c = row / (g.k * g.k);
        let ky = (row / g.k) % g.k;
        let kx = row % g.k;
        for j in 0..nc {
            let src = &planes[(n0 + j) * img + c * g.plane()..][..g.plane()];
            let dst = &mut out[j * p..(j + 1) * p];
            let (lo, hi) = g.valid_range(kx, g.w, g.wo);
            let base = (lo * g.stride + kx) as isize - g.pad as isize;
            for oy in 0..g.ho {
                let line = &mut dst[oy * g.wo..(oy + 1) * g.wo];
                match g.src(oy, ky, g.h) {
                    None => line.fill(T::zero()),
                    Some(iy) => {
                        line[..lo].fill(T::zero());
                        line[hi..].fill(T::zero());
                        if hi > lo {
                            let srow = &src[iy * g.w..(iy + 1) * g.w];
                            let start = base as usize;
                            if g.stride == 1 {
                                line[lo..hi].copy_from_slice(&srow[start..start + (hi - lo)]);
                            } else {
                                for (v, s) in line[lo..hi].iter_mut().zip(srow[start..].iter().step_by(g.stride)) {
                                    *v = *s;
                                }
                            }
                        }
                    }
                }
            }
        }
    });
}

/// The transpose of `im2col`: `rows[j * P + o, row] = cols[row, j * P + o]`, one
/// contiguous `c * k * k` row per window position. The parameter-gradient GEMM reduces
/// over window positions, and the GEMM runs about twice as fast with that operand
/// row-major as with the column matrix read transposed.
fn im2row<T: Elem>(g: &Geo, planes: &[T], n0: usize, nc: usize, rows: &mut [T]) {
    let kd = g.rows();
    let img = g.c * g.plane();
    rows[..nc * g.cols_per_image() * kd].par_chunks_mut(g.wo * kd).enumerate().for_each(|(line, out)| {
        let (j, oy) = (line / g.ho, line % g.ho);
        let src = &planes[(n0 + j) * img..][..img];
        for ox in 0..g.wo {
            let dst = &mut out[ox * kd..(ox + 1) * kd];
            let ix0 = (ox * g.stride) as isize - g.pad as isize;
            let inside = ix0 >= 0 && ix0 as usize + g.k <= g.w;
            for ky in 0..g.k {
                let iy = g.src(oy, ky, g.h);
                for c in 0..g.c {
                    let d = &mut dst[(c * g.k + ky) * g.k..][..g.k];
                    match iy {
                        None => d.fill(T::zero()),
                        Some(iy) => {
                            let srow = &src[c * g.plane() + iy * g.w..][..g.w];
                            if inside {
                                d.copy_from_slice(&srow[ix0 as usize..ix0 as usize + g.k]);
                            } else {
                                for (kx, v) in d.iter_mut().enumerate() {
                                    *v = g.src(ox, kx, g.w).map_or(T::zero(), |ix| srow[ix]);
                                }
                            }
                        }
                    }
                }
            }
        }
    });
}

/// The adjoint of `im2col`: `planes[n0 + j] = sum over windows of cols` (written, not
/// accumulated, so each plane is zeroed first).
fn col2im<T: Elem>(g: &Geo, cols: &[T], n0: usize, nc: usize, planes: &mut [T]) {
    let p = g.cols_per_image();
    let ld = nc * p;
    let img = g.c * g.plane();
    let kk2 = g.k * g.k;
    planes[n0 * img..(n0 + nc) * img].par_chunks_mut(g.plane()).enumerate().for_each(|(idx, plane)| {
        let j = idx / g.c;
        let c = idx % g.c;
        plane.iter_mut().for_each(|v| *v = T::zero());
        for ky in 0..g.k {
            for kx in 0..g.k {
                let row = &cols[(c * kk2 + ky * g.k + kx) * ld + j * p..][..p];
                let (lo, hi) = g.valid_range(kx, g.w, g.wo);
                if hi <= lo {
                    continue;
                }
                let start = ((lo * g.stride + kx) as isize - g.pad as isize) as usize;
                for oy in 0..g.ho {
                    let Some(iy) = g.src(oy, ky, g.h) else { continue };
                    let prow = &mut plane[iy * g.w + start..(iy + 1) * g.w];
                    let crow = &row[oy * g.wo + lo..oy * g.wo + hi];
                    if g.stride == 1 {
                        prow.iter_mut().zip(crow).for_each(|(p, v)| *p += *v);
                    } else {
                        prow.iter_mut().step_by(g.stride).zip(crow).for_each(|(p, v)| *p += *v);
                    }
                }
            }
        }
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

/// Runs `body(n0, nc, ld, cols, tmp)` over chunks of `nc` images starting at `n0`, with
/// the workspace's column matrix sized `g.rows() x ld` and a second matrix `other x ld`,
/// where `ld = nc * columns per image`.
fn for_each_chunk<T: Elem>(be: &CpuBackend<T>, g: &Geo, n: usize, other: usize, mut body: impl FnMut(usize, usize, usize, &mut [T], &mut [T])) {
    let (kdim, pp) = (g.rows(), g.cols_per_image());
    let nc_max = chunk_images(n, kdim.max(other), pp, be.chunk_elems);
    let mut ws = be.ws.lock().unwrap_or_else(|e| e.into_inner());
    let ws = &mut *ws;
    grow(&mut ws.cols, kdim * nc_max * pp);
    grow(&mut ws.tmp, other * nc_max * pp);
    for n0 in (0..n).step_by(nc_max) {
        let nc = nc_max.min(n - n0);
        body(n0, nc, nc * pp, &mut ws.cols, &mut ws.tmp);
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
    for_each_chunk(be, &g, p.n as usize, co, |n0, nc, ld, cols, tmp| {
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
    for_each_chunk(be, &g, p.n as usize, co, |n0, nc, ld, cols, tmp| {
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
    for_each_chunk(be, &g, p.n as usize, co, |n0, nc, ld, cols, tmp| {
        im2row(&g, x, n0, nc, cols);
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
    for_each_chunk(be, &g, p.n as usize, ci, |n0, nc, ld, cols, tmp| {
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
    for_each_chunk(be, &g, p.n as usize, ci, |n0, nc, ld, cols, tmp| {
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
    for_each_chunk(be, &g, p.n as usize, ci, |n0, nc, ld, cols, tmp| {
        gather(x, ci, pp, n0, nc, tmp);
        im2row(&g, dy, n0, nc, cols);
        // dw[ci, kdim] += x[ci, ld] . rows[ld, kdim]
        matmul(ci, kdim, ld, dw, kdim, true, tmp, ld as isize, 1, cols, kdim as isize, 1);
    });
}
