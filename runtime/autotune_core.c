/*
** autotune_core.c -- tune one (stage, problem) on the context's device.
**
**   1. candidates: va_spec_candidates() of the default spec (the search space the code
**      generator defines, already pruned by va_spec_validate); the default is always one of
**      them, and it is the reference every other candidate is checked against;
**   2. configs the cache marked failed earlier are skipped (never retried);
**   3. the rest are generated and, unless the cache's kernel store holds them already,
**      NVRTC-compiled in parallel on CPU threads; a compile failure is marked failed in the
**      cache; each CUBIN is published to the kernel store, so that loading it below
**      (va_module_get) does not compile it a second time;
**   4. the reference first, then each candidate: checked against the reference's outputs,
**      then timed (autotune_bench.c); a launch failure is marked failed;
**   5. the fastest median wins and is stored with va_cache_put_tuned.
** A time budget skips the candidates not started in time (never the reference).
*/
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "runtime/autotune.h"

const char *va_candidate_state_name(va_candidate_state s) {
    static const char *const names[] = {"pending",       "timed", "known-bad",  "compile-failed",
                                        "launch-failed", "wrong", "over-budget"};
    return (unsigned)s < sizeof names / sizeof names[0] ? names[s] : "?";
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* The first line of a compiler log, for the failed-config table and messages. */
static void first_line(const char *text, char *out, size_t size) {
    const char *t = text ? text : "(no log)";
    size_t n = strcspn(t, "\n");
    snprintf(out, size, "%.*s", (int)(n < size ? n : size - 1), t);
}

/* ---- candidates ------------------------------------------------------------------------------ */

/* The search space, without repeats (the first of equal tile texts stays), the default
** config marked as the reference and added when the space lacks it. */
static void set_candidates(vecattn_ctx *ctx, const va_tune_request *req, va_tune_result *res) {
    va_kernel_spec def, specs[VA_TUNE_MAX_CANDIDATES];
    va_default_spec(ctx, req->kind, &req->args, &def);
    int n = va_spec_candidates(&def, specs, VA_TUNE_MAX_CANDIDATES);
    if (n > VA_TUNE_MAX_CANDIDATES) n = VA_TUNE_MAX_CANDIDATES;
    char def_tiles[128];
    va_spec_tiles_format(&def, def_tiles, sizeof def_tiles);
    res->reference = -1;
    for (int i = 0; i < n; ++i) {
        va_tune_candidate *c = &res->cand[res->n];
        c->spec = specs[i];
        va_spec_tiles_format(&c->spec, c->tiles, sizeof c->tiles);
        int repeat = 0;
        for (int j = 0; j < res->n && !repeat; ++j) repeat = !strcmp(res->cand[j].tiles, c->tiles);
        if (repeat) continue;
        if (res->reference < 0 && !strcmp(c->tiles, def_tiles)) res->reference = res->n;
        ++res->n;
    }
    if (res->reference < 0) { /* the search space must always hold the default */
        int i = res->n < VA_TUNE_MAX_CANDIDATES ? res->n++ : VA_TUNE_MAX_CANDIDATES - 1;
        memset(&res->cand[i], 0, sizeof res->cand[i]);
        res->cand[i].spec = def;
        snprintf(res->cand[i].tiles, sizeof res->cand[i].tiles, "%s", def_tiles);
        res->reference = i;
    }
}

/* ---- parallel compilation --------------------------------------------------------------------- */

typedef struct compile_job {
    va_tune_candidate *cand;
    va_generated gen;
    void *cubin;
    size_t size;
    char *log;
    vecattn_status st;
} compile_job;

typedef struct compile_pool {
    compile_job *jobs;
    int n, next;
    pthread_mutex_t lock;
} compile_pool;

static void *compile_worker(void *arg) {
    compile_pool *pool = arg;
    for (;;) {
        pthread_mutex_lock(&pool->lock);
        int i = pool->next++;
        pthread_mutex_unlock(&pool->lock);
        if (i >= pool->n) return NULL;
        compile_job *j = &pool->jobs[i];
        double t0 = now_s();
        j->st = va_nvrtc_compile(&j->gen, &j->cubin, &j->size, &j->log);
        j->cand->compile_ms = (now_s() - t0) * 1e3;
    }
}

static int cpu_count(void) {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1 : n > 64 ? 64 : (int)n;
}

/* Hand a fresh CUBIN to the cache's kernel store under the key module loading looks up
** (va_cache_kernel_key spells it for both). */
static void publish_cubin(vecattn_ctx *ctx, const compile_job *j) {
    char options[1024];
    va_kernel_key key;
    va_cache_kernel_key(&key, &j->gen, j->cand->spec.arch, va_nvrtc_identity(), options, sizeof options);
    if (va_cache_put_kernel(ctx->cache, &key, j->cubin, j->size) != VECATTN_OK)
        va_log(ctx, "autotune: could not store the CUBIN of %s; it will be compiled again on load", j->gen.name);
}

/* 1 when the kernel store already holds the module's CUBIN (an earlier run compiled it):
** loading will take it from there. */
static int in_store(vecattn_ctx *ctx, const va_kernel_spec *spec, const va_generated *gen) {
    char options[1024];
    va_kernel_key key;
    void *cubin = NULL;
    size_t size = 0;
    if (!ctx->cache) return 0;
    va_cache_kernel_key(&key, gen, spec->arch, va_nvrtc_identity(), options, sizeof options);
    int hit = va_cache_get_kernel(ctx->cache, &key, &cubin, &size);
    free(cubin);
    return hit;
}

/* Generate, skip known-bad configs and those already compiled, compile the rest on CPU
** threads. */
static void compile_all(vecattn_ctx *ctx, const va_tune_request *req, va_tune_result *res) {
    compile_job *jobs = calloc((size_t)res->n, sizeof *jobs);
    compile_pool pool = {jobs, 0, 0, PTHREAD_MUTEX_INITIALIZER};
    for (int i = 0; jobs && i < res->n; ++i) {
        va_tune_candidate *c = &res->cand[i];
        compile_job *j = &jobs[pool.n];
        char msg[256];
        if (va_generate(&c->spec, &j->gen, msg, sizeof msg) != VECATTN_OK) {
            c->state = VA_CAND_COMPILE_FAILED;
            snprintf(c->why, sizeof c->why, "code generation: %.200s", msg);
            continue;
        }
        c->hash = j->gen.hash;
        if (i != res->reference && ctx->cache && va_cache_is_failed(ctx->cache, c->hash)) {
            c->state = VA_CAND_KNOWN_BAD;
            snprintf(c->why, sizeof c->why, "marked failed in the cache earlier");
        }
        if (c->state == VA_CAND_KNOWN_BAD || in_store(ctx, &c->spec, &j->gen)) {
            va_generated_free(&j->gen);
            continue;
        }
        j->cand = c;
        ++pool.n;
    }
    int threads = req->compile_threads > 0 ? req->compile_threads : cpu_count();
    if (threads > pool.n) threads = pool.n;
    pthread_t tid[64];
    int started = 0;
    for (; started < threads && started < 64; ++started)
        if (pthread_create(&tid[started], NULL, compile_worker, &pool)) break;
    if (started == 0) compile_worker(&pool); /* no threads: compile here */
    for (int t = 0; t < started; ++t) pthread_join(tid[t], NULL);
    for (int i = 0; i < pool.n; ++i) {
        compile_job *j = &jobs[i];
        if (j->st != VECATTN_OK) {
            j->cand->state = VA_CAND_COMPILE_FAILED;
            first_line(j->log, j->cand->why, sizeof j->cand->why);
            if (ctx->cache) va_cache_mark_failed(ctx->cache, j->gen.hash, j->gen.name, j->cand->why);
        } else if (ctx->cache) {
            publish_cubin(ctx, j);
        }
        free(j->cubin), free(j->log);
        va_generated_free(&j->gen);
    }
    free(jobs);
}

/* ---- measuring --------------------------------------------------------------------------------- */

static void report(const va_tune_request *req, const va_tune_result *res, int done, int last, double t0) {
    if (!req->progress) return;
    va_tune_progress p = {&req->key, done, res->n, &res->cand[last], NULL, now_s() - t0};
    for (int i = 0; i < res->n; ++i)
        if (res->cand[i].state == VA_CAND_TIMED &&
            (!p.best || res->cand[i].timing.median_ms < p.best->timing.median_ms))
            p.best = &res->cand[i];
    req->progress(req->user, &p);
}

/* Check and time one candidate. VECATTN_OK unless the device context broke. */
static vecattn_status measure(vecattn_ctx *ctx, va_tune_bench *bench, va_tune_candidate *c) {
    va_check_result chk = va_tune_bench_check(bench, &c->spec, c->why, sizeof c->why);
    if (chk == VA_CHECK_OK) {
        vecattn_status st = va_tune_bench_time(bench, &c->spec, &c->timing);
        if (st == VECATTN_OK) {
            c->state = VA_CAND_TIMED;
            return VECATTN_OK;
        }
        snprintf(c->why, sizeof c->why, "timing: %s", vecattn_errmsg(ctx));
        chk = va_tune_bench_broken(bench) ? VA_CHECK_BROKEN : VA_CHECK_LAUNCH;
    }
    c->state = chk == VA_CHECK_WRONG ? VA_CAND_WRONG : VA_CAND_LAUNCH_FAILED;
    if (chk != VA_CHECK_WRONG && ctx->cache) {
        char name[200];
        snprintf(name, sizeof name, "%s %.150s", c->spec.kind == VA_KERNEL_SELECT ? "select" : "attention", c->tiles);
        va_cache_mark_failed(ctx->cache, c->hash, name, c->why);
    }
    if (chk == VA_CHECK_BROKEN)
        return va_fail(ctx, VECATTN_E_LAUNCH, "candidate %s broke the device context: %s", c->tiles, c->why);
    return VECATTN_OK;
}

/* The reference first (it must pass), then the others in order. */
static vecattn_status measure_all(vecattn_ctx *ctx, const va_tune_request *req, va_tune_result *res, double t0) {
    va_tune_bench *bench;
    vecattn_status st = va_tune_bench_open(ctx, req->kind, &req->args, req->quick, &bench);
    if (st != VECATTN_OK) return st;
    res->kept = va_tune_bench_kept(bench);
    res->flops = va_tune_bench_flops(bench);
    int done = 0;
    for (int i = 0; i < res->n; ++i) done += res->cand[i].state != VA_CAND_PENDING;
    for (int k = 0; st == VECATTN_OK && k < res->n; ++k) {
        int i = k == 0 ? res->reference : k <= res->reference ? k - 1 : k;
        va_tune_candidate *c = &res->cand[i];
        if (c->state != VA_CAND_PENDING) continue;
        if (i != res->reference && req->budget_s > 0.0 && now_s() - t0 > req->budget_s) {
            c->state = VA_CAND_OVER_BUDGET;
            snprintf(c->why, sizeof c->why, "time budget of %.0f s used up", req->budget_s);
        } else {
            st = measure(ctx, bench, c);
            if (st == VECATTN_OK && i == res->reference && c->state != VA_CAND_TIMED)
                st = va_fail(ctx, VECATTN_E_INTERNAL, "the default config %s failed its own check: %s", c->tiles,
                             c->why);
        }
        report(req, res, ++done, i, t0);
    }
    va_tune_bench_close(bench);
    return st;
}

/* ---- the result --------------------------------------------------------------------------------- */

static void pick_and_store(vecattn_ctx *ctx, const va_tune_request *req, va_tune_result *res) {
    res->best = -1;
    for (int i = 0; i < res->n; ++i)
        if (res->cand[i].state == VA_CAND_TIMED &&
            (res->best < 0 || res->cand[i].timing.median_ms < res->cand[res->best].timing.median_ms))
            res->best = i;
    if (res->best < 0) return;
    const va_tune_candidate *b = &res->cand[res->best];
    va_tune_value *v = &res->value;
    memset(v, 0, sizeof *v);
    snprintf(v->tiles, sizeof v->tiles, "%s", b->tiles);
    v->time_ms = b->timing.median_ms;
    v->tflops = b->timing.median_ms > 0.0 ? res->flops / (b->timing.median_ms * 1e-3) / 1e12 : 0.0;
    v->tuned_at = (int64_t)time(NULL);
    snprintf(v->vecattn_version, sizeof v->vecattn_version, "%s", VECATTN_VERSION_STRING);
    va_cuDriverGetVersion(&v->driver_version);
    snprintf(v->nvrtc_id, sizeof v->nvrtc_id, "%s", va_nvrtc_identity());
    snprintf(v->kernel_version, sizeof v->kernel_version, "%s", va_tune_kernel_version(req->key.stage));
    if (req->store && ctx->cache) res->stored = va_cache_put_tuned(ctx->cache, &req->key, v) == VECATTN_OK;
}

vecattn_status va_autotune(vecattn_ctx *ctx, const va_tune_request *req, va_tune_result *res) {
    memset(res, 0, sizeof *res);
    res->best = -1;
    if (!ctx || ctx->magic != VA_CTX_MAGIC || !ctx->primary) return VECATTN_E_MISUSE;
    double t0 = now_s();
    set_candidates(ctx, req, res);
    compile_all(ctx, req, res);
    double t1 = now_s();
    res->compile_s = t1 - t0;
    vecattn_status st = measure_all(ctx, req, res, t0);
    res->measure_s = now_s() - t1;
    pick_and_store(ctx, req, res);
    va_tuning_forget(ctx); /* choices remembered before may be stale now */
    if (st == VECATTN_OK && res->best < 0) st = va_fail(ctx, VECATTN_E_INTERNAL, "autotune: no candidate passed");
    return st;
}
