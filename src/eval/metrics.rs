//! The figures of `gan-engine eval`, each small enough to read against its definition:
//! - SWD, the ProGAN procedure (Karras et al. 2018): a Laplacian pyramid of each image down to
//!   16 px, 7x7 neighbourhoods at random places of every level, normalised per channel and
//!   set, and the sliced Wasserstein distance between the two sets of descriptors along
//!   random directions; per level and averaged, times 1e3;
//! - FD: the Fréchet distance of two Gaussians fitted to two sets of features (the matrix
//!   square root through symmetric eigendecompositions, nalgebra);
//! - KID: the unbiased squared MMD with the cubic polynomial kernel `(x.y / d + 1)^3`,
//!   averaged over subsets;
//! - precision and recall on k-nearest-neighbour manifolds (Kynkäänniemi et al. 2019, k = 3);
//! - diversity: the mean feature distance between members of a group.

use crate::rng::Rng;
use nalgebra::{DMatrix, DVector, SymmetricEigen};
use rayon::prelude::*;

/// ProGAN's SWD settings.
pub const SWD_PATCH: usize = 7;
pub const SWD_PER_IMAGE: usize = 128;
pub const SWD_DIRS: usize = 128;
pub const SWD_REPEATS: usize = 4;
/// Descriptors per set and level at most: ProGAN's 128 per image up to 1,024 images, fewer
/// per image beyond (bounds memory and time; each image still gives one).
pub const SWD_MAX_DESCRIPTORS: usize = 1 << 17;
/// The smallest pyramid level.
pub const SWD_MIN_SIZE: usize = 16;
/// Subset size of KID (the usual 1,000) and subsets when the sets are larger.
pub const KID_SUBSET: usize = 1000;
pub const KID_SUBSETS: usize = 10;
/// Neighbours of the precision / recall manifolds.
pub const PR_K: usize = 3;

/// Pyramid levels from `size` down to 16 px (at least one level).
pub fn swd_levels(size: usize) -> Vec<usize> {
    let mut v = vec![size];
    while *v.last().unwrap_or(&0) / 2 >= SWD_MIN_SIZE {
        let s = v[v.len() - 1] / 2;
        v.push(s);
    }
    v
}

const GAUSS: [f32; 5] = [1.0 / 16.0, 4.0 / 16.0, 6.0 / 16.0, 4.0 / 16.0, 1.0 / 16.0];

/// Index into a plane of side `n` with mirror edges (scipy's `mode='mirror'`).
fn mirror(i: isize, n: usize) -> usize {
    let n = n as isize;
    if n == 1 {
        return 0;
    }
    let period = 2 * (n - 1);
    let mut i = i.rem_euclid(period);
    if i >= n {
        i = period - i;
    }
    i as usize
}

/// A separable 5-tap Gaussian blur of one plane (times `gain`).
fn blur(plane: &[f32], side: usize, gain: f32) -> Vec<f32> {
    let mut tmp = vec![0.0f32; side * side];
    for y in 0..side {
        for x in 0..side {
            tmp[y * side + x] = (0..5).map(|k| GAUSS[k] * plane[y * side + mirror(x as isize + k as isize - 2, side)]).sum();
        }
    }
    let mut out = vec![0.0f32; side * side];
    for y in 0..side {
        for x in 0..side {
            out[y * side + x] = gain * (0..5).map(|k| GAUSS[k] * tmp[mirror(y as isize + k as isize - 2, side) * side + x]).sum::<f32>();
        }
    }
    out
}

/// `pyr_down`: blur, then every other pixel.
fn pyr_down(plane: &[f32], side: usize) -> Vec<f32> {
    let b = blur(plane, side, 1.0);
    let h = side / 2;
    (0..h * h).map(|q| b[(q / h) * 2 * side + (q % h) * 2]).collect()
}

/// `pyr_up`: zeros between the pixels, then blur times 4.
fn pyr_up(plane: &[f32], side: usize) -> Vec<f32> {
    let s = side * 2;
    let mut z = vec![0.0f32; s * s];
    for y in 0..side {
        for x in 0..side {
            z[2 * y * s + 2 * x] = plane[y * side + x];
        }
    }
    blur(&z, s, 4.0)
}

