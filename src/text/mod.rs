//! TF-IDF text encoder with scikit-learn `TfidfVectorizer` semantics (default options plus
//! `max_features`), so vectors can be reproduced in Python with
//! `TfidfVectorizer(max_features=K)`:
//!
//! - lowercase, tokens are the matches of `(?u)\b\w\w+\b`, i.e. maximal runs of two or more
//!   word characters (letters, digits, underscore);
//! - `max_features` keeps the terms with the highest total count over the corpus, ties broken
//!   alphabetically; features are numbered in alphabetical order;
//! - smooth idf `ln((1 + n) / (1 + df)) + 1`, raw counts times idf, L2 normalisation.
//!
//! Unknown words are ignored; a text without a known word encodes to all zeros.
//!
//! One difference: scikit-learn orders terms tied in count at the `max_features` cut with
//! numpy's unstable arg-sort, so which of them it keeps depends on the numpy build. To
//! reproduce our vectors exactly in Python, pass our vocabulary:
//! `TfidfVectorizer(vocabulary=tfidf.vocab).fit(captions)` computes the same idf (checked on
//! the shared products to 5e-7) and the same vectors.

use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};

/// Default vocabulary size: the width of the generator's and discriminator's text input.
pub const DEFAULT_MAX_FEATURES: usize = 256;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Tfidf {
    /// Terms in alphabetical order; the position of a term is its feature index.
    pub vocab: Vec<String>,
    /// Smooth idf of each term, same order as `vocab`.
    pub idf: Vec<f32>,
}

/// Python's `\w` in a `str` pattern: alphanumeric or underscore. Rust's `is_alphanumeric`
/// agrees with Python's `isalnum` on everything a product catalogue contains.
fn is_word_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// Lowercased tokens of `text`, as `TfidfVectorizer`'s default analyzer produces them.
pub fn tokenize(text: &str) -> Vec<String> {
    let lower = text.to_lowercase();
    let mut tokens = Vec::new();
    let mut start: Option<usize> = None;
    let mut chars_in_run = 0;
    for (i, c) in lower.char_indices() {
        if is_word_char(c) {
            if start.is_none() {
                start = Some(i);
                chars_in_run = 0;
            }
            chars_in_run += 1;
        } else if let Some(s) = start.take() {
            if chars_in_run >= 2 {
                tokens.push(lower[s..i].to_string());
            }
        }
    }
    if let Some(s) = start {
        if chars_in_run >= 2 {
            tokens.push(lower[s..].to_string());
        }
    }
    tokens
}

impl Tfidf {
    /// Fits the vocabulary and idf on `texts`. With no token in any text the vocabulary is
    /// empty (`dim() == 0`); callers that need a non-empty one check `dim()`.
    pub fn fit(texts: &[String], max_features: usize) -> Tfidf {
        // term -> (total count over the corpus, number of documents containing it)
        let mut stats: HashMap<String, (u64, u64)> = HashMap::new();
        for text in texts {
            let mut seen_here: HashSet<String> = HashSet::new();
            for tok in tokenize(text) {
                let entry = stats.entry(tok.clone()).or_insert((0, 0));
                entry.0 += 1;
                if seen_here.insert(tok) {
                    entry.1 += 1;
                }
            }
        }
        let mut terms: Vec<(String, u64, u64)> = stats.into_iter().map(|(t, (tf, df))| (t, tf, df)).collect();
        // Highest total count first, ties alphabetical (scikit-learn sorts the vocabulary first
        // and then takes a stable arg-sort by count); then renumber alphabetically.
        terms.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        terms.truncate(max_features);
        terms.sort_by(|a, b| a.0.cmp(&b.0));
        let n = texts.len() as f64;
        let idf = terms.iter().map(|(_, _, df)| (((1.0 + n) / (1.0 + *df as f64)).ln() + 1.0) as f32).collect();
        Tfidf { vocab: terms.into_iter().map(|(t, _, _)| t).collect(), idf }
    }

    /// Checks a vocabulary loaded from a file: non-empty, strictly alphabetical (lookups
    /// rely on it), one finite idf of at least 1 per term.
    pub fn validate(&self) -> anyhow::Result<()> {
        self.check().map_err(|(field, why)| anyhow::anyhow!("the saved TF-IDF's {field} {why}"))
    }

    /// `validate`, with the field at fault (`vocab` or `idf`) apart from what is wrong with it.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        if self.dim() == 0 {
            return Err(("vocab", "is empty".into()));
        }
        if self.idf.len() != self.vocab.len() {
            return Err(("idf", format!("has {} values for the {} terms of the vocabulary", self.idf.len(), self.vocab.len())));
        }
        if let Some(w) = self.vocab.windows(2).find(|w| w[0] >= w[1]) {
            return Err(("vocab", format!("is not in strictly alphabetical order (\"{}\" before \"{}\")", w[0], w[1])));
        }
        if let Some(v) = self.idf.iter().find(|v| !(v.is_finite() && **v >= 1.0)) {
            return Err(("idf", format!("holds {v}: every smooth idf is finite and at least 1")));
        }
        Ok(())
    }

    pub fn dim(&self) -> usize {
        self.vocab.len()
    }

    /// Feature index of a term, if it is in the vocabulary (binary search: `vocab` is sorted).
    pub fn index_of(&self, term: &str) -> Option<usize> {
        self.vocab.binary_search_by(|t| t.as_str().cmp(term)).ok()
    }

    /// The TF-IDF vector of `text`: `dim()` values, L2-normalised, or all zeros when no word
    /// of `text` is in the vocabulary.
    pub fn encode(&self, text: &str) -> Vec<f32> {
        let mut out = vec![0.0; self.dim()];
        self.encode_into(text, &mut out);
        out
    }

    /// `encode` into a caller's buffer of length `dim()` (panics on another length: that is a
    /// bug in the caller, not bad input).
    pub fn encode_into(&self, text: &str, out: &mut [f32]) {
        assert_eq!(out.len(), self.dim(), "encode_into: buffer has {} values, vocabulary {}", out.len(), self.dim());
        // Accumulate in f64 as scikit-learn does, round once at the end.
        let mut acc: Vec<(usize, f64)> = Vec::new();
        for tok in tokenize(text) {
            if let Some(i) = self.index_of(&tok) {
                match acc.iter_mut().find(|(j, _)| *j == i) {
                    Some((_, c)) => *c += 1.0,
                    None => acc.push((i, 1.0)),
                }
            }
        }
        out.iter_mut().for_each(|v| *v = 0.0);
        let mut norm2 = 0.0;
        for (i, c) in acc.iter_mut() {
            *c *= self.idf[*i] as f64;
            norm2 += *c * *c;
        }
        if norm2 > 0.0 {
            let inv = 1.0 / norm2.sqrt();
            for (i, c) in acc {
                out[i] = (c * inv) as f32;
            }
        }
    }

    /// True if no word of `text` is in the vocabulary (its vector is all zeros).
    pub fn has_no_known_word(&self, text: &str) -> bool {
        tokenize(text).iter().all(|t| self.index_of(t).is_none())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_follow_the_sklearn_pattern() {
        assert_eq!(tokenize("Nike Men's T-Shirt, 2 x_y  AB"), ["nike", "men", "shirt", "x_y", "ab"]);
        assert_eq!(tokenize("Élan Ü straße 42"), ["élan", "straße", "42"]);
        assert!(tokenize("a b , .").is_empty());
    }
}
