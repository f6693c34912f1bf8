//! `--precision f32|bf16`: what the GEMMs of the convolutions and linear layers multiply
//! with. A property of the backend, chosen when it opens; the op contract, the layers, the
//! master weights, Adam and the batchnorm statistics stay f32 either way.
//!
//! bf16 is PyTorch's autocast: each GEMM operand rounded to bfloat16 (8 significant bits,
//! round to nearest even), every product and sum in f32. The CPU does it in
//! `backend/cpu/bf16.rs` (AMX tiles or AVX512_BF16 dot products, chosen at run time, with an
//! f32 fallback that multiplies the rounded operands), the GPU with bf16 tensor-core tiles
//! (GemmPrecision::Bf16, sm_80 and newer).

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// Every GEMM in f32 (the GPU's GEMM mode decides how: fp32 FMAs or tf32x3 tensor cores).
    #[default]
    F32,
    /// GEMM operands in bf16, products accumulated in f32.
    Bf16,
}

impl Precision {
    pub fn label(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
        }
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.label())
    }
}

impl std::str::FromStr for Precision {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Precision> {
        Ok(match s.trim() {
            "f32" | "fp32" => Precision::F32,
            "bf16" => Precision::Bf16,
            other => bail!("--precision {other}: choose f32 or bf16"),
        })
    }
}

/// `x` rounded to the nearest bfloat16 (ties to even), as an f32: what a bf16 GEMM operand
/// holds. The `half` crate's conversion; the twin of every bf16 path.
pub fn round_bf16(x: f32) -> f32 {
    half::bf16::from_f32(x).to_f32()
}

/// The bf16 bits of `x`, rounded to nearest even, NaN kept a (quiet) NaN: `half`'s
/// conversion written without branches, so the packing loops vectorise
/// (`bf16_bits_match_half` in the tests below holds it to `half`).
#[inline(always)]
pub fn bf16_bits(x: f32) -> u16 {
    let u = x.to_bits();
    let rounded = (u.wrapping_add(0x7fff + ((u >> 16) & 1)) >> 16) as u16;
    let nan = (u & 0x7fff_ffff) > 0x7f80_0000;
    if nan {
        ((u >> 16) | 0x40) as u16
    } else {
        rounded
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn precision_parses_and_names_the_flag() {
        assert_eq!("bf16".parse::<Precision>().unwrap(), Precision::Bf16);
        assert_eq!("f32".parse::<Precision>().unwrap(), Precision::F32);
        let e = "fp16".parse::<Precision>().unwrap_err().to_string();
        assert!(e.contains("--precision fp16") && e.contains("f32 or bf16"), "{e}");
        assert_eq!(serde_json::to_string(&Precision::Bf16).unwrap(), "\"bf16\"");
    }

    #[test]
    fn bf16_bits_match_half() {
        let mut specials = vec![0.0f32, -0.0, 1.0, -1.0, f32::INFINITY, f32::NEG_INFINITY, f32::NAN, f32::MAX, f32::MIN_POSITIVE, 1e-40, -1e-45];
        // Ties: 1 + 2^-8 rounds to 1 (even), 1 + 3 * 2^-8 rounds up; and just past each.
        for base in [1.0f32 + 1.0 / 256.0, 1.0 + 3.0 / 256.0, 3.0 + 3.0 / 128.0] {
            specials.extend([base, f32::from_bits(base.to_bits() + 1), f32::from_bits(base.to_bits() - 1), -base]);
        }
        // A sweep over every exponent and many mantissas.
        let mut u = 0u32;
        while u < u32::MAX - 40_503 {
            specials.push(f32::from_bits(u));
            u += 40_503;
        }
        for x in specials {
            let want = half::bf16::from_f32(x).to_bits();
            let got = bf16_bits(x);
            if x.is_nan() {
                assert!(half::bf16::from_bits(got).is_nan(), "{x:e}");
            } else {
                assert_eq!(got, want, "{x:e} ({:#x})", x.to_bits());
            }
        }
        assert_eq!(round_bf16(1.0 + 1.0 / 256.0), 1.0);
        assert_eq!(round_bf16(1.0 + 3.0 / 256.0), 1.0 + 4.0 / 256.0);
    }
}
