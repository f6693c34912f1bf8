// The activations: relu, leaky_relu and tanh, each backward from the saved output.
// One thread per value, ELEM_THREADS per block (src/backend/cuda/ops/activation.rs).
#include "common.cuh"

extern "C" __global__ void __launch_bounds__(ELEM_THREADS)
relu_forward_f32(ActParams p, const float* __restrict__ x, float* __restrict__ y) {
    const int i = elem_index();
    if (i < p.len) y[i] = x[i] > 0.0f ? x[i] : 0.0f;
}

extern "C" __global__ void __launch_bounds__(ELEM_THREADS)
relu_backward_input_f32(ActParams p, const float* __restrict__ y, const float* __restrict__ dy, float* __restrict__ dx) {
    const int i = elem_index();
    if (i < p.len) dx[i] = y[i] > 0.0f ? dy[i] : 0.0f;
}

extern "C" __global__ void __launch_bounds__(ELEM_THREADS)
leaky_relu_forward_f32(ActParams p, const float* __restrict__ x, float* __restrict__ y) {
    const int i = elem_index();
    if (i < p.len) y[i] = x[i] > 0.0f ? x[i] : x[i] * p.slope;
}

// Uses the output's sign, which equals the input's for a positive slope.
extern "C" __global__ void __launch_bounds__(ELEM_THREADS)
leaky_relu_backward_input_f32(ActParams p, const float* __restrict__ y, const float* __restrict__ dy, float* __restrict__ dx) {
    const int i = elem_index();
    if (i < p.len) dx[i] = y[i] > 0.0f ? dy[i] : dy[i] * p.slope;
}

extern "C" __global__ void __launch_bounds__(ELEM_THREADS)
tanh_forward_f32(ActParams p, const float* __restrict__ x, float* __restrict__ y) {
    const int i = elem_index();
    if (i < p.len) y[i] = tanhf(x[i]);
}

extern "C" __global__ void __launch_bounds__(ELEM_THREADS)
tanh_backward_input_f32(ActParams p, const float* __restrict__ y, const float* __restrict__ dy, float* __restrict__ dx) {
    const int i = elem_index();
    if (i < p.len) dx[i] = dy[i] * (1.0f - y[i] * y[i]);
}
