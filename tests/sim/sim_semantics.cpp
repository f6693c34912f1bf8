// Checks of the simulation itself (kernels/sim.h, kernels/sim.cpp), built and run by
// scripts/dev/cuda-tools.sh with g++ (this file instrumented like the kernels, sim.cpp
// not): barriers, shuffles and shared memory behave as on a GPU; misuse that a GPU would
// turn into silent corruption or a hang is reported; and each of the checker's detectors
// (races, uninitialised reads, out-of-bounds and foreign accesses, results that depend on
// the order threads or blocks run in) reports a small kernel written with that bug. Also
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
    std::printf("%-72s %s\n", what.c_str(), ok ? "PASS" : "FAIL");
    failures += !ok;
}

extern "C" float* sim_alloc(size_t len, int zeroed);
extern "C" void sim_free(float* p);
extern "C" int sim_launch(unsigned, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned, int, int, const char*, const uint64_t*, unsigned, int,
                          void (*)(void*), void*, char*, unsigned);
const int CHECK = 1, ORDERS = 2;

// A simulated device buffer, freed at the end of the scope.
struct DeviceBuf {
    float* p;
    size_t n;
    DeviceBuf(size_t n, bool zeroed = true) : p(sim_alloc(n, zeroed)), n(n) {}
    ~DeviceBuf() { sim_free(p); }
    float& operator[](size_t i) { return p[i]; }
};

struct Args {
    float* out;
    int n;
    float* other;
};

// Runs `k` with `a.out` (and `a.other`, when set) as the launch's buffers.
static std::string launch(void (*k)(void*), Args& a, unsigned grid, unsigned block, unsigned shared, int flags = CHECK | ORDERS) {
    char err[1024] = {0};
    const uint64_t ptrs[2] = {(uint64_t)a.out, (uint64_t)a.other};
    const int rc = sim_launch(grid, 1, 1, block, 1, 1, shared, 0, 0, "test_kernel", ptrs, 2, flags, k, &a, err, sizeof err);
    return rc == 0 ? std::string() : std::string(err);
}

static bool has(const std::string& e, const char* what) { return e.find(what) != std::string::npos; }

// Reverses a block's values through shared memory: wrong without the barrier.
static void reverse_kernel(void* p) {
    Args* a = static_cast<Args*>(p);
    SHARED_ARRAY(float, tile, 256);
    const int t = threadIdx.x;
    tile[t] = (float)(blockIdx.x * 1000 + t);
    __syncthreads();
    a->out[blockIdx.x * blockDim.x + t] = tile[blockDim.x - 1 - t];
}

// A missing barrier where a low thread writes and a higher one reads: thread t reads what
// thread t - 1 wrote. Run in thread order, the value is there; on a GPU it may not be.
static void shift_no_barrier_kernel(void* p) {
    Args* a = static_cast<Args*>(p);
    SHARED_ARRAY(float, tile, 256);
    const int t = threadIdx.x;
    tile[t] = (float)t;
    a->out[t] = t > 0 ? tile[t - 1] : 0.0f;
}

// Every thread writes the same word.
static void same_word_kernel(void* p) {
    Args* a = static_cast<Args*>(p);
    a->out[0] = (float)threadIdx.x;
}

// Each block adds into the same output, as a split reduction without partial buffers would.
static void blocks_accumulate_kernel(void* p) {
    Args* a = static_cast<Args*>(p);
    if (threadIdx.x == 0) a->out[0] = a->out[0] * 2.0f + (float)blockIdx.x;
}

// Reads shared memory this block never wrote.
static void uninitialised_shared_kernel(void* p) {
    Args* a = static_cast<Args*>(p);
    SHARED_ARRAY(float, tile, 64);
    if (threadIdx.x == 0 && blockIdx.x == 0) tile[0] = 1.0f;
    __syncthreads();
    a->out[blockIdx.x * blockDim.x + threadIdx.x] = tile[threadIdx.x];
}

// Reads one value past the end of its buffer.
static void out_of_bounds_kernel(void* p) {
    Args* a = static_cast<Args*>(p);
    a->out[threadIdx.x] = a->other[a->n + threadIdx.x];
}

