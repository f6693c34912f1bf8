//! TF-IDF against values computed by hand (and checked with scikit-learn's
//! `TfidfVectorizer`, whose numbers are quoted in the comments).

use gan_engine::text::{tokenize, Tfidf};

fn corpus() -> Vec<String> {
    ["Red dress", "red shirt red", "Blue shirt"].iter().map(|s| s.to_string()).collect()
}

fn assert_close(got: &[f32], want: &[f64]) {
    assert_eq!(got.len(), want.len(), "{got:?} vs {want:?}");
    for (g, w) in got.iter().zip(want) {
        assert!((*g as f64 - w).abs() < 1e-6, "{got:?} vs {want:?}");
    }
}

#[test]
fn vocabulary_and_smooth_idf_by_hand() {
    let t = Tfidf::fit(&corpus(), 256);
    // Alphabetical feature order.
    assert_eq!(t.vocab, ["blue", "dress", "red", "shirt"]);
    assert_eq!(t.dim(), 4);
    // n = 3 documents. df(blue) = df(dress) = 1: ln(4/2) + 1; df(red) = df(shirt) = 2: ln(4/3) + 1.
    assert_close(&t.idf, &[1.6931471805599454, 1.6931471805599454, 1.2876820724517808, 1.2876820724517808]);
}

#[test]
fn vectors_by_hand() {
    let t = Tfidf::fit(&corpus(), 256);
    // "red shirt red": red 2 * idf, shirt 1 * idf with equal idf -> (2, 1) / sqrt(5).
    assert_close(&t.encode("red shirt red"), &[0.0, 0.0, 2.0 / 5f64.sqrt(), 1.0 / 5f64.sqrt()]);
    // "red dress": (1.28768, 1.69315) / 2.12718 = (0.60535, 0.79596).
    assert_close(&t.encode("red dress"), &[0.0, 0.7959605415681652, 0.6053485081062916, 0.0]);
    // Equal idf, one each: 1/sqrt(2).
    assert_close(&t.encode("blue dress"), &[0.5f64.sqrt(), 0.5f64.sqrt(), 0.0, 0.0]);
    // Case, punctuation and unknown words: only "red" counts, normalised to 1.
    assert_close(&t.encode("RED, red-red! unknownword x"), &[0.0, 0.0, 1.0, 0.0]);
    // Nothing known: all zeros, not NaN.
    assert_close(&t.encode("green hat"), &[0.0; 4]);
    assert!(t.has_no_known_word("green hat a"));
    assert!(!t.has_no_known_word("green red"));
    let mut buf = vec![7.0f32; 4];
    t.encode_into("shirt", &mut buf);
    assert_close(&buf, &[0.0, 0.0, 0.0, 1.0]);
}

#[test]
fn max_features_keeps_most_frequent_ties_alphabetical() {
    // Totals over the corpus: red 3, shirt 2, blue 1, dress 1.
    let t2 = Tfidf::fit(&corpus(), 2);
    assert_eq!(t2.vocab, ["red", "shirt"]);
    // idf is unchanged by pruning.
    assert_close(&t2.idf, &[1.2876820724517808, 1.2876820724517808]);
    // The tie between blue and dress at the cut is broken alphabetically; then renumbered.
    let t3 = Tfidf::fit(&corpus(), 3);
    assert_eq!(t3.vocab, ["blue", "red", "shirt"]);
    assert_close(&t3.encode("red dress"), &[0.0, 1.0, 0.0]);
    assert_eq!(Tfidf::fit(&corpus(), 1).vocab, ["red"]);
}

#[test]
fn tokens_are_two_or_more_word_characters() {
    assert_eq!(tokenize("Nike Men's T-Shirt 2-Pack, x_1  I"), ["nike", "men", "shirt", "pack", "x_1"]);
    assert_eq!(tokenize("ÉCRU Straße"), ["écru", "straße"]);
    // A term counted twice in one document counts once in df.
    let t = Tfidf::fit(&["aa aa".to_string(), "bb".to_string()], 10);
    assert_close(&t.idf, &[(3.0f64 / 2.0).ln() + 1.0, (3.0f64 / 2.0).ln() + 1.0]);
}

#[test]
fn empty_corpus_gives_empty_vocabulary() {
    let t = Tfidf::fit(&["a b c".to_string()], 256);
    assert_eq!(t.dim(), 0);
    assert!(t.encode("anything").is_empty());
}

#[test]
fn serde_round_trip_keeps_vectors() {
    let t = Tfidf::fit(&corpus(), 256);
    let json = serde_json::to_string(&t).unwrap();
    let back: Tfidf = serde_json::from_str(&json).unwrap();
    assert_eq!(back, t);
    assert_eq!(back.encode("red dress"), t.encode("red dress"));
}

#[test]
fn loaded_vocabularies_are_checked() {
    let t = Tfidf::fit(&corpus(), 256);
    assert!(t.validate().is_ok());
    let unsorted = Tfidf { vocab: vec!["red".into(), "blue".into()], idf: vec![1.0, 1.0] };
    assert!(unsorted.validate().unwrap_err().to_string().contains("alphabetical"));
    let short = Tfidf { vocab: vec!["blue".into(), "red".into()], idf: vec![1.0] };
    assert!(short.validate().is_err());
    assert!(Tfidf { vocab: vec![], idf: vec![] }.validate().is_err());
    assert!(Tfidf { vocab: vec!["a1".into()], idf: vec![f32::NAN] }.validate().is_err());
}
