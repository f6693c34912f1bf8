//! The evaluation's figures against direct computations and their defining properties:
//! small hand-computed cases, FD of a set against itself, KID's unbiasedness, SWD growing
//! with noise, precision falling as fakes move away.

use gan_engine::data::synth;
use gan_engine::eval::metrics::*;
use gan_engine::rng::Rng;
use nalgebra::{DMatrix, DVector};

fn gaussian(rng: &mut Rng, n: usize, d: usize, shift: f64) -> Vec<f32> {
    (0..n * d).map(|_| (rng.normal() + shift) as f32).collect()
}

fn close(a: f64, b: f64, tol: f64) {
    assert!((a - b).abs() <= tol, "{a} vs {b}");
}

#[test]
fn fd_matches_the_closed_form_and_is_zero_for_a_set_against_itself() {
    // 1-D: N(0, 1) against N(1, 4): 1 + 1 + 4 - 2 * sqrt(1 * 4) = 2.
    let fd1 = frechet_distance(
        &DVector::from_vec(vec![0.0]),
        &DMatrix::from_vec(1, 1, vec![1.0]),
        &DVector::from_vec(vec![1.0]),
        &DMatrix::from_vec(1, 1, vec![4.0]),
    );
    close(fd1, 2.0, 1e-12);
    // Diagonal 2-D: |(1, 2)|^2 + (1 + 4) + (9 + 1) - 2 (3 + 2) = 10.
    let fd2 = frechet_distance(
        &DVector::from_vec(vec![0.0, 0.0]),
        &DMatrix::from_row_slice(2, 2, &[1.0, 0.0, 0.0, 4.0]),
        &DVector::from_vec(vec![1.0, 2.0]),
        &DMatrix::from_row_slice(2, 2, &[9.0, 0.0, 0.0, 1.0]),
    );
    close(fd2, 10.0, 1e-12);
    // A covariance with off-diagonal terms against I: tr sqrt(S) = sqrt(3) + 1 (eigenvalues 3, 1).
    let s = DMatrix::from_row_slice(2, 2, &[2.0, 1.0, 1.0, 2.0]);
    let fd3 = frechet_distance(&DVector::zeros(2), &s, &DVector::zeros(2), &DMatrix::identity(2, 2));
    close(fd3, 4.0 + 2.0 - 2.0 * (3f64.sqrt() + 1.0), 1e-12);
    // Of data: the mean and unbiased covariance, and a set against itself.
    let x = [1.0f32, 2.0, 3.0, 6.0, 5.0, 4.0]; // rows (1, 2), (3, 6), (5, 4)
    let (m, c) = mean_cov(&x, 2);
    close(m[0], 3.0, 1e-12);
    close(m[1], 4.0, 1e-12);
    close(c[(0, 0)], 4.0, 1e-12); // ((-2)^2 + 0 + 2^2) / 2
    close(c[(1, 1)], 4.0, 1e-12); // ((-2)^2 + 2^2 + 0) / 2
    close(c[(0, 1)], 2.0, 1e-12); // ((-2)(-2) + 0 + 2 * 0) / 2
    let mut rng = Rng::new(1);
    let a = gaussian(&mut rng, 400, 16, 0.0);
    assert!(fd(&a, &a, 16) < 1e-6, "FD of a set against itself: {}", fd(&a, &a, 16));
    let b = gaussian(&mut rng, 400, 16, 0.0);
    let far = gaussian(&mut rng, 400, 16, 1.0);
    assert!(fd(&a, &b, 16) < fd(&a, &far, 16) / 5.0, "{} vs {}", fd(&a, &b, 16), fd(&a, &far, 16));
}

#[test]
fn kid_is_unbiased_on_two_samples_of_one_distribution() {
    // By hand, d = 1, k(a, b) = (a b + 1)^3, x = y = {0, 1}: within-set off-diagonal sums
    // 2 k(0, 1) = 2 over 2 pairs -> 1 each; across: k(0,0) + 2 k(0,1) + k(1,1) = 11 over 4.
    close(mmd2_unbiased(&[0.0, 1.0], &[0.0, 1.0], 1), 1.0 + 1.0 - 2.0 * 11.0 / 4.0, 1e-12);
    // Over many pairs of samples of one distribution the estimates average to 0 (a biased
    // estimator would sit above it by the within-set diagonal terms); a shift is far above.
    let (d, m, trials) = (4, 40, 200);
    let mut rng = Rng::new(3);
    let est: Vec<f64> = (0..trials)
        .map(|t| {
            let (a, b) = (gaussian(&mut rng, m, d, 0.0), gaussian(&mut rng, m, d, 0.0));
            kid(&a, &b, d, t)
        })
        .collect();
    let mean = est.iter().sum::<f64>() / trials as f64;
    let sd = (est.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (trials - 1) as f64).sqrt();
    assert!(mean.abs() < 3.0 * sd / (trials as f64).sqrt(), "mean {mean}, sd {sd}");
    assert!(est.iter().any(|v| *v < 0.0), "an unbiased estimate of 0 is sometimes negative");
    let shifted = kid(&gaussian(&mut rng, m, d, 0.0), &gaussian(&mut rng, m, d, 1.0), d, 0);
    assert!(shifted > mean + 6.0 * sd, "shifted {shifted}, same {mean} +- {sd}");
}

