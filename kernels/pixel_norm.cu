// pixel_norm: ProGAN's pixelwise feature normalisation, y = x / sqrt(mean_c x^2 + eps), and
// its input gradient. One thread per pixel column (n, pixel), looping over the channels in
// order, so sums have one order and no atomics; neighbouring threads read neighbouring
// pixels of a channel plane (src/backend/cuda/ops/pixel_norm.rs).
#include "common.cuh"

// 1 / sqrt(mean over the channels of x^2 + eps) of the column at `x` (stride hw).
__device__ __forceinline__ float pixel_norm_inv_rms(const PixelNormParams& p, const float* x) {
    float ss = 0.0f;
    for (int c = 0; c < p.c; ++c) {
        const float v = x[(long long)c * p.hw];
        ss += v * v;
    }
    return 1.0f / sqrtf(ss / (float)p.c + p.eps);
}

// y = x r, r = 1 / sqrt(mean_c x^2 + eps): one thread per column.
extern "C" __global__ void __launch_bounds__(ELEM_THREADS)
pixel_norm_forward_f32(PixelNormParams p, const float* __restrict__ x, float* __restrict__ y) {
    const int col = elem_index();
    if (col >= p.n * p.hw) return;
    const long long base = (long long)(col / p.hw) * p.c * p.hw + col % p.hw;
    const float r = pixel_norm_inv_rms(p, x + base);
    for (int c = 0; c < p.c; ++c) {
        const long long i = base + (long long)c * p.hw;
        y[i] = x[i] * r;
    }
}

// dx_i = r dy_i - x_i r^3 (1/C) sum_j dy_j x_j, r recomputed from x: one thread per column.
extern "C" __global__ void __launch_bounds__(ELEM_THREADS)
pixel_norm_backward_input_f32(PixelNormParams p, const float* __restrict__ x, const float* __restrict__ dy, float* __restrict__ dx) {
    const int col = elem_index();
    if (col >= p.n * p.hw) return;
    const long long base = (long long)(col / p.hw) * p.c * p.hw + col % p.hw;
    const float r = pixel_norm_inv_rms(p, x + base);
    float dot = 0.0f;
    for (int c = 0; c < p.c; ++c) {
        const long long i = base + (long long)c * p.hw;
        dot += dy[i] * x[i];
    }
    const float k = r * r * r * dot / (float)p.c;
    for (int c = 0; c < p.c; ++c) {
        const long long i = base + (long long)c * p.hw;
        dx[i] = r * dy[i] - x[i] * k;
    }
}
