/*
** module.c -- the in-process module cache: spec -> generated source -> CUBIN -> CUmodule.
**
** Modules are keyed by the content hash of their source and options plus the CUDA context
** they were loaded into, so two specs that generate the same text share one module. The
** cache is process-wide, guarded by one mutex, and never shrinks (a handful of modules per
** problem shape).
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

/* Compile and load; called with the lock held. */
static vecattn_status build_module(vecattn_ctx *ctx, const va_kernel_spec *spec,
                                   const va_generated *gen, va_module **out) {
    double t0 = now_ms();
    void *cubin = NULL;
    size_t cubin_size = 0;
    char *log = NULL;
    vecattn_status st = va_nvrtc_compile(gen, &cubin, &cubin_size, &log);
    if (st != VECATTN_OK) {
        st = va_fail(ctx, st, "NVRTC could not compile %s:\n%s", gen->name, log ? log : "(no log)");
        free(log);
        return st;
    }
    free(log);
    double t1 = now_ms();
    CUmodule module;
    CUresult r = va_cuModuleLoadData(&module, cubin);
    free(cubin);
    if (r != CUDA_SUCCESS)
        return va_fail(ctx, VECATTN_E_DRIVER, "cuModuleLoadData(%s) failed: %s", gen->name,
                       va_cu_error_name(r));
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
    va_log(ctx, "compiled %s (%016llx): NVRTC %.0f ms, load %.1f ms, %zu bytes", gen->name,
           (unsigned long long)gen->hash, t1 - t0, now_ms() - t1, cubin_size);
    *out = m;
    return VECATTN_OK;
}

vecattn_status va_module_get(vecattn_ctx *ctx, const va_kernel_spec *spec, va_module **out) {
    va_generated gen;
    char msg[512];
    vecattn_status st = va_generate(spec, &gen, msg, sizeof msg);
    if (st != VECATTN_OK) return va_fail(ctx, st, "%s", msg);
    pthread_mutex_lock(&cache_lock);
    va_module *m = find_loaded(gen.hash, ctx->primary);
    if (!m) {
        dump_source(ctx, &gen);
        st = build_module(ctx, spec, &gen, &m);
    }
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
