// select.cuh -- the vector selection: pooled query blocks scored against every candidate
// key, the MinP-gap rule inside tiles of Gk*Bk keys, kept key positions written in
// ascending order. Semantics: shared/spec/vector-sparse-attention.md.
//
// One CTA takes ROWS pooled query rows of one (batch, head) and walks the keys in chunks of
// KC keys (whole Bk slices). Per chunk: 16-byte cp.async of the K rows into a swizzled tile,
// fp32 scores for ROWS x KC pairs into shared memory, then one warp per row applies the rule
// slice by slice, carrying the tile's running max across chunks. Every dot product is a
// sequential fp32 FMA chain over d, so results do not depend on ROWS or the CTA shape.
// The count pass writes per-row counts; scan_body turns them into offsets; the fill pass
// recomputes the same decisions and writes the indices at those offsets.
#pragma once

#ifndef VECATTN_GENERATED
#include "common.cuh"
#endif

namespace vecattn {

constexpr int kSelectThreads = 128;

template <int D, int BK>
struct SelectShape {
    static constexpr int KC = BK > 64 ? BK : 64;         // keys per chunk: whole slices
    static constexpr int RC = D / 8;                     // 16-byte pieces per key row
    static constexpr int GROUPS = kSelectThreads / KC;   // row groups of the score step
    static constexpr int E = BK > 32 ? BK / 32 : 1;      // keys per lane per step
    static constexpr int STEP = 32 * E;                  // keys per warp step
    static constexpr int SEG = BK < 32 ? BK : 32;        // lanes sharing one slice
};

// Pooled, scaled queries of the CTA's rows into qs[ROWS][D] (fp32 values of dtype numbers):
// the mean in fp32 (sequential adds over the block's rows), rounded to the input dtype,
// then scaled and rounded again, exactly as the spec says.
template <int D, int PQ, bool BF16, int ROWS>
__device__ __forceinline__ void pool_rows(const vecattn_problem &pb, const elem_t *q, int row0,
                                          int nrows, float *qs) {
    for (int idx = threadIdx.x; idx < ROWS * D; idx += kSelectThreads) {
        int r = idx / D, d = idx % D;
        float val = 0.0f;
        if (r < nrows) {
            int t0 = (pb.qblock_begin + row0 + r) * PQ;
            int t1 = min(t0 + PQ, pb.seq_q);
            float sum = 0.0f;
            for (int t = t0; t < t1; ++t) sum += to_float<BF16>(q[(long long)t * pb.q_stride_s + d]);
            float mean = sum / (float)(t1 - t0);
            float qbar = to_float<BF16>(from_float<BF16>(mean));
            val = to_float<BF16>(from_float<BF16>(qbar * pb.scale));
        }
        qs[idx] = val;
    }
}

template <int D, int BK>
__device__ __forceinline__ void load_key_chunk(const elem_t *k, long long stride_s, int c0, int seq_k,
                                               unsigned char *ks) {
    using S = SelectShape<D, BK>;
    unsigned base = smem_addr(ks);
    for (int idx = threadIdx.x; idx < S::KC * S::RC; idx += kSelectThreads) {
        int row = idx / S::RC, piece = idx % S::RC;
        int key = c0 + row;
        bool valid = key < seq_k;
        const elem_t *src = k + (valid ? (long long)key * stride_s + piece * 8 : 0);
        cp_async_16(base + swizzle<S::RC>(row, piece), src, valid);
    }
    cp_async_commit();
    cp_async_wait<0>();
}

// Scores of ROWS rows x KC keys into sc[ROWS][KC]; -inf where the key is not a candidate of
// the row, so it takes part in neither the max nor the selection.
template <int D, int PQ, int BK, bool CAUSAL, bool BF16, int ROWS>
__device__ __forceinline__ void score_chunk(const vecattn_problem &pb, const float *qs,
                                            const unsigned char *ks, int c0, int row0, int nrows,
                                            float *sc) {
    using S = SelectShape<D, BK>;
    constexpr int RPT = ROWS / S::GROUPS;  // rows per thread
    int kk = threadIdx.x % S::KC, g = threadIdx.x / S::KC;
    float acc[RPT];
#pragma unroll
    for (int r = 0; r < RPT; ++r) acc[r] = 0.0f;
#pragma unroll 4
    for (int piece = 0; piece < S::RC; ++piece) {
        uint4 kv = *(const uint4 *)(ks + swizzle<S::RC>(kk, piece));
        float kf[8];
        unpack2<BF16>(kv.x, kf[0], kf[1]);
        unpack2<BF16>(kv.y, kf[2], kf[3]);
        unpack2<BF16>(kv.z, kf[4], kf[5]);
        unpack2<BF16>(kv.w, kf[6], kf[7]);
#pragma unroll
        for (int r = 0; r < RPT; ++r) {
            const float4 *qp = (const float4 *)(qs + (g + r * S::GROUPS) * D + piece * 8);
            float4 qa = qp[0], qb = qp[1];
            float a = acc[r];
            a = fmaf(qa.x, kf[0], a); a = fmaf(qa.y, kf[1], a);
            a = fmaf(qa.z, kf[2], a); a = fmaf(qa.w, kf[3], a);
            a = fmaf(qb.x, kf[4], a); a = fmaf(qb.y, kf[5], a);
            a = fmaf(qb.z, kf[6], a); a = fmaf(qb.w, kf[7], a);
            acc[r] = a;
        }
    }
    int key = c0 + kk;
#pragma unroll
    for (int r = 0; r < RPT; ++r) {
        int row = g + r * S::GROUPS;
        int i = pb.qblock_begin + row0 + row;
        int lo = CAUSAL ? PQ : 0;
        int hi = CAUSAL ? min(i * PQ + (pb.seq_k - pb.seq_q), pb.seq_k) : pb.seq_k;
        bool cand = row < nrows && key >= lo && key < hi;
        sc[row * S::KC + kk] = cand ? acc[r] : -VA_INF;
    }
}

// The running max of one row's current tile, carried across steps and chunks.
struct RowState {
    float m;
    int tile;
    int count;
};

// Apply the MinP-gap rule to one row's scores of a chunk, slice by slice, appending kept
// keys (FILL) in ascending order. Executed by a whole warp.
template <int BK, int GK, bool FILL>
__device__ __forceinline__ void select_row_chunk(const float *sc_row, int c0, float gap,
                                                 RowState &st, int *out, long long out_room) {
    using S = SelectShape<64, BK>;
    constexpr int KC = S::KC;
    const int lane = threadIdx.x & 31;
    const unsigned lt_mask = (1u << lane) - 1u;
#pragma unroll 1
    for (int step = 0; step < KC; step += S::STEP) {
        float s[S::E];
        float v = -VA_INF;
#pragma unroll
        for (int e = 0; e < S::E; ++e) {
            s[e] = sc_row[step + e * 32 + lane];
            v = fmaxf(v, s[e]);
        }
        v = warp_max(v, S::SEG);  // the slice's max, in every lane of the slice
        int tile = (c0 + step + lane) / (GK * BK);
        // inclusive running max over the earlier slices of the same tile
        float m = v;
#pragma unroll
        for (int o = 1; o < 32; o <<= 1) {
            float mo = __shfl_up_sync(0xffffffffu, m, o);
            int to = __shfl_up_sync(0xffffffffu, tile, o);
            if (lane >= o && to == tile) m = fmaxf(m, mo);
        }
        if (tile == st.tile) m = fmaxf(m, st.m);
        int base = st.count;
#pragma unroll
        for (int e = 0; e < S::E; ++e) {
            bool keep = s[e] != -VA_INF && s[e] + gap >= m;
            unsigned ballot = __ballot_sync(0xffffffffu, keep);
            if (FILL && keep) {
                long long pos = base + __popc(ballot & lt_mask);
                if (pos < out_room) out[pos] = c0 + step + e * 32 + lane;
            }
            base += __popc(ballot);
        }
        st.count = base;
        st.m = __shfl_sync(0xffffffffu, m, 31);
        st.tile = __shfl_sync(0xffffffffu, tile, 31);
    }
}

template <int D, int PQ, int BK, int GK, bool CAUSAL, bool BF16, int ROWS, bool FILL>
__device__ __forceinline__ void select_body(const vecattn_select_params &p) {
    using S = SelectShape<D, BK>;
    static_assert(ROWS % S::GROUPS == 0, "rows must split over the score groups");
    static_assert(ROWS % 4 == 0, "rows must split over the 4 warps");
    constexpr int ROWS_PER_WARP = ROWS / 4;
    extern __shared__ __align__(128) unsigned char smem[];
    float *qs = (float *)smem;
    unsigned char *ks = smem + ROWS * D * 4;
    float *sc = (float *)(ks + S::KC * D * 2);

    const vecattn_problem &pb = p.pb;
    const int h = blockIdx.y, b = blockIdx.z;
    const int hk = h / (pb.heads_q / pb.heads_kv);
    const int row0 = blockIdx.x * ROWS;
    const int nrows = min(ROWS, pb.qblock_count - row0);
    const elem_t *q = (const elem_t *)pb.q + b * pb.q_stride_b + h * pb.q_stride_h;
    const elem_t *k = (const elem_t *)pb.k + b * pb.k_stride_b + hk * pb.k_stride_h;
    const float gap = p.gaps_per_head ? p.gaps[h] : p.gap;
    const long long row_base = (long long)(b * pb.heads_q + h) * pb.qblock_count + row0;

    pool_rows<D, PQ, BF16, ROWS>(pb, q, row0, nrows, qs);

    // keys that any row of this CTA may select
    const int lo = CAUSAL ? PQ : 0;
    const int last_i = pb.qblock_begin + row0 + nrows - 1;
    const int hi = CAUSAL ? min(last_i * PQ + (pb.seq_k - pb.seq_q), pb.seq_k) : pb.seq_k;

    const int warp = threadIdx.x >> 5;
    RowState st[ROWS_PER_WARP];
    long long out_at[ROWS_PER_WARP];
#pragma unroll
    for (int w = 0; w < ROWS_PER_WARP; ++w) {
        st[w].m = -VA_INF;
        st[w].tile = -1;
        st[w].count = 0;
        out_at[w] = FILL && warp + 4 * w < nrows ? p.offsets[row_base + warp + 4 * w] : 0;
    }

    for (int c0 = (lo / S::KC) * S::KC; c0 < hi; c0 += S::KC) {
        __syncthreads();  // the previous chunk's tiles are no longer read
        load_key_chunk<D, BK>(k, pb.k_stride_s, c0, pb.seq_k, ks);
        __syncthreads();
        score_chunk<D, PQ, BK, CAUSAL, BF16, ROWS>(pb, qs, ks, c0, row0, nrows, sc);
        __syncthreads();
#pragma unroll
        for (int w = 0; w < ROWS_PER_WARP; ++w) {
            int row = warp + 4 * w;
            if (row < nrows) {
                long long room = p.indices_capacity - out_at[w];
                select_row_chunk<BK, GK, FILL>(sc + row * S::KC, c0, gap, st[w],
                                               p.indices + out_at[w], room);
            }
        }
    }
    if ((threadIdx.x & 31) == 0) {
#pragma unroll
        for (int w = 0; w < ROWS_PER_WARP; ++w)
            if (warp + 4 * w < nrows) p.counts[row_base + warp + 4 * w] = st[w].count;
    }
}

// Exclusive scan of n int counts into n + 1 int64 offsets, one CTA of kScanThreads.
constexpr int kScanThreads = 1024;

__device__ __forceinline__ void scan_body(const vecattn_scan_params &p) {
    __shared__ long long warp_sums[32];
    __shared__ long long carry;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    if (threadIdx.x == 0) carry = 0;
    __syncthreads();
    for (int base = 0; base < p.n; base += kScanThreads) {
        int i = base + threadIdx.x;
        long long x = i < p.n ? (long long)p.counts[i] : 0;
        long long incl = x;
#pragma unroll
        for (int o = 1; o < 32; o <<= 1) {
            long long y = __shfl_up_sync(0xffffffffu, incl, o);
            if (lane >= o) incl += y;
        }
        if (lane == 31) warp_sums[warp] = incl;
        __syncthreads();
        if (warp == 0) {
            long long w = warp_sums[lane];
#pragma unroll
            for (int o = 1; o < 32; o <<= 1) {
                long long y = __shfl_up_sync(0xffffffffu, w, o);
                if (lane >= o) w += y;
            }
            warp_sums[lane] = w;  // inclusive over warps
        }
        __syncthreads();
        long long before = carry + (warp > 0 ? warp_sums[warp - 1] : 0) + incl - x;
        if (i < p.n) p.offsets[i] = before;
        __syncthreads();
        if (threadIdx.x == kScanThreads - 1) carry = before + x;
        __syncthreads();
    }
    if (threadIdx.x == 0) p.offsets[p.n] = carry;
}

}  // namespace vecattn
