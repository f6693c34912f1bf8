//! `gan-engine bench`: the full-iteration benchmark (the same measurement as
//! `benches/train_step.rs`) for machines without cargo, and a per-op profile of one
//! iteration (`--profile`).
//!
//! On a GPU each timed iteration is measured with CUDA events recorded on the backend's
//! stream before and after it (`timer=cuda-events`); the op contract has no event API, so
//! this asks the concrete CUDA backend for them. The CPU and the simulation (which runs each
//! launch to completion on the host) are timed on the host clock between synchronisations
//! (`timer=host`).
//!
//! One line per configuration, `key=value` fields that scripts/compare.sh parses:
//! `ours ... timer=host median_s=1.0400 ... vs_1070ti=0.83`.

use anyhow::{ensure, Result};
use gan_engine::backend::cuda::EventTimer;
use gan_engine::backend::device::{self, Opened};
use gan_engine::backend::{ActParams, AdamParams, Backend, BatchNormParams, BceParams, ConcatParams, ConvParams, LinearParams, BN_ACT_NONE};
use gan_engine::model::{iteration_flops, ModelConfig};
use gan_engine::train::{synthetic_batch, Gan, Hyper, StepInputs};
use std::cell::RefCell;
use std::collections::HashMap;
use std::time::Instant;

/// The article's run: 300,000 iterations in 72 hours on a GTX 1070 Ti, 128 px.
pub const BASELINE_S: f64 = 0.864;

#[derive(clap::Args)]
pub struct Args {
    /// cpu, cuda, sim or auto (see `train --help`).
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Image sizes, comma-separated (32, 64, 128).
    #[arg(long, value_delimiter = ',', default_value = "64")]
    size: Vec<usize>,
    /// Batch sizes, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "64")]
    batch: Vec<usize>,
    /// Base channel count of both networks.
    #[arg(long, default_value_t = 64)]
    width: usize,
    /// Timed iterations; the median is reported.
    #[arg(long, default_value_t = 5)]
    iters: usize,
    /// Untimed iterations first (allocation, caches, kernel compilation).
    #[arg(long, default_value_t = 2)]
    warmup: usize,
    /// CPU threads (default: all cores, or RAYON_NUM_THREADS).
    #[arg(long)]
    threads: Option<usize>,
    /// Also time every op call of the timed iterations and print where the time goes.
    #[arg(long)]
    profile: bool,
}

pub fn run(a: Args) -> Result<()> {
    ensure!(a.iters > 0, "--iters must be at least 1");
    ensure!(a.batch.iter().all(|b| *b > 0), "--batch must be at least 1");
    if let Some(t) = a.threads {
        ensure!(t > 0, "--threads must be at least 1");
        rayon::ThreadPoolBuilder::new().num_threads(t).build_global().map_err(|e| anyhow::anyhow!("cannot start {t} threads: {e}"))?;
    }
    // An explicit --device cuda on a machine without a GPU is an error with the reason
    // (exit code 2), never a line that could be mistaken for a result.
    match device::open(&a.device)? {
        Opened::Cpu(cpu) => run_on(cpu, &a, Timer::Host),
        Opened::Gpu(gpu) => {
            let timer = gpu.event_timer()?.map_or(Timer::Host, Timer::Events);
            run_on(gpu, &a, timer)
        }
    }
}

/// The clock of the timed iterations.
pub enum Timer {
    /// The host clock, between device synchronisations.
    Host,
    /// CUDA events on the GPU's stream.
    Events(EventTimer),
}

impl Timer {
    pub fn label(&self) -> &'static str {
        match self {
            Timer::Host => "host",
            Timer::Events(_) => "cuda-events",
        }
    }

    /// Runs `f` (which queues device work on `be` and may wait for some of it) and returns its
    /// result and the seconds its work took, all queued work included. The device is idle
    /// when the interval starts.
    fn time<B: Backend, R>(&self, be: &B, f: impl FnOnce() -> Result<R>) -> Result<(R, f64)> {
        be.synchronize()?;
        match self {
            Timer::Host => {
                let t0 = Instant::now();
                let r = f()?;
                be.synchronize()?;
                Ok((r, t0.elapsed().as_secs_f64()))
            }
            Timer::Events(ev) => {
                ev.start()?;
                let r = f()?;
                let dt = ev.stop()?;
                Ok((r, dt))
            }
        }
    }
}

