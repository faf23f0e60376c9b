// attention_sm90.cuh -- the attention kernels of attention.cuh with Hopper's warpgroup MMA
// (sm_90a): S = Q K^T and O += P V as wgmma.mma_async, Q and K/V tiles in the canonical
// 128-byte-swizzled layout read through shared-memory descriptors, P from registers. Two
// kernels: attention_sm90_body (impl 1: every thread gathers and computes, FA2's schedule)
// and, at the end of the file, attention_ws_body (impl 2: producer warps and consumer
// warpgroups, FA3's).
//
// impl 1: one CTA is WGS warpgroups of 64 query rows each (WGS = 2 only where Pq >= 128: the
// two share every gathered K/V tile, which halves the gather traffic per FLOP; a 64-row tile
// gives 64 FLOPs per byte read from L2, already ~4.7 TB/s at 300 TFLOP/s). Warp w owns rows
// 16w..16w+15, and the wgmma accumulator layout of a warp is the
// mma.sync C layout of attention.cuh, so the key walk, the gathers, the online softmax and
// the epilogue are the same functions. Gathered rows arrive by cp.async (generic proxy) and
// are read by wgmma (async proxy): every thread fences the proxies after its copies complete
// and before the barrier.
#pragma once

#ifndef VECATTN_GENERATED
#include "attention.cuh"
#endif

namespace vecattn {

__device__ __forceinline__ void fence_proxy_async() {
    asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
}
__device__ __forceinline__ void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wgmma_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wgmma_wait_all() { asm volatile("wgmma.wait_group.sync.aligned 0;\n" ::: "memory"); }
template <int N>
__device__ __forceinline__ void wgmma_wait() { asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory"); }

// ---- mbarriers (the warp-specialized kernel) ----------------------------------------------
__device__ __forceinline__ void mbar_init(unsigned bar, unsigned count) {
    asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(bar), "r"(count) : "memory");
}
// One arrival (release: this thread's earlier shared-memory writes and reads are ordered first).
__device__ __forceinline__ void mbar_arrive(unsigned bar) {
    asm volatile("{\n.reg .b64 state;\nmbarrier.arrive.shared::cta.b64 state, [%0];\n}\n" ::"r"(bar) : "memory");
}
// One arrival, made by the hardware once all of this thread's earlier cp.async copies landed.
__device__ __forceinline__ void mbar_arrive_copies(unsigned bar) {
    asm volatile("cp.async.mbarrier.arrive.noinc.shared::cta.b64 [%0];\n" ::"r"(bar) : "memory");
}
// One arrival that also expects `bytes` more of asynchronous copies (TMA) in this phase.
__device__ __forceinline__ void mbar_arrive_expect_tx(unsigned bar, unsigned bytes) {
    asm volatile("{\n.reg .b64 state;\nmbarrier.arrive.expect_tx.shared::cta.b64 state, [%0], %1;\n}\n" ::"r"(bar),
                 "r"(bytes)
                 : "memory");
}
// TMA: the box at coordinates (c0, c1, c2, c3) of the tensor `map` describes (a generic
// address of a __grid_constant__ parameter) into shared memory at dst; the bytes count
// towards the transactions of mbarrier `bar`.
__device__ __forceinline__ void tma_load_4d(unsigned dst, const void *map, int c0, int c1, int c2, int c3, unsigned bar) {
    asm volatile(
        "cp.async.bulk.tensor.4d.shared::cluster.global.tile.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3, %4, %5}], [%6];\n" ::"r"(dst),
        "l"(map), "r"(c0), "r"(c1), "r"(c2), "r"(c3), "r"(bar)
        : "memory");
}
// Wait (acquire) until the phase of parity `parity` has completed.
__device__ __forceinline__ void mbar_wait(unsigned bar, unsigned parity) {
    unsigned done;
    do {
        asm volatile("{\n.reg .pred p;\nmbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n"
                     "selp.u32 %0, 1, 0, p;\n}\n"
                     : "=r"(done)
                     : "r"(bar), "r"(parity)
                     : "memory");
    } while (!done);
}
__device__ __forceinline__ void named_barrier_sync(int id, int threads) {
    asm volatile("bar.sync %0, %1;\n" ::"r"(id), "r"(threads) : "memory");
}
__device__ __forceinline__ void named_barrier_arrive(int id, int threads) {
    asm volatile("bar.arrive %0, %1;\n" ::"r"(id), "r"(threads) : "memory");
}

// Shared-memory matrix descriptor, 128-byte swizzle: start address, leading and stride byte
// offsets (each >> 4), layout type 1 in bits 62-63. Slabs start on 1024-byte boundaries, so
// the base offset field stays 0.
__device__ __forceinline__ unsigned long long smem_desc(unsigned addr, unsigned lbo, unsigned sbo) {
    unsigned long long d = (unsigned long long)((addr & 0x3FFFF) >> 4);
    d |= (unsigned long long)((lbo >> 4) & 0x3FFF) << 16;
    d |= (unsigned long long)((sbo >> 4) & 0x3FFF) << 32;
    d |= 1ull << 62;
    return d;
}

#define VA_ACC32(a)                                                                                    \
    "+f"(a[0]), "+f"(a[1]), "+f"(a[2]), "+f"(a[3]), "+f"(a[4]), "+f"(a[5]), "+f"(a[6]), "+f"(a[7]),   \
        "+f"(a[8]), "+f"(a[9]), "+f"(a[10]), "+f"(a[11]), "+f"(a[12]), "+f"(a[13]), "+f"(a[14]),      \
        "+f"(a[15]), "+f"(a[16]), "+f"(a[17]), "+f"(a[18]), "+f"(a[19]), "+f"(a[20]), "+f"(a[21]),    \
        "+f"(a[22]), "+f"(a[23]), "+f"(a[24]), "+f"(a[25]), "+f"(a[26]), "+f"(a[27]), "+f"(a[28]),    \
        "+f"(a[29]), "+f"(a[30]), "+f"(a[31])
#define VA_D32                                                                                         \
    "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, " \
    "%21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}"

// One shared-memory x shared-memory wgmma (both operands K-major): D (+)= A B, accumulating
// into D only when `accumulate` is non-zero. %P, %A, %B: the operand numbers after D's.
#define VA_WGMMA_SS(SHAPE, TYPES, DREGS, ACC, P, A, B)                                                 \
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %" #P ", 0;\n"                                   \
                 "wgmma.mma_async.sync.aligned." SHAPE ".f32." TYPES " " DREGS ", %" #A ", %" #B        \
                 ", p, 1, 1, 0, 0;\n}\n"                                                               \
                 : ACC                                                                                  \
                 : "l"(da), "l"(db), "r"(accumulate))

