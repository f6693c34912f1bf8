//! Caption-file layouts: `captions.csv` (header `image,text`) and `captions.jsonl` (one
//! `{"image": ..., "text": ...}` per line). Image paths are relative to the data folder (an
//! `images/` prefix may be left out); a path that leaves the folder (absolute, or through
//! `..`) is skipped and counted.

use super::catalogue::{hash_image, read_text, stat_file, Catalogue, FileStamp, Item, Layout, ReadCounts, SkipReason};
use super::records::{records, Record};
use crate::hash::Fnv64;
use anyhow::{bail, Result};
use std::path::{Component, Path};

/// What the parsers ask of the folder: the stamp of a file, `None` when there is none.
pub type Stat<'a> = &'a dyn Fn(&Path) -> Option<FileStamp>;

/// Adds one (image, text) pair, or counts why it was skipped.
fn push_item(dir: &Path, image: &str, text: &str, stat: Stat, items: &mut Vec<Item>, counts: &mut ReadCounts, fp: &mut Fnv64) {
    let image = image.trim();
    let caption = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if image.is_empty() {
        counts.skip(SkipReason::MalformedRow);
        return;
    }
    if Path::new(image).components().any(|c| !matches!(c, Component::Normal(_) | Component::CurDir)) {
        counts.skip(SkipReason::OutsideFolder);
        return;
    }
    let found = [dir.join(image), dir.join("images").join(image)].into_iter().find_map(|p| stat(&p).map(|s| (p, s)));
    let Some((path, stamp)) = found else {
        counts.skip(SkipReason::NoImage);
        return;
    };
    if caption.is_empty() {
        counts.skip(SkipReason::EmptyCaption);
        return;
    }
    let id = path.strip_prefix(dir).unwrap_or(&path).to_string_lossy().into_owned();
    hash_image(fp, &id, stamp);
    items.push(Item { image: path, caption, id, labels: Vec::new() });
}

pub fn read_csv(dir: &Path) -> Result<Catalogue> {
    parse_csv(dir, &read_text(&dir.join("captions.csv"))?, &stat_file)
}

/// The catalogue of `captions.csv`'s text, with `stat` telling which image files exist.
pub fn parse_csv(dir: &Path, text: &str, stat: Stat) -> Result<Catalogue> {
    let file = dir.join("captions.csv");
    let mut recs = records(text);
    let header: Vec<String> = match recs.next() {
        Some(Record::Fields(h)) => h.into_iter().map(|c| c.trim().to_string()).collect(),
        _ => bail!("{}: no header line; expected `image,text`", file.display()),
    };
    let (Some(image_col), Some(text_col)) = (header.iter().position(|h| h == "image"), header.iter().position(|h| h == "text")) else {
        bail!("{}: header must name the columns `image` and `text` (found: {})", file.display(), header.join(","));
    };
    let mut counts = ReadCounts::default();
    let mut items = Vec::new();
    let mut fp = Fnv64::default();
    fp.str("captions.csv").str(text);
    for rec in recs {
        counts.read += 1;
        match rec {
            Record::Fields(f) if f.len() > image_col.max(text_col) => push_item(dir, &f[image_col], &f[text_col], stat, &mut items, &mut counts, &mut fp),
            _ => counts.skip(SkipReason::MalformedRow),
        }
    }
    Ok(Catalogue { root: dir.to_path_buf(), layout: Layout::CaptionsCsv, items, counts, fingerprint: fp.finish(), label_heads: Vec::new() })
}

#[derive(serde::Deserialize)]
struct JsonLine {
    image: String,
    text: String,
}

pub fn read_jsonl(dir: &Path) -> Result<Catalogue> {
    parse_jsonl(dir, &read_text(&dir.join("captions.jsonl"))?, &stat_file)
}

/// The catalogue of `captions.jsonl`'s text, with `stat` telling which image files exist. A
/// UTF-8 byte order mark before the first line is not part of it.
pub fn parse_jsonl(dir: &Path, text: &str, stat: Stat) -> Result<Catalogue> {
    let mut counts = ReadCounts::default();
    let mut items = Vec::new();
    let mut fp = Fnv64::default();
    fp.str("captions.jsonl").str(text);
    for line in text.strip_prefix('\u{feff}').unwrap_or(text).lines().map(str::trim).filter(|l| !l.is_empty()) {
        counts.read += 1;
        match serde_json::from_str::<JsonLine>(line) {
            Ok(j) => push_item(dir, &j.image, &j.text, stat, &mut items, &mut counts, &mut fp),
            Err(_) => counts.skip(SkipReason::MalformedRow),
        }
    }
    Ok(Catalogue { root: dir.to_path_buf(), layout: Layout::CaptionsJsonl, items, counts, fingerprint: fp.finish(), label_heads: Vec::new() })
}