/// Every configuration plainly first, then (with --profile) again through the timing
/// decorator: its per-op synchronisation must not leak into the figures above.
fn run_on<B: Backend>(be: B, a: &Args, timer: Timer) -> Result<()> {
    let mut configs = Vec::new();
    for &size in &a.size {
        for &batch in &a.batch {
            let cfg = ModelConfig::new(size, a.width)?;
            cfg.check_batch(batch)?;
            configs.push((cfg, batch));
        }
    }
    for (cfg, batch) in &configs {
        let m = measure(&be, cfg, *batch, a.warmup, a.iters, &timer, None)?;
        println!("{}", m.line(&be, cfg, *batch, a.iters, timer.label()));
    }
    if a.profile {
        let prof = Profiled::new(be);
        for (cfg, batch) in &configs {
            println!("profile of {} px, width {}, batch {batch}:", cfg.size, cfg.width);
            // Every op synchronises here: the host clock is the profile's clock.
            measure(&prof, cfg, *batch, a.warmup, a.iters, &Timer::Host, Some(&prof))?;
            prof.print(a.iters);
            prof.reset();
        }
    }
    Ok(())
}

pub struct Measurement {
    pub times: Vec<f64>,
    pub gflop: f64,
}

impl Measurement {
    pub fn median(&self) -> f64 {
        median(&self.times)
    }
    fn line<B: Backend>(&self, be: &B, cfg: &ModelConfig, batch: usize, iters: usize, timer: &str) -> String {
        let med = self.median();
        let min = self.times.iter().cloned().fold(f64::INFINITY, f64::min);
        format!(
            "ours gan-engine {} backend=\"{}\" size={} width={} batch={batch} threads={} iters={iters} timer={timer} median_s={med:.4} min_s={min:.4} it_per_s={:.3} gflop_per_s={:.1} vs_1070ti={:.3}",
            env!("CARGO_PKG_VERSION"),
            be.name(),
            cfg.size,
            cfg.width,
            rayon::current_num_threads(),
            1.0 / med,
            self.gflop / med,
            BASELINE_S / med
        )
    }
}

pub fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        0.5 * (s[n / 2 - 1] + s[n / 2])
    }
}

/// Warm-up, then `iters` timed full iterations (D step + G step, with both Adam steps)
/// on a fixed batch. Each timed iteration starts on an idle device and its interval ends
/// after all the work it queued (`Timer::time`); `iteration` also reads the losses back.
/// `reset` (the profiler) is cleared after the warm-up.
pub fn measure<B: Backend>(
    be: &B,
    cfg: &ModelConfig,
    batch: usize,
    warmup: usize,
    iters: usize,
    timer: &Timer,
    reset: Option<&dyn Reset>,
) -> Result<Measurement> {
    let mut gan = Gan::new(be, cfg, &Hyper::default(), 1)?;
    let (images, texts, noise) = synthetic_batch(cfg, batch, 2);
    let inputs = StepInputs { images: &images, texts: &texts, noise: &noise, mismatched: None };
    // One batch on the device for every iteration, as the PyTorch peer does: the timing
    // is the training step, not the host-to-device copy (training itself uploads a new
    // batch each iteration).
    gan.load_batch(be, batch, &inputs)?;
    let gflop = iteration_flops(&gan.g, &gan.d, batch) / 1e9;
    let mut times = Vec::with_capacity(iters);
    for i in 0..warmup + iters {
        if i == warmup {
            if let Some(r) = reset {
                r.reset();
            }
        }
        let (stats, dt) = timer.time(be, || gan.iteration_loaded(be))?;
        ensure!(stats.is_finite(), "non-finite loss at iteration {i}: {stats:?}");
        if i >= warmup {
            times.push(dt);
        }
    }
    Ok(Measurement { times, gflop })
}

