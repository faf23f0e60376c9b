/*
** accuracy.c -- `vecattn-bench --accuracy`: what the selection costs in accuracy, per
** threshold, against a block-sparse baseline run through the same sparse kernel.
**
** Per data set, per threshold p of the vector-wise selection and per mass target tau of the
** block-sparse baseline, per head and over all heads:
**   sparsity      1 - attended / valid query-key pairs (causal: valid = visible);
**   recall        mean over all query rows of the true softmax mass inside the kept keys,
**                 from the kernels' log-sum-exps on the GPU (autotune/recall.h; checked
**                 against float64 by tests/test_gpu_recall.c);
**   err_dense     relative L2 error of the output against float64 dense attention;
**   err_same_set  relative L2 error against float64 attention over exactly the kept keys:
**                 the kernel's own error, at bf16 rounding level (bound 1e-2), apart from
**                 the selection's.
** The two float64 references are computed on the CPU for a fixed sample of query rows per
** head (--rows, evenly spaced, the last row included): the error columns are over those
** rows; sparsity and recall are over every row.
**
** Block-sparse baseline: 64 x 64 blocks; block scores = scale * mean-pooled Q block . mean-
** pooled K block; per query block, key blocks in descending score order until their softmax
** mass over the block scores reaches tau (causal: only blocks at or left of the diagonal, the
** diagonal block always kept). Its key lists go through vecattn_sparse_attention with empty
** forced ranges, so the kernel, the masking and the timing path are those of the method.
**
** Data sets (autotune/videodata.h; parameters printed on stdout): "video" = the generator's
** defaults: the local field adds about 1.8 to the scaled score of a perfectly correlated key
** and a vertical key gets about +2, so about 5% of the mass sits on vertical keys (flat,
** local attention); "video-peaked" = field 1.0 (local scores up to about 11: peaked local
** attention); "video-vertical" = vertical 1.5 (vertical keys about +5: about half the mass
** on them, the structure the method assumes of video DiTs); "video-noisy" = noise 0.3,
** field 0.3 (flatter still); or --qkv DIR with q.npy, k.npy, v.npy of real dumps. The
** settings are fixed and all reported; nothing is tuned to make a number pass.
*/
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "autotune/recall.h"
#include "autotune/videodata.h"
#include "ref/vecattn_ref.h"
#include "bench_util.h"
#include "runtime/runtime.h"

#define BLOCK 64

typedef struct acc_options {
    int seq, heads, head_dim, causal, rows;
    const char *csv, *qkv;
} acc_options;

typedef struct dataset {
    char name[64], params[256];
    vecattn_prefill_args a;        /* host view: q, k, v host arrays */
    uint16_t *q, *k, *v;
    float *fq, *fk, *fv;           /* the same values as floats, for the references */
    CUdeviceptr dq, dk, dv, dout;
    int *sample;                   /* sampled query rows */
    int n_sample;
    double *ref_dense;             /* [H][n_sample][D] */
} dataset;

typedef struct keyset {            /* per (head, query block): kept keys, host CSR */
    int32_t *counts, *indices;
    int64_t *offsets, total;
} keyset;

static void *xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) die("malloc", "out of host memory");
    return p;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* ---- float64 references on sampled rows -------------------------------------------------- */

static double elem(const dataset *d, const uint16_t *base, int64_t idx) { return va_ref_to_float(base[idx], d->a.dtype); }

static float *as_floats(const dataset *d, const uint16_t *x, size_t n) {
    float *f = xmalloc(n * sizeof(float));
    for (size_t i = 0; i < n; ++i) f[i] = va_ref_to_float(x[i], d->a.dtype);
    return f;
}

