/*
** tuning.c -- which tile configuration a problem runs with.
**
** Today: the built-in heuristic defaults of codegen/spec.c. The autotuner's cache lookup
** (exact bucket -> nearest bucket -> same compute capability -> default) plugs in here.
** VECATTN_TILES_SELECT / VECATTN_TILES_ATTENTION (e.g. "block_m=64,block_n=64,warps=2")
** override the tiles of every problem: for experiments and benchmarks of one config.
*/
#include <stdlib.h>

#include "runtime/runtime.h"

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
    (void)sparsity_hint;
    if (kind == VA_KERNEL_SELECT)
        va_spec_default_select(spec, ctx->arch, a->dtype, a->head_dim, a->causal, a->pq, a->bk, a->gk);
    else
        va_spec_default_attention(spec, ctx->arch, a->dtype, a->head_dim, a->causal, a->pq);
    return apply_env_tiles(ctx, spec);
}
