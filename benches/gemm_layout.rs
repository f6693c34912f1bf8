//! Two facts about this machine that shape the CPU convolutions, measured directly:
//!
//! - the `gemm` crate's speed depends on the layout of the right-hand operand: the weight
//!   gradient `dw[co, kd] += dy[co, ld] . cols^T` at a 64 px D layer's shape (128 x 1024,
//!   reduced over 8192) with the column matrix read transposed, against the same product
//!   with a row-major `[ld, kd]` operand (what `im2row` writes);
//! - memory bandwidth: one copy of 64 MiB between two buffers (read + write counted);
//! - on one thread, the left operand's layout too: one image's column product of the CPU
//!   convolutions' image split with the weights read transposed, against the same product
//!   with the weights transposed beforehand (what the split does);
//! - on one thread, the `gemm` crate against `matrixmultiply` at one image's three products
//!   of D's 64 -> 128 layer (forward, input gradient, weight gradient), the calls the image
//!   split makes: which CPU GEMM the backend should use at its own shapes.
//!
//! - each bf16 GEMM kernel of the CPU (`backend/cpu/bf16.rs`: AMX, AVX512_BF16, and the f32
//!   GEMM of rounded operands they fall back to) at one of the model's GEMM shapes, on one
//!   thread and on all, where this CPU has it.
//!
//!     cargo bench --bench gemm_layout

use criterion::measurement::WallTime;
use criterion::{criterion_group, criterion_main, BenchmarkGroup, Criterion, Throughput};
use std::time::Duration;

/// A group of `samples` samples after half a second of warm-up, `secs` seconds of
/// measurement, and `throughput` per iteration.
fn timed_group<'a>(c: &'a mut Criterion, name: &str, samples: usize, secs: u64, throughput: Throughput) -> BenchmarkGroup<'a, WallTime> {
    let mut g = c.benchmark_group(name);
    g.sample_size(samples).warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(secs));
    g.throughput(throughput);
    g
}

#[allow(clippy::too_many_arguments)]
fn product(m: usize, n: usize, k: usize, c: &mut [f32], a: &[f32], a_rs: isize, a_cs: isize, b: &[f32], b_rs: isize, b_cs: isize) {
    product_on(gemm::Parallelism::Rayon(rayon::current_num_threads()), m, n, k, c, a, a_rs, a_cs, b, b_rs, b_cs)
}

#[allow(clippy::too_many_arguments)]
fn product_on(par: gemm::Parallelism, m: usize, n: usize, k: usize, c: &mut [f32], a: &[f32], a_rs: isize, a_cs: isize, b: &[f32], b_rs: isize, b_cs: isize) {
    assert!(c.len() >= m * n && a.len() >= m * k && b.len() >= k * n);
    // SAFETY: the asserted lengths cover every index the strides reach; c aliases nothing.
    unsafe {
        gemm::gemm(m, n, k, c.as_mut_ptr(), 1, n as isize, true, a.as_ptr(), a_cs, a_rs, b.as_ptr(), b_cs, b_rs, 1.0, 1.0, false, false, false, par);
    }
}

