//! The batch loader: seeded and exactly resumable from `(epoch, cursor)`, full batches only,
//! mismatched texts that really differ.

use gan_engine::data::loader::epoch_order;
use gan_engine::data::{prepare, Batch, DataSource, Loader, LoaderOptions, LoaderState, PrepareOptions, PreparedData};
use std::collections::HashSet;
use std::sync::Arc;

fn synthetic(n: usize) -> Arc<PreparedData> {
    let opts = PrepareOptions { size: 16, crop: false, cache_dir: None, max_features: 256, progress: false, tfidf: None };
    Arc::new(prepare(&DataSource::Synthetic { n, seed: 3 }, &opts).unwrap())
}

fn opts(batch: usize, seed: u64) -> LoaderOptions {
    LoaderOptions { batch, seed, flip: true, mismatched: true }
}

fn take(loader: &mut Loader, k: usize) -> Vec<Batch> {
    (0..k).map(|_| loader.next_batch().unwrap()).collect()
}

fn same(a: &Batch, b: &Batch) -> bool {
    a.indices == b.indices && a.images == b.images && a.texts == b.texts && a.mismatched_texts == b.mismatched_texts && a.captions == b.captions
}

#[test]
fn same_seed_same_batches_other_seed_other_order() {
    let data = synthetic(50);
    let a = take(&mut Loader::new(data.clone(), opts(8, 1), LoaderState::default()).unwrap(), 9);
    let b = take(&mut Loader::new(data.clone(), opts(8, 1), LoaderState::default()).unwrap(), 9);
    assert!(a.iter().zip(&b).all(|(x, y)| same(x, y)));
    let c = take(&mut Loader::new(data, opts(8, 2), LoaderState::default()).unwrap(), 1);
    assert_ne!(a[0].indices, c[0].indices);
}

#[test]
fn resume_from_state_gives_the_batches_that_would_have_come() {
    let data = synthetic(50);
    // 50 / 8 = 6 batches per epoch; 14 batches cross two epoch boundaries.
    let mut full = Loader::new(data.clone(), opts(8, 5), LoaderState::default()).unwrap();
    assert_eq!(full.batches_per_epoch(), 6);
    let all = take(&mut full, 14);
    for stop in [1, 5, 6, 7, 12] {
        let mut first = Loader::new(data.clone(), opts(8, 5), LoaderState::default()).unwrap();
        take(&mut first, stop);
        let state = first.state();
        // Through JSON, as a checkpoint stores it.
        let state: LoaderState = serde_json::from_str(&serde_json::to_string(&state).unwrap()).unwrap();
        drop(first);
        let mut resumed = Loader::new(data.clone(), opts(8, 5), state).unwrap();
        for (k, b) in take(&mut resumed, 14 - stop).iter().enumerate() {
            assert!(same(b, &all[stop + k]), "resumed after {stop}: batch {} differs", stop + k);
        }
    }
    // After the 6th batch the state is the start of epoch 1.
    let mut l = Loader::new(data, opts(8, 5), LoaderState::default()).unwrap();
    take(&mut l, 6);
    assert_eq!(l.state(), LoaderState { epoch: 1, cursor: 0 });
}

#[test]
fn epochs_are_permutations_with_full_batches() {
    let data = synthetic(50);
    let mut l = Loader::new(data.clone(), opts(8, 9), LoaderState::default()).unwrap();
    for epoch in 0..2u64 {
        let order = epoch_order(50, 9, epoch);
        let mut seen = HashSet::new();
        for k in 0..6 {
            let b = l.next_batch().unwrap();
            assert_eq!(b.indices.len(), 8);
            assert_eq!(b.images.len(), 8 * 3 * 16 * 16);
            assert_eq!(b.texts.len(), 8 * data.tfidf.dim());
            assert_eq!(b.indices, order[k * 8..k * 8 + 8]);
            seen.extend(b.indices.iter().copied());
        }
        assert_eq!(seen.len(), 48, "no sample twice in an epoch; the last 2 are dropped");
    }
    assert_ne!(epoch_order(50, 9, 0), epoch_order(50, 9, 1), "a fresh shuffle each epoch");
}

