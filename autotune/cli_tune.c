/*
** cli_tune.c -- `vecattn-autotune tune`: measure the tile configurations on this GPU and
** store the fastest per shape bucket in the cache. The engine is autotune/tuner.c; this file
** is flags, the summary table and the JSON report.
**
** Exit codes: 0 every entry tuned (or out of the data's reach), 1 usage, 2 runtime failure
** (no GPU, a failed entry, the cache not writable).
*/
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "autotune/cli_cache.h" /* provides: va_cli_int */
#include "autotune/tuner.h"

enum { TUNE_OK = 0, TUNE_USAGE = 1, TUNE_FAIL = 2, TUNE_CONTINUE = -1 };

static const char tune_usage[] =
    "usage: vecattn-autotune tune [flags]\n"
    "\n"
    "Tunes the tile configurations of the selection and attention kernels on this GPU, per\n"
    "shape bucket (Sk a power of two 4K..128K; for attention also the kept fraction: > 50%\n"
    "(dense mode), 20-50%, 5-20%, < 5%), on video-like inputs, and stores the fastest of\n"
    "each bucket in the cache. Every candidate is checked against the default config first.\n"
    "Progress goes to stderr.\n"
    "\n"
    "  --head-dim D     64 | 128 (default 128)\n"
    "  --pq N           query block size (default 64)\n"
    "  --bk N           key slice size (default 16)\n"
    "  --gk N           slices per selection tile (default 16)\n"
    "  --causal         causal (default) | --non-causal\n"
    "  --dtype T        bf16 (default) | fp16\n"
    "  --seq LIST       Sk values, e.g. 8192,32K (default: by mode)\n"
    "  --quick          Sk 8K and 32K, selection + attention at 5-20% kept, short timing\n"
    "  --full           Sk 4K..128K, selection + attention in all four kept buckets\n"
    "                   (default mode: Sk 4K..128K, selection + attention dense and 5-20%)\n"
    "  --buckets LIST   attention kept buckets to tune, from 0 1 2 3 (default: by mode)\n"
    "  --heads N        heads of the tuning problem (default: 32 up to 32K, then fewer)\n"
    "  --time-budget S  stop starting new work after S seconds (default: none)\n"
    "  --device N       CUDA device ordinal (default 0)\n"
    "  --cache PATH     the cache file (default: VECATTN_CACHE, else the user cache dir)\n"
    "  --json           print a machine-readable report to stdout\n"
    "Exit codes: 0 ok, 1 usage error, 2 runtime failure.\n";

typedef struct tune_cli {
    va_tuner_options o;
    int device, json;
} tune_cli;

/* ---- flags ---------------------------------------------------------------------------------- */

/* "8192,32K,128k" -> seqs; K means 1024. */
static int parse_seqs(const char *s, int *out, int max, int *n) {
    *n = 0;
    for (const char *p = s; *p;) {
        char *end;
        long v = strtol(p, &end, 10);
        if (end == p || v <= 0) return 0;
        if (*end == 'K' || *end == 'k') v *= 1024, ++end;
        if ((*end && *end != ',') || v > (1 << 30) || *n == max) return 0;
        out[(*n)++] = (int)v;
        p = *end ? end + 1 : end;
    }
    return *n > 0;
}

static int parse_buckets(const char *s, int *out, int *n) {
    *n = 0;
    for (const char *p = s; *p; p += *p == ',') {
        if (*p < '0' || *p > '3' || *n == 4) return 0;
        out[(*n)++] = *p++ - '0';
        if (*p && *p != ',') return 0;
    }
    return *n > 0;
}

/* The values of the valued flags, in the order of parse_value's table. */
enum { F_HEAD_DIM, F_PQ, F_BK, F_GK, F_HEADS, F_DEVICE, F_DTYPE, F_SEQ, F_BUCKETS, F_TIME_BUDGET, F_COUNT };