/* Row t of head h over the keys flagged in `keep` (NULL: every valid key), into out[D]. */
static void ref_row(const dataset *d, int h, int t, const unsigned char *keep, double *out) {
    const vecattn_prefill_args *a = &d->a;
    int D = a->head_dim, hk = h / (a->heads_q / a->heads_kv), last = a->causal ? t + a->seq_k - a->seq_q : a->seq_k - 1;
    const int64_t qo = (int64_t)h * a->q_stride[1] + (int64_t)t * a->q_stride[2];
    double scale = 1.0 / sqrt((double)D), m = -INFINITY, sum = 0.0;
    double *s = xmalloc(sizeof(double) * (size_t)(last + 1));
    for (int j = 0; j <= last; ++j) {
        s[j] = -INFINITY;
        if (keep && !keep[j]) continue;
        const int64_t ko = (int64_t)hk * a->k_stride[1] + (int64_t)j * a->k_stride[2];
        double dot = 0.0;
        for (int x = 0; x < D; ++x) dot += (double)d->fq[qo + x] * d->fk[ko + x];
        s[j] = dot * scale;
        m = fmax(m, s[j]);
    }
    for (int x = 0; x < D; ++x) out[x] = 0.0;
    for (int j = 0; j <= last; ++j) {
        if (s[j] == -INFINITY) continue;
        double p = exp(s[j] - m);
        sum += p;
        const int64_t vo = (int64_t)hk * a->v_stride[1] + (int64_t)j * a->v_stride[2];
        for (int x = 0; x < D; ++x) out[x] += p * d->fv[vo + x];
    }
    for (int x = 0; x < D; ++x) out[x] = sum > 0 ? out[x] / sum : 0.0;
    free(s);
}

/* Squared error and squared norm of the GPU output on the sampled rows of head h against
** ref[n][D] (accumulated into num and den). */
static void head_error(const dataset *d, const uint16_t *o, int h, const double *ref, double *num, double *den) {
    const vecattn_prefill_args *a = &d->a;
    for (int r = 0; r < d->n_sample; ++r)
        for (int x = 0; x < a->head_dim; ++x) {
            double g = va_ref_to_float(o[((int64_t)h * a->seq_q + d->sample[r]) * a->head_dim + x], a->dtype);
            double w = ref[(size_t)r * a->head_dim + x];
            *num += (g - w) * (g - w), *den += w * w;
        }
}

/* ---- data --------------------------------------------------------------------------------- */

static void upload(dataset *d) {
    vecattn_prefill_args *a = &d->a;
    size_t qb = (size_t)a->heads_q * a->seq_q * a->head_dim * 2, kb = (size_t)a->heads_kv * a->seq_k * a->head_dim * 2;
    check_cu(va_cuMemAlloc(&d->dq, qb), "cuMemAlloc"), check_cu(va_cuMemAlloc(&d->dout, qb), "cuMemAlloc");
    check_cu(va_cuMemAlloc(&d->dk, kb), "cuMemAlloc"), check_cu(va_cuMemAlloc(&d->dv, kb), "cuMemAlloc");
    check_cu(va_cuMemcpyHtoD(d->dq, d->q, qb), "upload"), check_cu(va_cuMemcpyHtoD(d->dk, d->k, kb), "upload");
    check_cu(va_cuMemcpyHtoD(d->dv, d->v, kb), "upload");
}

static void sample_rows(dataset *d, int n) {
    int S = d->a.seq_q;
    d->n_sample = n < S ? n : S;
    d->sample = xmalloc(sizeof(int) * d->n_sample);
    for (int r = 0; r < d->n_sample; ++r)
        d->sample[r] = d->n_sample == 1 ? S - 1 : (int)((int64_t)r * (S - 1) / (d->n_sample - 1));
}

static void make_video(dataset *d, const acc_options *o, const char *name, float noise, float field, float vertical) {
    memset(d, 0, sizeof *d);
    vecattn_prefill_args *a = &d->a;
    vecattn_prefill_args_init(a);
    a->batch = 1, a->heads_q = a->heads_kv = o->heads, a->seq_q = a->seq_k = o->seq, a->head_dim = o->head_dim;
    a->causal = o->causal;
    vecattn_set_contiguous_bhsd(a);
    va_video_params vp;
    va_video_defaults(&vp);
    if (noise > 0) vp.noise = noise;
    if (field > 0) vp.field = field;
    if (vertical > 0) vp.vertical = vertical;
    size_t n = (size_t)o->heads * o->seq * o->head_dim;
    d->q = xmalloc(n * 2), d->k = xmalloc(n * 2), d->v = xmalloc(n * 2);
    if (va_video_fill(a, d->q, d->k, d->v, &vp) != 0) die("va_video_fill", "bad sizes");
    snprintf(d->name, sizeof d->name, "%s", name);
    snprintf(d->params, sizeof d->params, "frames %dx%d corr %.0f/%.0f/%.0f field %.2f noise %.2f vertical %d x %.2f q_bias %.2f head_var %.2f seed %llu",
             vp.frame_height, vp.frame_width, vp.corr_t, vp.corr_y, vp.corr_x, vp.field, vp.noise, vp.vertical_per_frame,
             vp.vertical, vp.q_bias, vp.head_variation, (unsigned long long)vp.seed);
}

