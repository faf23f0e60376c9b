/*
** prefill.c -- the public entry points: selection, sparse attention, and both together.
**
** A prefill walks the query blocks in chunks. Per chunk: one pass of the selection writes
** each query block's decisions as a bit mask (one bit per key) and its count into the
** workspace, then the attention kernel decodes the masks as it walks the chunk's blocks. A
** mask holds the worst case (every candidate kept) in 1/32 of the bytes of an index list,
** which is what lets the whole call run without waiting for the GPU and with few chunks;
** the default chunking keeps the masks under VA_MASK_BUDGET bytes whatever the length.
** vecattn_select (compact CSR lists for the caller) runs count -> scan -> fill instead.
*/
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/runtime.h"
#include "templates/vecattn_params.h"

/* Default bound of the mask workspace when chunk_size is 0: at 128K x 32 heads, causal,
** the masks of all 2048 query blocks take 1 GiB, so this makes two chunks. */
#define VA_MASK_BUDGET ((int64_t)768 << 20)

/* Most pieces the selection of one chunk cuts the keys into (see key_splits). */
#define VA_MAX_KEY_SPLITS 16

vecattn_status va_check_args(const vecattn_prefill_args *a, int need_v_o, char *msg, size_t msg_size);

static int n_qblocks(const vecattn_prefill_args *a) { return (a->seq_q + a->pq - 1) / a->pq; }

static float softmax_scale(const vecattn_prefill_args *a) {
    return a->scale != 0.0f ? a->scale : 1.0f / sqrtf((float)a->head_dim);
}

static float threshold_gap(float p) { return (float)(-log((double)p)); }

static void fill_problem(vecattn_problem *pb, const vecattn_prefill_args *a, int qb_begin, int qb_count) {
    memset(pb, 0, sizeof *pb);
    pb->q = a->q;
    pb->k = a->k;
    pb->v = a->v;
    pb->q_stride_b = a->q_stride[0], pb->q_stride_h = a->q_stride[1], pb->q_stride_s = a->q_stride[2];
    pb->k_stride_b = a->k_stride[0], pb->k_stride_h = a->k_stride[1], pb->k_stride_s = a->k_stride[2];
    pb->v_stride_b = a->v_stride[0], pb->v_stride_h = a->v_stride[1], pb->v_stride_s = a->v_stride[2];
    pb->heads_q = a->heads_q;
    pb->heads_kv = a->heads_kv;
    pb->seq_q = a->seq_q;
    pb->seq_k = a->seq_k;
    pb->n_qblocks = n_qblocks(a);
    pb->qblock_begin = qb_begin;
    pb->qblock_count = qb_count;
    pb->scale = softmax_scale(a);
}

/* ---- kernels of a problem ---------------------------------------------------------------- */

typedef struct kernels {
    va_kernel_spec select_spec, attn_spec;
    CUfunction count, fill, mask, scan, attention;
} kernels;

static vecattn_status load_kernels(vecattn_ctx *ctx, const vecattn_prefill_args *a, int need_select,
                                   int need_attention, kernels *kn) {
    va_module *mod;
    vecattn_status st = VECATTN_OK;
    if (need_select) {
        if ((st = va_choose_spec(ctx, VA_KERNEL_SELECT, a, -1.0, &kn->select_spec))) return st;
        if ((st = va_module_get(ctx, &kn->select_spec, &mod))) return st;
        if ((st = va_module_function(ctx, mod, "select_count", &kn->count))) return st;
        if ((st = va_module_function(ctx, mod, "select_fill", &kn->fill))) return st;
        if ((st = va_module_function(ctx, mod, "select_mask", &kn->mask))) return st;
        if ((st = va_module_function(ctx, mod, "scan", &kn->scan))) return st;
    }
    if (need_attention) {
        double hint = a->dense ? 0.0 : -1.0;
        if ((st = va_choose_spec(ctx, VA_KERNEL_ATTENTION, a, hint, &kn->attn_spec))) return st;
        if ((st = va_module_get(ctx, &kn->attn_spec, &mod))) return st;
        st = va_module_function(ctx, mod, "attention", &kn->attention);
    }
    return st;
}

