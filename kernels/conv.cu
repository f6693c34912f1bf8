// conv2d and conv_transpose2d, all three passes, as implicit GEMMs on gemm.cuh.
//
// Launch shapes (src/backend/cuda/launch.rs): GEMM_THREADS threads per block; grid.x over
// column tiles, grid.y over row tiles, grid.z over parity classes (gathers in the
// transposed direction) or over split-K slices (weight gradients).
//
// Weight gradients reduce over n x pixels, which is long; they are split into grid.z
// slices of `k_chunk` that each write their own partial buffer (`=`), added in a fixed
// order by gemm_splitk_reduce_f32 into the gradient (`+=`). With one slice the kernel adds
// into the gradient directly (`accumulate = 1`). No float atomics: results depend only on
// the launch shape.
#include "common.cuh"
#include "gemm.cuh"

// The weight-gradient epilogue: add into the gradient (one slice) or write this slice's
// partial buffer.
__device__ __forceinline__ void store_weight_grad(int m0, int n0, int M, int N, const float (&acc)[GEMM_TM][GEMM_TN],
                                                  float* __restrict__ out, int accumulate) {
    float* dst = out + (accumulate ? 0 : (long long)blockIdx.z * M * N);
    gemm_store(m0, n0, M, N, acc, [&](int m, int col, float v) {
        float* o = dst + m * N + col;
        *o = accumulate ? *o + v : v;
    });
}

// A parity-split pass with at most THIN_M rows (gemm_thin_column), one thread per column:
// out[n, m, o] (+ bias[m]) over the `rows` channels of `out` (out_h x out_w planes), reducing
// over the `src_c` channels of `src` (src_h x src_w planes) and the taps of o's parity
// class, with the weight read as ParityWeights. conv2d's input gradient and
// conv_transpose2d's forward pass.
__device__ __forceinline__ void thin_parity_pass(const ConvParams& p, int rows, int src_c, int src_h, int src_w, int out_h,
                                                 int out_w, const float* __restrict__ src, const float* __restrict__ w,
                                                 const float* __restrict__ bias, float* __restrict__ out) {
    const ParityClass pc(blockIdx.z, p.stride, p.pad, p.k, out_h, out_w);
    const int N = p.n * pc.qh * pc.qw, K = src_c * pc.taps * pc.taps;
    const ParityWeights load_a{w, rows, p.k, p.stride, pc};
    const ParityColumns load_b{src, src_c, src_h, src_w, p.k, p.stride, p.pad, pc};
    const int col = blockIdx.x * blockDim.x + threadIdx.x;
    float acc[THIN_M];
    if (!gemm_thin_column(col, rows, N, K, load_a, load_b, acc)) return;
    const int P = out_h * out_w;
    float* o = out + (long long)pc.image(col) * rows * P + pc.offset(col, out_w);
#pragma unroll
    for (int m = 0; m < THIN_M; ++m)
        if (m < rows) o[m * P] = acc[m] + (bias ? bias[m] : 0.0f);
}

// ---- conv2d -----------------------------------------------------------------------------

// y[n, co, oy, ox] = sum_{ci, ky, kx} w[co, ci, ky, kx] x[n, ci, oy s - p + ky, ox s - p + kx] + bias[co]
// A layer with few output tiles and a long reduction (the discriminator's 4x4 -> 1x1 head:
// one tile, K = 16384) is split like a weight gradient: grid.z slices of `k_chunk`, each
// writing its own copy of y into `out` (slice 0 adds the bias), added in order afterwards
// by gemm_splitk_reduce_f32. With one slice `out` is y.
extern "C" __global__ void __launch_bounds__(GEMM_THREADS)
conv2d_forward_f32(ConvParams p, const float* __restrict__ x, const float* __restrict__ w, const float* __restrict__ bias,
                   float* __restrict__ out, int k_chunk) {
    const int M = p.c_out, P = p.h_out * p.w_out, N = p.n * P, K = p.c_in * p.k * p.k;
    const int m0 = blockIdx.y * GEMM_BM, n0 = blockIdx.x * GEMM_BN;
    const int k_begin = blockIdx.z * k_chunk, k_end = min(K, k_begin + k_chunk);
    const AlongRows load_a{w, K};
    const WindowColumns load_b{x, p.c_in, p.h_in, p.w_in, p.k, p.stride, p.pad, p.h_out, p.w_out};
    float acc[GEMM_TM][GEMM_TN];
    gemm_block_tile(m0, n0, M, N, k_begin, k_end, load_a, load_b, acc);
    float* y = out + (long long)blockIdx.z * M * N;
    const bool add_bias = bias && blockIdx.z == 0;
    gemm_store(m0, n0, M, N, acc, [&](int m, int col, float v) {
        const int n = col / P, q = col % P;
        y[(n * M + m) * P + q] = v + (add_bias ? bias[m] : 0.0f);
    });
}

