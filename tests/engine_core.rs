//! The engine core: model sizes, the freeze flag, gradient rules, numeric edge cases,
//! and the CPU convolutions against a direct loop at real layer shapes.

use gan_engine::backend::cpu::simd::{self, Level};
use gan_engine::backend::cpu::{Cpu, Cpu64, CpuBackend};
use gan_engine::backend::prelude::*;
use gan_engine::backend::{AdamParams, BatchNormParams, BceParams, ConvParams};
use gan_engine::model::{iteration_flops, DGrads, Discriminator, Generator, ModelConfig, Module, TextInD};
use gan_engine::nn::{BatchNorm2d, Grads, Layer, Mode, Shape, Tensor};
use gan_engine::rng::Rng;
use gan_engine::verify::conv::direct;
use gan_engine::verify::{self, model::small_config};

fn models(size: usize) -> (Generator<Cpu>, Discriminator<Cpu>) {
    let be = Cpu::new();
    let cfg = ModelConfig::new(size, 64).unwrap();
    let mut rng = Rng::new(1);
    (Generator::new(&be, &cfg, &mut rng).unwrap(), Discriminator::new(&be, &cfg, &mut rng).unwrap())
}

#[test]
fn parameter_counts_and_flops_match_the_reference_models() {
    // Parameter counts: PyTorch's count of the same models, `python3 scripts/torch_peer.py
    // --size 64` (and `--size 128`) prints "parameters: generator 5,673,856, discriminator
    // 3,127,168" (16,980,864 and 12,379,008). GFLOP per iteration: the table of
    // ../shared/docs/design.md ("Sizes of the reference models", multiply-add = 2).
    let (g, d) = models(64);
    assert_eq!(g.param_count(), 5_673_856);
    assert_eq!(d.param_count(), 3_127_168);
    assert_eq!(format!("{:.1}", iteration_flops(&g, &d, 64) / 1e9), "151.5");
    let (g, d) = models(128);
    assert_eq!(g.param_count(), 16_980_864);
    assert_eq!(d.param_count(), 12_379_008);
    assert_eq!(format!("{:.1}", iteration_flops(&g, &d, 64) / 1e9), "791.3");
    // 32 px has one block fewer than 64 px: 3 stride-2 blocks.
    let cfg = ModelConfig::new(32, 64).unwrap();
    assert_eq!(cfg.blocks(), 3);
    assert!(ModelConfig::new(48, 64).is_err());
    assert!(ModelConfig::new(64, 0).is_err());
}

#[test]
fn model_output_shapes() {
    let be = Cpu::new();
    for size in [32, 64] {
        let cfg = ModelConfig { width: 8, ..ModelConfig::new(size, 8).unwrap() };
        let mut rng = Rng::new(2);
        let mut g = Generator::new(&be, &cfg, &mut rng).unwrap();
        let mut d = Discriminator::new(&be, &cfg, &mut rng).unwrap();
        let z = Tensor::zeros(&be, Shape::new(2, 100, 1, 1)).unwrap();
        let t = Tensor::zeros(&be, Shape::new(2, 256, 1, 1)).unwrap();
        let img = g.forward(&be, &z, &t, Mode::Train).unwrap();
        assert_eq!(img.shape, Shape::new(2, 3, size, size));
        let logits = d.forward(&be, &img, &t, Mode::Train).unwrap();
        assert_eq!(logits.shape, Shape::new(2, 1, 1, 1));
        let px = img.to_f32(&be).unwrap();
        assert!(px.iter().all(|v| v.abs() <= 1.0), "tanh output in [-1, 1]");
    }
}

/// A batch too large for the ops' 32-bit sizes is refused with a message, before any
/// memory is taken, instead of wrapping around.
#[test]
fn tensors_over_the_32_bit_limit_are_refused() {
    let be = Cpu::new();
    let err = Tensor::zeros(&be, Shape::new(8192, 64, 64, 64)).err().expect("2^31 values").to_string();
    assert!(err.contains("batch of 8192") && err.contains("smaller batch"), "{err}");
    assert!(Tensor::zeros(&be, Shape::new(usize::MAX, 2, 1, 1)).is_err(), "overflowing shape");
}

