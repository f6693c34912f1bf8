//! The synthetic catalogue: deterministic, every kind/colour/pattern present, clear
//! silhouettes on white, and the Kaggle layout written by `write_synthetic` reads back to the
//! same captions.

use gan_engine::data::synth::{products, SynthProduct, COLOURS, KINDS, PATTERNS};
use gan_engine::data::{prepare, read_catalogue, write_synthetic, DataSource, PrepareOptions};
use std::collections::HashSet;
use std::path::PathBuf;

#[test]
fn deterministic_from_the_seed() {
    let a = products(200, 11);
    assert_eq!(a, products(200, 11));
    assert_ne!(a, products(200, 12));
    // Product i depends on (seed, i) only: smaller catalogues are prefixes.
    assert_eq!(products(20, 11)[..], a[..20]);
    for p in &a[..10] {
        assert_eq!(p.draw(32), p.draw(32));
    }
}

#[test]
fn catalogue_covers_kinds_colours_and_patterns() {
    assert!(KINDS.len() >= 8 && COLOURS.len() >= 10 && PATTERNS.len() >= 3);
    let ps = products(600, 0);
    let kinds: HashSet<_> = ps.iter().map(|p| format!("{:?}", p.kind)).collect();
    let colours: HashSet<_> = ps.iter().map(|p| p.colour).collect();
    let patterns: HashSet<_> = ps.iter().map(|p| p.pattern.name()).collect();
    assert_eq!((kinds.len(), colours.len(), patterns.len()), (KINDS.len(), COLOURS.len(), PATTERNS.len()));
    let p = &ps[0];
    // "Women Red Striped Dress" shape: gender, colour, pattern, kind.
    let name = p.display_name();
    assert!(name.starts_with(p.gender) && name.contains(p.colour_name()) && name.contains(p.pattern.name()), "{name}");
    assert!(p.caption().ends_with(&name));
}

/// Share of non-white pixels and the most common colour among them (a solid garment's fill).
fn coverage(p: &SynthProduct, size: usize) -> (f64, [u8; 3]) {
    let img = p.draw(size);
    let mut counts = std::collections::HashMap::new();
    for px in img.pixels().filter(|px| px.0 != [255, 255, 255]) {
        *counts.entry(px.0).or_insert(0usize) += 1;
    }
    let n: usize = counts.values().sum();
    let mode = counts.into_iter().max_by_key(|&(c, k)| (k, c)).map(|(c, _)| c).unwrap_or([255; 3]);
    (n as f64 / (size * size) as f64, mode)
}

#[test]
fn garments_fill_the_frame_in_their_colour() {
    let ps = products(400, 5);
    for kind in KINDS {
        for p in ps.iter().filter(|p| p.kind == kind).take(3) {
            let (share, _) = coverage(p, 48);
            assert!(share > 0.2, "{kind:?} covers only {share:.2} of the frame");
            let img = p.draw(48);
            // Corners stay white: a silhouette on white.
            assert_eq!(img.get_pixel(0, 0).0, [255, 255, 255], "{kind:?}");
        }
    }
    // Solid garments are filled with their named colour, up to a small shade variation.
    for p in ps.iter().filter(|p| p.pattern.name() == "Solid").take(40) {
        let (_, fill) = coverage(p, 64);
        let want = COLOURS[p.colour].1;
        let close = (0..3).all(|c| (fill[c] as f64 - want[c] as f64).abs() <= 0.08 * want[c] as f64 + 3.0);
        assert!(close, "{} filled with {fill:?}, named {want:?}", p.display_name());
    }
}

#[test]
fn drawn_at_any_size() {
    let p = &products(1, 0)[0];
    for size in [16, 32, 100, 128] {
        assert_eq!(p.draw(size).dimensions(), (size as u32, size as u32));
    }
}

#[test]
fn written_kaggle_layout_reads_back_the_same_captions() {
    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("data_synth").join("written");
    let _ = std::fs::remove_dir_all(&out);
    write_synthetic(&out, 30, 4).unwrap();
    let cat = read_catalogue(&out).unwrap();
    let want: Vec<String> = products(30, 4).iter().map(|p| p.caption()).collect();
    assert_eq!(cat.captions(), want);
    assert_eq!(cat.counts.skipped_total(), 0);
    // The written images decode at their full size.
    let img = image::open(out.join("images/100000.jpg")).unwrap();
    assert_eq!((img.width(), img.height()), (128, 128));
    // And prepare() of the synthetic source has the same captions and vocabulary.
    let opts = PrepareOptions { size: 32, crop: false, cache_dir: None, max_features: 256, progress: false, tfidf: None };
    let data = prepare(&DataSource::Synthetic { n: 30, seed: 4 }, &opts).unwrap();
    assert_eq!(data.captions, want);
    assert_eq!(data.tfidf, gan_engine::text::Tfidf::fit(&want, 256));
    assert!(data.cache_path.is_none());
    assert!(write_synthetic(&out, 0, 4).is_err());
}
