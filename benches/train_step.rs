//! One full training iteration (D step + Adam on D, G step through the frozen D + Adam
//! on G) at 64 and 128 px, batch 64, on the CPU and, where present, the GPU. After
//! criterion's own report, prints the median iteration time, iterations per second and
//! the ratio to the article's baseline (0.864 s per iteration on a GTX 1070 Ti, 128 px).
//!
//!     cargo bench --bench train_step
//!     cargo bench --bench train_step -- 64px
//!
//! `gan-engine bench` takes the same measurement without cargo.

use criterion::{criterion_group, criterion_main, Criterion};
use gan_engine::backend::cpu::Cpu;
use gan_engine::backend::device;
use gan_engine::backend::Backend;
use gan_engine::model::{iteration_flops, ModelConfig};
use gan_engine::train::{synthetic_batch, Gan, Hyper, StepInputs};
use std::time::{Duration, Instant};

const BATCH: usize = 64;
const BASELINE_S: f64 = 0.864;

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        0.5 * (v[n / 2 - 1] + v[n / 2])
    }
}

fn bench_device<B: Backend>(c: &mut Criterion, device: &str, be: &B) {
    let mut group = c.benchmark_group(format!("train_step/{device}"));
    // A 128 px CPU iteration takes seconds: the minimum of ten samples, no more.
    group.sample_size(10).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(5));
    let mut summary = Vec::new();
    for size in [64, 128] {
        let cfg = ModelConfig::new(size, 64).expect("model config");
        let mut gan = Gan::new(be, &cfg, &Hyper::default(), 1).expect("model");
        let (images, texts, noise) = synthetic_batch(&cfg, BATCH, 2);
        let inputs = StepInputs { images: &images, texts: &texts, noise: &noise, mismatched: None };
        // One batch on the device for every iteration, as `gan-engine bench` and the
        // PyTorch peer time it.
        gan.load_batch(be, BATCH, &inputs).expect("batch");
        let gflop = iteration_flops(&gan.g, &gan.d, BATCH) / 1e9;
        let mut times = Vec::new();
        group.bench_function(format!("{size}px_batch{BATCH}"), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    be.synchronize().expect("synchronize");
                    let t0 = Instant::now();
                    let stats = gan.iteration_loaded(be).expect("iteration");
                    be.synchronize().expect("synchronize");
                    let dt = t0.elapsed();
                    assert!(stats.is_finite(), "non-finite loss: {stats:?}");
                    total += dt;
                    times.push(dt.as_secs_f64());
                }
                total
            })
        });
        if times.is_empty() {
            continue; // filtered out on the command line
        }
        // Criterion's warm-up iterations are in `times` too; the median shrugs them off.
        let med = median(&mut times);
        summary.push(format!(
            "train_step/{device}/{size}px batch {BATCH}: median {med:.3} s/iteration over {} iterations, {:.3} it/s, {:.1} GFLOP/s, {:.3}x the 1070 Ti baseline ({BASELINE_S} s/iteration at 128 px)",
            times.len(),
            1.0 / med,
            gflop / med,
            BASELINE_S / med
        ));
    }
    group.finish();
    summary.iter().for_each(|l| println!("{l}"));
}

fn train_step(c: &mut Criterion) {
    let cpu = Cpu::new();
    bench_device(c, "cpu", &cpu);
    // No GPU, driver or NVRTC is a value, not a panic: say why and measure nothing.
    match device::gpu(false, None) {
        Ok(gpu) => bench_device(c, "cuda", &gpu),
        Err(e) => println!("train_step/cuda: skipped: {e:#}"),
    }
}

criterion_group!(benches, train_step);
criterion_main!(benches);