/// The batch limit is found from the configuration alone; it must be the largest tensor
/// of the layer table (every layer's input and output), at every size and some widths.
#[test]
fn the_batch_limit_follows_the_largest_layer() {
    let be = Cpu::new();
    for (size, width) in [(32, 8), (64, 4), (64, 64), (128, 16), (128, 64)] {
        let cfg = ModelConfig::new(size, width).unwrap();
        let mut rng = Rng::new(4);
        let (g, d) = (Generator::new(&be, &cfg, &mut rng).unwrap(), Discriminator::new(&be, &cfg, &mut rng).unwrap());
        let largest = g.layers().into_iter().chain(d.layers()).flat_map(|(_, l, input)| [input.per_image(), l.out_shape(input).per_image()]).max().unwrap();
        assert_eq!(cfg.largest_tensor_per_image(), largest, "{size} px, width {width}");
    }
    let cfg = ModelConfig::new(128, 64).unwrap();
    assert!(cfg.check_batch(8191).is_ok());
    let err = cfg.check_batch(8192).unwrap_err().to_string();
    assert!(err.contains("--batch 8192") && err.contains("at most 8191"), "{err}");
}

/// A frozen network computes its input gradient only: no parameter-gradient op runs and
/// every gradient keeps its value. Unfrozen, the same backward launches them.
#[test]
fn frozen_layers_compute_input_gradients_only() {
    let be = Cpu::new();
    let cfg = small_config();
    let mut rng = Rng::new(3);
    let mut d = Discriminator::new(&be, &cfg, &mut rng).unwrap();
    let n = 2;
    let mut img = vec![0.0f32; n * 3 * 32 * 32];
    rng.fill_normal(&mut img, 0.0, 0.5);
    let mut txt = vec![0.0f32; n * cfg.text_dim];
    rng.fill_normal(&mut txt, 0.0, 0.5);
    let img = Tensor::from_f32(&be, Shape::new(n, 3, 32, 32), &img).unwrap();
    let txt = Tensor::from_f32(&be, Shape::new(n, cfg.text_dim, 1, 1), &txt).unwrap();
    let dl = Tensor::from_f32(&be, Shape::new(n, 1, 1, 1), &[0.3, -0.7]).unwrap();

    for p in d.params_mut() {
        be.fill(&mut p.grad, 123.0).unwrap();
    }
    let frozen = DGrads { image: true, text: true, params: false };
    let before = be.profiler().param_grad_calls();
    d.forward(&be, &img, &txt, Mode::Train).unwrap();
    let (dimg, dtxt) = d.backward(&be, &dl, frozen).unwrap();
    assert_eq!(be.profiler().param_grad_calls(), before, "a frozen network launched a parameter-gradient op");
    for p in d.params() {
        assert!(p.grad.iter().all(|&g| g == 123.0), "{} gradient changed while frozen", p.name);
    }
    let dimg = dimg.expect("image gradient").to_f32(&be).unwrap();
    assert!(dimg.iter().any(|&v| v != 0.0), "input gradient must still flow through a frozen network");
    assert!(dtxt.expect("text gradient").to_f32(&be).unwrap().iter().any(|&v| v != 0.0));

    d.forward(&be, &img, &txt, Mode::Train).unwrap();
    let (dimg2, _) = d.backward(&be, &dl, DGrads::ALL).unwrap();
    assert_eq!(dimg2.expect("image gradient").to_f32(&be).unwrap(), dimg, "freezing must not change the input gradient");
    let convs_bns_linears = 3 + 2 + 1 + 2; // main convs, main BNs, text linear, head convs + BN
    assert_eq!(be.profiler().param_grad_calls() - before, convs_bns_linears + 1);
    for p in d.params() {
        assert!(p.grad.iter().any(|&g| g != 123.0), "{} gradient did not accumulate", p.name);
    }
}

