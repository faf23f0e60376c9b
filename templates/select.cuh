// select.cuh -- the vector selection: pooled query blocks scored against every candidate
// key, the MinP-gap rule inside tiles of Gk*Bk keys, kept key positions written in
// ascending order. Semantics: shared/spec/vector-sparse-attention.md.
//
// One CTA takes ROWS pooled query rows of one (batch, head), one warp per 16 rows, and walks
// the keys in chunks of KC keys (whole Bk slices), loaded two chunks ahead with 16-byte
// cp.async into three swizzled tiles (one CTA barrier per chunk; the third tile is the pooled
// queries' once they sit in registers: the kernel waits on L2 latency, not on bandwidth).
// Per chunk each warp computes the scores of its 16 rows x KC keys on the tensor cores
// (mma.sync m16n8k16, fp32 accumulation; the pooled queries are dtype numbers, so they are
// exact A operands) and applies the rule straight from the accumulators: a quad
// of lanes holds one row's keys, so a slice's max is a few register maxima and two shuffles,
// the tile's running max lives in registers across chunks, and kept keys are numbered in key
// order with two ballots per 8 keys. Every score is the same chain of mma over d whatever
// ROWS is, and max/compare are exact, so the selection does not depend on the tiles.
// CSR output (vecattn_select): the count pass writes per-row counts; scan_body turns them
// into offsets; the fill pass recomputes the same decisions and writes the indices at those
// offsets. Inside a prefill the mask pass runs alone and writes each row's decisions as a bit
// mask (one bit per key, 1/32 of a worst-case index list, so one chunk holds 32x more query
// blocks) plus its count; the attention kernel decodes the mask (attention.cuh). A mask word
// needs no prefix over the row's earlier keys, so it is cheaper to make than list entries.
#pragma once

#ifndef VECATTN_GENERATED
#include "common.cuh"
#endif

