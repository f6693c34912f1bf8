// The one shared-memory tiled GEMM every convolution and linear kernel is built on.
//
// C[m, col] = sum_k A(m, k) * B(k, col) over k in [k_begin, k_end). A and B are functors
// that compute an element from its coordinates: this is where the implicit GEMM happens,
// the convolution window (or the parity-class gather of a transposed convolution) is read
// straight from the NCHW tensors into shared memory, and nothing like an im2col matrix
// ever exists in global memory. Out-of-range coordinates load zero.
//
// Block: GEMM_THREADS threads, a GEMM_BM x GEMM_BN tile of C, each thread a TM x TN
// register tile at rows ty + 16 i and columns tx + 16 j (so a warp reads 16 consecutive
// B values per step and two broadcast A values: no bank conflicts).
#pragma once
#include "common.cuh"

template <class LoadA, class LoadB>
__device__ __forceinline__ void gemm_block_tile(int m0, int n0, int M, int N, int k_begin, int k_end, const LoadA& load_a,
                                                const LoadB& load_b, float (&acc)[GEMM_TM][GEMM_TN]) {
    __shared__ float As[GEMM_BK][GEMM_BM];
    __shared__ float Bs[GEMM_BK][GEMM_BN];
    const int tid = threadIdx.x;
    const int tx = tid % 16, ty = tid / 16;
#pragma unroll
    for (int i = 0; i < GEMM_TM; ++i)
#pragma unroll
        for (int j = 0; j < GEMM_TN; ++j) acc[i][j] = 0.0f;

    for (int k0 = k_begin; k0 < k_end; k0 += GEMM_BK) {
        // A tile: k fastest (weights and NCHW activations are contiguous along k for most
        // callers). B tile: columns fastest (output pixels are contiguous).
#pragma unroll
        for (int r = 0; r < (GEMM_BM * GEMM_BK) / GEMM_THREADS; ++r) {
            const int e = tid + r * GEMM_THREADS;
            const int kk = e % GEMM_BK, mm = e / GEMM_BK;
            const int m = m0 + mm, k = k0 + kk;
            As[kk][mm] = (m < M && k < k_end) ? load_a(m, k) : 0.0f;
        }
#pragma unroll
        for (int r = 0; r < (GEMM_BN * GEMM_BK) / GEMM_THREADS; ++r) {
            const int e = tid + r * GEMM_THREADS;
            const int cc = e % GEMM_BN, kk = e / GEMM_BN;
            const int c = n0 + cc, k = k0 + kk;
            Bs[kk][cc] = (c < N && k < k_end) ? load_b(k, c) : 0.0f;
        }
        __syncthreads();
#pragma unroll
        for (int kk = 0; kk < GEMM_BK; ++kk) {
            float a[GEMM_TM], b[GEMM_TN];
#pragma unroll
            for (int i = 0; i < GEMM_TM; ++i) a[i] = As[kk][ty + 16 * i];
#pragma unroll
            for (int j = 0; j < GEMM_TN; ++j) b[j] = Bs[kk][tx + 16 * j];
#pragma unroll
            for (int i = 0; i < GEMM_TM; ++i)
#pragma unroll
                for (int j = 0; j < GEMM_TN; ++j) acc[i][j] = fmaf(a[i], b[j], acc[i][j]);
        }
        __syncthreads();
    }
}

// Row and column of C owned by register (i, j) of this thread.
__device__ __forceinline__ int gemm_row(int m0, int i) { return m0 + (int)(threadIdx.x / 16) + 16 * i; }
__device__ __forceinline__ int gemm_col(int n0, int j) { return n0 + (int)(threadIdx.x % 16) + 16 * j; }

// The convolution window seen as a matrix: row r = (c, ky, kx), column = (n, oy, ox) over
// a grid_h x grid_w grid of window positions; the value is src[n, c, oy*s - p + ky,
// ox*s - p + kx], zero outside the plane. Used by every pass that slides a window over a
// tensor: conv2d forward and weight gradient, conv_transpose2d input and weight gradient.
struct WindowGather {
    const float* src;
    int c, h, w, k, stride, pad, grid_h, grid_w;
    __device__ __forceinline__ float operator()(int r, int col) const {
        const int kx = r % k, ky = (r / k) % k, ch = r / (k * k);
        const int ox = col % grid_w, oy = (col / grid_w) % grid_h, n = col / (grid_w * grid_h);
        const int iy = oy * stride - pad + ky, ix = ox * stride - pad + kx;
        if (iy < 0 || iy >= h || ix < 0 || ix >= w) return 0.0f;
        return src[((n * c + ch) * h + iy) * w + ix];
    }
};

// The transposed direction, split by output parity so no zero is ever multiplied: for an
// output row oy of class py = oy mod s, only taps ky = (py + p) mod s + s * jy reach an input
// row, iy = (oy + p - ky) / s. A stride-2 4x4 kernel becomes four stride-1 2x2 convolutions.
// Rows r = (c, jy, jx) with jy, jx < taps = ceil(k / s); columns = (n, qy, qx) over the
// class grid, oy = py + s * qy.
struct ParityClass {
    int py, px, ry, rx, qh, qw, taps;
    __device__ __forceinline__ ParityClass(int cls, int stride, int pad, int k, int out_h, int out_w) {
        py = cls / stride;
        px = cls % stride;
        ry = (py + pad) % stride;
        rx = (px + pad) % stride;
        qh = out_h > py ? (out_h - py + stride - 1) / stride : 0;
        qw = out_w > px ? (out_w - px + stride - 1) / stride : 0;
        taps = (k + stride - 1) / stride;
    }
};

struct ParityGather {
    const float* src;
    int c, h, w, k, stride, pad;
    ParityClass pc;
    __device__ __forceinline__ float operator()(int r, int col) const {
        const int jx = r % pc.taps, jy = (r / pc.taps) % pc.taps, ch = r / (pc.taps * pc.taps);
        const int ky = pc.ry + stride * jy, kx = pc.rx + stride * jx;
        if (ky >= k || kx >= k) return 0.0f;
        const int qx = col % pc.qw, qy = (col / pc.qw) % pc.qh, n = col / (pc.qw * pc.qh);
        const int oy = pc.py + stride * qy, ox = pc.px + stride * qx;
        const int ny = oy + pad - ky, nx = ox + pad - kx;  // multiples of stride by construction
        if (ny < 0 || nx < 0) return 0.0f;
        const int iy = ny / stride, ix = nx / stride;
        if (iy >= h || ix >= w) return 0.0f;
        return src[((n * c + ch) * h + iy) * w + ix];
    }
};
