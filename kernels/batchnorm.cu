// batchnorm2d over NCHW, statistics per channel (PyTorch conventions: biased variance to
// normalise, unbiased variance into running_var, running = (1 - m) running + m batch),
// with an optional fused ReLU / LeakyReLU on the output (p.act): the forward writes
// act(bn(x)) and both backward passes fold act'(y) into dy as they read it.
//
// A channel holds n * hw values: 64 to a million in the models. One block per channel
// would leave most of a large GPU idle on the wide layers (64 channels, 64 blocks), so
// each channel is cut into `slices` ranges of `slice_len` values (chosen on the host,
// src/backend/cuda/mod.rs) and each training pass is three launches:
//   1. one block per (slice, channel) reduces its range to partial statistics;
//   2. one warp per channel combines its slices' partials in a fixed order;
//   3. one block per (slice, channel) applies the per-channel result to its range.
// Every order of addition depends only on the shape, so the results are deterministic.
#include "common.cuh"

// The fused activation on a normalised value.
__device__ __forceinline__ float bn_act(const BatchNormParams& p, float v) {
    if (p.act == BN_ACT_NONE || v > 0.0f) return v;
    return p.act == BN_ACT_RELU ? 0.0f : v * p.slope;
}

// dy times the fused activation's derivative, read from the sign of its output y (y is
// not read without an activation).
__device__ __forceinline__ float bn_pre_grad(const BatchNormParams& p, const float* __restrict__ y, long long i,
                                             float dy) {
    if (p.act == BN_ACT_NONE || y[i] > 0.0f) return dy;
    return p.act == BN_ACT_RELU ? 0.0f : dy * p.slope;
}

// The range of slice blockIdx.x of channel blockIdx.y: [e0, e1).
struct SliceRange {
    int c, s, e0, e1;
    __device__ __forceinline__ SliceRange(const BatchNormParams& p, int slice_len) {
        s = blockIdx.x;
        c = blockIdx.y;
        e0 = s * slice_len;
        e1 = min(e0 + slice_len, p.n * p.hw);
    }
};

// Partial statistics of a range: its mean and the sum of squared deviations from it,
// two passes over values the block has just read (so from cache the second time), rather
// than sum(x^2) - n mean^2, which loses everything to cancellation when |mean| >> std.
// part[2 (c slices + s)] = mean, part[2 (c slices + s) + 1] = m2.
extern "C" __global__ void __launch_bounds__(REDUCE_THREADS)
batchnorm2d_forward_train_partial_stats_f32(BatchNormParams p, int slice_len, const float* __restrict__ x, float* __restrict__ part) {
    DYNAMIC_SHARED(float, scratch);
    const SliceRange r(p, slice_len);
    float s = 0.0f;
    channel_range_for_each(p, r.c, r.e0, r.e1, [&](long long i) { s += x[i]; });
    const float mu = block_sum(s, scratch) / (float)(r.e1 - r.e0);
    float sq = 0.0f;
    channel_range_for_each(p, r.c, r.e0, r.e1, [&](long long i) {
        const float d = x[i] - mu;
        sq += d * d;
    });
    const float m2 = block_sum(sq, scratch);
    if (threadIdx.x == 0) {
        const long long at = 2 * ((long long)r.c * gridDim.x + r.s);
        part[at] = mu;
        part[at + 1] = m2;
    }
}

// (n, mean, m2) of a set of values, and of the union of two disjoint sets (Chan, Golub and
// LeVeque's pairwise update).
struct Moments {
    float n, mean, m2;
};
__device__ __forceinline__ Moments merge_moments(const Moments& a, const Moments& b) {
    const float n = a.n + b.n;
    if (n == 0.0f) return a;
    const float d = b.mean - a.mean, fb = b.n / n;
    return Moments{n, a.mean + d * fb, a.m2 + b.m2 + d * d * a.n * fb};
}

// Warp (threadIdx.x / 32) of the block and its channel: one warp per channel.
__device__ __forceinline__ int warp_channel() {
    return blockIdx.x * (blockDim.x / WARP) + threadIdx.x / WARP;
}

// Combines the slices of each channel: lane l takes slices l, l + 32, ... in order, then
// the lanes combine pairwise (lane l with l ^ 16, then ^ 8, ...), always lower lane first,
// so both lanes of a pair compute the same value and every lane ends with the total.
// Writes the batch statistics and updates the running ones.
extern "C" __global__ void __launch_bounds__(REDUCE_THREADS)
batchnorm2d_forward_train_stats_f32(BatchNormParams p, int slice_len, int slices, const float* __restrict__ part,
                              float* __restrict__ running_mean, float* __restrict__ running_var,
                              float* __restrict__ mean, float* __restrict__ invstd) {
    const int c = warp_channel(), lane = threadIdx.x % WARP;
    if (c >= p.c) return;  // the whole warp: one channel per warp
    const int count = p.n * p.hw;
    Moments m{0.0f, 0.0f, 0.0f};
    for (int s = lane; s < slices; s += WARP) {
        const long long at = 2 * ((long long)c * slices + s);
        m = merge_moments(m, Moments{(float)min(slice_len, count - s * slice_len), part[at], part[at + 1]});
    }
    for (int off = WARP / 2; off > 0; off >>= 1) {
        const Moments o{__shfl_xor_sync(0xffffffffu, m.n, off), __shfl_xor_sync(0xffffffffu, m.mean, off),
                        __shfl_xor_sync(0xffffffffu, m.m2, off)};
        m = (lane & off) ? merge_moments(o, m) : merge_moments(m, o);
    }
    if (lane == 0) {
        const float var = m.m2 / (float)count;
        const float unbiased = count > 1 ? m.m2 / (float)(count - 1) : var;
        mean[c] = m.mean;
        invstd[c] = rsqrtf(var + p.eps);
        running_mean[c] = (1.0f - p.momentum) * running_mean[c] + p.momentum * m.mean;
        running_var[c] = (1.0f - p.momentum) * running_var[c] + p.momentum * unbiased;
    }
}

