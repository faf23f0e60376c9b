/*
** vecattn_bench.c -- time vecattn's dense and sparse modes on the GPU.
**
**   vecattn-bench [--seq 16384] [--heads 32] [--heads-kv 32] [--head-dim 128] [--batch 1]
**                 [--causal|--non-causal] [--dtype bf16|fp16] [--sparsity 0.8,0.5]
**                 [--samples 20] [--pq 64] [--csv FILE]
**
** For each sequence length: the dense mode, then for each target sparsity the threshold
** that gives it on this data (bisection on the measured sparsity), and the sparse prefill
** timed as a whole and as its two stages. Before timing, each configuration is checked
** against a float64 CPU reference on a small slice (the first query block rows of head 0)
** so that a wrong kernel is never timed. Timing: driver events, 3 warm-up runs, L2 flushed
** (a 256 MiB memset) before every sample, median of --samples samples.
** Inputs: va_ref_fill_vertical (noise plus a few "vertical" keys that every query block
** favours) and uniform random V, so that the selection has columns to find.
*/
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ref/vecattn_ref.h"
#include "bench_util.h"
#include "runtime/runtime.h"

typedef struct options {
    int seqs[16], n_seqs;
    int heads, heads_kv, head_dim, batch, causal;
    vecattn_dtype dtype;
    double sparsities[8];
    int n_sparsities;
    int samples;
    int pq;  /* 0: the method's default */
    const char *csv;
} options;

typedef struct problem {
    vecattn_prefill_args args;
    CUdeviceptr q, k, v, o;
    uint16_t *host_q, *host_k, *host_v;
} problem;

static void check_va(vecattn_ctx *ctx, vecattn_status st, const char *what) {
    if (st != VECATTN_OK) die(what, vecattn_errmsg(ctx));
}

static int parse_list_int(const char *s, int *out, int max) {
    int n = 0;
    for (char *end; *s && n < max; s = *end ? end + 1 : end) out[n++] = (int)strtol(s, &end, 10);
    return n;
}

static int parse_list_double(const char *s, double *out, int max) {
    int n = 0;
    for (char *end; *s && n < max; s = *end ? end + 1 : end) out[n++] = strtod(s, &end);
    return n;
}

static void usage(void) {
    puts("usage: vecattn-bench [--seq 16384[,32768...]] [--heads 32] [--heads-kv 32] [--head-dim 128]\n"
         "                     [--batch 1] [--causal|--non-causal] [--dtype bf16|fp16]\n"
         "                     [--sparsity 0.8[,0.5...]] [--samples 20] [--pq 64] [--csv FILE]\n"
         "       vecattn-bench --accuracy --help   (the accuracy report)\n"
         "Times vecattn's dense mode and its sparse mode at the target sparsities; prints one\n"
         "line per case and appends CSV rows to FILE when --csv is given. With --pq other than the\n"
         "method's 64, sparse rows are labelled sparse-pqN.");
}

static options parse_options(int argc, char **argv) {
    options o = {.seqs = {16384}, .n_seqs = 1, .heads = 32, .heads_kv = 32, .head_dim = 128, .batch = 1,
                 .causal = 1, .dtype = VECATTN_BF16, .sparsities = {0.8}, .n_sparsities = 1, .samples = 20};
    for (int i = 1; i < argc; ++i) {
        const char *a = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--help")) usage(), exit(0);
        else if (!strcmp(a, "--causal")) o.causal = 1;
        else if (!strcmp(a, "--non-causal")) o.causal = 0;
        else if (!val) usage(), exit(1);
        else if (!strcmp(a, "--seq")) o.n_seqs = parse_list_int(argv[++i], o.seqs, 16);
        else if (!strcmp(a, "--heads")) o.heads = atoi(argv[++i]);
        else if (!strcmp(a, "--heads-kv")) o.heads_kv = atoi(argv[++i]);
        else if (!strcmp(a, "--head-dim")) o.head_dim = atoi(argv[++i]);
        else if (!strcmp(a, "--batch")) o.batch = atoi(argv[++i]);
        else if (!strcmp(a, "--dtype")) o.dtype = !strcmp(argv[++i], "fp16") ? VECATTN_FP16 : VECATTN_BF16;
        else if (!strcmp(a, "--sparsity")) o.n_sparsities = parse_list_double(argv[++i], o.sparsities, 8);
        else if (!strcmp(a, "--samples")) o.samples = atoi(argv[++i]);
        else if (!strcmp(a, "--pq")) o.pq = atoi(argv[++i]);
        else if (!strcmp(a, "--csv")) o.csv = argv[++i];
        else fprintf(stderr, "vecattn-bench: unknown option %s\n", a), usage(), exit(1);
    }
    return o;
}

