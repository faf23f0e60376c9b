/*
** cli_precompile.c -- vecattn-autotune precompile: NVRTC-compile kernels into the cache
** without a GPU, so that a deployment (VECATTN_NO_JIT=1 included) starts from SQLite.
**
** What: the default selection and attention kernels (the method's Pq/Bk/Gk, causal and not)
** for every --arch x --head-dim x --dtype, and every tuned entry of the cache (the user's and
** the shipped ones) whose compute capability is one of --arch. Each kernel goes through
** va_module_cubin, the runtime's own path (same key, claims, failed-config record), on one
** worker thread per core with its own cache connection: NVRTC compiles in parallel and SQLite
** serialises only the short puts.
** Exit codes: 0 ok, 1 usage error, 2 a kernel failed or the cache is not writable.
*/
#include <pthread.h> /* provides: pthread_create, pthread_mutex_t */
#include <stdio.h>   /* provides: printf */
#include <stdlib.h>  /* provides: calloc, strtol */
#include <string.h>  /* provides: strchr, memcmp */
#include <time.h>    /* provides: clock_gettime */
#include <unistd.h>  /* provides: sysconf */

#include "autotune/cli_cache.h"
#include "runtime/runtime.h" /* provides: vecattn_ctx, va_module_cubin, va_nvrtc_identity */

enum { MAX_LIST = 16, MAX_JOBS = 4096 };

typedef struct precompile_plan {
    int archs[MAX_LIST], n_archs;
    int dims[MAX_LIST], n_dims, dims_given;
    int dtypes[MAX_LIST], n_dtypes, dtypes_given;   /* vecattn_dtype values */
    va_kernel_spec *jobs;
    int n_jobs;
} precompile_plan;

typedef struct pool {
    const precompile_plan *plan;
    pthread_mutex_t lock;
    int next, compiled, cached, failed;
} pool;

/* ---- flags ---------------------------------------------------------------------------- */

/* Split "a,b,c" and parse each item with `one`; 0 on a bad item. */
static int parse_list(const char *text, int *out, int *n, int (*one)(const char *, size_t, int *)) {
    *n = 0;
    for (const char *p = text; *p && *n < MAX_LIST;) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        if (!one(p, len, &out[*n])) return 0;
        ++*n;
        p += len + (comma != NULL);
    }
    return *n > 0;
}

static int one_arch(const char *s, size_t len, int *out) {
    char buf[16];
    if (len < 4 || len >= sizeof buf || strncmp(s, "sm_", 3)) return 0;
    memcpy(buf, s, len);
    buf[len] = 0;
    char *end;
    long v = strtol(buf + 3, &end, 10);
    if (end == buf + 3 || (*end && strcmp(end, "a")) || v < 10 || v > 1000 || !va_arch_target((int)v)) return 0;
    *out = (int)v;
    return 1;
}

static int one_dim(const char *s, size_t len, int *out) {
    if (len == 2 && !strncmp(s, "64", 2)) *out = 64;
    else if (len == 3 && !strncmp(s, "128", 3)) *out = 128;
    else return 0;
    return 1;
}

static int one_dtype(const char *s, size_t len, int *out) {
    if (len == 4 && !strncmp(s, "bf16", 4)) *out = VECATTN_BF16;
    else if (len == 4 && !strncmp(s, "fp16", 4)) *out = VECATTN_FP16;
    else return 0;
    return 1;
}

static int parse_plan(int argc, char **argv, precompile_plan *p, int *jobs) {
    const char *archs = NULL, *dims = NULL, *dtypes = NULL, *njobs = NULL;
    const va_cli_opt opts[] = {{"--arch", &archs, NULL}, {"--head-dim", &dims, NULL}, {"--dtype", &dtypes, NULL},
                               {"--jobs", &njobs, NULL}, {NULL, NULL, NULL}};
    int rc = va_cli_parse("precompile", argc, argv, opts, NULL, 0);
    if (rc != VA_CLI_CONTINUE) return rc;
    /* Given explicitly, they also filter the tuned entries; the defaults do not. */
    p->dims_given = dims != NULL;
    p->dtypes_given = dtypes != NULL;
    if (!dims) dims = "128,64";
    if (!dtypes) dtypes = "bf16";
    if (!archs) return va_cli_usage("precompile", "--arch is required, e.g. --arch sm_80,sm_90a");
    if (!parse_list(archs, p->archs, &p->n_archs, one_arch))
        return va_cli_usage("precompile", "--arch '%s': expected a list such as sm_80,sm_90a", archs);
    if (!parse_list(dims, p->dims, &p->n_dims, one_dim))
        return va_cli_usage("precompile", "--head-dim '%s': expected 64, 128 or 128,64", dims);
    if (!parse_list(dtypes, p->dtypes, &p->n_dtypes, one_dtype))
        return va_cli_usage("precompile", "--dtype '%s': expected bf16, fp16 or bf16,fp16", dtypes);
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    *jobs = cores > 0 ? (int)cores : 1;
    if (njobs && (sscanf(njobs, "%d", jobs) != 1 || *jobs < 1 || *jobs > 256))
        return va_cli_usage("precompile", "--jobs '%s': expected 1..256", njobs);
    return VA_CLI_CONTINUE;
}

/* ---- the list of kernels -------------------------------------------------------------- */

static void add_job(precompile_plan *p, const va_kernel_spec *s) {
    for (int i = 0; i < p->n_jobs; ++i)
        if (!memcmp(&p->jobs[i], s, sizeof *s)) return;
    if (p->n_jobs < MAX_JOBS) p->jobs[p->n_jobs++] = *s;
}

static int has(const int *list, int n, int v) {
    for (int i = 0; i < n; ++i)
        if (list[i] == v) return 1;
    return 0;
}

