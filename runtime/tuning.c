/*
** tuning.c -- which tile configuration a problem runs with.
**
** va_choose_spec, in this order:
**   1. a spec forced with va_force_spec (the autotuner times its candidates this way, so
**      they run through the same launch path as any prefill);
**   2. a choice this context already made for the same key: a prefill does not query
**      SQLite on every call (a context therefore sees entries tuned by other processes
**      only for keys it has not used yet);
**   3. the persistent cache: va_cache_lookup_tuned tries the exact bucket, the nearest
**      bucket of the same device, then the same compute capability; the row's tiles are
**      parsed onto the default spec (so the semantic parameters can never change) and
**      validated;
**   4. the built-in heuristic default of codegen/spec.c.
** Each step is logged under VECATTN_LOG=debug ("exact: miss", "nearest bucket: hit", ...).
** With VECATTN_AUTOTUNE=1 (read at the context's first choice), a key without an exact
** entry is tuned first, in quick mode, on the caller's own inputs, and looked up again.
** That call waits for the device (cuCtxSynchronize) and takes seconds: run a warm-up
** prefill before capturing a CUDA graph.
*/
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/autotune.h"

/* ---- buckets and keys ------------------------------------------------------------------- */

int va_tune_seq_bucket(int seq_k) {
    int b = seq_k > 0 ? (int)lround(log2((double)seq_k)) : 12;
    return b < 12 ? 12 : b > 17 ? 17 : b;
}

int va_tune_sparsity_bucket(double kept) { return kept > 0.5 ? 0 : kept > 0.2 ? 1 : kept >= 0.05 ? 2 : 3; }

double va_tune_bucket_kept(int bucket) {
    static const double kept[4] = {1.0, 0.33, 0.11, 0.025};
    return kept[bucket < 0 ? 0 : bucket > 3 ? 3 : bucket];
}

int va_tune_hint_bucket(double sparsity_hint) {
    return sparsity_hint < 0.0 ? 2 : va_tune_sparsity_bucket(1.0 - sparsity_hint);
}

void va_tune_key_init(const vecattn_ctx *ctx, va_kernel_kind kind, const vecattn_prefill_args *a, int sparsity_bucket,
                      va_tune_key *key) {
    memset(key, 0, sizeof *key); /* keys are compared with memcmp: no stray padding bytes */
    key->device.cc = ctx->arch;
    key->device.sm_count = ctx->sm_count;
    if (va_cuDeviceGetName) va_cuDeviceGetName(key->device.name, (int)sizeof key->device.name, ctx->device);
    key->dtype = a->dtype;
    key->head_dim = a->head_dim;
    key->pq = kind == VA_KERNEL_ATTENTION ? va_attention_pq(a) : a->pq, key->bk = a->bk, key->gk = a->gk;
    key->causal = a->causal ? 1 : 0;
    key->stage = kind == VA_KERNEL_SELECT ? VA_STAGE_SELECTION : VA_STAGE_ATTENTION;
    key->seq_bucket = va_tune_seq_bucket(a->seq_k);
    key->sparsity_bucket = kind == VA_KERNEL_SELECT ? -1 : sparsity_bucket;
}

void va_tune_key_describe(const va_tune_key *k, char *buf, size_t size) {
    int n = snprintf(buf, size, "%s d%d pq%d bk%d gk%d %s %s Sk 2^%d",
                     k->stage == VA_STAGE_SELECTION ? "selection" : "attention", k->head_dim, k->pq, k->bk, k->gk,
                     k->causal ? "causal" : "non-causal", k->dtype == VECATTN_FP16 ? "fp16" : "bf16", k->seq_bucket);
    if (n >= 0 && (size_t)n < size && k->stage == VA_STAGE_ATTENTION)
        snprintf(buf + n, size - (size_t)n, " kept-bucket %d", k->sparsity_bucket);
}

int va_attention_pq(const vecattn_prefill_args *a) { return a->dense ? VA_DENSE_PQ : a->pq; }

void va_default_spec(const vecattn_ctx *ctx, va_kernel_kind kind, const vecattn_prefill_args *a,
                     va_kernel_spec *spec) {
    if (kind == VA_KERNEL_SELECT)
        va_spec_default_select(spec, ctx->arch, a->dtype, a->head_dim, a->causal, a->pq, a->bk, a->gk);
    else
        va_spec_default_attention(spec, ctx->arch, a->dtype, a->head_dim, a->causal, va_attention_pq(a));
}

/* ---- forced specs and remembered choices -------------------------------------------------- */

/* Same kernel family: everything but the tiles agrees. */
static int same_semantics(const va_kernel_spec *x, const va_kernel_spec *y) {
    if (x->kind != y->kind || x->arch != y->arch || x->dtype != y->dtype || x->head_dim != y->head_dim ||
        x->causal != y->causal || x->pq != y->pq)
        return 0;
    return x->kind != VA_KERNEL_SELECT || (x->bk == y->bk && x->gk == y->gk);
}