/// The Laplacian pyramid of one planar u8 image (values 0..255): level `i` is the detail at
/// `levels[i]` px, the last one the blurred image itself. Each level is 3 planes.
pub fn laplacian_pyramid(image: &[u8], size: usize, levels: usize) -> Vec<Vec<f32>> {
    let mut gauss: Vec<Vec<f32>> = (0..3).map(|c| image[c * size * size..(c + 1) * size * size].iter().map(|&v| v as f32).collect()).collect();
    let mut side = size;
    let mut out = Vec::with_capacity(levels);
    for l in 0..levels {
        if l + 1 == levels {
            out.push(gauss.concat());
            break;
        }
        let down: Vec<Vec<f32>> = gauss.iter().map(|p| pyr_down(p, side)).collect();
        let detail: Vec<f32> = gauss.iter().zip(&down).flat_map(|(g, d)| g.iter().zip(pyr_up(d, side / 2)).map(|(a, b)| a - b).collect::<Vec<_>>()).collect();
        out.push(detail);
        gauss = down;
        side /= 2;
    }
    out
}

/// Descriptors (3 x 7 x 7 values each) of every image at pyramid level `level`:
/// `[count, 147]`, normalised per channel over the whole set (ProGAN's
/// `finalize_descriptors`). One level at a time, so only one level's descriptors of each set
/// are held (the pyramids are recomputed per level: cheap next to the projections).
pub fn swd_descriptors(images: &[u8], size: usize, seed: u64, level: usize) -> Vec<f32> {
    let per = 3 * size * size;
    let n = images.len() / per;
    let levels = swd_levels(size);
    let per_image = (SWD_MAX_DESCRIPTORS / n.max(1)).clamp(1, SWD_PER_IMAGE);
    let d = 3 * SWD_PATCH * SWD_PATCH;
    let side = levels[level];
    let span = side - SWD_PATCH + 1;
    let mut all = vec![0.0f32; n * per_image * d];
    // Each image's own random places, so the descriptors do not depend on the thread count.
    all.par_chunks_mut(per_image * d).enumerate().for_each(|(i, out)| {
        let pyr = laplacian_pyramid(&images[i * per..(i + 1) * per], size, level + 1 + (level + 1 < levels.len()) as usize);
        let plane = &pyr[level];
        let mut rng = Rng::new(seed ^ (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ (level as u64).wrapping_mul(0xc2b2_ae3d_27d4_eb4f));
        for desc in out.chunks_exact_mut(d) {
            let (y0, x0) = (rng.below(span), rng.below(span));
            for c in 0..3 {
                for y in 0..SWD_PATCH {
                    let row = c * side * side + (y0 + y) * side + x0;
                    let at = (c * SWD_PATCH + y) * SWD_PATCH;
                    desc[at..at + SWD_PATCH].copy_from_slice(&plane[row..row + SWD_PATCH]);
                }
            }
        }
    });
    normalise_channels(&mut all, d);
    all
}

/// Subtracts each channel's mean and divides by its standard deviation over all descriptors.
fn normalise_channels(desc: &mut [f32], d: usize) {
    let per_c = d / 3;
    for c in 0..3 {
        let (mut s, mut s2, mut count) = (0.0f64, 0.0f64, 0usize);
        for row in desc.chunks_exact(d) {
            for v in &row[c * per_c..(c + 1) * per_c] {
                s += *v as f64;
                s2 += (*v as f64) * (*v as f64);
                count += 1;
            }
        }
        let mean = s / count.max(1) as f64;
        let std = (s2 / count.max(1) as f64 - mean * mean).max(0.0).sqrt().max(1e-8);
        for row in desc.chunks_exact_mut(d) {
            for v in &mut row[c * per_c..(c + 1) * per_c] {
                *v = ((*v as f64 - mean) / std) as f32;
            }
        }
    }
}

/// An f32 as a u32 whose unsigned order is the float's order.
fn order_key(v: f32) -> u32 {
    let b = v.to_bits();
    if b & 0x8000_0000 != 0 {
        !b
    } else {
        b | 0x8000_0000
    }
}

fn key_value(k: u32) -> f32 {
    f32::from_bits(if k & 0x8000_0000 != 0 { k & 0x7fff_ffff } else { !k })
}

/// Each direction's projections of `desc` (`[count, d]`), sorted: `[dirs, count]`.
fn sorted_projections(desc: &[f32], d: usize, dirs: &[f32], n_dirs: usize) -> Vec<f32> {
    let count = desc.len() / d;
    let mut proj = vec![0.0f32; n_dirs * count];
    // proj[dir, i] = sum_k dirs[k, dir] desc[i, k]
    crate::backend::cpu::gemm::matmul(None, n_dirs, count, d, &mut proj, count, false, dirs, 1, n_dirs as isize, desc, 1, d as isize);
    proj.par_chunks_mut(count).for_each(|p| {
        let mut keys: Vec<u32> = p.iter().map(|&v| order_key(v)).collect();
        keys.sort_unstable();
        p.iter_mut().zip(keys).for_each(|(v, k)| *v = key_value(k));
    });
    proj
}

/// The sliced Wasserstein distance between two sets of descriptors of one level (ProGAN's
/// `sliced_wasserstein`): mean over random unit directions of the mean absolute difference of
/// the sorted projections. The sets must be of the same size.
pub fn sliced_wasserstein(a: &[f32], b: &[f32], d: usize, rng: &mut Rng) -> f64 {
    assert_eq!(a.len(), b.len(), "SWD compares sets of one size");
    let count = a.len() / d;
    let mut total = 0.0;
    for _ in 0..SWD_REPEATS {
        let mut dirs = vec![0.0f32; d * SWD_DIRS];
        rng.fill_normal(&mut dirs, 0.0, 1.0);
        for j in 0..SWD_DIRS {
            let norm = (0..d).map(|k| (dirs[k * SWD_DIRS + j] as f64).powi(2)).sum::<f64>().sqrt() as f32;
            (0..d).for_each(|k| dirs[k * SWD_DIRS + j] /= norm);
        }
        let (pa, pb) = (sorted_projections(a, d, &dirs, SWD_DIRS), sorted_projections(b, d, &dirs, SWD_DIRS));
        let sum: f64 = pa.par_chunks(count).zip(pb.par_chunks(count)).map(|(x, y)| x.iter().zip(y).map(|(u, v)| (u - v).abs() as f64).sum::<f64>()).sum();
        total += sum / (count * SWD_DIRS) as f64;
    }
    total / SWD_REPEATS as f64
}

/// SWD between two sets of `size` px planar u8 images of the same count: `(per level, mean)`,
/// times 1e3, levels from `size` down to 16 px.
pub fn swd(a: &[u8], b: &[u8], size: usize, seed: u64) -> (Vec<f64>, f64) {
    let d = 3 * SWD_PATCH * SWD_PATCH;
    let mut rng = Rng::derive(seed, "swd-directions");
    let per: Vec<f64> = (0..swd_levels(size).len())
        .map(|l| {
            let (da, db) = (swd_descriptors(a, size, seed ^ 0xa, l), swd_descriptors(b, size, seed ^ 0xb, l));
            1e3 * sliced_wasserstein(&da, &db, d, &mut rng)
        })
        .collect();
    let mean = per.iter().sum::<f64>() / per.len() as f64;
    (per, mean)
}

/// Mean and covariance (unbiased, n - 1) of `n` rows of `d` features, in f64.
pub fn mean_cov(x: &[f32], d: usize) -> (DVector<f64>, DMatrix<f64>) {
    let n = x.len() / d;
    let mut mean = DVector::<f64>::zeros(d);
    for row in x.chunks_exact(d) {
        for (m, v) in mean.iter_mut().zip(row) {
            *m += *v as f64;
        }
    }
    mean /= n.max(1) as f64;
    let centred: Vec<f64> = x.chunks_exact(d).flat_map(|row| row.iter().zip(mean.iter()).map(|(v, m)| *v as f64 - m)).collect();
    let mut cov = vec![0.0f64; d * d];
    // cov = X^T X / (n - 1), X centred [n, d]
    crate::backend::cpu::gemm::matmul(None, d, d, n, &mut cov, d, false, &centred, 1, d as isize, &centred, d as isize, 1);
    let cov = DMatrix::from_row_slice(d, d, &cov) / (n.max(2) - 1) as f64;
    (mean, cov)
}

/// `sqrt` of a symmetric positive semi-definite matrix (negative rounding eigenvalues as 0).
fn sqrt_psd(m: &DMatrix<f64>) -> DMatrix<f64> {
    let e = SymmetricEigen::new(m.clone());
    let s = DVector::from_iterator(e.eigenvalues.len(), e.eigenvalues.iter().map(|v| v.max(0.0).sqrt()));
    &e.eigenvectors * DMatrix::from_diagonal(&s) * e.eigenvectors.transpose()
}

/// The Fréchet distance between Gaussians `(m1, s1)` and `(m2, s2)`:
/// `|m1 - m2|^2 + tr(s1) + tr(s2) - 2 tr sqrt(s1 s2)`, with `tr sqrt(s1 s2)` computed as
/// `tr sqrt(sqrt(s1) s2 sqrt(s1))` (the same eigenvalues, and a symmetric matrix).
pub fn frechet_distance(m1: &DVector<f64>, s1: &DMatrix<f64>, m2: &DVector<f64>, s2: &DMatrix<f64>) -> f64 {
    let r1 = sqrt_psd(s1);
    let mut inner = &r1 * s2 * &r1;
    inner = (&inner + inner.transpose()) * 0.5;
    let tr_sqrt: f64 = SymmetricEigen::new(inner).eigenvalues.iter().map(|v| v.max(0.0).sqrt()).sum();
    ((m1 - m2).norm_squared() + s1.trace() + s2.trace() - 2.0 * tr_sqrt).max(0.0)
}

/// FD between two sets of features of width `d`.
pub fn fd(a: &[f32], b: &[f32], d: usize) -> f64 {
    let (m1, s1) = mean_cov(a, d);
    let (m2, s2) = mean_cov(b, d);
    frechet_distance(&m1, &s1, &m2, &s2)
}

/// `x y^T` of `[n, d]` and `[m, d]` rows, in f64: `[n, m]`.
fn gram(x: &[f64], y: &[f64], d: usize) -> Vec<f64> {
    let (n, m) = (x.len() / d, y.len() / d);
    let mut out = vec![0.0f64; n * m];
    crate::backend::cpu::gemm::matmul(None, n, m, d, &mut out, m, false, x, d as isize, 1, y, 1, d as isize);
    out
}

/// The unbiased squared MMD between `x` and `y` (`[m, d]` each, f64) under the cubic kernel.
pub fn mmd2_unbiased(x: &[f64], y: &[f64], d: usize) -> f64 {
    let m = x.len() / d;
    let k = |g: f64| (g / d as f64 + 1.0).powi(3);
    let kxx = gram(x, x, d);
    let kyy = gram(y, y, d);
    let kxy = gram(x, y, d);
    let off_diag = |g: &[f64]| -> f64 { (0..m).map(|i| (0..m).filter(|&j| j != i).map(|j| k(g[i * m + j])).sum::<f64>()).sum() };
    let mf = m as f64;
    off_diag(&kxx) / (mf * (mf - 1.0)) + off_diag(&kyy) / (mf * (mf - 1.0)) - 2.0 * kxy.iter().map(|&g| k(g)).sum::<f64>() / (mf * mf)
}

/// KID: the unbiased MMD^2 of the cubic kernel, on all of two sets of up to `KID_SUBSET`
/// features, else averaged over `KID_SUBSETS` random subsets of that size.
pub fn kid(a: &[f32], b: &[f32], d: usize, seed: u64) -> f64 {
    let n = (a.len() / d).min(b.len() / d);
    let m = n.min(KID_SUBSET);
    if m < 2 {
        return f64::NAN;
    }
    let subsets = if n > m { KID_SUBSETS } else { 1 };
    let mut rng = Rng::derive(seed, "kid-subsets");
    let pick = |src: &[f32], rng: &mut Rng| -> Vec<f64> {
        let mut idx: Vec<usize> = (0..src.len() / d).collect();
        if subsets > 1 {
            rng.shuffle(&mut idx);
        }
        idx[..m].iter().flat_map(|&i| src[i * d..(i + 1) * d].iter().map(|v| *v as f64)).collect()
    };
    (0..subsets)
        .map(|_| {
            let (x, y) = (pick(a, &mut rng), pick(b, &mut rng));
            mmd2_unbiased(&x, &y, d)
        })
        .sum::<f64>()
        / subsets as f64
}

/// Squared Euclidean distances between rows of `a` (`[n, d]`) and rows `b` (`[m, d]`),
/// `[n, m]`, through a GEMM.
fn sq_dists(a: &[f32], b: &[f32], d: usize) -> Vec<f32> {
    let (n, m) = (a.len() / d, b.len() / d);
    let na: Vec<f32> = a.chunks_exact(d).map(|r| r.iter().map(|v| v * v).sum()).collect();
    let nb: Vec<f32> = b.chunks_exact(d).map(|r| r.iter().map(|v| v * v).sum()).collect();
    let mut g = vec![0.0f32; n * m];
    crate::backend::cpu::gemm::matmul(None, n, m, d, &mut g, m, false, a, d as isize, 1, b, 1, d as isize);
    g.par_chunks_mut(m).enumerate().for_each(|(i, row)| row.iter_mut().zip(&nb).for_each(|(v, nbj)| *v = (na[i] + nbj - 2.0 * *v).max(0.0)));
    g
}

/// Rows per block of the distance matrices (bounds memory at large N).
const BLOCK_ROWS: usize = 512;

/// Squared radius of each row's k-nearest-neighbour ball within its own set (itself
/// excluded).
pub fn knn_radii(x: &[f32], d: usize, k: usize) -> Vec<f32> {
    let n = x.len() / d;
    let mut out = Vec::with_capacity(n);
    for start in (0..n).step_by(BLOCK_ROWS) {
        let end = (start + BLOCK_ROWS).min(n);
        let dist = sq_dists(&x[start * d..end * d], x, d);
        let radii: Vec<f32> = dist
            .par_chunks(n)
            .enumerate()
            .map(|(r, row)| {
                let mut v: Vec<f32> = row.iter().enumerate().filter(|&(j, _)| j != start + r).map(|(_, v)| *v).collect();
                let k = k.min(v.len()).max(1) - 1;
                if v.is_empty() {
                    return f32::INFINITY;
                }
                *v.select_nth_unstable_by(k, f32::total_cmp).1
            })
            .collect();
        out.extend(radii);
    }
    out
}

/// The fraction of `queries` inside at least one ball of the manifold (`points` with their
/// squared radii).
pub fn coverage(points: &[f32], radii: &[f32], queries: &[f32], d: usize) -> f64 {
    let q = queries.len() / d;
    let m = points.len() / d;
    let mut inside = 0usize;
    for start in (0..q).step_by(BLOCK_ROWS) {
        let end = (start + BLOCK_ROWS).min(q);
        let dist = sq_dists(&queries[start * d..end * d], points, d);
        inside += dist.par_chunks(m).filter(|row| row.iter().zip(radii).any(|(v, r)| v <= r)).count();
    }
    inside as f64 / q.max(1) as f64
}

/// `(precision, recall)` of `fake` against `real` with k-NN manifolds.
pub fn precision_recall(real: &[f32], fake: &[f32], d: usize, k: usize) -> (f64, f64) {
    let (rr, rf) = (knn_radii(real, d, k), knn_radii(fake, d, k));
    (coverage(real, &rr, fake, d), coverage(fake, &rf, real, d))
}

/// The mean Euclidean distance between the members of each group with two or more members
/// (all pairs), averaged over those groups; NaN when there is none.
pub fn diversity(features: &[f32], d: usize, groups: &[Vec<usize>]) -> f64 {
    let per: Vec<f64> = groups
        .iter()
        .filter(|g| g.len() >= 2)
        .map(|g| {
            let (mut s, mut c) = (0.0f64, 0usize);
            for (a, &i) in g.iter().enumerate() {
                for &j in &g[a + 1..] {
                    let dist: f64 = features[i * d..(i + 1) * d].iter().zip(&features[j * d..(j + 1) * d]).map(|(x, y)| ((x - y) as f64).powi(2)).sum();
                    s += dist.sqrt();
                    c += 1;
                }
            }
            s / c as f64
        })
        .collect();
    if per.is_empty() {
        f64::NAN
    } else {
        per.iter().sum::<f64>() / per.len() as f64
    }
}

/// Width in pixels of the border ring `background` reads: a sixteenth of the side, at
/// least one pixel (2 at 32 px, 4 at 64 px).
pub fn background_ring(size: usize) -> usize {
    (size / 16).max(1)
}

/// How far the images' borders are from white, in 1/255 units: the mean of `255 - v` over
/// every channel of every pixel in the outer ring (`background_ring` wide) of every image
/// (planar u8, `3 * size * size` each). The catalogue photographs products on white, so a
/// generator that learnt the background scores near the real images' figure; grey or
/// speckled borders score higher. NaN for no images.
pub fn background(images: &[u8], size: usize) -> f64 {
    let per = 3 * size * size;
    let ring = background_ring(size);
    let (mut sum, mut count) = (0u64, 0u64);
    for image in images.chunks_exact(per) {
        for plane in image.chunks_exact(size * size) {
            for y in 0..size {
                let edge_row = y < ring || y >= size - ring;
                for x in 0..size {
                    if edge_row || x < ring || x >= size - ring {
                        sum += 255 - plane[y * size + x] as u64;
                        count += 1;
                    }
                }
            }
        }
    }
    if count == 0 {
        f64::NAN
    } else {
        sum as f64 / count as f64
    }
}