static int parse_value(tune_cli *c, int flag, const char *name, const char *v) {
    va_tuner_options *o = &c->o;
    int ok = 1;
    switch (flag) {
    case F_HEAD_DIM: ok = va_cli_int(v, 1, 1 << 16, &o->head_dim); break;
    case F_PQ: ok = va_cli_int(v, 1, 1 << 16, &o->pq); break;
    case F_BK: ok = va_cli_int(v, 1, 1 << 16, &o->bk); break;
    case F_GK: ok = va_cli_int(v, 1, 1 << 24, &o->gk); break;
    case F_HEADS: ok = va_cli_int(v, 1, 4096, &o->heads); break;
    case F_DEVICE: ok = va_cli_int(v, 0, 1 << 16, &c->device); break;
    case F_DTYPE: ok = va_dtype_parse(v, &o->dtype); break;
    case F_SEQ: ok = parse_seqs(v, o->seqs, VA_TUNER_MAX_SEQS, &o->n_seqs); break;
    case F_BUCKETS: ok = parse_buckets(v, o->buckets, &o->n_buckets); break;
    case F_TIME_BUDGET: {
        char *end;
        o->time_budget_s = strtod(v, &end);
        ok = end != v && !*end && o->time_budget_s > 0.0;
        break;
    }
    }
    return ok ? TUNE_CONTINUE : va_cli_usage("tune", "bad value '%s' for %s", v, name);
}

/* The library's own argument check on one problem of the plan, so that a bad --pq or
** --head-dim is a usage error before any GPU work. The pointers are placeholders: the
** check never dereferences them. */
static int check_settings(const va_tuner_options *o) {
    vecattn_prefill_args a;
    vecattn_prefill_args_init(&a);
    a.head_dim = o->head_dim, a.pq = o->pq, a.bk = o->bk, a.gk = o->gk, a.causal = o->causal, a.dtype = o->dtype;
    a.batch = 1, a.heads_q = a.heads_kv = 1;
    static _Alignas(16) unsigned char placeholder[16];
    a.q = a.k = a.v = a.o = placeholder;
    char msg[512];
    for (int i = 0; i < o->n_seqs; ++i) {
        a.seq_q = a.seq_k = o->seqs[i];
        vecattn_set_contiguous_bhsd(&a);
        if (vecattn_check_prefill_args(&a, msg, sizeof msg) != VECATTN_OK) return va_cli_usage("tune", "%s", msg);
    }
    return TUNE_CONTINUE;
}

/* --cache goes to VECATTN_CACHE (va_cli_parse), which vecattn_create reads. */
static int parse_tune(int argc, char **argv, tune_cli *c) {
    static const char *const names[F_COUNT] = {"--head-dim", "--pq",  "--bk",  "--gk",      "--heads",
                                               "--device",   "--dtype", "--seq", "--buckets", "--time-budget"};
    for (int i = 0; i < argc; ++i)
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) return fputs(tune_usage, stdout), TUNE_OK;
    const char *values[F_COUNT] = {NULL};
    int causal = 0, non_causal = 0, quick = 0, full = 0, json = 0;
    va_cli_opt opts[F_COUNT + 6];
    for (int f = 0; f < F_COUNT; ++f) opts[f] = (va_cli_opt){names[f], &values[f], NULL};
    opts[F_COUNT + 0] = (va_cli_opt){"--causal", NULL, &causal};
    opts[F_COUNT + 1] = (va_cli_opt){"--non-causal", NULL, &non_causal};
    opts[F_COUNT + 2] = (va_cli_opt){"--quick", NULL, &quick};
    opts[F_COUNT + 3] = (va_cli_opt){"--full", NULL, &full};
    opts[F_COUNT + 4] = (va_cli_opt){"--json", NULL, &json};
    opts[F_COUNT + 5] = (va_cli_opt){NULL, NULL, NULL};
    int rc = va_cli_parse("tune", argc, argv, opts, NULL, 0);
    if (rc != VA_CLI_CONTINUE) return rc;
    if (quick && full) return va_cli_usage("tune", "--quick and --full exclude each other");
    if (causal && non_causal) return va_cli_usage("tune", "--causal and --non-causal exclude each other");
    memset(c, 0, sizeof *c);
    /* the mode first: it sets the defaults the other flags change */
    va_tuner_defaults(&c->o, quick ? VA_TUNER_QUICK : full ? VA_TUNER_FULL : VA_TUNER_DEFAULT);
    if (causal || non_causal) c->o.causal = causal;
    c->json = json;
    for (int f = 0; f < F_COUNT; ++f)
        if (values[f] && (rc = parse_value(c, f, names[f], values[f])) != TUNE_CONTINUE) return rc;
    return check_settings(&c->o);
}

