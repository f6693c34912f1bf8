// The fiber scheduler behind sim.h and the access checker that watches the kernels. See
// sim.h for the model. Entry points for Rust: sim_launch(), which runs one kernel launch to
// completion (in one or three orders) and reports misuse; sim_alloc() / sim_free() /
// sim_mark_defined(), the simulated device memory.
//
// This file is compiled without instrumentation: it implements the thread-sanitizer hooks
// (__tsan_read4, ...) that the instrumented kernels call on every load and store.
#include "sim.h"

#if !defined(__x86_64__)
#include <ucontext.h>
#endif

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <mutex>
#include <random>
#include <string>
#include <vector>

// The binary's own static data (the simulation's state the kernels read, threadIdx and
// the like), which is never device memory: from the linker.
extern "C" char __executable_start[], _end[];

namespace sim {
sim_dim3 thread_idx, block_idx, block_dim, grid_dim;
int gemm_precision = 0, gemm_feed = 0;
}  // namespace sim

namespace {

enum State { RUNNABLE, AT_BLOCK_BARRIER, AT_WARP_BARRIER, DONE };

// Switching between fibers. glibc's swapcontext saves and restores the signal mask with a
// system call at every switch, which was most of the simulation's time; on x86-64 the
// switch is these few instructions instead: the callee-saved registers and the
// floating-point control words pushed on the old stack, the stack pointer swapped, the
// other fiber's popped.
#if defined(__x86_64__)
struct Context {
    void* sp;
};
extern "C" void sim_switch(void** save_sp, void* load_sp);
asm(R"(
    .text
    .globl sim_switch
    .type sim_switch, @function
sim_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    subq $8, %rsp
    stmxcsr (%rsp)
    fnstcw 4(%rsp)
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    ldmxcsr (%rsp)
    fldcw 4(%rsp)
    addq $8, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size sim_switch, .-sim_switch
)");
#else
struct Context {
    ucontext_t uc;
};
#endif

struct Fiber {
    Context ctx;
    std::vector<char> stack;
    State state;
    unsigned tid;
};

// Kernels keep small frames; Rust trampolines add little. 128 KiB leaves a wide margin.
constexpr size_t STACK_BYTES = 128 * 1024;

// ---- simulated device memory ---------------------------------------------------------------

// What the checker knows of one 4-byte word: the last write and the last read in the
// current epoch (a launch for device memory, a block for shared memory), and whether the
// word has ever been written.
struct Shadow {
    uint32_t epoch;
    uint32_t w_block, w_seg;  // writer's block + 1 (0: no write this epoch) and its block barrier count
    uint16_t w_thread, w_wseg;
    uint32_t r_block, r_seg;  // last reader's, as for the writer
    uint16_t r_thread, r_wseg;
    uint8_t r_threads;  // 1: several threads of one block read it in r_seg
    uint8_t r_blocks;   // 1: several blocks read it this epoch
    uint8_t defined;
    uint8_t pad_;
};

// Floats of poison on each side of a buffer: an access there is out of bounds.
constexpr size_t RED_ZONE = 256;
const uint32_t POISON = 0xffffffffu;  // a NaN

struct Buffer {
    std::vector<uint32_t> words;  // red zone, data, red zone
    size_t len;                   // floats of data
    unsigned id;
    std::vector<Shadow> shadow;   // one per float of data
    float* data() { return reinterpret_cast<float*>(words.data() + RED_ZONE); }
    uintptr_t begin() { return reinterpret_cast<uintptr_t>(words.data()); }
    uintptr_t end() { return reinterpret_cast<uintptr_t>(words.data() + words.size()); }
};

std::mutex g_memory_lock;                // the registry; launches take g_launch_lock too
std::map<uintptr_t, Buffer*> g_buffers;  // by address of the first data float
unsigned g_next_buffer_id = 1;

// The buffer whose red zones or data hold `a`, if any.
Buffer* find_buffer(uintptr_t a) {
    auto it = g_buffers.upper_bound(a + RED_ZONE * 4);
    if (it == g_buffers.begin()) return nullptr;
    --it;
    Buffer* b = it->second;
    return a >= b->begin() && a < b->end() ? b : nullptr;
}

// ---- the launch ------------------------------------------------------------------------------

std::mutex g_launch_lock;  // one launch at a time: the scheduler state below is global
Context g_scheduler;
std::vector<Fiber> g_fibers;
int g_current = -1;
void (*g_entry)(void*) = nullptr;
void* g_arg = nullptr;
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

// Shared memory: one arena per block, dynamic shared memory first, then the SHARED_ARRAY
// slots in the order the kernel first asks for them.
constexpr size_t ARENA_BYTES = 256 * 1024;
constexpr size_t STATIC_SHARED_LIMIT = 48 * 1024;
std::vector<uint32_t> g_arena(ARENA_BYTES / 4);
std::vector<Shadow> g_arena_shadow(ARENA_BYTES / 4);
size_t g_dynamic_bytes = 0, g_arena_used = 0;
std::vector<std::pair<const void*, size_t>> g_slots;

// The order threads and blocks run in.
enum Order { FORWARD, REVERSE, SHUFFLED };
const char* order_name(Order o) { return o == FORWARD ? "forward" : o == REVERSE ? "reverse" : "shuffled"; }
Order g_order = FORWARD;
std::mt19937 g_shuffle;

// The checker's view of the running thread and the launch.
bool g_checking = false;
const char* g_kernel = "";
uint32_t g_epoch = 0;         // bumped for every launch (and every order of one)
uint32_t g_block_epoch = 0;   // bumped for every block
uint32_t g_block = 0;         // linear id of the running block
uint32_t g_seg = 0;           // block barriers released so far in this block
std::vector<uint16_t> g_wseg;  // warp barriers released so far, per warp
std::vector<Buffer*> g_args;   // the launch's buffers
std::string g_error;           // the first violation the checker saw

std::string block_name(uint32_t linear) {
    const unsigned gx = sim::grid_dim.x, gy = sim::grid_dim.y;
    return "block (" + std::to_string(linear % gx) + ", " + std::to_string(linear / gx % gy) + ", " + std::to_string(linear / (gx * gy)) + ")";
}

std::string thread_name(uint32_t block, unsigned thread) { return "thread " + std::to_string(thread) + " of " + block_name(block); }

void violation(const std::string& what) {
    if (g_error.empty()) g_error = std::string(g_kernel) + ": " + what;
}

// Whether accesses by (block b, thread t, barrier counts s, ws) and by the recorded
// (b2, t2, s2, ws2) can happen in either order on a GPU: different blocks always can;
// threads of one block can unless a block barrier, or for two lanes of one warp a warp
// barrier, lies between them.
bool unordered(uint32_t b, unsigned t, uint32_t s, uint16_t ws, uint32_t b2, unsigned t2, uint32_t s2, uint16_t ws2) {
    if (b != b2) return true;
    if (t == t2 || s != s2) return false;
    return !(t / 32 == t2 / 32 && ws != ws2);
}

// Where a word lives, for messages (formatted only when something is wrong).
struct Where {
    unsigned buffer;  // 0: shared memory
    size_t index;
    std::string str() const {
        return buffer ? "device buffer #" + std::to_string(buffer) + "[" + std::to_string(index) + "]" : "shared memory word " + std::to_string(index);
    }
};

// One 4-byte word accessed by the running thread, whose shadow records accesses of the
// epoch `epoch` (older records are forgotten; for shared memory, whose epoch is a block,
// so is whether the word was written).
void check_word(Shadow& sh, uint32_t epoch, bool write, Where where) {
    const unsigned t = g_fibers[g_current].tid;
    const uint32_t b = g_block + 1, s = g_seg;
    const uint16_t ws = g_wseg[t / 32];
    if (sh.epoch != epoch) {
        sh.epoch = epoch;
        sh.w_block = sh.r_block = 0;
        sh.r_threads = sh.r_blocks = 0;
        if (!where.buffer) sh.defined = 0;
    }
    if (sh.w_block && unordered(b, t, s, ws, sh.w_block, sh.w_thread, sh.w_seg, sh.w_wseg))
        violation(std::string("race: ") + thread_name(b - 1, t) + (write ? " writes " : " reads ") + where.str() + ", which " +
                  thread_name(sh.w_block - 1, sh.w_thread) + " wrote with no barrier between them");
    if (write) {
        if (sh.r_block) {
            const bool others = sh.r_blocks || unordered(b, t, s, ws, sh.r_block, sh.r_thread, sh.r_seg, sh.r_wseg) ||
                                (sh.r_threads && sh.r_block == b && sh.r_seg == s);
            if (others)
                violation("race: " + thread_name(b - 1, t) + " writes " + where.str() + ", which " + thread_name(sh.r_block - 1, sh.r_thread) +
                          (sh.r_threads || sh.r_blocks ? " (and others)" : "") + " read with no barrier between them");
        }
        sh.w_block = b, sh.w_thread = (uint16_t)t, sh.w_seg = s, sh.w_wseg = ws;
        sh.r_block = 0, sh.r_threads = sh.r_blocks = 0;
        sh.defined = 1;
        return;
    }
    if (!sh.defined) violation("uninitialised read: " + thread_name(b - 1, t) + " reads " + where.str() + ", which nothing has written");
    if (sh.r_block && sh.r_block != b) sh.r_blocks = 1;
    if (sh.r_block == b && sh.r_seg == s) {
        if (sh.r_thread != t) sh.r_threads = 1;
    } else {
        sh.r_block = b, sh.r_thread = (uint16_t)t, sh.r_seg = s, sh.r_wseg = ws, sh.r_threads = 0;
    }
}


std::string hex(uintptr_t a) {
    char s[32];
    std::snprintf(s, sizeof s, "0x%lx", (unsigned long)a);
    return s;
}

// Every access of the instrumented kernels: `size` bytes at `p`.
void access(const void* p, size_t size, bool write) {
    if (!g_checking || g_current < 0 || !g_error.empty()) return;
    const uintptr_t a = reinterpret_cast<uintptr_t>(p);
    const uintptr_t arena = reinterpret_cast<uintptr_t>(g_arena.data());
    if (a >= arena && a < arena + ARENA_BYTES) {
        const size_t first = (a - arena) / 4, last = (a + size - 1 - arena) / 4;
        if ((last + 1) * 4 > g_arena_used) {
            violation("out of bounds: " + thread_name(g_block, g_fibers[g_current].tid) + (write ? " writes" : " reads") + " shared memory at byte " +
                      std::to_string(a - arena) + ", past the " + std::to_string(g_arena_used) + " bytes of this block");
            return;
        }
        for (size_t w = first; w <= last; ++w) check_word(g_arena_shadow[w], g_block_epoch, write, Where{0, w});
        return;
    }
    for (Buffer* b : g_args) {
        const uintptr_t d = reinterpret_cast<uintptr_t>(b->data());
        if (a >= d && a < d + b->len * 4) {
            const size_t first = (a - d) / 4, last = std::min((a + size - 1 - d) / 4, b->len - 1);
            for (size_t w = first; w <= last; ++w) check_word(b->shadow[w], g_epoch, write, Where{b->id, w});
            return;
        }
    }
    const Fiber& f = g_fibers[g_current];
    const uintptr_t stack = reinterpret_cast<uintptr_t>(f.stack.data());
    if (a >= stack && a < stack + f.stack.size()) return;  // the thread's own locals
    if (a >= reinterpret_cast<uintptr_t>(__executable_start) && a < reinterpret_cast<uintptr_t>(_end)) return;
    // The simulation's registers of shuffles and tensor-core fragments.
    auto within = [a](const auto& v) {
        const uintptr_t lo = reinterpret_cast<uintptr_t>(v.data());
        return a >= lo && a < lo + v.size() * sizeof(v[0]);
    };
    if (within(g_frag) || within(g_shfl)) return;
    Buffer* b;
    {
        std::lock_guard<std::mutex> mem(g_memory_lock);
        b = find_buffer(a);
    }
    if (!b) return;  // host memory the kernels do not own: the simulation's own state
    const uintptr_t d = reinterpret_cast<uintptr_t>(b->data());
    const std::string who = thread_name(g_block, f.tid) + (write ? " writes " : " reads ");
    if (a < d || a >= d + b->len * 4) {
        const long off = ((long)a - (long)d) / 4;
        violation("out of bounds: " + who + "device buffer #" + std::to_string(b->id) + "[" + std::to_string(off) + "] (" + hex(a) + "), outside its " +
                  std::to_string(b->len) + " values");
    } else {
        violation("foreign buffer: " + who + "device buffer #" + std::to_string(b->id) + " (" + hex(a) + "), which was not passed to the launch");
    }
}

void switch_to(Context& save, Context& load) {
#if defined(__x86_64__)
    sim_switch(&save.sp, load.sp);
#else
    swapcontext(&save.uc, &load.uc);
#endif
}

void yield_as(State s) {
    Fiber& f = g_fibers[g_current];
    f.state = s;
    switch_to(f.ctx, g_scheduler);
}

void fiber_main() {
    g_entry(g_arg);
    yield_as(DONE);  // never resumed
    std::abort();
}

// Makes `f` start in fiber_main at its next switch.
void start_fiber(Fiber& f) {
#if defined(__x86_64__)
    // What sim_switch pops: the control words, r15 ... rbp, then the address it returns
    // to; above that a zero return address for fiber_main, so that fiber_main starts with
    // the stack aligned as after a call (rsp = 8 mod 16).
    uintptr_t top = (reinterpret_cast<uintptr_t>(f.stack.data()) + f.stack.size()) & ~uintptr_t(15);
    uint64_t* sp = reinterpret_cast<uint64_t*>(top);
    *--sp = 0;
    *--sp = reinterpret_cast<uint64_t>(&fiber_main);
    for (int r = 0; r < 6; ++r) *--sp = 0;
    *--sp = 0x037F00001F80ull;  // MXCSR 0x1F80 (low word), x87 control word 0x037F
    f.ctx.sp = sp;
#else
    getcontext(&f.ctx.uc);
    f.ctx.uc.uc_stack.ss_sp = f.stack.data();
    f.ctx.uc.uc_stack.ss_size = f.stack.size();
    f.ctx.uc.uc_link = nullptr;
    makecontext(&f.ctx.uc, fiber_main, 0);
#endif
}

unsigned current_tid() { return g_fibers[g_current].tid; }

void set_thread_idx(unsigned tid) {
    sim::thread_idx.x = tid % sim::block_dim.x;
    sim::thread_idx.y = (tid / sim::block_dim.x) % sim::block_dim.y;
    sim::thread_idx.z = tid / (sim::block_dim.x * sim::block_dim.y);
}

// `n` indices in the launch's order: forward, reverse, or a fresh shuffle.
void ordered(std::vector<unsigned>& v, unsigned n) {
    v.resize(n);
    for (unsigned i = 0; i < n; ++i) v[i] = g_order == REVERSE ? n - 1 - i : i;
    if (g_order == SHUFFLED) std::shuffle(v.begin(), v.end(), g_shuffle);
}

// Runs every fiber of the current block until all are done. Returns an empty string or
// what went wrong.
std::string run_block() {
    for (unsigned t = 0; t < g_threads; ++t) {
        Fiber& f = g_fibers[t];
        f.state = RUNNABLE;
        f.tid = t;
        start_fiber(f);
    }
    g_copies.assign(g_threads, {});
    g_groups.assign(g_threads, 0);
    const unsigned warps = (g_threads + 31) / 32;
    g_seg = 0;
    g_wseg.assign(warps, 0);
    std::vector<unsigned> turn;
    for (;;) {
        ordered(turn, g_threads);
        for (unsigned t : turn) {
            if (g_fibers[t].state != RUNNABLE) continue;
            g_current = (int)t;
            set_thread_idx(t);
            switch_to(g_scheduler, g_fibers[t].ctx);
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
                ++g_wseg[w];
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
            ++g_seg;
            for (uint16_t& w : g_wseg) ++w;  // a block barrier orders the warps' lanes too
            continue;
        }
        return "threads wait at different barriers (deadlock)";
    }
}

// Every block of the grid in the launch's order. Returns an empty string or what went wrong.
std::string run_grid() {
    const unsigned gx = sim::grid_dim.x, gy = sim::grid_dim.y, gz = sim::grid_dim.z;
    std::vector<unsigned> blocks;
    ordered(blocks, gx * gy * gz);
    ++g_epoch;
    for (unsigned linear : blocks) {
        sim::block_idx = {linear % gx, linear / gx % gy, linear / (gx * gy)};
        g_block = linear;
        ++g_block_epoch;
        // Shared memory starts as NaN in every block; what the kernel reads before it
        // writes shows up in its results, and the checker names it.
        std::fill(g_arena.begin(), g_arena.begin() + g_arena_used / 4, POISON);
        const std::string e = run_block();
        if (!e.empty()) return block_name(linear) + ": " + e;
        if (!g_error.empty()) return g_error;
    }
    return "";
}

}  // namespace

