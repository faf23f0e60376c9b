/*
** test_gpu_attention.c -- vecattn_prefill, dense mode and vecattn_sparse_attention against
** the float64 reference.
**
** Per case, on fresh inputs and poisoned outputs:
**   (a) prefill (sparse) with sparsity_out; the GPU's own selection (vecattn_select on the
**       same arguments, deterministic by test_gpu_select) fixes the key sets, and the
**       reference attends over exactly those: relative L2 error of O, LSE, and sparsity_out
**       against va_ref_sparsity of the GPU's counts;
**   (b) dense mode against dense reference attention;
**   (c) vecattn_sparse_attention on caller-made forced ranges and random index lists
**       (including keys past the causal limit, and empty key sets when non-causal);
**   (d) chunk_size = pq gives bitwise the same O and LSE as chunk_size = 0 in (a);
**   (e) a caller's workspace of exactly vecattn_prefill_workspace_size() poisoned bytes gives
**       bitwise (a)'s output; one 256-byte step less is VECATTN_E_CAPACITY and O stays as it was.
** Exits 77 (SKIP) without a GPU.
*/
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "gpu_util.h"
#include "ref/vecattn_ref.h"
#include "test_util.h"

/*
** Sq, Sk not multiples of any tile; Sq < Sk; Sq < Pq; GQA 4:1; BSHD; per-head thresholds;
** B 2; Pq 16..128; Bk 8..128; Gk 1, 16, 8192; p 0.9, 0.5, 0.001. The dense reference costs
** about B*Hq*Sq*Sk*D multiply-adds per case (under 3e8 each).
*/
static const test_case cases[] = {
    {"bf16_d128_causal_default", 1, 2, 2, 1000, 1000, 128, VECATTN_BF16, 1, 64, 16, 16, 0.9f,
     TC_VERTICAL | TC_LSE},
    {"fp16_d64_noncausal_dit", 1, 2, 2, 777, 777, 64, VECATTN_FP16, 0, 64, 16, 8192, 0.001f,
     TC_LSE},
    {"bf16_d64_causal_sq300_sk1000", 1, 2, 2, 300, 1000, 64, VECATTN_BF16, 1, 32, 8, 1, 0.5f,
     TC_VERTICAL},
    {"fp16_d128_causal_sq20", 1, 2, 2, 20, 777, 128, VECATTN_FP16, 1, 64, 64, 16, 0.9f,
     TC_VERTICAL | TC_LSE},
    {"bf16_d64_gqa4_b2_bshd_perhead", 2, 8, 2, 513, 513, 64, VECATTN_BF16, 1, 128, 128, 1, 0.9f,
     TC_BSHD | TC_PER_HEAD | TC_VERTICAL | TC_LSE},
    {"fp16_d128_noncausal_pq16_bshd", 1, 2, 2, 600, 600, 128, VECATTN_FP16, 0, 16, 8, 16, 0.9f,
     TC_BSHD | TC_VERTICAL},
    {"bf16_d128_noncausal_sq300_bk128", 1, 2, 2, 300, 1000, 128, VECATTN_BF16, 0, 32, 128, 1,
     0.5f, TC_VERTICAL | TC_LSE},
    {"fp16_d64_causal_pq16_gk8192", 1, 2, 2, 1000, 1000, 64, VECATTN_FP16, 1, 16, 16, 8192, 0.5f,
     TC_VERTICAL | TC_LSE},
    /* sm_90a: two warpgroups per K/V tile; the last block's 60 rows leave the second idle */
    {"bf16_d128_causal_pq128_sq700", 1, 2, 2, 700, 700, 128, VECATTN_BF16, 1, 128, 32, 4, 0.9f,
     TC_VERTICAL | TC_LSE},
};

/*
** Bounds on ||O_gpu - O_ref|| / ||O_ref||. O is stored in the input dtype (relative rounding
** 2^-9 for bf16, 2^-12 for fp16, about half that in RMS), and flash-style kernels round the
** softmax weights P to the same dtype before P.V, which adds about as much again. bf16:
** ~2e-3 expected, bound 1e-2; fp16: ~3e-4 expected, bound 2e-3. Scores and the softmax
** are fp32, so LSE is good to ~1e-5; the bound is 1e-3 absolute.
*/
static double out_tolerance(vecattn_dtype dt)
{
    return dt == VECATTN_BF16 ? 1e-2 : 2e-3;
}
#define LSE_TOLERANCE 1e-3
#define SPARSITY_TOLERANCE 1e-6

