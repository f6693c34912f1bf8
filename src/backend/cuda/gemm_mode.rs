//! How the GEMM tiles of the convolutions and linear layers multiply and are fed: two
//! choices, made once when the backend opens (`GAN_ENGINE_GEMM`, read in one place:
//! [`GemmMode::from_env`]) and compiled into the kernels.

use super::tiles::{GEMM_BF16, GEMM_FEED_ASYNC, GEMM_FEED_REGISTERS, GEMM_FMA, GEMM_TF32, GEMM_TF32X3};
use crate::backend::Precision;
use anyhow::{anyhow, bail, Result};

/// What the tiles multiply with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GemmPrecision {
    /// fp32 FMAs on the CUDA cores: every GPU.
    Fp32,
    /// TF32 tensor cores, each operand split into a TF32 high and low part, three
    /// products: the accuracy of fp32.
    Tf32x3,
    /// TF32 tensor cores, one product of the rounded operands: about three decimal
    /// digits, as cuDNN's default for fp32 convolutions.
    Tf32,
    /// bf16 tensor cores (mma.m16n8k16, f32 accumulators): each operand rounded to bf16
    /// (8 significant bits), the products summed in f32: `--precision bf16`, PyTorch's
    /// autocast.
    Bf16,
}

/// How the tiles reach shared memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GemmFeed {
    /// Loaded into registers, then stored.
    Registers,
    /// Asynchronous copies (cp.async, sm_80 and newer) through a ring of GEMM_STAGES
    /// shared buffers: the same results.
    Async,
}

/// The GEMM mode: `fp32`, `tf32x3` (default from sm_80), `tf32`, `tf32x3-async`,
/// `tf32-async`, and under `--precision bf16` `bf16` or `bf16-async`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GemmMode {
    pub precision: GemmPrecision,
    pub feed: GemmFeed,
}

impl GemmPrecision {
    /// `GAN_GEMM_PRECISION` of the kernels.
    pub fn code(self) -> i32 {
        match self {
            GemmPrecision::Fp32 => GEMM_FMA,
            GemmPrecision::Tf32x3 => GEMM_TF32X3,
            GemmPrecision::Tf32 => GEMM_TF32,
            GemmPrecision::Bf16 => GEMM_BF16,
        }
    }
}

impl GemmFeed {
    /// `GAN_GEMM_FEED` of the kernels.
    pub fn code(self) -> i32 {
        match self {
            GemmFeed::Registers => GEMM_FEED_REGISTERS,
            GemmFeed::Async => GEMM_FEED_ASYNC,
        }
    }
}

impl GemmMode {
    pub const FP32: GemmMode = GemmMode { precision: GemmPrecision::Fp32, feed: GemmFeed::Registers };
    pub const TF32X3: GemmMode = GemmMode { precision: GemmPrecision::Tf32x3, feed: GemmFeed::Registers };
    pub const TF32: GemmMode = GemmMode { precision: GemmPrecision::Tf32, feed: GemmFeed::Registers };
    pub const TF32X3_ASYNC: GemmMode = GemmMode { precision: GemmPrecision::Tf32x3, feed: GemmFeed::Async };
    pub const TF32_ASYNC: GemmMode = GemmMode { precision: GemmPrecision::Tf32, feed: GemmFeed::Async };
    pub const BF16: GemmMode = GemmMode { precision: GemmPrecision::Bf16, feed: GemmFeed::Registers };
    pub const BF16_ASYNC: GemmMode = GemmMode { precision: GemmPrecision::Bf16, feed: GemmFeed::Async };
    pub const ALL: [GemmMode; 7] =
        [GemmMode::FP32, GemmMode::TF32X3, GemmMode::TF32, GemmMode::TF32X3_ASYNC, GemmMode::TF32_ASYNC, GemmMode::BF16, GemmMode::BF16_ASYNC];
    /// The environment variable that picks the mode.
    pub const ENV: &'static str = "GAN_ENGINE_GEMM";

