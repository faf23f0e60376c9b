// attention.cuh -- flash-style attention over a gathered key set (sm_80 path: mma.sync
// m16n8k16, ldmatrix, cp.async), the kernel behind the sparse and the dense modes.
//
// One CTA computes BM query rows of one query block (BM divides Pq) with WARPS warps, each
// owning WM = BM / (16 * WARPS) row atoms of 16 rows: two atoms per warp reuse every K and V
// fragment read from shared memory twice. Q stays in registers with one atom unless
// Q_IN_SMEM, and is re-read from shared memory with two (registers go to the accumulators). The key set of the block is walked as one virtual sequence:
// forced range 0, forced range 1, then the index list. Each step takes BN positions of that
// sequence, gathers their K and V rows into swizzled shared-memory tiles with 16-byte
// cp.async (positions past the end are zero-filled and masked), and runs
//   S = Q K^T (tensor cores) -> mask -> online softmax (exp2, scale folded in) -> O += P V,
// with P reused from registers as the A operand. Pipelining follows FlashAttention-2 with
// one K and one V buffer: V(j) loads during S(j) and the softmax, K(j+1) during P V(j).
#pragma once

#ifndef VECATTN_GENERATED
#include "common.cuh"
#endif

namespace vecattn {

template <int D, int BM, int BN, int WARPS_>
struct AttnShape {
    static constexpr int WARPS = WARPS_;
    static constexpr int WM = BM / (16 * WARPS);  // 16-row atoms per warp
    static constexpr int THREADS = WARPS * 32;
    static constexpr int RC = D / 8;  // 16-byte pieces per row
    static constexpr int Q_BYTES = BM * D * 2;
    static constexpr int KV_BYTES = BN * D * 2;
    static constexpr int POS_BYTES = 2 * BN * 4;
    static constexpr int SMEM = Q_BYTES + 2 * KV_BYTES + POS_BYTES;
};

// The keys of one query block: two contiguous ranges then the selected keys, as a virtual
// sequence. The selected keys are an index list (random access) or a bit mask (decoded in
// order by one warp, see MaskCursor).
struct KeySet {
    int a0, len0;           // forced range 0: [a0, a0 + len0)
    int a1, len1;           // forced range 1
    int count;              // selected keys
    const int *list;        // the block's index list, or with word_hi > 0 its bit mask
    int word_lo, word_hi;   // (as unsigned words): words [word_lo, word_hi) hold its keys
    __device__ __forceinline__ bool is_mask() const { return word_hi > 0; }
    __device__ __forceinline__ int forced() const { return len0 + len1; }
    __device__ __forceinline__ int total() const { return len0 + len1 + count; }
    __device__ __forceinline__ int position(int v) const {
        if (v < len0) return a0 + v;
        v -= len0;
        if (v < len1) return a1 + v;
        v -= len1;
        return v < count && !is_mask() ? list[v] : -1;
    }
    // The first position of virtual keys [v, v + n) when all n are consecutive rows of one
    // forced range (a TMA box can load them), else -1. A step that runs past the key set is
    // gathered: its rows after the set are then zeros, not keys whose V might not be finite.
    __device__ __forceinline__ int run_at(int v, int n) const {
        if (v + n <= len0) return a0 + v;
        if (v >= len0 && v + n <= len0 + len1) return a1 + v - len0;
        return -1;
    }
};

// Where warp 0 stands in a bit mask: lane l holds word `base + l` of the current window of 32
// words (bits already handed out are cleared) and, loaded a window ahead so that its latency
// hides behind the steps in between, word `base + 32 + l`. Only warp 0's copy is used.
struct MaskCursor {
    int base;
    unsigned win, next;
};

__device__ __forceinline__ unsigned mask_word(const KeySet &ks, int w) {
    return w < ks.word_hi ? ((const unsigned *)ks.list)[w] : 0u;
}

// `decoder`: this thread's warp is the one that decodes (warp 0 unless a producer warp does).
__device__ __forceinline__ void mask_start(const KeySet &ks, MaskCursor &cur, bool decoder = threadIdx.x < 32) {
    const int lane = threadIdx.x & 31;
    cur.base = ks.word_lo;
    cur.win = decoder ? mask_word(ks, cur.base + lane) : 0u;
    cur.next = decoder ? mask_word(ks, cur.base + 32 + lane) : 0u;
}

// Warp 0: the next n selected keys, in key order, into out[0, n), and -1 into out[n, slots)
// (also past the last key, should the mask run out first). Returns whether any slot got -1.
// Each window is counted with one popc and a warp scan, then every lane writes its own
// word's keys at its exclusive prefix.
__device__ __forceinline__ int mask_decode(const KeySet &ks, MaskCursor &cur, int *out, int n, int slots) {
    const int lane = threadIdx.x & 31;
    int filled = 0;
    while (filled < n) {
        int cnt = __popc(cur.win), incl = cnt;
#pragma unroll
        for (int o = 1; o < 32; o <<= 1) {
            int y = __shfl_up_sync(0xffffffffu, incl, o);
            if (lane >= o) incl += y;
        }
        const int total = __shfl_sync(0xffffffffu, incl, 31), room = n - filled;
        int take = min(max(room - (incl - cnt), 0), cnt);
        int at = filled + incl - cnt;
        unsigned w = cur.win;
        for (; take > 0; --take, ++at) {
            out[at] = (cur.base + lane) * 32 + __ffs(w) - 1;
            w &= w - 1u;
        }
        cur.win = w;
        if (total > room) {  // the window still holds keys for the next step
            filled = n;
            break;
        }
        filled += total;
        if (cur.base + 32 >= ks.word_hi) {  // the mask is used up
            cur.base = ks.word_hi;
            break;
        }
        cur.base += 32;
        cur.win = cur.next;
        cur.next = mask_word(ks, cur.base + 32 + lane);
    }
    for (int t = filled + lane; t < slots; t += 32) out[t] = -1;
    return filled < slots;
}

template <int PQ, bool CAUSAL>
__device__ __forceinline__ KeySet block_keys(const vecattn_attn_params &p, int b, int h, int i,
                                             int last_pos) {
    const vecattn_problem &pb = p.pb;
    KeySet ks = {0, 0, 0, 0, 0, nullptr, 0, 0};
    const int p0 = i * PQ + (pb.seq_k - pb.seq_q);
    const int rows = min(PQ, pb.seq_q - i * PQ);
    if (p.key_mode == VECATTN_KEYS_DENSE) {
        ks.len0 = CAUSAL ? last_pos + 1 : pb.seq_k;
        return ks;
    }
    if (p.key_mode == VECATTN_KEYS_RANGES) {
        const int *r = p.forced_ranges + ((long long)(b * pb.heads_q + h) * pb.n_qblocks + i) * 4;
        ks.a0 = r[0];
        ks.len0 = max(r[1] - r[0], 0);
        ks.a1 = r[2];
        ks.len1 = max(r[3] - r[2], 0);
    } else if (CAUSAL) {
        ks.len0 = min(PQ, p0);                      // the sink
        ks.a1 = p0;                                 // the diagonal block, up to the last row
        ks.len1 = min(p0 + rows, last_pos + 1) - p0;
    }
    if (p.mask) {  // bit masks: the counts of the row's key pieces add up
        long long row = (long long)(b * pb.heads_q + h) * pb.qblock_count + (i - pb.qblock_begin);
        const int stride = p.list_stride > 1 ? p.list_stride : 1;
        for (int piece = 0; piece < stride; ++piece) ks.count += p.counts[row * stride + piece];
        ks.list = (const int *)(p.mask + row * p.mask_words);
        ks.word_lo = (CAUSAL ? PQ : 0) / 32;
        ks.word_hi = max(((CAUSAL ? min(p0, pb.seq_k) : pb.seq_k) + 31) / 32, 1);  // > 0: a mask
    } else if (p.counts) {
        long long row = (long long)(b * pb.heads_q + h) * pb.qblock_count + (i - pb.qblock_begin);
        if (p.list_stride > 1) {  // pieces of a split selection, adjacent in key order
            long long first = p.offsets[row * p.list_stride], end = p.offsets[(row + 1) * p.list_stride];
            ks.count = (int)(end - first);
            ks.list = p.indices + first;
        } else {
            ks.count = p.counts[row];
            ks.list = p.indices + p.offsets[row];
        }
    }
    return ks;
}

// Positions of one step; returns whether this thread saw a position that needs the mask
// (past the end of the key set, or possibly after a row's causal limit `first_pos`). With a
// bit mask, warp 0 decodes the slots after the forced keys (selected keys are candidates,
// all before the block's first row, so only the -1 padding needs the mask).
// THREADS threads take part, `tid` being this one's index among them and the warp of `decoder`
// decoding the mask.
template <int BN, int THREADS, bool CAUSAL>
__device__ __forceinline__ int fill_positions(const KeySet &ks, int step, int *pos, int first_pos,
                                              MaskCursor &cur, int tid = threadIdx.x,
                                              bool decoder = threadIdx.x < 32) {
    int need_mask = 0;
    const int direct = ks.is_mask() ? min(max(ks.forced() - step * BN, 0), BN) : BN;
    for (int n = tid; n < direct; n += THREADS) {
        int kp = ks.position(step * BN + n);
        pos[n] = kp;
        need_mask |= kp < 0 || (CAUSAL && kp > first_pos);
    }
    if (direct < BN && decoder) {  // never more keys than counted, whatever the words hold
        const int handed_out = max(step * BN - ks.forced(), 0);
        need_mask |= mask_decode(ks, cur, pos + direct, min(BN - direct, ks.count - handed_out), BN - direct);
    }
    return need_mask;
}

// Gather BN rows (positions in `pos`, -1 = none) of one K or V head into a swizzled tile.
// Byte offset of 16-byte piece `chunk` of row `row` in a tile of ROWS rows: the ldmatrix
// layout (rows of D elements, chunk ^ row % 8) or, with SLABS, the canonical wgmma 128-byte
// swizzle (64-column slabs of ROWS x 128 bytes, chunk % 8 ^ row % 8 inside a slab).
template <int RC, int ROWS, bool SLABS>
__device__ __forceinline__ unsigned tile_offset(int row, int chunk) {
    if (!SLABS) return swizzle<RC>(row, chunk);
    return (unsigned)((chunk >> 3) * ROWS * 128 + row * 128 + (((chunk & 7) ^ (row & 7)) << 4));
}

// The copies of thread `tid` of THREADS, not committed.
template <int D, int BN, int THREADS, bool SLABS = false>
__device__ __forceinline__ void gather_rows_by(int tid, const elem_t *src, int stride_s, const int *pos, unsigned dst) {
    // Each thread always copies the same 16-byte piece of every (THREADS / RC)-th row, so the
    // piece offset and the swizzle are loop invariants; the row offset is one 32x32->64
    // multiply (strides are below 2^31 elements, checked on the host).
    constexpr int RC = D / 8;
    constexpr int ROWS_PER_PASS = THREADS / RC;
    static_assert(THREADS % RC == 0, "a pass covers whole rows");
    const int piece = tid % RC, row0 = tid / RC;
    const elem_t *base = src + piece * 8;
#pragma unroll
    for (int row = row0; row < BN; row += ROWS_PER_PASS) {
        int kp = pos[row];
        const elem_t *from = base + (kp >= 0 ? (long long)kp * stride_s : 0);
        cp_async_16(dst + tile_offset<RC, BN, SLABS>(row, piece), from, kp >= 0);
    }
}

template <int D, int BN, int THREADS, bool SLABS = false>
__device__ __forceinline__ void gather_rows(const elem_t *src, int stride_s, const int *pos, unsigned dst) {
    gather_rows_by<D, BN, THREADS, SLABS>(threadIdx.x, src, stride_s, pos, dst);
    cp_async_commit();
}

// Load the CTA's query rows [t0, t_end) into a tile of BM rows (zero past t_end).
template <int D, int BM, int THREADS, bool SLABS = false>
__device__ __forceinline__ void load_q_tile(const elem_t *q, long long stride_s, int t0, int t_end, unsigned dst) {
    constexpr int RC = D / 8;
    for (int idx = threadIdx.x; idx < BM * RC; idx += THREADS) {  // threads 0 .. THREADS - 1
        int row = idx / RC, piece = idx % RC;
        int t = t0 + row;
        const elem_t *from = q + (t < t_end ? (long long)t * stride_s + piece * 8 : 0);
        cp_async_16(dst + tile_offset<RC, BM, SLABS>(row, piece), from, t < t_end);
    }
    cp_async_commit();
}

// One step of the online softmax for one 16-row atom: mask (when some key of the step may
// need it), row max, P = exp2(S * scale_log2 - max * scale_log2) in place of S, the running
// sums, and the rescale of O. Scores are in raw units (scale > 0), so the max needs no scale.
// softmax_scores does all but the rescale of O, and returns its factors in scale_old: the
// warp-specialized kernel runs it while O is still being accumulated by the tensor cores.
template <int NT, bool CAUSAL>
__device__ __forceinline__ void softmax_scores(float (&s)[NT][4], float (&row_max)[2], float (&row_sum)[2],
                                               const int (&pos_row)[2], const int *pos, int need_mask,
                                               float scale_log2, float (&scale_old)[2]) {
    const int c = threadIdx.x & 3;
    float step_max[2] = {-VA_INF, -VA_INF};
#pragma unroll
    for (int j = 0; j < NT; ++j) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
            if (need_mask) {
                int kp = pos[j * 8 + 2 * c + (e & 1)];
                if (kp < 0 || (CAUSAL && kp > pos_row[e >> 1])) s[j][e] = -VA_INF;
            }
            step_max[e >> 1] = fmaxf(step_max[e >> 1], s[j][e]);
        }
    }
    float bias[2];