// d(64x64, fp32) (+)= A(64x16, shared, K-major) * B(16x64, shared, K-major).
template <bool BF16>
__device__ __forceinline__ void wgmma_ss(float (&d)[32], unsigned long long da, unsigned long long db, int accumulate) {
    if (BF16)
        VA_WGMMA_SS("m64n64k16", "bf16.bf16", VA_D32, VA_ACC32(d), 34, 32, 33);
    else
        VA_WGMMA_SS("m64n64k16", "f16.f16", VA_D32, VA_ACC32(d), 34, 32, 33);
}

// One registers x shared-memory wgmma (B MN-major: transposed): D += A B, A the four
// registers a[0..3] (operands %A0..%A3), B the descriptor db (%B).
#define VA_WGMMA_RS(SHAPE, TYPES, DREGS, ACC, A0, A1, A2, A3, B)                                        \
    asm volatile("wgmma.mma_async.sync.aligned." SHAPE ".f32." TYPES " " DREGS ", {%" #A0 ", %" #A1     \
                 ", %" #A2 ", %" #A3 "}, %" #B ", 1, 1, 1, 1;\n"                                         \
                 : ACC                                                                                  \
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(db))

// d(64x64, fp32) += A(64x16, registers) * B(16x64, shared, MN-major: transposed).
template <bool BF16>
__device__ __forceinline__ void wgmma_rs(float (&d)[32], const unsigned (&a)[4], unsigned long long db) {
    if (BF16)
        VA_WGMMA_RS("m64n64k16", "bf16.bf16", VA_D32, VA_ACC32(d), 32, 33, 34, 35, 36);
    else
        VA_WGMMA_RS("m64n64k16", "f16.f16", VA_D32, VA_ACC32(d), 32, 33, 34, 35, 36);
}