pub trait Reset {
    fn reset(&self);
}

/// Time, calls, work of one (op, shape) across the profiled iterations.
#[derive(Default, Clone)]
struct Entry {
    calls: u64,
    seconds: f64,
    flop: f64,
    bytes: f64,
}

/// A backend that forwards every op to `inner` and times it (with a synchronize on each
/// side, so GPU time lands on the op that queued it).
pub struct Profiled<B: Backend> {
    inner: B,
    entries: RefCell<HashMap<(String, String), Entry>>,
}

impl<B: Backend> Reset for Profiled<B> {
    fn reset(&self) {
        self.entries.borrow_mut().clear();
    }
}

const F32: f64 = 4.0;

fn conv_shape(p: &ConvParams) -> String {
    format!("n{} {}x{}x{} -> {}x{}x{} k{} s{} p{}", p.n, p.c_in, p.h_in, p.w_in, p.c_out, p.h_out, p.w_out, p.k, p.stride, p.pad)
}

impl<B: Backend> Profiled<B> {
    pub fn new(inner: B) -> Self {
        Profiled { inner, entries: RefCell::new(HashMap::new()) }
    }

    fn time<R>(&self, op: &str, shape: String, flop: f64, bytes: f64, f: impl FnOnce() -> Result<R>) -> Result<R> {
        self.inner.synchronize()?;
        let t0 = Instant::now();
        let r = f()?;
        self.inner.synchronize()?;
        let dt = t0.elapsed().as_secs_f64();
        let mut e = self.entries.borrow_mut();
        let entry = e.entry((op.to_string(), shape)).or_default();
        entry.calls += 1;
        entry.seconds += dt;
        entry.flop += flop;
        entry.bytes += bytes;
        Ok(r)
    }

    /// Per-op table (sorted by time) and per-family totals, per iteration.
    pub fn print(&self, iters: usize) {
        let e = self.entries.borrow();
        let total: f64 = e.values().map(|v| v.seconds).sum();
        let mut rows: Vec<_> = e.iter().collect();
        rows.sort_by(|a, b| b.1.seconds.total_cmp(&a.1.seconds));
        let it = iters as f64;
        println!(
            "profile: {:.3} s of op time per iteration, by op and shape (calls per iteration; GFLOP/s for GEMM ops, GB/s of minimal traffic for the rest)",
            total / it
        );
        println!("{:<36} {:<40} {:>5} {:>9} {:>6} {:>10}", "op", "shape", "calls", "ms/iter", "share", "rate");
        for ((op, shape), v) in &rows {
            if v.seconds / total < 0.002 {
                continue;
            }
            let rate = if v.flop > 0.0 { format!("{:.1} GF/s", v.flop / v.seconds / 1e9) } else { format!("{:.1} GB/s", v.bytes / v.seconds / 1e9) };
            println!("{:<36} {:<40} {:>5} {:>9.1} {:>5.1}% {:>10}", op, shape, v.calls as f64 / it, 1e3 * v.seconds / it, 100.0 * v.seconds / total, rate);
        }
        let mut fam: HashMap<&str, f64> = HashMap::new();
        for ((op, _), v) in e.iter() {
            *fam.entry(op.as_str()).or_default() += v.seconds;
        }
        let mut fam: Vec<_> = fam.into_iter().collect();
        fam.sort_by(|a, b| b.1.total_cmp(&a.1));
        println!("by op and pass:");
        for (op, s) in fam {
            println!("  {:<36} {:>9.1} ms/iter {:>5.1}%", op, 1e3 * s / it, 100.0 * s / total);
        }
    }
}

impl<B: Backend> Backend for Profiled<B> {
    type Buf = B::Buf;

