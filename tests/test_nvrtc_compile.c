/*
** test_nvrtc_compile.c -- NVRTC compiles every specialisation the library can generate for
** the grid, for sm_80 and sm_90a, without a GPU:
**   {D 64, 128} x {Pq 32, 64, 128} x {Bk 8, 16, 32} x {Gk 1, 16, 8192} x {causal, not}
**   x {bf16, fp16}, selection and attention modules (identical sources compiled once).
** Compiles run on one thread per core; the test fails if any compile fails or if the whole
** run exceeds its time bound (VECATTN_COMPILE_BUDGET_S, default 1200 s).
*/
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "codegen/codegen.h"
#include "runtime/runtime.h"
#include "test_util.h"

enum { MAX_SPECS = 1024 };

static va_kernel_spec specs[MAX_SPECS];
static uint64_t hashes[MAX_SPECS];
static int n_specs = 0;
static int next_spec = 0;
static int failures = 0;
static double slowest_ms = 0.0;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Add a spec unless another with the same generated source is already there. */
static void add_spec(const va_kernel_spec *s) {
    va_generated g;
    char msg[256];
    if (va_generate(s, &g, msg, sizeof msg) != VECATTN_OK) {
        fprintf(stderr, "cannot generate: %s\n", msg);
        ++failures;
        return;
    }
    int dup = 0;
    for (int i = 0; i < n_specs && !dup; ++i) dup = hashes[i] == g.hash;
    if (!dup && n_specs < MAX_SPECS) {
        hashes[n_specs] = g.hash;
        specs[n_specs++] = *s;
    }
    va_generated_free(&g);
}

static void build_grid(void) {
    static const int archs[] = {80, 90}, dims[] = {64, 128}, pqs[] = {32, 64, 128}, bks[] = {8, 16, 32},
                     gks[] = {1, 16, 8192};
    for (int a = 0; a < 2; ++a)
        for (int d = 0; d < 2; ++d)
            for (int p = 0; p < 3; ++p)
                for (int causal = 0; causal < 2; ++causal)
                    for (int dt = 0; dt < 2; ++dt) {
                        va_kernel_spec s;
                        va_spec_default_attention(&s, archs[a], (vecattn_dtype)dt, dims[d], causal, pqs[p]);
                        add_spec(&s);
                        for (int b = 0; b < 3; ++b)
                            for (int g = 0; g < 3; ++g) {
                                va_spec_default_select(&s, archs[a], (vecattn_dtype)dt, dims[d], causal, pqs[p],
                                                       bks[b], gks[g]);
                                add_spec(&s);
                            }
                    }
}

static void *worker(void *unused) {
    (void)unused;
    for (;;) {
        pthread_mutex_lock(&lock);
        int i = next_spec++;
        pthread_mutex_unlock(&lock);
        if (i >= n_specs) return NULL;
        va_generated g;
        char msg[256];
        void *cubin = NULL;
        size_t size = 0;
        char *log = NULL;
        double t0 = now_s();
        vecattn_status st = va_generate(&specs[i], &g, msg, sizeof msg);
        if (st == VECATTN_OK) st = va_nvrtc_compile(&g, &cubin, &size, &log);
        double ms = (now_s() - t0) * 1e3;
        pthread_mutex_lock(&lock);
        if (st != VECATTN_OK) {
            ++failures;
            fprintf(stderr, "FAIL %s: %s\n%s\n", g.name ? g.name : "?", vecattn_status_string(st), log ? log : msg);
        }
        if (ms > slowest_ms) slowest_ms = ms;
        pthread_mutex_unlock(&lock);
        free(cubin);
        free(log);
        va_generated_free(&g);
    }
}

int main(void) {
    const char *budget_env = getenv("VECATTN_COMPILE_BUDGET_S");
    double budget = budget_env ? atof(budget_env) : 1200.0;
    build_grid();
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    int n_threads = cores < 1 ? 1 : cores > 16 ? 16 : (int)cores;
    printf("compiling %d distinct modules on %d threads\n", n_specs, n_threads);
    fflush(stdout);
    double t0 = now_s();
    pthread_t threads[16];
    for (int i = 0; i < n_threads; ++i) pthread_create(&threads[i], NULL, worker, NULL);
    for (int i = 0; i < n_threads; ++i) pthread_join(threads[i], NULL);
    double elapsed = now_s() - t0;
    printf("%d modules in %.1f s (slowest %.0f ms), %d failed\n", n_specs, elapsed, slowest_ms, failures);
    CHECK(failures == 0, "%d module(s) failed to compile", failures);
    CHECK(n_specs >= 400, "only %d distinct modules: the grid collapsed", n_specs);
    CHECK(elapsed < budget, "compiling took %.0f s, over the %.0f s budget", elapsed, budget);
    return test_exit_code("test_nvrtc_compile");
}