#define VA_ACC64(a)                                                                                    \
    VA_ACC32(a), "+f"(a[32]), "+f"(a[33]), "+f"(a[34]), "+f"(a[35]), "+f"(a[36]), "+f"(a[37]),          \
        "+f"(a[38]), "+f"(a[39]), "+f"(a[40]), "+f"(a[41]), "+f"(a[42]), "+f"(a[43]), "+f"(a[44]),      \
        "+f"(a[45]), "+f"(a[46]), "+f"(a[47]), "+f"(a[48]), "+f"(a[49]), "+f"(a[50]), "+f"(a[51]),      \
        "+f"(a[52]), "+f"(a[53]), "+f"(a[54]), "+f"(a[55]), "+f"(a[56]), "+f"(a[57]), "+f"(a[58]),      \
        "+f"(a[59]), "+f"(a[60]), "+f"(a[61]), "+f"(a[62]), "+f"(a[63])
#define VA_D64                                                                                         \
    "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, " \
    "%21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, "   \
    "%40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, "   \
    "%59, %60, %61, %62, %63}"

// d(64x128, fp32) (+)= A(64x16, shared, K-major) * B(16x128, shared, K-major).
template <bool BF16>
__device__ __forceinline__ void wgmma_ss128(float (&d)[64], unsigned long long da, unsigned long long db, int accumulate) {
    if (BF16)
        VA_WGMMA_SS("m64n128k16", "bf16.bf16", VA_D64, VA_ACC64(d), 66, 64, 65);
    else
        VA_WGMMA_SS("m64n128k16", "f16.f16", VA_D64, VA_ACC64(d), 66, 64, 65);
}

// d(64x128, fp32) += A(64x16, registers) * B(16x128, shared, MN-major: transposed). B spans
// two 64-column slabs: the descriptor's leading byte offset is the distance between them.
template <bool BF16>
__device__ __forceinline__ void wgmma_rs128(float (&d)[64], const unsigned (&a)[4], unsigned long long db) {
    if (BF16)
        VA_WGMMA_RS("m64n128k16", "bf16.bf16", VA_D64, VA_ACC64(d), 64, 65, 66, 67, 68);
    else
        VA_WGMMA_RS("m64n128k16", "f16.f16", VA_D64, VA_ACC64(d), 64, 65, 66, 67, 68);
}

// A [DT][4] accumulator array viewed as the 32-register operand of one 64-column wgmma.
template <int DT>
__device__ __forceinline__ float (&acc_slice(float (&o)[DT][4], int j0))[32] {
    return *reinterpret_cast<float(*)[32]>(&o[j0][0]);
}

// O (+)= P V for k step kk (16 keys) of a step of BN keys: P's A fragment a in registers, V
// [keys][d] as the transposed B operand (16 keys per k step = 2048 bytes; each 64-column half
// of D is one slab). WIDE (D 128): one m64n128k16 covers both slabs (half the wgmmas of two
// m64n64k16); it needs more registers than a CTA of two per SM leaves (ptxas C7602 at 80).
template <int D, int BN, bool BF16, bool WIDE>
__device__ __forceinline__ void pv_kstep(float (&o)[D / 8][4], const unsigned (&a)[4], unsigned v_tile, int kk) {
    if constexpr (WIDE && D == 128) {
        wgmma_rs128<BF16>(*reinterpret_cast<float(*)[64]>(&o[0][0]), a, smem_desc(v_tile + kk * 2048, BN * 128, 1024));
    } else {
#pragma unroll
        for (int half = 0; half < D / 64; ++half)
            wgmma_rs<BF16>(acc_slice<D / 8>(o, half * 8), a, smem_desc(v_tile + half * BN * 128 + kk * 2048, BN * 128, 1024));
    }
}

