//! A seedable, serialisable RNG: xoshiro256** from `rand_xoshiro`, seeded through splitmix64,
//! so a checkpoint can store the exact generator state and a resumed run continues the same
//! stream of noise and shuffles. `scripts/torch_sample.py` replays the same stream in Python.

use crate::hash::{Fnv64, FNV64_OFFSET_BASIS};
use rand_xoshiro::rand_core::{Rng as _, SeedableRng};
use rand_xoshiro::Xoshiro256StarStar;
use serde::{Deserialize, Serialize};

/// Serialised as the generator's own state, `{"s":[u64; 4]}`: the form checkpoints have
/// always held (a test pins it, should `rand_xoshiro` ever change its serde form).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Rng(Xoshiro256StarStar);

impl Rng {
    /// The state is four splitmix64 outputs of `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(Xoshiro256StarStar::seed_from_u64(seed))
    }

    /// An independent stream derived from this seed and a label (e.g. per purpose).
    pub fn derive(seed: u64, label: &str) -> Rng {
        Rng::new(Fnv64::with_state(seed ^ FNV64_OFFSET_BASIS).bytes(label.as_bytes()).finish())
    }

    /// Whether this is xoshiro's all-zero state, which yields nothing but zeros. No seed leads
    /// there; a damaged checkpoint can.
    pub fn is_stuck(&self) -> bool {
        serde_json::to_value(self).ok() == Some(serde_json::json!({ "s": [0, 0, 0, 0] }))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }

    /// Uniform in [0, 1) with 53 random bits.
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform integer in [0, n).
    pub fn below(&mut self, n: usize) -> usize {
        ((self.next_u64() as u128 * n as u128) >> 64) as usize
    }

    /// Standard normal (Box-Muller; one value per call keeps the state simple).
    pub fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.uniform(); // (0, 1]
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }

    pub fn fill_normal(&mut self, out: &mut [f32], mean: f64, std: f64) {
        out.iter_mut().for_each(|v| *v = (mean + std * self.normal()) as f32);
    }

    pub fn fill_uniform(&mut self, out: &mut [f32], lo: f64, hi: f64) {
        out.iter_mut().for_each(|v| *v = (lo + (hi - lo) * self.uniform()) as f32);
    }

    /// Fisher-Yates shuffle.
    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = self.below(i + 1);
            v.swap(i, j);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_roughly_normal() {
        let mut a = Rng::new(7);
        let mut b = Rng::new(7);
        let xs: Vec<f64> = (0..20000).map(|_| a.normal()).collect();
        let ys: Vec<f64> = (0..20000).map(|_| b.normal()).collect();
        assert_eq!(xs, ys);
        let mean = xs.iter().sum::<f64>() / xs.len() as f64;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / xs.len() as f64;
        assert!(mean.abs() < 0.03, "mean {mean}");
        assert!((var - 1.0).abs() < 0.05, "var {var}");
        assert_ne!(Rng::new(1).next_u64(), Rng::new(2).next_u64());
    }

    /// Outputs of the hand-written xoshiro256** (seeded through splitmix64, `derive` through
    /// FNV-1a), printed from the build that added this test, before the generator and the hash
    /// were taken from shared code and crates. Checkpoints store this state and `scripts/torch_sample.py` replays this stream,
    /// so they must never change.
    #[test]
    fn the_stream_is_the_one_checkpoints_and_torch_sample_expect() {
        let mut a = Rng::new(0);
        assert_eq!([a.next_u64(), a.next_u64(), a.next_u64()], [0x99ec_5f36_cb75_f2b4, 0xbf6e_1f78_4956_452a, 0x1a5f_849d_4933_e6e0]);
        let mut a = Rng::new(42);
        assert_eq!([a.next_u64(), a.next_u64()], [0x1578_0b2e_0c2e_c716, 0x6104_d986_6d11_3a7e]);
        let mut a = Rng::derive(7, "noise");
        assert_eq!([a.next_u64(), a.next_u64()], [0xe61d_4c21_b13f_d9c4, 0x33e1_b3b8_241e_b748]);
        assert_eq!(Rng::derive(0, "").next_u64(), 0x2138_2ef0_92ed_7068);

        let mut a = Rng::derive(1234, "sample");
        assert_eq!(a.uniform(), 0.7639291339033305);
        assert_eq!(a.below(10), 9);
        // ln and cos come from the platform's libm: allow for its last bits.
        assert!((a.normal() - -1.481938135467471).abs() < 1e-12);
        let mut v: Vec<u32> = (0..10).collect();
        a.shuffle(&mut v);
        assert_eq!(v, [3, 9, 2, 7, 5, 8, 0, 4, 1, 6]);
        let mut f = [0f32; 3];
        a.fill_normal(&mut f, 0.5, 2.0);
        f.iter().zip([0.7831321, -1.4088329, 1.5157338]).for_each(|(x, y)| assert!((x - y).abs() < 1e-6, "{f:?}"));
        a.fill_uniform(&mut f, -1.0, 1.0);
        assert_eq!(f, [-0.1396406, -0.82296354, 0.64463955]);
    }

    /// Checkpoints hold the state as `{"s":[u64; 4]}`; old ones must load and continue the
    /// stream, and new ones keep that shape.
    #[test]
    fn the_checkpoint_form_of_the_state_is_unchanged() {
        let json = r#"{"s":[10451216379200822465,13757245211066428519,17911839290282890590,8196980753821780235]}"#;
        assert_eq!(serde_json::to_string(&Rng::new(1)).unwrap(), json);
        let mut loaded: Rng = serde_json::from_str(json).unwrap();
        assert_eq!(loaded, Rng::new(1));
        assert_eq!(loaded.next_u64(), Rng::new(1).next_u64());
        let mut simple: Rng = serde_json::from_str(r#"{"s":[1,2,3,4]}"#).unwrap();
        assert_eq!([simple.next_u64(), simple.next_u64()], [0x2d00, 0]);
        let mut sample = Rng::derive(1234, "sample");
        sample.next_u64();
        let saved = serde_json::to_string(&sample).unwrap();
        let mut resumed: Rng = serde_json::from_str(&saved).unwrap();
        assert_eq!((0..4).map(|_| resumed.next_u64()).collect::<Vec<_>>(), (0..4).map(|_| sample.next_u64()).collect::<Vec<_>>());
        assert!(serde_json::from_str::<Rng>(r#"{"s":[1,2,3]}"#).is_err(), "a state is four words");
    }
}