/* ---- output ----------------------------------------------------------------------------------- */

static void print_table(const va_tuner_report *rep) {
    printf("%-9s %7s %4s %6s %9s  %-32s %10s %10s %7s %8s  %s\n", "stage", "Sk", "H", "kept", "p", "best tiles",
           "best ms", "default ms", "speedup", "TFLOP/s", "status");
    for (int i = 0; i < rep->n; ++i) {
        const va_tuner_entry *e = &rep->entries[i];
        const va_tune_result *r = e->result;
        int sel = e->key.stage == VA_STAGE_SELECTION;
        char kept[16] = "-";
        if (!sel) snprintf(kept, sizeof kept, "%.1f%%", 100.0 * e->kept);
        printf("%-9s %7d %4d %6s %9.4g  ", sel ? "selection" : "attention", e->seq, e->heads, kept,
               e->dense ? 0.0 : e->threshold);
        if (r && r->best >= 0) {
            double b = r->cand[r->best].timing.median_ms, d = r->cand[r->reference].timing.median_ms;
            printf("%-32s %10.4f %10.4f %6.2fx %8.1f  %s%s\n", r->cand[r->best].tiles, b, d, d / b, r->value.tflops,
                   e->status, r->stored ? "" : " (not stored)");
        } else {
            printf("%-32s %10s %10s %7s %8s  %s%s%s\n", "-", "-", "-", "-", "-", e->status, e->why[0] ? ": " : "",
                   e->why);
        }
    }
}

static cJSON *candidate_json(const va_tune_candidate *c) {
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "tiles", c->tiles);
    cJSON_AddStringToObject(j, "state", va_candidate_state_name(c->state));
    if (c->state == VA_CAND_TIMED) {
        cJSON_AddNumberToObject(j, "time_ms", c->timing.median_ms);
        cJSON_AddNumberToObject(j, "noise", c->timing.noise);
        cJSON_AddNumberToObject(j, "samples", c->timing.samples);
    } else if (c->why[0]) {
        cJSON_AddStringToObject(j, "why", c->why);
    }
    if (c->compile_ms > 0.0) cJSON_AddNumberToObject(j, "compile_ms", c->compile_ms);
    return j;
}

static cJSON *entry_json(const va_tuner_entry *e) {
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "stage", va_stage_name(e->key.stage));
    cJSON_AddNumberToObject(j, "seq_k", e->seq);
    cJSON_AddNumberToObject(j, "seq_bucket", e->key.seq_bucket);
    cJSON_AddNumberToObject(j, "sparsity_bucket", e->key.sparsity_bucket);
    cJSON_AddNumberToObject(j, "heads", e->heads);
    cJSON_AddBoolToObject(j, "dense", e->dense);
    if (e->key.stage == VA_STAGE_ATTENTION) cJSON_AddNumberToObject(j, "kept", e->kept);
    if (!e->dense) cJSON_AddNumberToObject(j, "threshold", e->threshold);
    cJSON_AddStringToObject(j, "status", e->status);
    if (e->why[0]) cJSON_AddStringToObject(j, "why", e->why);
    const va_tune_result *r = e->result;
    if (r && r->best >= 0) {
        const va_tune_candidate *b = &r->cand[r->best], *d = &r->cand[r->reference];
        cJSON_AddStringToObject(j, "best_tiles", b->tiles);
        cJSON_AddNumberToObject(j, "best_ms", b->timing.median_ms);
        cJSON_AddStringToObject(j, "default_tiles", d->tiles);
        cJSON_AddNumberToObject(j, "default_ms", d->timing.median_ms);
        cJSON_AddNumberToObject(j, "speedup", d->timing.median_ms / b->timing.median_ms);
        cJSON_AddNumberToObject(j, "tflops", r->value.tflops);
        cJSON_AddBoolToObject(j, "stored", r->stored);
        cJSON_AddNumberToObject(j, "compile_s", r->compile_s);
        cJSON_AddNumberToObject(j, "measure_s", r->measure_s);
    }
    if (r) {
        cJSON *cands = cJSON_AddArrayToObject(j, "candidates");
        for (int i = 0; i < r->n; ++i) cJSON_AddItemToArray(cands, candidate_json(&r->cand[i]));
    }
    return j;
}

