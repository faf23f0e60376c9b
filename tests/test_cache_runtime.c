/*
** test_cache_runtime.c -- the runtime's CUBIN path (va_module_cubin, runtime/module.c) over the
** SQLite cache, without a GPU: VECATTN_NO_JIT on a miss is a clear error naming the module and
** how to precompile; a miss compiles with NVRTC and stores; the next call is a SQLite hit;
** a stale NVRTC identity and a CUBIN failing its checksum are misses; a failed compile is
** recorded in the failed configs and leaves no claim behind.
*/
#include <string.h>

#include "test_util.h"
#include "cache_util.h"

/* A context with a cache and no device: all va_module_cubin reads of it. */
static vecattn_ctx *fake_ctx(const char *file) {
    vecattn_ctx *ctx = calloc(1, sizeof *ctx);
    ctx->magic = VA_CTX_MAGIC;
    ctx->cache = va_cache_open(file, NULL);
    return ctx;
}

static vecattn_status get(vecattn_ctx *ctx, const va_kernel_spec *spec, int *from_cache) {
    va_generated gen;
    char msg[256];
    CHECK(va_generate(spec, &gen, msg, sizeof msg) == VECATTN_OK, "generate: %s", msg);
    void *cubin = NULL;
    size_t size = 0;
    vecattn_status st = va_module_cubin(ctx, spec, &gen, &cubin, &size, from_cache);
    CHECK(st != VECATTN_OK || (cubin && size > 1000), "a CUBIN comes back with OK");
    free(cubin);
    va_generated_free(&gen);
    return st;
}

static void test_paths(const char *file) {
    vecattn_ctx *ctx = fake_ctx(file);
    va_kernel_spec spec;
    va_spec_default_attention(&spec, 80, VECATTN_BF16, 64, 1, 64);
    int from_cache = -1;
    ctx->no_jit = 1;
    CHECK(get(ctx, &spec, &from_cache) == VECATTN_E_CACHE, "NO_JIT and a miss: VECATTN_E_CACHE");
    CHECK(strstr(ctx->errmsg, "attn_") && strstr(ctx->errmsg, "precompile --arch sm_80") &&
              strstr(ctx->errmsg, file), "the message names the module, the cache and the fix: %s", ctx->errmsg);
    ctx->no_jit = 0;
    CHECK(get(ctx, &spec, &from_cache) == VECATTN_OK && from_cache == 0, "a miss compiles: %s", ctx->errmsg);
    CHECK(peek_int(file, "SELECT count(*) FROM kernels") == 1, "and stores");
    CHECK(peek_int(file, "SELECT count(*) FROM claims") == 0, "and releases its claim");
    ctx->no_jit = 1;
    CHECK(get(ctx, &spec, &from_cache) == VECATTN_OK && from_cache == 1, "the next call is a SQLite hit");
    CHECK(poke(file, "UPDATE kernels SET nvrtc_id = '12.9/libnvrtc.so.12.9.86/1'") == SQLITE_OK, "age the row");
    CHECK(get(ctx, &spec, &from_cache) == VECATTN_E_CACHE, "a CUBIN of another NVRTC is a miss");
    ctx->no_jit = 0;
    CHECK(get(ctx, &spec, &from_cache) == VECATTN_OK && from_cache == 0, "and gets rebuilt");
    CHECK(poke(file, "UPDATE kernels SET checksum = checksum + 1") == SQLITE_OK, "break the checksums");
    ctx->no_jit = 1;
    CHECK(get(ctx, &spec, &from_cache) == VECATTN_E_CACHE, "a CUBIN failing its checksum is a miss");
    CHECK(peek_int(file, "SELECT count(*) FROM kernels WHERE nvrtc_id NOT LIKE '12.9%'") == 0, "and is deleted");
    va_cache_close(ctx->cache);
    free(ctx);
}

static void test_failed_compile(const char *file) {
    vecattn_ctx *ctx = fake_ctx(file);
    va_kernel_spec spec;
    va_spec_default_select(&spec, 80, VECATTN_BF16, 64, 1, 64, 16, 16);
    va_generated gen;
    char msg[256];
    CHECK(va_generate(&spec, &gen, msg, sizeof msg) == VECATTN_OK, "generate");
    free(gen.source);
    gen.source = strdup("this is not CUDA;\n");
    gen.hash = 0x5eed;
    void *cubin = NULL;
    size_t size = 0;
    int from_cache = 0;
    CHECK(va_module_cubin(ctx, &spec, &gen, &cubin, &size, &from_cache) == VECATTN_E_NVRTC, "NVRTC fails");
    CHECK(va_cache_is_failed(ctx->cache, 0x5eed), "the failure is recorded");
    CHECK(peek_int(file, "SELECT count(*) FROM claims") == 0, "no claim is left behind");
    va_generated_free(&gen);
    va_cache_close(ctx->cache);
    free(ctx);
}

int main(void) {
    char *dir = scratch_dir("runtime");
    char *file = path_in(dir, "c.db");
    test_paths(file);
    test_failed_compile(file);
    remove_tree(dir);
    free(file), free(dir);
    return test_exit_code("test_cache_runtime");
}
