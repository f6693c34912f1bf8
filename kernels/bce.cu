// bce_with_logits: the article's loss, kept on the device so a training iteration's only
// host round trip is reading the loss values for logging (src/backend/cuda/ops/bce.rs).
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
