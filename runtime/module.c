/*
** module.c -- the module cache: spec -> generated source -> CUBIN -> CUmodule.
**
** Two levels. In the process, modules are keyed by the content hash of their source and
** options plus the CUDA context they were loaded into, so two specs that generate the same
** text share one module; that list is process-wide, guarded by one mutex, and never shrinks
** (a handful of modules per problem shape). Below it, the SQLite cache (ctx->cache) keeps
** CUBINs across processes, keyed by (hash, options, arch, NVRTC identity): a hit loads
** without NVRTC; a miss is claimed, re-checked, compiled outside any transaction and put.
** VECATTN_NO_JIT turns a miss into an error that says how to precompile.
*/
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "runtime/runtime.h"

enum { MAX_ENTRIES = 4 };

struct va_module {
    uint64_t hash;
    CUcontext context;
    CUmodule module;
    char *name;
    size_t smem;                  /* dynamic shared memory of every entry point */
    const char *entry_names[MAX_ENTRIES];
    CUfunction entries[MAX_ENTRIES];
    struct va_module *next;
};

static pthread_mutex_t cache_lock = PTHREAD_MUTEX_INITIALIZER;
static va_module *cache_head = NULL;

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static void dump_source(vecattn_ctx *ctx, const va_generated *gen) {
    if (!ctx->dump_dir) return;
    char path[4096];
    snprintf(path, sizeof path, "%s/%s.cu", ctx->dump_dir, gen->name);
    FILE *f = fopen(path, "w");
    if (!f) {
        va_log(ctx, "cannot write %s", path);
        return;
    }
    fputs(gen->source, f);
    fclose(f);
}

static va_module *find_loaded(uint64_t hash, CUcontext context) {
    for (va_module *m = cache_head; m; m = m->next)
        if (m->hash == hash && m->context == context) return m;
    return NULL;
}

/* ---- CUBINs: SQLite, else NVRTC ----------------------------------------------------- */

/* How long a claim to compile a module lasts: far above a cold compile (about a second), so
** that only a hung or killed process on another host makes the others wait it out. */
enum { CLAIM_LEASE_S = 60 };