/* ---- data ---------------------------------------------------------------------------- */

static CUdeviceptr upload(const uint16_t *host, size_t n) {
    CUdeviceptr d;
    check_cu(va_cuMemAlloc(&d, n * 2), "cuMemAlloc");
    check_cu(va_cuMemcpyHtoD(d, host, n * 2), "cuMemcpyHtoD");
    return d;
}

static void make_problem(problem *p, const options *o, int seq) {
    memset(p, 0, sizeof *p);
    vecattn_prefill_args *a = &p->args;
    vecattn_prefill_args_init(a);
    a->batch = o->batch, a->heads_q = o->heads, a->heads_kv = o->heads_kv;
    a->seq_q = a->seq_k = seq, a->head_dim = o->head_dim, a->dtype = o->dtype, a->causal = o->causal;
    if (o->pq) a->pq = o->pq;
    vecattn_set_contiguous_bhsd(a);
    size_t nq = (size_t)a->batch * a->heads_q * seq * a->head_dim;
    size_t nk = (size_t)a->batch * a->heads_kv * seq * a->head_dim;
    uint64_t rng = 0x9e3779b97f4a7c15ull ^ (uint64_t)seq;
    p->host_q = malloc(nq * 2), p->host_k = malloc(nk * 2), p->host_v = malloc(nk * 2);
    if (!p->host_q || !p->host_k || !p->host_v) die("malloc", "out of host memory");
    va_ref_vertical vp;
    va_ref_vertical_defaults(&vp);
    va_ref_fill_vertical(a, p->host_q, p->host_k, &rng, &vp);
    va_ref_fill_random(p->host_v, nk, o->dtype, &rng, -1.0f, 1.0f);
    p->q = upload(p->host_q, nq), p->k = upload(p->host_k, nk), p->v = upload(p->host_v, nk);
    check_cu(va_cuMemAlloc(&p->o, nq * 2), "cuMemAlloc");
    a->q = (void *)p->q, a->k = (void *)p->k, a->v = (void *)p->v, a->o = (void *)p->o;
}

static void free_problem(problem *p) {
    va_cuMemFree(p->q), va_cuMemFree(p->k), va_cuMemFree(p->v), va_cuMemFree(p->o);
    free(p->host_q), free(p->host_k), free(p->host_v);
}

/* ---- timing ---------------------------------------------------------------------------- */

typedef enum { RUN_PREFILL, RUN_SELECT, RUN_ATTENTION } run_kind;

typedef struct timer {
    CUevent start, stop;
    CUdeviceptr flush;
    size_t flush_bytes;
} timer;

static timer make_timer(void) {
    timer t = {.flush_bytes = (size_t)256 << 20};
    check_cu(va_cuEventCreate(&t.start, 0), "cuEventCreate");
    check_cu(va_cuEventCreate(&t.stop, 0), "cuEventCreate");
    check_cu(va_cuMemAlloc(&t.flush, t.flush_bytes), "cuMemAlloc (L2 flush)");
    return t;
}

typedef struct stage_buffers {
    vecattn_selection sel;
    CUdeviceptr counts, offsets, indices;
} stage_buffers;

