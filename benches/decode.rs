//! Decode + square + resize throughput on the shared real products (224x224 JPEGs), one
//! thread and all threads, at each model size; the resize alone, ours (`fast_image_resize`)
//! against the `image` crate (the same Catmull-Rom filter, to planar bytes);
//! and drawing the synthetic catalogue. Prints images/s.
//!
//! `cargo bench --bench decode`

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use gan_engine::data::image::{decode_rgb, make_square, prepare_rgb, resize_to_planar, to_planar, Fit};
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
    bench_resize(c, &files);

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

/// The resize alone, one thread, on decoded square images: ours (src/data/image.rs, through
/// `fast_image_resize`) and the `image` crate's, each with the Catmull-Rom filter and ending
/// in the planar bytes the cache stores. (The separable resize `fast_image_resize` replaced
/// took about four times as long as it, and the `image` crate's about six to eight.)
fn bench_resize(c: &mut Criterion, files: &[Vec<u8>]) {
    let squares: Vec<image::RgbImage> = files.iter().map(|f| make_square(decode_rgb(f).unwrap(), Fit::Pad)).collect();
    let mut g = c.benchmark_group("resize");
    g.throughput(Throughput::Elements(IMAGES as u64));
    g.sample_size(20);
    for size in [32u32, 64, 128] {
        g.bench_function(format!("{size}px_ours"), |b| {
            b.iter(|| squares.iter().map(|sq| resize_to_planar(sq, size as usize, size as usize).len()).sum::<usize>())
        });
        g.bench_function(format!("{size}px_image_crate"), |b| {
            b.iter(|| {
                squares.iter().map(|sq| to_planar(&image::imageops::resize(sq, size, size, image::imageops::FilterType::CatmullRom)).len()).sum::<usize>()
            })
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
