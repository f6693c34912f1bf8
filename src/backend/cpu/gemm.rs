//! The one place the CPU backend calls a GEMM library, and where a bf16 backend's GEMMs
//! turn to its own kernels (`bf16.rs`).

use super::bf16::{self, Bf16Kernel};
use super::Elem;
use std::any::TypeId;

/// `c[m x n] (=|+=) a[m x k] . b[k x n]`, where `c` is row-major with row stride `ldc`,
/// and `a`, `b` are addressed through (row, column) strides, so transposes are free.
/// Large products use every thread of the pool. With `bf16` (a backend of `--precision
/// bf16`) an f32 product runs on that bf16 kernel: operands rounded to bf16, sums in f32.
#[allow(clippy::too_many_arguments)]
pub fn matmul<T: Elem>(
    bf16: Option<Bf16Kernel>,
    m: usize,
    n: usize,
    k: usize,
    c: &mut [T],
    ldc: usize,
    accumulate: bool,
    a: &[T],
    a_rs: isize,
    a_cs: isize,
    b: &[T],
    b_rs: isize,
    b_cs: isize,
) {
    matmul_on(bf16, true, m, n, k, c, ldc, accumulate, a, a_rs, a_cs, b, b_rs, b_cs)
}

/// `matmul` with `threads` false runs on the calling thread alone, for callers that have
/// already given each thread its own work.
#[allow(clippy::too_many_arguments)]
pub fn matmul_on<T: Elem>(
    bf16: Option<Bf16Kernel>,
    threads: bool,
    m: usize,
    n: usize,
    k: usize,
    c: &mut [T],
    ldc: usize,
    accumulate: bool,
    a: &[T],
    a_rs: isize,
    a_cs: isize,
    b: &[T],
    b_rs: isize,
    b_cs: isize,
) {
    if let (Some(kernel), Some(c), Some(a), Some(b)) = (bf16, f32s_mut(c), f32s(a), f32s(b)) {
        check_bounds(m, n, k, c.len(), ldc, a.len(), a_rs, a_cs, b.len(), b_rs, b_cs);
        if m == 0 || n == 0 {
            return;
        }
        if k == 0 {
            return zero_unless(accumulate, m, n, c, ldc);
        }
        return bf16::matmul(kernel, threads, m, n, k, c, ldc, accumulate, a, a_rs, a_cs, b, b_rs, b_cs);
    }
    matmul_exact(threads, m, n, k, c, ldc, accumulate, a, a_rs, a_cs, b, b_rs, b_cs)
}

/// A left operand `a` (m x k, strides `rs`, `cs`) for many products with different right
/// operands (a convolution's weights, over the pieces of its batch), with the backend's
/// bf16 kernel, if any. On a bf16 kernel that packs, it is packed to bf16 once here rather
/// than in every product; the products are the same, bit for bit.
pub struct Lhs<'a, T> {
    bf16: Option<Bf16Kernel>,
    m: usize,
    k: usize,
    a: &'a [T],
    rs: isize,
    cs: isize,
    packed: Option<bf16::PackedA>,
}

