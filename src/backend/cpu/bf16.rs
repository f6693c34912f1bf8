//! The GEMM of `--precision bf16` on the CPU: `c (=|+=) a . b` with both operands rounded to
//! bf16 and every product and sum in f32, as PyTorch's autocast multiplies.
//!
//! Each call converts its operands once, as it packs them (a convolution packs its weights
//! once per pass, `PackedA`, and reuses them over the pieces of the batch): `a` into 16-row blocks and `b`
//! into 16-column panels, both cut along k into tiles of 32 values (zero-padded at the
//! edges), the layout the AMX tile loads want and the one the AVX-512 dot products read.
//! A tile of `a` is 16 rows of 32 consecutive k (1 KiB); a tile of `b` holds, for each of
//! 16 pairs of consecutive k, the pair of every column of the panel side by side (the
//! "VNNI" order), so one 64-byte row of it is the 16 columns' pairs for one k pair. Then
//! every 32 x 32 block of `c` is one unit of work, spread over the threads, summed into
//! `c` itself where the block lies inside it (into a scratch block at the edges), computed
//! by one of three kernels, chosen once at run time (`Bf16Kernel`):
//! - `Amx`: the AMX tile unit (`tdpbf16ps`, Sapphire Rapids and newer; Linux must grant the
//!   tile state, which `arch_prctl(ARCH_REQ_XCOMP_PERM)` asks for): four 16 x 16 f32
//!   accumulator tiles, two tiles of `a` and two of `b` per 32-deep step;
//! - `Avx512`: `vdpbf16ps` (AVX512_BF16: Cooper Lake, Sapphire Rapids, Zen 4 and newer): 16
//!   rows x 16 columns of accumulators in 16 registers, one load of `b` and 16 broadcast
//!   pairs of `a` per pair of k (each broadcast a `{1to16}` memory operand of its dot
//!   product, not an instruction of its own);
//! - `F32`: any CPU: the operands rounded to bf16 but kept as f32, multiplied by the f32
//!   GEMM. A product of two bf16 values is exact in f32, so this is the twin the other two
//!   are held to: they differ from it only by the order of the f32 sums (and where an
//!   operand rounds to a subnormal bf16, which they read as zero).
//!
//! The packing converts with `vcvtne2ps2bf16` (AVX512_BF16, which both packing kernels
//! need): 32 values per instruction, rounded to nearest even like `half`, except that a
//! subnormal becomes the zero of its sign, which changes no sum, since both kernels read a
//! subnormal bf16 as zero (the tests below check both facts).
//!
//! `GAN_ENGINE_CPU_BF16=amx|avx512|f32` forces a kernel (tests and benchmarks run each one
//! this CPU has; CI's CPU may have none but `f32`).

use super::gemm::{check_dst, check_operand};
use super::simd::wide;
use super::SharedMut;
use crate::backend::precision::round_bf16;
use anyhow::{bail, Result};
use rayon::prelude::*;
use std::cell::RefCell;
use std::sync::OnceLock;

/// How a bf16 GEMM multiplies on this CPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bf16Kernel {
    /// AMX tiles (`tdpbf16ps`).
    Amx,
    /// AVX512_BF16 dot products (`vdpbf16ps`).
    Avx512,
    /// f32 GEMM of the rounded operands.
    F32,
}

/// Values of `a` rows and `b` columns per tile, and of k per tile.
const TILE: usize = 16;
const TILE_K: usize = 32;
/// u16 values per packed tile (1 KiB).
const TILE_LEN: usize = TILE * TILE_K;

impl Bf16Kernel {
    pub const ALL: [Bf16Kernel; 3] = [Bf16Kernel::Amx, Bf16Kernel::Avx512, Bf16Kernel::F32];
    /// The environment variable that forces a kernel.
    pub const ENV: &'static str = "GAN_ENGINE_CPU_BF16";

    pub fn label(self) -> &'static str {
        match self {
            Bf16Kernel::Amx => "amx",
            Bf16Kernel::Avx512 => "avx512",
            Bf16Kernel::F32 => "f32",
        }
    }

    /// Whether this CPU (and, for AMX, the operating system) can run it.
    pub fn available(self) -> bool {
        match self {
            Bf16Kernel::Amx => amx_usable(),
            Bf16Kernel::Avx512 => avx512_bf16(),
            Bf16Kernel::F32 => true,
        }
    }

    /// The fastest kernel this CPU runs.
    pub fn best() -> Bf16Kernel {
        Bf16Kernel::ALL.into_iter().find(|k| k.available()).unwrap_or(Bf16Kernel::F32)
    }

    /// The kernel `GAN_ENGINE_CPU_BF16` names, or the best: an error when it names one this
    /// CPU cannot run, or none.
    pub fn from_env() -> Result<Bf16Kernel> {
        let s = match std::env::var(Bf16Kernel::ENV) {
            Ok(s) if !s.trim().is_empty() => s,
            _ => return Ok(Bf16Kernel::best()),
        };
        let Some(k) = Bf16Kernel::ALL.into_iter().find(|k| k.label() == s.trim()) else { bail!("{}={s:?}: expected amx, avx512 or f32", Bf16Kernel::ENV) };
        if !k.available() {
            bail!("{}={s}: this CPU (or its operating system) does not offer it; available: {}", Bf16Kernel::ENV, available_labels());
        }
        Ok(k)
    }
}

fn available_labels() -> String {
    Bf16Kernel::ALL.into_iter().filter(|k| k.available()).map(|k| k.label()).collect::<Vec<_>>().join(", ")
}

#[cfg(target_arch = "x86_64")]
fn avx512_bf16() -> bool {
    // BW for the packing's 16-bit permutes and masked stores (every AVX512_BF16 CPU has it).
    std::is_x86_feature_detected!("avx512f") && std::is_x86_feature_detected!("avx512bw") && std::is_x86_feature_detected!("avx512bf16")
}
#[cfg(not(target_arch = "x86_64"))]
fn avx512_bf16() -> bool {
    false
}

