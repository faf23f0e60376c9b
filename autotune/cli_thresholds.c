/*
** cli_thresholds.c -- `vecattn-autotune thresholds`: one threshold per head from dumped
** per-layer Q/K, by bisection to a recall target and DP to a mean sparsity target
** (autotune/thresholds.h), measured on the GPU (autotune/recall.h); and
** `--make-demo-qk DIR`, which writes video-like per-layer Q/K to try it without a model.
**
** Exit codes: 0 done (also when the target was out of reach: the file says feasible false),
** 1 usage, 2 runtime failure (no GPU, unreadable files).
*/
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "autotune/cli_cache.h"
#include "autotune/recall.h"
#include "autotune/thresholds.h"
#include "autotune/videodata.h"
#include "cache/thresholds_json.h"
#include "runtime/runtime.h"

static const char *const CMD = "thresholds";

static const char usage_text[] =
    "usage: vecattn-autotune thresholds --qk DIR --target-sparsity S --recall R [flags]\n"
    "       vecattn-autotune thresholds --make-demo-qk DIR [--layers N] [--heads H] [--seq S]\n"
    "\n"
    "One threshold per (layer, head) for video diffusion models, as the method tunes them:\n"
    "per head, bisection (14 steps on ln p) to the largest p whose attention-mass recall\n"
    "reaches R, then 13 samples p * 0.9^k (k = -4..8) and a grid from 1e-4 to 1; then dynamic\n"
    "programming over all heads of all layers picks one sample per head so that the mean\n"
    "sparsity is >= S with the largest total recall (state: the running mean sparsity to\n"
    "1e-4, with the exact sum carried along). Recall is the share of\n"
    "each query's softmax mass inside its kept keys, measured on the GPU from the kernels'\n"
    "log-sum-exps. The result is a JSON file read by vecattn_load_thresholds() (C) and\n"
    "vecattn.load_thresholds() (Python): \"thresholds\" is [layers][heads].\n"
    "\n"
    "Input: DIR/layer0_q.npy, DIR/layer0_k.npy, DIR/layer1_q.npy, ... (layers counted from 0\n"
    "until a file is missing), each [H, S, D] or [B, H, S, D]: float16, float32, or bfloat16\n"
    "bits as uint16/int16 (torch: t.view(torch.int16)). Q heads may be a multiple of K heads.\n"
    "Dump them from one denoising step of a few prompts' worth of tokens.\n"
    "\n"
    "Flags:\n"
    "  --qk DIR              the dumped Q/K (required)\n"
    "  --target-sparsity S   mean sparsity to reach, in (0, 1) (required)\n"
    "  --recall R            per-head recall target of the bisection, in (0, 1] (required)\n"
    "  --out FILE            output (default thresholds-S<S>-R<R>.json)\n"
    "  --pq N --bk N --gk N  selection blocking (default 64, 16, 16)\n"
    "  --causal | --non-causal  (default --non-causal: DiT attention is not causal)\n"
    "  --dtype bf16|fp16     compute type the arrays are converted to (default bf16)\n"
    "  --layers A-B          only these layers (default all)\n"
    "  --device N            CUDA device (default 0)\n"
    "\n"
    "--make-demo-qk DIR: write video-like Q/K (autotune/videodata.h, heads differing in how\n"
    "peaked they are) as bfloat16 .npy: --layers N (default 2), --heads H (default 8),\n"
    "--seq S (default 8192), --head-dim D (default 128).\n";

typedef struct options {
    const char *qk, *target, *recall, *out, *pq, *bk, *gk, *dtype, *layers, *device, *demo, *heads, *seq, *dim;
    int causal, non_causal;
} options;

static int parse_double_in(const char *s, double lo, double hi, int hi_open, double *out) {
    char *end;
    errno = 0;
    double v = s ? strtod(s, &end) : NAN;
    if (!s || errno || end == s || *end || !(v > lo) || v > hi || (hi_open && v >= hi)) return -1;
    *out = v;
    return 0;
}

/* ---- the demo data ------------------------------------------------------------------------ */