#pragma unroll
    for (int r = 0; r < 2; ++r) {
        step_max[r] = fmaxf(step_max[r], __shfl_xor_sync(0xffffffffu, step_max[r], 1));
        step_max[r] = fmaxf(step_max[r], __shfl_xor_sync(0xffffffffu, step_max[r], 2));
        float m_new = fmaxf(row_max[r], step_max[r]);
        float m_use = m_new == -VA_INF ? 0.0f : m_new;  // a row with no key yet: no NaN
        scale_old[r] = exp2_approx((row_max[r] - m_use) * scale_log2);
        row_max[r] = m_new;
        bias[r] = -m_use * scale_log2;
    }
    float step_sum[2] = {0.0f, 0.0f};
#pragma unroll
    for (int j = 0; j < NT; ++j) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
            float pe = exp2_approx(fmaf(s[j][e], scale_log2, bias[e >> 1]));
            s[j][e] = pe;
            step_sum[e >> 1] += pe;
        }
    }
#pragma unroll
    for (int r = 0; r < 2; ++r) row_sum[r] = row_sum[r] * scale_old[r] + step_sum[r];
}

template <int DT>
__device__ __forceinline__ void rescale_o(float (&o)[DT][4], const float (&scale_old)[2]) {
#pragma unroll
    for (int j = 0; j < DT; ++j) {
        o[j][0] *= scale_old[0];
        o[j][1] *= scale_old[0];
        o[j][2] *= scale_old[1];
        o[j][3] *= scale_old[1];
    }
}

