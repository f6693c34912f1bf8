// projection: the conditional term of the projection discriminator (Miyato and Koyama 2018),
// out = base + <a, b> per row (src/backend/cuda/ops/projection.rs). The forward pass is one
// block per row, a block reduction in an order fixed by the launch shape; the backward
// passes write one value per thread. Deterministic, no atomics.
#include "common.cuh"

// out[i] = base[i] + sum_c a[i, c] b[i, c]: one block per row (grid n).
extern "C" __global__ void __launch_bounds__(REDUCE_THREADS)
projection_forward_f32(ProjectionParams p, const float* __restrict__ base, const float* __restrict__ a, const float* __restrict__ b, float* __restrict__ out) {
    SHARED_ARRAY(float, scratch, REDUCE_THREADS / WARP);
    const int i = blockIdx.x;
    const long long row = (long long)i * p.c;
    float s = 0.0f;
    for (int k = threadIdx.x; k < p.c; k += blockDim.x) s += a[row + k] * b[row + k];
    s = block_sum(s, scratch);
    if (threadIdx.x == 0) out[i] = base[i] + s;
}

// da[i, c] = dout[i] b[i, c], db[i, c] = dout[i] a[i, c]: one thread per (i, c).
extern "C" __global__ void __launch_bounds__(ELEM_THREADS)
projection_backward_input_f32(ProjectionParams p, const float* __restrict__ dout, const float* __restrict__ a, const float* __restrict__ b, float* __restrict__ da, float* __restrict__ db) {
    const int e = elem_index();
    if (e >= p.n * p.c) return;
    const float g = dout[e / p.c];
    da[e] = g * b[e];
    db[e] = g * a[e];
}

// dh[i, c, q] = dpsi[i, c, q] + da[i, c] / hw: the global average pool's backward pass added
// to the unconditional path's gradient. One thread per value of dh.
extern "C" __global__ void __launch_bounds__(ELEM_THREADS)
projection_backward_features_f32(ProjectionParams p, const float* __restrict__ dpsi, const float* __restrict__ da, float* __restrict__ dh) {
    const int e = elem_index();
    if (e >= p.n * p.c * p.hw) return;
    dh[e] = dpsi[e] + da[e / p.hw] * (1.0f / (float)p.hw);
}
