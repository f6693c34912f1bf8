// softmax_cross_entropy and sigmoid_cross_entropy: the losses of the feature network's heads
// (src/backend/cuda/ops/cross_entropy.rs). A head is columns [offset, offset + classes) of
// each row of [n, stride] logits. The forwards are one block each (a fixed order of
// additions, as bce_with_logits); the backwards write the head's columns only.
#include "common.cuh"

// ln sum exp(x - m) over the head's columns of one row, with m their largest value.
__device__ __forceinline__ float head_log_sum_exp(const float* row, int classes, float m) {
    float s = 0.0f;
    for (int j = 0; j < classes; ++j) s += expf(row[j] - m);
    return logf(s);
}

__device__ __forceinline__ float head_max(const float* row, int classes) {
    float m = row[0];
    for (int j = 1; j < classes; ++j) m = fmaxf(m, row[j]);
    return m;
}

// out[0] = scale * mean over rows of -ln softmax(row)[t]; out[1] = fraction of rows whose
// first largest logit is the target. One block; a thread per row at a time.
extern "C" __global__ void __launch_bounds__(REDUCE_THREADS)
softmax_cross_entropy_forward_f32(CrossEntropyParams p, const float* __restrict__ logits, const float* __restrict__ targets, float* __restrict__ out) {
    DYNAMIC_SHARED(float, scratch);
    float loss = 0.0f, hits = 0.0f;
    for (int i = threadIdx.x; i < p.n; i += blockDim.x) {
        const float* row = logits + (long long)i * p.stride + p.offset;
        const int t = (int)rintf(targets[i]);
        const float m = head_max(row, p.classes);
        loss += m + head_log_sum_exp(row, p.classes, m) - row[t];
        int arg = 0;
        for (int j = 1; j < p.classes; ++j)
            if (row[j] > row[arg]) arg = j;
        hits += arg == t ? 1.0f : 0.0f;
    }
    loss = block_sum(loss, scratch);
    hits = block_sum(hits, scratch);
    if (threadIdx.x == 0) {
        out[0] = p.scale * loss / (float)p.n;
        out[1] = hits / (float)p.n;
    }
}

// dlogits = scale (softmax(row) - onehot(t)) / n over the head's columns: one thread per row.
extern "C" __global__ void __launch_bounds__(ELEM_THREADS)
softmax_cross_entropy_backward_input_f32(CrossEntropyParams p, const float* __restrict__ logits, const float* __restrict__ targets, float* __restrict__ dlogits) {
    const int i = elem_index();
    if (i >= p.n) return;
    const long long start = (long long)i * p.stride + p.offset;
    const float* row = logits + start;
    const int t = (int)rintf(targets[i]);
    const float m = head_max(row, p.classes);
    const float lse = head_log_sum_exp(row, p.classes, m);
    const float k = p.scale / (float)p.n;
    for (int j = 0; j < p.classes; ++j) dlogits[start + j] = k * (expf(row[j] - m - lse) - (j == t ? 1.0f : 0.0f));
}

// out[0] = scale * mean BCE over the head's n * classes elements; out[1] = fraction of
// elements with (x > 0) == (t > 0.5). One block.
extern "C" __global__ void __launch_bounds__(REDUCE_THREADS)
sigmoid_cross_entropy_forward_f32(CrossEntropyParams p, const float* __restrict__ logits, const float* __restrict__ targets, float* __restrict__ out) {
    DYNAMIC_SHARED(float, scratch);
    const int count = p.n * p.classes;
    float loss = 0.0f, hits = 0.0f;
    for (int e = threadIdx.x; e < count; e += blockDim.x) {
        const int i = e / p.classes, j = e % p.classes;
        const float x = logits[(long long)i * p.stride + p.offset + j], t = targets[e];
        // max(x, 0) - x t + log(1 + e^-|x|): finite for any finite x.
        loss += fmaxf(x, 0.0f) - x * t + log1pf(expf(-fabsf(x)));
        hits += (x > 0.0f) == (t > 0.5f) ? 1.0f : 0.0f;
    }
    loss = block_sum(loss, scratch);
    hits = block_sum(hits, scratch);
    if (threadIdx.x == 0) {
        out[0] = p.scale * loss / (float)count;
        out[1] = hits / (float)count;
    }
}

// dlogits = scale (sigmoid(x) - t) / (n classes): one thread per element of the head.
extern "C" __global__ void __launch_bounds__(ELEM_THREADS)
sigmoid_cross_entropy_backward_input_f32(CrossEntropyParams p, const float* __restrict__ logits, const float* __restrict__ targets, float* __restrict__ dlogits) {
    const int e = elem_index();
    const int count = p.n * p.classes;
    if (e >= count) return;
    const long long at = (long long)(e / p.classes) * p.stride + p.offset + e % p.classes;
    dlogits[at] = p.scale / (float)count * (sigmoidf_(logits[at]) - targets[e]);
}
