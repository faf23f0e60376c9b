/*
** tuner.c -- the plan of `vecattn-autotune tune`: inputs, thresholds per sparsity bucket,
** one va_autotune() request per (stage, bucket), progress with an ETA. See tuner.h.
** Sections: options, the problem on the device, thresholds, progress, the run.
*/
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "autotune/tuner.h"

/* ---- options ------------------------------------------------------------------------------ */

void va_tuner_defaults(va_tuner_options *o, va_tuner_mode mode) {
    vecattn_prefill_args d;
    vecattn_prefill_args_init(&d);
    memset(o, 0, sizeof *o);
    o->head_dim = d.head_dim, o->pq = d.pq, o->bk = d.bk, o->gk = d.gk, o->causal = d.causal;
    o->dtype = d.dtype;
    o->selection = o->attention = 1;
    o->store = o->progress = 1;
    va_video_defaults(&o->video);
    if (mode == VA_TUNER_QUICK) {
        o->seqs[0] = 8192, o->seqs[1] = 32768, o->n_seqs = 2;
        o->buckets[0] = 2, o->n_buckets = 1;
        o->quick = 1;
        return;
    }
    for (int b = 12; b <= 17; ++b) o->seqs[o->n_seqs++] = 1 << b;
    if (mode == VA_TUNER_FULL) {
        for (int b = 0; b < 4; ++b) o->buckets[o->n_buckets++] = b;
    } else {
        o->buckets[0] = 0, o->buckets[1] = 2, o->n_buckets = 2;
    }
}

