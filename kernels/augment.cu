// augment: DiffAugment's colour, translation and cutout of an NCHW batch, one parameter
// row of AUGMENT_K values per sample (src/backend/augment.rs has the definition;
// src/backend/cuda/ops/augment.rs launches these). One block per sample: the colour's
// whole-sample sum is a block reduction in an order fixed by the launch shape, so the
// result is deterministic; no atomics. Each thread owns pixels q = tid, tid + blockDim, ...
// and walks their channels.
#include "common.cuh"

struct AugmentSample {
    int tx, ty, cx0, cy0, cw, ch;
    float b, s, k, fill;
    bool color;
};

__device__ __forceinline__ AugmentSample augment_sample(const float* __restrict__ a) {
    AugmentSample s;
    s.tx = (int)a[AUGMENT_SHIFT_X];
    s.ty = (int)a[AUGMENT_SHIFT_Y];
    s.cx0 = (int)a[AUGMENT_CUT_X0];
    s.cy0 = (int)a[AUGMENT_CUT_Y0];
    s.cw = (int)a[AUGMENT_CUT_W];
    s.ch = (int)a[AUGMENT_CUT_H];
    s.b = a[AUGMENT_BRIGHTNESS];
    s.s = a[AUGMENT_SATURATION];
    s.k = a[AUGMENT_CONTRAST];
    s.fill = a[AUGMENT_FILL];
    s.color = !(s.b == 0.0f && s.s == 1.0f && s.k == 1.0f);
    return s;
}

// The input pixel output pixel (i, j) reads, or -1 (cut out, or shifted in from outside).
__device__ __forceinline__ int augment_source(const AugmentSample& s, int i, int j, int h, int w) {
    if (i >= s.cy0 && i < s.cy0 + s.ch && j >= s.cx0 && j < s.cx0 + s.cw) return -1;
    const int si = i + s.ty, sj = j + s.tx;
    return (si >= 0 && si < h && sj >= 0 && sj < w) ? si * w + sj : -1;
}

// The output pixel that reads input pixel (si, sj), or -1 (the transpose of augment_source).
__device__ __forceinline__ int augment_reader(const AugmentSample& s, int si, int sj, int h, int w) {
    const int i = si - s.ty, j = sj - s.tx;
    if (i < 0 || i >= h || j < 0 || j >= w) return -1;
    return (i >= s.cy0 && i < s.cy0 + s.ch && j >= s.cx0 && j < s.cx0 + s.cw) ? -1 : i * w + j;
}

// y = cutout(translate(colour(x))), the fill where translation shifts in from outside or
// cutout covers. Colour, when not the identity, is
// k s (x - m_c) + k (m_c - m) + m + b with m_c the pixel's channel mean and m the sample's.
extern "C" __global__ void __launch_bounds__(REDUCE_THREADS)
augment_forward_f32(AugmentParams p, const float* __restrict__ x, const float* __restrict__ a, float* __restrict__ y) {
    SHARED_ARRAY(float, scratch, REDUCE_THREADS / WARP);
    const int hw = p.h * p.w;
    const long long per = (long long)p.c * hw;
    const float* xs = x + blockIdx.x * per;
    float* ys = y + blockIdx.x * per;
    const AugmentSample s = augment_sample(a + (long long)blockIdx.x * AUGMENT_K);
    float m = 0.0f;
    if (s.color) {  // the same for the whole block
        float t = 0.0f;
        for (long long e = threadIdx.x; e < per; e += blockDim.x) t += xs[e];
        m = block_sum(t, scratch) / (float)per;
    }
    const float ks = s.k * s.s;
    for (int q = threadIdx.x; q < hw; q += blockDim.x) {
        const int sq = augment_source(s, q / p.w, q % p.w, p.h, p.w);
        float mc = 0.0f;
        if (sq >= 0 && s.color) {
            for (int c = 0; c < p.c; ++c) mc += xs[(long long)c * hw + sq];
            mc /= (float)p.c;
        }
        for (int c = 0; c < p.c; ++c) {
            float v = s.fill;
            if (sq >= 0) {
                v = xs[(long long)c * hw + sq];
                if (s.color) v = ks * (v - mc) + s.k * (mc - m) + m + s.b;
            }
            ys[(long long)c * hw + q] = v;
        }
    }
}

// The fill is a constant: the backward pass is the linear part's transpose,
// dx = k s g + k (1 - s) / C sum_c g + (1 - k) / (C H W) sum_chw g, with g the gradient
// moved back to the pixel each output read (zero where none did); dx = g when the colour
// is the identity.
extern "C" __global__ void __launch_bounds__(REDUCE_THREADS)
augment_backward_input_f32(AugmentParams p, const float* __restrict__ a, const float* __restrict__ dy, float* __restrict__ dx) {
    SHARED_ARRAY(float, scratch, REDUCE_THREADS / WARP);
    const int hw = p.h * p.w;
    const long long per = (long long)p.c * hw;
    const float* dys = dy + blockIdx.x * per;
    float* dxs = dx + blockIdx.x * per;
    const AugmentSample s = augment_sample(a + (long long)blockIdx.x * AUGMENT_K);
    float total = 0.0f;
    if (s.color) {
        float t = 0.0f;
        for (int q = threadIdx.x; q < hw; q += blockDim.x) {
            const int r = augment_reader(s, q / p.w, q % p.w, p.h, p.w);
            if (r >= 0)
                for (int c = 0; c < p.c; ++c) t += dys[(long long)c * hw + r];
        }
        total = block_sum(t, scratch);
    }
    const float ks = s.k * s.s;
    const float fc = s.k * (1.0f - s.s) / (float)p.c;
    const float ft = (1.0f - s.k) / (float)per * total;
    for (int q = threadIdx.x; q < hw; q += blockDim.x) {
        const int r = augment_reader(s, q / p.w, q % p.w, p.h, p.w);
        float gc = 0.0f;
        if (r >= 0 && s.color)
            for (int c = 0; c < p.c; ++c) gc += dys[(long long)c * hw + r];
        for (int c = 0; c < p.c; ++c) {
            const float g = r >= 0 ? dys[(long long)c * hw + r] : 0.0f;
            dxs[(long long)c * hw + q] = s.color ? ks * g + fc * gc + ft : g;
        }
    }
}
