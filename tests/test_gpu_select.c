/*
** test_gpu_select.c -- vecattn_select against the CPU reference, key by key.
**
** For every case: fresh inputs, the documented two-call protocol (sizes, then indices),
** and for every row (b, h, query block) the reference's flags (tests/ref/vecattn_ref.h):
**   - every GPU index is a key the reference flags SELECTED or AMBIGUOUS;
**   - every SELECTED key is in the GPU's list;
**   - lists strictly ascending, counts and offsets consistent, total = offsets[rows];
**   - AMBIGUOUS keys (within the fp32 error bound of their decision) are counted and must
**     stay under 0.1% of the candidates.
** Then: a second full run must be bitwise identical (determinism), and an index buffer one
** element too small must give VECATTN_E_CAPACITY with the needed size.
** Exits 77 (SKIP) without a GPU.
*/
#include <stdlib.h>
#include <string.h>

#include "gpu_util.h"
#include "ref/vecattn_ref.h"
#include "test_util.h"

/* Sq, Sk not multiples of any tile; Sq < Sk; Sq < Pq; GQA; BSHD; per-head thresholds; B 2;
** Pq 16..128, Bk 8..128, Gk 1, 16, 8192; p 1, 0.9, 0.5, 0.001. */
static const test_case cases[] = {
    {"bf16_d128_causal_default", 1, 4, 4, 4096, 4096, 128, VECATTN_BF16, 1, 64, 16, 16, 0.9f,
     TC_VERTICAL},
    {"fp16_d64_noncausal_dit", 1, 2, 2, 3000, 3000, 64, VECATTN_FP16, 0, 64, 16, 8192, 0.001f, 0},
    {"bf16_d64_causal_sq300_sk1000", 1, 2, 2, 300, 1000, 64, VECATTN_BF16, 1, 32, 8, 1, 0.5f,
     TC_VERTICAL},
    {"fp16_d128_causal_sq20", 1, 2, 2, 20, 777, 128, VECATTN_FP16, 1, 64, 64, 16, 0.9f,
     TC_VERTICAL},
    {"bf16_d64_gqa_b2_bshd_perhead", 2, 8, 2, 1000, 1000, 64, VECATTN_BF16, 1, 128, 128, 1, 0.9f,
     TC_BSHD | TC_PER_HEAD | TC_VERTICAL},
    {"fp16_d128_noncausal_pq16_bk8", 1, 2, 2, 777, 777, 128, VECATTN_FP16, 0, 16, 8, 16, 0.9f,
     TC_VERTICAL},
    {"bf16_d128_noncausal_sq300_bk128", 1, 2, 2, 300, 1000, 128, VECATTN_BF16, 0, 32, 128, 1, 0.5f,
     TC_VERTICAL},
    {"fp16_d64_causal_pq128_bk32_gk8192", 1, 2, 2, 1500, 1500, 64, VECATTN_FP16, 1, 128, 32, 8192,
     0.9f, TC_VERTICAL},
    {"bf16_d128_causal_gqa2_pq16_bk8", 1, 2, 1, 1000, 1000, 128, VECATTN_BF16, 1, 16, 8, 16, 0.9f,
     TC_VERTICAL},
    {"fp16_d64_noncausal_p1_random", 1, 2, 2, 777, 777, 64, VECATTN_FP16, 0, 64, 32, 16, 1.0f, 0},
    {"bf16_d128_noncausal_p09_random", 1, 2, 2, 1000, 1000, 128, VECATTN_BF16, 0, 64, 16, 16, 0.9f,
     0},
};

/* Mismatches printed per case before going quiet. */
#define MAX_REPORTS 10

typedef struct select_stats {
    long candidates, ambiguous, errors;
} select_stats;

static void report(select_stats *st, const char *fmt, int r, int j)
{
    if (st->errors++ < MAX_REPORTS) {
        fprintf(stderr, "    row %d: ", r);
        fprintf(stderr, fmt, j);
        fputc('\n', stderr);
    }
}

/* Counts, offsets and total agree with each other. */
static void check_csr_shape(const gpu_selection *g, select_stats *st)
{
    if (g->offsets[0] != 0)
        report(st, "offsets[0] = %d", 0, (int)g->offsets[0]);
    for (int64_t r = 0; r < g->rows; r++)
        if (g->counts[r] < 0 || g->offsets[r + 1] - g->offsets[r] != g->counts[r])
            report(st, "count %d does not match the offsets", (int)r, g->counts[r]);
    if (g->offsets[g->rows] != g->total)
        report(st, "offsets[rows] differs from the total (%d)", (int)g->rows, (int)g->total);
}

