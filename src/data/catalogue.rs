//! What every catalogue reader produces: the products whose image file exists, with their
//! captions, counts of what was skipped and why, and a fingerprint of the sources.

use crate::hash::Fnv64;
use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

#[derive(Clone, Debug)]
pub struct Item {
    pub image: PathBuf,
    pub caption: String,
    /// The product's id: the Kaggle `id`, else the image path relative to the data folder.
    /// The held-out evaluation split is a hash of it (`eval::split`).
    pub id: String,
    /// The catalogue's own labels of the product, one per `Catalogue::label_heads` (empty
    /// string: not given). The feature network of `gan-engine eval` learns them.
    pub labels: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum SkipReason {
    /// A row that cannot be parsed: bad quoting, too many fields, no id, bad JSON.
    MalformedRow,
    /// The row names an image file that is not there.
    NoImage,
    /// The image file is there but does not decode (found while building the cache).
    UnreadableImage,
    /// Every caption field is empty or `NA`.
    EmptyCaption,
    /// A second row with an id seen before (the first one is kept).
    DuplicateId,
    /// An image path that leaves the data folder (absolute, or through `..`).
    OutsideFolder,
}

impl SkipReason {
    pub fn label(self) -> &'static str {
        match self {
            SkipReason::MalformedRow => "malformed row",
            SkipReason::NoImage => "no image",
            SkipReason::UnreadableImage => "unreadable image",
            SkipReason::EmptyCaption => "empty caption",
            SkipReason::DuplicateId => "duplicate id",
            SkipReason::OutsideFolder => "image outside the data folder",
        }
    }
}

/// Counts of what a reader saw. Quirks that could be repaired are counted but not skipped.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ReadCounts {
    /// Product rows (or JSON lines) read, header and blank lines excluded.
    pub read: usize,
    pub skipped: BTreeMap<SkipReason, usize>,
    /// Image files in the image folder that no row names (ignored).
    pub images_without_row: usize,
    /// Rows whose unquoted product name contained commas (fields joined back together).
    pub names_with_commas: usize,
    /// Rows with empty columns beyond the header's (dropped).
    pub trailing_empty_columns: usize,
    /// `NA` values treated as empty.
    pub na_values: usize,
}

impl ReadCounts {
    pub fn skip(&mut self, reason: SkipReason) {
        *self.skipped.entry(reason).or_insert(0) += 1;
    }

    pub fn skipped_total(&self) -> usize {
        self.skipped.values().sum()
    }

    /// The one summary line: products read, used, skipped by reason, and repaired quirks.
    pub fn summary(&self, used: usize) -> String {
        let mut s = format!("read {} products, used {}, skipped {}", self.read, used, self.skipped_total());
        if !self.skipped.is_empty() {
            let parts: Vec<String> = self.skipped.iter().map(|(r, n)| format!("{} {}", r.label(), n)).collect();
            let _ = write!(s, " ({})", parts.join(", "));
        }
        if self.images_without_row > 0 {
            let _ = write!(s, "; ignored: images without a row {}", self.images_without_row);
        }
        let repaired: Vec<String> =
            [("names with commas", self.names_with_commas), ("trailing empty columns", self.trailing_empty_columns), ("NA values", self.na_values)]
                .iter()
                .filter(|(_, n)| *n > 0)
                .map(|(what, n)| format!("{what} {n}"))
                .collect();
        if !repaired.is_empty() {
            let _ = write!(s, "; repaired: {}", repaired.join(", "));
        }
        s
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    Kaggle,
    CaptionsCsv,
    CaptionsJsonl,
}

impl Layout {
    pub fn name(self) -> &'static str {
        match self {
            Layout::Kaggle => "kaggle styles.csv",
            Layout::CaptionsCsv => "captions.csv",
            Layout::CaptionsJsonl => "captions.jsonl",
        }
    }
}

#[derive(Clone, Debug)]
pub struct Catalogue {
    pub root: PathBuf,
    pub layout: Layout,
    /// Products with a caption and an existing image file, in file order.
    pub items: Vec<Item>,
    pub counts: ReadCounts,
    /// Changes whenever the captions file's bytes or any used image's path, size or mtime do.
    pub fingerprint: u64,
    /// Names of the label columns every item carries (`Item::labels`); empty for layouts
    /// without labels (captions files).
    pub label_heads: Vec<String>,
}

impl Catalogue {
    pub fn captions(&self) -> Vec<String> {
        self.items.iter().map(|i| i.caption.clone()).collect()
    }
}

/// Reads the catalogue in `dir`: `styles.csv` (Kaggle), else `captions.csv`, else
/// `captions.jsonl`. Bad rows are skipped and counted; only an unusable folder is an error.
pub fn read_catalogue(dir: &Path) -> Result<Catalogue> {
    if !dir.exists() {
        bail!("data folder {} does not exist: pass --data with a folder holding styles.csv + images/, captions.csv or captions.jsonl", dir.display());
    }
    if !dir.is_dir() {
        bail!("--data {} is not a folder", dir.display());
    }
    let cat = if dir.join("styles.csv").is_file() {
        super::kaggle::read(dir)?
    } else if dir.join("captions.csv").is_file() {
        super::captions::read_csv(dir)?
    } else if dir.join("captions.jsonl").is_file() {
        super::captions::read_jsonl(dir)?
    } else if dir.join("images").is_dir() {
        bail!("{}: missing styles.csv: the Kaggle layout needs styles.csv next to images/ (or give captions.csv or captions.jsonl)", dir.display());
    } else {
        bail!(
            "{}: no styles.csv, captions.csv or captions.jsonl found: expected the Kaggle layout (styles.csv + images/<id>.jpg) or a captions file",
            dir.display()
        );
    };
    if cat.items.is_empty() {
        bail!(
            "{}: empty data set: no usable product ({} via {}); check that the images exist and the captions are not empty",
            dir.display(),
            cat.counts.summary(0),
            cat.layout.name()
        );
    }
    Ok(cat)
}

/// Size and modification time (ns since the epoch) of a file: what a catalogue's
/// fingerprint knows of an image.
pub type FileStamp = (u64, u64);

/// The stamp of a file.
pub fn file_stamp(meta: &std::fs::Metadata) -> FileStamp {
    let mtime = meta.modified().ok().and_then(|t| t.duration_since(UNIX_EPOCH).ok()).map(|d| d.as_nanos() as u64).unwrap_or(0);
    (meta.len(), mtime)
}

/// The stamp of `path` if it is a file.
pub fn stat_file(path: &Path) -> Option<FileStamp> {
    std::fs::metadata(path).ok().filter(|m| m.is_file()).map(|m| file_stamp(&m))
}

/// Folds one used image into a fingerprint.
pub fn hash_image(h: &mut Fnv64, rel: &str, (len, mtime): FileStamp) {
    h.str(rel).u64(len).u64(mtime);
}

pub fn read_text(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(text_from_bytes(&bytes))
}

/// A catalogue file's text. Lossy: a stray byte in one product name must not make the whole
/// file unreadable.
pub fn text_from_bytes(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}