static void load_npy(dataset *d, const acc_options *o) {
    memset(d, 0, sizeof *d);
    char qp[4096], kp[4096], vp[4096], msg[512];
    snprintf(qp, sizeof qp, "%s/q.npy", o->qkv), snprintf(kp, sizeof kp, "%s/k.npy", o->qkv);
    snprintf(vp, sizeof vp, "%s/v.npy", o->qkv);
    vecattn_prefill_args_init(&d->a);
    if (va_npy_load_qkv(qp, kp, vp, VECATTN_BF16, &d->a, &d->q, &d->k, &d->v, msg, sizeof msg) != VA_NPY_OK)
        die("--qkv", msg);
    if (d->a.batch != 1) die("--qkv", "use arrays of one batch ([H, S, D])");
    d->a.causal = o->causal;
    snprintf(d->name, sizeof d->name, "npy");
    snprintf(d->params, sizeof d->params, "%s", o->qkv);
}

/* ---- key sets ------------------------------------------------------------------------------ */

static int n_blocks(const vecattn_prefill_args *a) { return (a->seq_q + BLOCK - 1) / BLOCK; }

/* The library's selection at threshold p, downloaded (counts, offsets, indices). */
static void library_keys(vecattn_ctx *ctx, const dataset *d, float p, keyset *ks) {
    vecattn_prefill_args a = d->a;
    a.q = (const void *)d->dq, a.k = (const void *)d->dk, a.threshold = p;
    int64_t rows = (int64_t)a.heads_q * ((a.seq_q + a.pq - 1) / a.pq);
    CUdeviceptr counts, offsets, indices;
    check_cu(va_cuMemAlloc(&counts, rows * 4), "cuMemAlloc"), check_cu(va_cuMemAlloc(&offsets, (rows + 1) * 8), "cuMemAlloc");
    vecattn_selection sel = {(int32_t *)counts, (int64_t *)offsets, NULL, 0};
    if (vecattn_select(ctx, &a, &sel, &ks->total, NULL) != VECATTN_OK) die("vecattn_select", vecattn_errmsg(ctx));
    check_cu(va_cuMemAlloc(&indices, (size_t)(ks->total > 0 ? ks->total : 1) * 4), "cuMemAlloc");
    sel.indices = (int32_t *)indices, sel.indices_capacity = ks->total;
    if (vecattn_select(ctx, &a, &sel, NULL, NULL) != VECATTN_OK) die("vecattn_select", vecattn_errmsg(ctx));
    ks->counts = xmalloc(rows * 4), ks->offsets = xmalloc((rows + 1) * 8), ks->indices = xmalloc((ks->total + 1) * 4);
    check_cu(va_cuMemcpyDtoH(ks->counts, counts, rows * 4), "download");
    check_cu(va_cuMemcpyDtoH(ks->offsets, offsets, (rows + 1) * 8), "download");
    check_cu(va_cuMemcpyDtoH(ks->indices, indices, (size_t)ks->total * 4), "download");
    va_cuMemFree(counts), va_cuMemFree(offsets), va_cuMemFree(indices);
}

static double *pooled(const dataset *d, const uint16_t *x, const int64_t stride[3], int h, int seq) {
    int D = d->a.head_dim, nb = (seq + BLOCK - 1) / BLOCK;
    double *p = calloc((size_t)nb * D, sizeof(double));
    for (int b = 0; b < nb; ++b) {
        int t1 = (b + 1) * BLOCK < seq ? (b + 1) * BLOCK : seq;
        for (int t = b * BLOCK; t < t1; ++t)
            for (int x0 = 0; x0 < D; ++x0) p[(size_t)b * D + x0] += elem(d, x, h * stride[1] + (int64_t)t * stride[2] + x0);
        for (int x0 = 0; x0 < D; ++x0) p[(size_t)b * D + x0] /= (t1 - b * BLOCK);
    }
    return p;
}

