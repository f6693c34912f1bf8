use anyhow::{bail, Result};
use gan_engine::gradcheck;

#[derive(clap::Args)]
pub struct Args {
    /// cpu: gradient checks in f64.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Entries checked per parameter tensor in the whole-model checks.
    #[arg(long, default_value_t = 6)]
    per_param: usize,
}

pub fn run(a: Args) -> Result<()> {
    match a.device.as_str() {
        "cpu" => cpu(a.per_param),
        other => bail!("--device {other}: selftest supports cpu"),
    }
}

fn cpu(per_param: usize) -> Result<()> {
    println!("gradient checks, central differences in f64, pass below {:e} max relative error", gradcheck::TOLERANCE);
    println!("{:<58} {:>8} {:>12}  result", "check", "entries", "max rel err");
    let results = gradcheck::all_checks(per_param)?;
    let mut failed = 0;
    for r in &results {
        let verdict = if r.passed() { "PASS" } else { "FAIL" };
        failed += usize::from(!r.passed());
        println!("{:<58} {:>8} {:>12.3e}  {verdict}", r.name, r.entries, r.max_rel_err);
    }
    println!("{} passed, {} failed", results.len() - failed, failed);
    if failed > 0 {
        bail!("{failed} gradient check(s) failed");
    }
    Ok(())
}
