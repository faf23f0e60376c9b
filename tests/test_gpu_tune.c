/*
** test_gpu_tune.c -- the autotuner end to end on a GPU (`tune --quick` on one small bucket).
**
**   1. tune Sk 4096 (selection, and attention at 5-20% kept) into a fresh cache file;
**   2. the tuned config is never slower than the default on the tuned shape: both are timed
**      again, alternately (A B A B), and the better median of each is compared with a 3%
**      allowance for noise;
**   3. a second process (this program again, with --child) runs a prefill of the same shape
**      with VECATTN_LOG=debug: both lookups must be exact hits, and when the cache holds
**      CUBINs, no kernel may be compiled with NVRTC (module loading logs "compiled ...
**      NVRTC" for every compile);
**   4. a third process with VECATTN_AUTOTUNE=1 on a fresh cache tunes both stages on its
**      first prefill, then finds them.
** Without a GPU it prints SKIP and exits 77.
*/
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "autotune/tuner.h"
#include "test_util.h"

enum { SEQ = 4096 };

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec * 1e-6;
}

static void plan(va_tuner_options *o) {
    va_tuner_defaults(o, VA_TUNER_QUICK);
    o->seqs[0] = SEQ, o->n_seqs = 1;
}

/* ---- the second process ------------------------------------------------------------------ */

/* Prefill the tuned shape once; the parent reads our VECATTN_LOG=debug output. */
static int child(const char *cache) {
    double t0 = now_ms();
    vecattn_ctx *ctx = NULL;
    if (vecattn_create(&ctx, 0, cache, 0) != VECATTN_OK) {
        fprintf(stderr, "child: %s\n", vecattn_errmsg(ctx));
        return 1;
    }
    va_tuner_options o;
    plan(&o);
    va_tuner_problem p;
    if (va_tuner_problem_make(ctx, &o, SEQ, 0, &p) != VECATTN_OK) {
        fprintf(stderr, "child: %s\n", vecattn_errmsg(ctx));
        return 1;
    }
    float sparsity = -1.0f;
    p.args.sparsity_out = &sparsity;
    double t1 = now_ms();
    vecattn_status st = vecattn_prefill(ctx, &p.args, NULL);
    double t2 = now_ms();
    if (st != VECATTN_OK)
        fprintf(stderr, "child: prefill: %s\n", vecattn_errmsg(ctx));
    else
        printf("child: warm start: context %.1f ms, first prefill %.1f ms (sparsity %.3f)\n", t1 - t0, t2 - t1,
               sparsity);
    va_tuner_problem_free(ctx, &p);
    vecattn_destroy(ctx);
    return st == VECATTN_OK ? 0 : 1;
}

/* Run `self --child cache` with VECATTN_LOG=debug (and VECATTN_AUTOTUNE=1 when `autotune`);
** its stderr into log[size]. Exit status or -1. */
static int run_child(const char *cache, int autotune, char *log, size_t size) {
    int fds[2];
    if (pipe(fds)) return -1;
    pid_t pid = fork();
    if (pid == 0) {
        dup2(fds[1], 2);
        close(fds[0]), close(fds[1]);
        setenv("VECATTN_LOG", "debug", 1);
        if (autotune)
            setenv("VECATTN_AUTOTUNE", "1", 1);
        else
            unsetenv("VECATTN_AUTOTUNE");
        execl("/proc/self/exe", "test_gpu_tune", "--child", cache, (char *)NULL);
        _exit(127);
    }
    close(fds[1]);
    size_t len = 0;
    for (ssize_t n; (n = read(fds[0], log + len, size - 1 - len)) > 0 && len + 1 < size;) len += (size_t)n;
    log[len] = 0;
    close(fds[0]);
    int status = 0;
    if (pid < 0 || waitpid(pid, &status, 0) != pid || !WIFEXITED(status)) return -1;
    return WEXITSTATUS(status);
}

/* Lines of `log` that contain both a and b. */
static int count_lines(const char *log, const char *a, const char *b) {
    int n = 0;
    for (const char *line = log; *line;) {
        const char *end = strchr(line, '\n');
        size_t len = end ? (size_t)(end - line) : strlen(line);
        char buf[1024];
        snprintf(buf, sizeof buf, "%.*s", (int)(len < sizeof buf ? len : sizeof buf - 1), line);
        n += strstr(buf, a) && strstr(buf, b);
        line += len + (end ? 1 : 0);
    }
    return n;
}

/* ---- the tuned config against the default ---------------------------------------------------- */

static void compare_with_default(vecattn_ctx *ctx, const va_tuner_options *o, const va_tuner_entry *e) {
    const va_tune_result *r = e->result;
    const va_tune_candidate *best = &r->cand[r->best], *def = &r->cand[r->reference];
    if (r->best == r->reference) {
        printf("%s: the default config %s won\n", va_stage_name(e->key.stage), def->tiles);
        return;
    }
    va_tuner_problem p;
    if (va_tuner_problem_make(ctx, o, SEQ, e->heads, &p) != VECATTN_OK) {
        CHECK(0, "problem: %s", vecattn_errmsg(ctx));
        return;
    }
    vecattn_prefill_args a = p.args;
    a.threshold = e->dense ? a.threshold : e->threshold;
    a.dense = e->dense;
    va_kernel_kind kind = e->key.stage == VA_STAGE_SELECTION ? VA_KERNEL_SELECT : VA_KERNEL_ATTENTION;
    va_tune_bench *b;
    vecattn_status st = va_tune_bench_open(ctx, kind, &a, 1, &b);
    CHECK(st == VECATTN_OK, "bench: %s", vecattn_errmsg(ctx));
    double tb = 1e30, td = 1e30;
    for (int round = 0; st == VECATTN_OK && round < 2; ++round) {
        va_timing t;
        if ((st = va_tune_bench_time(b, &def->spec, &t)) == VECATTN_OK && t.median_ms < td) td = t.median_ms;
        if (!st && (st = va_tune_bench_time(b, &best->spec, &t)) == VECATTN_OK && t.median_ms < tb) tb = t.median_ms;
    }
    CHECK(st == VECATTN_OK, "timing: %s", vecattn_errmsg(ctx));
    printf("%s: tuned %s %.4f ms, default %s %.4f ms (re-timed)\n", va_stage_name(e->key.stage), best->tiles, tb,
           def->tiles, td);
    CHECK(tb <= td * 1.03, "%s: the tuned config %s (%.4f ms) is slower than the default %s (%.4f ms)",
          va_stage_name(e->key.stage), best->tiles, tb, def->tiles, td);
    if (b) va_tune_bench_close(b);
    va_tuner_problem_free(ctx, &p);
}

