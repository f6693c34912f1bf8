// The loss and the optimizer, so a training iteration stays on the device: the only host
// round trip is reading the two loss values for logging.
#include "common.cuh"

// out[0] = scale * mean BCE(logit, target), out[1] = mean sigmoid(logit). One block; the
// batch is small (one logit per image) and a single block keeps the order of additions
// fixed.
extern "C" __global__ void __launch_bounds__(REDUCE_THREADS)
bce_with_logits_forward_f32(BceParams p, const float* __restrict__ logits, float* __restrict__ out) {
    DYNAMIC_SHARED(float, scratch);
    float loss = 0.0f, prob = 0.0f;
    for (int i = threadIdx.x; i < p.n; i += blockDim.x) {
        const float x = logits[i];
        // max(x, 0) - x t + log(1 + e^-|x|): finite for any finite x.
        loss += fmaxf(x, 0.0f) - x * p.target + log1pf(expf(-fabsf(x)));
        prob += sigmoidf_(x);
    }
    loss = block_sum(loss, scratch);
    prob = block_sum(prob, scratch);
    if (threadIdx.x == 0) {
        out[0] = p.scale * loss / (float)p.n;
        out[1] = prob / (float)p.n;
    }
}

// dlogits = scale (sigmoid(logit) - target) / n
extern "C" __global__ void __launch_bounds__(ELEM_THREADS)
bce_with_logits_backward_input_f32(BceParams p, const float* __restrict__ logits, float* __restrict__ dlogits) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < p.n) dlogits[i] = p.scale / (float)p.n * (sigmoidf_(logits[i]) - p.target);
}

// PyTorch's Adam: m = b1 m + (1 - b1) g; v = b2 v + (1 - b2) g^2;
// param -= (lr / bc1) m / (sqrt(v) / sqrt(bc2) + eps). Frozen parameters are simply not
// passed here.
extern "C" __global__ void __launch_bounds__(ELEM_THREADS)
adam_step_f32(AdamParams p, float* __restrict__ param, const float* __restrict__ grad, float* __restrict__ m,
              float* __restrict__ v) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= p.len) return;
    const float g = grad[i];
    const float mi = p.beta1 * m[i] + (1.0f - p.beta1) * g;
    const float vi = p.beta2 * v[i] + (1.0f - p.beta2) * g * g;
    m[i] = mi;
    v[i] = vi;
    param[i] -= (p.lr / p.bc1) * mi / (sqrtf(vi) / sqrtf(p.bc2) + p.eps);
}