fn layout(c: &mut Criterion) {
    let (co, kd, ld) = (128usize, 1024usize, 8192usize);
    let dy = vec![0.5f32; co * ld];
    let cols = vec![0.25f32; kd * ld];
    let mut dw = vec![0.0f32; co * kd];
    let mut group = timed_group(c, "gemm_layout", 10, 3, Throughput::Elements((2 * co * kd * ld) as u64));
    // cols is [kd, ld]: read as cols^T[ld, kd] it has row stride 1 and column stride ld.
    group.bench_function("weight_grad/cols_transposed", |b| b.iter(|| product(co, kd, ld, &mut dw, &dy, ld as isize, 1, &cols, 1, ld as isize)));
    // The same values laid out as rows[ld, kd]: row stride kd, column stride 1.
    group.bench_function("weight_grad/rows_row_major", |b| b.iter(|| product(co, kd, ld, &mut dw, &dy, ld as isize, 1, &cols, kd as isize, 1)));
    group.finish();

    // One image's GEMM-then-col2im product on one thread, as the image split of the CPU
    // convolutions runs it: cols[kd, p] = w^T[kd, co] . dy[co, p] for D's 64 -> 128 layer
    // at 64 px, with the weights w[co, kd] read transposed or transposed beforehand.
    let p = 256;
    let w = vec![0.5f32; co * kd];
    let dyi = vec![0.25f32; co * p];
    let mut ci = vec![0.0f32; kd * p];
    let mut group = timed_group(c, "gemm_layout_one_thread", 20, 2, Throughput::Elements((2 * co * kd * p) as u64));
    group.bench_function("col_product/weights_transposed", |b| {
        b.iter(|| product_on(gemm::Parallelism::None, kd, p, co, &mut ci, &w, 1, kd as isize, &dyi, p as isize, 1))
    });
    group.bench_function("col_product/weights_row_major", |b| {
        b.iter(|| product_on(gemm::Parallelism::None, kd, p, co, &mut ci, &w, co as isize, 1, &dyi, p as isize, 1))
    });
    group.finish();

    // (name, M, N, K) of one image's products in D's 64 -> 128 layer at 64 px: the
    // forward (weights . columns), the input gradient's GEMM before col2im (weights^T . dy)
    // and the weight gradient (dy . columns^T), all operands row-major.
    for (name, m, n, k) in [("forward", 128, 256, 1024), ("input_grad", 1024, 256, 128), ("weight_grad", 128, 1024, 256)] {
        let a = vec![0.5f32; m * k];
        let bm = vec![0.25f32; k * n];
        let mut cm = vec![0.0f32; m * n];
        let mut group = timed_group(c, &format!("gemm_crates_one_thread/{name}_{m}x{n}x{k}"), 20, 2, Throughput::Elements((2 * m * n * k) as u64));
        group.bench_function("gemm", |b| b.iter(|| product_on(gemm::Parallelism::None, m, n, k, &mut cm, &a, k as isize, 1, &bm, n as isize, 1)));
        // SAFETY: a is m x k, bm k x n and cm m x n, row-major, as the strides say.
        group.bench_function("matrixmultiply", |b| {
            b.iter(|| unsafe {
                matrixmultiply::sgemm(m, k, n, 1.0, a.as_ptr(), k as isize, 1, bm.as_ptr(), n as isize, 1, 1.0, cm.as_mut_ptr(), n as isize, 1)
            })
        });
        group.finish();
    }

    let len = 16 << 20;
    let src = vec![1.0f32; len];
    let mut dst = vec![0.0f32; len];
    let mut group = timed_group(c, "memory", 10, 2, Throughput::Bytes((2 * 4 * len) as u64));
    group.bench_function("copy_64MiB", |b| {
        b.iter(|| {
            use rayon::prelude::*;
            dst.par_chunks_mut(1 << 16).zip(src.par_chunks(1 << 16)).for_each(|(d, s)| d.copy_from_slice(s));
        })
    });
    group.finish();
}

/// The bf16 kernels at a 128 px D layer's weight-gradient shape (512 x 1024, reduced over
/// 4096), on one thread and on all.
fn bf16_kernels(c: &mut Criterion) {
    use gan_engine::backend::cpu::bf16::{matmul, Bf16Kernel};
    let (m, n, k) = (512, 1024, 4096);
    let mut rng = gan_engine::rng::Rng::new(1);
    let (mut a, mut b) = (vec![0.0f32; m * k], vec![0.0f32; k * n]);
    rng.fill_normal(&mut a, 0.0, 1.0);
    rng.fill_normal(&mut b, 0.0, 1.0);
    let mut out = vec![0.0f32; m * n];
    let mut g = timed_group(c, "bf16_gemm", 10, 5, Throughput::Elements(2 * (m * n * k) as u64));
    for kernel in Bf16Kernel::ALL {
        if !kernel.available() {
            println!("bf16_gemm/{}: skipped: this CPU lacks it", kernel.label());
            continue;
        }
        for threads in [false, true] {
            let id = format!("{}/{}", kernel.label(), if threads { "all threads" } else { "one thread" });
            g.bench_function(id, |bench| bench.iter(|| matmul(kernel, threads, m, n, k, &mut out, n, false, &a, k as isize, 1, &b, n as isize, 1)));
        }
    }
    g.finish();
}

criterion_group!(benches, layout, bf16_kernels);
criterion_main!(benches);
