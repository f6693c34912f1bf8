//! The one place the CPU backend calls a GEMM library.

use super::Elem;

/// `c[m x n] (=|+=) a[m x k] . b[k x n]`, where `c` is row-major with row stride `ldc`,
/// and `a`, `b` are addressed through (row, column) strides, so transposes are free.
/// Large products use every thread of the pool.
#[allow(clippy::too_many_arguments)]
pub fn matmul<T: Elem>(
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
    matmul_on(true, m, n, k, c, ldc, accumulate, a, a_rs, a_cs, b, b_rs, b_cs)
}

/// `matmul` with `threads` false runs on the calling thread alone, for callers that have
/// already given each thread its own work.
#[allow(clippy::too_many_arguments)]
pub fn matmul_on<T: Elem>(
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
        if !accumulate {
            for r in 0..m {
                c[r * ldc..r * ldc + n].iter_mut().for_each(|v| *v = T::zero());
            }
        }
        return;
    }
    let last = |rows: usize, cols: usize, rs: isize, cs: isize| (rows as isize - 1) * rs + (cols as isize - 1) * cs;
    assert!(a_rs >= 0 && a_cs >= 0 && b_rs >= 0 && b_cs >= 0, "matmul: negative stride");
    assert!((last(m, k, a_rs, a_cs) as usize) < a.len(), "matmul: lhs out of bounds");
    assert!((last(k, n, b_rs, b_cs) as usize) < b.len(), "matmul: rhs out of bounds");
    assert!((m - 1) * ldc + n <= c.len(), "matmul: dst out of bounds");
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
