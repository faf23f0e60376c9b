/*
** recall.h -- sparsity and attention-mass recall of a selection, measured on the GPU.
**
** WHY ON THE GPU, AND HOW
**   Recall of query row t is the share of its true softmax mass that falls inside the kept
**   key set K(t):  recall(t) = sum_{j in K(t)} exp(s_tj) / sum_{j valid} exp(s_tj).
**   Both sums are what the attention kernel already computes as its log-sum-exp output
**   (vecattn_prefill_args.lse), so recall(t) = exp(lse_kept(t) - lse_all(t)) with
**   lse_all from one dense-mode call and lse_kept from a sparse call: no extra kernel, and
**   the same kernels that users run. V does not change the lse, so the scratch V is K.
**   Sparsity per head comes from the selection's counts (vecattn_select without indices).
**
** USE
**   va_recall_open() runs the dense pass once for a (q, k) problem and keeps lse_all;
**   va_recall_measure() then costs one selection + one sparse attention per call, so that
**   bisection over thresholds (one threshold per head, all heads in one call) is cheap.
*/
#ifndef VECATTN_RECALL_H
#define VECATTN_RECALL_H

#include "vecattn.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct va_recall_stats {
    double sparsity;  /* 1 - attended pairs / valid pairs (forced keys count as attended) */
    double recall;    /* mean over query rows (and batch) of exp(lse_kept - lse_all) */
} va_recall_stats;

typedef struct va_recall va_recall;

/*
** Prepare measurements for the problem `a` describes: q, k (device), sizes, strides, dtype,
** pq, bk, gk, causal, scale. a->v, a->o, a->lse, a->thresholds, a->threshold and
** a->chunk_size are ignored (the handle owns its scratch output and lse buffers).
** Runs the dense pass on `stream` and waits for it.
*/
vecattn_status va_recall_open(vecattn_ctx *ctx, const vecattn_prefill_args *a, vecattn_stream stream,
                              va_recall **out);

/*
** Sparsity and recall of the library's own selection with one threshold per query head
** (`thresholds`, a->heads_q host floats in (0, 1]). per_head: heads_q entries (may be NULL);
** overall (may be NULL): pair-weighted sparsity and row-weighted recall over all heads.
** Waits for the GPU.
*/
vecattn_status va_recall_measure(va_recall *r, const float *thresholds, va_recall_stats *per_head,
                                 va_recall_stats *overall);

/*
** The same for a caller's key sets (bring your own indices, as vecattn_sparse_attention):
** `forced_ranges` (device, may be NULL for the spec's rule) and `sel` (device CSR lists).
** The sparsity needs the attended pairs, which only the caller knows (its lists may reach
** past a row's causal limit): `attended_pairs` holds a->heads_q host numbers, summed over
** the batch; NULL gives NaN sparsities.
*/
vecattn_status va_recall_measure_selection(va_recall *r, const int32_t *forced_ranges,
                                           const vecattn_selection *sel, const double *attended_pairs,
                                           va_recall_stats *per_head, va_recall_stats *overall);

/* Valid query-key pairs of one (batch, head) of the problem (causal: keys up to the row). */
double va_recall_valid_pairs(const vecattn_prefill_args *a);

/* The last failure's message (the context's vecattn_errmsg, or the handle's own). */
const char *va_recall_errmsg(const va_recall *r);

void va_recall_close(va_recall *r);

#ifdef __cplusplus
}
#endif
#endif /* VECATTN_RECALL_H */