/* Block-sparse key lists at mass target tau (rows: Pq = BLOCK query blocks). */
static void block_keys(const dataset *d, double tau, keyset *ks) {
    const vecattn_prefill_args *a = &d->a;
    int nq = n_blocks(a), D = a->head_dim, H = a->heads_q;
    size_t nk = (size_t)(a->seq_k + BLOCK - 1) / BLOCK;
    int shift_blocks = (a->seq_k - a->seq_q) / BLOCK;
    ks->counts = xmalloc(sizeof(int32_t) * H * nq), ks->offsets = xmalloc(sizeof(int64_t) * (H * nq + 1));
    size_t cap = (size_t)H * nq * a->seq_k;
    ks->indices = xmalloc(sizeof(int32_t) * cap);
    double *score = xmalloc(sizeof(double) * nk);
    unsigned char *chosen = xmalloc(nk);
    int64_t at = 0;
    for (int h = 0; h < H; ++h) {
        double *pq = pooled(d, d->q, a->q_stride, h, a->seq_q);
        double *pk = pooled(d, d->k, a->k_stride, h / (a->heads_q / a->heads_kv), a->seq_k);
        for (int i = 0; i < nq; ++i) {
            int last = a->causal ? i + shift_blocks : (int)nk - 1; /* the diagonal block */
            if (last >= (int)nk) last = (int)nk - 1;
            double m = -INFINITY, sum = 0.0;
            for (int j = 0; j <= last; ++j) {
                double dot = 0.0;
                for (int x = 0; x < D; ++x) dot += pq[(size_t)i * D + x] * pk[(size_t)j * D + x];
                score[j] = dot / sqrt((double)D);
                m = fmax(m, score[j]);
            }
            for (int j = 0; j <= last; ++j) sum += exp(score[j] - m);
            /* descending score: a selection sort is enough for a few hundred blocks */
            memset(chosen, 0, (size_t)nk);
            double mass = 0.0;
            if (a->causal) chosen[last] = 1, mass += exp(score[last] - m) / sum;
            for (int n = 0; n <= last && mass < tau; ++n) {
                int best = -1;
                for (int j = 0; j <= last; ++j)
                    if (!chosen[j] && (best < 0 || score[j] > score[best])) best = j;
                if (best < 0) break;
                chosen[best] = 1, mass += exp(score[best] - m) / sum;
            }
            int64_t row = (int64_t)h * nq + i;
            ks->offsets[row] = at;
            for (int j = 0; j <= last; ++j)
                if (chosen[j])
                    for (int key = j * BLOCK; key < (j + 1) * BLOCK && key < a->seq_k; ++key) ks->indices[at++] = key;
            ks->counts[row] = (int32_t)(at - ks->offsets[row]);
        }
        free(pq), free(pk);
    }
    ks->offsets[H * nq] = at;
    ks->total = at;
    free(score), free(chosen);
}

static void keyset_free(keyset *ks) { free(ks->counts), free(ks->offsets), free(ks->indices); }

/* Flags of the keys row t of head h attends under `ks` (+ the spec's forced keys when
** `forced`), for the same-set reference. */
static void row_flags(const dataset *d, const keyset *ks, int forced, int h, int t, int pq, unsigned char *keep) {
    const vecattn_prefill_args *a = &d->a;
    int nq = (a->seq_q + pq - 1) / pq, i = t / pq;
    memset(keep, 0, (size_t)(a->seq_k > 0 ? a->seq_k : 0));
    int64_t row = (int64_t)h * nq + i;
    for (int64_t x = ks->offsets[row]; x < ks->offsets[row] + ks->counts[row]; ++x) keep[ks->indices[x]] = 1;
    if (forced && a->causal) {
        int32_t fr[4];
        vecattn_prefill_args spec = *a;
        spec.pq = pq;
        va_ref_forced_ranges(&spec, i, fr);
        for (int j = fr[0]; j < fr[1]; ++j) keep[j] = 1;
        for (int j = fr[2]; j < fr[3] && j < a->seq_k; ++j) keep[j] = 1;
    }
}