/* An .npy (version 1.0) of bfloat16 bits as '<u2', shape [H, S, D]. */
static int write_npy_u2(const char *path, const uint16_t *data, int h, int s, int d) {
    char dict[128];
    int n = snprintf(dict, sizeof dict, "{'descr': '<u2', 'fortran_order': False, 'shape': (%d, %d, %d), }", h, s, d);
    int total = 10 + n + 1, pad = (64 - total % 64) % 64;
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    unsigned short header_len = (unsigned short)(n + pad + 1);
    unsigned char prefix[10] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, (unsigned char)(header_len & 0xFF),
                                (unsigned char)(header_len >> 8)};
    int ok = fwrite(prefix, 1, 10, f) == 10 && fwrite(dict, 1, (size_t)n, f) == (size_t)n;
    for (int i = 0; ok && i < pad; ++i) ok = fputc(' ', f) != EOF;
    ok = ok && fputc('\n', f) != EOF;
    size_t count = (size_t)h * s * d;
    ok = ok && fwrite(data, 2, count, f) == count; /* little-endian hosts only (x86-64, arm64) */
    return fclose(f) == 0 && ok ? 0 : -1;
}

static int make_demo(const options *o) {
    int layers = 2, heads = 8, seq = 8192, dim = 128;
    if ((o->layers && !va_cli_int(o->layers, 1, 1000, &layers)) || (o->heads && !va_cli_int(o->heads, 1, 256, &heads)) ||
        (o->seq && !va_cli_int(o->seq, 64, 1 << 20, &seq)) || (o->dim && !va_cli_int(o->dim, 64, 128, &dim)) ||
        (dim != 64 && dim != 128))
        return va_cli_usage(CMD, "--layers, --heads, --seq or --head-dim out of range (head dim 64 or 128)");
    if (mkdir(o->demo, 0777) != 0 && errno != EEXIST) return va_cli_failure(CMD, "cannot create %s", o->demo);
    vecattn_prefill_args a;
    vecattn_prefill_args_init(&a);
    a.batch = 1, a.heads_q = a.heads_kv = heads, a.seq_q = a.seq_k = seq, a.head_dim = dim;
    vecattn_set_contiguous_bhsd(&a);
    size_t count = (size_t)heads * seq * dim;
    uint16_t *q = malloc(count * 2), *k = malloc(count * 2);
    int rc = q && k ? VA_CLI_OK : va_cli_failure(CMD, "out of memory");
    for (int l = 0; rc == VA_CLI_OK && l < layers; ++l) {
        va_video_params vp;
        va_video_defaults(&vp);
        vp.seed = 1000 + (uint64_t)l;
        vp.head_variation = 0.6f; /* heads that differ, as real layers do */
        char qp[4096], kp[4096];
        snprintf(qp, sizeof qp, "%s/layer%d_q.npy", o->demo, l);
        snprintf(kp, sizeof kp, "%s/layer%d_k.npy", o->demo, l);
        if (va_video_fill(&a, q, k, NULL, &vp) != 0 || write_npy_u2(qp, q, heads, seq, dim) != 0 ||
            write_npy_u2(kp, k, heads, seq, dim) != 0)
            rc = va_cli_failure(CMD, "cannot write layer %d into %s", l, o->demo);
        else
            fprintf(stderr, "thresholds: wrote %s, %s\n", qp, kp);
    }
    free(q), free(k);
    return rc;
}

/* ---- tuning ------------------------------------------------------------------------------ */

typedef struct plan {
    vecattn_prefill_args base;   /* blocking, causal, dtype */
    double target, recall;
    int first, last;             /* layers */
    const char *dir, *out;
    int device;
} plan;

typedef struct layer_eval {
    va_recall *r;
    int heads, evals;
    va_recall_stats *stats;
} layer_eval;