template <int D, int PQ, int WGS, bool CAUSAL, bool BF16>
__device__ __forceinline__ void attention_sm90_body(const vecattn_attn_params &p) {
    constexpr int BM = 64 * WGS, BN = 64, THREADS = 128 * WGS;
    static_assert(WGS == 1 || WGS == 2, "one or two warpgroups");
    constexpr int NT = BN / 8, DT = D / 8;
    constexpr int Q_BYTES = BM * D * 2, KV_BYTES = BN * D * 2;
    // the 128-byte swizzle needs 1024-byte aligned slabs: the host adds 1 KiB of slack
    extern __shared__ __align__(1024) unsigned char smem_raw[];
    unsigned char *smem = smem_raw + ((1024 - (smem_addr(smem_raw) & 1023)) & 1023);
    const unsigned q_base = smem_addr(smem);
    const unsigned k_base = q_base + Q_BYTES, v_base = k_base + KV_BYTES;
    int *positions = (int *)(smem + Q_BYTES + 2 * KV_BYTES);  // [2][BN]

    const vecattn_problem &pb = p.pb;
    const int h = blockIdx.y, b = blockIdx.z;
    const int hk = h / (pb.heads_q / pb.heads_kv);
    constexpr int SPLIT = PQ / BM;
    const int cta = CAUSAL ? gridDim.x - 1 - blockIdx.x : blockIdx.x;  // longest first
    const int i = pb.qblock_begin + cta / SPLIT;
    const int t0 = i * PQ + (cta % SPLIT) * BM;
    const int t_end = min(min(t0 + BM, i * PQ + PQ), pb.seq_q);
    if (t0 >= t_end) return;
    const int shift = pb.seq_k - pb.seq_q;

    const elem_t *q = (const elem_t *)pb.q + b * pb.q_stride_b + h * pb.q_stride_h;
    const elem_t *k = (const elem_t *)pb.k + b * pb.k_stride_b + hk * pb.k_stride_h;
    const elem_t *v = (const elem_t *)pb.v + b * pb.v_stride_b + hk * pb.v_stride_h;
    const KeySet keys = block_keys<PQ, CAUSAL>(p, b, h, i, t_end - 1 + shift);
    const int steps = (keys.total() + BN - 1) / BN;
    const int first_pos = t0 + shift;
    const int k_stride = (int)pb.k_stride_s, v_stride = (int)pb.v_stride_s;
    const int warp = threadIdx.x >> 5, g = (threadIdx.x & 31) >> 2;
    const unsigned q_rows = (warp >> 2) * 64 * 128;  // this warpgroup's 64 rows inside each Q slab

    load_q_tile<D, BM, THREADS, true>(q, pb.q_stride_s, t0, t_end, q_base);
    MaskCursor cursor;
    mask_start(keys, cursor);
    int need_mask = 0;
    if (steps > 0) {
        need_mask = __syncthreads_or(fill_positions<BN, THREADS, CAUSAL>(keys, 0, positions, first_pos, cursor));
        gather_rows<D, BN, THREADS, true>(k, k_stride, positions, k_base);
    }

    float o[DT][4];
#pragma unroll
    for (int j = 0; j < DT; ++j) o[j][0] = o[j][1] = o[j][2] = o[j][3] = 0.0f;
    float row_max[2] = {-VA_INF, -VA_INF}, row_sum[2] = {0.0f, 0.0f};
    const int pos_row[2] = {t0 + warp * 16 + g + shift, t0 + warp * 16 + g + 8 + shift};

    for (int step = 0; step < steps; ++step) {
        int *pos = positions + (step & 1) * BN;
        int *pos_next = positions + ((step + 1) & 1) * BN;
        cp_async_wait<0>();
        fence_proxy_async();
        __syncthreads();  // Q and K(step) landed and are visible to wgmma; P V(step - 1) is done
        gather_rows<D, BN, THREADS, true>(v, v_stride, pos, v_base);
        // the next step's positions (a mask decode is warp 0's); done here rather than while
        // S is in flight, where the live S registers would make ptxas spill
        int next_mask = 0;
        if (step + 1 < steps)
            next_mask = fill_positions<BN, THREADS, CAUSAL>(keys, step + 1, pos_next, first_pos, cursor);

        // S = Q K^T: D/16 steps of k; within a 128-byte slab a step advances the start by 32 bytes
        float s[NT][4];
        wgmma_fence();
#pragma unroll
        for (int kk = 0; kk < D / 16; ++kk) {
            unsigned q_addr = q_base + (kk >> 2) * BM * 128 + q_rows + (kk & 3) * 32;
            unsigned k_addr = k_base + (kk >> 2) * BN * 128 + (kk & 3) * 32;
            wgmma_ss<BF16>(acc_slice<NT>(s, 0), smem_desc(q_addr, 16, 1024), smem_desc(k_addr, 16, 1024), kk > 0);
        }
        wgmma_commit();
        wgmma_wait_all();

        softmax_step<NT, DT, CAUSAL>(s, o, row_max, row_sum, pos_row, pos, need_mask, p.scale_log2);

        cp_async_wait<0>();
        fence_proxy_async();
        need_mask = __syncthreads_or(next_mask);  // V(step) landed; K(step) no longer read
        if (step + 1 < steps) gather_rows<D, BN, THREADS, true>(k, k_stride, pos_next, k_base);

        // O += P V, each k step's P fragment packed just before its wgmma
        wgmma_fence();
#pragma unroll
        for (int kk = 0; kk < BN / 16; ++kk) {
            unsigned a[4];
            pack_p<BF16, NT>(s, kk, a);
            pv_kstep<D, BN, BF16, true>(o, a, v_base, kk);
        }
        wgmma_commit();
        wgmma_wait_all();
    }

    write_atom<DT, BF16>(p, b, h, t0 + warp * 16, t_end, o, row_max, row_sum);
}

