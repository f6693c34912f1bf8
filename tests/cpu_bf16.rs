//! The CPU's bf16 GEMM kernels (`backend/cpu/bf16.rs`): each one this CPU runs against the
//! twin (the f32 GEMM of the operands rounded to bf16), and that twin against a direct f64
//! loop on the rounded operands; then every op at awkward shapes on a bf16 backend against
//! the same ops on the twin backend. The f32 kernel runs everywhere, so CI checks the
//! fallback whatever its CPU; the AMX and AVX512_BF16 rows say when they are skipped.

use gan_engine::backend::cpu::bf16::{matmul, matmul_packed, Bf16Kernel, PackedA};
use gan_engine::backend::cpu::Cpu;
use gan_engine::backend::precision::round_bf16;
use gan_engine::rng::Rng;
use gan_engine::verify::{self, Checker, TOL_GEMM};

/// One product through `kernel`, `a` and `b` stored either way round.
#[allow(clippy::too_many_arguments)]
fn product(
    kernel: Bf16Kernel,
    threads: bool,
    m: usize,
    n: usize,
    k: usize,
    a: &[f32],
    b: &[f32],
    a_t: bool,
    b_t: bool,
    c0: &[f32],
    accumulate: bool,
) -> Vec<f32> {
    let (a_rs, a_cs) = if a_t { (1, m as isize) } else { (k as isize, 1) };
    let (b_rs, b_cs) = if b_t { (1, k as isize) } else { (n as isize, 1) };
    // c has a row stride wider than n (as `operands` makes it), so the kernels must leave
    // the gap alone.
    let ldc = n + 3;
    let mut c = c0.to_vec();
    matmul(kernel, threads, m, n, k, &mut c, ldc, accumulate, a, a_rs, a_cs, b, b_rs, b_cs);
    c
}

/// Normal `a` (m x k), `b` (k x n) and a starting `c` whose rows are `ldc = n + 3` apart
/// (the gap included after the last row).
fn operands(rng: &mut Rng, m: usize, n: usize, k: usize) -> (Vec<f32>, Vec<f32>, Vec<f32>, usize) {
    let (mut a, mut b) = (vec![0.0f32; m * k], vec![0.0f32; k * n]);
    rng.fill_normal(&mut a, 0.0, 1.0);
    rng.fill_normal(&mut b, 0.0, 1.0);
    let ldc = n + 3;
    let mut c0 = vec![0.0f32; (m - 1) * ldc + n + 3];
    rng.fill_normal(&mut c0, 0.0, 1.0);
    (a, b, c0, ldc)
}

/// `sum_k bf16(a) bf16(b)` in f64, and `sum_k |a b|` (the scale of the f32 rounding).
fn direct(m: usize, n: usize, k: usize, a: &[f32], b: &[f32], a_t: bool, b_t: bool) -> (Vec<f64>, Vec<f64>) {
    let (mut y, mut s) = (vec![0.0; m * n], vec![0.0; m * n]);
    for i in 0..m {
        for j in 0..n {
            for q in 0..k {
                let av = round_bf16(if a_t { a[q * m + i] } else { a[i * k + q] }) as f64;
                let bv = round_bf16(if b_t { b[j * k + q] } else { b[q * n + j] }) as f64;
                y[i * n + j] += av * bv;
                s[i * n + j] += (av * bv).abs();
            }
        }
    }
    (y, s)
}

