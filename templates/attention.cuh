// attention.cuh -- flash-style attention over a gathered key set (sm_80 path: mma.sync
// m16n8k16, ldmatrix, cp.async), the kernel behind the sparse and the dense modes.
//
// One CTA computes BM query rows of one query block (BM divides Pq; WARPS = BM / 16 warps,
// each owning 16 rows). The key set of the block is walked as one virtual sequence:
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

template <int D, int BM, int BN>
struct AttnShape {
    static constexpr int WARPS = BM / 16;
    static constexpr int THREADS = WARPS * 32;
    static constexpr int RC = D / 8;  // 16-byte pieces per row
    static constexpr int Q_BYTES = BM * D * 2;
    static constexpr int KV_BYTES = BN * D * 2;
    static constexpr int POS_BYTES = 2 * BN * 4;
    static constexpr int SMEM = Q_BYTES + 2 * KV_BYTES + POS_BYTES;
};

// The keys of one query block: two contiguous ranges then a list, as a virtual sequence.
struct KeySet {
    int a0, len0;       // forced range 0: [a0, a0 + len0)
    int a1, len1;       // forced range 1
    int count;          // listed keys
    const int *list;    // the block's index list
    __device__ __forceinline__ int total() const { return len0 + len1 + count; }
    __device__ __forceinline__ int position(int v) const {
        if (v < len0) return a0 + v;
        v -= len0;
        if (v < len1) return a1 + v;
        v -= len1;
        return v < count ? list[v] : -1;
    }
};

template <int PQ, bool CAUSAL>
__device__ __forceinline__ KeySet block_keys(const vecattn_attn_params &p, int b, int h, int i,
                                             int last_pos) {
    const vecattn_problem &pb = p.pb;
    KeySet ks = {0, 0, 0, 0, 0, nullptr};
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
    if (p.counts) {
        long long row = (long long)(b * pb.heads_q + h) * pb.qblock_count + (i - pb.qblock_begin);
        ks.count = p.counts[row];
        ks.list = p.indices + p.offsets[row];
    }
    return ks;
}

template <int BN, int THREADS>
__device__ __forceinline__ void fill_positions(const KeySet &ks, int step, int *pos) {
    for (int n = threadIdx.x; n < BN; n += THREADS) pos[n] = ks.position(step * BN + n);
}

// Gather BN rows (positions in `pos`, -1 = none) of one K or V head into a swizzled tile.
template <int D, int BN, int THREADS>
__device__ __forceinline__ void gather_rows(const elem_t *src, long long stride_s, const int *pos,
                                            unsigned dst) {
    constexpr int RC = D / 8;
    for (int idx = threadIdx.x; idx < BN * RC; idx += THREADS) {
        int row = idx / RC, piece = idx % RC;
        int kp = pos[row];
        const elem_t *from = src + (kp >= 0 ? (long long)kp * stride_s + piece * 8 : 0);
        cp_async_16(dst + swizzle<RC>(row, piece), from, kp >= 0);
    }
    cp_async_commit();
}