/// AMX-BF16 and AMX-TILE in CPUID, and Linux's permission to use the tile state (asked
/// once for the whole process; a kernel without AMX support refuses, and the AVX-512 or f32
/// kernel runs instead).
fn amx_usable() -> bool {
    static USABLE: OnceLock<bool> = OnceLock::new();
    *USABLE.get_or_init(|| {
        #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
        {
            if std::arch::x86_64::__cpuid(0).eax < 7 {
                return false;
            }
            let leaf7 = std::arch::x86_64::__cpuid_count(7, 0);
            let (amx_bf16, amx_tile) = ((leaf7.edx >> 22) & 1 == 1, (leaf7.edx >> 24) & 1 == 1);
            if !(amx_bf16 && amx_tile && avx512_bf16()) {
                return false;
            }
            const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
            const XFEATURE_XTILEDATA: libc::c_long = 18;
            // SAFETY: a plain system call with integer arguments.
            unsafe { libc::syscall(libc::SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) == 0 }
        }
        #[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
        {
            false
        }
    })
}

/// `c[m x n] (=|+=) bf16(a)[m x k] . bf16(b)[k x n]`, strides as in `gemm::matmul_on`.
#[allow(clippy::too_many_arguments)]
pub fn matmul(
    kernel: Bf16Kernel,
    threads: bool,
    m: usize,
    n: usize,
    k: usize,
    c: &mut [f32],
    ldc: usize,
    accumulate: bool,
    a: &[f32],
    a_rs: isize,
    a_cs: isize,
    b: &[f32],
    b_rs: isize,
    b_cs: isize,
) {
    if kernel == Bf16Kernel::F32 {
        return matmul_rounded_f32(threads, m, n, k, c, ldc, accumulate, a, a_rs, a_cs, b, b_rs, b_cs);
    }
    assert_runs(kernel);
    let par = parallel(threads, m, n, k);
    let (rbs, cbs, kbs) = blocks(m, n, k);
    with_buffers(rbs * kbs * TILE_LEN, cbs * kbs * TILE_LEN, rbs * TILE * cbs * TILE, |pa, pb, acc| {
        let (a_rs, a_cs, b_rs, b_cs) = (a_rs as usize, a_cs as usize, b_rs as usize, b_cs as usize);
        // SAFETY (the packing): the kernel runs here (asserted above), so AVX512_BF16 does.
        if par {
            rayon::join(|| unsafe { pack_a(m, k, a, a_rs, a_cs, kbs, pa, true) }, || unsafe { pack_b(n, k, b, b_rs, b_cs, kbs, pb, true) });
        } else {
            unsafe {
                pack_a(m, k, a, a_rs, a_cs, kbs, pa, false);
                pack_b(n, k, b, b_rs, b_cs, kbs, pb, false);
            }
        }
        multiply(kernel, par, m, n, (rbs, cbs, kbs), pa, pb, acc, c, ldc, accumulate);
    });
}

/// A left operand `a` (m x k) packed to bf16 tiles once, for many products with different
/// right operands: a convolution's weights over the pieces of its batch.
pub struct PackedA {
    kernel: Bf16Kernel,
    m: usize,
    k: usize,
    tiles: Vec<u16>,
}

impl PackedA {
    /// `a` (strides `a_rs`, `a_cs`, inside `a` as `gemm::matmul_on` checks) packed for
    /// `kernel`; `None` for the f32 kernel, which multiplies unpacked operands.
    pub fn new(kernel: Bf16Kernel, threads: bool, m: usize, k: usize, a: &[f32], a_rs: isize, a_cs: isize) -> Option<PackedA> {
        if kernel == Bf16Kernel::F32 || m == 0 || k == 0 {
            return None;
        }
        check_operand("lhs", m, k, a.len(), a_rs, a_cs);
        assert_runs(kernel);
        let (rbs, _, kbs) = blocks(m, 1, k);
        let mut tiles = vec![0u16; rbs * kbs * TILE_LEN];
        // SAFETY: the kernel runs here (asserted above), so AVX512_BF16 does.
        unsafe { pack_a(m, k, a, a_rs as usize, a_cs as usize, kbs, &mut tiles, threads && m * k >= 1 << 16) };
        Some(PackedA { kernel, m, k, tiles })
    }

    pub fn rows(&self) -> usize {
        self.m
    }

    pub fn depth(&self) -> usize {
        self.k
    }
}

/// `matmul` with `a` packed already: the same sums, bit for bit.
#[allow(clippy::too_many_arguments)]
pub fn matmul_packed(threads: bool, a: &PackedA, n: usize, c: &mut [f32], ldc: usize, accumulate: bool, b: &[f32], b_rs: isize, b_cs: isize) {
    let (m, k) = (a.m, a.k);
    if n == 0 {
        return;
    }
    check_operand("rhs", k, n, b.len(), b_rs, b_cs);
    check_dst(m, n, c.len(), ldc);
    let par = parallel(threads, m, n, k);
    let (rbs, cbs, kbs) = blocks(m, n, k);
    with_buffers(0, cbs * kbs * TILE_LEN, rbs * TILE * cbs * TILE, |_, pb, acc| {
        // SAFETY: `a.kernel` runs here (`PackedA::new` asserted it), so AVX512_BF16 does.
        unsafe { pack_b(n, k, b, b_rs as usize, b_cs as usize, kbs, pb, par) };
        multiply(a.kernel, par, m, n, (rbs, cbs, kbs), &a.tiles, pb, acc, c, ldc, accumulate);
    });
}

/// The packing kernels' one precondition, checked once per product: the kernel (and so
/// AVX512_BF16, which both packing kernels need) runs on this CPU. `Cpu::with_bf16_kernel`
/// only accepts such a kernel; this holds a direct caller to the same.
fn assert_runs(kernel: Bf16Kernel) {
    assert!(kernel != Bf16Kernel::F32 && kernel.available(), "bf16 matmul: the {} kernel does not pack on this CPU", kernel.label());
}