static void run_once(vecattn_ctx *ctx, const vecattn_prefill_args *a, run_kind kind, stage_buffers *sb) {
    if (kind == RUN_PREFILL) check_va(ctx, vecattn_prefill(ctx, a, NULL), "vecattn_prefill");
    else if (kind == RUN_SELECT) check_va(ctx, vecattn_select(ctx, a, &sb->sel, NULL, NULL), "vecattn_select");
    else check_va(ctx, vecattn_sparse_attention(ctx, a, NULL, &sb->sel, NULL), "vecattn_sparse_attention");
}

static int compare_float(const void *x, const void *y) {
    float a = *(const float *)x, b = *(const float *)y;
    return (a > b) - (a < b);
}

/* Median milliseconds of `samples` runs, each after an L2 flush. */
static float time_median(vecattn_ctx *ctx, timer *t, const vecattn_prefill_args *a, run_kind kind,
                         stage_buffers *sb, int samples) {
    for (int i = 0; i < 3; ++i) run_once(ctx, a, kind, sb);
    float *ms = malloc(sizeof(float) * (size_t)samples);
    for (int i = 0; i < samples; ++i) {
        check_cu(va_cuMemsetD8(t->flush, (unsigned char)i, t->flush_bytes), "cuMemsetD8 (flush)");
        check_cu(va_cuEventRecord(t->start, NULL), "cuEventRecord");
        run_once(ctx, a, kind, sb);
        check_cu(va_cuEventRecord(t->stop, NULL), "cuEventRecord");
        check_cu(va_cuEventSynchronize(t->stop), "cuEventSynchronize");
        check_cu(va_cuEventElapsedTime(&ms[i], t->start, t->stop), "cuEventElapsedTime");
    }
    qsort(ms, (size_t)samples, sizeof *ms, compare_float);
    float median = ms[samples / 2];
    free(ms);
    return median;
}

/* ---- selection buffers, threshold search, correctness gate -------------------------------- */

static void alloc_selection(vecattn_ctx *ctx, const vecattn_prefill_args *a, stage_buffers *sb) {
    int nq = (a->seq_q + a->pq - 1) / a->pq;
    size_t rows = (size_t)a->batch * a->heads_q * nq;
    check_cu(va_cuMemAlloc(&sb->counts, rows * 4), "cuMemAlloc");
    check_cu(va_cuMemAlloc(&sb->offsets, (rows + 1) * 8), "cuMemAlloc");
    sb->sel = (vecattn_selection){(int32_t *)sb->counts, (int64_t *)sb->offsets, NULL, 0};
    int64_t total = 0;
    check_va(ctx, vecattn_select(ctx, a, &sb->sel, &total, NULL), "vecattn_select (sizing)");
    check_cu(va_cuMemAlloc(&sb->indices, (size_t)(total > 0 ? total : 1) * 4), "cuMemAlloc");
    sb->sel.indices = (int32_t *)sb->indices;
    sb->sel.indices_capacity = total;
    check_va(ctx, vecattn_select(ctx, a, &sb->sel, &total, NULL), "vecattn_select");
}

static void free_selection(stage_buffers *sb) {
    va_cuMemFree(sb->counts), va_cuMemFree(sb->offsets), va_cuMemFree(sb->indices);
}

static float measured_sparsity(vecattn_ctx *ctx, vecattn_prefill_args a) {
    float s = 0.0f;
    a.sparsity_out = &s;
    check_va(ctx, vecattn_prefill(ctx, &a, NULL), "vecattn_prefill (sparsity)");
    return s;
}

/* The threshold whose sparsity is nearest `target`: bisection on x = ln(p) in [-20, 0]
** (p = 1 keeps the fewest keys; sparsity grows with p). */
static float find_threshold(vecattn_ctx *ctx, vecattn_prefill_args a, double target, float *got) {
    double lo = -20.0, hi = 0.0;
    float best_p = 0.9f, best_s = -1.0f;
    for (int it = 0; it < 16; ++it) {
        double mid = 0.5 * (lo + hi);
        a.threshold = (float)exp(mid);
        float s = measured_sparsity(ctx, a);
        if (best_s < 0 || fabs(s - target) < fabs(best_s - target)) best_p = a.threshold, best_s = s;
        if (s < target) lo = mid; else hi = mid;
    }
    *got = best_s;
    return best_p;
}