namespace vecattn {

template <int D, int BK, int ROWS>
struct SelectShape {
    static constexpr int KC = BK > 64 ? BK : 64;         // keys per chunk: whole slices
    static constexpr int RC = D / 8;                     // 16-byte pieces per key row
    static constexpr int WARPS = ROWS / 16;              // one warp per 16 pooled rows
    static constexpr int THREADS = WARPS * 32;
    static constexpr int NT = KC / 8;                    // n8 tiles per chunk
    static constexpr int SLICE_TILES = BK / 8;           // n8 tiles per slice
    static constexpr int Q_BYTES = ROWS * D * 2;
    static constexpr int K_BYTES = KC * D * 2;           // one of the three key buffers
    // key buffer 2 reuses the pooled-query tile, which is dead once in registers
    static constexpr int A_BYTES = Q_BYTES > K_BYTES ? Q_BYTES : K_BYTES;
    static constexpr int SMEM = A_BYTES + 2 * K_BYTES;
    __device__ static unsigned char *key_buffer(unsigned char *smem, int b) {
        return b == 2 ? smem : smem + A_BYTES + b * K_BYTES;
    }
};

// Pooled, scaled queries of the CTA's rows into the swizzled dtype tile q_tile[ROWS][D]:
// the mean in fp32 (sequential adds over the block's rows), rounded to the input dtype,
// then scaled and rounded again, exactly as the spec says. Rows past the chunk are zero.
// A thread pools one 16-byte piece (8 columns) of a row at a time with 16-byte loads, eight
// query rows in flight: every CTA pools its rows again (each key piece is a CTA), and
// element-wise loads with a dependent add chain had kept it waiting on memory for ~512
// round trips.
template <int D, int PQ, bool BF16, int ROWS, int THREADS>
__device__ __forceinline__ void pool_rows(const vecattn_problem &pb, const elem_t *q, int row0,
                                          int nrows, unsigned char *q_tile) {
    constexpr int RC = D / 8;
    for (int task = threadIdx.x; task < ROWS * RC; task += THREADS) {
        const int r = task / RC, piece = task % RC;
        uint4 val = make_uint4(0u, 0u, 0u, 0u);
        if (r < nrows) {
            const int t0 = (pb.qblock_begin + row0 + r) * PQ;
            const int n = min(t0 + PQ, pb.seq_q) - t0;
            const elem_t *src = q + (long long)t0 * pb.q_stride_s + piece * 8;
            float sum[8];
#pragma unroll
            for (int e = 0; e < 8; ++e) sum[e] = 0.0f;
#pragma unroll 8
            for (int t = 0; t < n; ++t) {
                const uint4 x = __ldg((const uint4 *)(src + (long long)t * pb.q_stride_s));
                const unsigned w[4] = {x.x, x.y, x.z, x.w};
#pragma unroll
                for (int e2 = 0; e2 < 4; ++e2) {
                    float lo, hi;
                    unpack2<BF16>(w[e2], lo, hi);
                    sum[2 * e2] += lo;
                    sum[2 * e2 + 1] += hi;
                }
            }
            unsigned out[4];
#pragma unroll
            for (int e2 = 0; e2 < 4; ++e2) {
                elem_t pair[2];
#pragma unroll
                for (int h = 0; h < 2; ++h) {
                    float mean = sum[2 * e2 + h] / (float)n;
                    float qbar = to_float<BF16>(from_float<BF16>(mean));
                    pair[h] = from_float<BF16>(qbar * pb.scale);
                }
                out[e2] = (unsigned)pair[0] | (unsigned)pair[1] << 16;
            }
            val = make_uint4(out[0], out[1], out[2], out[3]);
        }
        *(uint4 *)(q_tile + swizzle<RC>(r, piece)) = val;
    }
}

template <int D, int KC, int THREADS>
__device__ __forceinline__ void load_key_chunk(const elem_t *k, long long stride_s, int c0, int seq_k,
                                               unsigned char *ks) {
    constexpr int RC = D / 8;
    unsigned base = smem_addr(ks);
    for (int idx = threadIdx.x; idx < KC * RC; idx += THREADS) {
        int row = idx / RC, piece = idx % RC;
        int key = c0 + row;
        bool valid = key < seq_k;
        const elem_t *src = k + (valid ? (long long)key * stride_s + piece * 8 : 0);
        cp_async_16(base + swizzle<RC>(row, piece), src, valid);
    }
    cp_async_commit();
}

// Scores of this warp's 16 rows x the chunk's KC keys: acc[j] holds rows g and g + 8 of
// keys 8 j + 2 c + {0, 1} (the m16n8 C layout).
template <int D, int KC, bool BF16>
__device__ __forceinline__ void score_chunk(const unsigned (&qf)[D / 16][4], unsigned kbase,
                                            float (&acc)[KC / 8][4]) {
    constexpr int RC = D / 8, NT = KC / 8;
    const int lane = threadIdx.x & 31, m = lane >> 3;
#pragma unroll
    for (int j = 0; j < NT; ++j) acc[j][0] = acc[j][1] = acc[j][2] = acc[j][3] = 0.0f;
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) {
#pragma unroll
        for (int np = 0; np < NT / 2; ++np) {
            int row = np * 16 + (m >> 1) * 8 + (lane & 7);
            unsigned b0, b1, b2, b3;
            ldmatrix_x4(kbase + swizzle<RC>(row, kk * 2 + (m & 1)), b0, b1, b2, b3);
            mma_16816<BF16>(acc[2 * np], qf[kk], b0, b1);
            mma_16816<BF16>(acc[2 * np + 1], qf[kk], b2, b3);
        }
    }
}

// The rule state of the two rows (g, g + 8) a lane shares with its quad.
struct RowState {
    float m[2];        // running max of the current tile
    int count[2];      // keys kept so far
    long long out[2];  // where the row's list starts (fill pass); mask mode: its first word,
                       // -1 for rows past the chunk
    int lo[2], hi[2];  // candidate keys [lo, hi)
};