static void print_json(vecattn_ctx *ctx, const tune_cli *c, const va_tuner_report *rep, int rc) {
    vecattn_device_info info;
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "vecattn_version", vecattn_version());
    if (vecattn_get_device_info(ctx, &info) == VECATTN_OK) {
        cJSON *dev = cJSON_AddObjectToObject(root, "device");
        cJSON_AddStringToObject(dev, "name", info.name);
        cJSON_AddNumberToObject(dev, "cc", info.compute_major * 10 + info.compute_minor);
        cJSON_AddNumberToObject(dev, "sm_count", info.sm_count);
        cJSON_AddNumberToObject(root, "driver_version", info.driver_version);
    }
    cJSON_AddStringToObject(root, "nvrtc", va_nvrtc_identity());
    cJSON_AddStringToObject(root, "cache", ctx->cache ? va_cache_path(ctx->cache) : "");
    cJSON *s = cJSON_AddObjectToObject(root, "settings");
    cJSON_AddNumberToObject(s, "head_dim", c->o.head_dim);
    cJSON_AddNumberToObject(s, "pq", c->o.pq);
    cJSON_AddNumberToObject(s, "bk", c->o.bk);
    cJSON_AddNumberToObject(s, "gk", c->o.gk);
    cJSON_AddBoolToObject(s, "causal", c->o.causal);
    cJSON_AddStringToObject(s, "dtype", va_dtype_name(c->o.dtype));
    cJSON_AddBoolToObject(s, "quick", c->o.quick);
    cJSON *entries = cJSON_AddArrayToObject(root, "entries");
    for (int i = 0; i < rep->n; ++i) cJSON_AddItemToArray(entries, entry_json(&rep->entries[i]));
    cJSON_AddNumberToObject(root, "seconds", rep->seconds);
    cJSON_AddBoolToObject(root, "ok", rc == TUNE_OK);
    char *text = cJSON_Print(root);
    if (text) puts(text);
    cJSON_free(text);
    cJSON_Delete(root);
}

/* ---- the command ------------------------------------------------------------------------------- */

int va_cli_tune(int argc, char **argv) {
    tune_cli c;
    int rc = parse_tune(argc, argv, &c);
    if (rc != TUNE_CONTINUE) return rc;
    vecattn_ctx *ctx = NULL;
    vecattn_status st = vecattn_create(&ctx, c.device, NULL, VECATTN_CREATE_DEFAULT);
    if (st != VECATTN_OK) {
        fprintf(stderr, "vecattn-autotune tune: no usable CUDA device %d: %s [%s]\n", c.device, vecattn_errmsg(ctx),
                vecattn_status_string(st));
        vecattn_destroy(ctx);
        return TUNE_FAIL;
    }
    if (!ctx->cache || va_cache_get_mode(ctx->cache) != VA_CACHE_READ_WRITE)
        fprintf(stderr, "vecattn-autotune tune: warning: the cache %s is not writable: results are not kept\n",
                ctx->cache ? va_cache_path(ctx->cache) : "(none)");
    va_tuning_set_auto(ctx, 0); /* tuning is explicit here */
    va_tuner_report rep;
    st = va_tuner_run(ctx, &c.o, &rep);
    rc = st == VECATTN_OK ? TUNE_OK : TUNE_FAIL;
    if (c.json)
        print_json(ctx, &c, &rep, rc);
    else
        print_table(&rep);
    if (st != VECATTN_OK) fprintf(stderr, "vecattn-autotune tune: %s\n", vecattn_errmsg(ctx));
    va_tuner_report_free(&rep);
    vecattn_destroy(ctx);
    return fflush(stdout) == 0 ? rc : TUNE_FAIL;
}
