// Checks of the simulation header itself (kernels/sim.h, kernels/sim.cpp), built and run
// by scripts/dev/cuda-tools.sh with g++: barriers, shuffles and shared memory behave as on a
// GPU, and misuse that a GPU would turn into silent corruption or a hang is reported. Also
// the TF32 rounding of gemm.cuh, which the GPU and the simulation share.
#define GAN_SIM
#include "common.cuh"
#include "gemm.cuh"

#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

static int failures = 0;
static void expect(bool ok, const std::string& what) {
    std::printf("%-64s %s\n", what.c_str(), ok ? "PASS" : "FAIL");
    failures += !ok;
}

struct Args {
    float* out;
    int n;
};

// Reverses a block's values through shared memory: wrong without the barrier.
static void reverse_kernel(void* p) {
    Args* a = static_cast<Args*>(p);
    __shared__ float tile[256];
    const int t = threadIdx.x;
    tile[t] = (float)(blockIdx.x * 1000 + t);
    __syncthreads();
    a->out[blockIdx.x * blockDim.x + t] = tile[blockDim.x - 1 - t];
}

// block_sum from common.cuh (warp shuffles + dynamic shared memory).
static void sum_kernel(void* p) {
    Args* a = static_cast<Args*>(p);
    DYNAMIC_SHARED(float, scratch);
    const float s = block_sum((float)(threadIdx.x + 1), scratch);
    if (threadIdx.x == 0) a->out[blockIdx.x] = s;
}

// Threads past n return early, then the rest wait at a barrier: undefined on a GPU.
static void early_exit_kernel(void* p) {
    Args* a = static_cast<Args*>(p);
    if ((int)threadIdx.x >= a->n) return;
    __syncthreads();
    a->out[threadIdx.x] = 1.0f;
}

// Half a warp shuffles while the other half has exited.
static void partial_warp_shuffle_kernel(void* p) {
    Args* a = static_cast<Args*>(p);
    if (threadIdx.x >= 16) return;
    a->out[threadIdx.x] = __shfl_down_sync(0xffffffffu, 1.0f, 1);
}

// Lanes of one warp wait at a shuffle and at __syncthreads at the same time.
static void divergent_kernel(void* p) {
    Args* a = static_cast<Args*>(p);
    if (threadIdx.x % 2 == 0) {
        __syncthreads();
    } else {
        a->out[0] = __shfl_xor_sync(0xffffffffu, 1.0f, 1);
    }
}

// Asynchronous copies: two groups in flight; out[0..3] records what the destination held
// before any wait, after the wait that leaves one group pending, and after waiting for all.
static void cp_async_kernel(void* p) {
    Args* a = static_cast<Args*>(p);
    __shared__ float dst[2];
    static const float src[2] = {7.0f, 9.0f};
    dst[0] = dst[1] = -1.0f;
    sim::cp_async(&dst[0], &src[0]);
    sim::cp_async_commit();
    sim::cp_async(&dst[1], &src[1]);
    sim::cp_async_commit();
    a->out[0] = dst[0];
    sim::cp_async_wait(1);
    a->out[1] = dst[0];
    a->out[2] = dst[1];
    sim::cp_async_wait(0);
    a->out[3] = dst[1];
}

// A copy never waited for.
static void cp_async_unwaited_kernel(void* p) {
    Args* a = static_cast<Args*>(p);
    __shared__ float dst[1];
    sim::cp_async(&dst[0], &a->out[0]);
    sim::cp_async_commit();
}

extern "C" int sim_launch(unsigned, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned, int, int, void (*)(void*), void*, char*, unsigned);

static std::string launch(void (*k)(void*), Args& a, unsigned grid, unsigned block, unsigned shared) {
    char err[512] = {0};
    const int rc = sim_launch(grid, 1, 1, block, 1, 1, shared, 0, 0, k, &a, err, sizeof err);
    return rc == 0 ? std::string() : std::string(err);
}

int main() {
    {
        std::vector<float> out(3 * 256);
        Args a{out.data(), 0};
        const std::string e = launch(reverse_kernel, a, 3, 256, 0);
        bool ok = e.empty();
        for (int b = 0; b < 3; ++b)
            for (int t = 0; t < 256; ++t) ok &= out[b * 256 + t] == (float)(b * 1000 + 255 - t);
        expect(ok, "__syncthreads orders shared-memory writes before reads");
    }
    {
        std::vector<float> out(2);
        Args a{out.data(), 0};
        const std::string e = launch(sum_kernel, a, 2, 256, 256 / 32 * 4);
        expect(e.empty() && out[0] == 256.0f * 257.0f / 2.0f && out[1] == out[0], "block_sum: warp shuffles and dynamic shared memory");
    }
    {
        std::vector<float> out(64);
        Args a{out.data(), 40};
        const std::string e = launch(early_exit_kernel, a, 1, 64, 0);
        expect(e.find("skipped by 24") != std::string::npos, "a barrier skipped by exited threads is reported: " + e.substr(0, 30));
    }
    {
        std::vector<float> out(32);
        Args a{out.data(), 0};
        const std::string e = launch(partial_warp_shuffle_kernel, a, 1, 32, 0);
        expect(e.find("already exited") != std::string::npos, "a shuffle with exited lanes is reported");
    }
    {
        std::vector<float> out(1);
        Args a{out.data(), 0};
        const std::string e = launch(divergent_kernel, a, 1, 32, 0);
        expect(e.find("diverged") != std::string::npos, "a warp split between a shuffle and a barrier is reported");
    }
    {
        std::vector<float> out(1);
        Args a{out.data(), 0};
        const std::string e = launch(sum_kernel, a, 1, 2048, 0);
        expect(!e.empty(), "a block of more than 1024 threads is refused");
    }
    {
        std::vector<float> out(4);
        Args a{out.data(), 0};
        const std::string e = launch(cp_async_kernel, a, 1, 1, 0);
        expect(e.empty() && out[0] == -1.0f && out[1] == 7.0f && out[2] == -1.0f && out[3] == 9.0f,
               "cp.async lands only at the wait that covers its group");
    }
    {
        std::vector<float> out(1);
        Args a{out.data(), 0};
        const std::string e = launch(cp_async_unwaited_kernel, a, 1, 32, 0);
        expect(e.find("never waited for") != std::string::npos, "cp.async copies never waited for are reported");
    }
    {
        // To nearest, ties away from zero, as cvt.rna.tf32.f32: TF32 keeps 10 of the 23
        // mantissa bits, so around 1 its unit is 2^-10.
        const float u = std::ldexp(1.0f, -10), e = std::ldexp(1.0f, -23);
        const float x[] = {1.0f + u / 2, 1.0f + u / 2 - e, -(1.0f + u / 2), 1.0f + 1.5f * u, 1.0f + u / 4, 0.0f, -0.0f};
        const float want[] = {1.0f + u, 1.0f, -(1.0f + u), 1.0f + 2 * u, 1.0f, 0.0f, -0.0f};
        bool ok = true;
        for (int i = 0; i < 7; ++i) {
            const float got = tf32_bits_to_float(to_tf32(x[i]));
            ok &= std::memcmp(&got, &want[i], 4) == 0 && (tf32_operand(x[i]) & 0xffffe000u) == to_tf32(x[i]);
        }
        expect(ok, "TF32 operands round to nearest, ties away from zero");
    }
    std::printf("%s\n", failures ? "simulation checks FAILED" : "simulation checks passed");
    return failures ? 1 : 0;
}