/// The training paths that skip input gradients of data (the D step's parameters only,
/// the G step's image gradient) leave exactly the parameter and image gradients of the
/// full backward.
#[test]
fn parameter_only_backward_matches_the_full_backward() {
    let be = Cpu64::new();
    let cfg = small_config();
    let mut rng = Rng::new(5);
    let mut g = Generator::new(&be, &cfg, &mut rng).unwrap();
    let mut d = Discriminator::new(&be, &cfg, &mut rng).unwrap();
    let n = 3;
    let v = |len: usize, rng: &mut Rng| {
        let mut x = vec![0.0f32; len];
        rng.fill_normal(&mut x, 0.0, 0.7);
        x
    };
    let z = Tensor::from_f32(&be, Shape::new(n, cfg.noise_dim, 1, 1), &v(n * cfg.noise_dim, &mut rng)).unwrap();
    let t = Tensor::from_f32(&be, Shape::new(n, cfg.text_dim, 1, 1), &v(n * cfg.text_dim, &mut rng)).unwrap();
    let dl = Tensor::from_f32(&be, Shape::new(n, 1, 1, 1), &[0.3, -0.7, 0.2]).unwrap();
    let grads = |ps: Vec<&gan_engine::nn::Param<Cpu64>>| ps.iter().map(|p| p.grad.clone()).collect::<Vec<_>>();

    let img = g.forward(&be, &z, &t, Mode::Train).unwrap();
    d.zero_grad(&be).unwrap();
    d.forward(&be, &img, &t, Mode::Train).unwrap();
    let (full_dimg, _) = d.backward(&be, &dl, DGrads::ALL).unwrap();
    let (full_dimg, full_d) = (full_dimg.unwrap().to_f64(&be).unwrap(), grads(d.params()));
    d.zero_grad(&be).unwrap();
    d.forward(&be, &img, &t, Mode::Train).unwrap();
    let (none_img, none_txt) = d.backward(&be, &dl, DGrads::D_STEP).unwrap();
    assert!(none_img.is_none() && none_txt.is_none(), "the D step wants no input gradient");
    assert_eq!(grads(d.params()), full_d, "discriminator parameter gradients differ");
    d.zero_grad(&be).unwrap();
    d.forward(&be, &img, &t, Mode::Train).unwrap();
    let dimg = d.backward(&be, &dl, DGrads { image: true, text: false, params: true }).unwrap().0.unwrap();
    assert_eq!(dimg.to_f64(&be).unwrap(), full_dimg, "image gradient differs");
    assert_eq!(grads(d.params()), full_d, "the image gradient with parameters wanted must still accumulate them");

    g.zero_grad(&be).unwrap();
    g.forward(&be, &z, &t, Mode::Train).unwrap();
    g.backward(&be, &dimg, Grads::ALL).unwrap();
    let full_g = grads(g.params());
    assert!(full_g.iter().all(|gr| gr.iter().any(|&x| x != 0.0)));
    g.zero_grad(&be).unwrap();
    g.forward(&be, &z, &t, Mode::Train).unwrap();
    assert!(g.backward(&be, &dimg, Grads::PARAMS).unwrap().is_none(), "training wants no input gradient");
    assert_eq!(grads(g.params()), full_g, "generator parameter gradients differ");
}

/// Parameter gradients accumulate (+=); activation gradients are written (=).
#[test]
fn parameter_gradients_accumulate_and_input_gradients_overwrite() {
    let be = Cpu64::new();
    let cfg = small_config();
    let mut rng = Rng::new(4);
    let mut g = Generator::new(&be, &cfg, &mut rng).unwrap();
    let z = Tensor::from_f32(&be, Shape::new(2, cfg.noise_dim, 1, 1), &[0.1, -0.2, 0.3, 0.4, -0.5, 0.6, 0.7, -0.8, 0.9, 1.0]).unwrap();
    let t = Tensor::from_f32(&be, Shape::new(2, cfg.text_dim, 1, 1), &[0.5; 12]).unwrap();
    let mut r = vec![0.0f32; 2 * 3 * 32 * 32];
    rng.fill_normal(&mut r, 0.0, 1.0);
    let dy = Tensor::from_f32(&be, Shape::new(2, 3, 32, 32), &r).unwrap();
    g.zero_grad(&be).unwrap();
    g.forward(&be, &z, &t, Mode::Train).unwrap();
    let (dz1, _) = g.backward(&be, &dy, Grads::ALL).unwrap().unwrap();
    let dz1 = dz1.to_f64(&be).unwrap();
    let once: Vec<Vec<f64>> = g.params().iter().map(|p| p.grad.clone()).collect();
    g.forward(&be, &z, &t, Mode::Train).unwrap();
    let (dz2, _) = g.backward(&be, &dy, Grads::ALL).unwrap().unwrap();
    assert_eq!(dz2.to_f64(&be).unwrap(), dz1);
    for (p, g1) in g.params().iter().zip(&once) {
        for (a, b) in p.grad.iter().zip(g1) {
            assert!((a - 2.0 * b).abs() <= 1e-12 * b.abs().max(1.0), "{}: {a} != 2 * {b}", p.name);
        }
    }
}

/// Every op's CPU twin (in f64) equals the op's direct loops (`verify::F::direct`).
#[test]
fn every_cpu_twin_matches_its_direct_loops() {
    let checks = verify::direct_checks().unwrap();
    for c in &checks {
        println!("{:<70} {:>6} {:>10.3e} {}", c.name, c.entries, c.max_err, if c.passed() { "PASS" } else { "FAIL" });
    }
    let failed: Vec<_> = checks.iter().filter(|c| !c.passed()).map(|c| c.name.clone()).collect();
    assert!(failed.is_empty(), "failed: {failed:?}");
    for family in
        ["conv2d", "conv_transpose2d", "batchnorm2d", "relu", "leaky_relu", "tanh", "linear", "concat_tile", "bce_with_logits", "adam_step", "mode_seeking"]
    {
        assert!(checks.iter().any(|c| c.name.starts_with(family)), "no direct check of {family}");
    }
}