// What the selection writes: counts only (the count pass of vecattn_select), index lists at
// the scanned offsets (its fill pass), or bit masks and counts (inside a prefill).
enum { SELECT_COUNT = 0, SELECT_LISTS = 1, SELECT_MASK = 2 };

// Apply the MinP-gap rule to one chunk's scores, slice by slice in key order. `edge`
// (uniform across the warp): some key of the chunk is not a candidate of some row of the
// warp; interior chunks skip the candidate test.
template <int KC, int BK, int GK, int MODE>
__device__ __forceinline__ void select_chunk(float (&acc)[KC / 8][4], int c0, bool edge, float gap, int &tile,
                                             RowState &st, const vecattn_select_params &p) {
    constexpr int NT = KC / 8, ST = BK / 8, TILE = GK * BK;
    const int lane = threadIdx.x & 31, g = lane >> 2, c = lane & 3;
    unsigned word[2] = {0u, 0u};  // mask mode: this lane's keys of the row's current 32 (c0 % 32 == 0)
#pragma unroll
    for (int s0 = 0; s0 < NT; s0 += ST) {
        const int slice_key = c0 + s0 * 8;
        const int slice_tile = slice_key / TILE;
        if (slice_tile != tile) {  // uniform across the warp: keys are the same for all rows
            tile = slice_tile;
            st.m[0] = st.m[1] = -VA_INF;
        }
#pragma unroll
        for (int r = 0; r < 2; ++r) {
            float smax = -VA_INF;
#pragma unroll
            for (int j = s0; j < s0 + ST; ++j) {
#pragma unroll
                for (int e = 0; e < 2; ++e) {
                    int key = c0 + j * 8 + 2 * c + e;
                    if (edge && (key < st.lo[r] || key >= st.hi[r])) acc[j][2 * r + e] = -VA_INF;
                    smax = fmaxf(smax, acc[j][2 * r + e]);
                }
            }
            smax = fmaxf(smax, __shfl_xor_sync(0xffffffffu, smax, 1));
            smax = fmaxf(smax, __shfl_xor_sync(0xffffffffu, smax, 2));
            st.m[r] = fmaxf(st.m[r], smax);
        }
#pragma unroll
        for (int j = s0; j < s0 + ST; ++j) {
#pragma unroll
            for (int r = 0; r < 2; ++r) {
                // a masked key is -inf, which never passes (m is finite once a slice had a candidate)
                bool k0 = acc[j][2 * r] + gap >= st.m[r] && (!edge || acc[j][2 * r] != -VA_INF);
                bool k1 = acc[j][2 * r + 1] + gap >= st.m[r] && (!edge || acc[j][2 * r + 1] != -VA_INF);
                if (MODE == SELECT_MASK) {
                    // key 8 j + 2 c + e is bit 8 (j % 4) + 2 c + e of its word; the quad's lanes
                    // hold disjoint bits, merged with two shuffles once the word is complete
                    word[r] |= (unsigned)k0 << (8 * (j & 3) + 2 * c) | (unsigned)k1 << (8 * (j & 3) + 2 * c + 1);
                    if ((j & 3) == 3) {
                        unsigned w = word[r] | __shfl_xor_sync(0xffffffffu, word[r], 1);
                        w |= __shfl_xor_sync(0xffffffffu, w, 2);
                        if (c == 0 && st.out[r] >= 0) p.mask[st.out[r] + (c0 >> 5) + (j >> 2)] = w;
                        st.count[r] += __popc(w);
                        word[r] = 0u;
                    }
                } else if (MODE == SELECT_LISTS) {
                    // the quad's 8 keys of this n8 tile, bit 2 c' + e for lane c', in key order
                    unsigned b0 = __ballot_sync(0xffffffffu, k0) >> (g * 4) & 0xFu;
                    unsigned b1 = __ballot_sync(0xffffffffu, k1) >> (g * 4) & 0xFu;
                    unsigned bits = 0;
#pragma unroll
                    for (int q = 0; q < 4; ++q) bits |= ((b0 >> q) & 1u) << (2 * q) | ((b1 >> q) & 1u) << (2 * q + 1);
                    int before = st.count[r] + __popc(bits & ((1u << (2 * c)) - 1u));
                    long long room = p.indices_capacity - st.out[r];
                    int key = c0 + j * 8 + 2 * c;
                    if (k0 && before < room) p.indices[st.out[r] + before] = key;
                    if (k1 && before + k0 < room) p.indices[st.out[r] + before + k0] = key + 1;
                    st.count[r] += __popc(bits);
                } else {
                    st.count[r] += k0 + k1;  // per lane; the quad's sum is taken at the end
                }
            }
        }
    }
}

