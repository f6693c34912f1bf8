// fill: Core::fill (zeroing gradients, running_var = 1, split-K outputs), one thread per
// value (src/backend/cuda/ops/fill.rs).
#include "common.cuh"

// buf[i] = value.
extern "C" __global__ void __launch_bounds__(ELEM_THREADS)
fill_f32(FillParams p, float* __restrict__ buf) {
    const int i = elem_index();
    if (i < p.len) buf[i] = p.value;
}
