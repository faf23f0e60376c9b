// select.cuh -- the vector selection: pooled query blocks scored against every candidate
// key, the MinP-gap rule inside tiles of Gk*Bk keys, kept key positions written in
// ascending order. Semantics: shared/spec/vector-sparse-attention.md.
//
// One CTA (4 warps) takes ROWS pooled query rows of one (batch, head) and walks the keys in
// chunks of KC keys (whole Bk slices), double-buffered with 16-byte cp.async into swizzled
// tiles. Per chunk the scores of ROWS x KC pairs come from the tensor cores (mma.sync
// m16n8k16, fp32 accumulation; the pooled queries are dtype numbers, so they are exact A
// operands) into shared memory; then one warp per row applies the rule slice by slice,
// carrying the tile's running max across chunks. Warps split the chunk as WARPS_M x WARPS_N
// (16 rows x KC / WARPS_N keys each); every score is the same chain of mma over d whatever
// the split, so results do not depend on ROWS.
// CSR output (vecattn_select): the count pass writes per-row counts; scan_body turns them
// into offsets; the fill pass recomputes the same decisions and writes the indices at those
// offsets. Inside a prefill (slot_offsets) the fill pass runs alone and puts each row's list
// at the start of its worst-case slot, which needs no count pass: half the work.
#pragma once

#ifndef VECATTN_GENERATED
#include "common.cuh"
#endif

namespace vecattn {

constexpr int kSelectThreads = 128;

template <int D, int BK, int ROWS>
struct SelectShape {
    static constexpr int KC = BK > 64 ? BK : 64;         // keys per chunk: whole slices
    static constexpr int RC = D / 8;                     // 16-byte pieces per key row
    static constexpr int E = BK > 32 ? BK / 32 : 1;      // keys per lane per step
    static constexpr int STEP = 32 * E;                  // keys per warp step
    static constexpr int SEG = BK < 32 ? BK : 32;        // lanes sharing one slice
    static constexpr int WARPS_M = ROWS / 16;            // warps along rows (16 rows each)
    static constexpr int WARPS_N = 4 / WARPS_M;          // warps along the chunk's keys
    static constexpr int KW = KC / WARPS_N;              // keys per warp
    static constexpr int NT = KW / 8;                    // n8 tiles per warp
    static constexpr int SC_STRIDE = KC + 4;             // floats per score row (padded)
    static constexpr int Q_BYTES = ROWS * D * 2;
    static constexpr int K_BYTES = KC * D * 2;           // one of the two key buffers
};

// Pooled, scaled queries of the CTA's rows into the swizzled dtype tile q_tile[ROWS][D]:
// the mean in fp32 (sequential adds over the block's rows), rounded to the input dtype,
// then scaled and rounded again, exactly as the spec says. Rows past the chunk are zero.
template <int D, int PQ, bool BF16, int ROWS>
__device__ __forceinline__ void pool_rows(const vecattn_problem &pb, const elem_t *q, int row0,
                                          int nrows, unsigned char *q_tile) {
    for (int idx = threadIdx.x; idx < ROWS * D; idx += kSelectThreads) {
        int r = idx / D, d = idx % D;
        elem_t val = 0;
        if (r < nrows) {
            int t0 = (pb.qblock_begin + row0 + r) * PQ;
            int t1 = min(t0 + PQ, pb.seq_q);
            const elem_t *col = q + (long long)t0 * pb.q_stride_s + d;
            float sum = 0.0f;
#pragma unroll 8
            for (int t = 0; t < t1 - t0; ++t) sum += to_float<BF16>(col[(long long)t * pb.q_stride_s]);
            float mean = sum / (float)(t1 - t0);
            float qbar = to_float<BF16>(from_float<BF16>(mean));
            val = from_float<BF16>(qbar * pb.scale);
        }
        *(elem_t *)(q_tile + swizzle<D / 8>(r, d / 8) + (d % 8) * 2) = val;
    }
}

template <int D, int KC>
__device__ __forceinline__ void load_key_chunk(const elem_t *k, long long stride_s, int c0, int seq_k,
                                               unsigned char *ks) {
    constexpr int RC = D / 8;
    unsigned base = smem_addr(ks);
    for (int idx = threadIdx.x; idx < KC * RC; idx += kSelectThreads) {
        int row = idx / RC, piece = idx % RC;
        int key = c0 + row;
        bool valid = key < seq_k;
        const elem_t *src = k + (valid ? (long long)key * stride_s + piece * 8 : 0);
        cp_async_16(base + swizzle<RC>(row, piece), src, valid);
    }
    cp_async_commit();
}

// Scores of ROWS rows x KC keys into sc[ROWS][SC_STRIDE]; -inf where the key is not a
// candidate of the row, so it takes part in neither the max nor the selection.
template <int D, int PQ, int BK, bool CAUSAL, bool BF16, int ROWS>
__device__ __forceinline__ void score_chunk(const vecattn_problem &pb, const unsigned (&qf)[D / 16][4],
                                            const unsigned char *ks, int c0, int row0, int nrows,
                                            float *sc) {
    using S = SelectShape<D, BK, ROWS>;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int wm = warp % S::WARPS_M, wn = warp / S::WARPS_M;
    float acc[S::NT][4];
#pragma unroll
    for (int j = 0; j < S::NT; ++j) acc[j][0] = acc[j][1] = acc[j][2] = acc[j][3] = 0.0f;
    const unsigned kbase = smem_addr(ks);
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) {
#pragma unroll
        for (int np = 0; np < S::NT / 2; ++np) {
            int m = lane >> 3;
            int row = wn * S::KW + np * 16 + (m >> 1) * 8 + (lane & 7);
            unsigned b0, b1, b2, b3;
            ldmatrix_x4(kbase + swizzle<S::RC>(row, kk * 2 + (m & 1)), b0, b1, b2, b3);
            mma_16816<BF16>(acc[2 * np], qf[kk], b0, b1);
            mma_16816<BF16>(acc[2 * np + 1], qf[kk], b2, b3);
        }
    }
    const int g = lane >> 2, c = lane & 3;
#pragma unroll
    for (int r = 0; r < 2; ++r) {
        int row = wm * 16 + g + r * 8;
        int i = pb.qblock_begin + row0 + row;
        int lo = CAUSAL ? PQ : 0;
        int hi = CAUSAL ? min(i * PQ + (pb.seq_k - pb.seq_q), pb.seq_k) : pb.seq_k;
        if (row >= nrows) hi = lo;  // padding rows have no candidates
#pragma unroll
        for (int j = 0; j < S::NT; ++j) {
            int col = wn * S::KW + j * 8 + 2 * c;
            int key = c0 + col;
            float2 v;
            v.x = key >= lo && key < hi ? acc[j][2 * r] : -VA_INF;
            v.y = key + 1 >= lo && key + 1 < hi ? acc[j][2 * r + 1] : -VA_INF;
            *(float2 *)(sc + row * S::SC_STRIDE + col) = v;
        }
    }
}

