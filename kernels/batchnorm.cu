// batchnorm2d over NCHW, statistics per channel (PyTorch conventions: biased variance to
// normalise, unbiased variance into running_var, running = (1 - m) running + m batch),
// with an optional fused ReLU / LeakyReLU on the output (p.act): the forward writes
// act(bn(x)) and both backward passes fold act'(y) into dy as they read it.
//
// The training-mode kernels run one block of REDUCE_THREADS per channel, so a channel's
// statistics come from one block reduction (warp shuffles, then one value per warp in
// dynamic shared memory, REDUCE_THREADS / 32 floats): deterministic for a launch shape and
// no second kernel to combine partial sums. Each such kernel also applies its per-value
// result in the same block, so forward_train and backward_input are one launch each.
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

// Per-channel sums of g = dy act'(y) and of g xhat over the batch and grid, reduced in
// the block: the statistics both backward passes need.
__device__ __forceinline__ void bn_grad_sums(const BatchNormParams& p, int c, const float* __restrict__ x,
                                             const float* __restrict__ y, const float* __restrict__ dy, float mu,
                                             float is, float* scratch, float& sg, float& sgx) {
    float a = 0.0f, b = 0.0f;
    channel_for_each(p, c, [&](long long i) {
        const float g = bn_pre_grad(p, y, i, dy[i]);
        a += g;
        b += g * (x[i] - mu) * is;
    });
    sg = block_sum(a, scratch);
    sgx = block_sum(b, scratch);
}

extern "C" __global__ void __launch_bounds__(REDUCE_THREADS)
batchnorm2d_forward_train_f32(BatchNormParams p, const float* __restrict__ x, const float* __restrict__ gamma,
                              const float* __restrict__ beta, float* __restrict__ running_mean,
                              float* __restrict__ running_var, float* __restrict__ mean, float* __restrict__ invstd,
                              float* __restrict__ y) {
    DYNAMIC_SHARED(float, scratch);
    const int c = blockIdx.x;
    const int count = p.n * p.hw;
    float s = 0.0f;
    channel_for_each(p, c, [&](long long i) { s += x[i]; });
    const float mu = block_sum(s, scratch) / (float)count;
    // Two passes (mean, then squared deviations) rather than E[x^2] - E[x]^2, which loses
    // everything to cancellation when |mean| >> std.
    float sq = 0.0f;
    channel_for_each(p, c, [&](long long i) {
        const float d = x[i] - mu;
        sq += d * d;
    });
    const float m2 = block_sum(sq, scratch);
    const float var = m2 / (float)count;
    const float unbiased = count > 1 ? m2 / (float)(count - 1) : var;
    const float is = rsqrtf(var + p.eps);
    if (threadIdx.x == 0) {
        mean[c] = mu;
        invstd[c] = is;
        running_mean[c] = (1.0f - p.momentum) * running_mean[c] + p.momentum * mu;
        running_var[c] = (1.0f - p.momentum) * running_var[c] + p.momentum * unbiased;
    }
    const float scale = gamma[c] * is, shift = beta[c] - mu * scale;
    channel_for_each(p, c, [&](long long i) { y[i] = bn_act(p, fmaf(x[i], scale, shift)); });
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

// dx = gamma invstd (g - mean(g) - xhat mean(g xhat)) with g = dy act'(y), one block per
// channel. The block also writes its channel's sums (sums[c] = sum g, sums[C + c] = sum g
// xhat): the parameter gradients, which batchnorm2d_backward_params then adds.
extern "C" __global__ void __launch_bounds__(REDUCE_THREADS)
batchnorm2d_backward_input_f32(BatchNormParams p, const float* __restrict__ x, const float* __restrict__ y,
                               const float* __restrict__ dy, const float* __restrict__ gamma,
                               const float* __restrict__ mean, const float* __restrict__ invstd,
                               float* __restrict__ sums, float* __restrict__ dx) {
    DYNAMIC_SHARED(float, scratch);
    const int c = blockIdx.x;
    const int count = p.n * p.hw;
    const float mu = mean[c], is = invstd[c];
    float sg, sgx;
    bn_grad_sums(p, c, x, y, dy, mu, is, scratch, sg, sgx);
    if (threadIdx.x == 0) {
        sums[c] = sg;
        sums[p.c + c] = sgx;
    }
    const float mg = sg / (float)count, mgx = sgx / (float)count;
    const float k = gamma[c] * is;
    channel_for_each(p, c, [&](long long i) {
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