/* Check the last 128 queries of head 0 against the float64 reference on the GPU's own
** selection; exits when the error is above the bf16 bound. */
static void check_slice(vecattn_ctx *ctx, const problem *p, const vecattn_prefill_args *full) {
    vecattn_prefill_args a = *full, h = *full;
    int rows = full->seq_q < 128 ? full->seq_q : 128;
    int64_t q_off = (int64_t)(full->seq_q - rows) * full->q_stride[2];
    a.batch = 1, a.heads_q = 1, a.heads_kv = 1, a.seq_q = rows;
    a.q = (const uint16_t *)full->q + q_off;
    a.o = (uint16_t *)full->o + q_off;
    a.sparsity_out = NULL;
    check_va(ctx, vecattn_prefill(ctx, &a, NULL), "vecattn_prefill (check)");
    stage_buffers sb;
    vecattn_prefill_args sel_args = a;
    int dense = a.dense;
    if (!dense) alloc_selection(ctx, &sel_args, &sb);
    int nq = (rows + a.pq - 1) / a.pq;
    int32_t *counts = NULL;
    int64_t *offsets = NULL;
    int32_t *indices = NULL;
    if (!dense) {
        counts = malloc((size_t)nq * 4), offsets = malloc((size_t)(nq + 1) * 8);
        size_t n_idx = (size_t)(sb.sel.indices_capacity > 0 ? sb.sel.indices_capacity : 1);
        indices = malloc(n_idx * 4);
        check_cu(va_cuMemcpyDtoH(counts, sb.counts, (size_t)nq * 4), "download");
        check_cu(va_cuMemcpyDtoH(offsets, sb.offsets, (size_t)(nq + 1) * 8), "download");
        check_cu(va_cuMemcpyDtoH(indices, sb.indices, n_idx * 4), "download");
    }
    size_t n_out = (size_t)rows * a.head_dim;
    uint16_t *out = malloc(n_out * 2);
    double *ref = malloc(n_out * sizeof(double));
    check_cu(va_cuMemcpyDtoH(out, (CUdeviceptr)a.o, n_out * 2), "download");
    h.batch = 1, h.heads_q = 1, h.heads_kv = 1, h.seq_q = rows;
    h.q = p->host_q + q_off, h.k = p->host_k, h.v = p->host_v;
    va_ref_attention(&h, NULL, counts, offsets, indices, ref, NULL);
    int64_t stride[3] = {0, 0, a.o_stride[2]};
    double err = va_ref_rel_l2(out, a.dtype, stride, ref, 1, 1, rows, a.head_dim);
    if (!(err <= 1e-2)) {
        fprintf(stderr, "vecattn-bench: correctness check failed (rel L2 %.3g > 1e-2); not timing\n", err);
        exit(2);
    }
    if (!dense) free_selection(&sb);
    free(counts), free(offsets), free(indices), free(out), free(ref);
}

/* ---- cases ---------------------------------------------------------------------------- */

static double attention_flops(const vecattn_prefill_args *a, double kept_fraction) {
    double pairs = (double)a->seq_q * a->seq_k * (a->causal ? 0.5 : 1.0);
    return 4.0 * a->batch * a->heads_q * pairs * a->head_dim * kept_fraction;
}

/* Device workspace of a prefill of `a` (what target 6 of the speed issue bounds). */
static double workspace_mib(vecattn_ctx *ctx, const vecattn_prefill_args *a) {
    size_t bytes = 0;
    check_va(ctx, vecattn_prefill_workspace_size(a, &bytes), "vecattn_prefill_workspace_size");
    return (double)bytes / (1024.0 * 1024.0);
}