fn parallel(threads: bool, m: usize, n: usize, k: usize) -> bool {
    threads && m * n * k >= 1 << 18 && rayon::current_num_threads() > 1
}

/// Blocks of `a` and panels of `b` (in even numbers: a unit is two of each) and tiles
/// along k.
fn blocks(m: usize, n: usize, k: usize) -> (usize, usize, usize) {
    (m.div_ceil(2 * TILE) * 2, n.div_ceil(2 * TILE) * 2, k.div_ceil(TILE_K))
}

/// The product of packed operands into `c`, unit by unit; `acc` holds `rbs * 16` rows of
/// `cbs * 16` sums.
#[allow(clippy::too_many_arguments)]
fn multiply(
    kernel: Bf16Kernel,
    par: bool,
    m: usize,
    n: usize,
    (rbs, cbs, kbs): (usize, usize, usize),
    pa: &[u16],
    pb: &[u16],
    acc: &mut [f32],
    c: &mut [f32],
    ldc: usize,
    accumulate: bool,
) {
    let ld = cbs * TILE;
    let (row_pairs, col_pairs) = (rbs / 2, cbs / 2);
    let (out, sums) = (SharedMut(c.as_mut_ptr()), SharedMut(acc.as_mut_ptr()));
    let c_len = c.len();
    assert!(pa.len() >= rbs * kbs * TILE_LEN && pb.len() >= cbs * kbs * TILE_LEN && acc.len() >= rbs * TILE * ld);
    // The reduction in chunks of CHUNK_TILES tiles, so that a unit's tiles of `a` and `b`
    // (2 x 128 KiB) stay in the core's L2 while the units of a panel pair pass over
    // them; the unit's sums wait in `acc` (or `c`) between chunks.
    for kb0 in (0..kbs).step_by(CHUNK_TILES) {
        let kb1 = (kb0 + CHUNK_TILES).min(kbs);
        // Row pairs per band: the band's tiles of `a` in this chunk stay within
        // A_BAND_BYTES, so a band of `a` stays in the core's L2 while the band passes over
        // every panel pair (a whole `a` re-read per panel pair overflowed it for the
        // 8192-row weights of D's last convolution at 128 px).
        let band = (A_BAND_BYTES / (2 * (kb1 - kb0) * TILE_LEN * 2)).clamp(1, row_pairs);
        let unit = |u: usize| {
            // Within a band, units run panel pair by panel pair, so the threads share the
            // band's blocks of `a` and each keeps its panels of `b` in its own cache.
            let (b0, rest) = (u / (band * col_pairs) * band, u % (band * col_pairs));
            let rows = band.min(row_pairs - b0);
            let (cp, rp) = (rest / rows, b0 + rest % rows);
            let at = |rb: usize| &pa[(rb * kbs + kb0) * TILE_LEN..(rb * kbs + kb1) * TILE_LEN];
            let bt = |cb: usize| &pb[(cb * kbs + kb0) * TILE_LEN..(cb * kbs + kb1) * TILE_LEN];
            let (r0, c0) = (2 * rp * TILE, 2 * cp * TILE);
            let (a2, b2) = ([at(2 * rp), at(2 * rp + 1)], [bt(2 * cp), bt(2 * cp + 1)]);
            if r0 + 2 * TILE <= m && c0 + 2 * TILE <= n {
                // A unit inside `c` sums into `c` itself, from what it holds when
                // accumulating: no pass over `acc`, no store (which took a tenth of a
                // bf16 iteration at 64 px, mostly in the weight-gradient pieces' `+=`).
                assert!((r0 + 2 * TILE - 1) * ldc + c0 + 2 * TILE <= c_len, "bf16 matmul: dst out of bounds");
                // SAFETY: unit (rp, cp) alone touches rows r0..r0 + 32 and columns c0..c0 + 32
                // of `c`, inside it as asserted, with ldc >= n >= 32.
                unsafe { block_2x2(kernel, a2, b2, accumulate || kb0 > 0, out.ptr().add(r0 * ldc + c0), ldc) };
                return;
            }
            // SAFETY: unit (rp, cp) alone touches rows r0..r0 + 32 and columns c0..c0 + 32
            // of `acc` (inside it: rbs * 16 rows of `ld`, as asserted) and of `c` (`store`
            // checks).
            unsafe {
                let sums = sums.ptr().add(r0 * ld + c0);
                block_2x2(kernel, a2, b2, kb0 > 0, sums, ld);
                if kb1 == kbs {
                    store(sums, ld, r0, c0, m, n, out, c_len, ldc, accumulate);
                }
            }
        };
        let units = row_pairs * col_pairs;
        if par {
            (0..units).into_par_iter().for_each(unit);
        } else {
            (0..units).for_each(unit);
        }
    }
}

/// The most bytes of packed `a` a band of units reads per chunk (a quarter of the Intel
/// development VM's 2 MiB L2 per core, half the AMD EPYC's 1 MiB; there, 256 KiB ran no
/// faster: 64 px `bench --precision bf16`, two runs each, 0.552 and 0.528 s against 0.546
/// and 0.529 s).
const A_BAND_BYTES: usize = 512 << 10;

/// k tiles (of 32) per chunk of the reduction. Chunks of 16 tiles kept the unit's tiles in
/// L1, but reloading and storing the four sums tiles every 16 steps took a quarter of the
/// AMX kernel's samples; 64 took 6% off a bf16 iteration at 64 px (`bench --precision
/// bf16`, 0.437 against 0.410 s, three alternating pairs); 256 was no faster.
const CHUNK_TILES: usize = 64;

thread_local! {
    // u32 storage, so that the packing loops can write a pair of bf16 values at once.
    static BUFFERS: RefCell<(Vec<u32>, Vec<u32>, Vec<f32>)> = const { RefCell::new((Vec::new(), Vec::new(), Vec::new())) };
}