template <int D, int PQ, int BM, int BN, bool CAUSAL, bool BF16>
__device__ __forceinline__ void attention_body(const vecattn_attn_params &p) {
    using S = AttnShape<D, BM, BN>;
    constexpr int RC = S::RC;
    constexpr int NT = BN / 8;    // S fragments per warp (n8 groups)
    constexpr int DT = D / 8;     // O fragments per warp
    extern __shared__ __align__(128) unsigned char smem[];
    unsigned char *q_tile = smem;
    unsigned char *k_tile = q_tile + S::Q_BYTES;
    unsigned char *v_tile = k_tile + S::KV_BYTES;
    int *positions = (int *)(v_tile + S::KV_BYTES);  // [2][BN]

    const vecattn_problem &pb = p.pb;
    const int h = blockIdx.y, b = blockIdx.z;
    const int hk = h / (pb.heads_q / pb.heads_kv);
    constexpr int SPLIT = PQ / BM;
    const int i = pb.qblock_begin + blockIdx.x / SPLIT;
    const int t0 = i * PQ + (blockIdx.x % SPLIT) * BM;
    const int t_end = min(min(t0 + BM, i * PQ + PQ), pb.seq_q);
    if (t0 >= t_end) return;
    const int shift = pb.seq_k - pb.seq_q;  // key position of local query t is t + shift

    const elem_t *q = (const elem_t *)pb.q + b * pb.q_stride_b + h * pb.q_stride_h;
    const elem_t *k = (const elem_t *)pb.k + b * pb.k_stride_b + hk * pb.k_stride_h;
    const elem_t *v = (const elem_t *)pb.v + b * pb.v_stride_b + hk * pb.v_stride_h;
    const KeySet keys = block_keys<PQ, CAUSAL>(p, b, h, i, t_end - 1 + shift);
    const int steps = (keys.total() + BN - 1) / BN;

    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int g = lane >> 2, c = lane & 3;  // fragment row group and column pair

    // Q tile -> registers (A fragments for every 16-wide slice of D)
    for (int idx = threadIdx.x; idx < BM * RC; idx += S::THREADS) {
        int row = idx / RC, piece = idx % RC;
        int t = t0 + row;
        const elem_t *from = q + (t < t_end ? (long long)t * pb.q_stride_s + piece * 8 : 0);
        cp_async_16(smem_addr(q_tile) + swizzle<RC>(row, piece), from, t < t_end);
    }
    cp_async_commit();
    if (steps > 0) {
        fill_positions<BN, S::THREADS>(keys, 0, positions);
        __syncthreads();
        gather_rows<D, BN, S::THREADS>(k, pb.k_stride_s, positions, smem_addr(k_tile));
    }
    cp_async_wait<0>();
    __syncthreads();
    unsigned qf[D / 16][4];
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) {
        int m = lane >> 3;
        int row = warp * 16 + (m & 1) * 8 + (lane & 7);
        ldmatrix_x4(smem_addr(q_tile) + swizzle<RC>(row, kk * 2 + (m >> 1)), qf[kk][0], qf[kk][1],
                    qf[kk][2], qf[kk][3]);
    }

    float o[DT][4];
#pragma unroll
    for (int j = 0; j < DT; ++j) o[j][0] = o[j][1] = o[j][2] = o[j][3] = 0.0f;
    float row_max[2] = {-VA_INF, -VA_INF};
    float row_sum[2] = {0.0f, 0.0f};
    const int pos_row[2] = {t0 + warp * 16 + g + shift, t0 + warp * 16 + g + 8 + shift};

    for (int step = 0; step < steps; ++step) {
        int *pos = positions + (step & 1) * BN;
        int *pos_next = positions + ((step + 1) & 1) * BN;
        cp_async_wait<0>();
        __syncthreads();  // K(step) landed; everyone finished P V(step - 1)
        gather_rows<D, BN, S::THREADS>(v, pb.v_stride_s, pos, smem_addr(v_tile));
        if (step + 1 < steps) fill_positions<BN, S::THREADS>(keys, step + 1, pos_next);

        // S = Q K^T for this warp's 16 rows x BN keys
        float s[NT][4];
#pragma unroll
        for (int j = 0; j < NT; ++j) s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.0f;
#pragma unroll
        for (int kk = 0; kk < D / 16; ++kk) {
#pragma unroll
            for (int np = 0; np < BN / 16; ++np) {
                int m = lane >> 3;
                int row = np * 16 + (m >> 1) * 8 + (lane & 7);
                unsigned b0, b1, b2, b3;
                ldmatrix_x4(smem_addr(k_tile) + swizzle<RC>(row, kk * 2 + (m & 1)), b0, b1, b2, b3);
                mma_16816<BF16>(s[2 * np], qf[kk], b0, b1);
                mma_16816<BF16>(s[2 * np + 1], qf[kk], b2, b3);
            }
        }

        // mask, then the online softmax in log2 units
        float step_max[2] = {-VA_INF, -VA_INF};
#pragma unroll
        for (int j = 0; j < NT; ++j) {
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                int kp = pos[j * 8 + 2 * c + (e & 1)];
                int r = e >> 1;
                bool ok = kp >= 0 && (!CAUSAL || kp <= pos_row[r]);
                float x = ok ? s[j][e] * p.scale_log2 : -VA_INF;
                s[j][e] = x;
                step_max[r] = fmaxf(step_max[r], x);
            }
        }
        float scale_old[2];