/* ---- the two stages -------------------------------------------------------------------------- */

/* Where the selection of a chunk goes: CSR lists (counts, offsets, indices) or bit masks
** (counts, mask). */
typedef struct csr_buffers {
    CUdeviceptr counts, offsets, indices;
    int64_t capacity;
    int splits;  /* key pieces per row (>= 1): counts and offsets are per (row, piece) */
    CUdeviceptr mask;
    int64_t mask_words;  /* per query block */
} csr_buffers;

/* Selection of query blocks [qb_begin, qb_begin + qb_count). Modes: SELECT_COUNT (counts and
** offsets only), SELECT_CSR (count, scan, fill: compact lists), SELECT_MASK (fill alone into
** buf->mask, counts per (row, piece)). */
enum { SELECT_COUNT, SELECT_CSR, SELECT_MASK };

static vecattn_status launch_selection(vecattn_ctx *ctx, const kernels *kn, const vecattn_prefill_args *a,
                                       int qb_begin, int qb_count, const csr_buffers *buf, int mode,
                                       CUstream stream) {
    vecattn_select_params sp;
    memset(&sp, 0, sizeof sp);
    fill_problem(&sp.pb, a, qb_begin, qb_count);
    sp.counts = (int *)buf->counts;
    sp.offsets = (long long *)buf->offsets;
    sp.indices = (int *)buf->indices;
    sp.indices_capacity = buf->capacity;
    const int splits = buf->splits;
    sp.key_splits = splits;
    sp.gap = threshold_gap(a->threshold);
    if (a->thresholds) {
        sp.gaps_per_head = 1;
        for (int h = 0; h < a->heads_q; ++h) sp.gaps[h] = threshold_gap(a->thresholds[h]);
    }
    const va_kernel_spec *s = &kn->select_spec;
    unsigned gx = (unsigned)((qb_count + s->select_rows - 1) / s->select_rows * splits);
    unsigned threads = (unsigned)va_spec_threads(s);
    size_t smem = va_spec_smem_bytes(s);
    if (mode == SELECT_MASK) {
        sp.mask = (unsigned *)buf->mask;
        sp.mask_words = buf->mask_words;
    } else {
        vecattn_status st = va_launch(ctx, kn->count, gx, (unsigned)a->heads_q, (unsigned)a->batch, threads,
                                      smem, stream, &sp, sizeof sp);
        if (st != VECATTN_OK) return st;
        vecattn_scan_params scan = {(const int *)buf->counts, (long long *)buf->offsets,
                                    a->batch * a->heads_q * qb_count * splits};
        if ((st = va_launch(ctx, kn->scan, 1, 1, 1, 1024, 0, stream, &scan, sizeof scan))) return st;
        if (mode == SELECT_COUNT) return VECATTN_OK;
    }
    CUfunction last_pass = mode == SELECT_MASK ? kn->mask : kn->fill;
    return va_launch(ctx, last_pass, gx, (unsigned)a->heads_q, (unsigned)a->batch, threads, smem, stream, &sp,
                     sizeof sp);
}

static vecattn_status launch_attention(vecattn_ctx *ctx, const kernels *kn, const vecattn_prefill_args *a,
                                       int qb_begin, int qb_count, int key_mode, const int32_t *forced,
                                       const csr_buffers *buf, CUstream stream) {
    vecattn_attn_params ap;
    memset(&ap, 0, sizeof ap);
    fill_problem(&ap.pb, a, qb_begin, qb_count);
    ap.o = a->o;
    ap.o_stride_b = a->o_stride[0], ap.o_stride_h = a->o_stride[1], ap.o_stride_s = a->o_stride[2];
    ap.lse = a->lse;
    ap.key_mode = key_mode;
    ap.forced_ranges = (const int *)forced;
    if (buf) {
        ap.counts = (const int *)buf->counts;
        ap.offsets = (const long long *)buf->offsets;
        ap.indices = (const int *)buf->indices;
        ap.list_stride = buf->splits;
        ap.mask = (const unsigned *)buf->mask;
        ap.mask_words = buf->mask_words;
    }
    ap.scale_log2 = ap.pb.scale * 1.4426950408889634f;
    const va_kernel_spec *s = &kn->attn_spec;
    if (s->impl == 2) va_encode_kv_maps(a, s->block_n, &ap);
    unsigned gx = (unsigned)(qb_count * (s->pq / s->block_m));
    return va_launch(ctx, kn->attention, gx, (unsigned)a->heads_q, (unsigned)a->batch,
                     (unsigned)va_spec_threads(s), va_spec_smem_bytes(s), stream, &ap, sizeof ap);
}