/* Reference and download buffers of one problem. */
typedef struct buffers {
    double *ref_o, *ref_lse;   /* [B, Hq, Sq, D], [B, Hq, Sq] */
    uint16_t *o;               /* the GPU's O, in the device layout */
    float *lse;                /* the GPU's LSE */
    uint16_t *o_unchunked;     /* part (a)'s O and LSE, for part (d) */
    float *lse_unchunked;
} buffers;

static void *xmalloc(size_t bytes)
{
    void *p = malloc(bytes ? bytes : 1);
    if (!p)
        abort();
    return p;
}

static size_t lse_count(const test_problem *p)
{
    return (size_t)p->c.batch * p->c.heads_q * p->c.seq_q;
}

static void buffers_alloc(buffers *bf, const test_problem *p)
{
    bf->ref_o = xmalloc(sizeof(double) * p->q_elems);
    bf->ref_lse = xmalloc(sizeof(double) * lse_count(p));
    bf->o = xmalloc(sizeof(uint16_t) * p->q_elems);
    bf->lse = xmalloc(sizeof(float) * lse_count(p));
    bf->o_unchunked = xmalloc(sizeof(uint16_t) * p->q_elems);
    bf->lse_unchunked = xmalloc(sizeof(float) * lse_count(p));
}

static void buffers_free(buffers *bf)
{
    free(bf->ref_o), free(bf->ref_lse), free(bf->o), free(bf->lse);
    free(bf->o_unchunked), free(bf->lse_unchunked);
}

/* Largest |lse_gpu - lse_ref|; an empty key set must give -inf on both sides; NaN: inf. */
static double lse_error(const test_problem *p, const buffers *bf)
{
    double worst = 0.0;
    for (size_t r = 0; r < lse_count(p); r++) {
        double g = bf->lse[r], want = bf->ref_lse[r];
        if (isinf(want) && g == want)
            continue;
        if (isnan(g) || isinf(g) || isinf(want))
            return INFINITY;
        worst = fmax(worst, fabs(g - want));
    }
    return worst;
}

/* Download O (and LSE) and compare with the reference in bf; returns 1 on pass. */
static int compare_outputs(const test_problem *p, buffers *bf, const char *part, double *err)
{
    problem_download_outputs(p, bf->o, bf->lse);
    *err = va_ref_rel_l2(bf->o, p->c.dtype, p->dev.o_stride, bf->ref_o, p->c.batch,
                         p->c.heads_q, p->c.seq_q, p->c.head_dim);
    int ok = *err <= out_tolerance(p->c.dtype);
    CHECK(ok, "%s %s: relative L2 error %.3e > %.1e", p->c.name, part, *err,
          out_tolerance(p->c.dtype));
    if (p->dlse) {
        double le = lse_error(p, bf);
        CHECK(le <= LSE_TOLERANCE, "%s %s: LSE off by %.3e", p->c.name, part, le);
        ok = ok && le <= LSE_TOLERANCE;
    }
    return ok;
}

static int api_ok(gpu_env *env, vecattn_status st, const test_problem *p, const char *call)
{
    CHECK(st == VECATTN_OK, "%s: %s: %s: %s", p->c.name, call, vecattn_status_string(st),
          vecattn_errmsg(env->ctx));
    return st == VECATTN_OK;
}

/* ---- (a) prefill with the library's selection ------------------------------------------ */

static int part_prefill(gpu_env *env, const test_problem *p, buffers *bf, double *err,
                        float *sparsity)
{
    vecattn_prefill_args a = p->dev;
    a.sparsity_out = sparsity;
    *sparsity = NAN;
    problem_poison_outputs(p);
    if (!api_ok(env, vecattn_prefill(env->ctx, &a, env->stream), p, "vecattn_prefill"))
        return 0;
    problem_download_outputs(p, bf->o_unchunked, bf->lse_unchunked);

    gpu_selection g;
    int consistent;
    if (!api_ok(env, gpu_select(env, p, &g, &consistent), p, "vecattn_select"))
        return 0;
    int ok = va_ref_attention(&p->host, NULL, g.counts, g.offsets, g.indices, bf->ref_o,
                              bf->ref_lse) == 0;
    ok = ok && compare_outputs(p, bf, "prefill", err);
    double want = va_ref_sparsity(&p->host, g.counts);
    int sp_ok = fabs((double)*sparsity - want) <= SPARSITY_TOLERANCE;
    CHECK(sp_ok, "%s: sparsity_out %.7f, reference %.7f", p->c.name, *sparsity, want);
    gpu_selection_free(&g);
    return ok && sp_ok;
}

