/*
** vecattn_params.h -- the kernel parameter blocks, shared by the host (C) and the generated
** kernels (CUDA C++ compiled by NVRTC). Only plain types, so that both compilers lay the
** structs out identically; the host passes them by value as the kernels' single argument.
** Changing a struct changes every generated source, hence every cache key.
*/
#ifndef VECATTN_PARAMS_H
#define VECATTN_PARAMS_H

/* Most query heads that may carry their own threshold (gaps travel inside the params). */
#define VECATTN_MAX_HEADS_WITH_THRESHOLDS 256

/* Strides and sizes common to both stages. Strides are in elements. */
typedef struct vecattn_problem {
    const void *q;
    const void *k;
    const void *v;
    long long q_stride_b, q_stride_h, q_stride_s;
    long long k_stride_b, k_stride_h, k_stride_s;
    long long v_stride_b, v_stride_h, v_stride_s;
    int heads_q, heads_kv;
    int seq_q, seq_k;
    int n_qblocks;          /* ceil(seq_q / pq), all blocks of the problem */
    int qblock_begin;       /* first query block of this chunk */
    int qblock_count;       /* query blocks in this chunk */
    float scale;            /* softmax scale */
} vecattn_problem;

/* Rows of counts/offsets: row r = (b * heads_q + h) * qblock_count + (i - qblock_begin)
** for query block i of the chunk. */

/* Selection: one CTA handles `rows per CTA` pooled query rows of one (batch, head). */
typedef struct vecattn_select_params {
    vecattn_problem pb;
    int *counts;            /* [B, Hq, chunk rows] */
    long long *offsets;     /* [B * Hq * chunk rows + 1]: read by the fill pass after the
                               count pass and the scan */
    int key_splits;         /* > 1: each row group's candidate keys are cut into this many
                               tile-aligned pieces, one CTA each (blockIdx.x = group * splits +
                               piece); counts and offsets are then per (row, piece), row-major */
    int *indices;           /* kept key positions, CSR by row */
    long long indices_capacity;
    unsigned *mask;         /* non-null: the fill pass writes a bit mask instead of indices
                               (inside a prefill): bit k % 32 of word k / 32 of row r's
                               mask_words words at mask + r * mask_words is key k; with
                               key_splits, each piece writes its own words and its count */
    long long mask_words;
    float gap;              /* -ln(threshold) when gaps_per_head == 0 */
    int gaps_per_head;
    float gaps[VECATTN_MAX_HEADS_WITH_THRESHOLDS];
} vecattn_select_params;

/* Exclusive scan of the counts into the offsets (one CTA). */
typedef struct vecattn_scan_params {
    const int *counts;
    long long *offsets;     /* n + 1 entries; offsets[n] is the total */
    int n;
} vecattn_scan_params;

/* Key-set modes of the attention kernel. */
#define VECATTN_KEYS_SPEC 0     /* spec rule: causal sink + diagonal, plus the index lists */
#define VECATTN_KEYS_RANGES 1   /* forced ranges from memory, plus the index lists */
#define VECATTN_KEYS_DENSE 2    /* every key (causal: up to the row's position) */

/* A TMA descriptor (the driver's CUtensorMap: 128 opaque bytes, 64-byte aligned), encoded on
** the host by cuTensorMapEncodeTiled. */
#ifdef __cplusplus
#define VECATTN_ALIGN64 alignas(64)
#else
#define VECATTN_ALIGN64 _Alignas(64)
#endif
typedef struct vecattn_tensor_map {
    VECATTN_ALIGN64 unsigned long long opaque[16];
} vecattn_tensor_map;

typedef struct vecattn_attn_params {
    vecattn_problem pb;
    void *o;
    long long o_stride_b, o_stride_h, o_stride_s;
    float *lse;             /* [B, Hq, Sq] or null */
    int key_mode;           /* VECATTN_KEYS_* */
    const int *forced_ranges;     /* [B, Hq, n_qblocks, 4] in VECATTN_KEYS_RANGES */
    const int *counts;      /* [B, Hq, chunk rows], null: no lists */
    const long long *offsets;
    int list_stride;        /* > 1: offsets are per (row, key piece) as written by a selection
                               with key_splits = list_stride; row r's list is
                               [offsets[r * stride], offsets[(r + 1) * stride]) */
    const int *indices;
    const unsigned *mask;   /* non-null: the selected keys are bit masks as the selection
                               writes them (see vecattn_select_params.mask), counts per
                               (row, piece) as above; offsets and indices are unused */
    long long mask_words;
    float scale_log2;       /* scale * log2(e) */
    int tma;                /* 1: tma_k and tma_v hold K and V ([batch][heads_kv][seq_k][D], boxes
                               of 64 columns x block_n rows, 128-byte swizzle); the
                               warp-specialized kernel (sm_90) loads a step whose keys are one
                               run of consecutive rows with them; 0: every step is gathered */
    vecattn_tensor_map tma_k, tma_v;
} vecattn_attn_params;

#endif /* VECATTN_PARAMS_H */