static vecattn_status eval_heads(void *user, const float *thresholds, double *sparsity, double *recall) {
    layer_eval *e = user;
    vecattn_status st = va_recall_measure(e->r, thresholds, e->stats, NULL);
    for (int h = 0; st == VECATTN_OK && h < e->heads; ++h) sparsity[h] = e->stats[h].sparsity, recall[h] = e->stats[h].recall;
    e->evals++;
    return st;
}

static int layer_exists(const char *dir, int l) {
    char p[4096];
    struct stat sb;
    snprintf(p, sizeof p, "%s/layer%d_q.npy", dir, l);
    return stat(p, &sb) == 0;
}

/* Load, upload and search one layer; options[heads] filled. */
static int tune_layer(vecattn_ctx *ctx, const plan *pl, int l, int *heads_io, va_thr_options **options_out) {
    char qp[4096], kp[4096], msg[512];
    snprintf(qp, sizeof qp, "%s/layer%d_q.npy", pl->dir, l);
    snprintf(kp, sizeof kp, "%s/layer%d_k.npy", pl->dir, l);
    vecattn_prefill_args a = pl->base;
    uint16_t *q = NULL, *k = NULL, *v = NULL;
    va_npy_status ns = va_npy_load_qkv(qp, kp, kp, a.dtype, &a, &q, &k, &v, msg, sizeof msg);
    free(v);
    if (ns != VA_NPY_OK) return va_cli_failure(CMD, "%s", msg);
    if (*heads_io && *heads_io != a.heads_q * a.batch) {
        free(q), free(k);
        return va_cli_failure(CMD, "layer %d has %d heads, layer %d had %d", l, a.heads_q * a.batch, pl->first, *heads_io);
    }
    size_t qb = (size_t)a.batch * a.heads_q * a.seq_q * a.head_dim * 2, kb = (size_t)a.batch * a.heads_kv * a.seq_k * a.head_dim * 2;
    CUdeviceptr dq = 0, dk = 0;
    int rc = VA_CLI_OK;
    if (va_cuMemAlloc(&dq, qb) != CUDA_SUCCESS || va_cuMemAlloc(&dk, kb) != CUDA_SUCCESS ||
        va_cuMemcpyHtoD(dq, q, qb) != CUDA_SUCCESS || va_cuMemcpyHtoD(dk, k, kb) != CUDA_SUCCESS)
        rc = va_cli_failure(CMD, "layer %d: cannot upload Q/K (%.1f MiB)", l, (qb + kb) / 1048576.0);
    free(q), free(k);
    a.q = (const void *)dq, a.k = (const void *)dk;
    int heads = a.batch * a.heads_q; /* a batch of dumps counts as more heads of the layer */
    layer_eval e = {NULL, a.heads_q, 0, calloc((size_t)a.heads_q, sizeof(va_recall_stats))};
    va_thr_options *options = calloc((size_t)heads, sizeof *options);
    if (rc == VA_CLI_OK && a.batch != 1) rc = va_cli_failure(CMD, "layer %d: use [H, S, D] arrays (batch 1)", l);
    vecattn_status st = VECATTN_OK;
    if (rc == VA_CLI_OK && (st = va_recall_open(ctx, &a, NULL, &e.r)) != VECATTN_OK)
        rc = va_cli_failure(CMD, "layer %d: %s", l, va_recall_errmsg(e.r));
    if (rc == VA_CLI_OK && (st = va_thr_search_layer(heads, pl->recall, eval_heads, &e, options)) != VECATTN_OK)
        rc = va_cli_failure(CMD, "layer %d: %s", l, va_recall_errmsg(e.r));
    va_recall_close(e.r);
    free(e.stats);
    if (dq) va_cuMemFree(dq);
    if (dk) va_cuMemFree(dk);
    if (rc != VA_CLI_OK) {
        free(options);
        return rc;
    }
    *heads_io = heads;
    *options_out = options;
    return VA_CLI_OK;
}