/* Attended pairs per head of block lists (the kernel masks keys after a row's position). */
static void block_pairs(const dataset *d, const keyset *ks, double *pairs) {
    const vecattn_prefill_args *a = &d->a;
    int nq = n_blocks(a), shift = a->seq_k - a->seq_q;
    for (int h = 0; h < a->heads_q; ++h) {
        pairs[h] = 0.0;
        for (int i = 0; i < nq; ++i) {
            int64_t row = (int64_t)h * nq + i;
            for (int t = i * BLOCK; t < (i + 1) * BLOCK && t < a->seq_q; ++t) {
                if (!a->causal) {
                    pairs[h] += ks->counts[row];
                    continue;
                }
                for (int64_t x = ks->offsets[row]; x < ks->offsets[row] + ks->counts[row]; ++x)
                    pairs[h] += ks->indices[x] <= t + shift;
            }
        }
    }
}

/* ---- one measurement ------------------------------------------------------------------------ */

typedef struct result {
    va_recall_stats *per_head, overall;
    double *err_dense, *err_same;
    double err_dense_all, err_same_all;
} result;

/* Relative L2 errors of the output in dout on the sampled rows, per head and overall (the
** overall figure pools the rows of every head). */
static void errors(const dataset *d, const keyset *ks, int forced, int pq, result *res) {
    const vecattn_prefill_args *a = &d->a;
    int H = a->heads_q, D = a->head_dim;
    size_t n_out = (size_t)H * a->seq_q * D;
    uint16_t *o = xmalloc(n_out * 2);
    check_cu(va_cuCtxSynchronize(), "sync");
    check_cu(va_cuMemcpyDtoH(o, d->dout, n_out * 2), "download O");
    double *same = xmalloc(sizeof(double) * d->n_sample * D);
    unsigned char *keep = xmalloc((size_t)a->seq_k);
    double all[4] = {0, 0, 0, 0}; /* dense num, den; same-set num, den */
    for (int h = 0; h < H; ++h) {
        for (int r = 0; r < d->n_sample; ++r) {
            row_flags(d, ks, forced, h, d->sample[r], pq, keep);
            ref_row(d, h, d->sample[r], keep, same + (size_t)r * D);
        }
        double e[4] = {0, 0, 0, 0};
        head_error(d, o, h, d->ref_dense + (size_t)h * d->n_sample * D, &e[0], &e[1]);
        head_error(d, o, h, same, &e[2], &e[3]);
        res->err_dense[h] = sqrt(e[0] / e[1]), res->err_same[h] = sqrt(e[2] / e[3]);
        for (int x = 0; x < 4; ++x) all[x] += e[x];
    }
    res->err_dense_all = sqrt(all[0] / all[1]), res->err_same_all = sqrt(all[2] / all[3]);
    free(o), free(same), free(keep);
}

static void csv_rows(FILE *csv, const dataset *d, const char *method, double param, const result *res) {
    for (int h = -1; h < d->a.heads_q; ++h) {
        const va_recall_stats *s = h < 0 ? &res->overall : &res->per_head[h];
        char head[16];
        snprintf(head, sizeof head, h < 0 ? "all" : "%d", h);
        fprintf(csv, "%s,%s,%d,%d,%s,%g,%s,%.5f,%.6f,%.4e,%.4e\n", d->name, method, d->a.seq_q, d->a.causal,
                d->a.dtype == VECATTN_BF16 ? "bf16" : "fp16", param, head, s->sparsity, s->recall,
                h < 0 ? res->err_dense_all : res->err_dense[h], h < 0 ? res->err_same_all : res->err_same[h]);
    }
    fflush(csv);
}

static void print_line(const char *method, double param, const result *res) {
    printf("  %-6s %-6s %-8g sparsity %.4f  recall %.5f  err vs dense %.3e  err on the kept set %.3e%s\n", method,
           method[0] == 'v' ? "p" : "tau", param, res->overall.sparsity, res->overall.recall, res->err_dense_all,
           res->err_same_all, res->err_same_all <= 1e-2 ? "" : "  (above the 1e-2 bound)");
}