template <int D, int PQ, int BK, int GK, bool CAUSAL, bool BF16, int ROWS, int MODE>
__device__ __forceinline__ void select_body(const vecattn_select_params &p) {
    using S = SelectShape<D, BK, ROWS>;
    static_assert(ROWS == 16 || ROWS == 32 || ROWS == 64 || ROWS == 128, "16, 32, 64 or 128 pooled rows per CTA");
    extern __shared__ __align__(128) unsigned char smem[];
    unsigned char *q_tile = smem;  // until its rows are in registers; then key buffer 2

    const vecattn_problem &pb = p.pb;
    const int h = blockIdx.y, b = blockIdx.z;
    const int hk = h / (pb.heads_q / pb.heads_kv);
    const int splits = p.key_splits > 1 ? p.key_splits : 1;
    const int group = blockIdx.x / splits, piece = blockIdx.x % splits, groups = gridDim.x / splits;
    // causal: the last rows have the most candidates; start them first so that short CTAs
    // fill the tail of the grid
    const int row0 = (CAUSAL ? groups - 1 - group : group) * ROWS;
    const int nrows = min(ROWS, pb.qblock_count - row0);
    const elem_t *q = (const elem_t *)pb.q + b * pb.q_stride_b + h * pb.q_stride_h;
    const elem_t *k = (const elem_t *)pb.k + b * pb.k_stride_b + hk * pb.k_stride_h;
    const float gap = p.gaps_per_head ? p.gaps[h] : p.gap;
    const long long row_base = (long long)(b * pb.heads_q + h) * pb.qblock_count + row0;

    // keys that any row of the group may select; with key pieces, this CTA's piece of them,
    // cut at multiples of the rule's tile (so that the running max restarts exactly where
    // it would) and of the key chunk
    const int group_lo = CAUSAL ? PQ : 0;
    const int last_i = pb.qblock_begin + row0 + nrows - 1;
    const int group_hi = CAUSAL ? min(last_i * PQ + (pb.seq_k - pb.seq_q), pb.seq_k) : pb.seq_k;
    constexpr int ALIGN = GK * BK > S::KC ? GK * BK : S::KC;
    const int base = (group_lo / ALIGN) * ALIGN;
    const int span = group_hi > base ? group_hi - base : 0;
    const int piece_keys = ((span + splits - 1) / splits + ALIGN - 1) / ALIGN * ALIGN;
    const int lo = max(group_lo, base + piece * piece_keys);
    const int hi = min(group_hi, base + (piece + 1) * piece_keys);
    const int c_first = (lo / S::KC) * S::KC;
    const int chunks = hi > c_first ? (hi - c_first + S::KC - 1) / S::KC : 0;

    // chunks 0 and 1 load while the queries are pooled; chunk c goes to buffer c % 3
    for (int c = 0; c < 2 && c < chunks; ++c)
        load_key_chunk<D, S::KC, S::THREADS>(k, pb.k_stride_s, c_first + c * S::KC, pb.seq_k, S::key_buffer(smem, c));
    pool_rows<D, PQ, BF16, ROWS, S::THREADS>(pb, q, row0, nrows, q_tile);
    __syncthreads();
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2;
    unsigned qf[D / 16][4];  // this warp's 16 pooled rows as A fragments
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) {
        int m = lane >> 3;
        int row = warp * 16 + (m & 1) * 8 + (lane & 7);
        ldmatrix_x4(smem_addr(q_tile) + swizzle<S::RC>(row, kk * 2 + (m >> 1)), qf[kk][0], qf[kk][1],
                    qf[kk][2], qf[kk][3]);
    }

    RowState st;