#pragma unroll
        for (int r = 0; r < 2; ++r) {
            step_max[r] = fmaxf(step_max[r], __shfl_xor_sync(0xffffffffu, step_max[r], 1));
            step_max[r] = fmaxf(step_max[r], __shfl_xor_sync(0xffffffffu, step_max[r], 2));
            float m_new = fmaxf(row_max[r], step_max[r]);
            float m_use = m_new == -VA_INF ? 0.0f : m_new;  // a row with no key yet: no NaN
            scale_old[r] = exp2_approx(row_max[r] - m_use);
            row_max[r] = m_new;
            step_max[r] = m_use;
        }
        float step_sum[2] = {0.0f, 0.0f};
#pragma unroll
        for (int j = 0; j < NT; ++j) {
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                float pe = exp2_approx(s[j][e] - step_max[e >> 1]);
                s[j][e] = pe;
                step_sum[e >> 1] += pe;
            }
        }
#pragma unroll
        for (int r = 0; r < 2; ++r) row_sum[r] = row_sum[r] * scale_old[r] + step_sum[r];
#pragma unroll
        for (int j = 0; j < DT; ++j) {
            o[j][0] *= scale_old[0];
            o[j][1] *= scale_old[0];
            o[j][2] *= scale_old[1];
            o[j][3] *= scale_old[1];
        }

        cp_async_wait<0>();
        __syncthreads();  // V(step) landed; everyone finished reading K(step); pos_next written
        if (step + 1 < steps)
            gather_rows<D, BN, S::THREADS>(k, pb.k_stride_s, pos_next, smem_addr(k_tile));

        // O += P V, P straight from the S fragments
#pragma unroll
        for (int kk = 0; kk < BN / 16; ++kk) {
            unsigned a[4];
            a[0] = pack2<BF16>(s[2 * kk][0], s[2 * kk][1]);
            a[1] = pack2<BF16>(s[2 * kk][2], s[2 * kk][3]);
            a[2] = pack2<BF16>(s[2 * kk + 1][0], s[2 * kk + 1][1]);
            a[3] = pack2<BF16>(s[2 * kk + 1][2], s[2 * kk + 1][3]);
#pragma unroll
            for (int dp = 0; dp < D / 16; ++dp) {
                int m = lane >> 3;
                int row = kk * 16 + (m & 1) * 8 + (lane & 7);
                unsigned b0, b1, b2, b3;
                ldmatrix_x4_trans(smem_addr(v_tile) + swizzle<RC>(row, dp * 2 + (m >> 1)), b0, b1,
                                  b2, b3);
                mma_16816<BF16>(o[2 * dp], a, b0, b1);
                mma_16816<BF16>(o[2 * dp + 1], a, b2, b3);
            }
        }
    }

    // epilogue: normalise, write O (and the log-sum-exp)
    elem_t *out = (elem_t *)p.o + b * p.o_stride_b + h * p.o_stride_h;
#pragma unroll
    for (int r = 0; r < 2; ++r) {
        float l = row_sum[r];
        l += __shfl_xor_sync(0xffffffffu, l, 1);
        l += __shfl_xor_sync(0xffffffffu, l, 2);
        float inv = l > 0.0f ? 1.0f / l : 0.0f;
        int t = t0 + warp * 16 + g + r * 8;
        if (t < t_end) {
            elem_t *orow = out + (long long)t * p.o_stride_s;
#pragma unroll
            for (int j = 0; j < DT; ++j)
                *(unsigned *)(orow + j * 8 + 2 * c) =
                    pack2<BF16>(o[j][2 * r] * inv, o[j][2 * r + 1] * inv);
            if (p.lse && c == 0) {
                float lse = l > 0.0f ? (row_max[r] + __log2f(l)) * 0.69314718055994531f : -VA_INF;
                p.lse[(long long)(b * pb.heads_q + h) * pb.seq_q + t] = lse;
            }
        }
    }
}

}  // namespace vecattn
