//! The Kaggle "Fashion Product Images" layout: `styles.csv` + `images/<id>.jpg`.
//!
//! Caption of a row: the non-empty, non-`NA` values of gender, baseColour, articleType, usage,
//! season and productDisplayName, joined by single spaces, in that order.
//!
//! Quirks of real copies, each counted: product names with unquoted commas (the name is the
//! last column, so extra fields are joined back into it), trailing empty columns (dropped),
//! `NA` (treated as empty), rows without an image and duplicate ids (skipped), images without
//! a row (ignored). Unreadable images are found later, when the cache is built.

use super::catalogue::{file_stamp, hash_image, read_text, Catalogue, FileStamp, Item, Layout, ReadCounts, SkipReason};
use super::records::{records, Record};
use crate::hash::Fnv64;
use anyhow::{bail, Context, Result};
use std::collections::{HashMap, HashSet};
use std::path::Path;

/// Columns that make up a caption, in caption order.
pub const CAPTION_COLUMNS: [&str; 6] = ["gender", "baseColour", "articleType", "usage", "season", "productDisplayName"];

/// Label columns kept for the feature network of `gan-engine eval`, in head order.
pub const LABEL_COLUMNS: [&str; 4] = ["articleType", "baseColour", "gender", "masterCategory"];

/// Image file names tried for a row, in order.
const IMAGE_EXTENSIONS: [&str; 4] = ["jpg", "jpeg", "png", "JPG"];

/// The caption of one row from its values (already in `CAPTION_COLUMNS` order).
pub fn caption_of<'a>(values: impl IntoIterator<Item = &'a str>) -> String {
    values.into_iter().map(str::trim).filter(|v| !v.is_empty() && *v != "NA").collect::<Vec<_>>().join(" ")
}

fn is_plain_id(id: &str) -> bool {
    !id.is_empty() && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

pub fn read(dir: &Path) -> Result<Catalogue> {
    let styles = dir.join("styles.csv");
    let images_dir = dir.join("images");
    let text = read_text(&styles)?;
    let listing = std::fs::read_dir(&images_dir)
        .with_context(|| format!("{}: cannot list the image folder (the Kaggle layout keeps images in images/<id>.jpg)", images_dir.display()))?;
    let mut images: HashMap<String, FileStamp> = HashMap::new();
    for entry in listing {
        let entry = entry.with_context(|| format!("cannot list {}", images_dir.display()))?;
        let Ok(meta) = entry.metadata() else { continue };
        if meta.is_file() {
            if let Ok(name) = entry.file_name().into_string() {
                images.insert(name, file_stamp(&meta));
            }
        }
    }
    parse(dir, &text, &images)
}

/// The catalogue of `styles.csv`'s text, with `images` the files of `dir/images` by name.
pub fn parse(dir: &Path, text: &str, images: &HashMap<String, FileStamp>) -> Result<Catalogue> {
    let styles = dir.join("styles.csv");
    let images_dir = dir.join("images");
    let mut recs = records(text);
    let header = match recs.next() {
        Some(Record::Fields(h)) => h.into_iter().map(|c| c.trim().to_string()).collect::<Vec<_>>(),
        _ => bail!(
            "{}: no header line; expected id,gender,masterCategory,subCategory,articleType,baseColour,season,year,usage,productDisplayName",
            styles.display()
        ),
    };
    let col = |name: &str| header.iter().position(|h| h == name);
    let id_col = col("id").with_context(|| format!("{}: header has no `id` column (found: {})", styles.display(), header.join(",")))?;
    let name_col =
        col("productDisplayName").with_context(|| format!("{}: header has no `productDisplayName` column (found: {})", styles.display(), header.join(",")))?;
    let caption_cols: Vec<Option<usize>> = CAPTION_COLUMNS.iter().map(|c| col(c)).collect();
    let label_cols: Vec<Option<usize>> = LABEL_COLUMNS.iter().map(|c| col(c)).collect();
    let width = header.len();

    let mut counts = ReadCounts::default();
    let mut items = Vec::new();
    let mut seen_ids = HashSet::new();
    let mut fp = Fnv64::default();
    fp.str("kaggle").str(text);
    for rec in recs {
        counts.read += 1;
        let mut fields = match rec {
            Record::Fields(f) => f,
            Record::Malformed(_) => {
                counts.skip(SkipReason::MalformedRow);
                continue;
            }
        };
        if fields.len() > width && fields[width..].iter().all(|f| f.trim().is_empty()) {
            counts.trailing_empty_columns += 1;
            fields.truncate(width);
        }
        if fields.len() > width {
            // An unquoted name with commas: only repairable when the name is the last column.
            if name_col != width - 1 {
                counts.skip(SkipReason::MalformedRow);
                continue;
            }
            counts.names_with_commas += 1;
            // Trailing empty columns after the name are not part of it.
            while fields.len() > width && fields.last().is_some_and(|f| f.trim().is_empty()) {
                fields.pop();
            }
            let name = fields[name_col..].join(",");
            fields.truncate(name_col);
            fields.push(name);
        }
        fields.resize(width, String::new());
        let id = fields[id_col].trim();
        if !is_plain_id(id) {
            counts.skip(SkipReason::MalformedRow);
            continue;
        }
        counts.na_values += fields.iter().filter(|f| f.trim() == "NA").count();
        let caption = caption_of(caption_cols.iter().map(|c| c.map(|i| fields[i].as_str()).unwrap_or("")));
        if !seen_ids.insert(id.to_string()) {
            counts.skip(SkipReason::DuplicateId);
            continue;
        }
        let Some((file_name, stamp)) = IMAGE_EXTENSIONS.iter().find_map(|ext| {
            let name = format!("{id}.{ext}");
            images.get(&name).map(|m| (name, *m))
        }) else {
            counts.skip(SkipReason::NoImage);
            continue;
        };
        if caption.is_empty() {
            counts.skip(SkipReason::EmptyCaption);
            continue;
        }
        hash_image(&mut fp, &file_name, stamp);
        let labels = label_cols.iter().map(|c| c.map(|i| fields[i].trim()).filter(|v| *v != "NA").unwrap_or("").to_string()).collect();
        items.push(Item { image: images_dir.join(&file_name), caption, id: id.to_string(), labels });
    }
    // Images no row names; a row whose caption was empty still "has" its image.
    let named: HashSet<String> = seen_ids.iter().flat_map(|id| IMAGE_EXTENSIONS.iter().map(move |e| format!("{id}.{e}"))).collect();
    counts.images_without_row = images.keys().filter(|n| !named.contains(*n) && is_image_name(n)).count();
    let label_heads = LABEL_COLUMNS.iter().map(|c| c.to_string()).collect();
    Ok(Catalogue { root: dir.to_path_buf(), layout: Layout::Kaggle, items, counts, fingerprint: fp.finish(), label_heads })
}

fn is_image_name(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    [".jpg", ".jpeg", ".png"].iter().any(|e| lower.ends_with(e))
}
