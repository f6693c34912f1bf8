// linear (PyTorch layout: w[out, in]) on the tiled GEMM of gemm.cuh.
// grid.x over column tiles, grid.y over row tiles, GEMM_THREADS threads.
#include "common.cuh"
#include "gemm.cuh"

// y[n, o] = sum_i x[n, i] w[o, i] + b[o]
extern "C" __global__ void __launch_bounds__(GEMM_THREADS)
linear_forward_f32(LinearParams p, const float* __restrict__ x, const float* __restrict__ w, const float* __restrict__ b,
                   float* __restrict__ y) {
    const int M = p.n, N = p.out_features, K = p.in_features;
    const int m0 = blockIdx.y * GEMM_BM, n0 = blockIdx.x * GEMM_BN;
    const AlongRows load_a{x, K};
    const AlongRows load_b{w, K};  // column c of B is row c of w
    float acc[GEMM_TM][GEMM_TN];
    gemm_block_tile(m0, n0, M, N, 0, K, load_a, load_b, acc);
    gemm_store(m0, n0, M, N, acc, [&](int m, int c, float v) { y[m * N + c] = v + (b ? b[c] : 0.0f); });
}

// dx[n, i] = sum_o dy[n, o] w[o, i]
extern "C" __global__ void __launch_bounds__(GEMM_THREADS)
linear_backward_input_f32(LinearParams p, const float* __restrict__ dy, const float* __restrict__ w, float* __restrict__ dx) {
    const int M = p.n, N = p.in_features, K = p.out_features;
    const int m0 = blockIdx.y * GEMM_BM, n0 = blockIdx.x * GEMM_BN;
    const AlongRows load_a{dy, K};
    const DownColumns load_b{w, N};
    float acc[GEMM_TM][GEMM_TN];
    gemm_block_tile(m0, n0, M, N, 0, K, load_a, load_b, acc);
    gemm_store(m0, n0, M, N, acc, [&](int m, int c, float v) { dx[m * N + c] = v; });
}

// dw[o, i] += sum_n dy[n, o] x[n, i]. The reduction runs over the batch only, so one
// block owns each output tile and adds into it: deterministic without a split.
extern "C" __global__ void __launch_bounds__(GEMM_THREADS)
linear_backward_params_f32(LinearParams p, const float* __restrict__ x, const float* __restrict__ dy, float* __restrict__ dw) {
    const int M = p.out_features, N = p.in_features, K = p.n;
    const int m0 = blockIdx.y * GEMM_BM, n0 = blockIdx.x * GEMM_BN;
    const DownColumns load_a{dy, M};
    const DownColumns load_b{x, N};
    float acc[GEMM_TM][GEMM_TN];
    gemm_block_tile(m0, n0, M, N, 0, K, load_a, load_b, acc);
    gemm_store(m0, n0, M, N, acc, [&](int m, int c, float v) { dw[m * N + c] += v; });
}
