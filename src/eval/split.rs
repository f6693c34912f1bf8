//! The held-out evaluation split: a product is held out when a hash of its id falls below
//! the fraction, so the split depends on the id alone (not on the seed, the order of the
//! rows or the other products), the same products are held out by every run on a data set,
//! and a larger fraction holds out a superset of a smaller one's products.

use crate::hash::Fnv64;
use anyhow::{ensure, Result};

/// `--eval-split` of a new run.
pub const DEFAULT_EVAL_SPLIT: f64 = 0.1;

/// Refuses a fraction that is not in [0, 1).
pub fn check_fraction(fraction: f64) -> Result<()> {
    ensure!(fraction.is_finite() && (0.0..1.0).contains(&fraction), "--eval-split {fraction} must be at least 0 and below 1 (0 trains on every product)");
    Ok(())
}

/// The id's place in [0, 1): FNV-1a of the id, then a 64-bit finaliser so ids that differ in
/// their last character land far apart.
pub fn unit_hash(id: &str) -> f64 {
    let mut z = Fnv64::default().str("gan-engine eval split").str(id).finish();
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 53) as f64
}

/// Whether product `id` is held out at `fraction` (never at 0).
pub fn is_held_out(id: &str, fraction: f64) -> bool {
    fraction > 0.0 && unit_hash(id) < fraction
}

/// Rows of a data set, by split, in row order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Split {
    pub train: Vec<usize>,
    pub held_out: Vec<usize>,
}

/// The split of rows with these product ids.
pub fn split(ids: &[String], fraction: f64) -> Split {
    let mut s = Split::default();
    for (i, id) in ids.iter().enumerate() {
        if is_held_out(id, fraction) {
            s.held_out.push(i);
        } else {
            s.train.push(i);
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_split_is_a_nested_function_of_the_id() {
        let ids: Vec<String> = (0..20000).map(|i| format!("{}", 10000 + i)).collect();
        let a = split(&ids, 0.1);
        let b = split(&ids, 0.2);
        let frac = a.held_out.len() as f64 / ids.len() as f64;
        assert!((frac - 0.1).abs() < 0.01, "{frac}");
        assert!(a.held_out.iter().all(|i| b.held_out.contains(i)), "0.1's held-out products are held out at 0.2 too");
        assert_eq!(split(&ids, 0.0).held_out.len(), 0);
        // The same id is held out wherever it sits.
        let rev: Vec<String> = ids.iter().rev().cloned().collect();
        assert_eq!(split(&rev, 0.1).held_out.len(), a.held_out.len());
        assert!(check_fraction(1.0).is_err() && check_fraction(-0.1).is_err() && check_fraction(f64::NAN).is_err());
    }
}