static void print_summary(const plan *pl, int layers, int heads, const float *th, const double *sp, const double *rc,
                          int feasible, double mean_sp, double mean_rc) {
    printf("%-6s %-22s %-10s %-10s\n", "layer", "threshold min..max", "sparsity", "recall min");
    for (int l = 0; l < layers; ++l) {
        float tmin = 1.0f, tmax = 0.0f;
        double s = 0.0, rmin = 1.0;
        for (int h = 0; h < heads; ++h) {
            int i = l * heads + h;
            tmin = fminf(tmin, th[i]), tmax = fmaxf(tmax, th[i]), s += sp[i], rmin = fmin(rmin, rc[i]);
        }
        printf("%-6d %-9.6g .. %-9.6g  %-10.4f %-10.4f\n", pl->first + l, tmin, tmax, s / heads, rmin);
    }
    printf("mean sparsity %.4f (target %.4f%s), mean recall %.4f\n", mean_sp, pl->target,
           feasible ? "" : ", NOT reached: the sparsest choice was written", mean_rc);
}

static int run_tuning(const plan *pl) {
    vecattn_ctx *ctx = NULL;
    vecattn_status st = vecattn_create(&ctx, pl->device, NULL, VECATTN_CREATE_DEFAULT);
    if (st != VECATTN_OK) {
        int rc = va_cli_failure(CMD, "%s", vecattn_errmsg(ctx));
        vecattn_destroy(ctx);
        return rc;
    }
    va_cuCtxPushCurrent(ctx->primary);
    int n_layers = pl->last - pl->first + 1, heads = 0, rc = VA_CLI_OK;
    va_thr_options *all = NULL;
    time_t start = time(NULL);
    for (int l = 0; rc == VA_CLI_OK && l < n_layers; ++l) {
        va_thr_options *opts = NULL;
        rc = tune_layer(ctx, pl, pl->first + l, &heads, &opts);
        if (rc != VA_CLI_OK) break;
        va_thr_options *grown = realloc(all, sizeof *all * (size_t)heads * (l + 1));
        if (!grown) {
            free(opts);
            rc = va_cli_failure(CMD, "out of memory");
            break;
        }
        all = grown;
        memcpy(all + (size_t)heads * l, opts, sizeof *opts * heads);
        free(opts);
        double spent = difftime(time(NULL), start);
        fprintf(stderr, "thresholds: layer %d done (%d/%d), %d heads, %.0f s, ETA %.0f s\n", pl->first + l, l + 1,
                n_layers, heads, spent, spent / (l + 1) * (n_layers - l - 1));
    }
    int n = heads * n_layers;
    int *choice = rc == VA_CLI_OK ? malloc(sizeof(int) * n) : NULL;
    float *th = rc == VA_CLI_OK ? malloc(sizeof(float) * n) : NULL;
    double *sp = rc == VA_CLI_OK ? malloc(sizeof(double) * n) : NULL, *rcl = rc == VA_CLI_OK ? malloc(sizeof(double) * n) : NULL;
    double mean_sp = 0.0, mean_rc = 0.0;
    int feasible = -1;
    if (rc == VA_CLI_OK && choice && th && sp && rcl) feasible = va_thr_dp(all, n, pl->target, choice, &mean_sp, &mean_rc);
    if (rc == VA_CLI_OK && feasible < 0) rc = va_cli_failure(CMD, "out of memory");
    if (rc == VA_CLI_OK) {
        for (int i = 0; i < n; ++i)
            th[i] = all[i].threshold[choice[i]], sp[i] = all[i].sparsity[choice[i]], rcl[i] = all[i].recall[choice[i]];
        va_thresholds_doc doc = {n_layers, heads, pl->base.pq, pl->base.bk, pl->base.gk, pl->base.causal,
                                 pl->target, pl->recall, mean_sp, mean_rc, feasible, th, sp, rcl};
        char msg[512];
        if (va_thresholds_write(pl->out, &doc, msg, sizeof msg) != VECATTN_OK) rc = va_cli_failure(CMD, "%s", msg);
        else {
            print_summary(pl, n_layers, heads, th, sp, rcl, feasible, mean_sp, mean_rc);
            printf("wrote %s\n", pl->out);
        }
    }
    free(all), free(choice), free(th), free(sp), free(rcl);
    CUcontext popped;
    va_cuCtxPopCurrent(&popped);
    vecattn_destroy(ctx);
    return rc;
}

