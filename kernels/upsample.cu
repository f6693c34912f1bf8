// upsample_nearest: nearest-neighbour upsampling by an integer factor k, and its input
// gradient (the sum of each k x k block). One thread per value written
// (src/backend/cuda/ops/upsample.rs).
#include "common.cuh"

// y[n, c, oy, ox] = x[n, c, oy / k, ox / k]: one thread per output.
extern "C" __global__ void __launch_bounds__(ELEM_THREADS)
upsample_nearest_forward_f32(UpsampleParams p, const float* __restrict__ x, float* __restrict__ y) {
    const int ho = p.h_in * p.k, wo = p.w_in * p.k;
    const int i = elem_index();
    if (i >= p.n * p.c * ho * wo) return;
    const int ox = i % wo, oy = (i / wo) % ho, plane = i / (wo * ho);
    y[i] = x[(long long)plane * p.h_in * p.w_in + (oy / p.k) * p.w_in + ox / p.k];
}

// dx[n, c, iy, ix] = the sum of dy over the block at (iy k, ix k), row by row: one thread
// per input value, so every sum has one order.
extern "C" __global__ void __launch_bounds__(ELEM_THREADS)
upsample_nearest_backward_input_f32(UpsampleParams p, const float* __restrict__ dy, float* __restrict__ dx) {
    const int ho = p.h_in * p.k, wo = p.w_in * p.k;
    const int i = elem_index();
    if (i >= p.n * p.c * p.h_in * p.w_in) return;
    const int ix = i % p.w_in, iy = (i / p.w_in) % p.h_in, plane = i / (p.w_in * p.h_in);
    const float* src = dy + (long long)plane * ho * wo + (long long)iy * p.k * wo + ix * p.k;
    float s = 0.0f;
    for (int r = 0; r < p.k; ++r)
        for (int q = 0; q < p.k; ++q) s += src[r * wo + q];
    dx[i] = s;
}
