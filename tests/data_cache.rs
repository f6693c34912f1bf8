//! The image cache: built once, reused, rebuilt when the captions file or an image changes,
//! never written into the data folder, and never left half-written.

mod common;

use gan_engine::data::cache::{cache_file_name, load_or_build};
use gan_engine::data::{prepare, read_catalogue, DataSource, Fit, PrepareOptions};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

fn tmp(name: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("data_cache").join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    v.sort();
    v
}

fn build(data: &Path, cache: &Path, size: usize, fit: Fit) -> (bool, PathBuf, Vec<u32>) {
    let cat = read_catalogue(data).unwrap();
    let c = load_or_build(&cat, size, fit, cache, false).unwrap();
    (c.built, c.path.clone(), c.trailer.items.clone())
}

#[test]
fn built_once_then_rebuilt_on_every_kind_of_change() {
    let root = tmp("invalidate");
    let data = root.join("data");
    let cache = root.join("cache");
    copy_dir(&fixture("quirks"), &data);
    let data_files = listing(&data);

    let (built, path, items) = build(&data, &cache, 16, Fit::Pad);
    assert!(built);
    assert!(path.starts_with(&cache));
    assert_eq!(items, [0, 1, 2, 3], "item 4 (1006.jpg) is corrupt");
    let (built, path2, _) = build(&data, &cache, 16, Fit::Pad);
    assert!(!built, "an unchanged data set reuses its cache");
    assert_eq!(path, path2);

    // The captions file changes: one more product.
    let mut styles = std::fs::read_to_string(data.join("styles.csv")).unwrap();
    styles.push_str("9999,Women,Apparel,Topwear,Tops,Yellow,Summer,2012,Casual,Yellow Top\n");
    std::fs::write(data.join("styles.csv"), styles).unwrap();
    let (built, path3, items) = build(&data, &cache, 16, Fit::Pad);
    assert!(built, "captions changed");
    assert_eq!(path3, path, "same data set, size and fit: the same file is replaced");
    assert_eq!(items.len(), 5);
    assert!(!build(&data, &cache, 16, Fit::Pad).0);

    // An image's mtime changes (same bytes).
    let img = std::fs::File::options().write(true).open(data.join("images/1001.jpg")).unwrap();
    img.set_modified(SystemTime::now() + Duration::from_secs(5)).unwrap();
    drop(img);
    assert!(build(&data, &cache, 16, Fit::Pad).0, "mtime changed");
    assert!(!build(&data, &cache, 16, Fit::Pad).0);

    // An image is replaced by another one (size changes; mtime forced back to the old one).
    let old = std::fs::metadata(data.join("images/1003.jpg")).unwrap().modified().unwrap();
    std::fs::copy(data.join("images/1004.jpg"), data.join("images/1003.jpg")).unwrap();
    std::fs::File::options().write(true).open(data.join("images/1003.jpg")).unwrap().set_modified(old).unwrap();
    assert!(build(&data, &cache, 16, Fit::Pad).0, "image bytes changed");

    // A missing image appears: the row that had none is now used.
    std::fs::copy(data.join("images/1004.jpg"), data.join("images/1005.jpg")).unwrap();
    let (built, _, items) = build(&data, &cache, 16, Fit::Pad);
    assert!(built);
    assert_eq!(items.len(), 6);

    // Size and fit mode have their own files.
    let (built, p32, _) = build(&data, &cache, 32, Fit::Pad);
    let (built_crop, pcrop, _) = build(&data, &cache, 16, Fit::Crop);
    assert!(built && built_crop);
    assert!(p32 != path && pcrop != path && p32 != pcrop);
    assert!(!build(&data, &cache, 16, Fit::Pad).0, "other sizes leave the first cache valid");

    // Nothing went into the data folder and no temporary file is left behind.
    assert_eq!(listing(&data), data_files);
    let left: Vec<String> = listing(&cache).into_iter().filter(|n| n.contains(".tmp")).collect();
    assert!(left.is_empty(), "{left:?}");
    assert_eq!(listing(&cache).len(), 3);
}

