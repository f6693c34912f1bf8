// The fiber scheduler behind sim.h. See sim.h for the model; the entry point for Rust is
// sim_launch(), which runs one kernel launch to completion and reports misuse of barriers.
#include "sim.h"

#include <ucontext.h>

#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <string>
#include <vector>

namespace sim {
sim_dim3 thread_idx, block_idx, block_dim, grid_dim;
int gemm_precision = 0, gemm_feed = 0;
}

namespace {

enum State { RUNNABLE, AT_BLOCK_BARRIER, AT_WARP_BARRIER, DONE };

struct Fiber {
    ucontext_t ctx;
    std::vector<char> stack;
    State state;
    unsigned tid;
};

// Kernels keep small frames; Rust trampolines add little. 128 KiB leaves a wide margin.
constexpr size_t STACK_BYTES = 128 * 1024;

std::mutex g_launch_lock;  // one launch at a time: the scheduler state below is global
ucontext_t g_scheduler;
std::vector<Fiber> g_fibers;
int g_current = -1;
void (*g_entry)(void*) = nullptr;
void* g_arg = nullptr;
std::vector<char> g_dynamic_shared;
std::vector<uint64_t> g_shfl;  // one slot per thread of the block
constexpr int FRAG_REGS = 8;   // registers a lane may publish for a tensor-core step
std::vector<uint32_t> g_frag;  // FRAG_REGS per thread of the block
unsigned g_threads = 0;
// Asynchronous copies not yet landed, and the groups committed so far, per thread.
struct PendingCopy {
    float* dst;
    float value;
    int group;
};
std::vector<std::vector<PendingCopy>> g_copies;
std::vector<int> g_groups;

void yield_as(State s) {
    Fiber& f = g_fibers[g_current];
    f.state = s;
    swapcontext(&f.ctx, &g_scheduler);
}

void fiber_main() {
    g_entry(g_arg);
    yield_as(DONE);  // never resumed
}

unsigned current_tid() { return g_fibers[g_current].tid; }

void set_thread_idx(unsigned tid) {
    sim::thread_idx.x = tid % sim::block_dim.x;
    sim::thread_idx.y = (tid / sim::block_dim.x) % sim::block_dim.y;
    sim::thread_idx.z = tid / (sim::block_dim.x * sim::block_dim.y);
}

// Runs every fiber of the current block until all are done. Returns an empty string or
// what went wrong.
std::string run_block() {
    for (unsigned t = 0; t < g_threads; ++t) {
        Fiber& f = g_fibers[t];
        getcontext(&f.ctx);
        f.ctx.uc_stack.ss_sp = f.stack.data();
        f.ctx.uc_stack.ss_size = f.stack.size();
        f.ctx.uc_link = nullptr;
        f.state = RUNNABLE;
        f.tid = t;
        makecontext(&f.ctx, fiber_main, 0);
    }
    g_copies.assign(g_threads, {});
    g_groups.assign(g_threads, 0);
    const unsigned warps = (g_threads + 31) / 32;
    for (;;) {
        for (unsigned t = 0; t < g_threads; ++t) {
            if (g_fibers[t].state != RUNNABLE) continue;
            g_current = (int)t;
            set_thread_idx(t);
            swapcontext(&g_scheduler, &g_fibers[t].ctx);
        }
        g_current = -1;
        // Everyone is now waiting or done. Release complete warp barriers first.
        bool released = false;
        unsigned done = 0, at_block = 0;
        for (unsigned w = 0; w < warps; ++w) {
            unsigned lo = w * 32, hi = lo + 32 < g_threads ? lo + 32 : g_threads;
            unsigned at_warp = 0, exited = 0;
            for (unsigned t = lo; t < hi; ++t) {
                at_warp += g_fibers[t].state == AT_WARP_BARRIER;
                exited += g_fibers[t].state == DONE;
            }
            if (at_warp == 0) continue;
            if (at_warp == hi - lo) {
                for (unsigned t = lo; t < hi; ++t) g_fibers[t].state = RUNNABLE;
                released = true;
            } else if (exited > 0) {
                return "warp " + std::to_string(w) + ": a shuffle was reached by " + std::to_string(at_warp) + " lanes while " +
                       std::to_string(exited) + " had already exited";
            } else {
                return "warp " + std::to_string(w) + ": lanes diverged between a shuffle and __syncthreads";
            }
        }
        if (released) continue;
        for (unsigned t = 0; t < g_threads; ++t) {
            done += g_fibers[t].state == DONE;
            at_block += g_fibers[t].state == AT_BLOCK_BARRIER;
        }
        if (done == g_threads) {
            for (unsigned t = 0; t < g_threads; ++t)
                if (!g_copies[t].empty())
                    return "thread " + std::to_string(t) + " exited with " + std::to_string(g_copies[t].size()) +
                           " asynchronous copies never waited for";
            return "";
        }
        if (at_block + done == g_threads) {
            if (done > 0)
                return "__syncthreads reached by " + std::to_string(at_block) + " threads but skipped by " +
                       std::to_string(done) + " that had already exited";
            for (unsigned t = 0; t < g_threads; ++t) g_fibers[t].state = RUNNABLE;
            continue;
        }
        return "threads wait at different barriers (deadlock)";
    }
}

}  // namespace