/* ---- chunk planning and the workspace ---------------------------------------------------------- */

/* Words of each query block's mask in a chunk of `rows` blocks from `begin`: up to the last
** candidate of its last block, in whole 128-key groups (the selection writes whole chunks of
** its key walk, at most 128 keys each). */
static int64_t chunk_mask_words(const vecattn_prefill_args *a, int begin, int rows) {
    int64_t hi = a->seq_k;
    if (a->causal) {
        int64_t p0 = (int64_t)(begin + rows - 1) * a->pq + (a->seq_k - a->seq_q);
        hi = p0 < a->seq_k ? p0 : a->seq_k;
    }
    return hi > 128 ? (hi + 127) / 128 * 4 : 4; /* never empty: a row's first word is read */
}

static size_t align256(size_t x) { return (x + 255) & ~(size_t)255; }

/* Bytes of counts | mask for a chunk of `rows` blocks from `begin`. */
static size_t mask_bytes(const vecattn_prefill_args *a, int begin, int rows, size_t *counts_bytes) {
    size_t n = (size_t)a->batch * a->heads_q * rows;
    *counts_bytes = align256(n * VA_MAX_KEY_SPLITS * 4);
    return *counts_bytes + align256(n * (size_t)chunk_mask_words(a, begin, rows) * 4);
}

/* Query blocks of the chunk starting at `begin`. */
static int chunk_rows(const vecattn_prefill_args *a, int begin) {
    int total = n_qblocks(a);
    if (a->chunk_size > 0) {
        int rows = a->chunk_size / a->pq;
        return begin + rows < total ? rows : total - begin;
    }
    int rows = 1;
    size_t cb;
    while (begin + rows < total && mask_bytes(a, begin, rows + 1, &cb) <= (size_t)VA_MASK_BUDGET) ++rows;
    return rows;
}

/* The largest chunk's bytes: what a prefill of `a` needs. */
static size_t sparse_workspace_bytes(const vecattn_prefill_args *a) {
    size_t most = 0, cb;
    for (int begin = 0; begin < n_qblocks(a);) {
        int rows = chunk_rows(a, begin);
        size_t bytes = mask_bytes(a, begin, rows, &cb);
        if (bytes > most) most = bytes;
        begin += rows;
    }
    return most;
}

/* Carve counts | mask for a chunk out of the caller's workspace when there is one (its size
** was checked on entry), else the context's. */
static vecattn_status reserve_masks(vecattn_ctx *ctx, const vecattn_prefill_args *a, int begin, int rows,
                                    int splits, csr_buffers *buf) {
    size_t counts_bytes;
    size_t total = mask_bytes(a, begin, rows, &counts_bytes);
    CUdeviceptr base = (CUdeviceptr)a->workspace;
    if (!base) {
        vecattn_status st = va_workspace_reserve(ctx, total);
        if (st != VECATTN_OK) return st;
        base = ctx->workspace;
    }
    memset(buf, 0, sizeof *buf);
    buf->counts = base;
    buf->mask = base + counts_bytes;
    buf->mask_words = chunk_mask_words(a, begin, rows);
    buf->splits = splits;
    return VECATTN_OK;
}

/* ---- sparsity ------------------------------------------------------------------------------- */

static int64_t rows_of_block(const vecattn_prefill_args *a, int i) {
    int64_t r = a->seq_q - (int64_t)i * a->pq;
    return r < a->pq ? r : a->pq;
}

