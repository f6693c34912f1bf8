// Shared by every kernel module: the op parameter structs (declared identically in
// src/backend/mod.rs, passed by value), launch-shape constants and block reductions.
//
// The same source compiles two ways:
// - by NVRTC for the GPU (no host headers available, so nothing is #included there);
// - by g++ as C++17 with GAN_SIM defined, against sim.h, which runs every GPU thread of a
//   block as a fiber on the CPU (the `sim` cargo feature).
#pragma once

#ifdef GAN_SIM
#include "sim.h"
#endif

// ---- op parameter structs (keep in sync with src/backend/mod.rs) ------------------------
struct ConvParams {
    int n, c_in, h_in, w_in, c_out, h_out, w_out, k, stride, pad;
};
// The activation fused into batchnorm's output (BatchNormParams::act).
#define BN_ACT_NONE 0
#define BN_ACT_RELU 1
#define BN_ACT_LEAKY_RELU 2
struct BatchNormParams {
    int n, c, hw;
    float eps, momentum;
    int act;
    float slope;
};
struct ActParams {
    int len;
    float slope;
};
struct LinearParams {
    int n, in_features, out_features;
};
struct ConcatParams {
    int n, c_a, c_b, hw;
};
struct BceParams {
    int n;
    float target, scale;
};
struct AdamParams {
    int len;
    float lr, beta1, beta2, eps, bc1, bc2;
};
// Backend::fill.
struct FillParams {
    int len;
    float value;
};
// The split-K reduction of a weight gradient: `splits` partial buffers of `len` values,
// added in order (the slices are chosen on the host, src/backend/cuda/mod.rs).
struct SplitParams {
    int len;     // values per partial (the size of the gradient)
    int splits;  // partial buffers to add, in order
};

// ---- launch-shape constants -------------------------------------------------------------
// Implicit GEMM tile: BM x BN outputs per block, BK deep slices of the reduction, 256
// threads each owning a TM x TN register tile.
#define GEMM_BM 64
#define GEMM_BN 64
#define GEMM_BK 16
#define GEMM_TM 4
#define GEMM_TN 4
#define GEMM_THREADS 256
// Padding of the shared-memory tiles: with rows BM + 8 floats apart, the eight groups and
// four thread-in-group lanes of a tensor-core fragment load hit 32 different banks.
#define GEMM_PAD 8

// How the GEMM tiles multiply (src/backend/cuda/mod.rs, GemmMode):
//   0: fp32 FMAs on the CUDA cores, every GPU;
//   1: TF32 tensor cores with each operand split into a TF32 high and low part and three
//      products (hi*hi + hi*lo + lo*hi): fp32 accuracy, sm_80 and newer;
//   2: TF32 tensor cores, one product of the rounded operands (about 3 decimal digits,
//      what cuDNN does for fp32 convolutions by default), sm_80 and newer.
// NVRTC gets the mode as -DGAN_GEMM_MODE; below sm_80 it is always 0. The simulation runs
// every mode (a per-launch setting), so the tensor-core path is checked without a GPU.
// Codes 3 and 4 are modes 1 and 2 with the tiles fed by asynchronous copies (cp.async,
// sm_80 and newer) through a GEMM_STAGES-deep ring of shared buffers instead of through
// registers (gemm.cuh, gemm_steps_async): GEMM_ASYNC.
#define GEMM_FMA 0
#define GEMM_TF32X3 1
#define GEMM_TF32 2
#if defined(GAN_SIM)
#define GEMM_CODE (sim::gemm_mode)
#define GEMM_HAS_MMA 1
#elif defined(GAN_GEMM_MODE) && defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
#define GEMM_CODE GAN_GEMM_MODE
#define GEMM_HAS_MMA 1
#else
#define GEMM_CODE GEMM_FMA
#define GEMM_HAS_MMA 0
#endif
#define GEMM_MODE (GEMM_CODE > 2 ? GEMM_CODE - 2 : GEMM_CODE)
#define GEMM_ASYNC (GEMM_CODE > 2)
#define GEMM_STAGES 3
// Shared buffers per operand tile: the async ring, or one. The simulation sets the mode per
// launch, so it always has the ring.
#if defined(GAN_SIM)
#define GEMM_RING GEMM_STAGES
#else
#define GEMM_RING (GEMM_ASYNC ? GEMM_STAGES : 1)
#endif
// Reductions (batchnorm statistics, losses) and elementwise kernels.
#define REDUCE_THREADS 256
#define ELEM_THREADS 256

#define WARP 32

// Dynamic shared memory: on the GPU an `extern __shared__` array, in the simulation a
// per-launch buffer sized by the launch (one block is alive at a time).
#ifdef GAN_SIM
#define DYNAMIC_SHARED(type, name) type* name = reinterpret_cast<type*>(sim_dynamic_shared())
#else
#define DYNAMIC_SHARED(type, name) extern __shared__ float gan_dynamic_shared_[]; type* name = reinterpret_cast<type*>(gan_dynamic_shared_)
#endif

__device__ __forceinline__ float warp_sum(float v) {
    for (int off = WARP / 2; off > 0; off >>= 1) v += __shfl_down_sync(0xffffffffu, v, off);
    return v;
}

// Sum of `v` over the block, returned to every thread. `scratch` holds one float per warp
// (dynamic shared memory). The order of additions depends only on the launch shape, so the
// result is deterministic. Every thread of the block must call it.
__device__ __forceinline__ float block_sum(float v, float* scratch) {
    const int lane = threadIdx.x % WARP, warp = threadIdx.x / WARP;
    const int warps = (blockDim.x + WARP - 1) / WARP;
    v = warp_sum(v);
    __syncthreads();  // scratch may still be read by a previous call
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    float t = 0.0f;
    for (int i = 0; i < warps; ++i) t += scratch[i];  // same order in every thread
    return t;
}

// Calls f(i) for the values e in [e0, e1) of channel c this thread owns in a block
// reduction over that range: e = e0 + tid, e0 + tid + blockDim, ... over the channel's
// n * hw values, i their index in NCHW. e is kept as digits (n, q) and stepped with a
// carry, so the loop does no integer division; the order, and so every sum, is that of the
// flat loop over e.
template <class F>
__device__ __forceinline__ void channel_range_for_each(const BatchNormParams& p, int c, int e0, int e1, F f) {
    const int step_n = blockDim.x / p.hw, step_q = blockDim.x % p.hw;
    const long long plane = (long long)p.c * p.hw, base = (long long)c * p.hw;
    const int first = e0 + (int)threadIdx.x;
    int n = first / p.hw, q = first % p.hw;
    for (int e = first; e < e1; e += blockDim.x) {
        f(n * plane + base + q);
        q += step_q;
        n += step_n;
        if (q >= p.hw) {
            q -= p.hw;
            ++n;
        }
    }
}

// The same over all of channel c: one block per channel.
template <class F>
__device__ __forceinline__ void channel_for_each(const BatchNormParams& p, int c, F f) {
    channel_range_for_each(p, c, 0, p.n * p.hw, f);
}

// Numerically safe logistic function for any finite x.
__device__ __forceinline__ float sigmoidf_(float x) {
    if (x >= 0.0f) return 1.0f / (1.0f + expf(-x));
    const float e = expf(x);
    return e / (1.0f + e);
}