    pub fn label(self) -> &'static str {
        match (self.precision, self.feed) {
            (GemmPrecision::Fp32, _) => "fp32",
            (GemmPrecision::Tf32x3, GemmFeed::Registers) => "tf32x3",
            (GemmPrecision::Tf32, GemmFeed::Registers) => "tf32",
            (GemmPrecision::Tf32x3, GemmFeed::Async) => "tf32x3-async",
            (GemmPrecision::Tf32, GemmFeed::Async) => "tf32-async",
            (GemmPrecision::Bf16, GemmFeed::Registers) => "bf16",
            (GemmPrecision::Bf16, GemmFeed::Async) => "bf16-async",
        }
    }

    /// The `--precision` this mode multiplies in.
    pub fn precision(self) -> Precision {
        if self.precision == GemmPrecision::Bf16 {
            Precision::Bf16
        } else {
            Precision::F32
        }
    }

    /// The mode for `--precision` (None: not given, as in selftest) and `env` (the mode
    /// GAN_ENGINE_GEMM names, if any): bf16 defaults to `bf16`; a mode of the other
    /// precision is an error naming both.
    pub fn for_precision(precision: Option<Precision>, env: Option<GemmMode>) -> Result<Option<GemmMode>> {
        match (precision, env) {
            (Some(p), Some(m)) if m.precision() != p => {
                bail!("{}={} multiplies in {}, but --precision is {p}: unset it or choose a {p} mode", GemmMode::ENV, m.label(), m.precision())
            }
            (Some(Precision::Bf16), None) => Ok(Some(GemmMode::BF16)),
            (_, env) => Ok(env),
        }
    }

    pub fn uses_tensor_cores(self) -> bool {
        self.precision != GemmPrecision::Fp32
    }

    /// The NVRTC options that compile this mode into the kernels.
    pub fn defines(self) -> [String; 2] {
        [format!("-DGAN_GEMM_PRECISION={}", self.precision.code()), format!("-DGAN_GEMM_FEED={}", self.feed.code())]
    }

    pub fn parse(s: &str) -> Result<GemmMode> {
        GemmMode::ALL
            .into_iter()
            .find(|m| m.label() == s.trim())
            .ok_or_else(|| anyhow!("{}={s:?}: expected fp32, tf32x3, tf32, tf32x3-async, tf32-async, bf16 or bf16-async", GemmMode::ENV))
    }

    /// The mode named by `GAN_ENGINE_GEMM`, if it is set: the one place the environment is read.
    pub fn from_env() -> Result<Option<GemmMode>> {
        match std::env::var(GemmMode::ENV) {
            Ok(s) if !s.trim().is_empty() => GemmMode::parse(&s).map(Some),
            _ => Ok(None),
        }
    }

    /// `asked` (or the default) for a GPU of compute capability `sm` (e.g. 90): an error
    /// when it asks for tensor cores the GPU does not have.
    pub fn for_device(asked: Option<GemmMode>, sm: i32) -> Result<GemmMode> {
        let tensor = sm >= 80;
        match asked {
            None => Ok(if tensor { GemmMode::TF32X3 } else { GemmMode::FP32 }),
            Some(m) if m.uses_tensor_cores() && !tensor => {
                let instead = if m.precision == GemmPrecision::Bf16 { "--precision f32" } else { "fp32" };
                bail!("GEMM mode {} needs TF32/bf16 tensor cores (compute capability 8.0 or newer) and sm_{sm} has none: use {instead}", m.label())
            }
            Some(m) => Ok(m),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gemm_mode_defaults_to_tensor_cores_only_where_they_exist() {
        assert_eq!(GemmMode::for_device(None, 61).unwrap(), GemmMode::FP32);
        assert_eq!(GemmMode::for_device(None, 75).unwrap(), GemmMode::FP32);
        assert_eq!(GemmMode::for_device(None, 80).unwrap(), GemmMode::TF32X3);
        assert_eq!(GemmMode::for_device(None, 90).unwrap(), GemmMode::TF32X3);
        assert_eq!(GemmMode::for_device(Some(GemmMode::TF32), 90).unwrap(), GemmMode::TF32);
        assert_eq!(GemmMode::for_device(Some(GemmMode::FP32), 61).unwrap(), GemmMode::FP32);
        let e = GemmMode::for_device(Some(GemmMode::TF32X3), 75).unwrap_err().to_string();
        assert!(e.contains("tf32x3") && e.contains("sm_75") && e.contains("use fp32"), "{e}");
        for m in GemmMode::ALL {
            assert_eq!(GemmMode::parse(m.label()).unwrap(), m);
        }
        let e = GemmMode::parse("fp16").unwrap_err().to_string();
        assert!(e.contains("fp32, tf32x3, tf32, tf32x3-async, tf32-async, bf16 or bf16-async"), "{e}");
        let e = GemmMode::for_device(Some(GemmMode::BF16), 75).unwrap_err().to_string();
        assert!(e.contains("bf16") && e.contains("sm_75") && e.contains("--precision f32"), "{e}");
        assert_eq!(GemmMode::for_device(Some(GemmMode::BF16_ASYNC), 90).unwrap(), GemmMode::BF16_ASYNC);
        // The asynchronous copies need sm_80 as the tensor cores do; the precision is that
        // of the mode they feed.
        assert!(GemmMode::for_device(Some(GemmMode::TF32_ASYNC), 75).is_err());
        assert_eq!(GemmMode::for_device(Some(GemmMode::TF32X3_ASYNC), 80).unwrap(), GemmMode::TF32X3_ASYNC);
        assert_eq!(GemmMode::TF32X3_ASYNC.precision, GemmPrecision::Tf32x3);
        assert_eq!(GemmMode::TF32_ASYNC.precision, GemmPrecision::Tf32);
        assert_eq!(GemmMode::FP32.precision, GemmPrecision::Fp32);
        // --precision and GAN_ENGINE_GEMM agree, or it is an error naming both.
        assert_eq!(GemmMode::for_precision(Some(Precision::Bf16), None).unwrap(), Some(GemmMode::BF16));
        assert_eq!(GemmMode::for_precision(Some(Precision::Bf16), Some(GemmMode::BF16_ASYNC)).unwrap(), Some(GemmMode::BF16_ASYNC));
        assert_eq!(GemmMode::for_precision(Some(Precision::F32), None).unwrap(), None);
        assert_eq!(GemmMode::for_precision(None, Some(GemmMode::BF16)).unwrap(), Some(GemmMode::BF16));
        let e = GemmMode::for_precision(Some(Precision::Bf16), Some(GemmMode::TF32)).unwrap_err().to_string();
        assert!(e.contains("GAN_ENGINE_GEMM=tf32") && e.contains("--precision is bf16"), "{e}");
        let e = GemmMode::for_precision(Some(Precision::F32), Some(GemmMode::BF16)).unwrap_err().to_string();
        assert!(e.contains("GAN_ENGINE_GEMM=bf16") && e.contains("--precision is f32"), "{e}");
        // Two fields, one label each: no two modes share a label.
        let labels: std::collections::BTreeSet<_> = GemmMode::ALL.iter().map(|m| m.label()).collect();
        assert_eq!(labels.len(), GemmMode::ALL.len());
    }
}