// y = act(gamma (x - mean) invstd + beta) over one slice of one channel.
extern "C" __global__ void __launch_bounds__(REDUCE_THREADS)
batchnorm2d_forward_train_f32(BatchNormParams p, int slice_len, const float* __restrict__ x, const float* __restrict__ gamma,
                          const float* __restrict__ beta, const float* __restrict__ mean,
                          const float* __restrict__ invstd, float* __restrict__ y) {
    const SliceRange r(p, slice_len);
    const float scale = gamma[r.c] * invstd[r.c], shift = beta[r.c] - mean[r.c] * scale;
    channel_range_for_each(p, r.c, r.e0, r.e1, [&](long long i) { y[i] = bn_act(p, fmaf(x[i], scale, shift)); });
}

// Inference: elementwise with the running statistics; one thread per value.
extern "C" __global__ void __launch_bounds__(ELEM_THREADS)
batchnorm2d_forward_infer_f32(BatchNormParams p, const float* __restrict__ x, const float* __restrict__ gamma,
                              const float* __restrict__ beta, const float* __restrict__ running_mean,
                              const float* __restrict__ running_var, float* __restrict__ y) {
    const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (long long)p.n * p.c * p.hw) return;
    const int c = (int)((i / p.hw) % p.c);
    const float scale = gamma[c] * rsqrtf(running_var[c] + p.eps);
    y[i] = bn_act(p, (x[i] - running_mean[c]) * scale + beta[c]);
}

// Partial sums over one slice of g = dy act'(y) and of g xhat: part[2 (c slices + s)] and
// part[2 (c slices + s) + 1].
extern "C" __global__ void __launch_bounds__(REDUCE_THREADS)
batchnorm2d_backward_partial_sums_f32(BatchNormParams p, int slice_len, const float* __restrict__ x, const float* __restrict__ y,
                          const float* __restrict__ dy, const float* __restrict__ mean,
                          const float* __restrict__ invstd, float* __restrict__ part) {
    DYNAMIC_SHARED(float, scratch);
    const SliceRange r(p, slice_len);
    const float mu = mean[r.c], is = invstd[r.c];
    float a = 0.0f, b = 0.0f;
    channel_range_for_each(p, r.c, r.e0, r.e1, [&](long long i) {
        const float g = bn_pre_grad(p, y, i, dy[i]);
        a += g;
        b += g * (x[i] - mu) * is;
    });
    a = block_sum(a, scratch);
    b = block_sum(b, scratch);
    if (threadIdx.x == 0) {
        const long long at = 2 * ((long long)r.c * gridDim.x + r.s);
        part[at] = a;
        part[at + 1] = b;
    }
}

// Adds each channel's slice sums in a fixed order (lane l takes slices l, l + 32, ...,
// then a warp sum): sums[c] = sum g, sums[C + c] = sum g xhat. These are also the
// parameter gradients, which batchnorm2d_backward_params adds.
extern "C" __global__ void __launch_bounds__(REDUCE_THREADS)
batchnorm2d_backward_sums_f32(BatchNormParams p, int slices, const float* __restrict__ part, float* __restrict__ sums) {
    const int c = warp_channel(), lane = threadIdx.x % WARP;
    if (c >= p.c) return;  // the whole warp
    float a = 0.0f, b = 0.0f;
    for (int s = lane; s < slices; s += WARP) {
        const long long at = 2 * ((long long)c * slices + s);
        a += part[at];
        b += part[at + 1];
    }
    a = warp_sum(a);
    b = warp_sum(b);
    if (lane == 0) {
        sums[c] = a;
        sums[p.c + c] = b;
    }
}

// dx = gamma invstd (g - mean(g) - xhat mean(g xhat)) over one slice of one channel.
extern "C" __global__ void __launch_bounds__(REDUCE_THREADS)
batchnorm2d_backward_input_f32(BatchNormParams p, int slice_len, const float* __restrict__ x, const float* __restrict__ y,
                               const float* __restrict__ dy, const float* __restrict__ gamma,
                               const float* __restrict__ mean, const float* __restrict__ invstd,
                               const float* __restrict__ sums, float* __restrict__ dx) {
    const SliceRange r(p, slice_len);
    const float count = (float)(p.n * p.hw);
    const float mu = mean[r.c], is = invstd[r.c];
    const float mg = sums[r.c] / count, mgx = sums[p.c + r.c] / count;
    const float k = gamma[r.c] * is;
    channel_range_for_each(p, r.c, r.e0, r.e1, [&](long long i) {
        const float xhat = (x[i] - mu) * is;
        dx[i] = k * (bn_pre_grad(p, y, i, dy[i]) - mg - xhat * mgx);
    });
}

// dgamma[c] += sums[C + c], dbeta[c] += sums[c]: the sums batchnorm2d_backward_input wrote.
extern "C" __global__ void __launch_bounds__(ELEM_THREADS)
batchnorm2d_backward_params_f32(BatchNormParams p, const float* __restrict__ sums, float* __restrict__ dgamma,
                                float* __restrict__ dbeta) {
    const int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= p.c) return;
    dbeta[c] += sums[c];
    dgamma[c] += sums[p.c + c];
}