template <int NT, int DT, bool CAUSAL>
__device__ __forceinline__ void softmax_step(float (&s)[NT][4], float (&o)[DT][4], float (&row_max)[2],
                                             float (&row_sum)[2], const int (&pos_row)[2], const int *pos,
                                             int need_mask, float scale_log2) {
    float scale_old[2];
    softmax_scores<NT, CAUSAL>(s, row_max, row_sum, pos_row, pos, need_mask, scale_log2, scale_old);
    rescale_o<DT>(o, scale_old);
}

// The A fragments (16 rows x 16 keys, keys 16 kk ..) of P, packed from the S accumulators.
template <bool BF16, int NT>
__device__ __forceinline__ void pack_p(const float (&s)[NT][4], int kk, unsigned (&a)[4]) {
    a[0] = pack2<BF16>(s[2 * kk][0], s[2 * kk][1]);
    a[1] = pack2<BF16>(s[2 * kk][2], s[2 * kk][3]);
    a[2] = pack2<BF16>(s[2 * kk + 1][0], s[2 * kk + 1][1]);
    a[3] = pack2<BF16>(s[2 * kk + 1][2], s[2 * kk + 1][3]);
}

// Normalise one atom's rows (first row `row0`) and write O and the log-sum-exp.
template <int DT, bool BF16>
__device__ __forceinline__ void write_atom(const vecattn_attn_params &p, int b, int h, int row0, int t_end,
                                           const float (&o)[DT][4], const float (&row_max)[2],
                                           const float (&row_sum)[2]) {
    const int lane = threadIdx.x & 31, g = lane >> 2, c = lane & 3;
    elem_t *out = (elem_t *)p.o + b * p.o_stride_b + h * p.o_stride_h;
#pragma unroll
    for (int r = 0; r < 2; ++r) {
        float l = row_sum[r];
        l += __shfl_xor_sync(0xffffffffu, l, 1);
        l += __shfl_xor_sync(0xffffffffu, l, 2);
        float inv = l > 0.0f ? 1.0f / l : 0.0f;
        int t = row0 + g + r * 8;
        if (t < t_end) {
            elem_t *orow = out + (long long)t * p.o_stride_s;
#pragma unroll
            for (int j = 0; j < DT; ++j)
                *(unsigned *)(orow + j * 8 + 2 * c) = pack2<BF16>(o[j][2 * r] * inv, o[j][2 * r + 1] * inv);
            if (p.lse && c == 0) {
                float lse = l > 0.0f ? row_max[r] * p.scale_log2 * 0.69314718055994531f + __logf(l) : -VA_INF;
                p.lse[(long long)(b * p.pb.heads_q + h) * p.pb.seq_q + t] = lse;
            }
        }
    }
}

