// ema_update: the exponential moving average of the generator's weights
// (src/backend/cuda/ops/ema.rs). A grid-stride loop: each value is its own, so the result
// does not depend on the launch shape. No backward: the average is never differentiated.
#include "common.cuh"

// avg = w + beta (avg - w): beta 0 copies w, beta 1 keeps avg.
extern "C" __global__ void __launch_bounds__(ELEM_THREADS)
ema_update_f32(EmaParams p, float* __restrict__ avg, const float* __restrict__ w) {
    const long long stride = (long long)gridDim.x * blockDim.x;
    for (long long i = elem_index(); i < p.len; i += stride) {
        const float wi = w[i];
        avg[i] = wi + p.beta * (avg[i] - wi);
    }
}