    fn name(&self) -> String {
        self.inner.name()
    }
    fn alloc(&self, len: usize) -> Result<Self::Buf> {
        self.inner.alloc(len)
    }
    fn len(&self, buf: &Self::Buf) -> usize {
        self.inner.len(buf)
    }
    fn upload(&self, dst: &mut Self::Buf, src: &[f32]) -> Result<()> {
        self.time("upload", String::new(), 0.0, F32 * src.len() as f64, || self.inner.upload(dst, src))
    }
    fn download(&self, src: &Self::Buf, dst: &mut [f32]) -> Result<()> {
        self.time("download", String::new(), 0.0, F32 * dst.len() as f64, || self.inner.download(src, dst))
    }
    fn upload_f64(&self, dst: &mut Self::Buf, src: &[f64]) -> Result<()> {
        self.inner.upload_f64(dst, src)
    }
    fn download_f64(&self, src: &Self::Buf, dst: &mut [f64]) -> Result<()> {
        self.inner.download_f64(src, dst)
    }
    fn fill(&self, buf: &mut Self::Buf, value: f32) -> Result<()> {
        let n = self.inner.len(buf);
        self.time("fill (zero_grad)", String::new(), 0.0, F32 * n as f64, || self.inner.fill(buf, value))
    }
    fn synchronize(&self) -> Result<()> {
        self.inner.synchronize()
    }

    fn conv2d_forward(&self, p: &ConvParams, x: &Self::Buf, w: &Self::Buf, bias: Option<&Self::Buf>, y: &mut Self::Buf) -> Result<()> {
        self.time("conv2d_forward", conv_shape(p), 2.0 * p.conv2d_macs() as f64, 0.0, || self.inner.conv2d_forward(p, x, w, bias, y))
    }
    fn conv2d_backward_input(&self, p: &ConvParams, dy: &Self::Buf, w: &Self::Buf, dx: &mut Self::Buf) -> Result<()> {
        self.time("conv2d_backward_input", conv_shape(p), 2.0 * p.conv2d_macs() as f64, 0.0, || self.inner.conv2d_backward_input(p, dy, w, dx))
    }
    fn conv2d_backward_params(&self, p: &ConvParams, x: &Self::Buf, dy: &Self::Buf, dw: &mut Self::Buf, dbias: Option<&mut Self::Buf>) -> Result<()> {
        self.time("conv2d_backward_params", conv_shape(p), 2.0 * p.conv2d_macs() as f64, 0.0, || self.inner.conv2d_backward_params(p, x, dy, dw, dbias))
    }
    fn conv_transpose2d_forward(&self, p: &ConvParams, x: &Self::Buf, w: &Self::Buf, bias: Option<&Self::Buf>, y: &mut Self::Buf) -> Result<()> {
        self.time("conv_transpose2d_forward", conv_shape(p), 2.0 * p.conv_transpose2d_macs() as f64, 0.0, || {
            self.inner.conv_transpose2d_forward(p, x, w, bias, y)
        })
    }
    fn conv_transpose2d_backward_input(&self, p: &ConvParams, dy: &Self::Buf, w: &Self::Buf, dx: &mut Self::Buf) -> Result<()> {
        self.time("conv_transpose2d_backward_input", conv_shape(p), 2.0 * p.conv_transpose2d_macs() as f64, 0.0, || {
            self.inner.conv_transpose2d_backward_input(p, dy, w, dx)
        })
    }
    fn conv_transpose2d_backward_params(&self, p: &ConvParams, x: &Self::Buf, dy: &Self::Buf, dw: &mut Self::Buf, dbias: Option<&mut Self::Buf>) -> Result<()> {
        self.time("conv_transpose2d_backward_params", conv_shape(p), 2.0 * p.conv_transpose2d_macs() as f64, 0.0, || {
            self.inner.conv_transpose2d_backward_params(p, x, dy, dw, dbias)
        })
    }

