// Elementwise ops: activations (backward from the saved output), concat/tile, fill.
// One thread per value, ELEM_THREADS per block.
#include "common.cuh"

__device__ __forceinline__ int elem_index() { return blockIdx.x * blockDim.x + threadIdx.x; }

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

// y[n, c, q] = a[n, c, q] for c < c_a, b[n, c - c_a] otherwise (b tiled over the grid).
extern "C" __global__ void __launch_bounds__(ELEM_THREADS)
concat_tile_forward_f32(ConcatParams p, const float* __restrict__ a, const float* __restrict__ b, float* __restrict__ y) {
    const int i = elem_index();
    const int ct = p.c_a + p.c_b;
    if (i >= p.n * ct * p.hw) return;
    const int q = i % p.hw, c = (i / p.hw) % ct, n = i / (p.hw * ct);
    y[i] = c < p.c_a ? a[(n * p.c_a + c) * p.hw + q] : b[n * p.c_b + (c - p.c_a)];
}

// Writes both input gradients: da is a slice of dy; db sums dy over the grid. One thread
// per value of da and then one per value of db (grid covers n (c_a hw + c_b)); each db
// value is summed by one thread in a fixed order.
extern "C" __global__ void __launch_bounds__(ELEM_THREADS)
concat_tile_backward_input_f32(ConcatParams p, const float* __restrict__ dy, float* __restrict__ da, float* __restrict__ db) {
    const int i = elem_index();
    const int ct = p.c_a + p.c_b;
    const int na = p.n * p.c_a * p.hw;
    if (i < na) {
        const int q = i % p.hw, c = (i / p.hw) % p.c_a, n = i / (p.hw * p.c_a);
        da[i] = dy[(n * ct + c) * p.hw + q];
    } else if (i < na + p.n * p.c_b) {
        const int j = i - na;
        const int c = j % p.c_b, n = j / p.c_b;
        const float* src = dy + (n * ct + p.c_a + c) * p.hw;
        float s = 0.0f;
        for (int q = 0; q < p.hw; ++q) s += src[q];
        db[j] = s;
    }
}

// buf[i] = value: Backend::fill (zeroing gradients, running_var = 1).
extern "C" __global__ void __launch_bounds__(ELEM_THREADS)
fill_f32(FillParams p, float* __restrict__ buf) {
    const int i = elem_index();
    if (i < p.len) buf[i] = p.value;
}