#[test]
fn batch_contents_match_the_data() {
    let data = synthetic(40);
    let mut l = Loader::new(data.clone(), opts(10, 4), LoaderState::default()).unwrap();
    let mut flips = 0;
    for _ in 0..8 {
        let b = l.next_batch().unwrap();
        let dim = data.tfidf.dim();
        let il = 3 * 16 * 16;
        let mism = b.mismatched_texts.as_ref().unwrap();
        for (k, &row) in b.indices.iter().enumerate() {
            let mut img = vec![0.0f32; il];
            data.image_flipped(row, b.flipped[k], &mut img);
            assert_eq!(&b.images[k * il..(k + 1) * il], img.as_slice());
            assert_eq!(&b.texts[k * dim..(k + 1) * dim], data.text(row));
            assert_eq!(b.captions[k], data.captions[row]);
            assert_ne!(&mism[k * dim..(k + 1) * dim], data.text(row), "a mismatched text differs from the row's own");
            flips += b.flipped[k] as usize;
        }
    }
    assert!((20..=60).contains(&flips), "about half of 80 images mirrored, got {flips}");
    let no_extras =
        Loader::new(data, LoaderOptions { batch: 4, seed: 0, flip: false, mismatched: false }, LoaderState::default()).unwrap().next_batch().unwrap();
    assert!(no_extras.mismatched_texts.is_none());
    assert!(no_extras.flipped.iter().all(|f| !f));
}

#[test]
fn batch_larger_than_the_data_set_is_an_error() {
    let data = synthetic(10);
    let e = Loader::new(data.clone(), opts(11, 0), LoaderState::default()).err().unwrap();
    assert!(e.to_string().contains("--batch 11 is larger than the data set (10 products)"), "{e}");
    assert!(Loader::new(data.clone(), opts(0, 0), LoaderState::default()).is_err());
    // The whole data set in one batch works; a state past the end moves to the next epoch.
    let mut l = Loader::new(data, opts(10, 0), LoaderState { epoch: 3, cursor: 7 }).unwrap();
    assert_eq!(l.state(), LoaderState { epoch: 4, cursor: 0 });
    let b = l.next_batch().unwrap();
    assert_eq!(b.indices, epoch_order(10, 0, 4));
}

fn folder(dir: std::path::PathBuf) -> Arc<PreparedData> {
    let cache = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("data_loader").join("cache");
    let opts = PrepareOptions { size: 16, crop: false, cache_dir: Some(cache), max_features: 256, progress: false, tfidf: None };
    Arc::new(prepare(&DataSource::Folder(dir), &opts).unwrap())
}

#[test]
fn mismatched_texts_come_from_another_text_or_are_an_error() {
    let fixtures = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    // Two products with different captions: each one's mismatch is the other's text.
    let data = folder(fixtures.join("captions-jsonl"));
    let mut l = Loader::new(data.clone(), opts(2, 1), LoaderState::default()).unwrap();
    for _ in 0..5 {
        let b = l.next_batch().unwrap();
        let dim = data.tfidf.dim();
        let m = b.mismatched_texts.unwrap();
        for k in 0..2 {
            assert_eq!(&m[k * dim..(k + 1) * dim], data.text(1 - b.indices[k]));
        }
    }
    // Every caption the same: there is nothing to mismatch with.
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("data_loader").join("same-text");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(fixtures.join("captions-jsonl/pics/g.png"), dir.join("g.png")).unwrap();
    std::fs::write(dir.join("captions.csv"), "image,text\ng.png,Green cap\ng.png,green CAP!\n").unwrap();
    let data = folder(dir);
    let e = Loader::new(data.clone(), opts(2, 1), LoaderState::default()).err().unwrap();
    assert!(e.to_string().contains("same text vector"), "{e}");
    assert!(Loader::new(data, LoaderOptions { mismatched: false, ..opts(2, 1) }, LoaderState::default()).is_ok());
}