// dx[n, ci, iy, ix] = sum over (co, ky, kx) with iy = oy s - p + ky of w[co, ci, ky, kx] dy[n, co, oy, ox]
// grid.z = parity class of (iy, ix).
extern "C" __global__ void __launch_bounds__(GEMM_THREADS)
conv2d_backward_input_f32(ConvParams p, const float* __restrict__ dy, const float* __restrict__ w, float* __restrict__ dx) {
    const ParityClass pc(blockIdx.z, p.stride, p.pad, p.k, p.h_in, p.w_in);
    const int M = p.c_in, N = p.n * pc.qh * pc.qw, K = p.c_out * pc.taps * pc.taps;
    const int m0 = blockIdx.y * GEMM_BM, n0 = blockIdx.x * GEMM_BN;
    if (n0 >= N) return;  // this class is smaller than the largest one: the whole block leaves
    const ParityWeights load_a{w, p.c_in, p.k, p.stride, pc};  // w[co, ci, ky, kx], row ci
    const ParityColumns load_b{dy, p.c_out, p.h_out, p.w_out, p.k, p.stride, p.pad, pc};
    float acc[GEMM_TM][GEMM_TN];
    gemm_block_tile(m0, n0, M, N, 0, K, load_a, load_b, acc);
    const int P = p.h_in * p.w_in;
    gemm_store(m0, n0, M, N, acc, [&](int m, int col, float v) { dx[(pc.image(col) * M + m) * P + pc.offset(col, p.w_in)] = v; });
}

// The same with at most THIN_M input channels: one thread per column (thin_parity_pass).
extern "C" __global__ void __launch_bounds__(THIN_THREADS)
conv2d_backward_input_thin_f32(ConvParams p, const float* __restrict__ dy, const float* __restrict__ w, float* __restrict__ dx) {
    thin_parity_pass(p, p.c_in, p.c_out, p.h_out, p.w_out, p.h_in, p.w_in, dy, w, nullptr, dx);
}

// dw[co, (ci, ky, kx)] (+)= sum over (n, oy, ox) in this slice of dy[n, co, oy, ox] x[n, ci, oy s - p + ky, ox s - p + kx]
// grid.z = split-K slice; out is the gradient itself (accumulate = 1) or partial buffer z.
extern "C" __global__ void __launch_bounds__(GEMM_THREADS)
conv2d_backward_params_f32(ConvParams p, const float* __restrict__ x, const float* __restrict__ dy, float* __restrict__ out,
                           int k_chunk, int accumulate) {
    const int M = p.c_out, N = p.c_in * p.k * p.k, P = p.h_out * p.w_out, K = p.n * P;
    const int m0 = blockIdx.y * GEMM_BM, n0 = blockIdx.x * GEMM_BN;
    const int k_begin = blockIdx.z * k_chunk, k_end = min(K, k_begin + k_chunk);
    const ChannelOverBatch load_a{dy, M, P};
    const WindowRows load_b{x, p.c_in, p.h_in, p.w_in, p.k, p.stride, p.pad, p.h_out, p.w_out};
    float acc[GEMM_TM][GEMM_TN];
    gemm_block_tile(m0, n0, M, N, k_begin, k_end, load_a, load_b, acc);
    store_weight_grad(m0, n0, M, N, acc, out, accumulate);
}

// ---- conv_transpose2d -------------------------------------------------------------------

// y[n, co, oy, ox] = sum over (ci, ky, kx) with oy = iy s - p + ky of w[ci, co, ky, kx] x[n, ci, iy, ix] + bias[co]
// grid.z = parity class of (oy, ox).
extern "C" __global__ void __launch_bounds__(GEMM_THREADS)
conv_transpose2d_forward_f32(ConvParams p, const float* __restrict__ x, const float* __restrict__ w,
                             const float* __restrict__ bias, float* __restrict__ y) {
    const ParityClass pc(blockIdx.z, p.stride, p.pad, p.k, p.h_out, p.w_out);
    const int M = p.c_out, N = p.n * pc.qh * pc.qw, K = p.c_in * pc.taps * pc.taps;
    const int m0 = blockIdx.y * GEMM_BM, n0 = blockIdx.x * GEMM_BN;
    if (n0 >= N) return;  // this class is smaller than the largest one: the whole block leaves
    const ParityWeights load_a{w, p.c_out, p.k, p.stride, pc};  // w[ci, co, ky, kx], row co
    const ParityColumns load_b{x, p.c_in, p.h_in, p.w_in, p.k, p.stride, p.pad, pc};
    float acc[GEMM_TM][GEMM_TN];
    gemm_block_tile(m0, n0, M, N, 0, K, load_a, load_b, acc);
    const int P = p.h_out * p.w_out;
    gemm_store(m0, n0, M, N, acc, [&](int m, int col, float v) {
        y[(pc.image(col) * M + m) * P + pc.offset(col, p.w_out)] = v + (bias ? bias[m] : 0.0f);
    });
}