#[test]
fn damaged_cache_files_are_rebuilt() {
    let root = tmp("damaged");
    let cache = root.join("cache");
    let data = fixture("quirks");
    let (_, path, _) = build(&data, &cache, 16, Fit::Pad);
    let good = std::fs::read(&path).unwrap();

    // Truncated (as a crash mid-copy would leave it), empty, and garbage.
    for bad in [good[..good.len() / 2].to_vec(), Vec::new(), vec![7u8; 5000]] {
        std::fs::write(&path, &bad).unwrap();
        assert!(build(&data, &cache, 16, Fit::Pad).0);
        assert_eq!(std::fs::read(&path).unwrap(), good, "rebuilt identically");
    }
    // A stale temporary file from a crashed build is ignored.
    std::fs::write(cache.join(format!("{}.tmp-1-0", path.file_name().unwrap().to_string_lossy())), b"half").unwrap();
    assert!(!build(&data, &cache, 16, Fit::Pad).0);
}

#[test]
fn cache_names_differ_per_data_set() {
    let a = cache_file_name(&fixture("quirks"), 64, Fit::Pad);
    let b = cache_file_name(&fixture("captions-csv"), 64, Fit::Pad);
    assert!(a.starts_with("quirks-") && a.ends_with("-64px-pad.cache"), "{a}");
    assert_ne!(a, b);
}

#[test]
fn prepare_uses_the_cache_and_counts_unreadable_images() {
    let cache = tmp("prepare");
    let opts = PrepareOptions { size: 16, crop: false, cache_dir: Some(cache.clone()), max_features: 256, progress: false, tfidf: None };
    let data = prepare(&DataSource::Folder(fixture("quirks")), &opts).unwrap();
    assert_eq!(data.len(), 4);
    assert!(data.summary.contains("read 9 products, used 4, skipped 5"), "{}", data.summary);
    assert!(data.summary.contains("unreadable image 1"), "{}", data.summary);
    assert_eq!(data.captions[3], "Unisex Grey Backpacks Fall Wildcraft Grey Backpack");
    assert!(data.cache_path.as_ref().unwrap().starts_with(&cache));
    // Vectors are the encoder's, and images lie in [-1, 1] with white (1.0) corners.
    assert_eq!(data.text(1), data.tfidf.encode(&data.captions[1]).as_slice());
    let mut img = vec![0.0f32; 3 * 16 * 16];
    data.image(1, &mut img);
    assert!(img.iter().all(|v| (-1.0..=1.0).contains(v)));
    assert_eq!(img[0], 1.0);
    // The vocabulary comes from the rows with an image file, including the corrupt one's.
    assert!(data.tfidf.index_of("corrupt").is_some());

    // A saved vocabulary is reused as is.
    let saved = gan_engine::text::Tfidf::fit(&["blue shirt".to_string(), "red".to_string()], 256);
    let data2 = prepare(&DataSource::Folder(fixture("quirks")), &PrepareOptions { tfidf: Some(saved.clone()), ..opts }).unwrap();
    assert_eq!(data2.tfidf, saved);
    assert_eq!(data2.text(0).len(), 3);
}

#[test]
fn bad_sizes_and_missing_folders_are_errors() {
    let opts = |size| PrepareOptions { size, crop: false, cache_dir: Some(tmp("bad")), max_features: 256, progress: false, tfidf: None };
    let e = prepare(&DataSource::Folder(fixture("quirks")), &opts(48)).err().unwrap();
    assert!(format!("{e:#}").contains("use 32, 64 or 128"), "{e:#}");
    let e = prepare(&DataSource::Folder(fixture("no-such-folder")), &opts(32)).err().unwrap();
    assert!(format!("{e:#}").contains("does not exist"), "{e:#}");
}

#[test]
fn shared_products_prepare_and_reload() {
    let Some(dir) = common::shared_products() else { return };
    // Kept across test runs on purpose: the second run measures the cached path.
    let cache = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("data_cache").join("shared");
    let opts = PrepareOptions { size: 32, crop: false, cache_dir: Some(cache), max_features: 256, progress: false, tfidf: None };
    let data = prepare(&DataSource::Folder(dir.clone()), &opts).unwrap();
    assert_eq!(data.len(), 3834, "styles.csv's 3,834 rows, each with its image (tests/data_readers.rs)");
    assert!(data.summary.contains("read 3834 products, used 3834, skipped 0"), "{}", data.summary);
    assert_eq!(data.tfidf.dim(), 256);
    let again = prepare(&DataSource::Folder(dir), &opts).unwrap();
    let (mut a, mut b) = (vec![0.0f32; 3 * 32 * 32], vec![0.0f32; 3 * 32 * 32]);
    data.image(3833, &mut a);
    again.image(3833, &mut b);
    assert_eq!(a, b);
    // Product photos sit on white: the corner pixel is (nearly) white.
    assert!(a[0] > 0.9, "{}", a[0]);
}