impl<'a, T: Elem> Lhs<'a, T> {
    pub fn new(bf16: Option<Bf16Kernel>, m: usize, k: usize, a: &'a [T], rs: isize, cs: isize) -> Lhs<'a, T> {
        let packed = match (bf16, f32s(a)) {
            (Some(kernel), Some(a)) => bf16::PackedA::new(kernel, true, m, k, a, rs, cs),
            _ => None,
        };
        Lhs { bf16, m, k, a, rs, cs, packed }
    }

    /// Whether `matmul_lhs` will not read `a` itself (so it need not be laid out for it).
    pub fn is_packed(&self) -> bool {
        self.packed.is_some()
    }
}

/// `matmul_on` with the left operand `lhs`: `c[m x n] (=|+=) lhs[m x k] . b[k x n]`.
#[allow(clippy::too_many_arguments)]
pub fn matmul_lhs<T: Elem>(threads: bool, n: usize, c: &mut [T], ldc: usize, accumulate: bool, lhs: &Lhs<'_, T>, b: &[T], b_rs: isize, b_cs: isize) {
    if let (Some(packed), Some(c), Some(b)) = (&lhs.packed, f32s_mut(c), f32s(b)) {
        return bf16::matmul_packed(threads, packed, n, c, ldc, accumulate, b, b_rs, b_cs);
    }
    matmul_on(lhs.bf16, threads, lhs.m, n, lhs.k, c, ldc, accumulate, lhs.a, lhs.rs, lhs.cs, b, b_rs, b_cs)
}

fn f32s<T: Elem>(s: &[T]) -> Option<&[f32]> {
    // SAFETY: T is f32 itself, so the cast is the identity.
    (TypeId::of::<T>() == TypeId::of::<f32>()).then(|| unsafe { &*(s as *const [T] as *const [f32]) })
}

fn f32s_mut<T: Elem>(s: &mut [T]) -> Option<&mut [f32]> {
    // SAFETY: as in f32s.
    (TypeId::of::<T>() == TypeId::of::<f32>()).then(|| unsafe { &mut *(s as *mut [T] as *mut [f32]) })
}

fn zero_unless<T: Elem>(accumulate: bool, m: usize, n: usize, c: &mut [T], ldc: usize) {
    if !accumulate {
        for r in 0..m {
            c[r * ldc..r * ldc + n].iter_mut().for_each(|v| *v = T::zero());
        }
    }
}

/// Every index a product touches lies inside its slices.
#[allow(clippy::too_many_arguments)]
fn check_bounds(m: usize, n: usize, k: usize, c_len: usize, ldc: usize, a_len: usize, a_rs: isize, a_cs: isize, b_len: usize, b_rs: isize, b_cs: isize) {
    if m == 0 || n == 0 || k == 0 {
        return;
    }
    check_operand("lhs", m, k, a_len, a_rs, a_cs);
    check_operand("rhs", k, n, b_len, b_rs, b_cs);
    check_dst(m, n, c_len, ldc);
}

/// A `rows x cols` operand (both non-zero) at strides `rs`, `cs` lies inside `len` values.
pub(super) fn check_operand(name: &str, rows: usize, cols: usize, len: usize, rs: isize, cs: isize) {
    assert!(rs >= 0 && cs >= 0, "matmul: negative stride in the {name}");
    let last = (rows as isize - 1) * rs + (cols as isize - 1) * cs;
    assert!((last as usize) < len, "matmul: {name} out of bounds");
}

/// An `m x n` result (both non-zero) at row stride `ldc` lies inside `c_len` values.
pub(super) fn check_dst(m: usize, n: usize, c_len: usize, ldc: usize) {
    assert!((m - 1) * ldc + n <= c_len, "matmul: dst out of bounds");
}

/// `matmul_on` without the bf16 dispatch (the f32 kernel of `bf16.rs` multiplies its
/// rounded operands with it).
#[allow(clippy::too_many_arguments)]
pub(super) fn matmul_exact<T: Elem>(
    threads: bool,
    m: usize,
    n: usize,
    k: usize,
    c: &mut [T],
    ldc: usize,
    accumulate: bool,
    a: &[T],
    a_rs: isize,
    a_cs: isize,
    b: &[T],
    b_rs: isize,
    b_cs: isize,
) {
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        return zero_unless(accumulate, m, n, c, ldc);
    }
    check_bounds(m, n, k, c.len(), ldc, a.len(), a_rs, a_cs, b.len(), b_rs, b_cs);
    let work = m * n * k;
    let parallelism = if !threads || work < (1 << 18) || rayon::current_num_threads() == 1 {
        gemm::Parallelism::None
    } else {
        gemm::Parallelism::Rayon(rayon::current_num_threads())
    };
    // SAFETY: every index the routine touches lies inside the slices, as asserted above;
    // `c` is exclusively borrowed and does not alias `a` or `b`.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            ldc as isize,
            accumulate,
            a.as_ptr(),
            a_cs,
            a_rs,
            b.as_ptr(),
            b_cs,
            b_rs,
            T::one(),
            T::one(),
            false,
            false,
            false,
            parallelism,
        );
    }
}