#pragma unroll
    for (int r = 0; r < 2; ++r) {
        int row = warp * 16 + g + r * 8;
        int i = pb.qblock_begin + row0 + row;
        st.m[r] = -VA_INF;
        st.count[r] = 0;
        st.lo[r] = lo;
        int row_hi = CAUSAL ? min(i * PQ + (pb.seq_k - pb.seq_q), pb.seq_k) : pb.seq_k;
        st.hi[r] = row >= nrows ? lo : min(row_hi, hi);
        st.out[r] = 0;
    }
    if (MODE == SELECT_MASK) {  // each row's words; pieces write disjoint words of the same row
#pragma unroll
        for (int r = 0; r < 2; ++r) {
            int row = warp * 16 + g + r * 8;
            st.out[r] = row < nrows ? (row_base + row) * p.mask_words : -1;
        }
    } else if (MODE == SELECT_LISTS) {  // where the lists of this warp's rows start; each lane keeps its two
        for (int rr = 0; rr < 16; ++rr) {
            int wrow = warp * 16 + rr;
            if (wrow >= nrows) break;  // uniform across the warp
            long long off = p.offsets[(row_base + wrow) * splits + piece];
            if (rr == g) st.out[0] = off;
            if (rr == g + 8) st.out[1] = off;
        }
    }

    // keys every row of the warp may select: [lo, warp_hi); chunks inside skip the candidate test
    int warp_hi = min(st.hi[0], st.hi[1]);
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) warp_hi = min(warp_hi, __shfl_xor_sync(0xffffffffu, warp_hi, o));

    int tile = -1;
    for (int ci = 0; ci < chunks; ++ci) {
        const int c0 = c_first + ci * S::KC;
        // the groups in flight: chunks ci and, if it exists, ci + 1
        if (ci + 1 < chunks)
            cp_async_wait<1>();
        else
            cp_async_wait<0>();
        // chunk ci landed for every warp, and every warp is done with chunk ci - 1 (at ci = 0:
        // with the pooled queries), whose buffer chunk ci + 2 takes
        __syncthreads();
        if (ci + 2 < chunks)
            load_key_chunk<D, S::KC, S::THREADS>(k, pb.k_stride_s, c0 + 2 * S::KC, pb.seq_k,
                                                 S::key_buffer(smem, (ci + 2) % 3));
        float acc[S::NT][4];
        score_chunk<D, S::KC, BF16>(qf, smem_addr(S::key_buffer(smem, ci % 3)), acc);
        // (the list passes test every chunk: two code paths there cost registers, 128 at most)
        const bool edge = MODE != SELECT_MASK || c0 < lo || c0 + S::KC > warp_hi;
        select_chunk<S::KC, BK, GK, MODE>(acc, c0, edge, gap, tile, st, p);
    }
    if (MODE == SELECT_COUNT) {
#pragma unroll
        for (int r = 0; r < 2; ++r) {
            st.count[r] += __shfl_xor_sync(0xffffffffu, st.count[r], 1);
            st.count[r] += __shfl_xor_sync(0xffffffffu, st.count[r], 2);
        }
    }
    if ((lane & 3) == 0) {
#pragma unroll
        for (int r = 0; r < 2; ++r) {
            int row = warp * 16 + g + r * 8;
            if (row < nrows) p.counts[(row_base + row) * splits + piece] = st.count[r];
        }
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