/* Query-key pairs that are valid, and those the forced keys attend, per (batch, head). */
void va_pair_counts(const vecattn_prefill_args *a, double *valid, double *forced) {
    int64_t shift = a->seq_k - a->seq_q;
    *valid = 0.0;
    *forced = 0.0;
    if (!a->causal) {
        *valid = (double)a->seq_q * a->seq_k;
        return;
    }
    for (int64_t t = 0; t < a->seq_q; ++t) *valid += (double)(t + shift + 1);
    for (int i = 0; i < n_qblocks(a); ++i) {
        int64_t r = rows_of_block(a, i), p0 = (int64_t)i * a->pq + shift;
        int64_t sink = p0 < a->pq ? p0 : a->pq;
        *forced += (double)(sink * r) + (double)(r * (r + 1) / 2);
    }
}

/* Attended pairs of the selected keys of one chunk: a selected key serves every row of its block. */
static vecattn_status chunk_selected_pairs(vecattn_ctx *ctx, const vecattn_prefill_args *a, int begin, int rows,
                                           const csr_buffers *buf, CUstream stream, double *pairs) {
    size_t splits = (size_t)buf->splits;
    size_t n = (size_t)a->batch * a->heads_q * rows * splits;  /* per (row, key piece) */
    int32_t *counts = malloc(n * sizeof *counts);
    if (!counts) return va_fail(ctx, VECATTN_E_NOMEM, "out of memory");
    vecattn_status st = va_check_cu(ctx, va_cuStreamSynchronize(stream), "cuStreamSynchronize");
    if (st == VECATTN_OK)
        st = va_check_cu(ctx, va_cuMemcpyDtoH(counts, buf->counts, n * sizeof *counts), "cuMemcpyDtoH (counts)");
    for (size_t x = 0; st == VECATTN_OK && x < n; ++x)
        *pairs += (double)counts[x] * (double)rows_of_block(a, begin + (int)(x / splits % (size_t)rows));
    free(counts);
    return st;
}

/* ---- entry points --------------------------------------------------------------------------- */

static vecattn_status enter_checked(vecattn_ctx *ctx, const vecattn_prefill_args *a, int need_v_o) {
    if (!ctx || ctx->magic != VA_CTX_MAGIC) return VECATTN_E_MISUSE;
    char msg[512];
    vecattn_status st = va_check_args(a, need_v_o, msg, sizeof msg);
    if (st != VECATTN_OK) return va_fail(ctx, st, "%s", msg);
    return va_ctx_enter(ctx);
}

static vecattn_status prefill_dense(vecattn_ctx *ctx, const vecattn_prefill_args *user, CUstream stream) {
    vecattn_prefill_args tiled = *user;  /* the caller's pq means nothing without a selection */
    tiled.pq = va_attention_pq(user);
    const vecattn_prefill_args *a = &tiled;
    kernels kn;
    vecattn_status st = load_kernels(ctx, a, 0, 1, &kn);
    if (st == VECATTN_OK)
        st = launch_attention(ctx, &kn, a, 0, n_qblocks(a), VECATTN_KEYS_DENSE, NULL, NULL, stream);
    if (st == VECATTN_OK && a->sparsity_out) *a->sparsity_out = 0.0f;
    return st;
}

/*
** Key pieces for the selection of a chunk of `rows` query blocks. With one CTA per group of
** select_rows pooled rows, a short chunk is a few dozen CTAs on a 132-SM GPU, each walking up
** to the whole key range (measured at 128K with index lists, when chunks were short: the
** selection took 100 ms of a 184 ms prefill). The rule restarts its running max every
** gk * bk keys, so the keys can be cut into pieces at those boundaries, one CTA each, with
** the same result; with masks each piece writes its own words and its own count, still in
** one pass, so a chunk is split until it makes a few waves.
*/
static int key_splits(const vecattn_ctx *ctx, const vecattn_prefill_args *a, const va_kernel_spec *s, int rows) {
    long long ctas = (long long)((rows + s->select_rows - 1) / s->select_rows) * a->heads_q * a->batch;
    long long sms = ctx->sm_count > 0 ? ctx->sm_count : 1, want = 4 * sms;
    if (ctas >= want) return 1;
    long long splits = (want + ctas - 1) / ctas;
    long long tile = (long long)a->gk * a->bk > 64 ? (long long)a->gk * a->bk : 64;
    long long tiles = (a->seq_k + tile - 1) / tile; /* more pieces than tiles would be empty */
    if (splits > tiles) splits = tiles;
    if (splits > VA_MAX_KEY_SPLITS) splits = VA_MAX_KEY_SPLITS;
    return splits > 1 ? (int)splits : 1;
}

