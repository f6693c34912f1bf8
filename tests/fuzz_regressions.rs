//! The fuzz targets' inputs as plain tests: every seed of `scripts/fuzz.sh` and every input a
//! fuzzer once crashed on (kept in `tests/fixtures/fuzz/TARGET/`) goes through the target's
//! body in `gan_engine::fuzzing`, which must not panic. `write_fuzz_seeds` (ignored) writes
//! the seeds that cannot be plain fixture files: a tiny valid checkpoint and image cache.

use gan_engine::backend::cpu::Cpu;
use gan_engine::data::{DataStamp, LoaderState};
use gan_engine::fuzzing::{self, CACHE_ITEMS, CACHE_KEY, CACHE_SIZE};
use gan_engine::model::{ModelConfig, TextInD};
use gan_engine::rng::Rng;
use gan_engine::text::Tfidf;
use gan_engine::train::checkpoint::{self, Checkpoint};
use gan_engine::train::run::{RunState, TrainOptions};
use gan_engine::train::{Gan, Hyper};
use std::path::{Path, PathBuf};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// The files of `dir`, if it exists.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir).map(|d| d.map(|e| e.unwrap().path()).filter(|p| p.is_file()).collect()).unwrap_or_default();
    v.sort();
    v
}

/// A fuzz target's name, its body and the fixture files that seed it.
type Target = (&'static str, fn(&[u8]), Vec<PathBuf>);

/// Each target with the fixture files that seed it (scripts/fuzz.sh copies the same ones).
fn targets() -> Vec<Target> {
    let f = fixtures();
    let images: Vec<PathBuf> = ["quirks/images", "captions-csv/images", "captions-jsonl/pics"].iter().flat_map(|d| files(&f.join(d))).collect();
    vec![
        ("checkpoint", fuzzing::checkpoint as fn(&[u8]), vec![]),
        ("styles_csv", fuzzing::styles_csv, vec![f.join("quirks/styles.csv")]),
        ("captions_csv", fuzzing::captions_csv, vec![f.join("captions-csv/captions.csv")]),
        ("captions_jsonl", fuzzing::captions_jsonl, vec![f.join("captions-jsonl/captions.jsonl")]),
        ("image_cache", fuzzing::image_cache, vec![]),
        ("image", fuzzing::image, images),
    ]
}

#[test]
fn every_seed_and_every_crash_input_is_read_without_panicking() {
    let mut n = 0;
    for (name, body, seeds) in targets() {
        let own = files(&fixtures().join("fuzz").join(name));
        assert!(!own.is_empty() || !seeds.is_empty(), "{name} has no seed");
        for file in seeds.iter().chain(&own) {
            body(&std::fs::read(file).unwrap());
            n += 1;
        }
    }
    println!("{n} inputs");
}

/// The generated seeds are accepted by their readers: fuzzing starts from inputs that go all
/// the way through, not from ones refused at the first byte.
#[test]
fn the_generated_seeds_pass_every_check() {
    let ck = checkpoint::from_bytes(&std::fs::read(fixtures().join("fuzz/checkpoint/tiny.safetensors")).unwrap()).unwrap();
    RunState::from_checkpoint(&ck).unwrap();
    let cache = std::fs::read(fixtures().join("fuzz/image_cache/tiny.cache")).unwrap();
    assert!(gan_engine::data::cache::parse(&cache, CACHE_KEY, CACHE_SIZE, gan_engine::data::Fit::Pad, CACHE_ITEMS).is_some());
}

/// Writes the generated seeds: `cargo test --release --test fuzz_regressions -- --ignored`.
#[test]
#[ignore]
fn write_fuzz_seeds() {
    let be = Cpu::new();
    let cfg =
        ModelConfig { size: 16, width: 1, noise_dim: 2, text_dim: 2, text_proj: 2, slope: 0.2, minibatch_std: 0, text_in_d: TextInD::Tile, progressive: false };
    let gan = Gan::new(&be, &cfg, &Hyper::default(), 1).unwrap();
    let options = TrainOptions {
        data: None,
        size: 16,
        width: 1,
        batch: 1,
        iters: 1,
        hyper: Hyper::default(),
        seed: 1,
        save_every: 1,
        sample_every: 1,
        keep: 1,
        flip: true,
        crop: false,
        max_features: 2,
        cache_dir: None,
        precision: Default::default(),
        eval_split: 0.1,
        eval_every: 0,
        minibatch_std: 0,
        augment: Default::default(),
        ema_half_life: 0.0,
        ema_ramp: 0.05,
        progressive: false,
        fade_images: 100_000,
        stage_images: 100_000,
        batch_schedule: Vec::new(),
        adam_reset: Default::default(),
        text_in_d: TextInD::Tile,
    };
    let state = RunState {
        format: checkpoint::FORMAT.into(),
        config: cfg,
        options,
        tfidf: Tfidf { vocab: vec!["dress".into(), "red".into()], idf: vec![1.0, 1.5] },
        iteration: 0,
        step: 0,
        noise_rng: Rng::new(1),
        loader: LoaderState::default(),
        sample_captions: vec!["red dress".into()],
        elapsed_seconds: 0.0,
        data_stamp: Some(DataStamp { products: 1, fingerprint: "0123456789abcdef".into() }),
        ada: None,
        progress: None,
    };
    let dir = fixtures().join("fuzz/checkpoint");
    std::fs::create_dir_all(&dir).unwrap();
    checkpoint::save(&dir.join("tiny.safetensors"), &Checkpoint { meta: serde_json::to_value(&state).unwrap(), tensors: gan.export(&be).unwrap() }).unwrap();

    // An image cache of two 16 px images: the 64-byte header, the pixels, the JSON trailer.
    let per = 3 * CACHE_SIZE * CACHE_SIZE;
    let trailer = serde_json::json!({ "key": CACHE_KEY, "size": CACHE_SIZE, "fit": "pad", "items": [0, 3], "unreadable": [["images/1.jpg", "truncated"]] });
    let json = serde_json::to_vec(&trailer).unwrap();
    let t_off = 64 + 2 * per;
    let mut bytes = b"GANCACH1".to_vec();
    bytes.extend((t_off as u64).to_le_bytes());
    bytes.extend((json.len() as u64).to_le_bytes());
    bytes.resize(64, 0);
    bytes.extend((0..2 * per).map(|i| (i * 7 % 256) as u8));
    bytes.extend(json);
    let dir = fixtures().join("fuzz/image_cache");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("tiny.cache"), bytes).unwrap();
}