// S (+)= Q K^T over one k step of 16 for BN = 64 or 128 keys (one wgmma either way).
template <int BN, bool BF16>
__device__ __forceinline__ void s_gemm(float (&sc)[BN / 8][4], unsigned long long dq, unsigned long long dk, int accumulate) {
    if constexpr (BN == 64)
        wgmma_ss<BF16>(*reinterpret_cast<float(*)[32]>(&sc[0][0]), dq, dk, accumulate);
    else
        wgmma_ss128<BF16>(*reinterpret_cast<float(*)[64]>(&sc[0][0]), dq, dk, accumulate);
}

// O (+)= P V for one step of BN keys, P's A fragments packed beforehand (see pv_kstep).
template <int D, int BN, bool BF16, bool WIDE>
__device__ __forceinline__ void pv_gemm(float (&o)[D / 8][4], const unsigned (&pa)[BN / 16][4], unsigned v_tile) {
#pragma unroll
    for (int kk = 0; kk < BN / 16; ++kk) pv_kstep<D, BN, BF16, WIDE>(o, pa[kk], v_tile, kk);
}

// The producers' gather of BN rows into a stage (impl 2): as gather_rows_by, with a fixed trip
// count (tid / RC < ROWS_PER_PASS: no bound test per row), the -1 rows clamped to row 0 and
// read with source size 0 (zeros), and one unsigned 32x32->64 multiply-add per row address.
template <int D, int BN, int THREADS>
__device__ __forceinline__ void gather_stage(int tid, const elem_t *src, int stride_s, const int *pos, unsigned dst) {
    constexpr int RC = D / 8, ROWS_PER_PASS = THREADS / RC;
    static_assert(THREADS % RC == 0 && BN % ROWS_PER_PASS == 0, "passes cover whole rows");
    const int piece = tid % RC, row0 = tid / RC;
    const char *base = (const char *)(src + piece * 8);
    const unsigned row_bytes = (unsigned)stride_s * 2u;  // below 2^32: checked on the host
    // rows row0 + k ROWS_PER_PASS share row0's swizzle when ROWS_PER_PASS % 8 == 0
    const unsigned to = dst + tile_offset<RC, BN, true>(row0, piece);
#pragma unroll
    for (int it = 0; it < BN / ROWS_PER_PASS; ++it) {
        const int row = row0 + it * ROWS_PER_PASS;
        const int kp = pos[row];
        const char *from = base + (unsigned long long)(unsigned)max(kp, 0) * row_bytes;  // one wide multiply-add
        const unsigned at = ROWS_PER_PASS % 8 == 0 ? to + it * ROWS_PER_PASS * 128 : dst + tile_offset<RC, BN, true>(row, piece);
        asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(at), "l"(from), "r"(kp >= 0 ? 16 : 0));
    }
}

