/*
** tuning.c -- which tile configuration a problem runs with.
**
** Today: the built-in heuristic defaults of codegen/spec.c. The autotuner's cache lookup
** (exact bucket -> nearest bucket -> same compute capability -> default) plugs in here.
*/
#include "runtime/runtime.h"

vecattn_status va_choose_spec(vecattn_ctx *ctx, va_kernel_kind kind, const vecattn_prefill_args *a,
                              double sparsity_hint, va_kernel_spec *spec) {
    (void)sparsity_hint;
    if (kind == VA_KERNEL_SELECT)
        va_spec_default_select(spec, ctx->arch, a->dtype, a->head_dim, a->causal, a->pq, a->bk, a->gk);
    else
        va_spec_default_attention(spec, ctx->arch, a->dtype, a->head_dim, a->causal, a->pq);
    return VECATTN_OK;
}
