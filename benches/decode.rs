//! Decode + square + resize throughput on the shared real products (224x224 JPEGs), one
//! thread and all threads, at each model size; and drawing the synthetic catalogue. Prints
//! images/s.
//!
//! `cargo bench --bench decode`

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use gan_engine::data::image::{decode_rgb, prepare_rgb, Fit};
use rayon::prelude::*;
use std::path::PathBuf;

/// Images per measured iteration: enough to even out file differences, small enough to be quick.
const IMAGES: usize = 64;

fn bench_decode(c: &mut Criterion) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/data/fashion-products/images");
    let Ok(listing) = std::fs::read_dir(&dir) else {
        println!("skipped: ../shared/data/fashion-products not found");
        return;
    };
    let mut paths: Vec<PathBuf> = listing.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    // Files read once up front: the bench measures decoding, not the disk.
    let files: Vec<Vec<u8>> = paths.iter().take(IMAGES).map(|p| std::fs::read(p).unwrap()).collect();

    let mut g = c.benchmark_group("decode_resize");
    g.throughput(Throughput::Elements(IMAGES as u64));
    g.sample_size(10);
    g.bench_function("decode_only", |b| b.iter(|| files.iter().map(|f| decode_rgb(f).unwrap().width()).sum::<u32>()));
    for size in [32, 64, 128] {
        g.bench_function(format!("{size}px_1_thread"), |b| {
            b.iter(|| files.iter().map(|f| prepare_rgb(decode_rgb(f).unwrap(), size, Fit::Pad).len()).sum::<usize>())
        });
        g.bench_function(format!("{size}px_{}_threads", rayon::current_num_threads()), |b| {
            b.iter(|| files.par_iter().map(|f| prepare_rgb(decode_rgb(f).unwrap(), size, Fit::Pad).len()).sum::<usize>())
        });
    }
    g.finish();
}

/// The synthetic catalogue is drawn in memory instead of cached: this shows what that costs.
fn bench_synthetic(c: &mut Criterion) {
    let products = gan_engine::data::synth::products(IMAGES, 0);
    let mut g = c.benchmark_group("synthetic_draw");
    g.throughput(Throughput::Elements(IMAGES as u64));
    g.sample_size(10);
    for size in [64, 128] {
        g.bench_function(format!("{size}px_1_thread"), |b| b.iter(|| products.iter().map(|p| p.draw(size).len()).sum::<usize>()));
    }
    g.finish();
}

criterion_group!(benches, bench_decode, bench_synthetic);
criterion_main!(benches);