void va_force_spec(vecattn_ctx *ctx, va_kernel_kind kind, const va_kernel_spec *spec) {
    int k = kind == VA_KERNEL_SELECT ? 0 : 1;
    ctx->tuning.forced_set[k] = spec != NULL;
    if (spec) ctx->tuning.forced[k] = *spec;
}

void va_tuning_set_auto(vecattn_ctx *ctx, int on) { ctx->tuning.auto_mode = on ? 2 : 1; }

void va_tuning_forget(vecattn_ctx *ctx) { ctx->tuning.memo_count = ctx->tuning.memo_next = 0; }

static int auto_enabled(vecattn_ctx *ctx) {
    if (ctx->tuning.auto_mode == 0) {
        const char *env = getenv("VECATTN_AUTOTUNE");
        ctx->tuning.auto_mode = env && !strcmp(env, "1") ? 2 : 1;
    }
    return ctx->tuning.auto_mode == 2;
}

static int memo_find(const va_tuning_state *ts, const va_tune_key *key, va_kernel_spec *spec) {
    for (int i = 0; i < ts->memo_count; ++i)
        if (!memcmp(&ts->memo[i].key, key, sizeof *key)) {
            *spec = ts->memo[i].spec;
            return 1;
        }
    return 0;
}

static void memo_add(va_tuning_state *ts, const va_tune_key *key, const va_kernel_spec *spec) {
    enum { N = (int)(sizeof ts->memo / sizeof ts->memo[0]) };
    int i = ts->memo_count < N ? ts->memo_count++ : ts->memo_next;
    ts->memo_next = (i + 1) % N;
    ts->memo[i].key = *key;
    ts->memo[i].spec = *spec;
}

/* ---- first-use tuning ------------------------------------------------------------------------ */

/* Tune `key` on the caller's problem. Never fails the caller: the context's error state is
** restored afterwards, and whatever happened is logged. */
static void tune_on_miss(vecattn_ctx *ctx, va_kernel_kind kind, const vecattn_prefill_args *a, const va_tune_key *key,
                         const char *what) {
    va_tune_result *res = calloc(1, sizeof *res);
    char *saved_msg = malloc(sizeof ctx->errmsg);
    if (!res || !saved_msg) {
        free(res), free(saved_msg);
        return;
    }
    memcpy(saved_msg, ctx->errmsg, sizeof ctx->errmsg);
    vecattn_status saved_status = ctx->last_status;
    va_tune_request req = {.kind = kind, .args = *a, .key = *key, .quick = 1, .budget_s = 30.0, .store = 1};
    req.args.sparsity_out = NULL;
    ctx->tuning.active = 1;
    /* the caller's inputs may still be being written by work queued on its stream */
    vecattn_status st = va_check_cu(ctx, va_cuCtxSynchronize(), "cuCtxSynchronize");
    if (st == VECATTN_OK) st = va_autotune(ctx, &req, res);
    ctx->tuning.active = 0;
    if (st == VECATTN_OK && res->best >= 0)
        va_log(ctx, "autotune %s: %s, %.4f ms (default %.4f ms), %d candidates in %.1f s%s", what,
               res->cand[res->best].tiles, res->cand[res->best].timing.median_ms,
               res->cand[res->reference].timing.median_ms, res->n, res->compile_s + res->measure_s,
               res->stored ? "" : " (not stored)");
    else
        va_log(ctx, "autotune %s failed: %s", what, ctx->errmsg);
    memcpy(ctx->errmsg, saved_msg, sizeof ctx->errmsg);
    ctx->last_status = saved_status;
    free(saved_msg);
    free(res);
}

/* ---- the lookup ------------------------------------------------------------------------------- */

static const char *const level_names[] = {"default", "exact", "nearest bucket", "same compute capability"};

/* Parse a tuned row onto the default spec and validate it. */
static int spec_from_row(vecattn_ctx *ctx, const va_kernel_spec *def, const va_tune_value *val, va_kernel_spec *spec,
                         const char *what, va_tune_match m) {
    char msg[256];
    va_kernel_spec s = *def;
    vecattn_status st = va_spec_tiles_parse(&s, val->tiles, msg, sizeof msg);
    if (st == VECATTN_OK) st = va_spec_validate(&s, msg, sizeof msg);
    if (st != VECATTN_OK) {
        va_log(ctx, "tiles for %s: %s: hit, but the row \"%s\" is not usable (%s)", what, level_names[m], val->tiles,
               msg);
        return 0;
    }
    va_log(ctx, "tiles for %s: %s: hit -> %s (%.4f ms when tuned)", what, level_names[m], val->tiles, val->time_ms);
    *spec = s;
    return 1;
}