/* ---- (b) dense mode ------------------------------------------------------------------------ */

static int part_dense(gpu_env *env, const test_problem *p, buffers *bf, double *err)
{
    vecattn_prefill_args a = p->dev, h = p->host;
    float sparsity = NAN;
    a.dense = h.dense = 1;
    a.sparsity_out = &sparsity;
    problem_poison_outputs(p);
    if (!api_ok(env, vecattn_prefill(env->ctx, &a, env->stream), p, "vecattn_prefill (dense)"))
        return 0;
    CHECK(sparsity == 0.0f, "%s: dense sparsity_out %g", p->c.name, sparsity);
    if (va_ref_attention(&h, NULL, NULL, NULL, NULL, bf->ref_o, bf->ref_lse) != 0)
        return 0;
    return compare_outputs(p, bf, "dense", err) && sparsity == 0.0f;
}

/* ---- (c) caller-provided key sets -------------------------------------------------------- */

/*
** Forced ranges per row: [0, a) with a >= 1 (every query then sees key 0, so no causal row
** is empty) and a second range of up to 2*pq keys after it, possibly empty. One non-causal
** row in 7 gets no forced key and an empty list instead: the empty key set (O = 0,
** LSE = -inf). Index lists: each other key with probability 1/8, ascending, so they never
** repeat a key nor overlap the ranges; they may lie past the causal limit (masked per row).
*/
static uint32_t draw(uint64_t *rng, uint32_t n)
{
    return n ? (uint32_t)(va_ref_rng_next(rng) % n) : 0;
}

static void make_ranges(const test_problem *p, int64_t r, uint64_t *rng, int32_t fr[4])
{
    int sk = p->c.seq_k, span = 2 * p->c.pq;
    if (!p->c.causal && r % 7 == 3) {
        fr[0] = fr[1] = fr[2] = fr[3] = 0;
        return;
    }
    fr[0] = 0;
    fr[1] = 1 + (int32_t)draw(rng, (uint32_t)(span < sk ? span : sk));
    fr[2] = fr[1] + (int32_t)draw(rng, (uint32_t)(sk - fr[1] + 1));
    fr[3] = fr[2] + (int32_t)draw(rng, (uint32_t)span + 1);
    if (fr[3] > sk)
        fr[3] = sk;
}

static int in_ranges(const int32_t fr[4], int j)
{
    return (j >= fr[0] && j < fr[1]) || (j >= fr[2] && j < fr[3]);
}

static void make_byo(const test_problem *p, int32_t *forced, gpu_selection *s)
{
    uint64_t rng = problem_seed(p, 3);
    int sk = p->c.seq_k;
    /* worst case: every key of every row listed */
    gpu_selection_alloc_host(s, p->rows, p->rows * sk);
    s->offsets[0] = 0;
    int64_t total = 0;
    for (int64_t r = 0; r < p->rows; r++) {
        int32_t *fr = forced + r * 4;
        make_ranges(p, r, &rng, fr);
        int empty_row = !p->c.causal && fr[1] == 0 && fr[3] == 0;
        for (int j = 0; j < sk && !empty_row; j++)
            if (!in_ranges(fr, j) && draw(&rng, 8) == 0)
                s->indices[total++] = j;
        s->counts[r] = (int32_t)(total - s->offsets[r]);
        s->offsets[r + 1] = total;
    }
    s->total = total;
}

static int part_byo(gpu_env *env, const test_problem *p, buffers *bf, double *err)
{
    int32_t *forced = xmalloc(sizeof(int32_t) * 4 * (size_t)p->rows);
    gpu_selection s;
    make_byo(p, forced, &s);
    gpu_selection_upload(&s);
    CUdeviceptr dforced = gpu_alloc(sizeof(int32_t) * 4 * (size_t)p->rows);
    gpu_upload(dforced, forced, sizeof(int32_t) * 4 * (size_t)p->rows);
    problem_poison_outputs(p);
    vecattn_status st = vecattn_sparse_attention(env->ctx, &p->dev, (const int32_t *)dforced,
                                                 &s.dev, env->stream);
    int ok = api_ok(env, st, p, "vecattn_sparse_attention");
    if (ok)
        ok = va_ref_attention(&p->host, forced, s.counts, s.offsets, s.indices, bf->ref_o,
                              bf->ref_lse) == 0 &&
             compare_outputs(p, bf, "caller's indices", err);
    gpu_free(dforced);
    gpu_selection_free(&s);
    free(forced);
    return ok;
}

