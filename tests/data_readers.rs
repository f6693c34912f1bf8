//! Catalogue readers: every Kaggle quirk skipped or repaired and counted, the caption-file
//! layouts, and clear errors for unusable folders.

mod common;

use gan_engine::data::{read_catalogue, Layout, SkipReason};
use std::path::PathBuf;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

fn tmp(name: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("data_readers").join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn kaggle_quirks_are_counted() {
    let cat = read_catalogue(&fixture("quirks")).unwrap();
    assert_eq!(cat.layout, Layout::Kaggle);
    let caps = cat.captions();
    assert_eq!(
        caps,
        [
            "Men Blue Tshirts Casual Summer Roadster Men Blue T-Shirt",
            // Unquoted commas in the name: the extra fields are joined back.
            "Women Red Tops Casual Summer Lady, Red Top, Sleeveless",
            // Trailing empty columns dropped.
            "Men Black Casual Shoes Casual Winter Puma Men Black Shoes",
            // usage NA left out.
            "Unisex Grey Backpacks Fall Wildcraft Grey Backpack",
            // The image is corrupt, which only decoding finds out.
            "Men White Shirts Formal Fall Corrupt Jpeg Shirt",
        ]
    );
    let c = &cat.counts;
    assert_eq!(c.read, 9, "blank lines are not rows");
    assert_eq!(c.skipped.get(&SkipReason::NoImage), Some(&1));
    assert_eq!(c.skipped.get(&SkipReason::DuplicateId), Some(&1));
    assert_eq!(c.skipped.get(&SkipReason::MalformedRow), Some(&1));
    assert_eq!(c.skipped.get(&SkipReason::EmptyCaption), Some(&1));
    assert_eq!(c.skipped_total(), 4);
    assert_eq!(c.images_without_row, 1, "9999.jpg; notes.txt is not an image");
    assert_eq!(c.names_with_commas, 1);
    assert_eq!(c.trailing_empty_columns, 1);
    assert_eq!(c.na_values, 4);
    let line = c.summary(cat.items.len());
    assert!(line.starts_with("read 9 products, used 5, skipped 4 (malformed row 1, no image 1, empty caption 1, duplicate id 1)"), "{line}");
    assert!(line.ends_with("; ignored: images without a row 1; repaired: names with commas 1, trailing empty columns 1, NA values 4"), "{line}");
}

#[test]
fn quoted_names_and_crlf_are_read() {
    let d = tmp("quoted");
    std::fs::create_dir_all(d.join("images")).unwrap();
    std::fs::copy(fixture("quirks/images/1001.jpg"), d.join("images/7.jpg")).unwrap();
    std::fs::write(d.join("styles.csv"), "id,gender,masterCategory,subCategory,articleType,baseColour,season,year,usage,productDisplayName\r\n7,Men,Apparel,Topwear,Tshirts,Blue,,,,\"Men's \"\"Classic\"\", Blue Tee\"\r\n").unwrap();
    let cat = read_catalogue(&d).unwrap();
    assert_eq!(cat.captions(), ["Men Blue Tshirts Men's \"Classic\", Blue Tee"]);
    assert_eq!(cat.counts.names_with_commas, 0, "a quoted comma is not a quirk");
}

#[test]
fn a_byte_order_mark_and_an_unclosed_quote_are_survived() {
    let d = tmp("bom");
    std::fs::create_dir_all(d.join("images")).unwrap();
    for id in ["7", "8"] {
        std::fs::copy(fixture("quirks/images/1001.jpg"), d.join(format!("images/{id}.jpg"))).unwrap();
    }
    // A spreadsheet's export: byte order mark, CRLF; the last row opens a quote it never closes.
    let header = "\u{feff}id,gender,masterCategory,subCategory,articleType,baseColour,season,year,usage,productDisplayName\r\n";
    std::fs::write(
        d.join("styles.csv"),
        format!("{header}7,Men,Apparel,Topwear,Tshirts,Blue,,,,Blue Tee\r\n8,Men,Apparel,Topwear,Tshirts,Red,,,,\"Red Tee\r\n"),
    )
    .unwrap();
    let cat = read_catalogue(&d).unwrap();
    assert_eq!(cat.captions(), ["Men Blue Tshirts Blue Tee"]);
    assert_eq!(cat.counts.read, 2);
    assert_eq!(cat.counts.skipped.get(&SkipReason::MalformedRow), Some(&1));
}

#[test]
fn captions_csv_layout() {
    let cat = read_catalogue(&fixture("captions-csv")).unwrap();
    assert_eq!(cat.layout, Layout::CaptionsCsv);
    // Whitespace runs collapse; `b.jpg` is found under images/.
    assert_eq!(cat.captions(), ["Red shirt, short sleeves", "Blue dress"]);
    assert!(cat.items[1].image.ends_with("images/b.jpg"));
    assert_eq!(cat.counts.read, 4);
    assert_eq!(cat.counts.skipped.get(&SkipReason::NoImage), Some(&1));
    assert_eq!(cat.counts.skipped.get(&SkipReason::EmptyCaption), Some(&1));
}

#[test]
fn captions_jsonl_layout() {
    let cat = read_catalogue(&fixture("captions-jsonl")).unwrap();
    assert_eq!(cat.layout, Layout::CaptionsJsonl);
    assert_eq!(cat.captions(), ["Green cap", "Another green thing"]);
    assert_eq!(cat.counts.read, 4);
    assert_eq!(cat.counts.skipped.get(&SkipReason::MalformedRow), Some(&1));
    assert_eq!(cat.counts.skipped.get(&SkipReason::NoImage), Some(&1));
}

fn error_of(dir: &std::path::Path) -> String {
    format!("{:#}", read_catalogue(dir).unwrap_err())
}

#[test]
fn unusable_folders_are_clear_errors() {
    let missing = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("no-such-folder");
    let e = error_of(&missing);
    assert!(e.contains("does not exist") && e.contains("no-such-folder"), "{e}");

    let d = tmp("no-styles");
    std::fs::create_dir_all(d.join("images")).unwrap();
    let e = error_of(&d);
    assert!(e.contains("missing styles.csv"), "{e}");

    let d = tmp("nothing");
    let e = error_of(&d);
    assert!(e.contains("no styles.csv, captions.csv or captions.jsonl"), "{e}");

    // Header only: an empty data set.
    let d = tmp("empty");
    std::fs::create_dir_all(d.join("images")).unwrap();
    std::fs::write(d.join("styles.csv"), "id,gender,masterCategory,subCategory,articleType,baseColour,season,year,usage,productDisplayName\n").unwrap();
    let e = error_of(&d);
    assert!(e.contains("empty data set"), "{e}");

    // Rows but no images folder.
    let d = tmp("no-images");
    std::fs::write(d.join("styles.csv"), "id,productDisplayName\n1,Shirt\n").unwrap();
    let e = error_of(&d);
    assert!(e.contains("images"), "{e}");

    let d = tmp("bad-header");
    std::fs::create_dir_all(d.join("images")).unwrap();
    std::fs::write(d.join("styles.csv"), "sku,name\n1,Shirt\n").unwrap();
    let e = error_of(&d);
    assert!(e.contains("no `id` column"), "{e}");
}

#[test]
fn shared_products_are_all_used() {
    let Some(dir) = common::shared_products() else { return };
    // From the files: styles.csv has 3,835 lines (a header and 3,834 rows), images/ 3,834
    // files; `grep -c ',NA,' styles.csv` is 3; its first row is product 10003.
    let cat = read_catalogue(&dir).unwrap();
    assert_eq!(cat.counts.read, 3834);
    assert_eq!(cat.items.len(), 3834);
    assert_eq!(cat.counts.skipped_total(), 0);
    assert_eq!(cat.counts.images_without_row, 0);
    assert_eq!(cat.counts.na_values, 3, "three rows have usage NA");
    assert_eq!(cat.captions()[0], "Women White Tshirts Sports Fall Nike Women As Nike Eleme White T-Shirt");
}

/// The negative control of the skip policy (tests/common): a missing folder is a skip on
/// a developer's machine and a failure under CI=true.
#[test]
fn a_missing_shared_folder_skips_locally_and_fails_under_ci() {
    let missing = fixture("no-such-catalogue");
    assert!(common::present_or_skip(&missing, false).is_none());
    assert!(common::present_or_skip(&fixture("quirks"), true).is_some());
    let under_ci = std::panic::catch_unwind(|| common::present_or_skip(&missing, true));
    assert!(under_ci.is_err(), "CI=true must turn a missing ../shared into a failure");
}