static int run_dataset(vecattn_ctx *ctx, dataset *d, const acc_options *o, FILE *csv) {
    const vecattn_prefill_args *a = &d->a;
    int H = a->heads_q, D = a->head_dim, bad = 0;
    double t0 = now_s();
    upload(d);
    sample_rows(d, o->rows);
    size_t nq_el = (size_t)H * a->seq_q * D, nk_el = (size_t)a->heads_kv * a->seq_k * D;
    d->fq = as_floats(d, d->q, nq_el), d->fk = as_floats(d, d->k, nk_el), d->fv = as_floats(d, d->v, nk_el);
    d->ref_dense = xmalloc(sizeof(double) * H * d->n_sample * D);
    for (int h = 0; h < H; ++h)
        for (int r = 0; r < d->n_sample; ++r) ref_row(d, h, d->sample[r], NULL, d->ref_dense + ((size_t)h * d->n_sample + r) * D);
    vecattn_prefill_args dev = *a;
    dev.q = (const void *)d->dq, dev.k = (const void *)d->dk, dev.v = (const void *)d->dv, dev.o = (void *)d->dout;
    va_recall *r;
    if (va_recall_open(ctx, &dev, NULL, &r) != VECATTN_OK) die("va_recall_open", va_recall_errmsg(r));
    printf("%s (%s), S %d, %d heads, D %d, %s; float64 errors on %d rows per head\n", d->name, d->params, a->seq_q, H, D,
           a->causal ? "causal" : "non-causal", d->n_sample);
    result res = {xmalloc(sizeof(va_recall_stats) * H), {0, 0}, xmalloc(sizeof(double) * H), xmalloc(sizeof(double) * H), 0, 0};
    static const float ps[] = {0.001f, 0.05f, 0.2f, 0.4f, 0.6f, 0.8f, 0.9f, 0.95f, 0.98f, 0.995f};
    float *ths = xmalloc(sizeof(float) * H);
    for (size_t n = 0; n < sizeof ps / sizeof ps[0]; ++n) {
        for (int h = 0; h < H; ++h) ths[h] = ps[n];
        if (va_recall_measure(r, ths, res.per_head, &res.overall) != VECATTN_OK) die("va_recall_measure", va_recall_errmsg(r));
        vecattn_prefill_args run = dev;
        run.threshold = ps[n];
        if (vecattn_prefill(ctx, &run, NULL) != VECATTN_OK) die("vecattn_prefill", vecattn_errmsg(ctx));
        keyset ks;
        library_keys(ctx, d, ps[n], &ks);
        errors(d, &ks, 1, a->pq, &res);
        keyset_free(&ks);
        csv_rows(csv, d, "vector", ps[n], &res);
        print_line("vector", ps[n], &res);
        bad += res.err_same_all > 1e-2;
    }
    static const double taus[] = {0.3, 0.5, 0.7, 0.8, 0.9, 0.95, 0.99};
    int nq = n_blocks(a);
    int32_t *empty = calloc((size_t)H * nq * 4, sizeof(int32_t));
    CUdeviceptr forced, counts, offsets, indices;
    check_cu(va_cuMemAlloc(&forced, (size_t)H * nq * 16), "cuMemAlloc");
    check_cu(va_cuMemcpyHtoD(forced, empty, (size_t)H * nq * 16), "upload");
    check_cu(va_cuMemAlloc(&counts, (size_t)H * nq * 4), "cuMemAlloc");
    check_cu(va_cuMemAlloc(&offsets, ((size_t)H * nq + 1) * 8), "cuMemAlloc");
    double *pairs = xmalloc(sizeof(double) * H);
    for (size_t n = 0; n < sizeof taus / sizeof taus[0]; ++n) {
        keyset ks;
        block_keys(d, taus[n], &ks);
        check_cu(va_cuMemAlloc(&indices, (size_t)(ks.total + 1) * 4), "cuMemAlloc");
        check_cu(va_cuMemcpyHtoD(counts, ks.counts, (size_t)H * nq * 4), "upload");
        check_cu(va_cuMemcpyHtoD(offsets, ks.offsets, ((size_t)H * nq + 1) * 8), "upload");
        check_cu(va_cuMemcpyHtoD(indices, ks.indices, (size_t)(ks.total + 1) * 4), "upload");
        vecattn_selection sel = {(int32_t *)counts, (int64_t *)offsets, (int32_t *)indices, ks.total};
        block_pairs(d, &ks, pairs);
        vecattn_prefill_args run = dev;
        run.pq = BLOCK;
        if (va_recall_measure_selection(r, (const int32_t *)forced, &sel, pairs, res.per_head, &res.overall) != VECATTN_OK)
            die("va_recall_measure_selection", va_recall_errmsg(r));
        if (vecattn_sparse_attention(ctx, &run, (const int32_t *)forced, &sel, NULL) != VECATTN_OK)
            die("vecattn_sparse_attention", vecattn_errmsg(ctx));
        errors(d, &ks, 0, BLOCK, &res);
        csv_rows(csv, d, "block", taus[n], &res);
        print_line("block", taus[n], &res);
        bad += res.err_same_all > 1e-2;
        va_cuMemFree(indices);
        keyset_free(&ks);
    }
    printf("  %.1f s\n", now_s() - t0);
    va_cuMemFree(forced), va_cuMemFree(counts), va_cuMemFree(offsets);
    va_cuMemFree(d->dq), va_cuMemFree(d->dk), va_cuMemFree(d->dv), va_cuMemFree(d->dout);
    va_recall_close(r);
    free(empty), free(pairs), free(ths), free(res.per_head), free(res.err_dense), free(res.err_same);
    free(d->q), free(d->k), free(d->v), free(d->fq), free(d->fk), free(d->fv), free(d->sample), free(d->ref_dense);
    return bad;
}

