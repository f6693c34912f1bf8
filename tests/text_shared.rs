//! TF-IDF on the shared real products, against numbers from scikit-learn 1.9
//! (`TfidfVectorizer(vocabulary=<our vocabulary>).fit(captions)`; with a fixed vocabulary
//! scikit-learn computes the same idf, so this reproduces our vectors in Python).

mod common;

use gan_engine::data::{read_captions, DataSource};
use gan_engine::text::{tokenize, Tfidf};
use std::collections::HashMap;

fn shared_captions() -> Option<Vec<String>> {
    let dir = common::shared_products()?;
    Some(read_captions(&DataSource::Folder(dir)).unwrap().0)
}

#[test]
fn shared_products_match_scikit_learn() {
    let Some(caps) = shared_captions() else { return };
    assert_eq!(caps.len(), 3834, "styles.csv's 3,834 rows");
    let t = Tfidf::fit(&caps, 256);
    assert_eq!(t.dim(), 256);
    let idf = |w: &str| t.idf[t.index_of(w).unwrap()] as f64;
    for (w, want) in [("men", 1.4741320874625266), ("women", 2.144499239690652), ("shirts", 2.85499505858521), ("black", 2.438480114290461)] {
        assert!((idf(w) - want).abs() < 1e-6, "idf({w}) = {} want {want}", idf(w));
    }
    let v = t.encode("Men Navy Blue Casual Shirt");
    let want = [
        ("blue", 0.4499823925015858),
        ("casual", 0.2068404018662431),
        ("men", 0.24676949786906918),
        ("navy", 0.6544648768902344),
        ("shirt", 0.515279957336648),
    ];
    for (w, x) in want {
        assert!((v[t.index_of(w).unwrap()] as f64 - x).abs() < 1e-6, "{w}");
    }
    assert_eq!(v.iter().filter(|&&x| x != 0.0).count(), 5);
}

#[test]
fn shared_vocabulary_keeps_the_most_frequent_terms() {
    let Some(caps) = shared_captions() else { return };
    let mut total: HashMap<String, usize> = HashMap::new();
    for c in &caps {
        for tok in tokenize(c) {
            *total.entry(tok).or_default() += 1;
        }
    }
    let t = Tfidf::fit(&caps, 256);
    let kept_min = t.vocab.iter().map(|w| total[w]).min().unwrap();
    let dropped_max = total.iter().filter(|(w, _)| t.index_of(w).is_none()).map(|(_, &n)| n).max().unwrap();
    assert!(kept_min >= dropped_max, "kept {kept_min} < dropped {dropped_max}");
    // At the cut, ties go to the alphabetically first terms.
    let first_dropped_at_tie = total.iter().filter(|(w, &n)| n == kept_min && t.index_of(w).is_none()).map(|(w, _)| w.clone()).min();
    let last_kept_at_tie = t.vocab.iter().filter(|w| total[*w] == kept_min).max().unwrap();
    if let Some(d) = first_dropped_at_tie {
        assert!(*last_kept_at_tie < d, "{last_kept_at_tie} kept but {d} dropped");
    }
    assert!(t.vocab.windows(2).all(|w| w[0] < w[1]), "features in alphabetical order");
}
