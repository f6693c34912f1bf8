// The one shared-memory tiled GEMM every convolution and linear kernel is built on.
//
// C[m, col] = sum_k A(m, k) * B(k, col) over k in [k_begin, k_end). A and B are loaders
// that compute an element from its coordinates: this is where the implicit GEMM happens,
// the convolution window (or the parity-class gather of a transposed convolution) is read
// straight from the NCHW tensors into shared memory, and nothing like an im2col matrix
// ever exists in global memory. Out-of-range coordinates load zero.
//
// A loader has `Line line(int i)`, the part of the address that depends only on the row
// of A (or the column of B), and `float at(const Line&, int k)`. Each thread loads the
// same rows of A and the same column of B at every step of k, so the lines are computed
// once per block and only the k-dependent part of the indexing runs in the loop.
//
// Block: GEMM_THREADS threads, a GEMM_BM x GEMM_BN tile of C, each thread a TM x TN
// register tile at rows ty + 16 i and columns tx + 16 j (so a warp reads 16 consecutive
// B values per step and two broadcast A values: no bank conflicts).
#pragma once
#include "common.cuh"

#define GEMM_A_LOADS ((GEMM_BM * GEMM_BK) / GEMM_THREADS)
#define GEMM_B_LOADS ((GEMM_BN * GEMM_BK) / GEMM_THREADS)