static void usage(FILE *f) {
    fputs("usage: vecattn-bench --accuracy [--seq 8192] [--heads 4] [--head-dim 128] [--causal|--non-causal]\n"
          "                                [--rows 64] [--qkv DIR] [--csv FILE]\n"
          "Per threshold: sparsity, attention-mass recall, error vs float64 dense attention and\n"
          "vs float64 attention on the same kept keys, per head and overall, for the vector-wise\n"
          "selection and a 64x64 block-sparse baseline through the same kernel. Data: four\n"
          "video-like sets (autotune/videodata.h), or --qkv DIR holding q.npy, k.npy, v.npy.\n"
          "Plot the CSV with bench/plot_accuracy.py. Exit 1 if an error on the kept set is above\n"
          "1e-2 (the kernel's bf16 bound).\n",
          f);
}

int va_bench_accuracy(int argc, char **argv) {
    acc_options o = {8192, 4, 128, 1, 64, NULL, NULL};
    for (int i = 1; i < argc; ++i) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--accuracy")) continue;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) return usage(stdout), 0;
        if (!strcmp(a, "--causal")) o.causal = 1;
        else if (!strcmp(a, "--non-causal")) o.causal = 0;
        else if (!v) return usage(stderr), 1;
        else if (!strcmp(a, "--seq")) o.seq = atoi(v), ++i;
        else if (!strcmp(a, "--heads")) o.heads = atoi(v), ++i;
        else if (!strcmp(a, "--head-dim")) o.head_dim = atoi(v), ++i;
        else if (!strcmp(a, "--rows")) o.rows = atoi(v), ++i;
        else if (!strcmp(a, "--csv")) o.csv = v, ++i;
        else if (!strcmp(a, "--qkv")) o.qkv = v, ++i;
        else return usage(stderr), 1;
    }
    if (o.seq < BLOCK || o.heads < 1 || o.rows < 1 || (o.head_dim != 64 && o.head_dim != 128))
        return fprintf(stderr, "vecattn-bench --accuracy: bad sizes\n"), 1;
    vecattn_ctx *ctx = open_context();
    FILE *csv = o.csv ? fopen(o.csv, "a") : stdout;
    if (!csv) die("cannot open", o.csv);
    if (!o.csv || ftell(csv) == 0)
        fprintf(csv, "dataset,method,seq,causal,dtype,param,head,sparsity,recall,err_dense,err_same_set\n");
    int bad = 0;
    dataset d;
    if (o.qkv) {
        load_npy(&d, &o);
        bad += run_dataset(ctx, &d, &o, csv);
    } else {
        static const struct {
            const char *name;
            float noise, field, vertical;
        } sets[] = {{"video", 0, 0, 0}, {"video-peaked", 0, 1.0f, 0}, {"video-vertical", 0, 0, 1.5f},
                    {"video-noisy", 0.3f, 0.3f, 0}};
        for (size_t n = 0; n < sizeof sets / sizeof sets[0]; ++n) {
            make_video(&d, &o, sets[n].name, sets[n].noise, sets[n].field, sets[n].vertical);
            bad += run_dataset(ctx, &d, &o, csv);
        }
    }
    if (o.csv) fclose(csv);
    vecattn_destroy(ctx);
    return bad ? 1 : 0;
}