/// Runs `f` with packing and sum buffers of these lengths: this thread's, grown once and
/// reused, or fresh ones if they are in use further up this thread's stack.
fn with_buffers<R>(a_len: usize, b_len: usize, acc_len: usize, f: impl FnOnce(&mut [u16], &mut [u16], &mut [f32]) -> R) -> R {
    BUFFERS.with(|cell| match cell.try_borrow_mut() {
        Ok(mut bufs) => {
            let (pa, pb, acc) = &mut *bufs;
            if 2 * pa.len() < a_len {
                pa.resize(a_len / 2, 0);
            }
            if 2 * pb.len() < b_len {
                pb.resize(b_len / 2, 0);
            }
            if acc.len() < acc_len {
                acc.resize(acc_len, 0.0);
            }
            let (pa, pb): (&mut [u16], &mut [u16]) = (bytemuck::cast_slice_mut(pa), bytemuck::cast_slice_mut(pb));
            f(&mut pa[..a_len], &mut pb[..b_len], &mut acc[..acc_len])
        }
        Err(_) => f(bytemuck::cast_slice_mut(&mut vec![0u32; a_len / 2]), bytemuck::cast_slice_mut(&mut vec![0u32; b_len / 2]), &mut vec![0.0; acc_len]),
    })
}

/// `a` (m x k, strides `rs`, `cs`) as bf16 tiles: block `rb`'s tile `kb` at `(rb * kbs + kb)
/// * TILE_LEN`, element (r, kk) at `r * TILE_K + kk`; zero past the edges.
///
/// # Safety
/// AVX512_BF16 present (`assert_runs`).
#[allow(clippy::too_many_arguments)]
unsafe fn pack_a(m: usize, k: usize, a: &[f32], rs: usize, cs: usize, kbs: usize, out: &mut [u16], par: bool) {
    let block = |(rb, dst): (usize, &mut [u16])| {
        wide(
            #[inline(always)]
            || {
                // A transposed `a`'s tile, gathered in f32 before the conversion.
                let mut gathered = [0.0f32; TILE_LEN];
                for kb in 0..kbs {
                    let tile = &mut dst[kb * TILE_LEN..][..TILE_LEN];
                    let (k0, kn) = (kb * TILE_K, TILE_K.min(k.saturating_sub(kb * TILE_K)));
                    let rows = TILE.min(m.saturating_sub(rb * TILE));
                    if rows < TILE || kn < TILE_K {
                        tile.fill(0);
                    }
                    if rows == 0 {
                        // A block past the end of `a` (blocks come in pairs): zeros.
                        continue;
                    }
                    // Row r of the tile: `rows_of[r * ld..][..kn]`.
                    let (rows_of, ld) = if cs == 1 {
                        (&a[rb * TILE * rs + k0..], rs)
                    } else {
                        // Columns of `a` contiguous (rs == 1, a transposed operand): k outer.
                        for kk in 0..kn {
                            let base = (k0 + kk) * cs + rb * TILE * rs;
                            for r in 0..rows {
                                gathered[r * TILE_K + kk] = a[base + r * rs];
                            }
                        }
                        (&gathered[..], TILE_K)
                    };
                    // SAFETY: AVX512_BF16 present (this function's contract); rows r < rows
                    // of `rows_of` hold kn values from r * ld (inside `a`, or the gathered tile).
                    unsafe { tile_rows(rows_of, ld, rows, kn, tile) };
                }
            },
        )
    };
    let chunks = out.chunks_mut(kbs * TILE_LEN).enumerate();
    if par {
        out.par_chunks_mut(kbs * TILE_LEN).enumerate().for_each(block);
    } else {
        chunks.for_each(block);
    }
}

/// `b` (k x n, strides `rs`, `cs`) as bf16 tiles: panel `cb`'s tile `kb` at `(cb * kbs + kb)
/// * TILE_LEN`, element (k pair p, column j, e) at `p * 2 TILE + 2 j + e` for k = 2 p + e.
///
/// # Safety
/// AVX512_BF16 present (`assert_runs`).
#[allow(clippy::too_many_arguments)]
unsafe fn pack_b(n: usize, k: usize, b: &[f32], rs: usize, cs: usize, kbs: usize, out: &mut [u16], par: bool) {
    if cs == 1 {
        return pack_b_rows(n, k, b, rs, kbs, out, par);
    }
    let panel = |(cb, dst): (usize, &mut [u16])| {
        wide(
            #[inline(always)]
            || {
                let cols = TILE.min(n.saturating_sub(cb * TILE));
                // The tile's k rows of the panel's columns, gathered in f32 before the
                // conversion (rows of `b` lie `rs` apart, its columns `cs`).
                let mut gathered = [0.0f32; TILE_LEN];
                for kb in 0..kbs {
                    let tile = &mut dst[kb * TILE_LEN..][..TILE_LEN];
                    let (k0, kn) = (kb * TILE_K, TILE_K.min(k.saturating_sub(kb * TILE_K)));
                    if cols < TILE || kn < TILE_K {
                        tile.fill(0);
                    }
                    if cols == 0 {
                        // A panel past the end of `b` (panels come in pairs): zeros.
                        continue;
                    }
                    for j in 0..cols {
                        let base = (cb * TILE + j) * cs + k0 * rs;
                        for kk in 0..kn {
                            gathered[kk * TILE + j] = b[base + kk * rs];
                        }
                    }
                    let tile: &mut [u32] = bytemuck::cast_slice_mut(tile);
                    for p in 0..kn.div_ceil(2) {
                        let lo = &gathered[2 * p * TILE..][..cols];
                        let hi = (2 * p + 1 < kn).then(|| &gathered[(2 * p + 1) * TILE..][..cols]);
                        // SAFETY: AVX512_BF16 present (this function's contract); one panel
                        // (cols <= 16), whose row p is tile[p * 16..][..16].
                        unsafe { pair_rows(lo, hi, tile[p * TILE..][..TILE].as_mut_ptr(), 0) };
                    }
                }
            },
        )
    };
    if par {
        out.par_chunks_mut(kbs * TILE_LEN).enumerate().for_each(panel);
    } else {
        out.chunks_mut(kbs * TILE_LEN).enumerate().for_each(panel);
    }
}