static int make_plan(const options *o, plan *pl, char *out_buf, size_t out_size) {
    memset(pl, 0, sizeof *pl);
    vecattn_prefill_args_init(&pl->base);
    pl->base.causal = o->causal && !o->non_causal;
    if (o->causal && o->non_causal) return va_cli_usage(CMD, "--causal and --non-causal together");
    if (!o->qk) return va_cli_usage(CMD, "--qk DIR is required (or --make-demo-qk DIR)");
    if (!o->target || parse_double_in(o->target, 0.0, 1.0, 1, &pl->target))
        return va_cli_usage(CMD, "--target-sparsity: a number in (0, 1) is required");
    if (!o->recall || parse_double_in(o->recall, 0.0, 1.0, 0, &pl->recall))
        return va_cli_usage(CMD, "--recall: a number in (0, 1] is required");
    if ((o->pq && !va_cli_int(o->pq, 16, 128, &pl->base.pq)) || (o->bk && !va_cli_int(o->bk, 8, 128, &pl->base.bk)) ||
        (o->gk && !va_cli_int(o->gk, 1, 1 << 30, &pl->base.gk)) || (o->device && !va_cli_int(o->device, 0, 1023, &pl->device)))
        return va_cli_usage(CMD, "--pq, --bk, --gk or --device is not a number in range");
    if (o->dtype && strcmp(o->dtype, "bf16") && strcmp(o->dtype, "fp16"))
        return va_cli_usage(CMD, "--dtype %s: use bf16 or fp16", o->dtype);
    pl->base.dtype = o->dtype && !strcmp(o->dtype, "fp16") ? VECATTN_FP16 : VECATTN_BF16;
    pl->dir = o->qk;
    int count = 0;
    while (layer_exists(pl->dir, count)) ++count;
    if (count == 0) return va_cli_failure(CMD, "%s/layer0_q.npy: no such file (see --help for the layout)", pl->dir);
    pl->first = 0, pl->last = count - 1;
    if (o->layers && (sscanf(o->layers, "%d-%d", &pl->first, &pl->last) != 2 || pl->first < 0 || pl->last < pl->first ||
                      pl->last >= count))
        return va_cli_usage(CMD, "--layers %s: use A-B within 0-%d", o->layers, count - 1);
    snprintf(out_buf, out_size, "thresholds-S%g-R%g.json", pl->target, pl->recall);
    pl->out = o->out ? o->out : out_buf;
    return VA_CLI_CONTINUE;
}

int va_cli_thresholds(int argc, char **argv) {
    for (int i = 0; i < argc; ++i)
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            fputs(usage_text, stdout);
            return VA_CLI_OK;
        }
    options o = {0};
    const va_cli_opt opts[] = {
        {"--qk", &o.qk, NULL}, {"--target-sparsity", &o.target, NULL}, {"--recall", &o.recall, NULL},
        {"--out", &o.out, NULL}, {"--pq", &o.pq, NULL}, {"--bk", &o.bk, NULL}, {"--gk", &o.gk, NULL},
        {"--dtype", &o.dtype, NULL}, {"--layers", &o.layers, NULL}, {"--device", &o.device, NULL},
        {"--make-demo-qk", &o.demo, NULL}, {"--heads", &o.heads, NULL}, {"--seq", &o.seq, NULL},
        {"--head-dim", &o.dim, NULL}, {"--causal", NULL, &o.causal}, {"--non-causal", NULL, &o.non_causal},
        {NULL, NULL, NULL}};
    int rc = va_cli_parse(CMD, argc, argv, opts, NULL, 0);
    if (rc != VA_CLI_CONTINUE) return rc;
    if (o.demo) return make_demo(&o);
    plan pl;
    char out_buf[256];
    if ((rc = make_plan(&o, &pl, out_buf, sizeof out_buf)) != VA_CLI_CONTINUE) return rc;
    return run_tuning(&pl);
}