// Reads the first value of its second buffer, which may be fresh scratch.
static void read_other_kernel(void* p) {
    Args* a = static_cast<Args*>(p);
    a->out[threadIdx.x] = a->other[threadIdx.x];
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
// The sources are other[0] = 7 and other[1] = 9.
static void cp_async_kernel(void* p) {
    Args* a = static_cast<Args*>(p);
    SHARED_ARRAY(float, dst, 2);
    dst[0] = dst[1] = -1.0f;
    sim::cp_async(&dst[0], &a->other[0]);
    sim::cp_async_commit();
    sim::cp_async(&dst[1], &a->other[1]);
    sim::cp_async_commit();
    a->out[0] = dst[0];
    sim::cp_async_wait(1);
    a->out[1] = dst[0];
    a->out[2] = dst[1];
    sim::cp_async_wait(0);
    a->out[3] = dst[1];
}

// Thread 0 copies asynchronously into shared memory; the others read it after a barrier
// but before thread 0 waited for the copy.
static void cp_async_race_kernel(void* p) {
    Args* a = static_cast<Args*>(p);
    SHARED_ARRAY(float, dst, 1);
    if (threadIdx.x == 0) {
        dst[0] = 0.0f;
        sim::cp_async(&dst[0], &a->other[0]);
        sim::cp_async_commit();
    }
    __syncthreads();
    a->out[threadIdx.x] = dst[0];
    if (threadIdx.x == 0) sim::cp_async_wait(0);
}

// A copy never waited for.
static void cp_async_unwaited_kernel(void* p) {
    Args* a = static_cast<Args*>(p);
    SHARED_ARRAY(float, dst, 1);
    sim::cp_async(&dst[0], &a->out[0]);
    sim::cp_async_commit();
}

int main() {
    {
        DeviceBuf out(3 * 256);
        Args a{out.p, 0, nullptr};
        const std::string e = launch(reverse_kernel, a, 3, 256, 0);
        bool ok = e.empty();
        for (int b = 0; b < 3; ++b)
            for (int t = 0; t < 256; ++t) ok &= out[b * 256 + t] == (float)(b * 1000 + 255 - t);
        expect(ok, "__syncthreads orders shared-memory writes before reads " + e);
    }
    {
        DeviceBuf out(2);
        Args a{out.p, 0, nullptr};
        const std::string e = launch(sum_kernel, a, 2, 256, 256 / 32 * 4);
        expect(e.empty() && out[0] == 256.0f * 257.0f / 2.0f && out[1] == out[0], "block_sum: warp shuffles and dynamic shared memory " + e);
    }
    // The checker: each detector against a kernel with its bug.
    {
        DeviceBuf out(256);
        Args a{out.p, 0, nullptr};
        const std::string e = launch(shift_no_barrier_kernel, a, 1, 256, 0, CHECK);
        expect(has(e, "race") && has(e, "shared memory word") && has(e, "no barrier"), "a missing barrier is a race");
        expect(has(e, "test_kernel") && has(e, "thread 1 of block") && has(e, "thread 0 of block"), "the race names the kernel and both threads");
        // Without the checker the forward order computes what a barrier would give.
        DeviceBuf plain(256);
        Args b{plain.p, 0, nullptr};
        const std::string e2 = launch(shift_no_barrier_kernel, b, 1, 256, 0, 0);
        expect(e2.empty() && plain[1] == 0.0f && plain[255] == 254.0f, "(a missing barrier passes unnoticed in thread order alone)");
    }
    {
        DeviceBuf out(1);
        Args a{out.p, 0, nullptr};
        const std::string e = launch(same_word_kernel, a, 1, 64, 0, CHECK);
        expect(has(e, "race") && has(e, "writes device buffer"), "two threads writing one word is a race");
    }
    {
        DeviceBuf out(1);
        Args a{out.p, 0, nullptr};
        const std::string e = launch(blocks_accumulate_kernel, a, 4, 32, 0, CHECK);
        expect(has(e, "race") && has(e, "block (1, 0, 0)") && has(e, "block (0, 0, 0)"), "two blocks adding into one output is a race");
    }
    {
        DeviceBuf out(2 * 64);
        Args a{out.p, 0, nullptr};
        const std::string e = launch(uninitialised_shared_kernel, a, 2, 64, 0, CHECK);
        expect(has(e, "uninitialised read") && has(e, "shared memory"), "reading unwritten shared memory is reported");
    }
    {
        DeviceBuf out(32), other(32);
        Args a{out.p, 32, other.p};
        const std::string e = launch(out_of_bounds_kernel, a, 1, 32, 0, CHECK);
        expect(has(e, "out of bounds") && has(e, "[32]"), "reading past the end of a buffer is reported: " + e.substr(0, 40));
    }
    {
        DeviceBuf out(32), scratch(32, false);
        Args a{out.p, 0, scratch.p};
        const std::string e = launch(read_other_kernel, a, 1, 32, 0, CHECK);
        expect(has(e, "uninitialised read") && has(e, "device buffer"), "reading fresh scratch before writing it is reported");
    }
    {
        DeviceBuf out(32), other(32);
        Args a{out.p, 0, other.p};
        char err[1024] = {0};
        const uint64_t ptrs[1] = {(uint64_t)a.out};  // `other` not declared to the launch
        sim_launch(1, 1, 1, 32, 1, 1, 0, 0, 0, "test_kernel", ptrs, 1, CHECK, read_other_kernel, &a, err, sizeof err);
        expect(has(err, "foreign buffer"), "touching a buffer the launch was not given is reported");
    }
    {
        DeviceBuf out(1);
        Args a{out.p, 0, nullptr};
        const std::string e = launch(same_word_kernel, a, 1, 64, 0, ORDERS);
        expect(has(e, "depends on the order") && has(e, "reverse"), "a result that depends on the order threads run in is reported");
    }
    {
        DeviceBuf out(1);
        Args a{out.p, 0, nullptr};
        const std::string e = launch(blocks_accumulate_kernel, a, 4, 32, 0, ORDERS);
        expect(has(e, "depends on the order"), "a result that depends on the order blocks run in is reported");
    }
    {
        // Shared memory starts poisoned in every block: block 1 reads NaN where block 0 wrote.
        DeviceBuf out(2 * 64);
        Args a{out.p, 0, nullptr};
        const std::string e = launch(uninitialised_shared_kernel, a, 2, 64, 0, 0);
        expect(e.empty() && out[0] == 1.0f && std::isnan(out[64]) && std::isnan(out[1]), "shared memory is poisoned for every block");
    }
    {
        DeviceBuf out(4), scratch(4, false);
        expect(std::isnan(scratch[0]) && out[0] == 0.0f, "fresh scratch is poisoned, allocations are zero");
    }
    {
        DeviceBuf out(64);
        Args a{out.p, 40, nullptr};
        const std::string e = launch(early_exit_kernel, a, 1, 64, 0);
        expect(e.find("skipped by 24") != std::string::npos, "a barrier skipped by exited threads is reported: " + e.substr(0, 30));
    }
    {
        DeviceBuf out(32);
        Args a{out.p, 0, nullptr};
        const std::string e = launch(partial_warp_shuffle_kernel, a, 1, 32, 0);
        expect(e.find("already exited") != std::string::npos, "a shuffle with exited lanes is reported");
    }
    {
        DeviceBuf out(1);
        Args a{out.p, 0, nullptr};
        const std::string e = launch(divergent_kernel, a, 1, 32, 0);
        expect(e.find("diverged") != std::string::npos, "a warp split between a shuffle and a barrier is reported");
    }
    {
        DeviceBuf out(1);
        Args a{out.p, 0, nullptr};
        const std::string e = launch(sum_kernel, a, 1, 2048, 0);
        expect(!e.empty(), "a block of more than 1024 threads is refused");
    }
    {
        DeviceBuf out(4), src(2);
        src[0] = 7.0f;
        src[1] = 9.0f;
        Args a{out.p, 0, src.p};
        const std::string e = launch(cp_async_kernel, a, 1, 1, 0);
        expect(e.empty() && out[0] == -1.0f && out[1] == 7.0f && out[2] == -1.0f && out[3] == 9.0f,
               "cp.async lands only at the wait that covers its group " + e);
    }
    {
        DeviceBuf out(32), src(1);
        src[0] = 7.0f;
        Args a{out.p, 0, src.p};
        const std::string e = launch(cp_async_race_kernel, a, 1, 32, 0, CHECK);
        expect(has(e, "race") && has(e, "shared memory"), "reading a cp.async destination before its wait is a race");
    }
    {
        DeviceBuf out(1);
        Args a{out.p, 0, nullptr};
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