/// `pack_b` of a `b` with contiguous rows (cs == 1): each tile row `kb` of every panel at
/// once, so that `b` is read a pair of whole rows at a time, front to back (panel by
/// panel, the reads jumped from row to row 64 bytes at a time, and the packing of a
/// piece's columns waited on the cache). Only the tiles at the edges are zeroed first.
///
/// # Safety
/// AVX512_BF16 present (`assert_runs`).
unsafe fn pack_b_rows(n: usize, k: usize, b: &[f32], rs: usize, kbs: usize, out: &mut [u16], par: bool) {
    let cbs = out.len() / (kbs * TILE_LEN);
    assert!(cbs * TILE >= n && out.len() == cbs * kbs * TILE_LEN, "bf16 pack_b: buffer of {} for n {n}, {kbs} tiles", out.len());
    let dst = SharedMut(out.as_mut_ptr() as *mut u32);
    let tile_row = |kb: usize| {
        wide(
            #[inline(always)]
            || {
                let (k0, kn) = (kb * TILE_K, TILE_K.min(k.saturating_sub(kb * TILE_K)));
                // SAFETY: tile (cb, kb), TILE_LEN / 2 u32 from `(cb * kbs + kb) * TILE_LEN / 2`,
                // lies inside `out` (cb < cbs, kb < kbs), and only this call writes the
                // tiles of row `kb`.
                let tile = |cb: usize| unsafe { std::slice::from_raw_parts_mut(dst.ptr().add((cb * kbs + kb) * TILE_LEN / 2), TILE_LEN / 2) };
                for cb in 0..cbs {
                    if (cb + 1) * TILE > n || kn < TILE_K {
                        tile(cb).fill(0);
                    }
                }
                for p in 0..kn.div_ceil(2) {
                    let lo = &b[(k0 + 2 * p) * rs..][..n];
                    let hi = (2 * p + 1 < kn).then(|| &b[(k0 + 2 * p + 1) * rs..][..n]);
                    // SAFETY: AVX512_BF16 present (this function's contract); panel cb's row
                    // p, TILE u32 at `(cb * kbs + kb) * TILE_LEN / 2 + p * TILE`, lies inside
                    // `out` and belongs to this call's tile row, as above.
                    unsafe { pair_rows(lo, hi, dst.ptr().add(kb * TILE_LEN / 2 + p * TILE), kbs * TILE_LEN / 2) };
                }
            },
        )
    };
    if par {
        (0..kbs).into_par_iter().for_each(tile_row);
    } else {
        (0..kbs).for_each(tile_row);
    }
}

/// `x86::tile_rows`, the one conversion of `a`; no other architecture has a packing kernel
/// (`assert_runs` stops a product before it packs there).
///
/// # Safety
/// As `x86::tile_rows`.
#[inline(always)]
unsafe fn tile_rows(src: &[f32], ld: usize, rows: usize, kn: usize, tile: &mut [u16]) {
    #[cfg(target_arch = "x86_64")]
    return x86::tile_rows(src, ld, rows, kn, tile);
    #[cfg(not(target_arch = "x86_64"))]
    unreachable!("no bf16 packing kernel on this architecture ({src:p}, {ld}, {rows}, {kn}, {})", tile.len())
}

/// `x86::pair_rows`, the one conversion of `b`, as `tile_rows` for `a`.
///
/// # Safety
/// As `x86::pair_rows`.
#[inline(always)]
unsafe fn pair_rows(lo: &[f32], hi: Option<&[f32]>, dst: *mut u32, panel: usize) {
    #[cfg(target_arch = "x86_64")]
    return x86::pair_rows(lo, hi, dst, panel);
    #[cfg(not(target_arch = "x86_64"))]
    unreachable!("no bf16 packing kernel on this architecture ({:p}, {}, {dst:p}, {panel})", lo.as_ptr(), hi.is_some())
}

/// One unit's 32 x 32 sums over a chunk of tiles: `sums[r * ld + col]` (=|+=) the product of
/// blocks `a[r / 16]` and panels `b[col / 16]`, added to what `sums` holds when `add`.
///
/// # Safety
/// `sums` points to 32 rows of `ld >= 32` values; the kernel runs on this CPU.
unsafe fn block_2x2(kernel: Bf16Kernel, a: [&[u16]; 2], b: [&[u16]; 2], add: bool, sums: *mut f32, ld: usize) {
    let tiles = a[0].len() / TILE_LEN;
    assert!(a.iter().chain(&b).all(|t| t.len() == tiles * TILE_LEN));
    #[cfg(target_arch = "x86_64")]
    match kernel {
        // SAFETY: the kernel is only chosen where available() said the CPU (and the OS) run
        // it; the slices hold the tiles read, as asserted above.
        Bf16Kernel::Amx => return x86::amx_2x2(a, b, tiles, add, sums, ld),
        Bf16Kernel::Avx512 => {
            for (i, j) in [(0, 0), (0, 1), (1, 0), (1, 1)] {
                x86::avx512_16x16(a[i].as_ptr(), b[j].as_ptr(), tiles, add, sums.add(i * TILE * ld + j * TILE), ld);
            }
            return;
        }
        Bf16Kernel::F32 => {}
    }
    let _ = (kernel, add, sums, ld);
    unreachable!("the f32 kernel does not pack");
}

