/*
** recall.c -- sparsity and attention-mass recall on the GPU from two log-sum-exps (recall.h).
**
** The handle keeps a copy of the problem with V := K (the lse does not read V), a scratch
** O, and lse_all of the dense pass; each measurement is one prefill (or one sparse attention
** on the caller's lists) with lse output, plus the selection's counts for the sparsity.
*/
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "autotune/recall.h"
#include "runtime/runtime.h"

struct va_recall {
    vecattn_ctx *ctx;
    vecattn_prefill_args a;   /* q, k; v = k; o and lse are the handle's */
    CUstream stream;
    CUdeviceptr o, lse, counts, offsets;
    float *lse_all, *lse_kept; /* host, [B, Hq, Sq] */
    int32_t *counts_host;      /* host, [B, Hq, nQ] */
    int n_qblocks;
    char msg[512];
};

static vecattn_status fail(va_recall *r, vecattn_status st, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->msg, sizeof r->msg, fmt, ap);
    va_end(ap);
    return st;
}

/* A library call failed: keep its message. */
static vecattn_status lib_fail(va_recall *r, vecattn_status st, const char *what) {
    return fail(r, st, "%s: %s", what, vecattn_errmsg(r->ctx));
}

static vecattn_status cu(va_recall *r, CUresult res, const char *what) {
    if (res == CUDA_SUCCESS) return VECATTN_OK;
    return fail(r, VECATTN_E_DRIVER, "%s: %s", what, va_cu_error_name(res));
}

const char *va_recall_errmsg(const va_recall *r) { return r ? r->msg : "out of memory"; }

static size_t lse_count(const vecattn_prefill_args *a) { return (size_t)a->batch * a->heads_q * a->seq_q; }
static size_t rows_count(const va_recall *r) { return (size_t)r->a.batch * r->a.heads_q * r->n_qblocks; }

static int block_rows(const vecattn_prefill_args *a, int i) {
    int rows = a->seq_q - i * a->pq;
    return rows < a->pq ? rows : a->pq;
}

double va_recall_valid_pairs(const vecattn_prefill_args *a) {
    double valid, forced;
    va_pair_counts(a, &valid, &forced);
    return valid;
}

/* Mean of exp(lse_kept - lse_all) over the rows of head h (all batches); rows with no key
** at all (lse_all = -inf) count as fully recalled. */
static double head_recall(const va_recall *r, int h, double *sum_out) {
    const vecattn_prefill_args *a = &r->a;
    double sum = 0.0;
    for (int b = 0; b < a->batch; ++b) {
        size_t base = ((size_t)b * a->heads_q + h) * a->seq_q;
        for (int t = 0; t < a->seq_q; ++t) {
            double all = r->lse_all[base + t], kept = r->lse_kept[base + t];
            if (isinf(all) && all < 0) sum += 1.0;
            else if (!(isinf(kept) && kept < 0)) sum += fmin(1.0, exp(kept - all));
        }
    }
    *sum_out = sum;
    return sum / ((double)a->batch * a->seq_q);
}

/* Fill per_head / overall from lse_kept and the attended pairs per head. */
static void summarise(const va_recall *r, const double *attended, va_recall_stats *per_head,
                      va_recall_stats *overall) {
    const vecattn_prefill_args *a = &r->a;
    double valid = va_recall_valid_pairs(a) * a->batch;
    double all_attended = 0.0, all_recall = 0.0;
    for (int h = 0; h < a->heads_q; ++h) {
        double recall_sum;
        double recall = head_recall(r, h, &recall_sum);
        double sparsity = attended ? 1.0 - attended[h] / valid : NAN;
        if (per_head) per_head[h] = (va_recall_stats){sparsity, recall};
        all_attended += attended ? attended[h] : NAN;
        all_recall += recall_sum;
    }
    if (overall) {
        overall->sparsity = 1.0 - all_attended / (valid * a->heads_q);
        overall->recall = all_recall / ((double)a->batch * a->heads_q * a->seq_q);
    }
}

static vecattn_status download_lse(va_recall *r, float *dst) {
    vecattn_status st = cu(r, va_cuStreamSynchronize(r->stream), "cuStreamSynchronize");
    if (st == VECATTN_OK) st = cu(r, va_cuMemcpyDtoH(dst, r->lse, lse_count(&r->a) * 4), "cuMemcpyDtoH (lse)");
    return st;
}

static vecattn_status allocate(va_recall *r) {
    const vecattn_prefill_args *a = &r->a;
    size_t o_bytes = (size_t)a->batch * a->heads_q * a->seq_q * a->head_dim * 2;
    r->lse_all = malloc(lse_count(a) * 4);
    r->lse_kept = malloc(lse_count(a) * 4);
    r->counts_host = malloc(rows_count(r) * 4);
    if (!r->lse_all || !r->lse_kept || !r->counts_host) return fail(r, VECATTN_E_NOMEM, "out of host memory");
    vecattn_status st = cu(r, va_cuMemAlloc(&r->o, o_bytes), "cuMemAlloc (scratch O)");
    if (st == VECATTN_OK) st = cu(r, va_cuMemAlloc(&r->lse, lse_count(a) * 4), "cuMemAlloc (lse)");
    if (st == VECATTN_OK) st = cu(r, va_cuMemAlloc(&r->counts, rows_count(r) * 4), "cuMemAlloc (counts)");
    if (st == VECATTN_OK) st = cu(r, va_cuMemAlloc(&r->offsets, (rows_count(r) + 1) * 8), "cuMemAlloc (offsets)");
    return st;
}

