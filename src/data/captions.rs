//! Caption-file layouts: `captions.csv` (header `image,text`) and `captions.jsonl` (one
//! `{"image": ..., "text": ...}` per line). Image paths are relative to the data folder (an
//! `images/` prefix may be left out).

use super::catalogue::{hash_image, read_text, Catalogue, Item, Layout, ReadCounts, SkipReason};
use super::records::{records, Record};
use crate::hash::Fnv64;
use anyhow::{bail, Result};
use std::path::Path;

/// Adds one (image, text) pair, or counts why it was skipped.
fn push_item(dir: &Path, image: &str, text: &str, items: &mut Vec<Item>, counts: &mut ReadCounts, fp: &mut Fnv64) {
    let image = image.trim();
    let caption = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if image.is_empty() {
        counts.skip(SkipReason::MalformedRow);
        return;
    }
    let found = [dir.join(image), dir.join("images").join(image)].into_iter().find_map(|p| match std::fs::metadata(&p) {
        Ok(m) if m.is_file() => Some((p, m)),
        _ => None,
    });
    let Some((path, meta)) = found else {
        counts.skip(SkipReason::NoImage);
        return;
    };
    if caption.is_empty() {
        counts.skip(SkipReason::EmptyCaption);
        return;
    }
    let id = path.strip_prefix(dir).unwrap_or(&path).to_string_lossy().into_owned();
    hash_image(fp, &id, &meta);
    items.push(Item { image: path, caption, id, labels: Vec::new() });
}

pub fn read_csv(dir: &Path) -> Result<Catalogue> {
    let file = dir.join("captions.csv");
    let text = read_text(&file)?;
    let mut recs = records(&text);
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
    fp.str("captions.csv").str(&text);
    for rec in recs {
        counts.read += 1;
        match rec {
            Record::Fields(f) if f.len() > image_col.max(text_col) => push_item(dir, &f[image_col], &f[text_col], &mut items, &mut counts, &mut fp),
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
    let file = dir.join("captions.jsonl");
    let text = read_text(&file)?;
    let mut counts = ReadCounts::default();
    let mut items = Vec::new();
    let mut fp = Fnv64::default();
    fp.str("captions.jsonl").str(&text);
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        counts.read += 1;
        match serde_json::from_str::<JsonLine>(line) {
            Ok(j) => push_item(dir, &j.image, &j.text, &mut items, &mut counts, &mut fp),
            Err(_) => counts.skip(SkipReason::MalformedRow),
        }
    }
    Ok(Catalogue { root: dir.to_path_buf(), layout: Layout::CaptionsJsonl, items, counts, fingerprint: fp.finish(), label_heads: Vec::new() })
}