    fn batchnorm2d_forward_train(
        &self,
        p: &BatchNormParams,
        x: &Self::Buf,
        gamma: &Self::Buf,
        beta: &Self::Buf,
        running_mean: &mut Self::Buf,
        running_var: &mut Self::Buf,
        mean: &mut Self::Buf,
        invstd: &mut Self::Buf,
        y: &mut Self::Buf,
    ) -> Result<()> {
        self.time("batchnorm2d_forward_train", bn_shape(p), 0.0, 2.0 * F32 * p.len() as f64, || {
            self.inner.batchnorm2d_forward_train(p, x, gamma, beta, running_mean, running_var, mean, invstd, y)
        })
    }
    fn batchnorm2d_forward_infer(
        &self,
        p: &BatchNormParams,
        x: &Self::Buf,
        gamma: &Self::Buf,
        beta: &Self::Buf,
        running_mean: &Self::Buf,
        running_var: &Self::Buf,
        y: &mut Self::Buf,
    ) -> Result<()> {
        self.time("batchnorm2d_forward_infer", bn_shape(p), 0.0, 2.0 * F32 * p.len() as f64, || {
            self.inner.batchnorm2d_forward_infer(p, x, gamma, beta, running_mean, running_var, y)
        })
    }
    fn batchnorm2d_backward_input(
        &self,
        p: &BatchNormParams,
        x: &Self::Buf,
        y: &Self::Buf,
        dy: &Self::Buf,
        gamma: &Self::Buf,
        mean: &Self::Buf,
        invstd: &Self::Buf,
        sums: &mut Self::Buf,
        dx: &mut Self::Buf,
    ) -> Result<()> {
        let tensors = if p.act == BN_ACT_NONE { 3.0 } else { 4.0 };
        self.time("batchnorm2d_backward_input", bn_shape(p), 0.0, tensors * F32 * p.len() as f64, || {
            self.inner.batchnorm2d_backward_input(p, x, y, dy, gamma, mean, invstd, sums, dx)
        })
    }
    fn batchnorm2d_backward_params(&self, p: &BatchNormParams, sums: &Self::Buf, dgamma: &mut Self::Buf, dbeta: &mut Self::Buf) -> Result<()> {
        self.time("batchnorm2d_backward_params", bn_shape(p), 0.0, 4.0 * F32 * p.c as f64, || self.inner.batchnorm2d_backward_params(p, sums, dgamma, dbeta))
    }

    fn relu_forward(&self, p: &ActParams, x: &Self::Buf, y: &mut Self::Buf) -> Result<()> {
        self.time("relu_forward", act_shape(p), 0.0, 2.0 * F32 * p.len as f64, || self.inner.relu_forward(p, x, y))
    }
    fn relu_backward_input(&self, p: &ActParams, y: &Self::Buf, dy: &Self::Buf, dx: &mut Self::Buf) -> Result<()> {
        self.time("relu_backward_input", act_shape(p), 0.0, 3.0 * F32 * p.len as f64, || self.inner.relu_backward_input(p, y, dy, dx))
    }
    fn leaky_relu_forward(&self, p: &ActParams, x: &Self::Buf, y: &mut Self::Buf) -> Result<()> {
        self.time("leaky_relu_forward", act_shape(p), 0.0, 2.0 * F32 * p.len as f64, || self.inner.leaky_relu_forward(p, x, y))
    }
    fn leaky_relu_backward_input(&self, p: &ActParams, y: &Self::Buf, dy: &Self::Buf, dx: &mut Self::Buf) -> Result<()> {
        self.time("leaky_relu_backward_input", act_shape(p), 0.0, 3.0 * F32 * p.len as f64, || self.inner.leaky_relu_backward_input(p, y, dy, dx))
    }
    fn tanh_forward(&self, p: &ActParams, x: &Self::Buf, y: &mut Self::Buf) -> Result<()> {
        self.time("tanh_forward", act_shape(p), 0.0, 2.0 * F32 * p.len as f64, || self.inner.tanh_forward(p, x, y))
    }
    fn tanh_backward_input(&self, p: &ActParams, y: &Self::Buf, dy: &Self::Buf, dx: &mut Self::Buf) -> Result<()> {
        self.time("tanh_backward_input", act_shape(p), 0.0, 3.0 * F32 * p.len as f64, || self.inner.tanh_backward_input(p, y, dy, dx))
    }