#[test]
fn gradient_checks_pass() {
    let results = verify::all_gradchecks(6).unwrap();
    for r in &results {
        println!("{:<60} {:>6} {:>10.3e} {}", r.name, r.entries, r.max_rel_err, if r.passed() { "PASS" } else { "FAIL" });
    }
    let failed: Vec<_> = results.iter().filter(|r| !r.passed()).map(|r| r.name.clone()).collect();
    assert!(failed.is_empty(), "failed: {failed:?}");
    assert!(results.len() > 70, "every op, layer and parameter tensor is checked");
}

#[test]
fn bce_with_logits_is_finite_at_extreme_logits() {
    let be = Cpu::new();
    for target in [0.0, 1.0] {
        let p = BceParams { n: 4, target, scale: 0.5 };
        let logits = vec![1000.0f32, -1000.0, 1000.0, -1000.0];
        let mut out = be.alloc(2).unwrap();
        be.bce_with_logits_forward(&p, &logits, &mut out).unwrap();
        let mut d = be.alloc(4).unwrap();
        be.bce_with_logits_backward_input(&p, &logits, &mut d).unwrap();
        assert!(out.iter().all(|v| v.is_finite()) && d.iter().all(|v| v.is_finite()), "target {target}: {out:?} {d:?}");
        // Two logits are 1000 on the wrong side: loss = 0.5 * (2 * 1000) / 4.
        assert!((out[0] - 250.0).abs() < 1e-3, "loss {}", out[0]);
        assert_eq!(out[1], 0.5);
        let expect = if target == 1.0 { [0.0, -0.125, 0.0, -0.125] } else { [0.125, 0.0, 0.125, 0.0] };
        assert_eq!(d, expect);
    }
}

#[test]
fn adam_step_equals_the_closed_form() {
    let be = Cpu64::new();
    let (lr, b1, b2, eps) = (2e-4f32, 0.5f32, 0.999f32, 1e-8f32);
    let g = vec![0.3, -2.0, 1e-9, 0.0, 5.0];
    let p0 = vec![1.0, -1.0, 0.5, 0.25, 0.0];
    let (mut p, mut m, mut v) = (p0.clone(), vec![0.0; 5], vec![0.0; 5]);
    // Two steps: the second uses t = 2 bias corrections on accumulated moments.
    let mut expect = p0.clone();
    let (mut em, mut ev) = (vec![0.0f64; 5], vec![0.0f64; 5]);
    for t in 1..=2 {
        let ap = AdamParams { len: 5, lr, beta1: b1, beta2: b2, eps, bc1: 1.0 - b1.powi(t), bc2: 1.0 - b2.powi(t) };
        be.adam_step(&ap, &mut p, &g, &mut m, &mut v).unwrap();
        let (b1, b2, lr, eps) = (b1 as f64, b2 as f64, lr as f64, eps as f64);
        for i in 0..5 {
            em[i] = b1 * em[i] + (1.0 - b1) * g[i];
            ev[i] = b2 * ev[i] + (1.0 - b2) * g[i] * g[i];
            // The host computes the bias corrections in f32; use the same values.
            let mhat = em[i] / ap.bc1 as f64;
            let vhat = ev[i] / ap.bc2 as f64;
            expect[i] -= lr * mhat / (vhat.sqrt() + eps);
        }
        if t == 1 {
            // After one step from zero moments the update is lr * g / (|g| + eps').
            for i in 0..5 {
                let step = p0[i] - p[i];
                let closed = lr * g[i] / (g[i].abs() + eps);
                assert!((step - closed).abs() <= 1e-12, "entry {i}: step {step} closed form {closed}");
            }
        }
    }
    for i in 0..5 {
        assert!((p[i] - expect[i]).abs() <= 1e-12, "entry {i}: {} vs {}", p[i], expect[i]);
    }
}

