// scale: y = c x, or y += c x (the equalised learning rate's run-time weight scale, and the
// same op on its gradient). One thread per value (src/backend/cuda/ops/scale.rs).
#include "common.cuh"

extern "C" __global__ void __launch_bounds__(ELEM_THREADS)
scale_forward_f32(ScaleParams p, const float* __restrict__ x, float* __restrict__ y) {
    const int i = elem_index();
    if (i >= p.len) return;
    const float v = p.c * x[i];
    if (p.accumulate) {
        y[i] += v;
    } else {
        y[i] = v;
    }
}