// ---- what sim.h declares ---------------------------------------------------------------------

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

// The copy reads its source now (checked as this thread's read) and writes its
// destination when it lands (checked as this thread's write, at the barrier count of the
// wait that lands it).
void sim::cp_async(float* dst, const float* src) {
    const unsigned t = current_tid();
    access(src, 4, false);
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
        if (c.group < landed_below) {
            access(c.dst, 4, true);
            *c.dst = c.value;
        } else {
            keep.push_back(c);
        }
    }
    q.swap(keep);
}

extern "C" void* sim_dynamic_shared() { return g_arena.data(); }

extern "C" void* sim_shared_slot(const void* tag, unsigned bytes) {
    for (const auto& s : g_slots)
        if (s.first == tag) return reinterpret_cast<char*>(g_arena.data()) + s.second;
    const size_t at = (g_arena_used + 15) / 16 * 16;
    if (at + bytes - g_dynamic_bytes > STATIC_SHARED_LIMIT || at + bytes > ARENA_BYTES) {
        // The kernel cannot go on without its memory, and a GPU would not launch it.
        std::fprintf(stderr, "%s: more than 48 KiB of static shared memory in one block\n", g_kernel);
        std::abort();
    }
    g_slots.emplace_back(tag, at);
    g_arena_used = at + bytes;
    std::fill(g_arena.begin() + at / 4, g_arena.begin() + (at + bytes + 3) / 4, POISON);
    return reinterpret_cast<char*>(g_arena.data()) + at;
}

