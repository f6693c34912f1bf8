// concat_tile: a feature map joined with a vector tiled over its grid
// (src/backend/cuda/ops/concat.rs). One thread per value, ELEM_THREADS per block.
#include "common.cuh"

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
