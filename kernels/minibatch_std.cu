// minibatch_std: ProGAN's minibatch standard deviation, x with one more channel holding the
// mean spread of the sample's group column (src/backend/cuda/ops/minibatch_std.rs). One
// block per group column; each thread takes values k = tid, tid + blockDim, ... of a sample
// and walks the column's `group` samples at k. The per-column sums are block reductions
// in an order fixed by the launch shape: deterministic, no atomics.
#include "common.cuh"

// Mean and standard deviation sqrt(var + eps) of x over the column's samples at value k.
__device__ __forceinline__ void minibatch_std_column_stats(const MinibatchStdParams& p, const float* __restrict__ x, int col, int k, float& mean, float& std) {
    const int m = p.n / p.group;
    const long long per = (long long)p.c * p.hw;
    float s = 0.0f;
    for (int j = 0; j < p.group; ++j) s += x[(j * m + col) * per + k];
    mean = s / (float)p.group;
    float v = 0.0f;
    for (int j = 0; j < p.group; ++j) {
        const float d = x[(j * m + col) * per + k] - mean;
        v += d * d;
    }
    std = sqrtf(v / (float)p.group + MINIBATCH_STD_EPS);
}

// y[i, :c] = x[i]; y[i, c, :] = s[col], the mean over c and the grid of the column's
// standard deviations. One block per column (grid n / group).
extern "C" __global__ void __launch_bounds__(REDUCE_THREADS)
minibatch_std_forward_f32(MinibatchStdParams p, const float* __restrict__ x, float* __restrict__ y) {
    SHARED_ARRAY(float, scratch, REDUCE_THREADS / WARP);
    const int col = blockIdx.x;
    const int m = p.n / p.group;
    const int per = p.c * p.hw;
    const long long ct = (long long)per + p.hw;  // values of one sample of y
    float s = 0.0f;
    for (int k = threadIdx.x; k < per; k += blockDim.x) {
        float mean, std;
        minibatch_std_column_stats(p, x, col, k, mean, std);
        s += std;
        for (int j = 0; j < p.group; ++j) {
            const long long i = j * m + col;
            y[i * ct + k] = x[i * per + k];
        }
    }
    s = block_sum(s, scratch) / (float)per;
    for (int e = threadIdx.x; e < p.group * p.hw; e += blockDim.x) {
        const long long i = (e / p.hw) * m + col;
        y[i * ct + per + e % p.hw] = s;
    }
}

// dx = dy[:, :c] + ds / (c hw) (x - mean) / (group std), ds the column's sum of the extra
// channel's dy (over its samples and the grid). One block per column; mean and std are
// recomputed from x.
extern "C" __global__ void __launch_bounds__(REDUCE_THREADS)
minibatch_std_backward_input_f32(MinibatchStdParams p, const float* __restrict__ x, const float* __restrict__ dy, float* __restrict__ dx) {
    SHARED_ARRAY(float, scratch, REDUCE_THREADS / WARP);
    const int col = blockIdx.x;
    const int m = p.n / p.group;
    const int per = p.c * p.hw;
    const long long ct = (long long)per + p.hw;
    float ds = 0.0f;
    for (int e = threadIdx.x; e < p.group * p.hw; e += blockDim.x) {
        const long long i = (e / p.hw) * m + col;
        ds += dy[i * ct + per + e % p.hw];
    }
    const float scale = block_sum(ds, scratch) / (float)per / (float)p.group;
    for (int k = threadIdx.x; k < per; k += blockDim.x) {
        float mean, std;
        minibatch_std_column_stats(p, x, col, k, mean, std);
        const float f = scale / std;
        for (int j = 0; j < p.group; ++j) {
            const long long i = j * m + col;
            dx[i * per + k] = dy[i * ct + k] + f * (x[i * per + k] - mean);
        }
    }
}
