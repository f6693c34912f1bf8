// avg_pool2d: the mean of non-overlapping k x k windows, stride k (k = the plane's side is the
// global average pool). One thread per value written (src/backend/cuda/ops/pool.rs).
#include "common.cuh"

// y[n, c, oy, ox] = mean of x over the window at (oy k, ox k): one thread per output.
extern "C" __global__ void __launch_bounds__(ELEM_THREADS)
avg_pool2d_forward_f32(PoolParams p, const float* __restrict__ x, float* __restrict__ y) {
    const int ho = p.h_in / p.k, wo = p.w_in / p.k;
    const int i = elem_index();
    if (i >= p.n * p.c * ho * wo) return;
    const int ox = i % wo, oy = (i / wo) % ho, plane = i / (wo * ho);
    const float* src = x + (long long)plane * p.h_in * p.w_in + (long long)oy * p.k * p.w_in + ox * p.k;
    float s = 0.0f;
    for (int dy = 0; dy < p.k; ++dy)
        for (int dx = 0; dx < p.k; ++dx) s += src[dy * p.w_in + dx];
    y[i] = s * (1.0f / (float)(p.k * p.k));
}

// dx = dy of the window holding the value, / k^2: one thread per input value.
extern "C" __global__ void __launch_bounds__(ELEM_THREADS)
avg_pool2d_backward_input_f32(PoolParams p, const float* __restrict__ dy, float* __restrict__ dx) {
    const int ho = p.h_in / p.k, wo = p.w_in / p.k;
    const int i = elem_index();
    if (i >= p.n * p.c * p.h_in * p.w_in) return;
    const int ix = i % p.w_in, iy = (i / p.w_in) % p.h_in, plane = i / (p.w_in * p.h_in);
    dx[i] = dy[(long long)plane * ho * wo + (iy / p.k) * wo + ix / p.k] * (1.0f / (float)(p.k * p.k));
}