#[test]
fn batchnorm_running_statistics_update_and_inference_uses_them() {
    let be = Cpu64::new();
    let mut rng = Rng::new(9);
    let mut bn = BatchNorm2d::new(&be, "bn", 2, &mut rng).unwrap();
    let shape = Shape::new(3, 2, 2, 2);
    let x: Vec<f64> = (0..shape.len()).map(|i| (i as f64 * 0.37).sin() * 3.0 + i as f64 * 0.1).collect();
    let xt = Tensor::zeros(&be, shape).unwrap();
    xt.set_f64(&be, &x).unwrap();
    bn.forward(&be, &xt, Mode::Train).unwrap();
    let values = |c: usize| -> Vec<f64> { (0..3).flat_map(|n| (0..4).map(move |q| (n, q))).map(|(n, q)| x[(n * 2 + c) * 4 + q]).collect() };
    for c in 0..2 {
        let v = values(c);
        let mean = v.iter().sum::<f64>() / 12.0;
        let unbiased = v.iter().map(|a| (a - mean).powi(2)).sum::<f64>() / 11.0;
        let m = bn.momentum as f64; // 0.1 as stored in f32
        assert!((bn.running_mean.value[c] - m * mean).abs() < 1e-12);
        assert!((bn.running_var.value[c] - ((1.0 - m) + m * unbiased)).abs() < 1e-12);
    }
    // Inference: (x - running_mean) / sqrt(running_var + eps) * gamma + beta.
    let y = bn.forward(&be, &xt, Mode::Eval).unwrap().to_f64(&be).unwrap();
    for (i, yi) in y.iter().enumerate() {
        let c = (i / 4) % 2;
        let expect = (x[i] - bn.running_mean.value[c]) / (bn.running_var.value[c] + 1e-5f32 as f64).sqrt() * bn.gamma.value[c] + bn.beta.value[c];
        assert!((yi - expect).abs() < 1e-12, "{yi} vs {expect}");
    }
    // Inference leaves the running statistics alone; backward after it is refused.
    let rm = bn.running_mean.value.clone();
    bn.forward(&be, &xt, Mode::Eval).unwrap();
    assert_eq!(bn.running_mean.value, rm);
    assert!(bn.backward(&be, &xt, Grads::ALL).is_err());
}

/// The GEMM path, split into chunks of images (with chunk boundaries falling inside the
/// batch) or into one range of images per thread, matches direct loops at the model's
/// real layer shapes (channel counts cut down to keep the loops quick).
#[test]
fn cpu_convolutions_match_direct_loops_across_chunks() {
    let mut rng = Rng::new(12);
    let mut rand = |n: usize| -> Vec<f64> { (0..n).map(|_| rng.normal()).collect() };
    let shapes = [
        (false, ConvParams::conv2d(3, 3, 64, 64, 8, 4, 2, 1)),
        (false, ConvParams::conv2d(3, 16, 8, 8, 12, 4, 2, 1)),
        (false, ConvParams::conv2d(3, 20, 4, 4, 6, 1, 1, 0)),
        (false, ConvParams::conv2d(3, 6, 4, 4, 1, 4, 1, 0)),
        (true, ConvParams::conv_transpose2d(3, 30, 1, 1, 16, 4, 1, 0)),
        (true, ConvParams::conv_transpose2d(3, 16, 4, 4, 8, 4, 2, 1)),
        (true, ConvParams::conv_transpose2d(3, 8, 32, 32, 3, 4, 2, 1)),
        // Odd widths and stride 3: the column-phase split of strided windows.
        (false, ConvParams::conv2d(2, 3, 7, 9, 4, 3, 3, 2)),
        (false, ConvParams::conv2d(2, 2, 9, 7, 3, 4, 2, 1)),
        (true, ConvParams::conv_transpose2d(2, 3, 3, 4, 2, 3, 3, 1)),
        (true, ConvParams::conv_transpose2d(2, 2, 5, 3, 3, 4, 2, 1)),
        // Stride-2 rows of 37 and 38 values: phase rows past one vector step of 16, with a
        // ragged tail, and an even phase row one longer than the odd one.
        (false, ConvParams::conv2d(2, 2, 5, 37, 3, 4, 2, 1)),
        (false, ConvParams::conv2d(2, 2, 3, 38, 3, 3, 2, 1)),
        (true, ConvParams::conv_transpose2d(2, 2, 3, 19, 3, 3, 2, 1)),
        // Phase rows of 14: one step of 8, one of 4, two single pairs.
        (false, ConvParams::conv2d(2, 2, 4, 28, 3, 4, 2, 1)),
        (true, ConvParams::conv_transpose2d(2, 2, 3, 14, 3, 4, 2, 1)),
        // Windows that never reach the last row and column (10 = 3 windows of stride 3,
        // 2 wide, and one left over): their input gradient is zero, not what dx held.
        (false, ConvParams::conv2d(2, 2, 10, 10, 3, 2, 3, 0)),
        // Planes one value wide: stride-2 rows with an even phase value and no odd one.
        (false, ConvParams::conv2d(2, 2, 5, 1, 3, 1, 2, 0)),
        (true, ConvParams::conv_transpose2d(2, 2, 3, 1, 3, 1, 2, 0)),
    ];
    for (transposed, p) in shapes {
        let x = rand(p.in_len());
        let w = rand(p.weight_len());
        let expect = if transposed { direct::conv_transpose2d(&p, &x, &w) } else { direct::conv2d(&p, &x, &w) };
        // One image per chunk, the default, and every shape image by image.
        for be in [CpuBackend::<f64>::with_chunk_elems(1), Cpu64::new(), CpuBackend::with_image_tasks()] {
            // Outputs are written, not added to: what they held before must not show.
            let mut y = vec![f64::NAN; p.out_len()];
            if transposed {
                be.conv_transpose2d_forward(&p, &x, &w, None, &mut y).unwrap();
            } else {
                be.conv2d_forward(&p, &x, &w, None, &mut y).unwrap();
            }
            let err = y.iter().zip(&expect).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
            assert!(err < 1e-10, "{p:?} transposed={transposed}: max error {err}");
        }
        // Chunked backward passes equal unchunked ones.
        let dy = rand(p.out_len());
        let run = |be: &Cpu64| {
            // dx is written (NaN before must not show); dw accumulates, from zero.
            let (mut dx, mut dw) = (vec![f64::NAN; p.in_len()], be.alloc(p.weight_len()).unwrap());
            if transposed {
                be.conv_transpose2d_backward_input(&p, &dy, &w, &mut dx).unwrap();
                be.conv_transpose2d_backward_params(&p, &x, &dy, &mut dw, None).unwrap();
            } else {
                be.conv2d_backward_input(&p, &dy, &w, &mut dx).unwrap();
                be.conv2d_backward_params(&p, &x, &dy, &mut dw, None).unwrap();
            }
            (dx, dw)
        };
        let (a, b, c) = (run(&CpuBackend::with_chunk_elems(1)), run(&Cpu64::new()), run(&CpuBackend::with_image_tasks()));
        let close = |u: &[f64], v: &[f64]| u.iter().zip(v).all(|(p, q)| (p - q).abs() <= 1e-9 * q.abs().max(1.0));
        assert!(close(&a.0, &b.0) && close(&a.1, &b.1), "{p:?}: chunked backward differs");
        assert!(close(&c.0, &b.0) && close(&c.1, &b.1), "{p:?}: image-by-image backward differs");
        // Both backward passes are adjoints of the (bilinear) forward:
        // <y(x, w), dy> = <x, dx> = <w, dw>.
        let dot = |u: &[f64], v: &[f64]| u.iter().zip(v).map(|(p, q)| p * q).sum::<f64>();
        let (ydy, xdx, wdw) = (dot(&expect, &dy), dot(&x, &b.0), dot(&w, &b.1));
        let tol = 1e-9 * ydy.abs().max(1.0);
        assert!((ydy - xdx).abs() <= tol && (ydy - wdw).abs() <= tol, "{p:?}: <y,dy> {ydy} <x,dx> {xdx} <w,dw> {wdw}");
    }
}