// ---- the instrumentation hooks -----------------------------------------------------------------
// The kernels are compiled with -fsanitize=thread and linked without its run-time library:
// these are the functions the compiler calls for each load and store.

extern "C" {
void __tsan_init() {}
void __tsan_func_entry(void*) {}
void __tsan_func_exit() {}
void __tsan_read1(void* p) { access(p, 1, false); }
void __tsan_read2(void* p) { access(p, 2, false); }
void __tsan_read4(void* p) { access(p, 4, false); }
void __tsan_read8(void* p) { access(p, 8, false); }
void __tsan_read16(void* p) { access(p, 16, false); }
void __tsan_write1(void* p) { access(p, 1, true); }
void __tsan_write2(void* p) { access(p, 2, true); }
void __tsan_write4(void* p) { access(p, 4, true); }
void __tsan_write8(void* p) { access(p, 8, true); }
void __tsan_write16(void* p) { access(p, 16, true); }
void __tsan_unaligned_read2(void* p) { access(p, 2, false); }
void __tsan_unaligned_read4(void* p) { access(p, 4, false); }
void __tsan_unaligned_read8(void* p) { access(p, 8, false); }
void __tsan_unaligned_read16(void* p) { access(p, 16, false); }
void __tsan_unaligned_write2(void* p) { access(p, 2, true); }
void __tsan_unaligned_write4(void* p) { access(p, 4, true); }
void __tsan_unaligned_write8(void* p) { access(p, 8, true); }
void __tsan_unaligned_write16(void* p) { access(p, 16, true); }
void __tsan_read_range(void* p, unsigned long size) {
    if (size) access(p, size, false);
}
void __tsan_write_range(void* p, unsigned long size) {
    if (size) access(p, size, true);
}
void __tsan_vptr_read(void**) {}
void __tsan_vptr_update(void**, void*) {}
}

// ---- device memory for Rust ----------------------------------------------------------------------

// A buffer of `len` floats between two poisoned red zones: zeroed and defined (what
// Core::alloc promises), or poisoned and undefined (scratch, which a kernel must write
// before it reads).
extern "C" float* sim_alloc(size_t len, int zeroed) {
    std::lock_guard<std::mutex> guard(g_memory_lock);
    Buffer* b = new Buffer();
    const size_t n = len ? len : 1;
    b->words.assign(n + 2 * RED_ZONE, POISON);
    b->len = n;
    b->id = g_next_buffer_id++;
    b->shadow.assign(n, Shadow{});
    if (zeroed) {
        std::fill(b->words.begin() + RED_ZONE, b->words.begin() + RED_ZONE + n, 0u);
        for (Shadow& s : b->shadow) s.defined = 1;
    }
    g_buffers[reinterpret_cast<uintptr_t>(b->data())] = b;
    return b->data();
}

extern "C" void sim_free(float* p) {
    std::lock_guard<std::mutex> guard(g_memory_lock);
    auto it = g_buffers.find(reinterpret_cast<uintptr_t>(p));
    if (it == g_buffers.end()) std::abort();  // freeing what was never allocated: a bug in Rust
    delete it->second;
    g_buffers.erase(it);
}

// The host wrote `len` floats from `p` (an upload): they are defined now.
extern "C" void sim_mark_defined(float* p, size_t len) {
    std::lock_guard<std::mutex> guard(g_memory_lock);
    auto it = g_buffers.find(reinterpret_cast<uintptr_t>(p));
    if (it == g_buffers.end()) std::abort();
    for (size_t i = 0; i < len && i < it->second->len; ++i) it->second->shadow[i].defined = 1;
}

// ---- the launch ----------------------------------------------------------------------------------

// Flags of sim_launch.
const int SIM_CHECK_ACCESSES = 1;  // the access checker
const int SIM_ALL_ORDERS = 2;      // forward, reverse and shuffled, compared bit for bit

// Runs `entry(arg)` as every thread of a grid x block launch of the kernel `name`, with the
// GEMM tiles in `gemm_precision`, fed as `gemm_feed`; `ptrs` are the launch's pointer
// arguments (0 for none), each the start of a buffer from sim_alloc. Writes a message into
// `err` and returns nonzero on a launch error (bad shape, barrier misuse, a violation the
// checker saw, results that depend on the order threads run in).
extern "C" int sim_launch(unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz, unsigned shared_bytes, int gemm_precision,
                          int gemm_feed, const char* name, const uint64_t* ptrs, unsigned n_ptrs, int flags, void (*entry)(void*), void* arg,
                          char* err, unsigned err_len) {
    std::lock_guard<std::mutex> guard(g_launch_lock);
    auto fail = [&](const std::string& msg) {
        std::snprintf(err, err_len, "%s", msg.c_str());
        g_checking = false;
        return 1;
    };
    const unsigned threads = bx * by * bz;
    if (threads == 0 || threads > 1024) return fail("block of " + std::to_string(threads) + " threads (1 to 1024 allowed)");
    if (gx == 0 || gy == 0 || gz == 0) return fail("empty grid");
    if (gy > 65535 || gz > 65535) return fail("grid y or z above 65535");
    if (shared_bytes > 48 * 1024) return fail("more than 48 KiB of dynamic shared memory");
    g_args.clear();
    {
        std::lock_guard<std::mutex> mem(g_memory_lock);
        for (unsigned i = 0; i < n_ptrs; ++i) {
            if (!ptrs[i]) continue;
            auto it = g_buffers.find((uintptr_t)ptrs[i]);
            if (it == g_buffers.end()) return fail("pointer argument " + std::to_string(i) + " is not the start of a simulated device buffer");
            if (std::find(g_args.begin(), g_args.end(), it->second) == g_args.end()) g_args.push_back(it->second);
        }
    }
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
    g_dynamic_bytes = (shared_bytes + 15) / 16 * 16;
    g_arena_used = g_dynamic_bytes;
    g_slots.clear();
    sim::block_dim = {bx, by, bz};
    sim::grid_dim = {gx, gy, gz};
    g_kernel = name;
    g_error.clear();

    // The inputs of every order: the launch's buffers and what the checker knows of them.
    struct Saved {
        std::vector<uint32_t> words;
        std::vector<uint8_t> defined;
    };
    const bool all_orders = flags & SIM_ALL_ORDERS;
    std::vector<Saved> before, after;
    auto save = [&](std::vector<Saved>& into) {
        into.clear();
        for (Buffer* b : g_args) {
            Saved s{std::vector<uint32_t>(b->words.begin() + RED_ZONE, b->words.begin() + RED_ZONE + b->len), {}};
            for (const Shadow& sh : b->shadow) s.defined.push_back(sh.defined);
            into.push_back(std::move(s));
        }
    };
    if (all_orders) save(before);
    const Order orders[] = {FORWARD, REVERSE, SHUFFLED};
    for (int o = 0; o < (all_orders ? 3 : 1); ++o) {
        g_order = orders[o];
        g_shuffle.seed(0x5eed + o);
        if (o > 0)
            for (size_t i = 0; i < g_args.size(); ++i) {
                std::copy(before[i].words.begin(), before[i].words.end(), g_args[i]->words.begin() + RED_ZONE);
                for (size_t w = 0; w < g_args[i]->len; ++w) g_args[i]->shadow[w].defined = before[i].defined[w];
            }
        g_checking = (flags & SIM_CHECK_ACCESSES) && o == 0;
        const std::string e = run_grid();
        g_checking = false;
        if (!e.empty()) return fail(o == 0 ? e : std::string(order_name(orders[o])) + " order: " + e);
        if (!all_orders) break;
        if (o == 0) {
            save(after);
            continue;
        }
        for (size_t i = 0; i < g_args.size(); ++i) {
            const uint32_t* now = g_args[i]->words.data() + RED_ZONE;
            for (size_t w = 0; w < g_args[i]->len; ++w)
                if (now[w] != after[i].words[w]) {
                    float x, y;
                    std::memcpy(&x, &after[i].words[w], 4);
                    std::memcpy(&y, &now[w], 4);
                    return fail(std::string(name) + ": the result depends on the order threads run in: device buffer #" + std::to_string(g_args[i]->id) + "[" +
                                std::to_string(w) + "] is " + std::to_string(x) + " in forward order and " + std::to_string(y) + " in " +
                                order_name(orders[o]) + " order");
                }
        }
    }
    // Only the first order was checked, so what it wrote is what counts as written.
    if (all_orders)
        for (size_t i = 0; i < g_args.size(); ++i)
            for (size_t w = 0; w < g_args[i]->len; ++w) g_args[i]->shadow[w].defined = after[i].defined[w];
    return 0;
}
