//! The CUDA backend (see kernels/).
