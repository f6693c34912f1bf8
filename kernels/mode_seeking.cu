// mode_seeking: MSGAN's term weight / (r + eps), r = mean |x_i - x_{i+pairs}| * inv_dz
// over the two halves of the fake batch (src/backend/mode_seeking.rs).
#include "common.cuh"

// out[0] = weight / (r + eps), out[1] = r. One block: the term is one number per
// iteration, and a single block keeps the order of additions fixed.
extern "C" __global__ void __launch_bounds__(REDUCE_THREADS)
mode_seeking_forward_f32(ModeSeekingParams p, const float* __restrict__ x, float* __restrict__ out) {
    DYNAMIC_SHARED(float, scratch);
    const int half = p.pairs * p.len;
    float s = 0.0f;
    for (int i = threadIdx.x; i < half; i += blockDim.x) s += fabsf(x[i] - x[i + half]);
    s = block_sum(s, scratch);
    if (threadIdx.x == 0) {
        const float r = s / (float)(half > 0 ? half : 1) * p.inv_dz;
        out[0] = p.weight / (r + p.eps);
        out[1] = r;
    }
}

// dx_i += g sign(x_i - x_{i+pairs}), dx_{i+pairs} -= g sign(...), g = -weight / (r + eps)^2
// * inv_dz / (pairs * len), r from stats[1]. One thread per value of the first half.
extern "C" __global__ void __launch_bounds__(ELEM_THREADS)
mode_seeking_backward_input_f32(ModeSeekingParams p, const float* __restrict__ x, const float* __restrict__ stats,
                                float* __restrict__ dx) {
    const int half = p.pairs * p.len;
    const int i = elem_index();
    if (i >= half) return;
    const float r = stats[1] + p.eps;
    const float g = -p.weight / (r * r) * p.inv_dz / (float)half;
    const float d = x[i] - x[i + half];
    const float s = d > 0.0f ? 1.0f : (d < 0.0f ? -1.0f : 0.0f);
    dx[i] += g * s;
    dx[i + half] -= g * s;
}