// ---- the warp-specialized kernel (impl 2) --------------------------------------------------
//
// NC consumer warpgroups (64 query rows each, sharing every K/V tile) and PW producer warps.
// The producers walk the key set STAGES steps ahead of the consumers: they write a step's
// positions (the first producer warp decodes the mask), one of them arrives on the stage's
// `full_k` barrier for all positions, then every producer gathers its K rows with cp.async,
// arrives on `full_k` when they have landed (cp.async.mbarrier.arrive), gathers its V rows
// and arrives on `full_v` likewise. The consumers wait on `full_k` to run S = Q K^T and the
// softmax, on `full_v` before O += P V, and release the stage on `empty` (one lane per warp).
// No CTA-wide barrier in the loop: gathers, mask decoding and their latencies leave the
// consumers' instruction stream. Two consumer warpgroups take turns to issue their GEMMs
// (ping-pong), so that one's softmax runs while the other's GEMMs hold the tensor cores.
//
// With whole producer warpgroups, PREGS > 0: the producers give registers back (setmaxnreg)
// and the consumers take CREGS each; the generator computes both from the CTA's launch
// registers, so that the consumers' increase never waits for registers that are not there.
template <int D, int PQ, int NC, int BN, int PW, int STAGES, int PREGS, int CREGS, bool CAUSAL, bool BF16>
__device__ __forceinline__ void attention_ws_body(const vecattn_attn_params &p) {
    constexpr int BM = 64 * NC, CONSUMERS = 128 * NC, PRODUCERS = 32 * PW;
    static_assert(BN == 64 || BN == 128, "64 or 128 keys per step");
    constexpr int NT = BN / 8, DT = D / 8;
    constexpr int Q_BYTES = BM * D * 2, KV_BYTES = BN * D * 2;
    static_assert(NC == 1 || NC == 2, "one or two consumer warpgroups");
    extern __shared__ __align__(1024) unsigned char smem_raw[];
    unsigned char *smem = smem_raw + ((1024 - (smem_addr(smem_raw) & 1023)) & 1023);
    const unsigned q_base = smem_addr(smem);
    const unsigned k_base = q_base + Q_BYTES;              // stage s: + s * KV_BYTES
    const unsigned v_base = k_base + STAGES * KV_BYTES;
    int *positions = (int *)(smem + Q_BYTES + 2 * STAGES * KV_BYTES);  // [STAGES][BN]
    int *flags = positions + STAGES * BN;                              // [STAGES][PW]: a key needs the mask
    // full_k[STAGES], empty[STAGES], full_v[STAGES]
    const unsigned bars = (smem_addr(flags + STAGES * PW) + 7u) & ~7u;
    const unsigned bars_v = bars + 16 * STAGES;

    const vecattn_problem &pb = p.pb;
    const int h = blockIdx.y, b = blockIdx.z;
    const int hk = h / (pb.heads_q / pb.heads_kv);
    constexpr int SPLIT = PQ / BM;
    const int cta = CAUSAL ? gridDim.x - 1 - blockIdx.x : blockIdx.x;  // longest first
    const int i = pb.qblock_begin + cta / SPLIT;
    const int t0 = i * PQ + (cta % SPLIT) * BM;
    const int t_end = min(min(t0 + BM, i * PQ + PQ), pb.seq_q);
    if (t0 >= t_end) return;
    const int shift = pb.seq_k - pb.seq_q;
    const KeySet keys = block_keys<PQ, CAUSAL>(p, b, h, i, t_end - 1 + shift);
    const int steps = (keys.total() + BN - 1) / BN;
    const int first_pos = t0 + shift;
    const int lane = threadIdx.x & 31;

    if (threadIdx.x == 0) {
        for (int s = 0; s < STAGES; ++s) {
            mbar_init(bars + 8 * s, PRODUCERS + 1);      // K: each producer's copies, and the positions
            mbar_init(bars_v + 8 * s, PRODUCERS);        // V: each producer's copies
            mbar_init(bars + 8 * (STAGES + s), 4 * NC);  // a lane per consumer warp
        }
    }
    __syncthreads();

    if (threadIdx.x >= CONSUMERS) {  // the producer warps
        if (PREGS > 0) asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(PREGS > 0 ? PREGS : 24) : "memory");
        const int ptid = threadIdx.x - CONSUMERS;
        const elem_t *k = (const elem_t *)pb.k + b * pb.k_stride_b + hk * pb.k_stride_h;
        const elem_t *v = (const elem_t *)pb.v + b * pb.v_stride_b + hk * pb.v_stride_h;
        const int k_stride = (int)pb.k_stride_s, v_stride = (int)pb.v_stride_s;
        MaskCursor cursor;
        mask_start(keys, cursor, ptid < 32);
        for (int step = 0; step < steps; ++step) {
            const int s = step % STAGES;
            if (step >= STAGES) mbar_wait(bars + 8 * (STAGES + s), ((step / STAGES) + 1) & 1);
            int *pos = positions + s * BN;
            int need_mask = fill_positions<BN, PRODUCERS, CAUSAL>(keys, step, pos, first_pos, cursor, ptid, ptid < 32);
            need_mask = __any_sync(0xffffffffu, need_mask);
            if (lane == 0) flags[s * PW + (ptid >> 5)] = need_mask;
            if (PW > 1)  // every thread's positions, before the gathers read them
                named_barrier_sync(2, PRODUCERS);
            else
                __syncwarp();
            const unsigned full_k = bars + 8 * s, full_v = bars_v + 8 * s;
            const int run = p.tma ? keys.run_at(step * BN, BN) : -1;
            if (run >= 0) {
                // The step's keys are consecutive rows: thread 0 has the TMA load both tiles, one
                // box per 64-column slab (rows past seq_k read as zeros).
                // Its arrivals carry the byte counts; the others arrive with nothing to copy.
                auto tma_tile = [&](unsigned tile, const vecattn_tensor_map *map, unsigned bar) {
                    mbar_arrive_expect_tx(bar, KV_BYTES);
#pragma unroll
                    for (int c = 0; c < D / 64; ++c) tma_load_4d(tile + c * BN * 128, map, c * 64, run, hk, b, bar);
                };
                if (ptid == 0) {
                    fence_proxy_async();  // the stage's last writes were generic-proxy copies
                    tma_tile(k_base + s * KV_BYTES, &p.tma_k, full_k);
                    tma_tile(v_base + s * KV_BYTES, &p.tma_v, full_v);
                }
                mbar_arrive(full_k);
                if (ptid != 0) mbar_arrive(full_v);
                continue;
            }
            // one release for all positions and flags: the barrier above ordered them first
            if (ptid == 0) mbar_arrive(full_k);
            gather_stage<D, BN, PRODUCERS>(ptid, k, k_stride, pos, k_base + s * KV_BYTES);
            mbar_arrive_copies(full_k);
            gather_stage<D, BN, PRODUCERS>(ptid, v, v_stride, pos, v_base + s * KV_BYTES);
            mbar_arrive_copies(full_v);
        }
        asm volatile("cp.async.wait_all;\n" ::: "memory");
        return;
    }

    // the consumers
    if (CREGS > 0) asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(CREGS > 0 ? CREGS : 256) : "memory");
    const elem_t *q = (const elem_t *)pb.q + b * pb.q_stride_b + h * pb.q_stride_h;
    const int warp = threadIdx.x >> 5, g = lane >> 2;
    const unsigned q_rows = (warp >> 2) * 64 * 128;  // this warpgroup's 64 rows inside each Q slab
    load_q_tile<D, BM, CONSUMERS, true>(q, pb.q_stride_s, t0, t_end, q_base);
    cp_async_wait<0>();
    fence_proxy_async();
    named_barrier_sync(1, CONSUMERS);

    float o[DT][4];