/* One line and one CSV row per case. `total_ms - attn_ms` is what a prefill costs beyond
** the attention over CSR lists: its one-pass selection into bit masks plus the attention
** kernel's mask decode (bench/NOTES.md separates the two with ncu), next to `sel_ms`, the CSR
** API's count, scan and fill. */
static void report(FILE *csv, vecattn_ctx *ctx, const vecattn_prefill_args *a, const char *mode, float p,
                   float sparsity, float sel_ms, float attn_ms, float total_ms, float dense_ms) {
    double tflops = attention_flops(a, 1.0 - sparsity) / (attn_ms * 1e-3) / 1e12;
    double ws = workspace_mib(ctx, a);
    printf("%-6s S=%-6d H=%d/%d D=%d %s p=%-9.6g sparsity=%.3f select=%.3f ms (in prefill %.3f) attention=%.3f ms "
           "total=%.3f ms (%.0f TFLOP/s on kept pairs, %.2fx dense) workspace %.0f MiB\n",
           mode, a->seq_q, a->heads_q, a->heads_kv, a->head_dim, a->causal ? "causal" : "non-causal", p, sparsity,
           sel_ms, total_ms - attn_ms, attn_ms, total_ms, tflops, dense_ms / total_ms, ws);
    if (csv)
        fprintf(csv, "vecattn,%s,%d,%d,%d,%d,%d,%d,%s,%g,%.5f,%.4f,%.4f,%.4f,%.1f,%.4f,%.1f\n", mode, a->batch,
                a->heads_q, a->heads_kv, a->seq_q, a->head_dim, a->causal, a->dtype == VECATTN_BF16 ? "bf16" : "fp16",
                p, sparsity, sel_ms, attn_ms, total_ms, tflops, total_ms - attn_ms, ws);
}

static void run_seq(vecattn_ctx *ctx, timer *t, const options *o, int seq, FILE *csv) {
    problem p;
    make_problem(&p, o, seq);
    vecattn_prefill_args dense = p.args;
    dense.dense = 1;
    check_slice(ctx, &p, &dense);
    float dense_ms = time_median(ctx, t, &dense, RUN_PREFILL, NULL, o->samples);
    report(csv, ctx, &dense, "dense", 0.0f, 0.0f, 0.0f, dense_ms, dense_ms, dense_ms);
    for (int s = 0; s < o->n_sparsities; ++s) {
        vecattn_prefill_args a = p.args;
        float got;
        a.threshold = find_threshold(ctx, a, o->sparsities[s], &got);
        check_slice(ctx, &p, &a);
        stage_buffers sb;
        alloc_selection(ctx, &a, &sb);
        float sel_ms = time_median(ctx, t, &a, RUN_SELECT, &sb, o->samples);
        float attn_ms = time_median(ctx, t, &a, RUN_ATTENTION, &sb, o->samples);
        float total_ms = time_median(ctx, t, &a, RUN_PREFILL, &sb, o->samples);
        char mode[32];
        snprintf(mode, sizeof mode, o->pq && o->pq != 64 ? "sparse-pq%d" : "sparse", o->pq);
        report(csv, ctx, &a, mode, a.threshold, got, sel_ms, attn_ms, total_ms, dense_ms);
        free_selection(&sb);
    }
    free_problem(&p);
}

int va_bench_accuracy(int argc, char **argv); /* accuracy.c */

int main(int argc, char **argv) {
    for (int i = 1; i < argc; ++i)
        if (!strcmp(argv[i], "--accuracy")) return va_bench_accuracy(argc, argv);
    options o = parse_options(argc, argv);
    vecattn_ctx *ctx = open_context();
    FILE *csv = NULL;
    if (o.csv) {
        csv = fopen(o.csv, "a");
        if (!csv) die("cannot open", o.csv);
        if (ftell(csv) == 0)
            fprintf(csv, "impl,mode,batch,heads_q,heads_kv,seq,head_dim,causal,dtype,threshold,sparsity,"
                         "select_ms,attention_ms,total_ms,tflops_kept,select_in_prefill_ms,workspace_mib\n");
    }
    timer t = make_timer();
    for (int i = 0; i < o.n_seqs; ++i) run_seq(ctx, &t, &o, o.seqs[i], csv);
    if (csv) fclose(csv);
    vecattn_destroy(ctx);
    return 0;
}
