// fade: y = a x1 + b x2 (ProGAN's fade of two paths), and both input gradients. One thread
// per value (src/backend/cuda/ops/fade.rs).
#include "common.cuh"

extern "C" __global__ void __launch_bounds__(ELEM_THREADS)
fade_forward_f32(FadeParams p, const float* __restrict__ x1, const float* __restrict__ x2, float* __restrict__ y) {
    const int i = elem_index();
    if (i >= p.len) return;
    y[i] = p.a * x1[i] + p.b * x2[i];
}

// dx1 = a dy, dx2 = b dy.
extern "C" __global__ void __launch_bounds__(ELEM_THREADS)
fade_backward_input_f32(FadeParams p, const float* __restrict__ dy, float* __restrict__ dx1, float* __restrict__ dx2) {
    const int i = elem_index();
    if (i >= p.len) return;
    const float g = dy[i];
    dx1[i] = p.a * g;
    dx2[i] = p.b * g;
}
