/*
** test_gpu_recall.c -- sparsity and attention-mass recall measured on the GPU (autotune/recall.h)
** against the float64 reference.
**
** Per case and per threshold p (the case's, 0.99, and 1e-6 which keeps almost everything):
**   - recall per head from the GPU's two log-sum-exps must match exp(lse_kept - lse_all)
**     of va_ref_attention on the reference's own selection within 2e-3 (the lse are fp32
**     of bf16/fp16 inputs, good to ~1e-5; the bound leaves room for the few keys within the
**     fp32 rounding margin of the rule, which the two selections may decide differently);
**   - the overall sparsity must match va_ref_sparsity within 1e-3 (same reason);
**   - p 0.99 is at least as sparse and recalls at most as much as the case's p, and p 1e-6
**     recalls >= 0.999;
**   - bring-your-own lists: the GPU's own selection fed back through
**     va_recall_measure_selection gives the same recall (1e-6) and sparsity.
** Exits 77 (SKIP) without a GPU.
*/
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "autotune/recall.h"
#include "gpu_util.h"
#include "ref/vecattn_ref.h"
#include "test_util.h"

static const test_case cases[] = {
    {"bf16_d128_causal", 1, 2, 2, 2048, 2048, 128, VECATTN_BF16, 1, 64, 16, 16, 0.9f, TC_VERTICAL},
    {"fp16_d64_noncausal_sq1000_sk1500", 1, 2, 2, 1000, 1500, 64, VECATTN_FP16, 0, 64, 16, 16, 0.5f,
     TC_VERTICAL},
    {"bf16_d64_causal_gqa_b2_bshd", 2, 4, 1, 777, 777, 64, VECATTN_BF16, 1, 64, 16, 8, 0.9f,
     TC_VERTICAL | TC_BSHD},
};

#define RECALL_TOL 2e-3
#define SPARSITY_TOL 1e-3

static double *xcalloc(size_t n) {
    double *p = calloc(n ? n : 1, sizeof *p);
    if (!p) abort();
    return p;
}

/* Reference recall per head: mean over rows of exp(lse_kept - lse_all). */
static void ref_recall(const vecattn_prefill_args *h, const double *lse_all, const double *lse_kept,
                       double *recall) {
    for (int head = 0; head < h->heads_q; ++head) {
        double sum = 0.0;
        for (int b = 0; b < h->batch; ++b)
            for (int t = 0; t < h->seq_q; ++t) {
                size_t r = ((size_t)b * h->heads_q + head) * h->seq_q + t;
                sum += isinf(lse_all[r]) ? 1.0 : (isinf(lse_kept[r]) ? 0.0 : fmin(1.0, exp(lse_kept[r] - lse_all[r])));
            }
        recall[head] = sum / ((double)h->batch * h->seq_q);
    }
}

/* Attended pairs per head of the selection `g` plus the spec's forced keys. */
static void attended_pairs(const test_problem *p, const gpu_selection *g, double *pairs) {
    const vecattn_prefill_args *a = &p->host;
    for (int h = 0; h < a->heads_q; ++h) {
        pairs[h] = 0.0;
        for (int b = 0; b < a->batch; ++b)
            for (int i = 0; i < p->nq; ++i) {
                int32_t fr[4];
                va_ref_forced_ranges(a, i, fr);
                double rows = va_ref_block_rows(a, i);
                double forced = a->causal ? (double)(fr[1] - fr[0]) * rows + rows * (rows + 1.0) / 2.0 : 0.0;
                pairs[h] += forced + rows * g->counts[((size_t)b * a->heads_q + h) * p->nq + i];
            }
    }
}

typedef struct measured {
    double sparsity, recall_min, recall_mean;
} measured;

/* One threshold: GPU against the reference; returns the overall figures for the order checks. */
static int check_threshold(gpu_env *env, test_problem *p, va_recall *r, const double *lse_all, float th,
                           measured *m) {
    vecattn_prefill_args h = p->host;
    int heads = h.heads_q;
    float *ths = malloc(sizeof(float) * heads);
    for (int k = 0; k < heads; ++k) ths[k] = th;
    va_recall_stats *per_head = malloc(sizeof *per_head * heads), overall;
    vecattn_status st = va_recall_measure(r, ths, per_head, &overall);
    int ok = st == VECATTN_OK;
    CHECK(ok, "%s p %g: va_recall_measure: %s", p->c.name, th, va_recall_errmsg(r));

    h.threshold = th, h.thresholds = NULL;
    int32_t *counts = malloc(sizeof(int32_t) * p->rows);
    int64_t *offsets = malloc(sizeof(int64_t) * (p->rows + 1));
    int32_t *indices = NULL;
    size_t n_lse = (size_t)h.batch * heads * h.seq_q;
    double *o = xcalloc((size_t)p->q_elems), *lse_kept = xcalloc(n_lse), *recall = xcalloc(heads);
    ok = ok && va_ref_select(&h, counts, offsets, &indices) >= 0 &&
         va_ref_attention(&h, NULL, counts, offsets, indices, o, lse_kept) == 0;
    if (ok) {
        ref_recall(&h, lse_all, lse_kept, recall);
        double want_sparsity = va_ref_sparsity(&h, counts);
        CHECK(fabs(overall.sparsity - want_sparsity) <= SPARSITY_TOL, "%s p %g: sparsity %.5f, reference %.5f",
              p->c.name, th, overall.sparsity, want_sparsity);
        ok = ok && fabs(overall.sparsity - want_sparsity) <= SPARSITY_TOL;
        m->recall_min = 1.0, m->recall_mean = overall.recall, m->sparsity = overall.sparsity;
        for (int k = 0; k < heads; ++k) {
            double diff = fabs(per_head[k].recall - recall[k]);
            CHECK(diff <= RECALL_TOL, "%s p %g head %d: recall %.5f, reference %.5f", p->c.name, th, k,
                  per_head[k].recall, recall[k]);
            ok = ok && diff <= RECALL_TOL;
            m->recall_min = fmin(m->recall_min, per_head[k].recall);
        }
        printf("  %-34s p %-8g sparsity %.4f (ref %.4f)  recall %.5f (head 0 ref %.5f)\n", p->c.name, th,
               overall.sparsity, want_sparsity, overall.recall, recall[0]);
    }
    free(ths), free(per_head), free(counts), free(offsets), free(indices), free(o), free(lse_kept), free(recall);
    (void)env;
    return ok;
}