// Candidates of query block i: the most its selection can keep.
template <int PQ, bool CAUSAL>
__device__ __forceinline__ long long block_candidates(const vecattn_problem &pb, int i) {
    if (!CAUSAL) return pb.seq_k;
    int hi = min(i * PQ + (pb.seq_k - pb.seq_q), pb.seq_k);
    return hi > PQ ? hi - PQ : 0;
}

// Start of row `row`'s worst-case slot (slot_offsets mode), computed by one warp.
template <int PQ, bool CAUSAL>
__device__ __forceinline__ long long slot_offset(const vecattn_select_params &p, int b, int h, int row) {
    const vecattn_problem &pb = p.pb;
    long long before = 0;
    for (int r = threadIdx.x & 31; r < row; r += 32) before += block_candidates<PQ, CAUSAL>(pb, pb.qblock_begin + r);
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) before += __shfl_xor_sync(0xffffffffu, before, o);
    return (long long)(b * pb.heads_q + h) * p.slot_stride + before;
}

// The running max of one row's current tile, carried across steps and chunks.
struct RowState {
    float m;
    int tile;
    int count;
};

// Apply the MinP-gap rule to one row's scores of a chunk, slice by slice, appending kept
// keys (FILL) in ascending order. Executed by a whole warp, STEP keys at a time: the slice
// max comes from a butterfly inside each SEG-lane segment, the running max of the tile
// from a scan over the segments. When tiles are multiples of STEP keys (the usual case,
// known at compile time) a step lies inside one tile and needs no per-lane tile ids.
template <int BK, int GK, bool FILL>
__device__ __forceinline__ void select_row_chunk(const float *sc_row, int c0, float gap,
                                                 RowState &st, int *out, long long out_room) {
    using S = SelectShape<64, BK, 16>;
    constexpr int KC = S::KC;
    constexpr int TILE = GK * BK;
    constexpr bool UNIFORM = TILE % S::STEP == 0;
    const int lane = threadIdx.x & 31;
    const unsigned lt_mask = (1u << lane) - 1u;
#pragma unroll
    for (int step = 0; step < KC; step += S::STEP) {
        float s[S::E];
        float v = -VA_INF;
#pragma unroll
        for (int e = 0; e < S::E; ++e) {
            s[e] = sc_row[step + e * 32 + lane];
            v = fmaxf(v, s[e]);
        }
        v = warp_max(v, S::SEG);  // the slice's max, in every lane of the slice
        const int tile = (c0 + step + (UNIFORM ? 0 : lane)) / TILE;
        float m = v;  // becomes the running max over the tile's slices up to this lane's
#pragma unroll
        for (int o = S::SEG; o < 32; o <<= 1) {
            float mo = __shfl_up_sync(0xffffffffu, m, o);
            bool same = UNIFORM || __shfl_up_sync(0xffffffffu, tile, o) == tile;
            if (lane >= o && same) m = fmaxf(m, mo);
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
        st.tile = UNIFORM ? tile : __shfl_sync(0xffffffffu, tile, 31);
    }
}

template <int D, int PQ, int BK, int GK, bool CAUSAL, bool BF16, int ROWS, bool FILL>
__device__ __forceinline__ void select_body(const vecattn_select_params &p) {
    using S = SelectShape<D, BK, ROWS>;
    static_assert(ROWS == 16 || ROWS == 32 || ROWS == 64, "16, 32 or 64 pooled rows per CTA");
    constexpr int ROWS_PER_WARP = ROWS / 4;
    extern __shared__ __align__(128) unsigned char smem[];
    unsigned char *q_tile = smem;
    unsigned char *k_bufs = smem + S::Q_BYTES;  // two key buffers of K_BYTES
    float *sc = (float *)(smem + S::Q_BYTES + 2 * S::K_BYTES);

    const vecattn_problem &pb = p.pb;
    const int h = blockIdx.y, b = blockIdx.z;
    const int hk = h / (pb.heads_q / pb.heads_kv);
    // causal: the last rows have the most candidates; start them first so that short CTAs
    // fill the tail of the grid
    const int row0 = (CAUSAL ? gridDim.x - 1 - blockIdx.x : blockIdx.x) * ROWS;
    const int nrows = min(ROWS, pb.qblock_count - row0);
    const elem_t *q = (const elem_t *)pb.q + b * pb.q_stride_b + h * pb.q_stride_h;
    const elem_t *k = (const elem_t *)pb.k + b * pb.k_stride_b + hk * pb.k_stride_h;
    const float gap = p.gaps_per_head ? p.gaps[h] : p.gap;
    const long long row_base = (long long)(b * pb.heads_q + h) * pb.qblock_count + row0;

    // keys that any row of this CTA may select
    const int lo = CAUSAL ? PQ : 0;
    const int last_i = pb.qblock_begin + row0 + nrows - 1;
    const int hi = CAUSAL ? min(last_i * PQ + (pb.seq_k - pb.seq_q), pb.seq_k) : pb.seq_k;
    const int c_first = (lo / S::KC) * S::KC;
    const int chunks = hi > c_first ? (hi - c_first + S::KC - 1) / S::KC : 0;

    if (chunks > 0) load_key_chunk<D, S::KC>(k, pb.k_stride_s, c_first, pb.seq_k, k_bufs);
    pool_rows<D, PQ, BF16, ROWS>(pb, q, row0, nrows, q_tile);
    __syncthreads();
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    unsigned qf[D / 16][4];  // this warp's 16 pooled rows as A fragments
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) {
        int m = lane >> 3;
        int row = (warp % S::WARPS_M) * 16 + (m & 1) * 8 + (lane & 7);
        ldmatrix_x4(smem_addr(q_tile) + swizzle<S::RC>(row, kk * 2 + (m >> 1)), qf[kk][0], qf[kk][1],
                    qf[kk][2], qf[kk][3]);
    }

    RowState st[ROWS_PER_WARP];
    long long out_at[ROWS_PER_WARP];
#pragma unroll
    for (int w = 0; w < ROWS_PER_WARP; ++w) {
        st[w].m = -VA_INF;
        st[w].tile = -1;
        st[w].count = 0;
        int row = warp + 4 * w;
        out_at[w] = 0;
        if (FILL && row < nrows) {
            if (p.slot_offsets) {
                out_at[w] = slot_offset<PQ, CAUSAL>(p, b, h, row0 + row);
                if (lane == 0) p.offsets[row_base + row] = out_at[w];
            } else {
                out_at[w] = p.offsets[row_base + row];
            }
        }
    }

    for (int ci = 0; ci < chunks; ++ci) {
        const int c0 = c_first + ci * S::KC;
        if (ci + 1 < chunks) {
            load_key_chunk<D, S::KC>(k, pb.k_stride_s, c0 + S::KC, pb.seq_k, k_bufs + ((ci + 1) & 1) * S::K_BYTES);
            cp_async_wait<1>();
        } else {
            cp_async_wait<0>();
        }
        __syncthreads();  // chunk ci landed; the previous chunk's scores are no longer read
        score_chunk<D, PQ, BK, CAUSAL, BF16, ROWS>(pb, qf, k_bufs + (ci & 1) * S::K_BYTES, c0, row0, nrows, sc);
        __syncthreads();
#pragma unroll
        for (int w = 0; w < ROWS_PER_WARP; ++w) {
            int row = warp + 4 * w;
            if (row < nrows) {
                long long room = p.indices_capacity - out_at[w];
                select_row_chunk<BK, GK, FILL>(sc + row * S::SC_STRIDE, c0, gap, st[w],
                                               p.indices + out_at[w], room);
            }
        }
    }
    if (lane == 0) {
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