#pragma unroll
    for (int j = 0; j < DT; ++j) o[j][0] = o[j][1] = o[j][2] = o[j][3] = 0.0f;
    float row_max[2] = {-VA_INF, -VA_INF}, row_sum[2] = {0.0f, 0.0f};
    const int pos_row[2] = {t0 + warp * 16 + g + shift, t0 + warp * 16 + g + 8 + shift};

    // S(step + 1) = Q K(step + 1) is issued with O += P(step) V(step), and its softmax runs
    // while P V is still on the tensor cores (FlashAttention-3's intra-warpgroup overlap); the
    // rescale of O waits for P V.
    auto issue_s = [&](float (&sc)[NT][4], int step) {
        const int s = step % STAGES;
        mbar_wait(bars + 8 * s, (step / STAGES) & 1);
        fence_proxy_async();  // the producer's generic-proxy copies, before wgmma reads them
        const unsigned k_tile = k_base + s * KV_BYTES;
#pragma unroll
        for (int kk = 0; kk < D / 16; ++kk) {
            unsigned q_addr = q_base + (kk >> 2) * BM * 128 + q_rows + (kk & 3) * 32;
            unsigned k_addr = k_tile + (kk >> 2) * BN * 128 + (kk & 3) * 32;
            s_gemm<BN, BF16>(sc, smem_desc(q_addr, 16, 1024), smem_desc(k_addr, 16, 1024), kk > 0);
        }
        wgmma_commit();
    };
    auto any_flag = [&](int s) {
        int f = 0;
#pragma unroll
        for (int w = 0; w < PW; ++w) f |= flags[s * PW + w];
        return f;
    };
    // Ping-pong (FlashAttention-3): the two warpgroups take turns to issue their GEMMs, so that
    // one runs its softmax while the other's GEMMs hold the tensor cores. Warpgroup w waits on
    // barrier 3 + w before it issues and then hands the turn to the other one; warpgroup 1
    // gives warpgroup 0 the first turn. Both walk the same steps, so the turns pair up, and
    // warpgroup 0 takes warpgroup 1's last hand-over after the loop (no arrival left pending;
    // no branch around an arrival while wgmmas are in flight, which would serialize them).
    const int wg = warp >> 2;
    auto my_turn = [&]() {
        if (NC == 2) named_barrier_sync(3 + wg, 2 * 128);
    };
    auto pass_turn = [&]() {
        if (NC == 2) named_barrier_arrive(3 + (wg ^ 1), 2 * 128);
    };
    if (NC == 2 && wg == 1 && steps > 0) named_barrier_arrive(3, 2 * 128);
    auto wait_v = [&](int step) {
        mbar_wait(bars_v + 8 * (step % STAGES), (step / STAGES) & 1);
        fence_proxy_async();  // gathered V rows are generic-proxy copies; the fence in issue_s may precede them
    };
    float sc[NT][4], scale_old[2];
    if (steps > 0) {
        my_turn();
        wgmma_fence();
        issue_s(sc, 0);
        pass_turn();
        wgmma_wait<0>();
        softmax_scores<NT, CAUSAL>(sc, row_max, row_sum, pos_row, positions, any_flag(0), p.scale_log2, scale_old);
    }
    auto release = [&](int step) {
        __syncwarp();
        if (lane == 0) mbar_arrive(bars + 8 * (STAGES + step % STAGES));  // the stage may be refilled
    };
    // every step but the last issues the next S with it (unconditionally: ptxas keeps the two
    // GEMMs apart only when the count of wgmma groups in flight is the same on every path)
    for (int step = 0; step + 1 < steps; ++step) {
        unsigned pa[BN / 16][4];
#pragma unroll
        for (int kk = 0; kk < BN / 16; ++kk) pack_p<BF16, NT>(sc, kk, pa[kk]);
        my_turn();
        wgmma_fence();
        issue_s(sc, step + 1);
        wait_v(step);
        wgmma_fence();
        pv_gemm<D, BN, BF16, NC == 2>(o, pa, v_base + (step % STAGES) * KV_BYTES);
        wgmma_commit();
        pass_turn();
        wgmma_wait<1>();  // S(step + 1); P V(step) may still run
        const int s_next = (step + 1) % STAGES;
        softmax_scores<NT, CAUSAL>(sc, row_max, row_sum, pos_row, positions + s_next * BN, any_flag(s_next),
                                   p.scale_log2, scale_old);
        wgmma_wait<0>();
        release(step);
        rescale_o<DT>(o, scale_old);
    }
    if (steps > 0) {
        unsigned pa[BN / 16][4];
#pragma unroll
        for (int kk = 0; kk < BN / 16; ++kk) pack_p<BF16, NT>(sc, kk, pa[kk]);
        my_turn();
        wait_v(steps - 1);
        wgmma_fence();
        pv_gemm<D, BN, BF16, NC == 2>(o, pa, v_base + ((steps - 1) % STAGES) * KV_BYTES);
        wgmma_commit();
        pass_turn();
        wgmma_wait<0>();
        release(steps - 1);
        if (NC == 2 && wg == 0) named_barrier_sync(3, 2 * 128);  // warpgroup 1's last hand-over
    }

    write_atom<DT, BF16>(p, b, h, t0 + warp * 16, t_end, o, row_max, row_sum);
}

}  // namespace vecattn