vecattn_status va_recall_open(vecattn_ctx *ctx, const vecattn_prefill_args *args, vecattn_stream stream,
                              va_recall **out) {
    *out = NULL;
    va_recall *r = calloc(1, sizeof *r);
    if (!r) return VECATTN_E_NOMEM;
    *out = r;
    r->ctx = ctx;
    r->stream = (CUstream)stream;
    r->a = *args;
    vecattn_prefill_args *a = &r->a;
    a->v = a->k;
    memcpy(a->v_stride, a->k_stride, sizeof a->v_stride);
    a->thresholds = NULL, a->sparsity_out = NULL, a->chunk_size = 0;
    a->workspace = NULL, a->workspace_size = 0;
    a->o_stride[2] = a->head_dim;
    a->o_stride[1] = (int64_t)a->seq_q * a->head_dim;
    a->o_stride[0] = a->o_stride[1] * a->heads_q;
    r->n_qblocks = a->pq > 0 ? (a->seq_q + a->pq - 1) / a->pq : 0;
    char msg[256];
    vecattn_prefill_args check = *a;
    check.o = (void *)(uintptr_t)256, check.dense = 1;
    vecattn_status st = vecattn_check_prefill_args(&check, msg, sizeof msg);
    if (st != VECATTN_OK) return fail(r, st, "%s", msg);
    if ((st = cu(r, va_cuCtxPushCurrent(ctx->primary), "cuCtxPushCurrent"))) return st;
    st = allocate(r);
    a->o = (void *)r->o;
    a->lse = (float *)r->lse;
    if (st == VECATTN_OK) {
        vecattn_prefill_args dense = *a;
        dense.dense = 1;
        st = vecattn_prefill(ctx, &dense, stream);
        if (st != VECATTN_OK) st = lib_fail(r, st, "dense pass");
    }
    if (st == VECATTN_OK) st = download_lse(r, r->lse_all);
    CUcontext popped;
    va_cuCtxPopCurrent(&popped);
    return st;
}

/* Attended pairs per head of the library's selection, from its counts. */
static void selected_pairs(const va_recall *r, double *attended) {
    const vecattn_prefill_args *a = &r->a;
    double valid, forced;
    va_pair_counts(a, &valid, &forced);
    for (int h = 0; h < a->heads_q; ++h) {
        double pairs = 0.0;
        for (int b = 0; b < a->batch; ++b) {
            const int32_t *c = r->counts_host + ((size_t)b * a->heads_q + h) * r->n_qblocks;
            for (int i = 0; i < r->n_qblocks; ++i) pairs += (double)c[i] * block_rows(a, i);
            pairs += forced;
        }
        attended[h] = pairs;
    }
}

vecattn_status va_recall_measure(va_recall *r, const float *thresholds, va_recall_stats *per_head,
                                 va_recall_stats *overall) {
    vecattn_prefill_args a = r->a;
    a.thresholds = thresholds;
    double *attended = malloc(sizeof(double) * (size_t)a.heads_q);
    if (!attended) return fail(r, VECATTN_E_NOMEM, "out of host memory");
    vecattn_status st = cu(r, va_cuCtxPushCurrent(r->ctx->primary), "cuCtxPushCurrent");
    if (st == VECATTN_OK && (st = vecattn_prefill(r->ctx, &a, (vecattn_stream)r->stream)))
        st = lib_fail(r, st, "sparse pass");
    if (st == VECATTN_OK) st = download_lse(r, r->lse_kept);
    vecattn_selection sel = {(int32_t *)r->counts, (int64_t *)r->offsets, NULL, 0};
    int64_t total = 0;
    if (st == VECATTN_OK && (st = vecattn_select(r->ctx, &a, &sel, &total, (vecattn_stream)r->stream)))
        st = lib_fail(r, st, "selection counts");
    if (st == VECATTN_OK)
        st = cu(r, va_cuMemcpyDtoH(r->counts_host, r->counts, rows_count(r) * 4), "cuMemcpyDtoH (counts)");
    if (st == VECATTN_OK) {
        selected_pairs(r, attended);
        summarise(r, attended, per_head, overall);
    }
    CUcontext popped;
    va_cuCtxPopCurrent(&popped);
    free(attended);
    return st;
}

vecattn_status va_recall_measure_selection(va_recall *r, const int32_t *forced_ranges,
                                           const vecattn_selection *sel, const double *attended_pairs,
                                           va_recall_stats *per_head, va_recall_stats *overall) {
    vecattn_status st = cu(r, va_cuCtxPushCurrent(r->ctx->primary), "cuCtxPushCurrent");
    if (st == VECATTN_OK &&
        (st = vecattn_sparse_attention(r->ctx, &r->a, forced_ranges, sel, (vecattn_stream)r->stream)))
        st = lib_fail(r, st, "sparse attention");
    if (st == VECATTN_OK) st = download_lse(r, r->lse_kept);
    if (st == VECATTN_OK) summarise(r, attended_pairs, per_head, overall);
    CUcontext popped;
    va_cuCtxPopCurrent(&popped);
    return st;
}

void va_recall_close(va_recall *r) {
    if (!r) return;
    if (r->ctx && (r->o || r->lse || r->counts || r->offsets) &&
        va_cuCtxPushCurrent(r->ctx->primary) == CUDA_SUCCESS) {
        va_cuStreamSynchronize(r->stream);
        if (r->o) va_cuMemFree(r->o);
        if (r->lse) va_cuMemFree(r->lse);
        if (r->counts) va_cuMemFree(r->counts);
        if (r->offsets) va_cuMemFree(r->offsets);
        CUcontext popped;
        va_cuCtxPopCurrent(&popped);
    }
    free(r->lse_all), free(r->lse_kept), free(r->counts_host);
    free(r);
}
