/*
** bench_util.h -- what vecattn-bench's two modes share: failing loudly (exit 2 with the
** reason, as the tool's runtime failures do) on a driver or library error, and the context.
*/
#ifndef VECATTN_BENCH_UTIL_H
#define VECATTN_BENCH_UTIL_H

#include <stdio.h>
#include <stdlib.h>

#include "runtime/runtime.h"

static inline void die(const char *what, const char *detail) {
    fprintf(stderr, "vecattn-bench: %s: %s\n", what, detail);
    exit(2);
}

static inline void check_cu(CUresult r, const char *what) {
    if (r != CUDA_SUCCESS) die(what, va_cu_error_name(r));
}

/* A context on device 0, its primary context made current for the raw driver calls of the
** benchmarks; exits 2 with the library's message when there is no driver or device. */
static inline vecattn_ctx *open_context(void) {
    vecattn_ctx *ctx;
    if (vecattn_create(&ctx, 0, NULL, 0) != VECATTN_OK) {
        fprintf(stderr, "vecattn-bench: %s\n", vecattn_errmsg(ctx));
        vecattn_destroy(ctx);
        exit(2);
    }
    check_cu(va_cuCtxPushCurrent(ctx->primary), "cuCtxPushCurrent");
    return ctx;
}

#endif /* VECATTN_BENCH_UTIL_H */