/* A caller's workspace must hold the largest chunk before anything is queued. */
static vecattn_status check_caller_workspace(vecattn_ctx *ctx, const vecattn_prefill_args *a) {
    if (!a->workspace) return VECATTN_OK;
    if ((uintptr_t)a->workspace % 256 != 0)
        return va_fail(ctx, VECATTN_E_LAYOUT, "workspace = %p is not 256-byte aligned", a->workspace);
    size_t need = sparse_workspace_bytes(a);
    if (a->workspace_size < need)
        return va_fail(ctx, VECATTN_E_CAPACITY, "workspace_size = %zu bytes, this problem needs %zu "
                       "(vecattn_prefill_workspace_size)", a->workspace_size, need);
    return VECATTN_OK;
}

static vecattn_status prefill_sparse(vecattn_ctx *ctx, const vecattn_prefill_args *a, CUstream stream) {
    kernels kn;
    vecattn_status st = check_caller_workspace(ctx, a);
    if (st == VECATTN_OK) st = load_kernels(ctx, a, 1, 1, &kn);
    double selected_pairs = 0.0;
    int chunks = 0;
    for (int begin = 0; st == VECATTN_OK && begin < n_qblocks(a); ++chunks) {
        int rows = chunk_rows(a, begin);
        csr_buffers buf;
        st = reserve_masks(ctx, a, begin, rows, key_splits(ctx, a, &kn.select_spec, rows), &buf);
        if (st == VECATTN_OK) st = launch_selection(ctx, &kn, a, begin, rows, &buf, SELECT_MASK, stream);
        if (st == VECATTN_OK)
            st = launch_attention(ctx, &kn, a, begin, rows, VECATTN_KEYS_SPEC, NULL, &buf, stream);
        if (st == VECATTN_OK && a->sparsity_out)
            st = chunk_selected_pairs(ctx, a, begin, rows, &buf, stream, &selected_pairs);
        begin += rows;
    }
    if (st == VECATTN_OK && a->sparsity_out) {
        double valid, forced;
        va_pair_counts(a, &valid, &forced);
        *a->sparsity_out = (float)(1.0 - (forced + selected_pairs / ((double)a->batch * a->heads_q)) / valid);
    }
    va_log(ctx, "prefill: %d chunk%s, %s", chunks, chunks == 1 ? "" : "s", st == VECATTN_OK ? "queued" : "failed");
    return st;
}

vecattn_status vecattn_prefill(vecattn_ctx *ctx, const vecattn_prefill_args *a, vecattn_stream stream) {
    vecattn_status st = enter_checked(ctx, a, 1);
    if (st != VECATTN_OK) return st;
    st = a->dense ? prefill_dense(ctx, a, (CUstream)stream) : prefill_sparse(ctx, a, (CUstream)stream);
    va_ctx_leave(ctx);
    return st;
}

vecattn_status vecattn_prefill_workspace_size(const vecattn_prefill_args *a, size_t *bytes) {
    if (!a || !bytes) return VECATTN_E_MISUSE;
    vecattn_status st = va_check_args(a, 0, NULL, 0);
    if (st != VECATTN_OK) return st;
    *bytes = a->dense ? 0 : sparse_workspace_bytes(a);
    return VECATTN_OK;
}