static void add_defaults(precompile_plan *p) {
    vecattn_prefill_args d;
    vecattn_prefill_args_init(&d);
    for (int a = 0; a < p->n_archs; ++a)
        for (int t = 0; t < p->n_dtypes; ++t)
            for (int h = 0; h < p->n_dims; ++h)
                for (int causal = 1; causal >= 0; --causal) {
                    va_kernel_spec s;
                    va_spec_default_select(&s, p->archs[a], (vecattn_dtype)p->dtypes[t], p->dims[h], causal, d.pq,
                                           d.bk, d.gk);
                    add_job(p, &s);
                    va_spec_default_attention(&s, p->archs[a], (vecattn_dtype)p->dtypes[t], p->dims[h], causal, d.pq);
                    add_job(p, &s);
                }
}

static int add_tuned(const va_tune_key *k, const va_tune_value *v, int shipped, void *user) {
    precompile_plan *p = user;
    (void)shipped;
    if (!has(p->archs, p->n_archs, k->device.cc)) return 0;
    if (p->dims_given && !has(p->dims, p->n_dims, k->head_dim)) return 0;
    if (p->dtypes_given && !has(p->dtypes, p->n_dtypes, (int)k->dtype)) return 0;
    va_kernel_spec s;
    char msg[256];
    if (k->stage == VA_STAGE_SELECTION)
        va_spec_default_select(&s, k->device.cc, k->dtype, k->head_dim, k->causal, k->pq, k->bk, k->gk);
    else
        va_spec_default_attention(&s, k->device.cc, k->dtype, k->head_dim, k->causal, k->pq);
    if (va_spec_tiles_parse(&s, v->tiles, msg, sizeof msg) == VECATTN_OK) add_job(p, &s);
    return 0;
}

/* ---- compiling ------------------------------------------------------------------------ */

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec * 1e-6;
}

/* One kernel through the runtime's own path; prints one line. */
static void compile_job(pool *pl, vecattn_ctx *ctx, const va_kernel_spec *spec) {
    char msg[512] = "";
    va_generated gen;
    memset(&gen, 0, sizeof gen);
    void *cubin = NULL;
    size_t size = 0;
    int from_cache = 0;
    double t0 = now_ms();
    vecattn_status st = va_generate(spec, &gen, msg, sizeof msg);
    if (st == VECATTN_OK) st = va_module_cubin(ctx, spec, &gen, &cubin, &size, &from_cache);
    double ms = now_ms() - t0;
    pthread_mutex_lock(&pl->lock);
    if (st != VECATTN_OK) {
        const char *why = msg[0] ? msg : ctx->errmsg;
        printf("  FAIL      %s: %.*s\n", gen.name ? gen.name : va_arch_target(spec->arch),
               (int)strcspn(why, "\n"), why);
        ++pl->failed;
    } else {
        printf("  %-9s %-56s %8.0f ms %9zu bytes\n", from_cache ? "cached" : "compiled", gen.name, ms, size);
        ++*(from_cache ? &pl->cached : &pl->compiled);
    }
    fflush(stdout);
    pthread_mutex_unlock(&pl->lock);
    free(cubin);
    va_generated_free(&gen);
}

static void *worker(void *arg) {
    pool *pl = arg;
    vecattn_ctx *ctx = calloc(1, sizeof *ctx);
    if (!ctx) return NULL;
    ctx->cache = va_cache_open(NULL, NULL);  /* its own connection: SQLite locks between them */
    const char *log = getenv("VECATTN_LOG");
    ctx->log_debug = log && !strcmp(log, "debug");
    for (;;) {
        pthread_mutex_lock(&pl->lock);
        int i = pl->next < pl->plan->n_jobs ? pl->next++ : -1;
        pthread_mutex_unlock(&pl->lock);
        if (i < 0) break;
        compile_job(pl, ctx, &pl->plan->jobs[i]);
    }
    va_cache_close(ctx->cache);
    free(ctx);
    return NULL;
}

static void run_pool(pool *pl, int n_threads) {
    pthread_t threads[256];
    int started = 0;
    for (; started < n_threads && started < pl->plan->n_jobs; ++started)
        if (pthread_create(&threads[started], NULL, worker, pl) != 0) break;
    if (started == 0) worker(pl);
    for (int i = 0; i < started; ++i) pthread_join(threads[i], NULL);
}

int va_cli_precompile(int argc, char **argv) {
    precompile_plan plan;
    memset(&plan, 0, sizeof plan);
    int n_threads = 1;
    int rc = parse_plan(argc, argv, &plan, &n_threads);
    if (rc != VA_CLI_CONTINUE) return rc;
    va_cache *c = va_cli_open_cache("precompile", 1);
    if (!c) return VA_CLI_FAIL;
    plan.jobs = calloc(MAX_JOBS, sizeof *plan.jobs);
    if (!plan.jobs) {
        va_cache_close(c);
        return va_cli_failure("precompile", "out of memory");
    }
    add_defaults(&plan);
    int n_defaults = plan.n_jobs;
    va_cache_foreach_tuned(c, 1, NULL, add_tuned, &plan, NULL);
    printf("precompile: %d default and %d tuned kernels into %s (NVRTC %s, %d threads)\n", n_defaults,
           plan.n_jobs - n_defaults, va_cache_path(c), va_nvrtc_identity(), n_threads);
    fflush(stdout);
    pool pl = {.plan = &plan, .lock = PTHREAD_MUTEX_INITIALIZER};
    run_pool(&pl, n_threads);
    printf("%d compiled, %d already cached, %d failed\n", pl.compiled, pl.cached, pl.failed);
    free(plan.jobs);
    va_cache_close(c);
    return pl.failed || pl.compiled + pl.cached != plan.n_jobs ? VA_CLI_FAIL : VA_CLI_OK;
}