/* Steps 3 and 4 of the file comment; *spec holds the default on entry. */
/* A row measured with kernels other than this build's (cache/FORMAT.md: a fallback). */
static int stale_row(const va_tune_key *key, const va_tune_value *v) {
    return strcmp(v->kernel_version, va_tune_kernel_version(key->stage)) != 0;
}

static void choose_from_cache(vecattn_ctx *ctx, va_kernel_kind kind, const vecattn_prefill_args *a,
                              const va_tune_key *key, va_kernel_spec *spec) {
    char what[192], tiles[128];
    va_tune_key_describe(key, what, sizeof what);
    va_kernel_spec def = *spec;
    va_tune_match m = VA_TUNE_MISS;
    va_tune_value val;
    if (ctx->cache) {
        m = va_cache_lookup_tuned(ctx->cache, key, &val);
        if ((m != VA_TUNE_EXACT || stale_row(key, &val)) && auto_enabled(ctx) && !ctx->tuning.active) {
            va_log(ctx, "tiles for %s: no exact entry of these kernels; VECATTN_AUTOTUNE=1: tuning it now", what);
            tune_on_miss(ctx, kind, a, key, what);
            m = va_cache_lookup_tuned(ctx->cache, key, &val);
        }
        if (m != VA_TUNE_MISS && stale_row(key, &val))
            va_log(ctx, "tiles for %s: the entry was tuned for other kernels (version %s, now %s): a fallback",
                    what, val.kernel_version[0] ? val.kernel_version : "unknown", va_tune_kernel_version(key->stage));
        for (int level = VA_TUNE_EXACT; level <= VA_TUNE_SAME_CC && (m == VA_TUNE_MISS || level < (int)m); ++level)
            va_log(ctx, "tiles for %s: %s: miss", what, level_names[level]);
    } else {
        va_log(ctx, "tiles for %s: no cache on this context", what);
    }
    if (m != VA_TUNE_MISS && spec_from_row(ctx, &def, &val, spec, what, m)) return;
    *spec = def;
    va_spec_tiles_format(spec, tiles, sizeof tiles);
    va_log(ctx, "tiles for %s: default -> %s", what, tiles);
}

static vecattn_status va_choose_tuned_spec(vecattn_ctx *ctx, va_kernel_kind kind, const vecattn_prefill_args *a,
                                           double sparsity_hint, va_kernel_spec *spec);

/* VECATTN_TILES_SELECT / VECATTN_TILES_ATTENTION (e.g. "block_m=64,block_n=64,warps=4"):
** tiles applied over whatever was chosen, for experiments and for benchmarking one config. */
static vecattn_status apply_env_tiles(vecattn_ctx *ctx, va_kernel_spec *spec) {
    const char *name = spec->kind == VA_KERNEL_SELECT ? "VECATTN_TILES_SELECT" : "VECATTN_TILES_ATTENTION";
    const char *text = getenv(name);
    if (!text || !*text) return VECATTN_OK;
    char msg[256];
    if (va_spec_tiles_parse(spec, text, msg, sizeof msg) != VECATTN_OK ||
        va_spec_validate(spec, msg, sizeof msg) != VECATTN_OK)
        return va_fail(ctx, VECATTN_E_INVALID_ARG, "%s=%s: %s", name, text, msg);
    va_log(ctx, "%s: tiles %s", name, text);
    return VECATTN_OK;
}

vecattn_status va_choose_spec(vecattn_ctx *ctx, va_kernel_kind kind, const vecattn_prefill_args *a,
                              double sparsity_hint, va_kernel_spec *spec) {
    vecattn_status st = va_choose_tuned_spec(ctx, kind, a, sparsity_hint, spec);
    return st == VECATTN_OK ? apply_env_tiles(ctx, spec) : st;
}

/* The forced, tuned or default spec (without the environment override). */
static vecattn_status va_choose_tuned_spec(vecattn_ctx *ctx, va_kernel_kind kind, const vecattn_prefill_args *a,
                                           double sparsity_hint, va_kernel_spec *spec) {
    va_tuning_state *ts = &ctx->tuning;
    int k = kind == VA_KERNEL_SELECT ? 0 : 1;
    va_default_spec(ctx, kind, a, spec);
    if (ts->forced_set[k] && same_semantics(&ts->forced[k], spec)) {
        *spec = ts->forced[k];
        return VECATTN_OK;
    }
    va_tune_key key;
    va_tune_key_init(ctx, kind, a, va_tune_hint_bucket(sparsity_hint), &key);
    if (memo_find(ts, &key, spec)) return VECATTN_OK;
    choose_from_cache(ctx, kind, a, &key, spec);
    memo_add(ts, &key, spec);
    return VECATTN_OK;
}