/// f32 training and f64 reference agree on a batchnorm of real size (f64 accumulation
/// in the statistics keeps f32 close), for planes of 8x8 and 4x4 values and for planes
/// whose length is no multiple of the 16 lanes the sums run in (35, 1), where a channel's
/// lanes carry partial rows from one image's plane to the next.
#[test]
fn batchnorm_f32_matches_f64() {
    // Channels far from zero mean (offset / std up to 1000) must not lose the variance to
    // cancellation in f32: forward and backward against f64 on the same f32-exact inputs.
    let mut rng = Rng::new(21);
    for ((std, offset), (n, c, hw)) in
        [(4.0, 10.0), (1.0, 1000.0), (0.01, -3.0)].into_iter().flat_map(|d| [(8, 16, 64), (64, 16, 16), (5, 3, 35), (300, 4, 1)].map(|s| (d, s)))
    {
        let p = BatchNormParams::new(n, c, hw, 1e-5, 0.1);
        let x: Vec<f64> = (0..p.len()).map(|_| (rng.normal() * std + offset) as f32 as f64).collect();
        let dy: Vec<f64> = (0..p.len()).map(|_| rng.normal() as f32 as f64).collect();
        fn run<T: gan_engine::backend::cpu::Elem>(p: &BatchNormParams, x: &[f64], dy: &[f64]) -> (Vec<f64>, Vec<f64>) {
            let be = CpuBackend::<T>::new();
            let c = p.c as usize;
            let v = |a: &[f64]| a.iter().map(|v| T::from_f64(*v)).collect::<Vec<T>>();
            let (x, dy, g, b) = (v(x), v(dy), v(&vec![1.5; c]), v(&vec![0.1; c]));
            let (mut rm, mut rv, mut m, mut s, mut y) = (v(&vec![0.0; c]), v(&vec![1.0; c]), v(&vec![0.0; c]), v(&vec![0.0; c]), v(&vec![0.0; p.len()]));
            be.batchnorm2d_forward_train(p, &x, &g, &b, &mut rm, &mut rv, &mut m, &mut s, &mut y).unwrap();
            let (mut sums, mut dx) = (v(&vec![0.0; 2 * c]), v(&vec![0.0; p.len()]));
            be.batchnorm2d_backward_input(p, &x, &y, &dy, &g, &m, &s, &mut sums, &mut dx).unwrap();
            (y.iter().map(|v| v.to_f64()).collect(), dx.iter().map(|v| v.to_f64()).collect())
        }
        let (y64, dx64) = run::<f64>(&p, &x, &dy);
        let (y32, dx32) = run::<f32>(&p, &x, &dy);
        let err = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
        let (ey, edx) = (err(&y32, &y64), err(&dx32, &dx64));
        let dx_scale = dx64.iter().map(|v| v.abs()).fold(0.0, f64::max);
        // The f32 mean itself is off by up to half an ulp of the offset, which moves every
        // output by gamma * that / std: no f32 batchnorm does better.
        let mean_rounding = 1.5 * f64::abs(offset) * f32::EPSILON as f64 / std;
        assert!(ey < 1e-5 + mean_rounding, "{n}x{c}x{hw}, std {std} offset {offset}: forward max error {ey}");
        assert!(edx < (1e-5 + mean_rounding) * dx_scale.max(1.0), "{n}x{c}x{hw}, std {std} offset {offset}: backward max error {edx} (max |dx| {dx_scale})");
    }
}

