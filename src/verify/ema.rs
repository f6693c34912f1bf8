//! ema_update: the direct definition and the twin rows (CPU twin `backend/cpu/ema.rs`,
//! kernel `kernels/ema.cu`). The op is on no gradient path (the averaged weights are drawn
//! from, never differentiated), so it has no backward pass and no finite-difference check:
//! its checks are the direct loops below and the twin rows.

use super::gradcheck::{rand_vec, DirectCheck};
use super::twin::{down, normal, up, Checker, TOL_ELEM, TOL_EXACT};
use crate::backend::cpu::Cpu64;
use crate::backend::prelude::*;
use crate::backend::EmaParams;
use crate::rng::Rng;
use anyhow::Result;

/// The op by its definition, in f64.
pub mod direct {
    use crate::backend::EmaParams;

    /// `avg = beta avg + (1 - beta) w`: the moving average written the textbook way (the
    /// op computes the same value as `w + beta (avg - w)`).
    pub fn update(p: &EmaParams, avg: &mut [f64], w: &[f64]) {
        let beta = p.beta as f64;
        for i in 0..p.len as usize {
            avg[i] = beta * avg[i] + (1.0 - beta) * w[i];
        }
    }
}

impl<B: Backend> Checker<'_, B> {
    /// `len` values at `beta`; beta 0 (a copy) and 1 (no change) must be exact.
    pub fn ema(&mut self, len: usize, beta: f32) -> Result<()> {
        let p = EmaParams::new(len, beta);
        let avg = normal(&mut self.rng, len, 0.02);
        let w = normal(&mut self.rng, len, 0.02);
        fn run<B: Backend>(be: &B, p: &EmaParams, avg: &[f32], w: &[f32]) -> Result<Vec<f32>> {
            let (mut a, w) = (up(be, avg)?, up(be, w)?);
            be.ema_update(p, &mut a, &w)?;
            down(be, &a, p.len as usize)
        }
        let tol = if beta == 0.0 || beta == 1.0 { TOL_EXACT } else { TOL_ELEM };
        self.case("ema_update_f32", format!("len {len} beta {beta}"), tol, |g| run(g, &p, &avg, &w), |c| run(c, &p, &avg, &w))
    }
}

/// The CPU twin in f64 against the direct definition: odd lengths, beta 0, 1 and near 1.
pub fn direct_checks(rng: &mut Rng) -> Result<Vec<DirectCheck>> {
    let be = Cpu64::new();
    let mut out = Vec::new();
    for (len, beta) in [(1, 0.5), (17, 0.0), (1000, 0.999), (20001, 0.9999), (5, 1.0)] {
        let p = EmaParams::new(len, beta);
        let (avg, w) = (rand_vec(rng, len), rand_vec(rng, len));
        let mut want = avg.clone();
        direct::update(&p, &mut want, &w);
        let mut got = avg.clone();
        be.ema_update(&p, &mut got, &w)?;
        out.push(DirectCheck::new(format!("ema_update len {len} beta {beta}"), &want, &got));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cpu::Cpu;

    #[test]
    fn beta_zero_copies_the_weights_and_beta_one_keeps_the_average() {
        let be = Cpu::new();
        let w = vec![0.1f32, -2.5, 3.0e-7, 7.0, f32::MAX];
        let mut avg = vec![1.0f32, 2.0, 3.0, -4.0, 0.0];
        be.ema_update(&EmaParams::new(5, 0.0), &mut avg, &w).unwrap();
        assert_eq!(avg, w, "beta 0 copies bit for bit");
        let mut kept = vec![1.0f32, 2.0, 3.0, -4.0, 5.0];
        let before = kept.clone();
        be.ema_update(&EmaParams::new(5, 1.0), &mut kept, &[0.5f32, 0.25, -1.0, 8.0, 9.0].to_vec()).unwrap();
        assert_eq!(kept, before, "beta 1 keeps the average");
    }

    #[test]
    fn the_update_moves_the_average_toward_the_weights() {
        let be = Cpu::new();
        let mut avg = vec![1.0f32, -1.0];
        be.ema_update(&EmaParams::new(2, 0.75), &mut avg, &vec![3.0f32, 1.0]).unwrap();
        assert_eq!(avg, vec![1.5, -0.5]);
    }

    #[test]
    fn a_beta_outside_zero_to_one_or_a_short_buffer_is_refused() {
        let be = Cpu::new();
        let mut avg = vec![0.0f32; 3];
        for beta in [-0.1, 1.5, f32::NAN] {
            let e = be.ema_update(&EmaParams::new(3, beta), &mut avg, &vec![0.0f32; 3]).unwrap_err().to_string();
            assert!(e.contains("beta"), "{e}");
        }
        let e = be.ema_update(&EmaParams::new(3, 0.5), &mut avg, &vec![0.0f32; 2]).unwrap_err().to_string();
        assert!(e.contains("ema w"), "{e}");
    }
}
