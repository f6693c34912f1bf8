//! The one hash function: 64-bit FNV-1a. Its values are stored (PTX cache file names, image
//! cache keys and file names) and seed random streams (`Rng::derive`), so it must stay the
//! same across Rust versions and platforms, which `DefaultHasher` does not promise.

/// The FNV-1a 64-bit offset basis: the state before any byte.
pub const FNV64_OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
const FNV64_PRIME: u64 = 0x100_0000_01b3;

/// An FNV-1a 64 state that bytes, integers and strings are folded into.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fnv64(u64);

impl Default for Fnv64 {
    fn default() -> Self {
        Fnv64(FNV64_OFFSET_BASIS)
    }
}

impl Fnv64 {
    /// Starts from a given state instead of the offset basis (`Rng::derive` mixes the seed in
    /// this way).
    pub fn with_state(state: u64) -> Self {
        Fnv64(state)
    }
    pub fn bytes(&mut self, b: &[u8]) -> &mut Self {
        for &x in b {
            self.0 = (self.0 ^ x as u64).wrapping_mul(FNV64_PRIME);
        }
        self
    }
    /// The eight little-endian bytes of `v`.
    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.bytes(&v.to_le_bytes())
    }
    /// Length-prefixed, so ("ab", "c") and ("a", "bc") differ.
    pub fn str(&mut self, s: &str) -> &mut Self {
        self.u64(s.len() as u64).bytes(s.as_bytes())
    }
    pub fn finish(&self) -> u64 {
        self.0
    }
}

/// FNV-1a 64 of `bytes`.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    Fnv64::default().bytes(bytes).finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a_64_test_vectors() {
        // The published FNV-1a 64 vectors (Fowler, Noll, Vo: "FNV test suite").
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a(b"foobar"), 0x8594_4171_f739_67e8);
        // Feeding in pieces is the same as feeding at once.
        assert_eq!(Fnv64::default().bytes(b"foo").bytes(b"bar").finish(), fnv1a(b"foobar"));
        assert_eq!(Fnv64::with_state(FNV64_OFFSET_BASIS).bytes(b"a").finish(), fnv1a(b"a"));
    }

    #[test]
    fn stored_values_do_not_change() {
        // Computed with the catalogue's own FNV-1a before it moved here: cache keys are made
        // this way (length-prefixed strings, little-endian integers).
        assert_eq!(Fnv64::default().str("kaggle").u64(7).finish(), 0x511f_5f4b_963c_ff89);
        assert_ne!(Fnv64::default().str("ab").str("c").finish(), Fnv64::default().str("a").str("bc").finish());
    }
}