static void sleep_ms(int ms) {
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* A warning the cache raised after open (a damaged file moved aside): printed once. */
static void print_cache_warning(vecattn_ctx *ctx) {
    const char *w = ctx->cache ? va_cache_take_warning(ctx->cache) : NULL;
    if (w) fprintf(stderr, "vecattn: warning: %s\n", w);
}

/* Another process may be compiling the same module: wait for its CUBIN while its claim
** lives. 1: got the CUBIN; 0: the claim is ours, compile. */
static int claim_or_wait(vecattn_ctx *ctx, const va_kernel_key *key, void **cubin, size_t *size) {
    double start = now_ms();
    int delay = 5;
    while (!va_cache_claim_kernel(ctx->cache, key, CLAIM_LEASE_S)) {
        if (va_cache_get_kernel(ctx->cache, key, cubin, size)) return 1;
        if (delay == 5) va_log(ctx, "module %s: another process compiles it; waiting", key->name);
        if (now_ms() - start > 2e3 * CLAIM_LEASE_S) return 0;  /* a stuck claim: compile anyway */
        sleep_ms(delay);
        delay = delay < 200 ? delay * 2 : 200;
    }
    /* Re-check under the claim: the other process may have published just before. */
    if (va_cache_get_kernel(ctx->cache, key, cubin, size)) {
        va_cache_release_claim(ctx->cache, key);
        return 1;
    }
    return 0;
}

static vecattn_status compile_and_store(vecattn_ctx *ctx, const va_generated *gen, const va_kernel_key *key,
                                        void **cubin, size_t *size) {
    double t0 = now_ms();
    char *log = NULL;
    dump_source(ctx, gen);
    vecattn_status st = va_nvrtc_compile(gen, cubin, size, &log);
    if (st != VECATTN_OK) {
        if (ctx->cache) {
            va_cache_mark_failed(ctx->cache, gen->hash, gen->name, log ? log : "(no log)");
            va_cache_release_claim(ctx->cache, key);
        }
        st = va_fail(ctx, st, "NVRTC could not compile %s:\n%s", gen->name, log ? log : "(no log)");
        free(log);
        return st;
    }
    free(log);
    va_log(ctx, "module %s: compiled by NVRTC in %.0f ms (%zu bytes)", gen->name, now_ms() - t0, *size);
    if (!ctx->cache) return VECATTN_OK;
    if (va_cache_put_kernel(ctx->cache, key, *cubin, *size) == VECATTN_OK)
        va_log(ctx, "module %s: stored in %s", gen->name, va_cache_path(ctx->cache));
    else
        va_log(ctx, "module %s: not stored (%s)", gen->name, va_cache_errmsg(ctx->cache));
    return VECATTN_OK;
}

static vecattn_status no_jit_error(vecattn_ctx *ctx, const va_kernel_spec *spec, const va_generated *gen,
                                   const va_kernel_key *key) {
    const char *path = ctx->cache ? va_cache_path(ctx->cache) : "(none)";
    return va_fail(ctx, VECATTN_E_CACHE,
                   "VECATTN_NO_JIT is set and module %s (hash %016llx, %s, NVRTC %s) is not in cache %s; "
                   "precompile it on any machine with the same NVRTC: `vecattn-autotune --cache %s precompile "
                   "--arch %s --head-dim %d` (tuned configs in that cache are compiled too), or unset "
                   "VECATTN_NO_JIT",
                   gen->name, (unsigned long long)gen->hash, va_arch_target(spec->arch), key->nvrtc_id, path,
                   path, va_arch_target(spec->arch), spec->head_dim);
}

vecattn_status va_module_cubin(vecattn_ctx *ctx, const va_kernel_spec *spec, const va_generated *gen,
                               void **cubin, size_t *size, int *from_cache) {
    char options[1024];
    va_kernel_key key;
    va_cache_kernel_key(&key, gen, spec->arch, va_nvrtc_identity(), options, sizeof options);
    *cubin = NULL;
    *size = 0;
    *from_cache = 0;
    double t0 = now_ms();
    int hit = ctx->cache && va_cache_get_kernel(ctx->cache, &key, cubin, size);
    if (!hit && ctx->no_jit) {
        print_cache_warning(ctx);
        return no_jit_error(ctx, spec, gen, &key);
    }
    if (!hit && ctx->cache) hit = claim_or_wait(ctx, &key, cubin, size);
    print_cache_warning(ctx);
    if (hit) {
        *from_cache = 1;
        va_log(ctx, "module %s: SQLite hit (%zu bytes, %.1f ms)", gen->name, *size, now_ms() - t0);
        return VECATTN_OK;
    }
    return compile_and_store(ctx, gen, &key, cubin, size);
}

/* ---- loading ------------------------------------------------------------------------- */

static vecattn_status add_module(vecattn_ctx *ctx, const va_kernel_spec *spec, const va_generated *gen,
                                 CUmodule module, va_module **out) {
    va_module *m = calloc(1, sizeof *m);
    if (!m || !(m->name = strdup(gen->name))) {
        free(m);
        return va_fail(ctx, VECATTN_E_NOMEM, "out of memory");
    }
    m->hash = gen->hash;
    m->context = ctx->primary;
    m->module = module;
    m->smem = va_spec_smem_bytes(spec);
    m->next = cache_head;
    cache_head = m;
    *out = m;
    return VECATTN_OK;
}

/* Get the CUBIN and load it; called with the lock held. A cached CUBIN the driver refuses
** is deleted from the cache and compiled afresh, once. */
static vecattn_status build_module(vecattn_ctx *ctx, const va_kernel_spec *spec,
                                   const va_generated *gen, va_module **out) {
    for (int attempt = 0; attempt < 2; ++attempt) {
        void *cubin = NULL;
        size_t size = 0;
        int from_cache = 0;
        vecattn_status st = va_module_cubin(ctx, spec, gen, &cubin, &size, &from_cache);
        if (st != VECATTN_OK) return st;
        double t0 = now_ms();
        CUmodule module;
        CUresult r = va_cuModuleLoadData(&module, cubin);
        free(cubin);
        if (r == CUDA_SUCCESS) {
            va_log(ctx, "module %s: loaded in %.1f ms", gen->name, now_ms() - t0);
            return add_module(ctx, spec, gen, module, out);
        }
        if (!from_cache || ctx->no_jit)
            return va_fail(ctx, VECATTN_E_DRIVER, "cuModuleLoadData(%s) failed: %s", gen->name,
                           va_cu_error_name(r));
        va_log(ctx, "module %s: the driver refused the cached CUBIN (%s); deleting it and compiling",
               gen->name, va_cu_error_name(r));
        char options[1024];
        va_kernel_key key;
        va_cache_kernel_key(&key, gen, spec->arch, va_nvrtc_identity(), options, sizeof options);
        va_cache_delete_kernel(ctx->cache, &key);
    }
    return va_fail(ctx, VECATTN_E_DRIVER, "module %s: no loadable CUBIN", gen->name);
}

vecattn_status va_module_get(vecattn_ctx *ctx, const va_kernel_spec *spec, va_module **out) {
    va_generated gen;
    char msg[512];
    vecattn_status st = va_generate(spec, &gen, msg, sizeof msg);
    if (st != VECATTN_OK) return va_fail(ctx, st, "%s", msg);
    pthread_mutex_lock(&cache_lock);
    va_module *m = find_loaded(gen.hash, ctx->primary);
    if (m) va_log(ctx, "module %s: in-process hit", gen.name);
    else st = build_module(ctx, spec, &gen, &m);
    pthread_mutex_unlock(&cache_lock);
    va_generated_free(&gen);
    *out = m;
    return st;
}

vecattn_status va_module_function(vecattn_ctx *ctx, va_module *mod, const char *entry,
                                  CUfunction *out) {
    pthread_mutex_lock(&cache_lock);
    vecattn_status st = VECATTN_OK;
    int slot = 0;
    while (slot < MAX_ENTRIES && mod->entry_names[slot] && strcmp(mod->entry_names[slot], entry))
        ++slot;
    if (slot == MAX_ENTRIES) {
        st = va_fail(ctx, VECATTN_E_INTERNAL, "module %s: too many entry points", mod->name);
    } else if (!mod->entry_names[slot]) {
        CUfunction fn;
        CUresult r = va_cuModuleGetFunction(&fn, mod->module, entry);
        if (r == CUDA_SUCCESS && mod->smem > 48 * 1024)
            r = va_cuFuncSetAttribute(fn, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, (int)mod->smem);
        if (r != CUDA_SUCCESS) {
            st = va_fail(ctx, VECATTN_E_DRIVER, "module %s, entry %s: %s", mod->name, entry,
                         va_cu_error_name(r));
        } else {
            mod->entries[slot] = fn;
            mod->entry_names[slot] = entry;  /* entry names are string literals */
        }
    }
    if (st == VECATTN_OK) *out = mod->entries[slot];
    pthread_mutex_unlock(&cache_lock);
    return st;
}

vecattn_status va_launch(vecattn_ctx *ctx, CUfunction fn, unsigned gx, unsigned gy, unsigned gz,
                         unsigned threads, size_t smem, CUstream stream, void *params,
                         size_t params_size) {
    (void)params_size;
    void *args[] = {params};  /* each kernel takes one parameter block by value */
    CUresult r = va_cuLaunchKernel(fn, gx, gy, gz, threads, 1, 1, (unsigned)smem, stream, args, NULL);
    if (r != CUDA_SUCCESS)
        return va_fail(ctx, VECATTN_E_LAUNCH, "launch (%u, %u, %u) x %u threads, %zu B shared: %s",
                       gx, gy, gz, threads, smem, va_cu_error_name(r));
    return VECATTN_OK;
}