    fn linear_forward(&self, p: &LinearParams, x: &Self::Buf, w: &Self::Buf, b: Option<&Self::Buf>, y: &mut Self::Buf) -> Result<()> {
        self.time("linear_forward", linear_shape(p), linear_flop(p), 0.0, || self.inner.linear_forward(p, x, w, b, y))
    }
    fn linear_backward_input(&self, p: &LinearParams, dy: &Self::Buf, w: &Self::Buf, dx: &mut Self::Buf) -> Result<()> {
        self.time("linear_backward_input", linear_shape(p), linear_flop(p), 0.0, || self.inner.linear_backward_input(p, dy, w, dx))
    }
    fn linear_backward_params(&self, p: &LinearParams, x: &Self::Buf, dy: &Self::Buf, dw: &mut Self::Buf, db: Option<&mut Self::Buf>) -> Result<()> {
        self.time("linear_backward_params", linear_shape(p), linear_flop(p), 0.0, || self.inner.linear_backward_params(p, x, dy, dw, db))
    }

    fn concat_tile_forward(&self, p: &ConcatParams, a: &Self::Buf, b: &Self::Buf, y: &mut Self::Buf) -> Result<()> {
        self.time("concat_tile_forward", concat_shape(p), 0.0, 2.0 * F32 * p.out_len() as f64, || self.inner.concat_tile_forward(p, a, b, y))
    }
    fn concat_tile_backward_input(&self, p: &ConcatParams, dy: &Self::Buf, da: &mut Self::Buf, db: &mut Self::Buf) -> Result<()> {
        self.time("concat_tile_backward_input", concat_shape(p), 0.0, 2.0 * F32 * p.out_len() as f64, || self.inner.concat_tile_backward_input(p, dy, da, db))
    }

    fn bce_with_logits_forward(&self, p: &BceParams, logits: &Self::Buf, out: &mut Self::Buf) -> Result<()> {
        self.time("bce_with_logits_forward", format!("n{}", p.n), 0.0, F32 * p.n as f64, || self.inner.bce_with_logits_forward(p, logits, out))
    }
    fn bce_with_logits_backward_input(&self, p: &BceParams, logits: &Self::Buf, dlogits: &mut Self::Buf) -> Result<()> {
        self.time("bce_with_logits_backward_input", format!("n{}", p.n), 0.0, 2.0 * F32 * p.n as f64, || {
            self.inner.bce_with_logits_backward_input(p, logits, dlogits)
        })
    }
    fn adam_step(&self, p: &AdamParams, param: &mut Self::Buf, grad: &Self::Buf, m: &mut Self::Buf, v: &mut Self::Buf) -> Result<()> {
        // Every parameter tensor is one call; one row for all of them.
        self.time("adam_step", "all parameters".into(), 0.0, 7.0 * F32 * p.len as f64, || self.inner.adam_step(p, param, grad, m, v))
    }
}

fn bn_shape(p: &BatchNormParams) -> String {
    format!("n{} c{} hw{}{}", p.n, p.c, p.hw, p.act_label())
}
fn act_shape(p: &ActParams) -> String {
    format!("{} values", p.len)
}
fn linear_shape(p: &LinearParams) -> String {
    format!("n{} {} -> {}", p.n, p.in_features, p.out_features)
}
fn linear_flop(p: &LinearParams) -> f64 {
    2.0 * (p.n as f64) * (p.in_features as f64) * (p.out_features as f64)
}
fn concat_shape(p: &ConcatParams) -> String {
    format!("n{} {}+{} hw{}", p.n, p.c_a, p.c_b, p.hw)
}