// The same with at most THIN_M output channels: one thread per column (thin_parity_pass).
extern "C" __global__ void __launch_bounds__(THIN_THREADS)
conv_transpose2d_forward_thin_f32(ConvParams p, const float* __restrict__ x, const float* __restrict__ w,
                                  const float* __restrict__ bias, float* __restrict__ y) {
    thin_parity_pass(p, p.c_out, p.c_in, p.h_in, p.w_in, p.h_out, p.w_out, x, w, bias, y);
}

// dx[n, ci, iy, ix] = sum_{co, ky, kx} w[ci, co, ky, kx] dy[n, co, iy s - p + ky, ix s - p + kx]
// (a conv2d of dy with the weight read as [c_in, c_out k k]).
extern "C" __global__ void __launch_bounds__(GEMM_THREADS)
conv_transpose2d_backward_input_f32(ConvParams p, const float* __restrict__ dy, const float* __restrict__ w,
                                    float* __restrict__ dx) {
    const int M = p.c_in, P = p.h_in * p.w_in, N = p.n * P, K = p.c_out * p.k * p.k;
    const int m0 = blockIdx.y * GEMM_BM, n0 = blockIdx.x * GEMM_BN;
    const AlongRows load_a{w, K};
    const WindowColumns load_b{dy, p.c_out, p.h_out, p.w_out, p.k, p.stride, p.pad, p.h_in, p.w_in};
    float acc[GEMM_TM][GEMM_TN];
    gemm_block_tile(m0, n0, M, N, 0, K, load_a, load_b, acc);
    gemm_store(m0, n0, M, N, acc, [&](int m, int col, float v) {
        const int n = col / P, q = col % P;
        dx[(n * M + m) * P + q] = v;
    });
}

// dw[ci, (co, ky, kx)] (+)= sum over (n, iy, ix) in this slice of x[n, ci, iy, ix] dy[n, co, iy s - p + ky, ix s - p + kx]
extern "C" __global__ void __launch_bounds__(GEMM_THREADS)
conv_transpose2d_backward_params_f32(ConvParams p, const float* __restrict__ x, const float* __restrict__ dy,
                                     float* __restrict__ out, int k_chunk, int accumulate) {
    const int M = p.c_in, N = p.c_out * p.k * p.k, P = p.h_in * p.w_in, K = p.n * P;
    const int m0 = blockIdx.y * GEMM_BM, n0 = blockIdx.x * GEMM_BN;
    const int k_begin = blockIdx.z * k_chunk, k_end = min(K, k_begin + k_chunk);
    const ChannelOverBatch load_a{x, M, P};
    const WindowRows load_b{dy, p.c_out, p.h_out, p.w_out, p.k, p.stride, p.pad, p.h_in, p.w_in};
    float acc[GEMM_TM][GEMM_TN];
    gemm_block_tile(m0, n0, M, N, k_begin, k_end, load_a, load_b, acc);
    store_weight_grad(m0, n0, M, N, acc, out, accumulate);
}

// ---- shared by the weight gradients -----------------------------------------------------

// grad[i] += partial[0][i] + partial[1][i] + ... in slice order (deterministic split-K).
extern "C" __global__ void __launch_bounds__(ELEM_THREADS)
gemm_splitk_reduce_f32(SplitParams p, const float* __restrict__ partial, float* __restrict__ grad) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= p.len) return;
    float s = 0.0f;
    for (int z = 0; z < p.splits; ++z) s += partial[(long long)z * p.len + i];
    grad[i] += s;
}

// db[c] += sum over n and the grid of dy[n, c, q]: the bias gradient of conv2d,
// conv_transpose2d and linear (hw = 1). One block per channel, deterministic.
extern "C" __global__ void __launch_bounds__(REDUCE_THREADS)
bias_backward_params_f32(BatchNormParams p, const float* __restrict__ dy, float* __restrict__ db) {
    DYNAMIC_SHARED(float, scratch);
    const int c = blockIdx.x;
    float s = 0.0f;
    channel_for_each(p, c, [&](long long i) { s += dy[i]; });
    s = block_sum(s, scratch);
    if (threadIdx.x == 0) db[c] += s;
}
