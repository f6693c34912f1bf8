//! What several test files share: the real products in `../shared`, which CI provides.

use std::path::{Path, PathBuf};

/// `../shared/data/fashion-products`, the 3,834 real products. Where it is missing the
/// test says "skipped" and returns, except under `CI=true` (`.ci/run` sets it), where the
/// folder is promised and its absence fails the test instead of passing it unseen.
pub fn shared_products() -> Option<PathBuf> {
    present_or_skip(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/fashion-products"), in_ci())
}

/// `CI=true` (or `1`) in the environment.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// `dir` when it holds a catalogue (`styles.csv`); else a skip, or a failure when `ci`.
pub fn present_or_skip(dir: &Path, ci: bool) -> Option<PathBuf> {
    if dir.join("styles.csv").is_file() {
        return Some(dir.to_path_buf());
    }
    assert!(!ci, "CI=true but {} is missing: CI provides ../shared read-only next to the clone, so this test must not skip", dir.display());
    println!("skipped: {} not found", dir.display());
    None
}
