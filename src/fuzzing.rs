//! The bodies of the fuzz targets (`fuzz/fuzz_targets/*.rs` call these): each reader of
//! untrusted bytes, driven as the program drives it. Whatever the bytes, none may panic,
//! abort or allocate without bound; `tests/fuzz_regressions.rs` runs every seed and every
//! input a fuzzer once crashed on through them.

use crate::data::catalogue::{text_from_bytes, FileStamp};
use crate::data::{cache, captions, image, kaggle, Catalogue, Fit};
use std::collections::HashMap;
use std::path::Path;

/// The key, image size and catalogue length the cache target opens files for (the seed in
/// `tests/fixtures/fuzz/image_cache/` is made for them).
pub const CACHE_KEY: &str = "00000000f022f022";
pub const CACHE_SIZE: usize = 16;
pub const CACHE_ITEMS: usize = 8;

/// A checkpoint file, through every check `sample` and `train --resume` make on loading.
pub fn checkpoint(data: &[u8]) {
    if let Ok(ck) = crate::train::checkpoint::from_bytes(data) {
        let _ = crate::train::run::RunState::from_checkpoint(&ck);
    }
}

fn use_catalogue(cat: anyhow::Result<Catalogue>) {
    if let Ok(cat) = cat {
        let _ = (cat.captions(), cat.counts.summary(cat.items.len()));
    }
}

/// A Kaggle `styles.csv`, with `images/` holding `0.jpg` to `15.jpg`.
pub fn styles_csv(data: &[u8]) {
    let images: HashMap<String, FileStamp> = (0..16).map(|i| (format!("{i}.jpg"), (100, 0))).collect();
    use_catalogue(kaggle::parse(Path::new("data"), &text_from_bytes(data), &images));
}

/// Every path exists: the folder of the caption-file targets.
fn every_file_exists(_: &Path) -> Option<FileStamp> {
    Some((100, 0))
}

/// A `captions.csv`.
pub fn captions_csv(data: &[u8]) {
    use_catalogue(captions::parse_csv(Path::new("data"), &text_from_bytes(data), &every_file_exists));
}

/// A `captions.jsonl`.
pub fn captions_jsonl(data: &[u8]) {
    use_catalogue(captions::parse_jsonl(Path::new("data"), &text_from_bytes(data), &every_file_exists));
}

/// An image cache file: when it is accepted, every image it lists is inside it.
pub fn image_cache(data: &[u8]) {
    if let Some(trailer) = cache::parse(data, CACHE_KEY, CACHE_SIZE, Fit::Pad, CACHE_ITEMS) {
        let per = 3 * CACHE_SIZE * CACHE_SIZE;
        assert!(cache::PIXELS_OFFSET + trailer.items.len() * per <= data.len(), "an accepted cache lists images past its end");
    }
}

/// An image file, decoded and prepared at 32 px, padded and cropped.
pub fn image(data: &[u8]) {
    for fit in [Fit::Pad, Fit::Crop] {
        if let Ok(px) = image::prepare_bytes(data, 32, fit) {
            assert_eq!(px.len(), 3 * 32 * 32);
        }
    }
}
