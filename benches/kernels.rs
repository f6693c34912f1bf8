//! Every op and pass at the real layer shapes of the 64 and 128 px models (width 64),
//! batch 64, on the CPU and, where present, the GPU.
//!
//! The cases come from the models themselves (`Generator::layers`,
//! `Discriminator::layers`), so a change of architecture changes the benchmark. Throughput:
//! GEMM-shaped ops (convolutions, linear) report `elem/s` = FLOP/s (multiply-add = 2; all
//! three passes of a layer do the same FLOP); the rest report decimal bytes/s of minimal
//! traffic (every input read once, every output written once).
//!
//!     cargo bench --bench kernels                 # everything (several minutes on 2 cores)
//!     cargo bench --bench kernels -- 64px/generator.main.3
//!
//! To see where one training iteration spends its time, `gan-engine bench --profile`
//! times every op call of real iterations; this file measures each op in isolation.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use gan_engine::backend::cpu::Cpu;
use gan_engine::backend::device;
use gan_engine::backend::{
    ActParams, AdamParams, Backend, BatchNormParams, BceParams, ConcatParams, ConvParams, LinearParams, MinibatchStdParams, PixelNormParams, PoolParams,
    UpsampleParams, BN_ACT_NONE,
};
use gan_engine::backend::{ModeSeekingParams, MODE_SEEKING_EPS};
use gan_engine::model::{Discriminator, Generator, ModelConfig, Module};
use gan_engine::nn::{ActKind, LayerOp, Shape};
use gan_engine::rng::Rng;
use std::time::{Duration, Instant};

const BATCH: usize = 64;
const F32: u64 = 4;

