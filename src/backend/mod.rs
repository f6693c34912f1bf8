//! The op contract.
//!
//! Every op with parameters has three passes: `forward`, `backward_input` and
//! `backward_params`. Gradient rule: parameter gradients accumulate (`+=`) and are
//! zeroed once per optimizer step; activation gradients are written (`=`). A layer whose
//! parameter gradients are not wanted runs `backward_input` only: that is the whole
//! weight-freeze mechanism (`nn::Grads`).
//!
//! Storage is NCHW. `nn/` and `model/` speak only this contract; they never know which
//! backend runs.
//!
//! One op family, one name on every face. For a family F (`conv`, `batchnorm`,
//! `activation`, `linear`, `concat`, `bce`, `adam`, `pool`, `cross_entropy`,
//! `minibatch_std`, `augment`, `ema`, `projection`, `upsample`, `pixel_norm`, `fade`,
//! `scale`, `mode_seeking`):
//! - `backend/F.rs`: its `#[repr(C)]` parameter struct and its trait (`ConvOps`, ...);
//! - `backend/cpu/F.rs`: the CPU twin of every pass;
//! - `backend/cuda/ops/F.rs`: the launch sites and launch shapes of its kernels;
//! - `kernels/F.cu`: the kernels;
//! - `verify/F.rs`: its direct-loop reference, finite-difference checks and twin rows.
//!
//! What Rust and the kernels share has one source: the `#[repr(C)]` structs and the
//! `pub const` integers of this folder. build.rs writes them into the kernels' C header
//! (`params.cuh`, included by `kernels/common.cuh`), with the layout of each struct
//! asserted on both sides.

pub mod activation;
pub mod adam;
pub mod augment;
pub mod batchnorm;
pub mod bce;
pub mod concat;
pub mod conv;
pub mod cpu;
pub mod cross_entropy;
pub mod cuda;
pub mod device;
pub mod ema;
pub mod fade;
pub mod linear;
pub mod minibatch_std;
pub mod mode_seeking;
pub mod pixel_norm;
pub mod pool;
pub mod precision;
pub mod profile;
pub mod projection;
pub mod scale;
pub mod upsample;

pub use activation::{ActParams, ActivationOps};
pub use adam::{AdamOps, AdamParams};
pub use augment::{AugmentOps, AugmentParams};
pub use batchnorm::{BatchNormOps, BatchNormParams, BN_ACT_LEAKY_RELU, BN_ACT_NONE, BN_ACT_RELU};
pub use bce::{BceOps, BceParams};
pub use concat::{ConcatOps, ConcatParams};
pub use conv::{ConvOps, ConvParams};
pub use cross_entropy::{CrossEntropyOps, CrossEntropyParams};
pub use ema::{EmaOps, EmaParams};
pub use fade::{FadeOps, FadeParams};
pub use linear::{LinearOps, LinearParams};
pub use minibatch_std::{MinibatchStdOps, MinibatchStdParams};
pub use mode_seeking::{ModeSeekingOps, ModeSeekingParams, MODE_SEEKING_EPS};
pub use pixel_norm::{PixelNormOps, PixelNormParams};
pub use pool::{PoolOps, PoolParams};
pub use precision::Precision;
pub use profile::{Profiler, Work};
pub use projection::{ProjectionOps, ProjectionParams};
pub use scale::{ScaleOps, ScaleParams};
pub use upsample::{UpsampleOps, UpsampleParams};

use anyhow::Result;
use std::collections::BTreeSet;

// Size and field offsets of every shared struct, as build.rs laid them out for the C
// header: a Rust definition that drifts from the header fails to compile.
include!(concat!(env!("OUT_DIR"), "/shared_layout.rs"));