/* The GPU's own lists through the bring-your-own path must give the same figures. */
static int check_byo(gpu_env *env, test_problem *p, va_recall *r) {
    int heads = p->host.heads_q;
    float *ths = malloc(sizeof(float) * heads);
    for (int k = 0; k < heads; ++k) ths[k] = p->c.threshold;
    va_recall_stats *own = malloc(sizeof *own * heads), *byo = malloc(sizeof *byo * heads), o1, o2;
    gpu_selection g;
    int consistent;
    p->dev.threshold = p->c.threshold;
    int ok = va_recall_measure(r, ths, own, &o1) == VECATTN_OK &&
             gpu_select(env, p, &g, &consistent) == VECATTN_OK;
    CHECK(ok, "%s: measure or select failed: %s", p->c.name, va_recall_errmsg(r));
    if (ok) {
        double *pairs = xcalloc(heads);
        attended_pairs(p, &g, pairs);
        ok = va_recall_measure_selection(r, NULL, &g.dev, pairs, byo, &o2) == VECATTN_OK;
        CHECK(ok, "%s: va_recall_measure_selection: %s", p->c.name, va_recall_errmsg(r));
        for (int k = 0; ok && k < heads; ++k) {
            int same = fabs(own[k].recall - byo[k].recall) <= 1e-6 && fabs(own[k].sparsity - byo[k].sparsity) <= 1e-9;
            CHECK(same, "%s head %d: own selection %.6f/%.6f, same lists brought in %.6f/%.6f", p->c.name, k,
                  own[k].recall, own[k].sparsity, byo[k].recall, byo[k].sparsity);
            ok = ok && same;
        }
        free(pairs);
        gpu_selection_free(&g);
    }
    free(ths), free(own), free(byo);
    return ok;
}

static void run_case(gpu_env *env, const test_case *c) {
    test_problem p;
    problem_create(&p, c);
    va_recall *r = NULL;
    vecattn_status st = va_recall_open(env->ctx, &p.dev, env->stream, &r);
    CHECK(st == VECATTN_OK, "%s: va_recall_open: %s", c->name, va_recall_errmsg(r));
    if (st == VECATTN_OK) {
        vecattn_prefill_args dense = p.host;
        dense.dense = 1;
        size_t n_lse = (size_t)dense.batch * dense.heads_q * dense.seq_q;
        double *o = xcalloc(p.q_elems), *lse_all = xcalloc(n_lse);
        if (va_ref_attention(&dense, NULL, NULL, NULL, NULL, o, lse_all) == 0) {
            measured own, sparse, loose;
            int ok = check_threshold(env, &p, r, lse_all, c->threshold, &own) &&
                     check_threshold(env, &p, r, lse_all, 0.99f, &sparse) &&
                     check_threshold(env, &p, r, lse_all, 1e-6f, &loose);
            if (ok) {
                CHECK(sparse.sparsity >= own.sparsity && sparse.recall_mean <= own.recall_mean + 1e-9,
                      "%s: p 0.99 (%.4f, %.5f) against p %g (%.4f, %.5f): not sparser with less recall", c->name,
                      sparse.sparsity, sparse.recall_mean, c->threshold, own.sparsity, own.recall_mean);
                CHECK(loose.recall_min >= 0.999, "%s: p 1e-6 recalls only %.5f", c->name, loose.recall_min);
            }
            check_byo(env, &p, r);
        }
        free(o), free(lse_all);
    }
    va_recall_close(r);
    problem_destroy(&p);
}

int main(void) {
    gpu_env env;
    int rc = gpu_env_open(&env);
    if (rc != 0) return rc;
    for (size_t n = 0; n < sizeof cases / sizeof cases[0]; n++) run_case(&env, &cases[n]);
    gpu_env_close(&env);
    return test_exit_code("test_gpu_recall");
}