#[test]
fn every_bf16_kernel_matches_the_rounded_twin() {
    let mut rng = Rng::new(5);
    let kernels: Vec<Bf16Kernel> = Bf16Kernel::ALL.into_iter().filter(|k| k.available()).collect();
    for k in Bf16Kernel::ALL.into_iter().filter(|k| !k.available()) {
        eprintln!("skipped: the {} bf16 kernel does not run on this CPU", k.label());
    }
    // Shapes past every tile edge (16 rows, 16 columns, 32 k, units of 32 x 32), a k of 1
    // and long ones (2,100: past a chunk of 64 tiles, with units inside `c` and at its
    // edges; with 130 rows, bands of 2, 2 and 1 row pairs), and one large enough to be
    // spread over the threads.
    for &(m, n, k) in
        &[(1, 1, 1), (3, 5, 7), (17, 33, 31), (16, 16, 32), (40, 70, 65), (64, 48, 300), (5, 9, 1000), (40, 70, 2100), (130, 70, 2100), (96, 160, 96)]
    {
        for (a_t, b_t) in [(false, false), (true, false), (false, true), (true, true)] {
            let (a, b, c0, ldc) = operands(&mut rng, m, n, k);
            let (want, scale) = direct(m, n, k, &a, &b, a_t, b_t);
            for &kernel in &kernels {
                for threads in [false, true] {
                    for accumulate in [false, true] {
                        let got = product(kernel, threads, m, n, k, &a, &b, a_t, b_t, &c0, accumulate);
                        for i in 0..m {
                            for j in 0..n {
                                let at = i * ldc + j;
                                let base = if accumulate { c0[at] as f64 } else { 0.0 };
                                // f32 sums of exact products: a few units of 2^-24 of sum |a b| per term's
                                // place in the chain, far below one bf16 rounding (2^-8).
                                let bound = 4.0 * (k as f64).sqrt() * f32::EPSILON as f64 * (scale[i * n + j] + base.abs()) + 1e-30;
                                let err = (got[at] as f64 - base - want[i * n + j]).abs();
                                assert!(
                                    err <= bound,
                                    "{} m{m} n{n} k{k} a_t {a_t} b_t {b_t} threads {threads} acc {accumulate}: c[{i},{j}] off by {err:e} > {bound:e}",
                                    kernel.label()
                                );
                            }
                            // The gap between rows is never written.
                            for j in n..ldc.min(got.len() - i * ldc) {
                                assert_eq!(got[i * ldc + j].to_bits(), c0[i * ldc + j].to_bits(), "{} wrote past column n", kernel.label());
                            }
                        }
                    }
                }
            }
        }
    }
}

/// A left operand packed once (`PackedA`, what a convolution does with its weights over
/// the pieces of a batch) gives the very bits of packing it in every call, whichever way
/// round `a` is stored, written or accumulated, on one thread or all.
#[test]
fn a_packed_left_operand_gives_the_bits_of_packing_per_call() {
    let mut rng = Rng::new(11);
    let kernels: Vec<Bf16Kernel> = Bf16Kernel::ALL.into_iter().filter(|k| *k != Bf16Kernel::F32 && k.available()).collect();
    if kernels.is_empty() {
        eprintln!("skipped: this CPU runs neither the AMX nor the AVX512_BF16 kernel, the two that pack");
        return;
    }
    assert!(PackedA::new(Bf16Kernel::F32, false, 4, 4, &[0.0; 16], 4, 1).is_none(), "the f32 kernel does not pack");
    for &(m, n, k) in &[(3, 5, 7), (40, 70, 65), (64, 96, 300), (128, 64, 1024)] {
        for a_t in [false, true] {
            let (a, b, c0, ldc) = operands(&mut rng, m, n, k);
            let (a_rs, a_cs) = if a_t { (1, m as isize) } else { (k as isize, 1) };
            for &kernel in &kernels {
                let packed = PackedA::new(kernel, true, m, k, &a, a_rs, a_cs).expect("a packing kernel packs");
                for threads in [false, true] {
                    for accumulate in [false, true] {
                        let want = product(kernel, threads, m, n, k, &a, &b, a_t, false, &c0, accumulate);
                        let mut got = c0.clone();
                        matmul_packed(threads, &packed, n, &mut got, ldc, accumulate, &b, n as isize, 1);
                        let same = want.iter().zip(&got).all(|(x, y)| x.to_bits() == y.to_bits());
                        assert!(same, "{} m{m} n{n} k{k} a_t {a_t} threads {threads} acc {accumulate}: packed once differs", kernel.label());
                    }
                }
            }
        }
    }
}