int va_tuner_default_heads(int seq) {
    int h = seq > 0 ? (1 << 20) / seq : 32;
    return h < 8 ? 8 : h > 32 ? 32 : h;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* ---- the problem on the device ------------------------------------------------------------- */

enum { GENERATED_HEADS = 4 };

/* Upload `heads` heads of head_elems elements, head h from generated head h % gen. */
static vecattn_status upload_heads(vecattn_ctx *ctx, CUdeviceptr dst, const uint16_t *host, int gen, int heads,
                                   size_t head_elems) {
    vecattn_status st = VECATTN_OK;
    for (int h = 0; h < heads && !st; ++h)
        st = va_check_cu(ctx,
                         va_cuMemcpyHtoD(dst + (CUdeviceptr)h * head_elems * 2, host + (size_t)(h % gen) * head_elems,
                                         head_elems * 2),
                         "cuMemcpyHtoD");
    return st;
}

static vecattn_status alloc_tensor(vecattn_ctx *ctx, CUdeviceptr *p, size_t bytes) {
    CUresult r = va_cuMemAlloc(p, bytes);
    if (r != CUDA_SUCCESS)
        return va_fail(ctx, VECATTN_E_NOMEM, "cuMemAlloc (%zu bytes): %s", bytes, va_cu_error_name(r));
    return VECATTN_OK;
}

static void set_problem_args(vecattn_prefill_args *a, const va_tuner_options *o, int seq, int heads) {
    vecattn_prefill_args_init(a);
    a->head_dim = o->head_dim, a->pq = o->pq, a->bk = o->bk, a->gk = o->gk, a->causal = o->causal;
    a->dtype = o->dtype;
    a->batch = 1, a->heads_q = a->heads_kv = heads, a->seq_q = a->seq_k = seq;
    vecattn_set_contiguous_bhsd(a);
}

vecattn_status va_tuner_problem_make(vecattn_ctx *ctx, const va_tuner_options *o, int seq, int heads,
                                     va_tuner_problem *p) {
    memset(p, 0, sizeof *p);
    if (heads <= 0) heads = va_tuner_default_heads(seq);
    int gen = heads < GENERATED_HEADS ? heads : GENERATED_HEADS;
    vecattn_prefill_args g;
    set_problem_args(&p->args, o, seq, heads);
    set_problem_args(&g, o, seq, gen);
    size_t head_elems = (size_t)seq * o->head_dim, n = head_elems * (size_t)gen;
    uint16_t *q = malloc(n * 2), *k = malloc(n * 2), *v = malloc(n * 2);
    vecattn_status st = VECATTN_OK;
    if (!q || !k || !v)
        st = va_fail(ctx, VECATTN_E_NOMEM, "out of host memory for the inputs");
    else if (va_video_fill(&g, q, k, v, &o->video))
        st = va_fail(ctx, VECATTN_E_INVALID_ARG, "video data: bad parameters");
    if (!st) st = va_check_cu(ctx, va_cuCtxPushCurrent(ctx->primary), "cuCtxPushCurrent");
    if (!st) {
        size_t bytes = head_elems * (size_t)heads * 2;
        st = alloc_tensor(ctx, &p->q, bytes);
        if (!st) st = alloc_tensor(ctx, &p->k, bytes);
        if (!st) st = alloc_tensor(ctx, &p->v, bytes);
        if (!st) st = alloc_tensor(ctx, &p->o, bytes);
        if (!st) st = upload_heads(ctx, p->q, q, gen, heads, head_elems);
        if (!st) st = upload_heads(ctx, p->k, k, gen, heads, head_elems);
        if (!st) st = upload_heads(ctx, p->v, v, gen, heads, head_elems);
        CUcontext popped;
        va_cuCtxPopCurrent(&popped);
    }
    free(q), free(k), free(v);
    p->args.q = (const void *)p->q, p->args.k = (const void *)p->k;
    p->args.v = (const void *)p->v, p->args.o = (void *)p->o;
    if (st) va_tuner_problem_free(ctx, p);
    return st;
}

void va_tuner_problem_free(vecattn_ctx *ctx, va_tuner_problem *p) {
    if (va_cuCtxPushCurrent(ctx->primary) == CUDA_SUCCESS) {
        CUdeviceptr bufs[] = {p->q, p->k, p->v, p->o};
        for (int i = 0; i < 4; ++i)
            if (bufs[i]) va_cuMemFree(bufs[i]);
        CUcontext popped;
        va_cuCtxPopCurrent(&popped);
    }
    memset(p, 0, sizeof *p);
}

/* ---- thresholds ------------------------------------------------------------------------------ */

static int measure_kept(vecattn_ctx *ctx, const vecattn_prefill_args *a, double *kept) {
    float sparsity = 0.0f;
    vecattn_prefill_args m = *a;
    m.sparsity_out = &sparsity;
    if (vecattn_prefill(ctx, &m, NULL) != VECATTN_OK) return -1;
    *kept = 1.0 - (double)sparsity;
    return 0;
}

int va_tuner_find_threshold(vecattn_ctx *ctx, vecattn_prefill_args *a, int bucket, double *kept) {
    const double target = va_tune_bucket_kept(bucket);
    double lo = -20.0, hi = 0.0, best_err = INFINITY; /* x = ln p; kept falls as x grows */
    float best_p = a->threshold;
    int found = 0;
    for (int it = 0; it < 16; ++it) {
        double x = 0.5 * (lo + hi), k;
        a->threshold = (float)exp(x);
        if (measure_kept(ctx, a, &k)) return -1;
        int in = va_tune_sparsity_bucket(k) == bucket;
        double err = fabs(log(k / target)) - (in ? 100.0 : 0.0); /* in-bucket results win */
        if (err < best_err) best_err = err, best_p = a->threshold, *kept = k, found = in;
        if (in && fabs(log(k / target)) < log(1.25)) break;
        if (k > target)
            lo = x;
        else
            hi = x;
    }
    a->threshold = best_p;
    return found;
}

/* ---- progress ------------------------------------------------------------------------------- */

typedef struct run_state {
    const va_tuner_options *o;
    int entry, n_entries;
    double total_w, done_w, cur_w; /* work estimates for the ETA */
    double t0;
    char label[192];
} run_state;

static double entry_weight(int seq, int heads) {
    return 0.5 + (double)heads * seq * (double)seq / (32.0 * 16384.0 * 16384.0);
}

static void format_eta(double s, char *buf, size_t n) {
    if (!(s >= 0.0) || s > 1e6)
        snprintf(buf, n, "?");
    else if (s >= 60.0)
        snprintf(buf, n, "%dm%02ds", (int)(s / 60.0), (int)fmod(s, 60.0));
    else
        snprintf(buf, n, "%.0fs", s);
}

static void on_progress(void *user, const va_tune_progress *p) {
    run_state *rs = user;
    if (!rs->o->progress) return;
    double elapsed = now_s() - rs->t0, frac = p->total ? (double)p->done / p->total : 1.0;
    double work = rs->done_w + rs->cur_w * frac;
    char eta[32], last[320], best[200] = "none yet";
    format_eta(work > 0.0 ? elapsed / work * (rs->total_w - work) : -1.0, eta, sizeof eta);
    const va_tune_candidate *c = p->last;
    if (c->state == VA_CAND_TIMED)
        snprintf(last, sizeof last, "%s %.4f ms", c->tiles, c->timing.median_ms);
    else
        snprintf(last, sizeof last, "%s %s (%.160s)", c->tiles, va_candidate_state_name(c->state), c->why);
    if (p->best) snprintf(best, sizeof best, "%s %.4f ms", p->best->tiles, p->best->timing.median_ms);
    fprintf(stderr, "vecattn-autotune: [%d/%d] %s: %d/%d: %s | best %s | ETA %s\n", rs->entry + 1, rs->n_entries,
            rs->label, p->done, p->total, last, best, eta);
}

/* ---- the run --------------------------------------------------------------------------------- */

/* Stage and bucket of plan entry j of a sequence length (selection first). */
static void plan_entry(const va_tuner_options *o, int j, va_kernel_kind *kind, int *bucket) {
    *kind = o->selection && j == 0 ? VA_KERNEL_SELECT : VA_KERNEL_ATTENTION;
    *bucket = *kind == VA_KERNEL_SELECT ? -1 : o->buckets[j - (o->selection ? 1 : 0)];
}

static int entries_per_seq(const va_tuner_options *o) {
    return (o->selection ? 1 : 0) + (o->attention ? o->n_buckets : 0);
}

static double budget_left(const run_state *rs) {
    return rs->o->time_budget_s > 0.0 ? rs->o->time_budget_s - (now_s() - rs->t0) : INFINITY;
}

/* The threshold of an attention entry (bucket 1..3). 0 when tuning can go ahead. */
static int pick_threshold(vecattn_ctx *ctx, vecattn_prefill_args *a, int bucket, va_tuner_entry *e) {
    int found = va_tuner_find_threshold(ctx, a, bucket, &e->kept);
    e->threshold = a->threshold;
    if (found > 0) return 0;
    e->status = found < 0 ? "failed" : "unreachable";
    if (found < 0)
        snprintf(e->why, sizeof e->why, "%s", vecattn_errmsg(ctx));
    else
        snprintf(e->why, sizeof e->why, "the closest kept fraction is %.3f (p %.6g)", e->kept, e->threshold);
    return -1;
}

/* Tune one entry on problem p. VECATTN_E_LAUNCH means the device broke: stop. */
static vecattn_status tune_entry(vecattn_ctx *ctx, run_state *rs, const va_tuner_problem *p, va_kernel_kind kind,
                                 int bucket, va_tuner_entry *e) {
    const va_tuner_options *o = rs->o;
    vecattn_prefill_args a = p->args;
    e->seq = a.seq_k, e->heads = a.heads_q, e->threshold = a.threshold, e->kept = 1.0;
    e->dense = kind == VA_KERNEL_ATTENTION && bucket == 0;
    va_tune_key_init(ctx, kind, &a, bucket, &e->key);
    if (budget_left(rs) <= 1.0) {
        e->status = "over-budget";
        return VECATTN_OK;
    }
    if (e->dense)
        a.dense = 1, e->threshold = 0.0f;
    else if (kind == VA_KERNEL_ATTENTION && pick_threshold(ctx, &a, bucket, e))
        return VECATTN_OK;
    va_tune_key_describe(&e->key, rs->label, sizeof rs->label);
    if (kind == VA_KERNEL_ATTENTION && !e->dense) {
        size_t len = strlen(rs->label);
        snprintf(rs->label + len, sizeof rs->label - len, " (kept %.1f%% at p %.4g)", 100.0 * e->kept, e->threshold);
    }
    double left = budget_left(rs);
    va_tune_request req = {.kind = kind,
                           .args = a,
                           .key = e->key,
                           .quick = o->quick,
                           .budget_s = isinf(left) ? 0.0 : left,
                           .store = o->store,
                           .progress = on_progress,
                           .user = rs};
    if (!(e->result = calloc(1, sizeof *e->result))) return va_fail(ctx, VECATTN_E_NOMEM, "out of memory");
    vecattn_status st = va_autotune(ctx, &req, e->result);
    e->status = st == VECATTN_OK ? "ok" : "failed";
    if (st) snprintf(e->why, sizeof e->why, "%s", vecattn_errmsg(ctx));
    if (kind == VA_KERNEL_ATTENTION && e->result->kept > 0.0) e->kept = e->result->kept;
    return st == VECATTN_E_LAUNCH ? st : VECATTN_OK;
}

/* An entry the time budget left no room for. */
static void skipped_entry(vecattn_ctx *ctx, const va_tuner_options *o, int seq, int j, va_tuner_entry *e) {
    va_kernel_kind kind;
    int bucket, heads = o->heads ? o->heads : va_tuner_default_heads(seq);
    vecattn_prefill_args a;
    plan_entry(o, j, &kind, &bucket);
    set_problem_args(&a, o, seq, heads);
    va_tune_key_init(ctx, kind, &a, bucket, &e->key);
    e->seq = seq, e->heads = heads, e->dense = kind == VA_KERNEL_ATTENTION && bucket == 0;
    e->status = "over-budget";
}

static void summarize(const run_state *rs, const va_tuner_entry *e) {
    if (!rs->o->progress) return;
    const va_tune_result *r = e->result;
    if (r && r->best >= 0)
        fprintf(stderr, "vecattn-autotune: [%d/%d] %s: best %s %.4f ms, default %s %.4f ms (%.2fx)%s\n",
                rs->entry + 1, rs->n_entries, rs->label, r->cand[r->best].tiles, r->cand[r->best].timing.median_ms,
                r->cand[r->reference].tiles, r->cand[r->reference].timing.median_ms,
                r->cand[r->reference].timing.median_ms / r->cand[r->best].timing.median_ms,
                r->stored ? ", stored" : "");
    else
        fprintf(stderr, "vecattn-autotune: [%d/%d] S=%d %s: %s%s%s\n", rs->entry + 1, rs->n_entries, e->seq,
                e->key.stage == VA_STAGE_SELECTION ? "selection" : "attention", e->status, e->why[0] ? ": " : "",
                e->why);
}

vecattn_status va_tuner_run(vecattn_ctx *ctx, const va_tuner_options *o, va_tuner_report *rep) {
    memset(rep, 0, sizeof *rep);
    int per_seq = entries_per_seq(o);
    run_state rs = {.o = o, .n_entries = per_seq * o->n_seqs, .t0 = now_s()};
    rep->entries = calloc((size_t)(rs.n_entries > 0 ? rs.n_entries : 1), sizeof *rep->entries);
    if (!rep->entries) return va_fail(ctx, VECATTN_E_NOMEM, "out of memory");
    for (int s = 0; s < o->n_seqs; ++s)
        rs.total_w += per_seq * entry_weight(o->seqs[s], o->heads ? o->heads : va_tuner_default_heads(o->seqs[s]));
    vecattn_status st = VECATTN_OK;
    int all_ok = 1;
    for (int s = 0; s < o->n_seqs && !st; ++s) {
        va_tuner_problem p;
        if (budget_left(&rs) <= 1.0) { /* no inputs to make: every entry left is over budget */
            for (int j = 0; j < per_seq; ++j, ++rs.entry)
                skipped_entry(ctx, o, o->seqs[s], j, &rep->entries[rep->n++]);
            continue;
        }
        st = va_tuner_problem_make(ctx, o, o->seqs[s], o->heads, &p);
        if (st) break;
        rs.cur_w = entry_weight(p.args.seq_k, p.args.heads_q);
        for (int j = 0; j < per_seq && !st; ++j, ++rs.entry, rs.done_w += rs.cur_w) {
            va_kernel_kind kind;
            int bucket;
            plan_entry(o, j, &kind, &bucket);
            va_tuner_entry *e = &rep->entries[rep->n++];
            st = tune_entry(ctx, &rs, &p, kind, bucket, e);
            if (!e->status) e->status = "failed";
            all_ok &= !strcmp(e->status, "ok") || !strcmp(e->status, "unreachable");
            summarize(&rs, e);
        }
        va_tuner_problem_free(ctx, &p);
    }
    rep->seconds = now_s() - rs.t0;
    if (!st && !all_ok) st = va_fail(ctx, VECATTN_E_INTERNAL, "some entries could not be tuned (see the report)");
    return st;
}

void va_tuner_report_free(va_tuner_report *rep) {
    for (int i = 0; i < rep->n; ++i) free(rep->entries[i].result);
    free(rep->entries);
    memset(rep, 0, sizeof *rep);
}
