//! Elementary functions in straight-line f32 code, so the loops that call them vectorise
//! (libm's are a call per value: `tanhf` ran the generator's output layer at 0.7 GB/s).

/// Round-to-nearest by adding and subtracting 1.5 * 2^23 (no SSE4.1 `round` needed in the
/// baseline build); exact for |v| < 2^22.
const ROUNDER: f32 = 12_582_912.0;
/// ln 2 in two parts: `LN2_HI` has the low 9 bits of its mantissa clear, so `k * LN2_HI`
/// is exact for the k the exponential meets here (at most 58, below 2^9).
const LN2_HI: f32 = 0.693_145_75;
const LN2_LO: f32 = 1.428_606_8e-6;
/// tanh's odd Taylor coefficients from x^3 to x^15; the first left out (x^17, about 5.9e-4)
/// weighs under 1e-8 of the value where the series is used.
const TANH_SERIES: [f32; 7] = [-1.0 / 3.0, 2.0 / 15.0, -17.0 / 315.0, 62.0 / 2835.0, -1382.0 / 155_925.0, 21844.0 / 6_081_075.0, -929_569.0 / 638_512_875.0];
/// Where the series hands over to the exponential form.
const TANH_SERIES_BELOW: f32 = 0.5;
/// Beyond this |x|, tanh rounds to 1 in f32 (from about 9.01); the exponential stays finite.
const TANH_CLAMP: f32 = 20.0;

/// `tanh(x)` in f32, within 2 ulps (the test below checks every 97th f32 up to 9.1; the
/// worst it finds is 1.99 ulps, at 0.534).
///
/// Below |x| = 0.5 the odd Taylor series; above, `1 - 2 / (e^(2|x|) + 1)` with the sign
/// put back, which has no cancellation there (the result is at least 0.46). The
/// exponential is `2^k e^r` with `|r| <= ln 2 / 2`, `e^r` a degree-7 Taylor polynomial
/// (truncation under 6e-9), `2^k` built in the exponent bits. A NaN stays a NaN.
#[inline(always)]
pub fn tanh_f32(x: f32) -> f32 {
    let a = x.abs();
    let z = a * a;
    let mut p = TANH_SERIES[6];
    for c in TANH_SERIES[..6].iter().rev() {
        p = p * z + c;
    }
    let series = a + a * (z * p);

    // A comparison that is false for NaN, so a NaN stays one through t.
    let t = if 2.0 * a > TANH_CLAMP * 2.0 { TANH_CLAMP * 2.0 } else { 2.0 * a };
    let shifted = t * std::f32::consts::LOG2_E + ROUNDER;
    let k = shifted - ROUNDER;
    let r = (t - k * LN2_HI) - k * LN2_LO;
    let mut er = 1.0 / 5040.0;
    for c in [1.0 / 720.0, 1.0 / 120.0, 1.0 / 24.0, 1.0 / 6.0, 0.5, 1.0, 1.0] {
        er = er * r + c;
    }
    // k sits in the low mantissa bits of `shifted`: 2^k is k + 127 in the exponent field.
    let k_bits = shifted.to_bits().wrapping_sub(ROUNDER.to_bits());
    let two_k = f32::from_bits(k_bits.wrapping_add(127) << 23);
    let exp = er * two_k;
    let large = 1.0 - 2.0 / (exp + 1.0);

    let y = if a < TANH_SERIES_BELOW { series } else { large };
    y.copysign(x)
}

/// The logistic function in f64 without overflow: `1 / (1 + e^-x)` for `x >= 0`, and
/// `e^x / (1 + e^x)` below, so the exponential never grows. The loss twins (BCE and the
/// feature network's cross-entropy) share it.
pub(super) fn sigmoid(x: f64) -> f64 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

#[cfg(test)]
mod tests {
    use super::tanh_f32;

    /// Distance in units in the last place between f32 `y` and the exact value `e`.
    fn ulps(y: f32, e: f64) -> f64 {
        let r = e as f32;
        let ulp = (f32::from_bits(r.abs().to_bits() + 1) - r.abs()) as f64;
        (y as f64 - e).abs() / ulp
    }

    #[test]
    fn tanh_f32_is_within_two_ulps_everywhere() {
        // Every 97th f32 from 0 to the first that rounds to 1, both signs, and the values
        // around the hand-over from the series.
        let top = 9.1f32.to_bits();
        let mut worst = (0.0f64, 0.0f32);
        let around = (0..2000).map(|i| f32::from_bits(0.5f32.to_bits() - 1000 + i));
        for x in (0..top).step_by(97).map(f32::from_bits).chain(around) {
            for x in [x, -x] {
                let e = (x as f64).tanh();
                let u = ulps(tanh_f32(x), e);
                if u > worst.0 {
                    worst = (u, x);
                }
            }
        }
        assert!(worst.0 <= 2.0, "tanh_f32 is {} ulps off at {:e}", worst.0, worst.1);
    }

    #[test]
    fn tanh_f32_special_values() {
        assert_eq!(tanh_f32(0.0).to_bits(), 0.0f32.to_bits());
        assert_eq!(tanh_f32(-0.0).to_bits(), (-0.0f32).to_bits());
        assert_eq!(tanh_f32(1e-30), 1e-30);
        assert_eq!(tanh_f32(f32::MIN_POSITIVE / 8.0), f32::MIN_POSITIVE / 8.0);
        assert_eq!(tanh_f32(9.5), 1.0);
        assert_eq!(tanh_f32(-1e30), -1.0);
        assert_eq!(tanh_f32(f32::INFINITY), 1.0);
        assert_eq!(tanh_f32(f32::NEG_INFINITY), -1.0);
        assert!(tanh_f32(f32::NAN).is_nan());
    }
}