/// The counts made from the configuration alone (for the memory check) agree with the
/// layer table, with the minibatch standard deviation layer and without it, with the text
/// tiled and with the projection discriminator.
#[test]
fn configuration_counts_follow_the_layer_table_with_minibatch_std() {
    let be = Cpu::new();
    for (group, text_in_d) in [(0, TextInD::Tile), (4, TextInD::Tile), (0, TextInD::Projection), (4, TextInD::Projection)] {
        let cfg = ModelConfig { minibatch_std: group, text_in_d, ..ModelConfig::new(32, 8).unwrap() };
        let mut rng = Rng::new(4);
        let (g, d) = (Generator::new(&be, &cfg, &mut rng).unwrap(), Discriminator::new(&be, &cfg, &mut rng).unwrap());
        let (pg, pd) = cfg.param_counts();
        assert_eq!((pg as usize, pd as usize), (g.param_count(), d.param_count()), "minibatch std {group}, text in D by {text_in_d}");
        let outputs = |rows: Vec<(String, &dyn Layer<Cpu>, Shape)>| rows.into_iter().map(|(_, l, s)| l.out_shape(s).per_image()).sum::<usize>();
        let (og, od) = cfg.outputs_per_image();
        assert_eq!((og as usize, od as usize), (outputs(g.layers()), outputs(d.layers())), "minibatch std {group}, text in D by {text_in_d}");
    }
}