void sim::syncthreads() { yield_as(AT_BLOCK_BARRIER); }
void sim::syncwarp() { yield_as(AT_WARP_BARRIER); }
int sim::lane() { return (int)(g_fibers[g_current].tid % 32); }
int sim::warp_width() {
    const unsigned lo = g_fibers[g_current].tid / 32 * 32;
    return (int)(g_threads - lo < 32 ? g_threads - lo : 32);
}
void sim::shfl_put(const void* v, unsigned bytes) {
    uint64_t slot = 0;
    std::memcpy(&slot, v, bytes <= 8 ? bytes : 8);
    g_shfl[g_fibers[g_current].tid] = slot;
}
const void* sim::shfl_get(int lane) {
    const unsigned base = g_fibers[g_current].tid / 32 * 32;
    return &g_shfl[base + (unsigned)lane];
}

void sim::frag_put(const uint32_t* v, int n) {
    if (n > FRAG_REGS) std::abort();  // a kernel bug, not an input error
    std::memcpy(&g_frag[(size_t)g_fibers[g_current].tid * FRAG_REGS], v, n * sizeof(uint32_t));
}
const uint32_t* sim::frag_get(int lane) {
    const unsigned base = g_fibers[g_current].tid / 32 * 32;
    return &g_frag[(size_t)(base + (unsigned)lane) * FRAG_REGS];
}

void sim::cp_async(float* dst, const float* src) {
    const unsigned t = current_tid();
    g_copies[t].push_back(PendingCopy{dst, *src, g_groups[t]});
}
void sim::cp_async_commit() { ++g_groups[current_tid()]; }
void sim::cp_async_wait(int pending) {
    const unsigned t = current_tid();
    std::vector<PendingCopy>& q = g_copies[t];
    // Groups older than the `pending` most recent ones land now, in issue order; copies
    // issued after the last commit belong to no group yet and stay.
    const int landed_below = g_groups[t] - pending;
    std::vector<PendingCopy> keep;
    for (const PendingCopy& c : q) {
        if (c.group < landed_below)
            *c.dst = c.value;
        else
            keep.push_back(c);
    }
    q.swap(keep);
}

extern "C" void* sim_dynamic_shared() { return g_dynamic_shared.data(); }

// Runs `entry(arg)` as every thread of a grid x block launch, with the GEMM tiles in
// `gemm_precision`, fed as `gemm_feed`. Writes a message into `err` and returns nonzero on a launch error (bad
// shape, barrier misuse).
extern "C" int sim_launch(unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz, unsigned shared_bytes,
                          int gemm_precision, int gemm_feed, void (*entry)(void*), void* arg, char* err, unsigned err_len) {
    std::lock_guard<std::mutex> guard(g_launch_lock);
    auto fail = [&](const std::string& msg) {
        std::snprintf(err, err_len, "%s", msg.c_str());
        return 1;
    };
    const unsigned threads = bx * by * bz;
    if (threads == 0 || threads > 1024) return fail("block of " + std::to_string(threads) + " threads (1 to 1024 allowed)");
    if (gx == 0 || gy == 0 || gz == 0) return fail("empty grid");
    if (gy > 65535 || gz > 65535) return fail("grid y or z above 65535");
    if (shared_bytes > 48 * 1024) return fail("more than 48 KiB of dynamic shared memory");
    if (g_fibers.size() < threads) {
        g_fibers.resize(threads);
        for (Fiber& f : g_fibers)
            if (f.stack.empty()) f.stack.resize(STACK_BYTES);
    }
    g_threads = threads;
    g_entry = entry;
    g_arg = arg;
    g_shfl.assign(threads, 0);
    g_frag.assign((size_t)threads * FRAG_REGS, 0);
    sim::gemm_precision = gemm_precision;
    sim::gemm_feed = gemm_feed;
    g_dynamic_shared.assign(shared_bytes + 16, (char)0xFF);  // all-ones bytes are NaN floats
    sim::block_dim = {bx, by, bz};
    sim::grid_dim = {gx, gy, gz};
    for (unsigned z = 0; z < gz; ++z)
        for (unsigned y = 0; y < gy; ++y)
            for (unsigned x = 0; x < gx; ++x) {
                sim::block_idx = {x, y, z};
                const std::string e = run_block();
                if (!e.empty())
                    return fail("block (" + std::to_string(x) + ", " + std::to_string(y) + ", " + std::to_string(z) + "): " + e);
            }
    return 0;
}