/// Adds (or writes) a unit's sums (32 rows of `ld`) into `c` at rows `r0..`, columns `c0..`,
/// inside `m x n`.
///
/// # Safety
/// `sums` holds the unit's 32 x 32 sums; `c` points to `c_len` values, and no other thread
/// writes this unit's part.
#[allow(clippy::too_many_arguments)]
unsafe fn store(sums: *const f32, ld: usize, r0: usize, c0: usize, m: usize, n: usize, c: SharedMut<f32>, c_len: usize, ldc: usize, accumulate: bool) {
    let cols = (2 * TILE).min(n.saturating_sub(c0));
    if cols == 0 {
        return;
    }
    wide(
        #[inline(always)]
        || {
            for r in 0..(2 * TILE).min(m.saturating_sub(r0)) {
                let at = (r0 + r) * ldc + c0;
                assert!(at + cols <= c_len, "bf16 matmul: dst out of bounds");
                let dst = std::slice::from_raw_parts_mut(c.ptr().add(at), cols);
                let src = std::slice::from_raw_parts(sums.add(r * ld), cols);
                if accumulate {
                    dst.iter_mut().zip(src).for_each(|(d, s)| *d += *s);
                } else {
                    dst.copy_from_slice(src);
                }
            }
        },
    )
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{TILE, TILE_K, TILE_LEN};
    use std::arch::asm;
    use std::arch::x86_64::*;

    /// The AMX tile configuration: palette 1, tiles 0..7 all 16 rows of 64 bytes.
    #[repr(C, align(64))]
    struct TileConfig {
        palette: u8,
        start_row: u8,
        reserved: [u8; 14],
        colsb: [u16; 16],
        rows: [u8; 16],
    }

    thread_local! {
        /// Whether this thread has loaded `CONFIG` into the tile unit.
        static TILES_CONFIGURED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    }

    const CONFIG: TileConfig = {
        let mut c = TileConfig { palette: 1, start_row: 0, reserved: [0; 14], colsb: [0; 16], rows: [0; 16] };
        let mut t = 0;
        while t < 8 {
            c.colsb[t] = 64;
            c.rows[t] = 16;
            t += 1;
        }
        c
    };

    /// tmm0..3 = the unit's four accumulators (zero, or loaded from `sums` when `add`); per
    /// step, tmm4, tmm5 = the two tiles of `a`, tmm6, tmm7 = the two of `b`.
    ///
    /// # Safety
    /// AMX usable (`amx_usable`); `a` and `b` hold `tiles` tiles each; `sums` is 32 rows of
    /// `ld` floats.
    pub unsafe fn amx_2x2(a: [&[u16]; 2], b: [&[u16]; 2], tiles: usize, add: bool, sums: *mut f32, ld: usize) {
        const STRIDE: usize = 2 * TILE_K; // bytes per tile row
        let row = 4 * ld; // bytes per row of sums
        let (c0, c1, c2, c3) = (sums, sums.add(TILE), sums.add(TILE * ld), sums.add(TILE * ld + TILE));
        // The configuration is the same for every unit, so each thread loads it once and
        // keeps it: `ldtilecfg` took a quarter of this function's time when every unit
        // loaded it and released the tiles after (`perf annotate` of `bench --precision
        // bf16` at 64 px). Linux saves and restores the tile state of a thread with its
        // other registers, and no other code of the engine touches the tiles.
        if !TILES_CONFIGURED.get() {
            asm!("ldtilecfg [{}]", in(reg) &CONFIG as *const TileConfig, options(nostack, readonly));
            TILES_CONFIGURED.set(true);
        }
        if add {
            asm!(
                "tileloadd tmm0, [{c0} + {s}*1]",
                "tileloadd tmm1, [{c1} + {s}*1]",
                "tileloadd tmm2, [{c2} + {s}*1]",
                "tileloadd tmm3, [{c3} + {s}*1]",
                c0 = in(reg) c0, c1 = in(reg) c1, c2 = in(reg) c2, c3 = in(reg) c3, s = in(reg) row,
                options(nostack, readonly),
            );
        } else {
            asm!("tilezero tmm0", "tilezero tmm1", "tilezero tmm2", "tilezero tmm3", options(nostack, nomem));
        }
        let (a0, a1, b0, b1) = (a[0].as_ptr(), a[1].as_ptr(), b[0].as_ptr(), b[1].as_ptr());
        for t in 0..tiles {
            let off = t * TILE_LEN;
            asm!(
                "tileloadd tmm4, [{a0} + {s}*1]",
                "tileloadd tmm6, [{b0} + {s}*1]",
                "tdpbf16ps tmm0, tmm4, tmm6",
                "tileloadd tmm7, [{b1} + {s}*1]",
                "tdpbf16ps tmm1, tmm4, tmm7",
                "tileloadd tmm5, [{a1} + {s}*1]",
                "tdpbf16ps tmm2, tmm5, tmm6",
                "tdpbf16ps tmm3, tmm5, tmm7",
                a0 = in(reg) a0.add(off),
                a1 = in(reg) a1.add(off),
                b0 = in(reg) b0.add(off),
                b1 = in(reg) b1.add(off),
                s = in(reg) STRIDE,
                options(nostack, readonly),
            );
        }
        asm!(
            "tilestored [{c0} + {s}*1], tmm0",
            "tilestored [{c1} + {s}*1], tmm1",
            "tilestored [{c2} + {s}*1], tmm2",
            "tilestored [{c3} + {s}*1], tmm3",
            c0 = in(reg) c0, c1 = in(reg) c1, c2 = in(reg) c2, c3 = in(reg) c3, s = in(reg) row,
            options(nostack),
        );
    }

    /// Row pair `lo`, `hi` (k = 2p, 2p + 1; `hi` absent past the end of k) of `b` into the
    /// VNNI rows of its panels: panel `cb`'s 16 u32 at `dst + cb * panel`, each the bf16 of
    /// `lo[j]` in its low half and of `hi[j]` (or zero) in its high half, for the columns
    /// `16 cb + j < lo.len()`. `vcvtne2ps2bf16` rounds to nearest even as `bf16_bits` does,
    /// NaN kept a quiet NaN; it reads a subnormal as zero, as the AMX and AVX-512 dot
    /// products (the only users of these tiles) read a subnormal bf16.
    ///
    /// # Safety
    /// AVX512F, AVX512BW and AVX512_BF16 present; `dst + cb * panel` holds 16 u32 for
    /// every panel `cb < lo.len().div_ceil(16)`, and `hi`, when present, is as long as `lo`.
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    pub unsafe fn pair_rows(lo: &[f32], hi: Option<&[f32]>, dst: *mut u32, panel: usize) {
        let n = lo.len();
        // Word 2j of the result is lo's column j, word 2j + 1 hi's (which sit at 16 + j
        // after the conversion).
        let order = _mm512_set_epi16(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8, 23, 7, 22, 6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
        for cb in 0..n.div_ceil(TILE) {
            let cols = TILE.min(n - cb * TILE);
            let mask = low_bits(cols);
            let l = _mm512_maskz_loadu_ps(mask, lo.as_ptr().add(cb * TILE));
            let h = match hi {
                Some(hi) => _mm512_maskz_loadu_ps(mask, hi.as_ptr().add(cb * TILE)),
                None => _mm512_setzero_ps(),
            };
            let words: __m512i = std::mem::transmute(_mm512_cvtne2ps_pbh(h, l));
            _mm512_mask_storeu_epi32(dst.add(cb * panel) as *mut _, mask, _mm512_permutexvar_epi16(order, words));
        }
    }

    /// `rows` rows of `kn <= 32` values (`src[r * ld..][..kn]`) into rows of a tile of `a`
    /// (`tile[r * 32..][..kn]`), rounded as `pair_rows` rounds.
    ///
    /// # Safety
    /// AVX512F, AVX512BW and AVX512_BF16 present; `src` holds row `rows - 1`'s kn values, and
    /// `tile` `rows` rows of 32.
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    pub unsafe fn tile_rows(src: &[f32], ld: usize, rows: usize, kn: usize, tile: &mut [u16]) {
        assert!(kn <= TILE_K && rows <= TILE && tile.len() >= rows * TILE_K && (rows == 0 || (rows - 1) * ld + kn <= src.len()));
        let (lo, hi): (__mmask16, __mmask16) = (low_bits(kn.min(TILE)), low_bits(kn.saturating_sub(TILE)));
        let both: __mmask32 = if kn == TILE_K { !0 } else { (1u32 << kn) - 1 };
        for r in 0..rows {
            let at = src.as_ptr().add(r * ld);
            // `wrapping_add`: with kn <= 16 the second half lies past the row, masked off.
            let (l, h) = (_mm512_maskz_loadu_ps(lo, at), _mm512_maskz_loadu_ps(hi, at.wrapping_add(TILE)));
            let words: __m512i = std::mem::transmute(_mm512_cvtne2ps_pbh(h, l));
            _mm512_mask_storeu_epi16(tile.as_mut_ptr().add(r * TILE_K) as *mut i16, both, words);
        }
    }

    /// The mask of the lowest `n <= 16` lanes.
    #[inline(always)]
    fn low_bits(n: usize) -> __mmask16 {
        if n >= 16 {
            !0
        } else {
            (1u16 << n) - 1
        }
    }

    /// One 16 x 16 block: `out[r * ld + j]` (=|+=) `sum over k of a[r][k] b[k][j]`, with `a`
    /// one block and `b` one panel of `tiles` tiles.
    ///
    /// # Safety
    /// AVX512F and AVX512_BF16 present; `a` and `b` hold `tiles` tiles each; `out` is 16 rows
    /// of `ld` floats.
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub unsafe fn avx512_16x16(a: *const u16, b: *const u16, tiles: usize, add: bool, out: *mut f32, ld: usize) {
        let mut acc = [_mm512_setzero_ps(); TILE];
        if add {
            for (r, acc) in acc.iter_mut().enumerate() {
                *acc = _mm512_loadu_ps(out.add(r * ld));
            }
        }
        for t in 0..tiles {
            let (at, bt) = (a.add(t * TILE_LEN), b.add(t * TILE_LEN));
            for p in 0..TILE_K / 2 {
                // The 16 columns' values for k = 2p and 2p + 1, in pairs.
                let bv: __m512bh = std::mem::transmute(_mm512_loadu_si512(bt.add(p * 2 * TILE) as *const _));
                for (r, acc) in acc.iter_mut().enumerate() {
                    // Row r's pair (k = 2p, 2p + 1), broadcast to every column. It goes
                    // last, where `vdpbf16ps` takes a memory operand, so the broadcast is
                    // folded into the dot product (`{1to16}`) instead of a separate
                    // `vbroadcastss` per row: a quarter off this kernel's time on Zen 4 (the products
                    // are the same either way round, so are the sums).
                    let pair = (at.add(r * TILE_K + 2 * p) as *const i32).read_unaligned();
                    let av: __m512bh = std::mem::transmute(_mm512_set1_epi32(pair));
                    *acc = _mm512_dpbf16_ps(*acc, bv, av);
                }
            }
        }
        for (r, acc) in acc.iter().enumerate() {
            _mm512_storeu_ps(out.add(r * ld), *acc);
        }
    }
}

/// The `F32` kernel: the operands rounded to bf16 into f32 matrices, then the f32 GEMM.
#[allow(clippy::too_many_arguments)]
fn matmul_rounded_f32(
    threads: bool,
    m: usize,
    n: usize,
    k: usize,
    c: &mut [f32],
    ldc: usize,
    accumulate: bool,
    a: &[f32],
    a_rs: isize,
    a_cs: isize,
    b: &[f32],
    b_rs: isize,
    b_cs: isize,
) {
    let round = |rows: usize, cols: usize, src: &[f32], rs: isize, cs: isize| -> Vec<f32> {
        let (rs, cs) = (rs as usize, cs as usize);
        let mut out = vec![0.0f32; rows * cols];
        if rows * cols > 0 {
            out.chunks_mut(cols).enumerate().for_each(|(r, row)| row.iter_mut().enumerate().for_each(|(j, v)| *v = round_bf16(src[r * rs + j * cs])));
        }
        out
    };
    let (ar, br) = (round(m, k, a, a_rs, a_cs), round(k, n, b, b_rs, b_cs));
    super::gemm::matmul_exact(threads, m, n, k, c, ldc, accumulate, &ar, k as isize, 1, &br, n as isize, 1);
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;
    use crate::backend::precision::bf16_bits;

    /// Values at every corner of the rounding: ties both ways, the largest finite values,
    /// infinities, zeros, quiet and signalling NaNs, the smallest normals, subnormals, and
    /// a spread of ordinary ones.
    fn corners() -> Vec<f32> {
        let mut v: Vec<f32> = [
            0x3f80_8000u32,
            0x3f81_8000,
            0x3f80_8001,
            0xbf80_8000,
            0x7f7f_ffff,
            0xff7f_ffff,
            0x7f80_0000,
            0xff80_0000,
            0,
            0x8000_0000,
            0x7fc0_0000,
            0x7f80_0001,
            0xffa0_0000,
            0x0080_0000,
            0x8080_0000,
            0x0040_0000,
            0x8000_0001,
            0x007f_ffff,
            0x807f_8000,
        ]
        .into_iter()
        .map(f32::from_bits)
        .collect();
        let mut rng = crate::rng::Rng::new(3);
        let mut r = vec![0.0f32; 45];
        rng.fill_normal(&mut r, 0.0, 100.0);
        v.extend(r);
        v
    }

    /// What the hardware conversion gives: `bf16_bits`, but a subnormal becomes the zero of
    /// its sign.
    fn expected(x: f32) -> u16 {
        if x.is_subnormal() {
            ((x.to_bits() >> 16) & 0x8000) as u16
        } else {
            bf16_bits(x)
        }
    }

    #[test]
    fn hardware_conversion_is_bf16_bits_but_for_subnormals_which_the_kernels_read_as_zero() {
        if !avx512_bf16() {
            eprintln!("skipped: this CPU lacks AVX512_BF16, and nothing packs for a bf16 kernel here");
            return;
        }
        let v = corners();
        // Row pairs into panels (lengths past a panel and a ragged edge; no `hi` row).
        for n in [1, 16, 17, v.len() / 2] {
            let (lo, hi) = (&v[..n], &v[v.len() - n..]);
            for with_hi in [true, false] {
                let panels = n.div_ceil(TILE);
                let mut d = vec![0xdead_beefu32; panels * 2 * TILE];
                // SAFETY: AVX512_BF16 present; panel cb's 16 u32 at cb * 2 TILE.
                unsafe { x86::pair_rows(lo, with_hi.then_some(hi), d.as_mut_ptr(), 2 * TILE) };
                for j in 0..n {
                    let at = j / TILE * 2 * TILE + j % TILE;
                    let want = expected(lo[j]) as u32 | if with_hi { (expected(hi[j]) as u32) << 16 } else { 0 };
                    assert_eq!(d[at], want, "pair_rows n {n} column {j}: {:08x} {:08x}", lo[j].to_bits(), hi[j].to_bits());
                }
                // Past the last column of each panel, nothing is written.
                for (j, x) in d.iter().enumerate() {
                    if j % (2 * TILE) >= TILE || j / (2 * TILE) * TILE + j % (2 * TILE) >= n {
                        assert_eq!(*x, 0xdead_beef, "pair_rows n {n} wrote u32 {j}");
                    }
                }
            }
        }
        // Rows of a tile of `a`, every k length up to 32.
        for kn in 1..=TILE_K {
            let rows = v.len() / kn.max(1);
            let rows = rows.min(TILE);
            let mut tile = vec![0xbeefu16; TILE_LEN];
            // SAFETY: AVX512_BF16 present; rows r < rows hold kn values from r * kn.
            unsafe { x86::tile_rows(&v, kn, rows, kn, &mut tile) };
            for r in 0..TILE {
                for kk in 0..TILE_K {
                    let got = tile[r * TILE_K + kk];
                    let want = if r < rows && kk < kn { expected(v[r * kn + kk]) } else { 0xbeef };
                    assert_eq!(got, want, "tile_rows kn {kn} ({r}, {kk})");
                }
            }
        }
        // Both dot-product kernels read a subnormal bf16 (0x0040) as zero: times 2^100 it
        // gives 0, not 7.45e-9, so a subnormal flushed by the conversion changes no sum.
        let (mut a, mut b) = (vec![0u16; 2 * TILE_LEN], vec![0u16; 2 * TILE_LEN]);
        (a[0], b[0]) = (0x0040, 0x7180);
        let mut sums = vec![1.0f32; 4 * TILE * TILE];
        assert!(Bf16Kernel::Avx512.available());
        // SAFETY: AVX512_BF16 present; one tile of each operand; 16 rows of 32 sums.
        unsafe { x86::avx512_16x16(a.as_ptr(), b.as_ptr(), 1, false, sums.as_mut_ptr(), 2 * TILE) };
        assert_eq!(sums[0], 0.0, "the AVX-512 kernel reads a subnormal bf16 as {}", sums[0] / 2f32.powi(100));
        if Bf16Kernel::Amx.available() {
            sums.fill(1.0);
            // SAFETY: AMX usable; two tiles of each operand; 32 rows of 32 sums.
            unsafe { x86::amx_2x2([&a[..TILE_LEN], &a[TILE_LEN..]], [&b[..TILE_LEN], &b[TILE_LEN..]], 1, false, sums.as_mut_ptr(), 2 * TILE) };
            assert_eq!(sums[0], 0.0, "the AMX kernel reads a subnormal bf16 as {}", sums[0] / 2f32.powi(100));
        } else {
            eprintln!("skipped: the AMX half of the subnormal check (no AMX here)");
        }
    }
}