template <class LoadA, class LoadB>
__device__ __forceinline__ void gemm_block_tile(int m0, int n0, int M, int N, int k_begin, int k_end, const LoadA& load_a,
                                                const LoadB& load_b, float (&acc)[GEMM_TM][GEMM_TN]) {
    static_assert(GEMM_THREADS % GEMM_BK == 0 && GEMM_THREADS % GEMM_BN == 0, "loader layout");
    __shared__ float As[GEMM_BK][GEMM_BM];
    __shared__ float Bs[GEMM_BK][GEMM_BN];
    const int tid = threadIdx.x;
    const int tx = tid % 16, ty = tid / 16;
#pragma unroll
    for (int i = 0; i < GEMM_TM; ++i)
#pragma unroll
        for (int j = 0; j < GEMM_TN; ++j) acc[i][j] = 0.0f;

    // This thread's A rows (k fastest: weights and NCHW activations are contiguous along
    // k for most callers) and B column (columns fastest: output pixels are contiguous).
    const int a_k = tid % GEMM_BK, a_m = tid / GEMM_BK;
    typename LoadA::Line a_line[GEMM_A_LOADS];
    bool a_ok[GEMM_A_LOADS];
#pragma unroll
    for (int r = 0; r < GEMM_A_LOADS; ++r) {
        const int m = m0 + a_m + r * (GEMM_THREADS / GEMM_BK);
        a_ok[r] = m < M;
        a_line[r] = load_a.line(a_ok[r] ? m : m0);
    }
    const int b_c = tid % GEMM_BN, b_k = tid / GEMM_BN;
    const bool b_ok = n0 + b_c < N;
    const typename LoadB::Line b_line = load_b.line(b_ok ? n0 + b_c : n0);

    for (int k0 = k_begin; k0 < k_end; k0 += GEMM_BK) {
#pragma unroll
        for (int r = 0; r < GEMM_A_LOADS; ++r) {
            const int k = k0 + a_k;
            As[a_k][a_m + r * (GEMM_THREADS / GEMM_BK)] = (a_ok[r] && k < k_end) ? load_a.at(a_line[r], k) : 0.0f;
        }
#pragma unroll
        for (int r = 0; r < GEMM_B_LOADS; ++r) {
            const int kk = b_k + r * (GEMM_THREADS / GEMM_BN), k = k0 + kk;
            Bs[kk][b_c] = (b_ok && k < k_end) ? load_b.at(b_line, k) : 0.0f;
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

// Hands each in-range accumulator of this thread to `store(row, col, value)`: the one
// epilogue loop every GEMM kernel shares; the kernels differ only in where a value goes.
template <class Store>
__device__ __forceinline__ void gemm_store(int m0, int n0, int M, int N, const float (&acc)[GEMM_TM][GEMM_TN],
                                           const Store& store) {
#pragma unroll
    for (int i = 0; i < GEMM_TM; ++i) {
        const int m = gemm_row(m0, i);
        if (m >= M) continue;
#pragma unroll
        for (int j = 0; j < GEMM_TN; ++j) {
            const int col = gemm_col(n0, j);
            if (col < N) store(m, col, acc[i][j]);
        }
    }
}

// Element (i, k) at p[i * ld + k]: a row-major matrix read along its rows.
struct AlongRows {
    const float* p;
    int ld;
    typedef const float* Line;
    __device__ __forceinline__ Line line(int i) const { return p + (long long)i * ld; }
    __device__ __forceinline__ float at(const Line& l, int k) const { return l[k]; }
};

// Element (i, k) at p[k * ld + i]: a row-major matrix read down its columns.
struct DownColumns {
    const float* p;
    int ld;
    typedef const float* Line;
    __device__ __forceinline__ Line line(int i) const { return p + i; }
    __device__ __forceinline__ float at(const Line& l, int k) const { return l[(long long)k * ld]; }
};

// Element (channel i, k = (n, q)) of an NCHW tensor with `c` channels and `plane` values
// per channel: the activations of a weight gradient, reduced over batch and pixels.
struct ChannelOverBatch {
    const float* p;
    int c, plane;
    typedef const float* Line;
    __device__ __forceinline__ Line line(int i) const { return p + (long long)i * plane; }
    __device__ __forceinline__ float at(const Line& l, int k) const {
        return l[(long long)(k / plane) * c * plane + k % plane];
    }
};

// The convolution window of a forward-direction pass: row r = (ch, ky, kx), column =
// (n, oy, ox) over a grid_h x grid_w grid of window positions; the value is
// src[n, ch, oy*s - p + ky, ox*s - p + kx], zero outside the plane. Used by conv2d forward
// and conv_transpose2d backward_input (as B, one column per thread).
struct WindowColumns {
    const float* src;
    int c, h, w, k, stride, pad, grid_h, grid_w;
    struct Line {
        const float* img;
        int iy0, ix0;
    };
    __device__ __forceinline__ Line line(int col) const {
        const int ox = col % grid_w, oy = (col / grid_w) % grid_h, n = col / (grid_w * grid_h);
        return Line{src + (long long)n * c * h * w, oy * stride - pad, ox * stride - pad};
    }
    __device__ __forceinline__ float at(const Line& l, int r) const {
        const int kx = r % k, t = r / k;
        const int ky = t % k, ch = t / k;
        const int iy = l.iy0 + ky, ix = l.ix0 + kx;
        if (iy < 0 || iy >= h || ix < 0 || ix >= w) return 0.0f;
        return l.img[((long long)ch * h + iy) * w + ix];
    }
};

// The same window seen from the other side, for the weight gradients: the line is the
// window row r = (ch, ky, kx) (one per thread), k = (n, oy, ox) runs over batch and grid.
struct WindowRows {
    const float* src;
    int c, h, w, k, stride, pad, grid_h, grid_w;
    struct Line {
        const float* plane;
        int dy, dx;  // ky - pad, kx - pad
    };
    __device__ __forceinline__ Line line(int r) const {
        const int kx = r % k, ky = (r / k) % k, ch = r / (k * k);
        return Line{src + (long long)ch * h * w, ky - pad, kx - pad};
    }
    __device__ __forceinline__ float at(const Line& l, int kk) const {
        const int grid = grid_h * grid_w;
        const int n = kk / grid, q = kk % grid;
        const int iy = (q / grid_w) * stride + l.dy, ix = (q % grid_w) * stride + l.dx;
        if (iy < 0 || iy >= h || ix < 0 || ix >= w) return 0.0f;
        return l.plane[(long long)n * c * h * w + iy * w + ix];
    }
};

// The transposed direction, split by output parity so no zero is ever multiplied: for an
// output row oy of class py = oy mod s, only taps ky = (py + p) mod s + s * jy reach an input
// row, iy = (oy + p - ky) / s. A stride-2 4x4 kernel becomes four stride-1 2x2 convolutions.
// Rows r = (c, jy, jx) with jy, jx < taps = ceil(k / s); columns = (n, qy, qx) over the
// class grid, oy = py + s * qy.
struct ParityClass {
    int py, px, ry, rx, qh, qw, taps, s;
    __device__ __forceinline__ ParityClass(int cls, int stride, int pad, int k, int out_h, int out_w) {
        s = stride;
        py = cls / stride;
        px = cls % stride;
        ry = (py + pad) % stride;
        rx = (px + pad) % stride;
        qh = out_h > py ? (out_h - py + stride - 1) / stride : 0;
        qw = out_w > px ? (out_w - px + stride - 1) / stride : 0;
        taps = (k + stride - 1) / stride;
    }
    // Image of class column `col` = (n, qy, qx), and its position in a row-major plane
    // `width` wide: (py + s qy, px + s qx).
    __device__ __forceinline__ int image(int col) const { return col / (qw * qh); }
    __device__ __forceinline__ int offset(int col, int width) const {
        const int qx = col % qw, qy = (col / qw) % qh;
        return (py + s * qy) * width + px + s * qx;
    }
};

// B of the parity-split passes (conv2d backward_input, conv_transpose2d forward): one
// column (n, qy, qx) per thread, rows r = (ch, jy, jx).
struct ParityColumns {
    const float* src;
    int c, h, w, k, stride, pad;
    ParityClass pc;
    struct Line {
        const float* img;
        int oyp, oxp;  // output coordinate + pad
    };
    __device__ __forceinline__ Line line(int col) const {
        const int qx = col % pc.qw, qy = (col / pc.qw) % pc.qh, n = col / (pc.qw * pc.qh);
        return Line{src + (long long)n * c * h * w, pc.py + stride * qy + pad, pc.px + stride * qx + pad};
    }
    __device__ __forceinline__ float at(const Line& l, int r) const {
        const int jx = r % pc.taps, t = r / pc.taps;
        const int jy = t % pc.taps, ch = t / pc.taps;
        const int ky = pc.ry + stride * jy, kx = pc.rx + stride * jx;
        if (ky >= k || kx >= k) return 0.0f;
        const int ny = l.oyp - ky, nx = l.oxp - kx;  // multiples of stride by construction
        if (ny < 0 || nx < 0) return 0.0f;
        const int iy = ny / stride, ix = nx / stride;
        if (iy >= h || ix >= w) return 0.0f;
        return l.img[((long long)ch * h + iy) * w + ix];
    }
};

// A of the parity-split passes: the weight taps of this class, `w` laid out as
// [outer, inner, k, k] with `inner` the GEMM row (m) and `outer` the channel of r.
struct ParityWeights {
    const float* w;
    int inner, k, stride;
    ParityClass pc;
    typedef int Line;
    __device__ __forceinline__ Line line(int m) const { return m; }
    __device__ __forceinline__ float at(const Line& m, int r) const {
        const int jx = r % pc.taps, t = r / pc.taps;
        const int jy = t % pc.taps, outer = t / pc.taps;
        const int ky = pc.ry + stride * jy, kx = pc.rx + stride * jx;
        if (ky >= k || kx >= k) return 0.0f;
        return w[(((long long)outer * inner + m) * k + ky) * k + kx];
    }
};