static vecattn_status read_total(vecattn_ctx *ctx, const csr_buffers *buf, int64_t n, CUstream stream,
                                 int64_t *total) {
    vecattn_status st = va_check_cu(ctx, va_cuStreamSynchronize(stream), "cuStreamSynchronize");
    if (st == VECATTN_OK)
        st = va_check_cu(ctx, va_cuMemcpyDtoH(total, buf->offsets + (CUdeviceptr)n * 8, 8), "cuMemcpyDtoH (total)");
    return st;
}

vecattn_status vecattn_select(vecattn_ctx *ctx, const vecattn_prefill_args *a, const vecattn_selection *sel,
                              int64_t *total_out, vecattn_stream stream) {
    vecattn_status st = enter_checked(ctx, a, 0);
    if (st != VECATTN_OK) return st;
    CUstream s = (CUstream)stream;
    if (a->dense) st = va_fail(ctx, VECATTN_E_INVALID_ARG, "dense: the dense mode has no selection");
    else if (!sel || !sel->counts || !sel->offsets)
        st = va_fail(ctx, VECATTN_E_MISUSE, "sel, sel->counts and sel->offsets are required");
    else if (!sel->indices && !total_out)
        st = va_fail(ctx, VECATTN_E_MISUSE, "total_out is required when sel->indices is NULL");
    else if (sel->indices && sel->indices_capacity < 0)
        st = va_fail(ctx, VECATTN_E_CAPACITY, "indices_capacity = %lld", (long long)sel->indices_capacity);
    kernels kn;
    if (st == VECATTN_OK) st = load_kernels(ctx, a, 1, 0, &kn);
    int rows = n_qblocks(a);
    csr_buffers buf = {0};
    if (st == VECATTN_OK) {
        buf = (csr_buffers){.counts = (CUdeviceptr)sel->counts, .offsets = (CUdeviceptr)sel->offsets,
                            .indices = (CUdeviceptr)sel->indices,
                            .capacity = sel->indices ? sel->indices_capacity : 0, .splits = 1};
        st = launch_selection(ctx, &kn, a, 0, rows, &buf, sel->indices ? SELECT_CSR : SELECT_COUNT, s);
    }
    if (st == VECATTN_OK && total_out) {
        st = read_total(ctx, &buf, (int64_t)a->batch * a->heads_q * rows, s, total_out);
        if (st == VECATTN_OK && sel->indices && *total_out > sel->indices_capacity)
            st = va_fail(ctx, VECATTN_E_CAPACITY, "indices_capacity = %lld but the selection kept %lld keys",
                         (long long)sel->indices_capacity, (long long)*total_out);
    }
    va_ctx_leave(ctx);
    return st;
}

vecattn_status vecattn_sparse_attention(vecattn_ctx *ctx, const vecattn_prefill_args *a,
                                        const int32_t *forced_ranges, const vecattn_selection *sel,
                                        vecattn_stream stream) {
    vecattn_prefill_args attn;
    if (a) {
        attn = *a;
        attn.dense = 1; /* only checks: threshold, bk and gk are not used here */
    }
    vecattn_status st = enter_checked(ctx, a ? &attn : NULL, 1);
    if (st != VECATTN_OK) return st;
    if (sel && (!sel->counts || !sel->offsets || !sel->indices))
        st = va_fail(ctx, VECATTN_E_MISUSE, "sel->counts, sel->offsets and sel->indices are required");
    kernels kn;
    if (st == VECATTN_OK) st = load_kernels(ctx, a, 0, 1, &kn);
    csr_buffers buf = {0};
    if (sel) buf = (csr_buffers){.counts = (CUdeviceptr)sel->counts, .offsets = (CUdeviceptr)sel->offsets,
                                 .indices = (CUdeviceptr)sel->indices, .capacity = sel->indices_capacity, .splits = 1};
    if (st == VECATTN_OK)
        st = launch_attention(ctx, &kn, a, 0, n_qblocks(a), forced_ranges ? VECATTN_KEYS_RANGES : VECATTN_KEYS_SPEC,
                              forced_ranges, sel ? &buf : NULL, (CUstream)stream);
    va_ctx_leave(ctx);
    return st;
}