/// Every op of the contract at the awkward shapes of the kernel checks, on a bf16 backend
/// with each kernel against the same ops on the twin backend (f32 kernel): GEMM-shaped
/// results within f32 summation-order error (TOL_GEMM), the rest identical in kind.
#[test]
fn ops_on_every_bf16_kernel_match_the_twin_backend() {
    for kernel in Bf16Kernel::ALL.into_iter().filter(|k| *k != Bf16Kernel::F32) {
        if !kernel.available() {
            eprintln!("skipped: the {} bf16 kernel does not run on this CPU", kernel.label());
            continue;
        }
        let be = Cpu::with_bf16_kernel(kernel).unwrap();
        let twin = Cpu::with_bf16_kernel(Bf16Kernel::F32).unwrap();
        let mut c = Checker::with_twin(&be, twin, 3, TOL_GEMM);
        verify::awkward_shapes(&mut c).unwrap();
        let failed: Vec<String> = c.rows.iter().filter(|r| !r.passed).map(|r| format!("{} {}: rel err {:.2e}", r.kernel_label(), r.shape, r.max_rel)).collect();
        assert!(failed.is_empty(), "{}: {failed:#?}", kernel.label());
        assert!(c.rows.len() > 40, "{} rows", c.rows.len());
    }
}

/// The rounding is really there: a bf16 backend's conv differs from the f32 one by about
/// the bf16 unit roundoff, and the twin backend (f32 kernel) by exactly what the operand
/// rounding explains.
#[test]
fn bf16_backends_differ_from_f32_by_the_operand_rounding() {
    use gan_engine::backend::prelude::*;
    use gan_engine::backend::ConvParams;
    let p = ConvParams::conv2d(2, 16, 8, 8, 8, 4, 2, 1);
    let mut rng = Rng::new(9);
    let mut x = vec![0.0f32; p.in_len()];
    let mut w = vec![0.0f32; p.weight_len()];
    rng.fill_normal(&mut x, 0.0, 1.0);
    rng.fill_normal(&mut w, 0.0, 1.0);
    let run = |be: &Cpu, x: &[f32], w: &[f32]| {
        let mut y = vec![0.0f32; p.out_len()];
        be.conv2d_forward(&p, &x.to_vec(), &w.to_vec(), None, &mut y).unwrap();
        y
    };
    let f32be = Cpu::new();
    let exact = run(&f32be, &x, &w);
    let rounded_inputs: (Vec<f32>, Vec<f32>) = (x.iter().map(|v| round_bf16(*v)).collect(), w.iter().map(|v| round_bf16(*v)).collect());
    let want = run(&f32be, &rounded_inputs.0, &rounded_inputs.1);
    for kernel in Bf16Kernel::ALL.into_iter().filter(|k| k.available()) {
        let got = run(&Cpu::with_bf16_kernel(kernel).unwrap(), &x, &w);
        let to_rounded = verify::rel_l2(&want, &got);
        let to_exact = verify::rel_l2(&exact, &got);
        assert!(to_rounded < 1e-6, "{}: {to_rounded:e} from the f32 conv of rounded operands", kernel.label());
        // Two operands each off by up to 2^-8 relative (about 2^-8 / sqrt(3) RMS each).
        assert!(to_exact > 1e-4 && to_exact < 1e-2, "{}: {to_exact:e} from the f32 conv", kernel.label());
    }
}

#[test]
fn a_forced_kernel_this_cpu_lacks_is_an_error_naming_the_variable() {
    for k in Bf16Kernel::ALL {
        let r = Cpu::with_bf16_kernel(k);
        assert_eq!(r.is_ok(), k.available(), "{}", k.label());
    }
    assert!(Bf16Kernel::F32.available());
    assert!(Bf16Kernel::best().available());
}
