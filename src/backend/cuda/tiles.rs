//! Launch-shape constants the kernels share with their launch sites. build.rs writes every
//! `pub const` of this folder into the kernels' C header, so each is defined here only.

/// Implicit GEMM tile (kernels/gemm.cuh): GEMM_BM x GEMM_BN outputs per block, GEMM_BK deep
/// slices of the reduction, GEMM_THREADS threads each owning a GEMM_TM x GEMM_TN register tile.
pub const GEMM_BM: usize = 64;
pub const GEMM_BN: usize = 64;
pub const GEMM_BK: usize = 16;
pub const GEMM_TM: usize = 4;
pub const GEMM_TN: usize = 4;
pub const GEMM_THREADS: u32 = 256;
/// Padding of the shared-memory tiles: with rows GEMM_BM + 8 floats apart, the eight groups
/// and four thread-in-group lanes of a tensor-core fragment load hit 32 different banks.
pub const GEMM_PAD: usize = 8;
/// Depth of the ring of shared buffers the asynchronous-copy feed fills.
pub const GEMM_STAGES: usize = 3;
/// The thin GEMMs (kernels/gemm.cuh, gemm_thin_column): at most THIN_M rows and THIN_A
/// values of A, one thread per column.
pub const THIN_M: usize = 4;
pub const THIN_A: usize = 4096;
pub const THIN_THREADS: u32 = 256;
/// Block reductions (batchnorm statistics, losses, bias gradients) and elementwise kernels.
pub const REDUCE_THREADS: u32 = 256;
pub const ELEM_THREADS: u32 = 256;
pub const WARP: u32 = 32;

/// How the GEMM tiles multiply (`GemmPrecision`, passed to NVRTC as `-DGAN_GEMM_PRECISION`).
pub const GEMM_FMA: i32 = 0;
pub const GEMM_TF32X3: i32 = 1;
pub const GEMM_TF32: i32 = 2;
pub const GEMM_BF16: i32 = 3;
/// How the GEMM tiles are fed (`GemmFeed`, `-DGAN_GEMM_FEED`).
pub const GEMM_FEED_REGISTERS: i32 = 0;
pub const GEMM_FEED_ASYNC: i32 = 1;