/* One row of the GPU's selection against the reference flags. */
static void check_row(const test_problem *p, const gpu_selection *g, int b, int h, int i,
                      signed char *flags, select_stats *st)
{
    int r = (b * p->c.heads_q + h) * p->nq + i;
    int64_t lo, hi;
    va_ref_candidates(&p->host, i, &lo, &hi);
    st->candidates += hi > lo ? (long)(hi - lo) : 0;
    va_ref_select_row(&p->host, b, h, i, flags);
    for (int j = 0; j < p->c.seq_k; j++)
        st->ambiguous += flags[j] == VA_REF_AMBIGUOUS;
    if (g->counts[r] < 0 || g->offsets[r] < 0 || g->offsets[r] + g->counts[r] > g->total)
        return; /* already reported by check_csr_shape */

    const int32_t *list = g->indices + g->offsets[r];
    int n = g->counts[r], x = 0;
    for (int k = 0; k < n; k++) {
        int j = list[k];
        if (k > 0 && list[k - 1] >= j)
            report(st, "list not strictly ascending at key %d", r, j);
        if (j < 0 || j >= p->c.seq_k)
            report(st, "index %d out of range", r, j);
        else if (flags[j] == VA_REF_NOT_SELECTED)
            report(st, "key %d kept, but the reference rejects it", r, j);
    }
    /* every SELECTED key must appear: walk the (ascending) list alongside */
    for (int j = 0; j < p->c.seq_k; j++) {
        while (x < n && list[x] < j)
            x++;
        if (flags[j] == VA_REF_SELECTED && !(x < n && list[x] == j))
            report(st, "key %d missing: the reference keeps it", r, j);
    }
}

static void compare_with_reference(const test_problem *p, const gpu_selection *g,
                                   select_stats *st)
{
    signed char *flags = malloc((size_t)p->c.seq_k);
    if (!flags)
        abort();
    check_csr_shape(g, st);
    for (int b = 0; b < p->c.batch; b++)
        for (int h = 0; h < p->c.heads_q; h++)
            for (int i = 0; i < p->nq; i++)
                check_row(p, g, b, h, i, flags, st);
    free(flags);
}

/* An index buffer one element short: VECATTN_E_CAPACITY, and *total_out says what is needed. */
static int capacity_is_reported(gpu_env *env, const test_problem *p, const gpu_selection *g)
{
    if (g->total < 1)
        return 1;
    vecattn_selection small = g->dev;
    small.indices_capacity = g->total - 1;
    int64_t needed = -1;
    vecattn_status st = vecattn_select(env->ctx, &p->dev, &small, &needed, env->stream);
    va_cuCtxSynchronize();
    return st == VECATTN_E_CAPACITY && needed == g->total;
}

/* Returns 1 when the case passed. */
static int run_case(gpu_env *env, const test_case *c)
{
    test_problem p;
    problem_create(&p, c);
    gpu_selection g1, g2;
    int same_total = 1, same_total2 = 1;
    vecattn_status st = gpu_select(env, &p, &g1, &same_total);
    if (st != VECATTN_OK) {
        printf("%-36s FAIL: vecattn_select: %s: %s\n", c->name, vecattn_status_string(st),
               vecattn_errmsg(env->ctx));
        problem_destroy(&p);
        return 0;
    }
    select_stats stats = {0, 0, 0};
    compare_with_reference(&p, &g1, &stats);
    CHECK(same_total, "%s: the two calls disagree on the total", c->name);
    CHECK(stats.errors == 0, "%s: %ld mismatches with the reference", c->name, stats.errors);
    CHECK(stats.ambiguous * 1000 < stats.candidates || stats.ambiguous == 0,
          "%s: %ld ambiguous keys of %ld candidates (>= 0.1%%)", c->name, stats.ambiguous,
          stats.candidates);

    st = gpu_select(env, &p, &g2, &same_total2);
    int deterministic = st == VECATTN_OK && gpu_selection_equal(&g1, &g2);
    CHECK(deterministic, "%s: a second run differs (status %d)", c->name, (int)st);
    int capacity_ok = capacity_is_reported(env, &p, &g1);
    CHECK(capacity_ok, "%s: a short index buffer is not reported as VECATTN_E_CAPACITY", c->name);

    int pass = same_total && stats.errors == 0 && deterministic && capacity_ok &&
               (stats.ambiguous * 1000 < stats.candidates || stats.ambiguous == 0);
    printf("%-36s sparsity %.4f  kept %9lld  ambiguous %ld/%ld  %s\n", c->name,
           va_ref_sparsity(&p.host, g1.counts), (long long)g1.total, stats.ambiguous,
           stats.candidates, pass ? "PASS" : "FAIL");
    gpu_selection_free(&g1);
    if (st == VECATTN_OK)
        gpu_selection_free(&g2);
    problem_destroy(&p);
    return pass;
}

int main(void)
{
    gpu_env env;
    int rc = gpu_env_open(&env);
    if (rc != 0)
        return rc;
    for (size_t n = 0; n < sizeof cases / sizeof cases[0]; n++)
        run_case(&env, &cases[n]);
    gpu_env_close(&env);
    return test_exit_code("test_gpu_select");
}