/// One op of the model at one shape.
#[derive(Clone, Debug)]
enum Op {
    Conv { transposed: bool, p: ConvParams },
    BatchNorm(BatchNormParams),
    Act { kind: &'static str, p: ActParams },
    Linear(LinearParams),
    Concat(ConcatParams),
    MinibatchStd(MinibatchStdParams),
    Upsample(UpsampleParams),
    Pool(PoolParams),
    PixelNorm(PixelNormParams),
    Bce(BceParams),
    ModeSeeking(ModeSeekingParams),
    Adam(usize),
}

struct Case {
    /// `generator.main.3 ConvTranspose2d(512, 256, k4 s2 p1)`
    name: String,
    op: Op,
}

/// The ops of one model at batch `n`, in the order the models run them.
fn cases<B: Backend>(be: &B, cfg: &ModelConfig, n: usize) -> Vec<Case> {
    let mut rng = Rng::new(0);
    let g = Generator::new(be, cfg, &mut rng).expect("generator");
    let d = Discriminator::new(be, cfg, &mut rng).expect("discriminator");
    let mut out = vec![Case {
        name: "generator input (noise ++ text)".into(),
        op: Op::Concat(ConcatParams { n: n as i32, c_a: cfg.noise_dim as i32, c_b: cfg.text_dim as i32, hw: 1 }),
    }];
    let mut d_features = None;
    for (name, layer, input) in g.layers().into_iter().chain(d.layers()) {
        let x = input.with_batch(n);
        let describe = layer.describe();
        if name == "discriminator.head.0" {
            // The text vector is tiled over the grid and joined after the image features.
            let f: Shape = d_features.expect("the discriminator's main path comes first");
            out.push(Case {
                name: "discriminator concat (features ++ tiled text)".into(),
                op: Op::Concat(ConcatParams { n: n as i32, c_a: f.c as i32, c_b: cfg.text_proj as i32, hw: f.hw() as i32 }),
            });
        }
        let op = match layer.op(x) {
            LayerOp::Conv { p, transposed } => Op::Conv { transposed, p },
            LayerOp::BatchNorm(p) => Op::BatchNorm(p),
            LayerOp::Linear(p) => Op::Linear(p),
            LayerOp::MinibatchStd(p) => Op::MinibatchStd(p),
            LayerOp::Upsample(p) => Op::Upsample(p),
            LayerOp::Pool(p) => Op::Pool(p),
            LayerOp::PixelNorm(p) => Op::PixelNorm(p),
            LayerOp::Activation { p, kind } => {
                let kind = match kind {
                    ActKind::Relu => "relu",
                    ActKind::LeakyRelu(_) => "leaky_relu",
                    ActKind::Tanh => "tanh",
                };
                Op::Act { kind, p }
            }
        };
        if name.starts_with("discriminator.main.") {
            d_features = Some(layer.out_shape(x));
        }
        out.push(Case { name: format!("{name} {describe}"), op });
    }
    if cfg.minibatch_std == 0 {
        // `train --minibatch-std 4` adds this op to the head (on the joined features).
        out.push(Case {
            name: "discriminator minibatch std (group 4, off by default)".into(),
            op: Op::MinibatchStd(MinibatchStdParams::new(n, cfg.top_channels() + cfg.text_proj, 16, 4)),
        });
    }
    out.push(Case { name: "loss".into(), op: Op::Bce(BceParams { n: n as i32, target: 1.0, scale: 0.5 }) });
    if n >= 2 {
        // `train --mode-seeking 1` adds this term to the G step, on the fake batch.
        let p = ModeSeekingParams { pairs: (n / 2) as i32, len: (3 * cfg.size * cfg.size) as i32, inv_dz: 0.89, weight: 1.0, eps: MODE_SEEKING_EPS };
        out.push(Case { name: "mode-seeking term (off by default)".into(), op: Op::ModeSeeking(p) });
    }
    out.push(Case { name: "generator parameters".into(), op: Op::Adam(g.param_count()) });
    out.push(Case { name: "discriminator parameters".into(), op: Op::Adam(d.param_count()) });
    out
}

fn random<B: Backend>(be: &B, len: usize, rng: &mut Rng) -> B::Buf {
    let mut v = vec![0.0f32; len];
    rng.fill_normal(&mut v, 0.0, 1.0);
    let mut b = be.alloc(len).expect("alloc");
    be.upload(&mut b, &v).expect("upload");
    b
}

/// Times `f` with the device synchronised on both sides of the whole batch of calls.
fn timed<B: Backend>(be: &B, iters: u64, mut f: impl FnMut()) -> Duration {
    be.synchronize().expect("synchronize");
    let t0 = Instant::now();
    for _ in 0..iters {
        f();
    }
    be.synchronize().expect("synchronize");
    t0.elapsed()
}

/// Registers every pass of `case` in `group`.
fn bench_case<B: Backend>(be: &B, group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>, case: &Case) {
    let mut rng = Rng::new(1);
    let id = |pass: &str| format!("{}/{pass}", case.name);
    match &case.op {
        Op::Conv { transposed, p } => {
            let flop = 2 * if *transposed { p.conv_transpose2d_macs() } else { p.conv2d_macs() };
            group.throughput(Throughput::Elements(flop));
            let x = random(be, p.in_len(), &mut rng);
            let w = random(be, p.weight_len(), &mut rng);
            let dy = random(be, p.out_len(), &mut rng);
            let mut y = be.alloc(p.out_len()).unwrap();
            let mut dx = be.alloc(p.in_len()).unwrap();
            let mut dw = be.alloc(p.weight_len()).unwrap();
            if *transposed {
                group.bench_function(id("forward"), |b| b.iter_custom(|it| timed(be, it, || be.conv_transpose2d_forward(p, &x, &w, None, &mut y).unwrap())));
                group.bench_function(id("backward_input"), |b| {
                    b.iter_custom(|it| timed(be, it, || be.conv_transpose2d_backward_input(p, &dy, &w, &mut dx).unwrap()))
                });
                group.bench_function(id("backward_params"), |b| {
                    b.iter_custom(|it| timed(be, it, || be.conv_transpose2d_backward_params(p, &x, &dy, &mut dw, None).unwrap()))
                });
            } else {
                group.bench_function(id("forward"), |b| b.iter_custom(|it| timed(be, it, || be.conv2d_forward(p, &x, &w, None, &mut y).unwrap())));
                group.bench_function(id("backward_input"), |b| b.iter_custom(|it| timed(be, it, || be.conv2d_backward_input(p, &dy, &w, &mut dx).unwrap())));
                group.bench_function(id("backward_params"), |b| {
                    b.iter_custom(|it| timed(be, it, || be.conv2d_backward_params(p, &x, &dy, &mut dw, None).unwrap()))
                });
            }
        }
        Op::BatchNorm(p) => {
            let (len, c) = (p.len(), p.c as usize);
            let x = random(be, len, &mut rng);
            let dy = random(be, len, &mut rng);
            let gamma = random(be, c, &mut rng);
            let beta = random(be, c, &mut rng);
            let (mut rm, mut rv, mut mean, mut invstd) = (be.alloc(c).unwrap(), be.alloc(c).unwrap(), be.alloc(c).unwrap(), be.alloc(c).unwrap());
            let (mut y, mut dx, mut dg, mut db) = (be.alloc(len).unwrap(), be.alloc(len).unwrap(), be.alloc(c).unwrap(), be.alloc(c).unwrap());
            let mut sums = be.alloc(2 * c).unwrap();
            be.fill(&mut rv, 1.0).unwrap();
            // One forward first: the backward passes need its saved statistics.
            be.batchnorm2d_forward_train(p, &x, &gamma, &beta, &mut rm, &mut rv, &mut mean, &mut invstd, &mut y).unwrap();
            let bytes = F32 * len as u64;
            group.throughput(Throughput::BytesDecimal(2 * bytes));
            group.bench_function(id("forward_train"), |b| {
                b.iter_custom(|it| {
                    timed(be, it, || be.batchnorm2d_forward_train(p, &x, &gamma, &beta, &mut rm, &mut rv, &mut mean, &mut invstd, &mut y).unwrap())
                })
            });
            // A fused activation adds its output y to what the backward passes read.
            let fused = u64::from(p.act != BN_ACT_NONE);
            group.throughput(Throughput::BytesDecimal((3 + fused) * bytes));
            group.bench_function(id("backward_input"), |b| {
                b.iter_custom(|it| timed(be, it, || be.batchnorm2d_backward_input(p, &x, &y, &dy, &gamma, &mean, &invstd, &mut sums, &mut dx).unwrap()))
            });
            // The parameter gradients add the per-channel sums backward_input wrote.
            group.throughput(Throughput::BytesDecimal(4 * F32 * c as u64));
            group.bench_function(id("backward_params"), |b| {
                b.iter_custom(|it| timed(be, it, || be.batchnorm2d_backward_params(p, &sums, &mut dg, &mut db).unwrap()))
            });
            // Sampling's pass, from the running statistics: one read and one write. Last,
            // as it overwrites the y the backward passes read.
            group.throughput(Throughput::BytesDecimal(2 * bytes));
            group.bench_function(id("forward_infer"), |b| {
                b.iter_custom(|it| timed(be, it, || be.batchnorm2d_forward_infer(p, &x, &gamma, &beta, &rm, &rv, &mut y).unwrap()))
            });
        }
        Op::Act { kind, p } => {
            let len = p.len as usize;
            let x = random(be, len, &mut rng);
            let dy = random(be, len, &mut rng);
            let (mut y, mut dx) = (be.alloc(len).unwrap(), be.alloc(len).unwrap());
            let bytes = F32 * len as u64;
            let forward = |y: &mut B::Buf| match *kind {
                "relu" => be.relu_forward(p, &x, y),
                "leaky_relu" => be.leaky_relu_forward(p, &x, y),
                _ => be.tanh_forward(p, &x, y),
            };
            forward(&mut y).unwrap();
            group.throughput(Throughput::BytesDecimal(2 * bytes));
            group.bench_function(id("forward"), |b| b.iter_custom(|it| timed(be, it, || forward(&mut y).unwrap())));
            group.throughput(Throughput::BytesDecimal(3 * bytes));
            group.bench_function(id("backward_input"), |b| {
                b.iter_custom(|it| {
                    timed(be, it, || {
                        match *kind {
                            "relu" => be.relu_backward_input(p, &y, &dy, &mut dx),
                            "leaky_relu" => be.leaky_relu_backward_input(p, &y, &dy, &mut dx),
                            _ => be.tanh_backward_input(p, &y, &dy, &mut dx),
                        }
                        .unwrap()
                    })
                })
            });
        }
        Op::Linear(p) => {
            let (n, i, o) = (p.n as usize, p.in_features as usize, p.out_features as usize);
            group.throughput(Throughput::Elements(2 * (n * i * o) as u64));
            let x = random(be, n * i, &mut rng);
            let w = random(be, o * i, &mut rng);
            let bias = random(be, o, &mut rng);
            let dy = random(be, n * o, &mut rng);
            let (mut y, mut dx, mut dw, mut db) = (be.alloc(n * o).unwrap(), be.alloc(n * i).unwrap(), be.alloc(o * i).unwrap(), be.alloc(o).unwrap());
            group.bench_function(id("forward"), |b| b.iter_custom(|it| timed(be, it, || be.linear_forward(p, &x, &w, Some(&bias), &mut y).unwrap())));
            group.bench_function(id("backward_input"), |b| b.iter_custom(|it| timed(be, it, || be.linear_backward_input(p, &dy, &w, &mut dx).unwrap())));
            group.bench_function(id("backward_params"), |b| {
                b.iter_custom(|it| timed(be, it, || be.linear_backward_params(p, &x, &dy, &mut dw, Some(&mut db)).unwrap()))
            });
        }
        Op::Concat(p) => {
            let (n, ca, cb, hw) = (p.n as usize, p.c_a as usize, p.c_b as usize, p.hw as usize);
            let a = random(be, n * ca * hw, &mut rng);
            let bv = random(be, n * cb, &mut rng);
            let dy = random(be, p.out_len(), &mut rng);
            let (mut y, mut da, mut db) = (be.alloc(p.out_len()).unwrap(), be.alloc(n * ca * hw).unwrap(), be.alloc(n * cb).unwrap());
            group.throughput(Throughput::BytesDecimal(F32 * (p.out_len() + n * ca * hw + n * cb) as u64));
            group.bench_function(id("forward"), |b| b.iter_custom(|it| timed(be, it, || be.concat_tile_forward(p, &a, &bv, &mut y).unwrap())));
            group.bench_function(id("backward_input"), |b| {
                b.iter_custom(|it| timed(be, it, || be.concat_tile_backward_input(p, &dy, &mut da, &mut db).unwrap()))
            });
        }
        Op::MinibatchStd(p) => {
            let x = random(be, p.in_len(), &mut rng);
            let dy = random(be, p.out_len(), &mut rng);
            let (mut y, mut dx) = (be.alloc(p.out_len()).unwrap(), be.alloc(p.in_len()).unwrap());
            group.throughput(Throughput::BytesDecimal(F32 * (p.in_len() + p.out_len()) as u64));
            group.bench_function(id("forward"), |b| b.iter_custom(|it| timed(be, it, || be.minibatch_std_forward(p, &x, &mut y).unwrap())));
            group.bench_function(id("backward_input"), |b| b.iter_custom(|it| timed(be, it, || be.minibatch_std_backward_input(p, &x, &dy, &mut dx).unwrap())));
        }
        Op::Upsample(p) => {
            let x = random(be, p.in_len(), &mut rng);
            let dy = random(be, p.out_len(), &mut rng);
            let (mut y, mut dx) = (be.alloc(p.out_len()).unwrap(), be.alloc(p.in_len()).unwrap());
            group.throughput(Throughput::BytesDecimal(F32 * (p.in_len() + p.out_len()) as u64));
            group.bench_function(id("forward"), |b| b.iter_custom(|it| timed(be, it, || be.upsample_nearest_forward(p, &x, &mut y).unwrap())));
            group.bench_function(id("backward_input"), |b| b.iter_custom(|it| timed(be, it, || be.upsample_nearest_backward_input(p, &dy, &mut dx).unwrap())));
        }
        Op::Pool(p) => {
            let x = random(be, p.in_len(), &mut rng);
            let dy = random(be, p.out_len(), &mut rng);
            let (mut y, mut dx) = (be.alloc(p.out_len()).unwrap(), be.alloc(p.in_len()).unwrap());
            group.throughput(Throughput::BytesDecimal(F32 * (p.in_len() + p.out_len()) as u64));
            group.bench_function(id("forward"), |b| b.iter_custom(|it| timed(be, it, || be.avg_pool2d_forward(p, &x, &mut y).unwrap())));
            group.bench_function(id("backward_input"), |b| b.iter_custom(|it| timed(be, it, || be.avg_pool2d_backward_input(p, &dy, &mut dx).unwrap())));
        }
        Op::PixelNorm(p) => {
            let x = random(be, p.len(), &mut rng);
            let dy = random(be, p.len(), &mut rng);
            let (mut y, mut dx) = (be.alloc(p.len()).unwrap(), be.alloc(p.len()).unwrap());
            group.throughput(Throughput::BytesDecimal(2 * F32 * p.len() as u64));
            group.bench_function(id("forward"), |b| b.iter_custom(|it| timed(be, it, || be.pixel_norm_forward(p, &x, &mut y).unwrap())));
            group.throughput(Throughput::BytesDecimal(3 * F32 * p.len() as u64));
            group.bench_function(id("backward_input"), |b| b.iter_custom(|it| timed(be, it, || be.pixel_norm_backward_input(p, &x, &dy, &mut dx).unwrap())));
        }
        Op::Bce(p) => {
            let n = p.n as usize;
            let logits = random(be, n, &mut rng);
            let (mut out, mut dl) = (be.alloc(2).unwrap(), be.alloc(n).unwrap());
            group.throughput(Throughput::BytesDecimal(F32 * n as u64));
            group.bench_function(id("forward"), |b| b.iter_custom(|it| timed(be, it, || be.bce_with_logits_forward(p, &logits, &mut out).unwrap())));
            group.throughput(Throughput::BytesDecimal(2 * F32 * n as u64));
            group.bench_function(id("backward_input"), |b| {
                b.iter_custom(|it| timed(be, it, || be.bce_with_logits_backward_input(p, &logits, &mut dl).unwrap()))
            });
        }
        Op::ModeSeeking(p) => {
            let len = 2 * p.half();
            let x = random(be, len, &mut rng);
            let (mut out, mut dx) = (be.alloc(2).unwrap(), random(be, len, &mut rng));
            be.mode_seeking_forward(p, &x, &mut out).unwrap();
            group.throughput(Throughput::BytesDecimal(F32 * len as u64));
            group.bench_function(id("forward"), |b| b.iter_custom(|it| timed(be, it, || be.mode_seeking_forward(p, &x, &mut out).unwrap())));
            // Reads x and dx, writes dx.
            group.throughput(Throughput::BytesDecimal(3 * F32 * len as u64));
            group.bench_function(id("backward_input"), |b| b.iter_custom(|it| timed(be, it, || be.mode_seeking_backward_input(p, &x, &out, &mut dx).unwrap())));
        }
        Op::Adam(len) => {
            let mut param = random(be, *len, &mut rng);
            let grad = random(be, *len, &mut rng);
            let (mut m, mut v) = (be.alloc(*len).unwrap(), be.alloc(*len).unwrap());
            let p = AdamParams { len: *len as i32, lr: 2e-4, beta1: 0.5, beta2: 0.999, eps: 1e-8, bc1: 0.5, bc2: 0.001 };
            // Reads param, grad, m, v; writes param, m, v.
            group.throughput(Throughput::BytesDecimal(7 * F32 * *len as u64));
            group.bench_function(id("adam_step"), |b| b.iter_custom(|it| timed(be, it, || be.adam_step(&p, &mut param, &grad, &mut m, &mut v).unwrap())));
        }
    }
}

fn bench_device<B: Backend>(c: &mut Criterion, device: &str, be: &B) {
    for size in [64, 128] {
        let cfg = ModelConfig::new(size, 64).expect("model config");
        let mut group = c.benchmark_group(format!("kernels/{device}/{size}px"));
        // Many cases, 2 cores: few samples, short windows (a 128 px convolution still
        // takes its ten samples, whatever the window).
        group.sample_size(10).warm_up_time(Duration::from_millis(300)).measurement_time(Duration::from_secs(1));
        for case in cases(be, &cfg, BATCH) {
            bench_case(be, &mut group, &case);
        }
        group.finish();
    }
}

fn kernels(c: &mut Criterion) {
    let cpu = Cpu::new();
    bench_device(c, "cpu", &cpu);
    // No GPU, driver or NVRTC is a value, not a panic: say why and measure nothing.
    match device::gpu(false, None) {
        Ok(gpu) => bench_device(c, "cuda", &gpu),
        Err(e) => println!("kernels/cuda: skipped: {e:#}"),
    }
}

criterion_group!(benches, kernels);
criterion_main!(benches);