/* ---- main -------------------------------------------------------------------------------------- */

static int tune_and_check(const char *cache) {
    vecattn_ctx *ctx = NULL;
    if (vecattn_create(&ctx, 0, cache, 0) != VECATTN_OK) {
        printf("SKIP: %s\n", vecattn_errmsg(ctx));
        vecattn_destroy(ctx);
        return TEST_SKIP;
    }
    va_tuning_set_auto(ctx, 0);
    va_tuner_options o;
    plan(&o);
    va_tuner_report rep;
    double t0 = now_ms();
    vecattn_status st = va_tuner_run(ctx, &o, &rep);
    printf("tuned %d entries in %.1f s\n", rep.n, (now_ms() - t0) * 1e-3);
    CHECK(st == VECATTN_OK, "tune: %s", vecattn_errmsg(ctx));
    CHECK(rep.n == 2, "%d entries, expected selection + attention", rep.n);
    for (int i = 0; i < rep.n; ++i) {
        const va_tuner_entry *e = &rep.entries[i];
        CHECK(!strcmp(e->status, "ok") && e->result && e->result->best >= 0, "entry %d: %s %s", i, e->status, e->why);
        if (strcmp(e->status, "ok") || !e->result || e->result->best < 0) continue;
        va_tune_value v;
        va_tune_match m = ctx->cache ? va_cache_lookup_tuned(ctx->cache, &e->key, &v) : VA_TUNE_MISS;
        CHECK(m == VA_TUNE_EXACT && !strcmp(v.tiles, e->result->value.tiles), "entry %d: not stored (match %d)", i,
              (int)m);
        compare_with_default(ctx, &o, e);
    }
    va_cache_stats stats = {0};
    int have_cubins = ctx->cache && va_cache_get_stats(ctx->cache, &stats) == VECATTN_OK && stats.kernels > 0;
    va_tuner_report_free(&rep);
    vecattn_destroy(ctx);
    return have_cubins;
}

static void check_second_process(const char *cache, int have_cubins) {
    static char log[1 << 20];
    int rc = run_child(cache, 0, log, sizeof log);
    CHECK(rc == 0, "the second process exited with %d:\n%s", rc, log);
    int sel = count_lines(log, "tiles for selection", "exact: hit");
    int attn = count_lines(log, "tiles for attention", "exact: hit");
    int compiles = count_lines(log, "compiled ", "NVRTC");
    printf("second process: exact hits: selection %d, attention %d; NVRTC compiles %d\n", sel, attn, compiles);
    CHECK(sel >= 1 && attn >= 1, "the second process did not find the tuned entries:\n%s", log);
    if (have_cubins)
        CHECK(compiles == 0, "the second process compiled with NVRTC despite cached CUBINs:\n%s", log);
    else
        printf("NOTE: the cache holds no CUBINs: the no-NVRTC check is not applicable\n");
}

/* VECATTN_AUTOTUNE=1 on a fresh cache: the first prefill tunes both stages on its own
** inputs, stores them, and then finds them (exact hits). */
static void check_first_use_tuning(const char *cache) {
    static char log[1 << 20];
    int rc = run_child(cache, 1, log, sizeof log);
    CHECK(rc == 0, "the VECATTN_AUTOTUNE=1 process exited with %d:\n%s", rc, log);
    int tuned = count_lines(log, "autotune ", "candidates in");
    int hits = count_lines(log, "tiles for ", "exact: hit");
    printf("VECATTN_AUTOTUNE=1: %d stages tuned on first use, %d exact hits after\n", tuned, hits);
    CHECK(tuned == 2 && hits >= 2, "first-use tuning did not tune and find both stages:\n%s", log);
}

int main(int argc, char **argv) {
    if (argc == 3 && !strcmp(argv[1], "--child")) return child(argv[2]);
    char why[1024];
    if (!test_gpu_available(why, sizeof why)) {
        printf("SKIP: %s\n", why);
        return TEST_SKIP;
    }
    char dir[256], cache[300];
    const char *base = getenv("TMPDIR");
    snprintf(dir, sizeof dir, "%s/vecattn_tune_XXXXXX", base && *base ? base : "/tmp");
    if (!mkdtemp(dir)) return perror("mkdtemp"), 1;
    snprintf(cache, sizeof cache, "%s/cache.db", dir);
    int have_cubins = tune_and_check(cache);
    if (have_cubins == TEST_SKIP) return TEST_SKIP;
    check_second_process(cache, have_cubins);
    snprintf(cache, sizeof cache, "%s/auto.db", dir);
    check_first_use_tuning(cache);
    DIR *d = opendir(dir);
    for (struct dirent *e; d && (e = readdir(d));) {
        char path[600];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) remove(path);
    }
    if (d) closedir(d);
    rmdir(dir);
    return test_exit_code("test_gpu_tune");
}
