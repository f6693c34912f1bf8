// CPU simulation of the CUDA execution model, for running kernels/*.cu unchanged on a
// machine without a GPU (cargo feature `sim`, `--device sim`). Verification only: slow by
// design, strict about what a GPU leaves undefined.
//
// - Every GPU thread of a block is a fiber (ucontext) with its own stack; blocks run one
//   at a time on one OS thread.
// - `__syncthreads` and every shuffle step yield to a scheduler (sim.cpp), which releases a
//   barrier once every thread that must reach it has. Between barriers the threads run in
//   an order the launch chooses: forward, reverse, or shuffled; blocks too. A launch may run
//   in all three orders from the same inputs and must give bit-identical results.
// - A barrier that some threads skip because they already returned, a shuffle in a warp
//   with exited lanes, or threads waiting at different barriers are reported as launch
//   errors instead of silently passing.
// - Every load and store the kernels make is seen by the checker in sim.cpp: the kernels
//   are compiled with the compiler's thread-sanitizer instrumentation, whose hooks
//   (__tsan_read4, ...) sim.cpp implements itself. It reports a race (a word written by one
//   thread and read or written by another with no barrier between them, or by another
//   block of the same launch), a read of shared memory not yet written in this block, a
//   read of device memory never written (fresh scratch buffers), and an access outside the
//   launch's buffers (each has a poisoned red zone on both sides), naming the kernel, the
//   address and both threads.
// - Shared memory (SHARED_ARRAY and DYNAMIC_SHARED in common.cuh) is a per-block arena,
//   poisoned with NaN for every block. Plain `__shared__` is refused here, so no shared
//   variable escapes the checker.
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
// The block's slot of `bytes` for the SHARED_ARRAY declared with `tag` (one per declaration
// and template instantiation): the same address for every thread of the block.
extern "C" void* sim_shared_slot(const void* tag, unsigned bytes);

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
// Shared memory is declared with SHARED_ARRAY (common.cuh), which the checker sees.
#define __shared__ use_SHARED_ARRAY_from_common_cuh_instead_of___shared__

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


inline float __ldg(const float* p) { return *p; }
inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }
