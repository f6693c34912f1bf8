// The one shared-memory tiled GEMM every convolution and linear kernel is built on.
//
// C[m, col] = sum_k A(m, k) * B(k, col) over k in [k_begin, k_end). A and B are loaders
// that compute an element from its coordinates: this is where the implicit GEMM happens,
// the convolution window (or the parity-class gather of a transposed convolution) is read
// straight from the NCHW tensors into shared memory, and nothing like an im2col matrix
// ever exists in global memory. Out-of-range coordinates load zero.
//
// A loader has `Line line(int i)`, the part of the address that depends only on the row
// of A (or the column of B); `Radix3 radix()`, how its reduction index k splits into
// digits (channel, kernel row, kernel column, say); `bool has(const Line&, const Digits&)`,
// false where the element is zero (outside the plane, a tap the parity class skips), which
// never depends on the top digit hi; `const float* at(const Line&, const Digits&)`, where
// it is (read only where it has one); and `long long hi_stride()`, how far `at` moves per
// unit of hi. Each thread loads the same rows of A and the same column of B at every
// step, and the same k offsets within a step, so the lines and the digits of each k are
// computed once per block (with divisions) and then only moved forward by GEMM_BK
// (without): the loop does no integer division. Where a step leaves every digit but hi
// alone, the addresses themselves just move (FixedFeed).
//
// Block: GEMM_THREADS threads computing a GEMM_BM x GEMM_BN tile of C. How the tile is
// multiplied depends on GEMM_PRECISION (common.cuh):
// - GEMM_FMA: each thread a TM x TN register tile at rows ty + 16 i and columns tx + 16 j
//   (so a warp reads 16 consecutive B values per step and two broadcast A values: no bank
//   conflicts), fp32 FMAs;
// - the tensor-core modes: eight warps in a 2 x 4 grid, each a (BM / 2) x (BN / 4) tile of
//   C as MMA_MT x MMA_NT mma.m16n8k8 TF32 tiles, or in GEMM_BF16 mma.m16n8k16 bf16 tiles
//   (whose C fragments lie as the TF32 ones do). A thread's accumulators are the C
//   fragments of its warp; gemm_row and gemm_col say where each lands.
// Either way a thread owns GEMM_TM x GEMM_TN accumulators, and gemm_store hands them out.
#pragma once
#include "common.cuh"

#define GEMM_A_LOADS ((GEMM_BM * GEMM_BK) / GEMM_THREADS)
#define GEMM_B_LOADS ((GEMM_BN * GEMM_BK) / GEMM_THREADS)
// The tensor-core warp grid.
#define MMA_WM (GEMM_BM / 2)  // rows of C per warp
#define MMA_WN (GEMM_BN / 4)  // columns of C per warp
#define MMA_MT (MMA_WM / 16)  // m16 tiles per warp
#define MMA_NT (MMA_WN / 8)   // n8 tiles per warp

// A reduction index k = (hi, mid, lo) in mixed radix (any, r_mid, r_lo).
struct Digits {
    int hi, mid, lo;
};
struct Radix3 {
    int r_mid, r_lo;
    Digits step;  // GEMM_BK in this radix
    __device__ __forceinline__ Radix3(int mid_radix, int lo_radix) : r_mid(mid_radix), r_lo(lo_radix), step(split(GEMM_BK)) {}
    __device__ __forceinline__ Digits split(int k) const {
        const int t = k / r_lo;
        return Digits{t / r_mid, t % r_mid, k % r_lo};
    }
    // k += 1.
    __device__ __forceinline__ void next(Digits& d) const {
        if (++d.lo < r_lo) return;
        d.lo = 0;
        if (++d.mid < r_mid) return;
        d.mid = 0;
        ++d.hi;
    }
    // k += GEMM_BK: each digit of the step is below its radix, so one carry per digit.
    __device__ __forceinline__ void advance(Digits& d) const {
        d.lo += step.lo;
        d.mid += step.mid;
        d.hi += step.hi;
        if (d.lo >= r_lo) {
            d.lo -= r_lo;
            ++d.mid;
        }
        if (d.mid >= r_mid) {
            d.mid -= r_mid;
            ++d.hi;
        }
    }
};

// An element of a tile: the value at `p` where `live`, zero elsewhere (p is then never
// read). Through the read-only path (ld.global.nc): a GEMM never writes what it reads,
// and FixedFeed's addresses are computed as bytes, from which the compiler could not
// tell global memory from any other.
__device__ __forceinline__ float value_or_zero(bool live, const float* p) { return live ? __ldg(p) : 0.0f; }
template <class Loader>
__device__ __forceinline__ float gemm_load(const Loader& l, const typename Loader::Line& line, const Digits& d) {
    return value_or_zero(l.has(line, d), l.at(line, d));
}

#if GEMM_HAS_MMA
__device__ __forceinline__ float tf32_bits_to_float(unsigned u) {
#ifdef GAN_SIM
    float f;
    std::memcpy(&f, &u, 4);
    return f;
#else
    return __uint_as_float(u);
#endif
}

__device__ __forceinline__ unsigned float_bits(float x) {
#ifdef GAN_SIM
    unsigned u;
    std::memcpy(&u, &x, 4);
    return u;
#else
    return __float_as_uint(x);
#endif
}

// x rounded to TF32 (8 exponent and 10 mantissa bits), to nearest with ties away from
// zero, as an mma operand: half a TF32 unit added to the magnitude, and the 13 low bits
// left for the tensor core, which ignores them. One integer add, where cvt.rna.tf32.f32
// costs a compare and an add on sm_90 (it keeps infinities; here one becomes a NaN, and
// a GEMM that sees an infinity has no finite result anyway).
__device__ __forceinline__ unsigned tf32_operand(float x) { return float_bits(x) + 0x1000u; }
// The same with the low bits cleared: the TF32 value itself, for the hi/lo split.
__device__ __forceinline__ unsigned to_tf32(float x) { return tf32_operand(x) & 0xffffe000u; }

// c += a . b on one warp: mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32. With g =
// lane / 4 and t = lane % 4 the fragments are (PTX ISA, "Matrix fragments for mma.m16n8k8"):
//   a0 A[g][t], a1 A[g+8][t], a2 A[g][t+4], a3 A[g+8][t+4]     (A is 16 x 8)
//   b0 B[t][g], b1 B[t+4][g]                                   (B is 8 x 8)
//   c0 C[g][2t], c1 C[g][2t+1], c2 C[g+8][2t], c3 C[g+8][2t+1] (C is 16 x 8)
// The simulation gathers the warp's fragments and multiplies by that definition, reading
// only the top 19 bits of each operand and truncating the sum toward zero, as the tensor
// cores do, so a fragment in the wrong lane, an operand not rounded to TF32 or a long
// chain of truncated sums shows up in the results.
__device__ __forceinline__ void mma_tf32(float& c0, float& c1, float& c2, float& c3, const unsigned (&a)[4],
                                         const unsigned (&b)[2]) {
#ifdef GAN_SIM
    const unsigned mine[6] = {a[0], a[1], a[2], a[3], b[0], b[1]};
    sim::frag_put(mine, 6);
    sim::syncwarp();  // every lane has published its fragments
    const int lane = sim::lane(), g = lane / 4, t = lane % 4;
    float* c[4] = {&c0, &c1, &c2, &c3};
    for (int q = 0; q < 4; ++q) {
        const int row = g + 8 * (q / 2), col = 2 * t + q % 2;
        double s = *c[q];  // TF32 products are exact in double, and so is this short sum, nearly
        for (int k = 0; k < 8; ++k) {
            const unsigned av = sim::frag_get((row % 8) * 4 + k % 4)[(row / 8) + 2 * (k / 4)] & 0xffffe000u;
            const unsigned bv = sim::frag_get(col * 4 + k % 4)[4 + k / 4] & 0xffffe000u;
            s += (double)tf32_bits_to_float(av) * (double)tf32_bits_to_float(bv);
        }
        // The result truncated toward zero, as the tensor cores accumulate.
        float f = (float)s;
        if (std::fabs((double)f) > std::fabs(s)) f = std::nextafter(f, 0.0f);
        *c[q] = f;
    }
    sim::syncwarp();  // every lane has read before anyone publishes again
#else
    asm volatile("mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
                 : "+f"(c0), "+f"(c1), "+f"(c2), "+f"(c3)
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#endif
}

// ---- bf16 (GEMM_BF16, --precision bf16) ------------------------------------------------------
// The bf16 bits of x rounded to nearest even (NaN stays NaN), as PyTorch and the CPU twin
// (src/backend/precision.rs, bf16_bits) round.
__device__ __forceinline__ unsigned bf16_bits_rn(float x) {
#ifdef GAN_SIM
    const unsigned u = float_bits(x);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (u >> 16) | 0x40u;
    return (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
#else
    unsigned short h;
    asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(h) : "f"(x));
    return h;
#endif
}
// x rounded to bf16, as a float (the low 16 bits zero): what the register-fed tile stores.
__device__ __forceinline__ float bf16_round(float x) { return tf32_bits_to_float(bf16_bits_rn(x) << 16); }
// Two values as one mma operand register: `lo` in the low half. With Rounded the values are
// already bf16 (bf16_round), so only their high halves are taken.
template <bool Rounded>
__device__ __forceinline__ unsigned bf16_pair(float lo, float hi) {
    if (Rounded) return (float_bits(lo) >> 16) | (float_bits(hi) & 0xffff0000u);
#ifdef GAN_SIM
    return bf16_bits_rn(lo) | (bf16_bits_rn(hi) << 16);
#else
    unsigned d;
    asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(d) : "f"(hi), "f"(lo));
    return d;
#endif
}

// c += a . b on one warp: mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32. Each register
// holds two bf16 values, the lower index in the low half. With g = lane / 4 and t = lane % 4
// (PTX ISA, "Matrix fragments for mma.m16n8k16" with .bf16):
//   a0 A[g][2t..2t+1], a1 A[g+8][2t..2t+1], a2 A[g][2t+8..2t+9], a3 A[g+8][2t+8..2t+9] (A 16 x 16)
//   b0 B[2t..2t+1][g], b1 B[2t+8..2t+9][g]                                            (B 16 x 8)
//   c0 C[g][2t], c1 C[g][2t+1], c2 C[g+8][2t], c3 C[g+8][2t+1]                          (C 16 x 8)
// The simulation gathers the warp's fragments and multiplies by that definition: bf16
// products are exact in double, the sum is truncated toward zero as in mma_tf32.
__device__ __forceinline__ void mma_bf16(float& c0, float& c1, float& c2, float& c3, const unsigned (&a)[4], const unsigned (&b)[2]) {
#ifdef GAN_SIM
    const unsigned mine[6] = {a[0], a[1], a[2], a[3], b[0], b[1]};
    sim::frag_put(mine, 6);
    sim::syncwarp();  // every lane has published its fragments
    const int lane = sim::lane(), g = lane / 4, t = lane % 4;
    float* c[4] = {&c0, &c1, &c2, &c3};
    auto half = [](unsigned reg, int k) { return tf32_bits_to_float(((reg >> (16 * (k % 2))) & 0xffffu) << 16); };
    for (int q = 0; q < 4; ++q) {
        const int row = g + 8 * (q / 2), col = 2 * t + q % 2;
        double s = *c[q];
        for (int k = 0; k < 16; ++k) {
            const float av = half(sim::frag_get((row % 8) * 4 + (k % 8) / 2)[(row / 8) + 2 * (k / 8)], k);
            const float bv = half(sim::frag_get(col * 4 + (k % 8) / 2)[4 + k / 8], k);
            s += (double)av * (double)bv;
        }
        float f = (float)s;
        if (std::fabs((double)f) > std::fabs(s)) f = std::nextafter(f, 0.0f);
        *c[q] = f;
    }
    sim::syncwarp();  // every lane has read before anyone publishes again
#else
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
                 : "+f"(c0), "+f"(c1), "+f"(c2), "+f"(c3)
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#endif
}

// One BK-deep step of the bf16 tile: each k16 slice of this warp's MMA_WM x MMA_WN block of
// C multiplied into fresh registers and added to the total with fp32 adds, so the tensor
// cores' truncating sums never chain over the whole reduction (as in tf32x3): the only
// roundings left beyond the operands' are those of an f32 GEMM, and the results match the
// CPU twin (the f32 GEMM of the rounded operands) to f32 summation order.
template <bool Rounded, int LDA, int LDB>
__device__ __forceinline__ void gemm_mma_step_bf16(const float (*As)[LDA], const float (*Bs)[LDB], float (&acc)[GEMM_TM][GEMM_TN]) {
    static_assert(GEMM_THREADS == 256 && GEMM_BK % 16 == 0 && MMA_WM % 16 == 0 && MMA_WN % 8 == 0 && GEMM_TM == 2 * MMA_MT &&
                      GEMM_TN == 2 * MMA_NT,
                  "eight warps in a 2 x 4 grid, each thread holding its warp's C fragments");
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, g = lane / 4, t = lane % 4;
    const int wm = (warp / 4) * MMA_WM, wn = (warp % 4) * MMA_WN;
#pragma unroll
    for (int k16 = 0; k16 < GEMM_BK; k16 += 16) {
        unsigned a[MMA_MT][4], b[MMA_NT][2];
#pragma unroll
        for (int mt = 0; mt < MMA_MT; ++mt) {
            const int r = wm + 16 * mt + g, k = k16 + 2 * t;
            a[mt][0] = bf16_pair<Rounded>(As[k][r], As[k + 1][r]);
            a[mt][1] = bf16_pair<Rounded>(As[k][r + 8], As[k + 1][r + 8]);
            a[mt][2] = bf16_pair<Rounded>(As[k + 8][r], As[k + 9][r]);
            a[mt][3] = bf16_pair<Rounded>(As[k + 8][r + 8], As[k + 9][r + 8]);
        }
#pragma unroll
        for (int nt = 0; nt < MMA_NT; ++nt) {
            const int c = wn + 8 * nt + g, k = k16 + 2 * t;
            b[nt][0] = bf16_pair<Rounded>(Bs[k][c], Bs[k + 1][c]);
            b[nt][1] = bf16_pair<Rounded>(Bs[k + 8][c], Bs[k + 9][c]);
        }
#pragma unroll
        for (int mt = 0; mt < MMA_MT; ++mt)
#pragma unroll
            for (int nt = 0; nt < MMA_NT; ++nt) {
                float p0 = 0.0f, p1 = 0.0f, p2 = 0.0f, p3 = 0.0f;
                mma_bf16(p0, p1, p2, p3, a[mt], b[nt]);
                acc[2 * mt][2 * nt] += p0;
                acc[2 * mt][2 * nt + 1] += p1;
                acc[2 * mt + 1][2 * nt] += p2;
                acc[2 * mt + 1][2 * nt + 1] += p3;
            }
    }
}

// One BK-deep step of the tensor-core tile: this warp's MMA_WM x MMA_WN block of C from the shared
// tiles, in the precision of GEMM_PRECISION. With `Rounded` the tiles already hold TF32
// operands (tf32_operand, stored as floats): GEMM_TF32 fed through registers rounds each
// value once as it stores it, not once per warp that reads it.
template <bool Rounded, int LDA, int LDB>
__device__ __forceinline__ void gemm_mma_step(const float (*As)[LDA], const float (*Bs)[LDB], float (&acc)[GEMM_TM][GEMM_TN]) {
    if (GEMM_PRECISION == GEMM_BF16) {
        gemm_mma_step_bf16<Rounded>(As, Bs, acc);
        return;
    }
    static_assert(GEMM_THREADS == 256 && GEMM_BK % 8 == 0 && MMA_WM % 16 == 0 && MMA_WN % 8 == 0 && GEMM_TM == 2 * MMA_MT &&
                      GEMM_TN == 2 * MMA_NT,
                  "eight warps in a 2 x 4 grid, each thread holding its warp's C fragments");
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, g = lane / 4, t = lane % 4;
    const int wm = (warp / 4) * MMA_WM, wn = (warp % 4) * MMA_WN;
    const bool split = GEMM_PRECISION == GEMM_TF32X3;
    // The tensor cores do not round their sums to nearest the way an FMA does (their
    // accumulation truncates), and over a reduction of thousands that bias adds up: about
    // 2^-24 of the sum per mma, 1e-4 over K = 16384. tf32x3 promises fp32 accuracy, so each
    // of its steps sums into fresh registers, added to the running total with ordinary fp32
    // adds. In tf32 the operands' own rounding (2^-11) is far larger, and the sums go
    // straight into the total, as cuDNN's TF32 convolutions do.
    float part[GEMM_TM][GEMM_TN];
    if (split) {
#pragma unroll
        for (int i = 0; i < GEMM_TM; ++i)
#pragma unroll
            for (int j = 0; j < GEMM_TN; ++j) part[i][j] = 0.0f;
    }
    float(&sum)[GEMM_TM][GEMM_TN] = split ? part : acc;
#pragma unroll
    for (int k8 = 0; k8 < GEMM_BK; k8 += 8) {
        unsigned ah[MMA_MT][4], al[MMA_MT][4], bh[MMA_NT][2], bl[MMA_NT][2];
#pragma unroll
        for (int mt = 0; mt < MMA_MT; ++mt) {
            const int r = wm + 16 * mt + g;
            const float v[4] = {As[k8 + t][r], As[k8 + t][r + 8], As[k8 + t + 4][r], As[k8 + t + 4][r + 8]};
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                ah[mt][e] = split ? to_tf32(v[e]) : Rounded ? float_bits(v[e]) : tf32_operand(v[e]);
                al[mt][e] = split ? tf32_operand(v[e] - tf32_bits_to_float(ah[mt][e])) : 0u;
            }
        }
#pragma unroll
        for (int nt = 0; nt < MMA_NT; ++nt) {
            const int c = wn + 8 * nt + g;
            const float v[2] = {Bs[k8 + t][c], Bs[k8 + t + 4][c]};
#pragma unroll
            for (int e = 0; e < 2; ++e) {
                bh[nt][e] = split ? to_tf32(v[e]) : Rounded ? float_bits(v[e]) : tf32_operand(v[e]);
                bl[nt][e] = split ? tf32_operand(v[e] - tf32_bits_to_float(bh[nt][e])) : 0u;
            }
        }
#pragma unroll
        for (int mt = 0; mt < MMA_MT; ++mt)
#pragma unroll
            for (int nt = 0; nt < MMA_NT; ++nt) {
                float& c0 = sum[2 * mt][2 * nt];
                float& c1 = sum[2 * mt][2 * nt + 1];
                float& c2 = sum[2 * mt + 1][2 * nt];
                float& c3 = sum[2 * mt + 1][2 * nt + 1];
                if (split) {  // the small cross terms first
                    mma_tf32(c0, c1, c2, c3, al[mt], bh[nt]);
                    mma_tf32(c0, c1, c2, c3, ah[mt], bl[nt]);
                }
                mma_tf32(c0, c1, c2, c3, ah[mt], bh[nt]);
            }
    }
    if (split) {
#pragma unroll
        for (int i = 0; i < GEMM_TM; ++i)
#pragma unroll
            for (int j = 0; j < GEMM_TN; ++j) acc[i][j] += part[i][j];
    }
}
#endif

// Where this thread's elements of each BK-deep step come from: GEMM_A_LOADS rows of A at
// one k offset (k fastest: weights and NCHW activations are contiguous along k for most
// callers) and one column of B (columns fastest: output pixels are contiguous) at
// GEMM_B_LOADS consecutive k offsets. A feed's step() hands out their addresses (and
// whether each is live: not a zero) and moves on by GEMM_BK. Two feeds share this layout:
// - DigitFeed, for any loader: it keeps the digits of each k and asks the loader for the
//   address at every step (one set of digits for the B run where the run never crosses
//   the last digit's radix, `Run`; one per element otherwise);
// - FixedFeed, when both loaders' digits below hi are the same at every step
//   (fixed_digits): it asks once and then only moves each address on by a constant.
struct FeedLayout {
    int a_k, a_m, b_c, b_k;
    __device__ __forceinline__ FeedLayout() {
        const int tid = threadIdx.x;
        a_k = tid % GEMM_BK;
        a_m = tid / GEMM_BK;
        b_c = tid % GEMM_BN;
        b_k = tid / GEMM_BN;
    }
    // Shared-memory coordinates of element r: As[a_k][a_row(r)], Bs[b_row(r)][b_c].
    __device__ __forceinline__ int a_row(int r) const { return a_m + r * (GEMM_THREADS / GEMM_BK); }
    __device__ __forceinline__ int b_row(int r) const { return b_k * GEMM_B_LOADS + r; }
};

template <class LoadA, class LoadB, bool Run>
struct DigitFeed : FeedLayout {
    const LoadA& load_a;
    const LoadB& load_b;
    int k_end;
    typename LoadA::Line a_line[GEMM_A_LOADS];
    bool a_ok[GEMM_A_LOADS];
    typename LoadB::Line b_line;
    bool b_ok;
    Radix3 a_radix, b_radix;
    Digits a_at, b_at[Run ? 1 : GEMM_B_LOADS];

    __device__ __forceinline__ DigitFeed(int m0, int n0, int M, int N, int k_begin, int k_end_, const LoadA& la,
                                         const LoadB& lb, const Radix3& ra, const Radix3& rb)
        : load_a(la), load_b(lb), k_end(k_end_), a_radix(ra), b_radix(rb) {
#pragma unroll
        for (int r = 0; r < GEMM_A_LOADS; ++r) {
            const int m = m0 + a_row(r);
            a_ok[r] = m < M;
            a_line[r] = load_a.line(a_ok[r] ? m : m0);
        }
        b_ok = n0 + b_c < N;
        b_line = load_b.line(b_ok ? n0 + b_c : n0);
        a_at = a_radix.split(k_begin + a_k);
#pragma unroll
        for (int r = 0; r < (Run ? 1 : GEMM_B_LOADS); ++r) b_at[r] = b_radix.split(k_begin + b_row(r));
    }
    // With Run, a thread's B elements are GEMM_B_LOADS consecutive k that differ in the
    // last digit only (runs): one set of digits serves them all.
    __device__ __forceinline__ static bool runs(int k_begin, const Radix3& rb) {
        return rb.r_lo % GEMM_B_LOADS == 0 && k_begin % GEMM_B_LOADS == 0;
    }
    // put_a(r, live, address) for each A element of the step at k0, put_b(r, live, address)
    // for each B one; an element that is not live is zero.
    template <class PutA, class PutB>
    __device__ __forceinline__ void step(int k0, const PutA& put_a, const PutB& put_b) {
        const bool a_in = k0 + a_k < k_end;
#pragma unroll
        for (int r = 0; r < GEMM_A_LOADS; ++r)
            put_a(r, a_ok[r] && a_in && load_a.has(a_line[r], a_at), load_a.at(a_line[r], a_at));
        a_radix.advance(a_at);
#pragma unroll
        for (int r = 0; r < GEMM_B_LOADS; ++r) {
            const Digits d = Run ? Digits{b_at[0].hi, b_at[0].mid, b_at[0].lo + r} : b_at[Run ? 0 : r];
            put_b(r, b_ok && k0 + b_row(r) < k_end && load_b.has(b_line, d), load_b.at(b_line, d));
            if (!Run) b_radix.advance(b_at[Run ? 0 : r]);
        }
        if (Run) b_radix.advance(b_at[0]);
    }
};

// A step of GEMM_BK moves k = (hi, mid, lo) to (hi + step.hi, mid, lo) when r_mid r_lo
// divides GEMM_BK: a 4x4 or 1x1 window (16 or 1 taps per channel), the 2x2 taps of a
// stride-2 parity class, a plain matrix. Every loader's address is then a fixed
// hi_stride() further on at each step, and whether it is zero (outside the plane, a tap
// the class skips) depends only on mid and lo, so it never changes.
__device__ __forceinline__ bool fixed_digits(const Radix3& r) { return r.step.mid == 0 && r.step.lo == 0; }

// What a FixedFeed's zero elements read: one zero in global memory, so that every element
// is a plain load with no test in the loop.
static __device__ const float gemm_zero = 0.0f;

// Bytes a loader's addresses move per step, or -1 where that does not fit an int.
template <class Loader>
__device__ __forceinline__ int fixed_move(const Loader& l, const Radix3& r) {
    const long long bytes = (long long)r.step.hi * l.hi_stride() * (long long)sizeof(float);
    return bytes <= 0x7fffffffLL ? (int)bytes : -1;
}

// A FixedFeed element: where it starts and how far it moves per step, or, when it is zero
// at every step (not `ok`, or no element there), gemm_zero and no move.
template <class Loader>
__device__ __forceinline__ void fixed_place(const Loader& l, const typename Loader::Line& line, const Digits& d, bool ok,
                                            int move, const float*& at, int& at_move) {
    const bool live = ok && l.has(line, d);
    at = live ? l.at(line, d) : &gemm_zero;
    at_move = live ? move : 0;
}

// The feed when both loaders have fixed digits and every step is whole ((k_end - k_begin)
// a multiple of GEMM_BK, so no k is past the end): each element keeps its address and the
// distance it moves per step, zero for an element that is zero at every step (then
// pointing at gemm_zero). The loop only adds and loads.
template <class LoadA, class LoadB>
struct FixedFeed : FeedLayout {
    const float* a_at[GEMM_A_LOADS];
    const float* b_at[GEMM_B_LOADS];
    int a_move[GEMM_A_LOADS], b_move[GEMM_B_LOADS];

    // Whether this block can use it: the same answer for every thread of the block.
    __device__ __forceinline__ static bool fits(int k_begin, int k_end, const LoadA& la, const LoadB& lb, const Radix3& ra,
                                                const Radix3& rb) {
        return fixed_digits(ra) && fixed_digits(rb) && (k_end - k_begin) % GEMM_BK == 0 && fixed_move(la, ra) >= 0 &&
               fixed_move(lb, rb) >= 0;
    }
    __device__ __forceinline__ FixedFeed(int m0, int n0, int M, int N, int k_begin, const LoadA& la, const LoadB& lb,
                                         const Radix3& ra, const Radix3& rb) {
        const int am = fixed_move(la, ra), bm = fixed_move(lb, rb);
        const Digits ad = ra.split(k_begin + a_k);
#pragma unroll
        for (int r = 0; r < GEMM_A_LOADS; ++r) {
            const int m = m0 + a_row(r);
            fixed_place(la, la.line(m < M ? m : m0), ad, m < M, am, a_at[r], a_move[r]);
        }
        const bool b_ok = n0 + b_c < N;
        const typename LoadB::Line line = lb.line(b_ok ? n0 + b_c : n0);
#pragma unroll
        for (int r = 0; r < GEMM_B_LOADS; ++r) fixed_place(lb, line, rb.split(k_begin + b_row(r)), b_ok, bm, b_at[r], b_move[r]);
    }
    template <class PutA, class PutB>
    __device__ __forceinline__ void step(int, const PutA& put_a, const PutB& put_b) {
#pragma unroll
        for (int r = 0; r < GEMM_A_LOADS; ++r) {
            put_a(r, true, a_at[r]);
            a_at[r] = (const float*)((const char*)a_at[r] + a_move[r]);
        }
#pragma unroll
        for (int r = 0; r < GEMM_B_LOADS; ++r) {
            put_b(r, true, b_at[r]);
            b_at[r] = (const float*)((const char*)b_at[r] + b_move[r]);
        }
    }
};

#if GEMM_HAS_MMA
// 4 bytes from global `src` into shared `dst` without passing through registers
// (cp.async.ca, sm_80 and newer), landing by the cp_async_wait that covers its group; a
// zero stores at once where the element is not live.
__device__ __forceinline__ void cp_async_f32(float* dst, bool live, const float* src) {
    if (!live) {
        *dst = 0.0f;
        return;
    }
#ifdef GAN_SIM
    sim::cp_async(dst, src);
#else
    unsigned d;
    asm volatile("{ .reg .u64 a; cvta.to.shared.u64 a, %1; cvt.u32.u64 %0, a; }" : "=r"(d) : "l"(dst));
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4;\n" ::"r"(d), "l"(src) : "memory");
#endif
}
// Closes the group of copies issued since the last commit.
__device__ __forceinline__ void cp_async_commit() {
#ifdef GAN_SIM
    sim::cp_async_commit();
#else
    asm volatile("cp.async.commit_group;\n" ::: "memory");
#endif
}
// Waits until at most `Pending` of this thread's most recent groups are still in flight.
template <int Pending>
__device__ __forceinline__ void cp_async_wait() {
#ifdef GAN_SIM
    sim::cp_async_wait(Pending);
#else
    asm volatile("cp.async.wait_group %0;\n" ::"n"(Pending) : "memory");
#endif
}
#endif

// The block's shared tiles: GEMM_RING buffers of each (common.cuh).
typedef float GemmTileA[GEMM_BK][GEMM_BM + GEMM_PAD];
typedef float GemmTileB[GEMM_BK][GEMM_BN + GEMM_PAD];

#if GEMM_HAS_MMA
// The tensor-core tile fed by asynchronous copies: GEMM_STAGES shared buffers in a ring,
// the copies for step s + GEMM_STAGES - 1 in flight while step s multiplies, and one
// barrier per step (GEMM_ASYNC, the -async GEMM modes).
template <class Feed>
__device__ __forceinline__ void gemm_steps_async(Feed& feed, int k_begin, int k_end, GemmTileA* As, GemmTileB* Bs,
                                                 float (&acc)[GEMM_TM][GEMM_TN]) {
    const int steps = k_begin < k_end ? (k_end - k_begin + GEMM_BK - 1) / GEMM_BK : 0;
    // Every step commits one group, empty past the end, so the wait count stays the same.
    auto issue = [&](int s) {
        if (s < steps) {
            const int b = s % GEMM_STAGES;
            feed.step(
                k_begin + s * GEMM_BK, [&](int r, bool live, const float* src) { cp_async_f32(&As[b][feed.a_k][feed.a_row(r)], live, src); },
                [&](int r, bool live, const float* src) { cp_async_f32(&Bs[b][feed.b_row(r)][feed.b_c], live, src); });
        }
        cp_async_commit();
    };
#pragma unroll
    for (int s = 0; s < GEMM_STAGES - 1; ++s) issue(s);
    for (int s = 0; s < steps; ++s) {
        cp_async_wait<GEMM_STAGES - 2>();  // this thread's copies for step s have landed
        __syncthreads();                   // everyone's have, and everyone is done with step s - 1
        issue(s + GEMM_STAGES - 1);        // into the buffer step s - 1 used
        gemm_mma_step<false>(As[s % GEMM_STAGES], Bs[s % GEMM_STAGES], acc);
    }
    cp_async_wait<0>();
}
#endif

// What the register-fed tile stores for a value: in GEMM_TF32 its TF32 operand, in
// GEMM_BF16 its bf16 rounding (gemm_mma_step<true>), otherwise the value.
__device__ __forceinline__ float tile_value(float v) {
#if GEMM_HAS_MMA
    if (GEMM_PRECISION == GEMM_TF32) return tf32_bits_to_float(tf32_operand(v));
    if (GEMM_PRECISION == GEMM_BF16) return bf16_round(v);
#endif
    return v;
}

// The tile fed through registers: the next step's values wait in registers while this
// step multiplies, so the global loads are in flight during the math. One shared buffer,
// two barriers per step.
template <class Feed>
__device__ __forceinline__ void gemm_steps(Feed& feed, int k_begin, int k_end, GemmTileA& As, GemmTileB& Bs,
                                           float (&acc)[GEMM_TM][GEMM_TN]) {
    const int tid = threadIdx.x;
    const int tx = tid % 16, ty = tid / 16;
    float a_next[GEMM_A_LOADS], b_next[GEMM_B_LOADS];
    auto fetch = [&](int k0) {
        feed.step(
            k0, [&](int r, bool live, const float* src) { a_next[r] = value_or_zero(live, src); },
            [&](int r, bool live, const float* src) { b_next[r] = value_or_zero(live, src); });
    };
    // (Measured on an H200: a second shared buffer, to drop one barrier per step, was
    // slower than this at 64 x 64 tiles.)
    if (k_begin < k_end) fetch(k_begin);

    for (int k0 = k_begin; k0 < k_end; k0 += GEMM_BK) {
#pragma unroll
        for (int r = 0; r < GEMM_A_LOADS; ++r) As[feed.a_k][feed.a_row(r)] = tile_value(a_next[r]);
#pragma unroll
        for (int r = 0; r < GEMM_B_LOADS; ++r) Bs[feed.b_row(r)][feed.b_c] = tile_value(b_next[r]);
        __syncthreads();
        if (k0 + GEMM_BK < k_end) fetch(k0 + GEMM_BK);
#if GEMM_HAS_MMA
        if (GEMM_PRECISION == GEMM_TF32 || GEMM_PRECISION == GEMM_BF16) {
            gemm_mma_step<true>(As, Bs, acc);
        } else if (GEMM_PRECISION != GEMM_FMA) {
            gemm_mma_step<false>(As, Bs, acc);
        } else
#endif
        {
#pragma unroll
            for (int kk = 0; kk < GEMM_BK; ++kk) {
                float a[GEMM_TM], b[GEMM_TN];
#pragma unroll
                for (int i = 0; i < GEMM_TM; ++i) a[i] = As[kk][ty + 16 * i];
#pragma unroll
                for (int j = 0; j < GEMM_TN; ++j) b[j] = Bs[kk][tx + 16 * j];
#pragma unroll
                for (int i = 0; i < GEMM_TM; ++i)
#pragma unroll
                    for (int j = 0; j < GEMM_TN; ++j) acc[i][j] = fmaf(a[i], b[j], acc[i][j]);
            }
        }
        __syncthreads();
    }
}

template <class Feed>
__device__ __forceinline__ void gemm_feed_steps(Feed& feed, int k_begin, int k_end, GemmTileA* As, GemmTileB* Bs,
                                                float (&acc)[GEMM_TM][GEMM_TN]) {
#if GEMM_HAS_MMA
    if (GEMM_ASYNC) {
        gemm_steps_async(feed, k_begin, k_end, As, Bs, acc);
        return;
    }
#endif
    gemm_steps(feed, k_begin, k_end, As[0], Bs[0], acc);
}

// acc = this thread's part of the GEMM_BM x GEMM_BN tile of C at (m0, n0), over k in
// [k_begin, k_end). Every thread of the block must call it.
template <class LoadA, class LoadB>
__device__ __forceinline__ void gemm_block_tile(int m0, int n0, int M, int N, int k_begin, int k_end, const LoadA& load_a,
                                                const LoadB& load_b, float (&acc)[GEMM_TM][GEMM_TN]) {
    static_assert(GEMM_THREADS % GEMM_BK == 0 && GEMM_THREADS % GEMM_BN == 0, "loader layout");
    SHARED_ARRAY(GemmTileA, As, GEMM_RING);
    SHARED_ARRAY(GemmTileB, Bs, GEMM_RING);
#pragma unroll
    for (int i = 0; i < GEMM_TM; ++i)
#pragma unroll
        for (int j = 0; j < GEMM_TN; ++j) acc[i][j] = 0.0f;
    const Radix3 ra = load_a.radix(), rb = load_b.radix();
    // The same for every thread of the block: no divergence.
    if (FixedFeed<LoadA, LoadB>::fits(k_begin, k_end, load_a, load_b, ra, rb)) {
        FixedFeed<LoadA, LoadB> feed(m0, n0, M, N, k_begin, load_a, load_b, ra, rb);
        gemm_feed_steps(feed, k_begin, k_end, As, Bs, acc);
    } else if (DigitFeed<LoadA, LoadB, true>::runs(k_begin, rb)) {
        DigitFeed<LoadA, LoadB, true> feed(m0, n0, M, N, k_begin, k_end, load_a, load_b, ra, rb);
        gemm_feed_steps(feed, k_begin, k_end, As, Bs, acc);
    } else {
        DigitFeed<LoadA, LoadB, false> feed(m0, n0, M, N, k_begin, k_end, load_a, load_b, ra, rb);
        gemm_feed_steps(feed, k_begin, k_end, As, Bs, acc);
    }
}

// ---- thin GEMMs ---------------------------------------------------------------------------
// C = A . B with at most THIN_M rows: the 3-channel layers (the generator's image, the
// input gradient of the discriminator's first layer). A GEMM_BM-row tile would leave all
// but three of its rows idle and still gather every B value once per block; here each of
// THIN_THREADS threads owns one column of C and all M rows, A (M x K, at most THIN_A
// values) sits in shared memory, and B is gathered along k, neighbouring threads reading
// neighbouring columns. fp32 FMAs in every GEMM mode: the math is a small part of these
// layers; the loads are the rest. In GEMM_BF16 the operands are rounded to bf16 as they are
// loaded (thin_operand), so these layers multiply what the tiles would: a product of two
// bf16 values is exact in f32.
// Taps per channel of the window that gets its own loop: the 2 x 2 of a stride-2 4x4 parity
// class, the layers these kernels serve.
#define THIN_TAPS 4

// Fills acc with column `col` of C over k in [0, K). Every thread of the block must call
// it (A is loaded together); false when col >= N, so the thread has nothing to store.
__device__ __forceinline__ float thin_operand(float v) {
#if GEMM_HAS_MMA
    if (GEMM_PRECISION == GEMM_BF16) return bf16_round(v);
#endif
    return v;
}

template <class LoadA, class LoadB>
__device__ __forceinline__ bool gemm_thin_column(int col, int M, int N, int K, const LoadA& load_a, const LoadB& load_b,
                                                 float (&acc)[THIN_M]) {
    SHARED_ARRAY(float, As, THIN_A);  // As[k THIN_M + m], zero for m >= M
    const Radix3 a_radix = load_a.radix();
    for (int i = threadIdx.x; i < K * THIN_M; i += blockDim.x) {
        const int k = i / THIN_M, m = i % THIN_M;
        As[i] = m < M ? thin_operand(gemm_load(load_a, load_a.line(m), a_radix.split(k))) : 0.0f;
    }
    __syncthreads();
#pragma unroll
    for (int m = 0; m < THIN_M; ++m) acc[m] = 0.0f;
    if (col >= N) return false;
    const typename LoadB::Line line = load_b.line(col);
    const Radix3 b_radix = load_b.radix();
    if (b_radix.r_mid * b_radix.r_lo == THIN_TAPS && K % THIN_TAPS == 0) {
        // The THIN_TAPS taps of each channel (hi) are at the same places in every channel,
        // hi_stride() apart: their addresses and which are zero are found once, and the
        // loop only moves them on.
        const float* at[THIN_TAPS];
        bool live[THIN_TAPS];
#pragma unroll
        for (int t = 0; t < THIN_TAPS; ++t) {
            const Digits d = b_radix.split(t);
            live[t] = load_b.has(line, d);
            at[t] = load_b.at(line, d);
        }
        const long long stride = load_b.hi_stride();
        for (int k = 0; k < K; k += THIN_TAPS) {
#pragma unroll
            for (int t = 0; t < THIN_TAPS; ++t) {
                const float b = thin_operand(value_or_zero(live[t], at[t]));
                at[t] += stride;
#pragma unroll
                for (int m = 0; m < THIN_M; ++m) acc[m] = fmaf(As[(k + t) * THIN_M + m], b, acc[m]);
            }
        }
        return true;
    }
    Digits d = b_radix.split(0);
#pragma unroll 4
    for (int k = 0; k < K; ++k) {
        const float b = thin_operand(gemm_load(load_b, line, d));
        b_radix.next(d);
#pragma unroll
        for (int m = 0; m < THIN_M; ++m) acc[m] = fmaf(As[k * THIN_M + m], b, acc[m]);
    }
    return true;
}

// Row and column of C owned by accumulator (i, j) of this thread.
__device__ __forceinline__ int gemm_row(int m0, int i) {
    const int tid = threadIdx.x;
    if (GEMM_PRECISION == GEMM_FMA) return m0 + tid / 16 + 16 * i;
    const int lane = tid % 32, warp = tid / 32;
    return m0 + (warp / 4) * MMA_WM + (i / 2) * 16 + (i % 2) * 8 + lane / 4;
}
__device__ __forceinline__ int gemm_col(int n0, int j) {
    const int tid = threadIdx.x;
    if (GEMM_PRECISION == GEMM_FMA) return n0 + tid % 16 + 16 * j;
    const int lane = tid % 32, warp = tid / 32;
    return n0 + (warp % 4) * MMA_WN + (j / 2) * 8 + (lane % 4) * 2 + j % 2;
}

// Hands each in-range accumulator of this thread to `store(row, col, value)`: the one
// epilogue loop every GEMM kernel shares; the kernels differ only in where a value goes.
template <class Store>
__device__ __forceinline__ void gemm_store(int m0, int n0, int M, int N, const float (&acc)[GEMM_TM][GEMM_TN],
                                           const Store& store) {
#pragma unroll
    for (int i = 0; i < GEMM_TM; ++i) {
        const int m = gemm_row(m0, i);
        if (m >= M) continue;
#pragma unroll
        for (int j = 0; j < GEMM_TN; ++j) {
            const int col = gemm_col(n0, j);
            if (col < N) store(m, col, acc[i][j]);
        }
    }
}

// Element (i, k) at p[i * ld + k]: a row-major matrix read along its rows.
struct AlongRows {
    const float* p;
    int ld;
    typedef const float* Line;
    __device__ __forceinline__ Line line(int i) const { return p + (long long)i * ld; }
    __device__ __forceinline__ Radix3 radix() const { return Radix3(1, 1); }  // k = hi
    __device__ __forceinline__ bool has(const Line&, const Digits&) const { return true; }
    __device__ __forceinline__ const float* at(const Line& l, const Digits& k) const { return l + k.hi; }
    __device__ __forceinline__ long long hi_stride() const { return 1; }
};

// Element (i, k) at p[k * ld + i]: a row-major matrix read down its columns.
struct DownColumns {
    const float* p;
    int ld;
    typedef const float* Line;
    __device__ __forceinline__ Line line(int i) const { return p + i; }
    __device__ __forceinline__ Radix3 radix() const { return Radix3(1, 1); }
    __device__ __forceinline__ bool has(const Line&, const Digits&) const { return true; }
    __device__ __forceinline__ const float* at(const Line& l, const Digits& k) const { return l + (long long)k.hi * ld; }
    __device__ __forceinline__ long long hi_stride() const { return ld; }
};

// Element (channel i, k = (n, q)) of an NCHW tensor with `c` channels and `plane` values
// per channel: the activations of a weight gradient, reduced over batch and pixels.
struct ChannelOverBatch {
    const float* p;
    int c, plane;
    typedef const float* Line;
    __device__ __forceinline__ Line line(int i) const { return p + (long long)i * plane; }
    __device__ __forceinline__ Radix3 radix() const { return Radix3(plane, 1); }  // (n, q, 0)
    __device__ __forceinline__ bool has(const Line&, const Digits&) const { return true; }
    __device__ __forceinline__ const float* at(const Line& l, const Digits& k) const {
        return l + (long long)k.hi * c * plane + k.mid;
    }
    __device__ __forceinline__ long long hi_stride() const { return (long long)c * plane; }
};

// The convolution window of a forward-direction pass: row r = (ch, ky, kx), column =
// (n, oy, ox) over a grid_h x grid_w grid of window positions; the value is
// src[n, ch, oy*s - p + ky, ox*s - p + kx], zero outside the plane. Used by conv2d forward
// and conv_transpose2d backward_input (as B, one column per thread).
struct WindowColumns {
    const float* src;
    int c, h, w, k, stride, pad, grid_h, grid_w;
    struct Line {
        const float* img;
        int iy0, ix0;
    };
    __device__ __forceinline__ Line line(int col) const {
        const int ox = col % grid_w, oy = (col / grid_w) % grid_h, n = col / (grid_w * grid_h);
        return Line{src + (long long)n * c * h * w, oy * stride - pad, ox * stride - pad};
    }
    __device__ __forceinline__ Radix3 radix() const { return Radix3(k, k); }  // (ch, ky, kx)
    __device__ __forceinline__ bool has(const Line& l, const Digits& r) const {
        const int iy = l.iy0 + r.mid, ix = l.ix0 + r.lo;
        return iy >= 0 && iy < h && ix >= 0 && ix < w;
    }
    __device__ __forceinline__ const float* at(const Line& l, const Digits& r) const {
        return l.img + ((long long)r.hi * h + l.iy0 + r.mid) * w + l.ix0 + r.lo;
    }
    __device__ __forceinline__ long long hi_stride() const { return (long long)h * w; }
};

// The same window seen from the other side, for the weight gradients: the line is the
// window row r = (ch, ky, kx) (one per thread), k = (n, oy, ox) runs over batch and grid.
struct WindowRows {
    const float* src;
    int c, h, w, k, stride, pad, grid_h, grid_w;
    struct Line {
        const float* plane;
        int dy, dx;  // ky - pad, kx - pad
    };
    __device__ __forceinline__ Line line(int r) const {
        const int kx = r % k, ky = (r / k) % k, ch = r / (k * k);
        return Line{src + (long long)ch * h * w, ky - pad, kx - pad};
    }
    __device__ __forceinline__ Radix3 radix() const { return Radix3(grid_h, grid_w); }  // (n, oy, ox)
    __device__ __forceinline__ bool has(const Line& l, const Digits& q) const {
        const int iy = q.mid * stride + l.dy, ix = q.lo * stride + l.dx;
        return iy >= 0 && iy < h && ix >= 0 && ix < w;
    }
    __device__ __forceinline__ const float* at(const Line& l, const Digits& q) const {
        return l.plane + (long long)q.hi * c * h * w + (q.mid * stride + l.dy) * w + q.lo * stride + l.dx;
    }
    __device__ __forceinline__ long long hi_stride() const { return (long long)c * h * w; }
};

// The transposed direction, split by output parity so no zero is ever multiplied: for an
// output row oy of class py = oy mod s, only taps ky = (py + p) mod s + s * jy reach an input
// row, iy = (oy + p - ky) / s. A stride-2 4x4 kernel becomes four stride-1 2x2 convolutions.
// Rows r = (c, jy, jx) with jy, jx < taps = ceil(k / s); columns = (n, qy, qx) over the
// class grid, oy = py + s * qy.
struct ParityClass {
    int py, px, ry, rx, qh, qw, taps, s;
    __device__ __forceinline__ ParityClass(int cls, int stride, int pad, int k, int out_h, int out_w) {
        s = stride;
        py = cls / stride;
        px = cls % stride;
        ry = (py + pad) % stride;
        rx = (px + pad) % stride;
        qh = out_h > py ? (out_h - py + stride - 1) / stride : 0;
        qw = out_w > px ? (out_w - px + stride - 1) / stride : 0;
        taps = (k + stride - 1) / stride;
    }
    // Image of class column `col` = (n, qy, qx), and its position in a row-major plane
    // `width` wide: (py + s qy, px + s qx).
    __device__ __forceinline__ int image(int col) const { return col / (qw * qh); }
    __device__ __forceinline__ int offset(int col, int width) const {
        const int qx = col % qw, qy = (col / qw) % qh;
        return (py + s * qy) * width + px + s * qx;
    }
};

// B of the parity-split passes (conv2d backward_input, conv_transpose2d forward): one
// column (n, qy, qx) per thread, rows r = (ch, jy, jx). Tap ky = ry + s jy reads input row
// iy = (oy + p - ky) / s = qy0 - jy, with qy0 = (py + p - ry) / s + qy exact.
struct ParityColumns {
    const float* src;
    int c, h, w, k, stride, pad;
    ParityClass pc;
    struct Line {
        const float* img;
        int qy0, qx0;
    };
    __device__ __forceinline__ Line line(int col) const {
        const int qx = col % pc.qw, qy = (col / pc.qw) % pc.qh, n = col / (pc.qw * pc.qh);
        return Line{src + (long long)n * c * h * w, (pc.py + pad - pc.ry) / stride + qy, (pc.px + pad - pc.rx) / stride + qx};
    }
    __device__ __forceinline__ Radix3 radix() const { return Radix3(pc.taps, pc.taps); }  // (ch, jy, jx)
    __device__ __forceinline__ bool has(const Line& l, const Digits& r) const {
        const int iy = l.qy0 - r.mid, ix = l.qx0 - r.lo;
        return pc.ry + stride * r.mid < k && pc.rx + stride * r.lo < k && iy >= 0 && ix >= 0 && iy < h && ix < w;
    }
    __device__ __forceinline__ const float* at(const Line& l, const Digits& r) const {
        return l.img + ((long long)r.hi * h + l.qy0 - r.mid) * w + l.qx0 - r.lo;
    }
    __device__ __forceinline__ long long hi_stride() const { return (long long)h * w; }
};

// A of the parity-split passes: the weight taps of this class, `w` laid out as
// [outer, inner, k, k] with `inner` the GEMM row (m) and `outer` the channel of r.
struct ParityWeights {
    const float* w;
    int inner, k, stride;
    ParityClass pc;
    typedef int Line;
    __device__ __forceinline__ Line line(int m) const { return m; }
    __device__ __forceinline__ Radix3 radix() const { return Radix3(pc.taps, pc.taps); }  // (outer, jy, jx)
    __device__ __forceinline__ bool has(const Line&, const Digits& r) const {
        return pc.ry + stride * r.mid < k && pc.rx + stride * r.lo < k;
    }
    __device__ __forceinline__ const float* at(const Line& m, const Digits& r) const {
        return w + (((long long)r.hi * inner + m) * k + pc.ry + stride * r.mid) * k + pc.rx + stride * r.lo;
    }
    __device__ __forceinline__ long long hi_stride() const { return (long long)inner * k * k; }
};
