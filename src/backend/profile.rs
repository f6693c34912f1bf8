//! The profiling hook every backend carries. Each op runs through [`super::Core::timed`],
//! which counts the call by op name and, while the profiler is on, waits for the device on
//! both sides of the op, times it on the host clock, and adds its work (FLOP or bytes of
//! minimal traffic, from the op's parameters) to a table: `gan-engine bench --profile`.
//! The counts are always kept; the tests use them to prove which ops ran (a frozen
//! network runs no `*_backward_params`).

use anyhow::Result;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Instant;

/// The work of one op call: a shape label, and its FLOP (GEMM-shaped ops) or the bytes of
/// its minimal traffic (every input read once, every output written once; the rest).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Work {
    pub shape: String,
    pub flop: f64,
    pub bytes: f64,
}

impl Work {
    pub fn flop(shape: String, flop: f64) -> Work {
        Work { shape, flop, bytes: 0.0 }
    }
    pub fn bytes(shape: String, bytes: f64) -> Work {
        Work { shape, flop: 0.0, bytes }
    }
}

/// Time, calls and work of one (op, shape).
#[derive(Default, Clone)]
struct Entry {
    calls: u64,
    seconds: f64,
    flop: f64,
    bytes: f64,
}

#[derive(Default)]
struct Log {
    calls: HashMap<&'static str, u64>,
    entries: HashMap<(&'static str, String), Entry>,
}

#[derive(Default)]
pub struct Profiler {
    on: AtomicBool,
    log: Mutex<Log>,
}

impl Profiler {
    /// Runs `f` as the op `op`: see the module documentation.
    pub fn run<R>(&self, op: &'static str, sync: impl Fn() -> Result<()>, work: impl FnOnce() -> Work, f: impl FnOnce() -> Result<R>) -> Result<R> {
        if !self.on.load(Ordering::Relaxed) {
            *self.log().calls.entry(op).or_default() += 1;
            return f();
        }
        sync()?;
        let t0 = Instant::now();
        let r = f()?;
        sync()?;
        let dt = t0.elapsed().as_secs_f64();
        let w = work();
        let mut log = self.log();
        *log.calls.entry(op).or_default() += 1;
        let e = log.entries.entry((op, w.shape)).or_default();
        e.calls += 1;
        e.seconds += dt;
        e.flop += w.flop;
        e.bytes += w.bytes;
        Ok(r)
    }

    fn log(&self) -> std::sync::MutexGuard<'_, Log> {
        self.log.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Turns timing on or off (counting never stops).
    pub fn set_enabled(&self, on: bool) {
        self.on.store(on, Ordering::Relaxed);
    }

    /// Forgets the timings (not the call counts).
    pub fn reset(&self) {
        self.log().entries.clear();
    }

    /// Calls of the op `op` so far.
    pub fn calls(&self, op: &str) -> u64 {
        self.log().calls.get(op).copied().unwrap_or(0)
    }

    /// Calls so far of every op, by name.
    pub fn counts(&self) -> std::collections::BTreeMap<&'static str, u64> {
        self.log().calls.iter().map(|(k, v)| (*k, *v)).collect()
    }

    /// Calls so far of the ops whose names satisfy `which`.
    pub fn calls_where(&self, which: impl Fn(&str) -> bool) -> u64 {
        self.log().calls.iter().filter(|(k, _)| which(k)).map(|(_, v)| v).sum()
    }

    /// Calls of any `*_backward_params` op: the parameter-gradient ops a frozen network
    /// never runs.
    pub fn param_grad_calls(&self) -> u64 {
        self.calls_where(|op| op.ends_with("_backward_params"))
    }

    /// Per-op table (sorted by time) and per-op totals, per iteration, over `iters`
    /// profiled iterations.
    pub fn report(&self, iters: usize) -> String {
        let log = self.log();
        let e = &log.entries;
        let total: f64 = e.values().map(|v| v.seconds).sum();
        let mut rows: Vec<_> = e.iter().collect();
        rows.sort_by(|a, b| b.1.seconds.total_cmp(&a.1.seconds));
        let it = iters as f64;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "profile: {:.3} s of op time per iteration, by op and shape (calls per iteration; GFLOP/s for GEMM ops, GB/s of minimal traffic for the rest)",
            total / it
        );
        let _ = writeln!(s, "{:<36} {:<40} {:>5} {:>9} {:>6} {:>10}", "op", "shape", "calls", "ms/iter", "share", "rate");
        for ((op, shape), v) in &rows {
            if v.seconds / total < 0.002 {
                continue;
            }
            let rate = if v.flop > 0.0 { format!("{:.1} GF/s", v.flop / v.seconds / 1e9) } else { format!("{:.1} GB/s", v.bytes / v.seconds / 1e9) };
            let _ = writeln!(
                s,
                "{:<36} {:<40} {:>5} {:>9.1} {:>5.1}% {:>10}",
                op,
                shape,
                v.calls as f64 / it,
                1e3 * v.seconds / it,
                100.0 * v.seconds / total,
                rate
            );
        }
        let mut fam: HashMap<&str, f64> = HashMap::new();
        for ((op, _), v) in e.iter() {
            *fam.entry(op).or_default() += v.seconds;
        }
        let mut fam: Vec<_> = fam.into_iter().collect();
        fam.sort_by(|a, b| b.1.total_cmp(&a.1));
        let _ = writeln!(s, "by op and pass:");
        for (op, sec) in fam {
            let _ = writeln!(s, "  {:<36} {:>9.1} ms/iter {:>5.1}%", op, 1e3 * sec / it, 100.0 * sec / total);
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_always_and_times_only_when_on() {
        let p = Profiler::default();
        let work_asked = std::cell::Cell::new(0);
        let work = || {
            work_asked.set(work_asked.get() + 1);
            Work::flop("s".into(), 2.0)
        };
        p.run("a_backward_params", || Ok(()), work, || Ok(())).unwrap();
        assert_eq!((p.calls("a_backward_params"), work_asked.get()), (1, 0), "off: counted, no work computed");
        p.set_enabled(true);
        let work = || {
            work_asked.set(work_asked.get() + 1);
            Work::flop("s".into(), 2.0)
        };
        p.run("b_forward", || Ok(()), work, || Ok(())).unwrap();
        assert_eq!((p.calls("b_forward"), work_asked.get(), p.param_grad_calls()), (1, 1, 1));
        assert!(p.report(1).contains("b_forward"));
        p.reset();
        assert!(!p.report(1).contains("b_forward"));
        // A failing op is an error, counted or not.
        assert!(p.run("c", || Ok(()), Work::default, || -> Result<()> { anyhow::bail!("x") }).is_err());
    }
}