static int same_as_unchunked(const test_problem *p, buffers *bf)
{
    problem_download_outputs(p, bf->o, bf->lse);
    int same = !memcmp(bf->o, bf->o_unchunked, sizeof(uint16_t) * p->q_elems);
    if (p->dlse)
        same = same && !memcmp(bf->lse, bf->lse_unchunked, sizeof(float) * lse_count(p));
    return same;
}

/* ---- (d) chunking changes nothing ---------------------------------------------------------- */

static int part_chunk(gpu_env *env, const test_problem *p, buffers *bf)
{
    vecattn_prefill_args a = p->dev;
    a.chunk_size = p->c.pq;
    problem_poison_outputs(p);
    if (!api_ok(env, vecattn_prefill(env->ctx, &a, env->stream), p, "vecattn_prefill (chunked)"))
        return 0;
    int same = same_as_unchunked(p, bf);
    CHECK(same, "%s: chunk_size = pq changes the output", p->c.name);
    return same;
}

/* ---- (e) the caller's workspace ------------------------------------------------------------ */

static int part_workspace(gpu_env *env, const test_problem *p, buffers *bf)
{
    vecattn_prefill_args a = p->dev;
    size_t need = 0;
    if (!api_ok(env, vecattn_prefill_workspace_size(&a, &need), p, "vecattn_prefill_workspace_size"))
        return 0;
    CUdeviceptr ws = gpu_alloc(need);
    gpu_poison(ws, need);
    a.workspace = (void *)ws, a.workspace_size = need;
    problem_poison_outputs(p);
    int ok = api_ok(env, vecattn_prefill(env->ctx, &a, env->stream), p, "vecattn_prefill (workspace)");
    ok = ok && same_as_unchunked(p, bf);
    CHECK(ok, "%s: the caller's workspace changes the output", p->c.name);

    /* too small: refused before anything is queued, O keeps its poison */
    problem_poison_outputs(p);
    uint16_t *poisoned = malloc(sizeof(uint16_t) * p->q_elems);
    float *lse_unused = malloc(sizeof(float) * lse_count(p));
    problem_download_outputs(p, poisoned, lse_unused);
    a.workspace_size = need - 256;
    vecattn_status st = vecattn_prefill(env->ctx, &a, env->stream);
    problem_download_outputs(p, bf->o, bf->lse);
    int refused = st == VECATTN_E_CAPACITY && !memcmp(poisoned, bf->o, sizeof(uint16_t) * p->q_elems);
    CHECK(refused, "%s: a short workspace gave status %d (%s), O %s", p->c.name, (int)st,
          vecattn_errmsg(env->ctx), refused ? "kept" : "written or wrong status");
    free(poisoned), free(lse_unused);
    gpu_free(ws);
    return ok && refused;
}

/* Returns 1 when every part of the case passed. */
static int run_case(gpu_env *env, const test_case *c)
{
    test_problem p;
    buffers bf;
    problem_create(&p, c);
    buffers_alloc(&bf, &p);
    double e_pre = NAN, e_dense = NAN, e_byo = NAN;
    float sparsity = NAN;
    int ok_pre = part_prefill(env, &p, &bf, &e_pre, &sparsity);
    int ok_chunk = ok_pre && part_chunk(env, &p, &bf) && part_workspace(env, &p, &bf);
    int ok_dense = part_dense(env, &p, &bf, &e_dense);
    int ok_byo = part_byo(env, &p, &bf, &e_byo);
    int pass = ok_pre && ok_chunk && ok_dense && ok_byo;
    printf("%-34s sparsity %.4f  err prefill %.2e dense %.2e byo %.2e  chunked+workspace %s  %s\n",
           c->name, sparsity, e_pre, e_dense, e_byo, ok_chunk ? "same" : "DIFFERS",
           pass ? "PASS" : "FAIL");
    buffers_free(&bf);
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
    return test_exit_code("test_gpu_attention");
}
