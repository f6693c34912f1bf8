use anyhow::Result;
use gan_engine::backend::cpu::Cpu;
use gan_engine::model::{iteration_flops, layer_table, Discriminator, Generator, ModelConfig, Module, Progress, TextInD};
use gan_engine::rng::Rng;

#[derive(clap::Args)]
pub struct Args {
    /// Image side in pixels: 32, 64 or 128.
    #[arg(long, default_value_t = 64)]
    size: usize,
    /// Base channel count of both networks.
    #[arg(long, default_value_t = 64)]
    width: usize,
    /// Batch size for the per-iteration FLOP total.
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// The discriminator with `train --minibatch-std G` (0: without).
    #[arg(long, value_name = "G", num_args = 0..=1, default_value_t = 0, default_missing_value = "4")]
    minibatch_std: usize,
    /// The discriminator with `train --text-in-d MODE` (tile or projection).
    #[arg(long, value_name = "MODE", default_value_t = TextInD::Tile)]
    text_in_d: TextInD,
    /// The networks of `train --progressive`: the table of every level, stabilising, and
    /// the FLOP of its fade-in (--size: a power of two from 16 to 512).
    #[arg(long)]
    progressive: bool,
}

pub fn run(a: Args) -> Result<()> {
    anyhow::ensure!(a.batch > 0, "--batch must be at least 1");
    gan_engine::train::run::check_minibatch_std(a.minibatch_std, a.batch)?;
    if a.progressive {
        gan_engine::train::grow::check_size(a.size)?;
    } else if ![32, 64, 128].contains(&a.size) {
        anyhow::bail!("--size {} is not supported: use 32, 64 or 128 (or --progressive with a power of two from 16 to 512)", a.size);
    }
    let cfg = ModelConfig { minibatch_std: a.minibatch_std, text_in_d: a.text_in_d, progressive: a.progressive, ..ModelConfig::new(a.size, a.width)? };
    cfg.validate()?;
    let be = Cpu::new();
    let mut rng = Rng::new(0);
    let mut g = Generator::new(&be, &cfg, &mut rng)?;
    let mut d = Discriminator::new(&be, &cfg, &mut rng)?;
    if !cfg.progressive {
        table(&g, &d, &a);
        return Ok(());
    }
    let (pg, pd) = (g.param_count(), d.param_count());
    for level in 0..cfg.levels() {
        let stable = Progress { level, alpha: 1.0 };
        g.set_progress(stable)?;
        d.set_progress(stable)?;
        println!("level {level} of {}: {} px, stabilising", cfg.levels() - 1, stable.side());
        table(&g, &d, &a);
        if level > 0 {
            let fading = Progress { level, alpha: 0.5 };
            g.set_progress(fading)?;
            d.set_progress(fading)?;
            println!(
                "fading level {level} in (the previous level's toRGB and fromRGB run too): {:.1} GFLOP per iteration at batch {}",
                iteration_flops(&g, &d, a.batch) / 1e9,
                a.batch
            );
        }
        println!();
    }
    println!("parameters of every level (allocated from the start): generator {}, discriminator {}", group(pg as u64), group(pd as u64));
    Ok(())
}

/// The layer table of `g` and `d` as they stand, with totals and the FLOP of an iteration.
fn table(g: &Generator<Cpu>, d: &Discriminator<Cpu>, a: &Args) {
    let cfg = &g.cfg;
    println!("{:<26} {:<36} {:>12} {:>12} {:>12}", "layer", "op", "output", "params", "MFLOP/img");
    let mut totals = [(0usize, 0u64); 2];
    for row in layer_table(g, d) {
        let t = &mut totals[usize::from(row.name.starts_with("discriminator"))];
        t.0 += row.params;
        t.1 += row.macs;
        let params = if row.params > 0 { group(row.params as u64) } else { String::new() };
        let mflop = if row.macs > 0 { format!("{:.1}", 2.0 * row.macs as f64 / 1e6) } else { String::new() };
        println!("{:<26} {:<36} {:>12} {:>12} {:>12}", row.name, row.layer, row.out.to_string(), params, mflop);
    }
    debug_assert!(cfg.progressive || totals[0].0 == g.param_count());
    for (label, (params, macs)) in ["generator", "discriminator"].iter().zip(totals) {
        println!("{:<26} {:<36} {:>12} {:>12} {:>12.1}", format!("total {label}"), "", "", group(params as u64), 2.0 * macs as f64 / 1e6);
    }
    if cfg.text_in_d == TextInD::Projection {
        let rows = layer_table(g, d);
        let psi = rows.iter().rev().find(|r| r.name.starts_with("discriminator.head")).map_or(String::new(), |r| r.name.clone());
        println!("discriminator logit = {psi}(h) + <discriminator.embed.0(t), mean of h over the 4x4 grid>, h the input of {psi} (projection)");
    }
    let gflop = iteration_flops(g, d, a.batch) / 1e9;
    println!(
        "one training iteration at batch {} ({} px, width {}): {:.1} GFLOP (D step: G forward, D forward+backward on real and fake; G step: D forward+input gradient, G backward; multiply-add = 2)",
        a.batch,
        g.side(),
        a.width,
        gflop
    );
}

/// `1234567` -> `1,234,567`.
fn group(v: u64) -> String {
    let s = v.to_string();
    let mut out = String::new();
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}