/// The same for progressive models: the parameters of every level (all allocated from the
/// start), and the outputs of the layers at the last level while it fades in (its largest
/// stage); the layer table of `gan-engine model --progressive` lists the layers in use at
/// each level, and the level's parameters are those of its blocks.
#[test]
fn progressive_counts_follow_the_layer_tables() {
    use gan_engine::model::Progress;
    let be = Cpu::new();
    for (size, width, group) in [(16, 2, 0), (64, 4, 4), (256, 1, 2)] {
        let cfg = ModelConfig { minibatch_std: group, progressive: true, ..ModelConfig::new(size, width).unwrap() };
        let mut rng = Rng::new(4);
        let (mut g, mut d) = (Generator::new(&be, &cfg, &mut rng).unwrap(), Discriminator::new(&be, &cfg, &mut rng).unwrap());
        let (pg, pd) = cfg.param_counts();
        assert_eq!((pg as usize, pd as usize), (g.param_count(), d.param_count()), "{size} px, width {width}");
        let last = cfg.levels() - 1;
        assert_eq!(last, size.trailing_zeros() as usize - 2);
        let fading = Progress { level: last, alpha: 0.5 };
        g.set_progress(fading).unwrap();
        d.set_progress(fading).unwrap();
        let outputs = |rows: Vec<(String, &dyn Layer<Cpu>, Shape)>| rows.into_iter().map(|(_, l, s)| l.out_shape(s).per_image()).sum::<usize>();
        let (og, od) = cfg.outputs_per_image();
        assert_eq!((og as usize, od as usize), (outputs(g.layers()), outputs(d.layers())), "{size} px, width {width}");
        // Stabilised at each level, the tables hold that level's blocks and no other.
        let table_params =
            |rows: Vec<(String, &dyn Layer<Cpu>, Shape)>| rows.into_iter().map(|(_, l, _)| l.params().iter().map(|p| p.len()).sum::<usize>()).sum::<usize>();
        for level in 0..=last {
            let p = Progress { level, alpha: 1.0 };
            g.set_progress(p).unwrap();
            d.set_progress(p).unwrap();
            let rows = g.layers();
            assert_eq!(rows.last().map(|r| r.1.out_shape(r.2)), Some(Shape::new(1, 3, p.side(), p.side())), "G draws {} px at level {level}", p.side());
            assert!(!rows.iter().any(|r| r.0.contains(&format!("block{}", level + 1))), "level {level} uses no later block");
            // `--batch-schedule`'s memory need at a level counts the layers in use there
            // while it fades in (the most at once).
            let p = Progress { level, alpha: if level == 0 { 1.0 } else { 0.5 } };
            g.set_progress(p).unwrap();
            d.set_progress(p).unwrap();
            let (og, od) = cfg.outputs_per_image_at_level(level);
            assert_eq!((og as usize, od as usize), (outputs(g.layers()), outputs(d.layers())), "{size} px, width {width}, level {level}");
            let stable = Progress { level, alpha: 1.0 };
            g.set_progress(stable).unwrap();
            d.set_progress(stable).unwrap();
        }
        let need = |level, batch| cfg.memory_need_at_level(level, batch).total();
        let avail = |bytes: f64| Some(gan_engine::backend::Available { bytes: bytes as u64, what: "the test's budget".into() });
        assert_eq!(need(last, 4), cfg.memory_need(gan_engine::model::Usage::Training { batch: 4 }).total());
        assert!(cfg.check_memory_at_level(0, 64, avail(need(0, 64))).is_ok());
        let e = cfg.check_memory_at_level(last, 64, avail(need(0, 64))).unwrap_err().to_string();
        assert!(e.starts_with("--batch-schedule") && e.contains(&format!("for side {size} in --batch-schedule")), "{e}");
        // At the last level, stabilised, every parameter is in use but the earlier levels'
        // toRGB (3 ch + 3 each) and fromRGB (3 ch + ch each).
        let ch = |l: usize| cfg.level_channels(l);
        let unused_g: usize = (0..last).map(|l| 3 * ch(l) + 3).sum();
        let unused_d: usize = (0..last).map(|l| 4 * ch(l)).sum();
        assert_eq!((table_params(g.layers()), table_params(d.layers())), (pg as usize - unused_g, pd as usize - unused_d), "{size} px, width {width}");
    }
}

/// The CPU twin tests above, by name: what `cpu_twins_at_every_simd_level` reruns at the
/// other SIMD levels.
const TWIN_TESTS: [&str; 5] = [
    "every_cpu_twin_matches_its_direct_loops",
    "gradient_checks_pass",
    "batchnorm_f32_matches_f64",
    "cpu_convolutions_match_direct_loops_across_chunks",
    "the_forced_simd_level_is_the_one_running",
];

/// Under GAN_ENGINE_SIMD, the loops run at that level: the override takes effect, so the
/// reruns below test the paths they name.
#[test]
fn the_forced_simd_level_is_the_one_running() {
    match std::env::var(Level::ENV) {
        Ok(forced) => assert_eq!(simd::active().label(), forced, "GAN_ENGINE_SIMD={forced} did not take effect"),
        Err(_) => assert_eq!(simd::active(), simd::widest(), "without GAN_ENGINE_SIMD the widest level runs"),
    }
}

/// The SIMD level is chosen at run time, so one machine runs one path of every `wide` loop:
/// the CPU twin tests run again in a child process at each other level this CPU has
/// (scalar, AVX2, AVX-512), and a level the CPU lacks is named as skipped.
#[test]
fn cpu_twins_at_every_simd_level() {
    if let Ok(forced) = std::env::var(Level::ENV) {
        println!("skipped: this process was started with {}={forced}; the twin tests run at that level", Level::ENV);
        return;
    }
    let exe = std::env::current_exe().unwrap();
    for level in Level::ALL {
        if level == simd::active() {
            println!("{}: the twin tests of this process run at it", level.label());
            continue;
        }
        if level > simd::widest() {
            println!("skipped {}: this CPU lacks it (widest: {})", level.label(), simd::widest().label());
            continue;
        }
        let started = std::time::Instant::now();
        let out = std::process::Command::new(&exe).env(Level::ENV, level.label()).args(TWIN_TESTS).arg("--exact").output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "the twin tests failed at SIMD level {}:\n{stdout}\n{}", level.label(), String::from_utf8_lossy(&out.stderr));
        let passed = format!("test result: ok. {} passed", TWIN_TESTS.len());
        assert!(stdout.contains(&passed), "at {} not every twin test ran:\n{stdout}", level.label());
        println!("{}: {} twin tests passed in {:.1} s", level.label(), TWIN_TESTS.len(), started.elapsed().as_secs_f64());
    }
}