/// `n` synthetic products from `first` on, at 32 px, planar u8.
fn products(first: usize, n: usize) -> Vec<u8> {
    let all = synth::products(first + n, 5);
    synth::draw_planar(&all[first..], 32)
}

fn noisy(images: &[u8], sigma: f64, seed: u64) -> Vec<u8> {
    let mut rng = Rng::new(seed);
    images.iter().map(|&v| (v as f64 + sigma * rng.normal()).round().clamp(0.0, 255.0) as u8).collect()
}

#[test]
fn swd_grows_with_added_noise() {
    assert_eq!(swd_levels(64), vec![64, 32, 16]);
    assert_eq!(swd_levels(32), vec![32, 16]);
    let (a, b) = (products(0, 64), products(64, 64));
    let base = swd(&a, &b, 32, 1);
    let little = swd(&a, &noisy(&b, 8.0, 2), 32, 1);
    let much = swd(&a, &noisy(&b, 40.0, 3), 32, 1);
    assert_eq!(base.0.len(), 2);
    assert!(base.1 < little.1 && little.1 < much.1, "SWD {:.2} < {:.2} < {:.2}", base.1, little.1, much.1);
    // Deterministic for a seed.
    assert_eq!(swd(&a, &b, 32, 1), base);
}

#[test]
fn the_laplacian_pyramid_adds_back_up_to_the_image() {
    // The last level is the blurred 16 px image; each detail level is what its upsampling
    // misses, so a flat image has no detail at all.
    let flat = vec![100u8; 3 * 32 * 32];
    let pyr = laplacian_pyramid(&flat, 32, 2);
    assert!(pyr[0].iter().all(|v| v.abs() < 1e-3), "a flat image has no detail");
    assert!(pyr[1].iter().all(|v| (v - 100.0).abs() < 1e-3));
}

#[test]
fn precision_falls_when_fakes_are_shifted() {
    // By hand, 1-D, k = 1: reals {0, 1, 3} have radii {1, 1, 2} (squared: 1, 1, 4); fakes
    // {0.5, 10}: 0.5 is inside, 10 is not -> precision 1/2. Fakes' radii are 9.5 (squared
    // 90.25): every real is inside the ball of 0.5 -> recall 1.
    let (p, r) = precision_recall(&[0.0, 1.0, 3.0], &[0.5, 10.0], 1, 1);
    close(p, 0.5, 1e-12);
    close(r, 1.0, 1e-12);
    assert_eq!(knn_radii(&[0.0, 1.0, 3.0], 1, 1), vec![1.0, 1.0, 4.0]);
    let mut rng = Rng::new(9);
    let real = gaussian(&mut rng, 400, 8, 0.0);
    let prec: Vec<f64> = [0.0, 0.5, 1.0, 2.0].iter().map(|&s| precision_recall(&real, &gaussian(&mut rng, 400, 8, s), 8, PR_K).0).collect();
    assert!(prec[0] > 0.8, "{prec:?}");
    assert!(prec.windows(2).all(|w| w[1] < w[0]), "precision falls as the fakes move: {prec:?}");
    assert!(prec[3] < 0.3, "{prec:?}");
}

#[test]
fn diversity_is_the_mean_distance_within_groups() {
    // Group 0: (0,0), (3,4), (0,0): distances 5, 0, 5 -> 10/3. Group 1: (1,1), (1,2): 1. A
    // group of one is left out.
    let f = [0.0f32, 0.0, 3.0, 4.0, 0.0, 0.0, 1.0, 1.0, 1.0, 2.0, 7.0, 7.0];
    let d = diversity(&f, 2, &[vec![0, 1, 2], vec![3, 4], vec![5]]);
    close(d, (10.0 / 3.0 + 1.0) / 2.0, 1e-9);
    assert!(diversity(&f, 2, &[vec![5]]).is_nan());
}

#[test]
fn background_reads_the_border_ring_only() {
    let size = 32;
    let ring = background_ring(size);
    assert_eq!(ring, 2);
    // White everywhere: 0. A black interior does not count.
    let mut img = vec![255u8; 3 * size * size];
    for plane in img.chunks_exact_mut(size * size) {
        for y in ring..size - ring {
            for x in ring..size - ring {
                plane[y * size + x] = 0;
            }
        }
    }
    assert_eq!(background(&img, size), 0.0);
    // One channel of the ring at 155 (100 below white), the others white: 100 / 3.
    for v in img[..size * size].iter_mut().filter(|v| **v == 255) {
        *v = 155;
    }
    close(background(&img, size), 100.0 / 3.0, 1e-12);
    // Two images average; a grey image is 128 from white everywhere.
    let grey = vec![127u8; 3 * size * size];
    let both: Vec<u8> = img.iter().chain(&grey).copied().collect();
    close(background(&both, size), (100.0 / 3.0 + 128.0) / 2.0, 1e-12);
    assert!(background(&[], size).is_nan());
}