// A fragments of one 16x16 slice of Q (atom `atom` of this warp, columns 16 kk ..).
template <int RC>
__device__ __forceinline__ void load_q_frag(unsigned q_base, int row0, int kk, unsigned (&a)[4]) {
    int lane = threadIdx.x & 31, m = lane >> 3;
    int row = row0 + (m & 1) * 8 + (lane & 7);
    ldmatrix_x4(q_base + swizzle<RC>(row, kk * 2 + (m >> 1)), a[0], a[1], a[2], a[3]);
}

template <int D, int PQ, int BM, int BN, int WARPS, bool Q_IN_SMEM, bool CAUSAL, bool BF16>
__device__ __forceinline__ void attention_body(const vecattn_attn_params &p) {
    using S = AttnShape<D, BM, BN, WARPS>;
    constexpr int RC = S::RC;
    constexpr int WM = S::WM;
    constexpr int NT = BN / 8;    // S fragments per atom (n8 groups)
    constexpr int DT = D / 8;     // O fragments per atom
    constexpr bool Q_IN_REGS = WM == 1 && !Q_IN_SMEM;
    static_assert(WM == 1 || WM == 2, "one or two row atoms per warp");
    extern __shared__ __align__(128) unsigned char smem[];
    unsigned char *q_tile = smem;
    unsigned char *k_tile = q_tile + S::Q_BYTES;
    unsigned char *v_tile = k_tile + S::KV_BYTES;
    int *positions = (int *)(v_tile + S::KV_BYTES);  // [2][BN]

    const vecattn_problem &pb = p.pb;
    const int h = blockIdx.y, b = blockIdx.z;
    const int hk = h / (pb.heads_q / pb.heads_kv);
    constexpr int SPLIT = PQ / BM;
    // causal: later query blocks attend to more keys; launch them first (longest first)
    const int cta = CAUSAL ? gridDim.x - 1 - blockIdx.x : blockIdx.x;
    const int i = pb.qblock_begin + cta / SPLIT;
    const int t0 = i * PQ + (cta % SPLIT) * BM;
    const int t_end = min(min(t0 + BM, i * PQ + PQ), pb.seq_q);
    if (t0 >= t_end) return;
    const int shift = pb.seq_k - pb.seq_q;  // key position of local query t is t + shift

    const elem_t *q = (const elem_t *)pb.q + b * pb.q_stride_b + h * pb.q_stride_h;
    const elem_t *k = (const elem_t *)pb.k + b * pb.k_stride_b + hk * pb.k_stride_h;
    const elem_t *v = (const elem_t *)pb.v + b * pb.v_stride_b + hk * pb.v_stride_h;
    const KeySet keys = block_keys<PQ, CAUSAL>(p, b, h, i, t_end - 1 + shift);
    const int steps = (keys.total() + BN - 1) / BN;
    const int first_pos = t0 + shift;  // the smallest causal limit of the CTA's rows
    const int k_stride = (int)pb.k_stride_s, v_stride = (int)pb.v_stride_s;

    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int g = lane >> 2;  // fragment row group
    const unsigned q_base = smem_addr(q_tile);

    load_q_tile<D, BM, S::THREADS>(q, pb.q_stride_s, t0, t_end, q_base);
    MaskCursor cursor;
    mask_start(keys, cursor);
    int need_mask = 0;
    if (steps > 0) {
        need_mask = __syncthreads_or(fill_positions<BN, S::THREADS, CAUSAL>(keys, 0, positions, first_pos, cursor));
        gather_rows<D, BN, S::THREADS>(k, k_stride, positions, smem_addr(k_tile));
    }
    cp_async_wait<0>();
    __syncthreads();
    unsigned qf[Q_IN_REGS ? D / 16 : 1][4];
    if (Q_IN_REGS) {
#pragma unroll
        for (int kk = 0; kk < D / 16; ++kk) load_q_frag<RC>(q_base, warp * 16, kk, qf[Q_IN_REGS ? kk : 0]);
    }

    float o[WM][DT][4];
    float row_max[WM][2], row_sum[WM][2];
    int pos_row[WM][2];
#pragma unroll
    for (int w = 0; w < WM; ++w) {
#pragma unroll
        for (int j = 0; j < DT; ++j) o[w][j][0] = o[w][j][1] = o[w][j][2] = o[w][j][3] = 0.0f;
#pragma unroll
        for (int r = 0; r < 2; ++r) {
            row_max[w][r] = -VA_INF;
            row_sum[w][r] = 0.0f;
            pos_row[w][r] = t0 + (warp * WM + w) * 16 + g + r * 8 + shift;
        }
    }

    for (int step = 0; step < steps; ++step) {
        int *pos = positions + (step & 1) * BN;
        int *pos_next = positions + ((step + 1) & 1) * BN;
        cp_async_wait<0>();
        __syncthreads();  // K(step) landed; everyone finished P V(step - 1)
        gather_rows<D, BN, S::THREADS>(v, v_stride, pos, smem_addr(v_tile));
        int next_mask = 0;
        if (step + 1 < steps)
            next_mask = fill_positions<BN, S::THREADS, CAUSAL>(keys, step + 1, pos_next, first_pos, cursor);

        // S = Q K^T for this warp's WM atoms x BN keys
        float s[WM][NT][4];
#pragma unroll
        for (int w = 0; w < WM; ++w)
#pragma unroll
            for (int j = 0; j < NT; ++j) s[w][j][0] = s[w][j][1] = s[w][j][2] = s[w][j][3] = 0.0f;
#pragma unroll
        for (int kk = 0; kk < D / 16; ++kk) {
            unsigned a[WM][4];
#pragma unroll
            for (int w = 0; w < WM; ++w) {
                if (Q_IN_REGS) {
#pragma unroll
                    for (int e = 0; e < 4; ++e) a[w][e] = qf[Q_IN_REGS ? kk : 0][e];
                } else {
                    load_q_frag<RC>(q_base, (warp * WM + w) * 16, kk, a[w]);
                }
            }
#pragma unroll
            for (int np = 0; np < BN / 16; ++np) {
                int m = lane >> 3;
                int row = np * 16 + (m >> 1) * 8 + (lane & 7);
                unsigned b0, b1, b2, b3;
                ldmatrix_x4(smem_addr(k_tile) + swizzle<RC>(row, kk * 2 + (m & 1)), b0, b1, b2, b3);
#pragma unroll
                for (int w = 0; w < WM; ++w) {
                    mma_16816<BF16>(s[w][2 * np], a[w], b0, b1);
                    mma_16816<BF16>(s[w][2 * np + 1], a[w], b2, b3);
                }
            }
        }

        // mask (only when some key of the step may be invalid or past a causal limit), then
        // the online softmax in log2 units
#pragma unroll
        for (int w = 0; w < WM; ++w)
            softmax_step<NT, DT, CAUSAL>(s[w], o[w], row_max[w], row_sum[w], pos_row[w], pos, need_mask,
                                         p.scale_log2);

        cp_async_wait<0>();
        // V(step) landed; everyone finished reading K(step); pos_next written
        need_mask = __syncthreads_or(next_mask);
        if (step + 1 < steps)
            gather_rows<D, BN, S::THREADS>(k, k_stride, pos_next, smem_addr(k_tile));

        // O += P V, P straight from the S fragments
#pragma unroll
        for (int kk = 0; kk < BN / 16; ++kk) {
            unsigned a[WM][4];
#pragma unroll
            for (int w = 0; w < WM; ++w) pack_p<BF16, NT>(s[w], kk, a[w]);
#pragma unroll
            for (int dp = 0; dp < D / 16; ++dp) {
                int m = lane >> 3;
                int row = kk * 16 + (m & 1) * 8 + (lane & 7);
                unsigned b0, b1, b2, b3;
                ldmatrix_x4_trans(smem_addr(v_tile) + swizzle<RC>(row, dp * 2 + (m >> 1)), b0, b1,
                                  b2, b3);
#pragma unroll
                for (int w = 0; w < WM; ++w) {
                    mma_16816<BF16>(o[w][2 * dp], a[w], b0, b1);
                    mma_16816<BF16>(o[w][2 * dp + 1], a[w], b2, b3);
                }
            }
        }
    }

    // epilogue: normalise, write O (and the log-sum-exp)
#pragma unroll
    for (int w = 0; w < WM; ++w)
        write_atom<DT, BF16>(p, b, h, t0 + (warp * WM + w) * 16, t_end, o[w], row_max[w], row_sum[w]);
}

}  // namespace vecattn
