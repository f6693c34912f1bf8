// adam_step: the optimizer, on the device (src/backend/cuda/ops/adam.rs).
#include "common.cuh"

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