/// Memory, the profiling hook and what every family builds on. Buffers are flat and typed
/// by the backend (`f32` on the GPU, `f32` or `f64` on the CPU); op outputs are `&mut` and
/// fully written unless the op's doc says it accumulates.
pub trait Core: 'static {
    type Buf;

    fn name(&self) -> String;

    /// A zeroed buffer of `len` elements.
    fn alloc(&self, len: usize) -> Result<Self::Buf>;
    fn len(&self, buf: &Self::Buf) -> usize;
    fn upload(&self, dst: &mut Self::Buf, src: &[f32]) -> Result<()>;
    fn download(&self, src: &Self::Buf, dst: &mut [f32]) -> Result<()>;
    /// Exact transfers for gradient checks (lossless on an f64 backend).
    fn upload_f64(&self, dst: &mut Self::Buf, src: &[f64]) -> Result<()>;
    fn download_f64(&self, src: &Self::Buf, dst: &mut [f64]) -> Result<()>;
    fn fill(&self, buf: &mut Self::Buf, value: f32) -> Result<()>;
    /// Waits for queued work (a no-op on the CPU).
    fn synchronize(&self) -> Result<()> {
        Ok(())
    }

    /// Memory this backend can still allocate, so that a model's size is checked before it
    /// is built; `None` where the figure is not known. The CPU's is the host's.
    fn memory_available(&self) -> Option<Available> {
        host_memory_available()
    }

    /// The backend's profiler: every op runs through [`Core::timed`].
    fn profiler(&self) -> &Profiler;

    /// The one profiling hook: runs the op `f`, counts the call under `op`, and while the
    /// profiler is on, times it between two synchronisations and records `work()`.
    fn timed<R>(&self, op: &'static str, work: impl FnOnce() -> Work, f: impl FnOnce() -> Result<R>) -> Result<R>
    where
        Self: Sized,
    {
        self.profiler().run(op, || self.synchronize(), work, f)
    }

    /// What the convolution and linear GEMMs multiply with (`--precision`).
    fn precision(&self) -> Precision {
        Precision::F32
    }

    /// Kernels launched since the last call, by name (a backend without kernels has none).
    fn take_recent_launches(&self) -> BTreeSet<&'static str> {
        BTreeSet::new()
    }
}

/// `Backend` and its blanket impl from one list of the op families, so a new family is
/// named once.
macro_rules! op_contract {
    ($($family:ident),+ $(,)?) => {
        /// The whole op contract: memory and every op family.
        pub trait Backend: Core $(+ $family)+ {}

        impl<T: Core $(+ $family)+> Backend for T {}
    };
}

op_contract!(
    ConvOps,
    BatchNormOps,
    ActivationOps,
    LinearOps,
    ConcatOps,
    BceOps,
    AdamOps,
    PoolOps,
    CrossEntropyOps,
    MinibatchStdOps,
    AugmentOps,
    EmaOps,
    ProjectionOps,
    UpsampleOps,
    PixelNormOps,
    FadeOps,
    ScaleOps,
    ModeSeekingOps
);

/// Every trait of the contract, for code that calls ops on a concrete backend.
pub mod prelude {
    pub use super::{ActivationOps, AdamOps, Backend, BatchNormOps, BceOps, ConcatOps, ConvOps, Core, LinearOps};
    pub use super::{AugmentOps, CrossEntropyOps, EmaOps, MinibatchStdOps, PoolOps, ProjectionOps};
    pub use super::{FadeOps, ModeSeekingOps, PixelNormOps, ScaleOps, UpsampleOps};
}

/// Memory a backend can still allocate, and where that figure comes from.
#[derive(Clone, Debug, PartialEq)]
pub struct Available {
    pub bytes: u64,
    /// Whose memory: "this machine (MemAvailable)", "the GPU".
    pub what: String,
}

/// The host's available memory: `MemAvailable` of `/proc/meminfo` (Linux); `None` elsewhere.
pub fn host_memory_available() -> Option<Available> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kb: u64 = info.lines().find_map(|l| l.strip_prefix("MemAvailable:"))?.trim().strip_suffix("kB")?.trim().parse().ok()?;
    Some(Available { bytes: kb * 1024, what: "this machine (MemAvailable)".into() })
}

/// `buf` holds at least `need` values, or an error naming the op's operand.
pub fn check_len(what: &str, have: usize, need: usize) -> Result<()> {
    anyhow::ensure!(have >= need, "{what}: buffer holds {have} values, op needs {need}");
    Ok(())
}

/// Every operand of `op` holds what the op needs: `(name, buffer, values needed)`, `None`
/// for an absent optional operand. Each family's parameter struct lists its operands per
/// pass with this, once for every backend.
pub fn check_operands<B: Core>(be: &B, op: &str, operands: &[(&str, Option<&B::Buf>, usize)]) -> Result<()> {
    for &(name, buf, need) in operands {
        if let Some(buf) = buf {
            check_len(&format!("{op} {name}"), be.len(buf), need)?;
        }
    }
    Ok(())
}
