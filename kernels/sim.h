// CPU simulation of the CUDA execution model, for running kernels/*.cu unchanged on a
// machine without a GPU (cargo feature `sim`, `--device sim`). Verification only: slow by
// design, exact in the semantics the kernels rely on.
//
// - Every GPU thread of a block is a fiber (ucontext) with its own stack; blocks run one
//   at a time, in order, on one OS thread. So `__shared__` can simply be `static`.
// - `__syncthreads` and every shuffle step yield to a round-robin scheduler (sim.cpp),
//   which releases a barrier once every thread that must reach it has.
// - A barrier that some threads skip because they already returned, a shuffle in a warp
//   with exited lanes, or threads waiting at different barriers are reported as launch
//   errors instead of silently passing.
// - Dynamic shared memory is a per-launch buffer filled with NaN, so reading it before
//   writing shows up in the results.
// - Asynchronous copies land as late as the hardware may let them (see cp_async below).
#pragma once

#include <math.h>  // expf, tanhf, log1pf, ... in the global namespace, as in CUDA
#include <cstdint>
#include <cstring>

struct sim_dim3 {
    unsigned x, y, z;
};

namespace sim {
extern sim_dim3 thread_idx, block_idx, block_dim, grid_dim;
void syncthreads();
void syncwarp();
int lane();
int warp_width();
void shfl_put(const void* v, unsigned bytes);
const void* shfl_get(int lane);
// The GEMM mode of the running launch (GEMM_PRECISION and GEMM_ASYNC in common.cuh).
extern int gemm_precision, gemm_feed;
// Tensor-core fragments: each lane publishes its registers, then reads any lane's.
void frag_put(const uint32_t* v, int n);
const uint32_t* frag_get(int lane);
// Asynchronous copies (cp.async): the value is read at issue and lands in `dst` only at
// the latest moment the hardware allows, the cp_async_wait that covers its group, so a
// read of the buffer before that wait (or a missing wait) sees the old contents. Copies
// still pending when the thread exits are a launch error.
void cp_async(float* dst, const float* src);
void cp_async_commit();
void cp_async_wait(int pending);
}  // namespace sim

extern "C" void* sim_dynamic_shared();

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static

#define threadIdx (sim::thread_idx)
#define blockIdx (sim::block_idx)
#define blockDim (sim::block_dim)
#define gridDim (sim::grid_dim)

inline void __syncthreads() { sim::syncthreads(); }

template <class T>
inline T sim_shfl(T v, int src) {
    sim::shfl_put(&v, sizeof(T));
    sim::syncwarp();  // every lane has published its value
    T r = v;
    if (src >= 0 && src < sim::warp_width()) std::memcpy(&r, sim::shfl_get(src), sizeof(T));
    sim::syncwarp();  // every lane has read before anyone publishes again
    return r;
}
template <class T>
inline T __shfl_down_sync(unsigned, T v, unsigned delta) {
    return sim_shfl(v, sim::lane() + (int)delta);
}
template <class T>
inline T __shfl_xor_sync(unsigned, T v, int mask) {
    return sim_shfl(v, sim::lane() ^ mask);
}
template <class T>
inline T __shfl_sync(unsigned, T v, int src) {
    return sim_shfl(v, src);
}

// Only one fiber runs at a time, so plain read-modify-write is atomic here.
inline float atomicAdd(float* p, float v) { float o = *p; *p = o + v; return o; }
inline int atomicAdd(int* p, int v) { int o = *p; *p = o + v; return o; }
inline unsigned atomicAdd(unsigned* p, unsigned v) { unsigned o = *p; *p = o + v; return o; }

inline float __ldg(const float* p) { return *p; }
inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }
