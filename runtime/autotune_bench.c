/*
** autotune_bench.c -- one problem on the device, for the autotuner: the default config's
** outputs, the check of a candidate against them, and timing.
**
** Timing (see shared/notes/jit-and-cache-designs.md, section 6):
**   - driver events around each sample, on a stream of the bench's own;
**   - warm-up by time (50 ms, quick 20 ms), which also loads the module;
**   - before each sample the L2 is flushed by a memset of max(3 x L2, 64 MiB), outside the
**     timed window;
**   - the stream is held by cuStreamWaitValue32 on a pinned word until the flush, both
**     events and the launches are queued, then released: the host's launch overhead (code
**     generation lookups, argument checks) never lands inside the window. None of the calls
**     made while the stream is held waits for the device (no output goes to the host, the
**     workspace is not grown, the module is already loaded), so the hold cannot deadlock;
**   - median of the samples; sampling stops when the median's relative standard error
**     (1.858 MAD / sqrt(n) / median) is below 1%, or at a cap on samples and time.
** Sections: helpers, open/close, the default config's outputs, check, timing.
*/
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "runtime/autotune.h"

struct va_tune_bench {
    vecattn_ctx *ctx;
    va_kernel_kind kind;
    vecattn_prefill_args a; /* the problem; o is the bench's own */
    int quick;
    CUstream stream;
    CUevent start, stop;
    CUdeviceptr flush;
    size_t flush_bytes;
    volatile uint32_t *gate; /* pinned; the stream waits until it reaches gate_value */
    CUdeviceptr gate_dev;
    uint32_t gate_value;
    CUdeviceptr o; /* [B, Hq, Sq, D] */
    size_t o_elems;
    CUdeviceptr counts, offsets, indices;
    vecattn_selection sel; /* selection: the output; attention: the input */
    int64_t rows, total;
    uint16_t *ref_o; /* the default config's outputs on the host */
    int32_t *ref_counts, *ref_indices;
    int64_t *ref_offsets;
    double kept, flops;
    int saved_forced_set[2]; /* the context's forced specs before the bench */
    va_kernel_spec saved_forced[2];
};

/* ---- helpers ------------------------------------------------------------------------------ */

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec * 1e-6;
}

static vecattn_status alloc_dev(vecattn_ctx *ctx, CUdeviceptr *p, size_t bytes, const char *what) {
    CUresult r = va_cuMemAlloc(p, bytes ? bytes : 16);
    if (r != CUDA_SUCCESS)
        return va_fail(ctx, VECATTN_E_NOMEM, "cuMemAlloc (%s, %zu bytes): %s", what, bytes, va_cu_error_name(r));
    return VECATTN_OK;
}

static vecattn_status download(vecattn_ctx *ctx, void *dst, CUdeviceptr src, size_t bytes) {
    return va_check_cu(ctx, va_cuMemcpyDtoH(dst, src, bytes), "cuMemcpyDtoH");
}

static double elem_value(uint16_t h, vecattn_dtype dt) {
    if (dt != VECATTN_FP16) {
        uint32_t u = (uint32_t)h << 16;
        float f;
        memcpy(&f, &u, sizeof f);
        return f;
    }
    int exp = (h >> 10) & 0x1f, man = h & 0x3ff;
    double v = exp == 0 ? ldexp(man, -24) : exp == 31 ? (man ? NAN : INFINITY) : ldexp(man + 1024, exp - 25);
    return h & 0x8000 ? -v : v;
}

/* Candidate keys of query block i (the selection scores each of them). */
static double candidates(const vecattn_prefill_args *a, int i) {
    if (!a->causal) return a->seq_k;
    int64_t p0 = (int64_t)i * a->pq + (a->seq_k - a->seq_q);
    int64_t hi = p0 < a->seq_k ? p0 : a->seq_k;
    return hi > a->pq ? (double)(hi - a->pq) : 0.0;
}

static double valid_pairs(const vecattn_prefill_args *a) {
    double sq = a->seq_q, shift = a->seq_k - a->seq_q;
    return a->causal ? sq * (shift + 1.0) + sq * (sq - 1.0) / 2.0 : sq * a->seq_k;
}

static int n_qblocks(const vecattn_prefill_args *a) { return (a->seq_q + a->pq - 1) / a->pq; }

/* One run of the stage on the bench's stream, with whatever spec is forced. The selection
** runs as vecattn_select does (count, scan, fill into compact lists): its outputs can be
** compared key by key. Prefill runs the same kernel's fill pass alone, into bit masks,
** so the ranking of selection configs carries over. */
static vecattn_status run_once(va_tune_bench *b) {
    vecattn_stream s = (vecattn_stream)b->stream;
    if (b->kind == VA_KERNEL_SELECT) return vecattn_select(b->ctx, &b->a, &b->sel, NULL, s);
    if (b->a.dense) return vecattn_prefill(b->ctx, &b->a, s);
    return vecattn_sparse_attention(b->ctx, &b->a, NULL, &b->sel, s);
}

/* ---- open and close --------------------------------------------------------------------------- */

static vecattn_status make_timer(va_tune_bench *b) {
    vecattn_ctx *ctx = b->ctx;
    int l2 = 0;
    va_cuDeviceGetAttribute(&l2, CU_DEVICE_ATTRIBUTE_L2_CACHE_SIZE, ctx->device);
    b->flush_bytes = (size_t)l2 * 3 > ((size_t)64 << 20) ? (size_t)l2 * 3 : (size_t)64 << 20;
    vecattn_status st = va_check_cu(ctx, va_cuStreamCreate(&b->stream, CU_STREAM_NON_BLOCKING), "cuStreamCreate");
    if (!st) st = va_check_cu(ctx, va_cuEventCreate(&b->start, CU_EVENT_DEFAULT), "cuEventCreate");
    if (!st) st = va_check_cu(ctx, va_cuEventCreate(&b->stop, CU_EVENT_DEFAULT), "cuEventCreate");
    if (!st) st = alloc_dev(ctx, &b->flush, b->flush_bytes, "L2 flush");
    void *gate = NULL;
    if (!st) st = va_check_cu(ctx, va_cuMemAllocHost(&gate, sizeof(uint32_t)), "cuMemAllocHost");
    if (!st) {
        b->gate = gate;
        *b->gate = 0;
        if (va_cuMemHostGetDevicePointer(&b->gate_dev, gate, 0) != CUDA_SUCCESS) b->gate_dev = 0;
    }
    return st;
}

void va_tune_bench_close(va_tune_bench *b) {
    if (!b) return;
    vecattn_ctx *ctx = b->ctx;
    if (va_cuCtxPushCurrent(ctx->primary) == CUDA_SUCCESS) {
        if (b->stream) va_cuStreamSynchronize(b->stream), va_cuStreamDestroy(b->stream);
        if (b->start) va_cuEventDestroy(b->start);
        if (b->stop) va_cuEventDestroy(b->stop);
        CUdeviceptr bufs[] = {b->flush, b->o, b->counts, b->offsets, b->indices};
        for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; ++i)
            if (bufs[i]) va_cuMemFree(bufs[i]);
        if (b->gate) va_cuMemFreeHost((void *)b->gate);
        CUcontext popped;
        va_cuCtxPopCurrent(&popped);
    }
    for (int k = 0; k < 2; ++k)
        va_force_spec(ctx, (va_kernel_kind)k, b->saved_forced_set[k] ? &b->saved_forced[k] : NULL);
    free(b->ref_o), free(b->ref_counts), free(b->ref_offsets), free(b->ref_indices);
    free(b);
}

/* ---- the default config's outputs -------------------------------------------------------------- */

/* The selection into the bench's CSR buffers (sized on the first call), with the forced
** selection spec. */
static vecattn_status select_into_bench(va_tune_bench *b) {
    vecattn_ctx *ctx = b->ctx;
    vecattn_status st = VECATTN_OK;
    if (!b->counts) {
        b->rows = (int64_t)b->a.batch * b->a.heads_q * n_qblocks(&b->a);
        st = alloc_dev(ctx, &b->counts, (size_t)b->rows * 4, "counts");
        if (!st) st = alloc_dev(ctx, &b->offsets, (size_t)(b->rows + 1) * 8, "offsets");
        b->sel = (vecattn_selection){(int32_t *)b->counts, (int64_t *)b->offsets, NULL, 0};
        if (!st) st = vecattn_select(ctx, &b->a, &b->sel, &b->total, (vecattn_stream)b->stream);
        if (!st) st = alloc_dev(ctx, &b->indices, (size_t)(b->total > 0 ? b->total : 1) * 4, "indices");
        b->sel.indices = (int32_t *)b->indices;
        b->sel.indices_capacity = b->total;
    }
    if (!st) st = vecattn_select(ctx, &b->a, &b->sel, NULL, (vecattn_stream)b->stream);
    if (!st) st = va_check_cu(ctx, va_cuStreamSynchronize(b->stream), "cuStreamSynchronize");
    return st;
}

static vecattn_status reference_selection(va_tune_bench *b) {
    vecattn_ctx *ctx = b->ctx;
    vecattn_status st = select_into_bench(b);
    if (st) return st;
    b->ref_counts = malloc((size_t)b->rows * 4);
    b->ref_offsets = malloc((size_t)(b->rows + 1) * 8);
    b->ref_indices = malloc((size_t)(b->total > 0 ? b->total : 1) * 4);
    if (!b->ref_counts || !b->ref_offsets || !b->ref_indices) return va_fail(ctx, VECATTN_E_NOMEM, "out of memory");
    st = download(ctx, b->ref_counts, b->counts, (size_t)b->rows * 4);
    if (!st) st = download(ctx, b->ref_offsets, b->offsets, (size_t)(b->rows + 1) * 8);
    if (!st) st = download(ctx, b->ref_indices, b->indices, (size_t)b->total * 4);
    double scored = 0.0;
    for (int i = 0; i < n_qblocks(&b->a); ++i) scored += candidates(&b->a, i);
    b->flops = 2.0 * 2.0 * b->a.head_dim * scored * b->a.batch * b->a.heads_q;
    b->kept = 1.0;
    return st;
}

/* The kept fraction of the problem, as prefill reports it. */
static vecattn_status measure_kept(va_tune_bench *b) {
    float sparsity = 0.0f;
    vecattn_prefill_args a = b->a;
    a.sparsity_out = &sparsity;
    vecattn_status st = vecattn_prefill(b->ctx, &a, (vecattn_stream)b->stream);
    b->kept = 1.0 - (double)sparsity;
    return st;
}

static vecattn_status reference_attention(va_tune_bench *b, const va_kernel_spec *def_select) {
    vecattn_ctx *ctx = b->ctx;
    vecattn_status st = VECATTN_OK;
    b->kept = 1.0;
    if (!b->a.dense) {
        va_force_spec(ctx, VA_KERNEL_SELECT, def_select);
        st = select_into_bench(b);
        if (!st) st = measure_kept(b);
    }
    if (!st) st = run_once(b);
    if (!st) st = va_check_cu(ctx, va_cuStreamSynchronize(b->stream), "cuStreamSynchronize");
    if (!st && !(b->ref_o = malloc(b->o_elems * 2))) st = va_fail(ctx, VECATTN_E_NOMEM, "out of memory");
    if (!st) st = download(ctx, b->ref_o, b->o, b->o_elems * 2);
    b->flops = 4.0 * b->a.head_dim * valid_pairs(&b->a) * b->a.batch * b->a.heads_q * b->kept;
    return st;
}

vecattn_status va_tune_bench_open(vecattn_ctx *ctx, va_kernel_kind kind, const vecattn_prefill_args *a, int quick,
                                  va_tune_bench **out) {
    *out = NULL;
    va_tune_bench *b = calloc(1, sizeof *b);
    if (!b) return va_fail(ctx, VECATTN_E_NOMEM, "out of memory");
    b->ctx = ctx, b->kind = kind, b->quick = quick, b->a = *a;
    for (int k = 0; k < 2; ++k)
        b->saved_forced_set[k] = ctx->tuning.forced_set[k], b->saved_forced[k] = ctx->tuning.forced[k];
    b->a.lse = NULL, b->a.sparsity_out = NULL;
    vecattn_status st = va_check_cu(ctx, va_cuCtxPushCurrent(ctx->primary), "cuCtxPushCurrent");
    if (st) {
        free(b);
        return st;
    }
    st = make_timer(b);
    b->o_elems = (size_t)a->batch * a->heads_q * a->seq_q * a->head_dim;
    if (!st && kind == VA_KERNEL_ATTENTION) st = alloc_dev(ctx, &b->o, b->o_elems * 2, "output");
    if (!st) {
        b->a.o = (void *)b->o;
        int64_t d = a->head_dim;
        b->a.o_stride[2] = d, b->a.o_stride[1] = (int64_t)a->seq_q * d,
        b->a.o_stride[0] = (int64_t)a->heads_q * a->seq_q * d;
        va_kernel_spec def, def_select;
        va_default_spec(ctx, kind, a, &def);
        va_default_spec(ctx, VA_KERNEL_SELECT, a, &def_select);
        va_force_spec(ctx, kind, &def);
        st = kind == VA_KERNEL_SELECT ? reference_selection(b) : reference_attention(b, &def_select);
    }
    CUcontext popped;
    va_cuCtxPopCurrent(&popped);
    if (st)
        va_tune_bench_close(b);
    else
        *out = b;
    return st;
}

double va_tune_bench_kept(const va_tune_bench *b) { return b->kept; }

double va_tune_bench_flops(const va_tune_bench *b) { return b->flops; }

/* ---- check ----------------------------------------------------------------------------------- */

/* A failure of the device context itself (an illegal address, say) stays: nothing else can
** run in this process's primary context after it. Called with the context current. */
static int context_broken(void) { return va_cuCtxSynchronize() != CUDA_SUCCESS; }

int va_tune_bench_broken(va_tune_bench *b) {
    if (va_cuCtxPushCurrent(b->ctx->primary) != CUDA_SUCCESS) return 1;
    int broken = context_broken();
    CUcontext popped;
    va_cuCtxPopCurrent(&popped);
    return broken;
}

static va_check_result compare_selection(va_tune_bench *b, char *why, size_t n) {
    vecattn_ctx *ctx = b->ctx;
    int32_t *counts = malloc((size_t)b->rows * 4), *indices = malloc((size_t)(b->total > 0 ? b->total : 1) * 4);
    int64_t *offsets = malloc((size_t)(b->rows + 1) * 8);
    va_check_result res = VA_CHECK_BROKEN;
    snprintf(why, n, "out of memory");
    if (counts && indices && offsets && !download(ctx, counts, b->counts, (size_t)b->rows * 4) &&
        !download(ctx, offsets, b->offsets, (size_t)(b->rows + 1) * 8) &&
        !download(ctx, indices, b->indices, (size_t)b->total * 4)) {
        res = VA_CHECK_WRONG;
        if (memcmp(counts, b->ref_counts, (size_t)b->rows * 4))
            snprintf(why, n, "counts differ from the default config's");
        else if (memcmp(offsets, b->ref_offsets, (size_t)(b->rows + 1) * 8))
            snprintf(why, n, "offsets differ");
        else if (memcmp(indices, b->ref_indices, (size_t)b->total * 4))
            snprintf(why, n, "indices differ");
        else
            res = VA_CHECK_OK;
    }
    free(counts), free(indices), free(offsets);
    return res;
}

static va_check_result compare_attention(va_tune_bench *b, char *why, size_t n) {
    uint16_t *o = malloc(b->o_elems * 2);
    if (!o || download(b->ctx, o, b->o, b->o_elems * 2)) {
        free(o);
        snprintf(why, n, "could not read the output back");
        return VA_CHECK_BROKEN;
    }
    double diff2 = 0.0, ref2 = 0.0;
    for (size_t i = 0; i < b->o_elems; ++i) {
        double x = elem_value(o[i], b->a.dtype), r = elem_value(b->ref_o[i], b->a.dtype);
        diff2 += (x - r) * (x - r);
        ref2 += r * r;
    }
    free(o);
    double rel = ref2 > 0.0 ? sqrt(diff2 / ref2) : sqrt(diff2);
    if (rel <= 1e-2) return VA_CHECK_OK; /* NaN fails here too */
    snprintf(why, n, "output differs from the default config's: relative L2 %.3g > 1e-2", rel);
    return VA_CHECK_WRONG;
}

va_check_result va_tune_bench_check(va_tune_bench *b, const va_kernel_spec *spec, char *why, size_t why_size) {
    vecattn_ctx *ctx = b->ctx;
    snprintf(why, why_size, "ok");
    if (va_cuCtxPushCurrent(ctx->primary) != CUDA_SUCCESS) return VA_CHECK_BROKEN;
    va_force_spec(ctx, spec->kind, spec);
    /* poison the outputs: a config that writes nothing must not pass */
    CUdeviceptr out = b->kind == VA_KERNEL_SELECT ? b->counts : b->o;
    size_t bytes = b->kind == VA_KERNEL_SELECT ? (size_t)b->rows * 4 : b->o_elems * 2;
    CUresult r = va_cuMemsetD8Async(out, 0xff, bytes, b->stream);
    if (r == CUDA_SUCCESS && b->kind == VA_KERNEL_SELECT) {
        r = va_cuMemsetD8Async(b->offsets, 0xff, (size_t)(b->rows + 1) * 8, b->stream);
        if (r == CUDA_SUCCESS) r = va_cuMemsetD8Async(b->indices, 0xff, (size_t)b->total * 4, b->stream);
    }
    vecattn_status st = r == CUDA_SUCCESS ? run_once(b) : VECATTN_E_DRIVER;
    if (st == VECATTN_OK) st = va_check_cu(ctx, va_cuStreamSynchronize(b->stream), "cuStreamSynchronize");
    va_check_result res;
    if (st != VECATTN_OK) {
        snprintf(why, why_size, "%s", vecattn_errmsg(ctx));
        res = context_broken() ? VA_CHECK_BROKEN : VA_CHECK_LAUNCH;
    } else {
        res = b->kind == VA_KERNEL_SELECT ? compare_selection(b, why, why_size) : compare_attention(b, why, why_size);
    }
    CUcontext popped;
    va_cuCtxPopCurrent(&popped);
    return res;
}

/* ---- timing ---------------------------------------------------------------------------------- */

static int cmp_double(const void *x, const void *y) {
    double a = *(const double *)x, b = *(const double *)y;
    return (a > b) - (a < b);
}

/* Median of ms[0..n) and the relative standard error of the median, from the MAD. */
static double median_noise(const double *ms, int n, double *noise) {
    double *s = malloc(sizeof(double) * (size_t)n);
    if (!s) return *noise = 1.0, ms[0];
    memcpy(s, ms, sizeof(double) * (size_t)n);
    qsort(s, (size_t)n, sizeof *s, cmp_double);
    double med = n % 2 ? s[n / 2] : 0.5 * (s[n / 2 - 1] + s[n / 2]);
    for (int i = 0; i < n; ++i) s[i] = fabs(s[i] - med);
    qsort(s, (size_t)n, sizeof *s, cmp_double);
    double mad = n % 2 ? s[n / 2] : 0.5 * (s[n / 2 - 1] + s[n / 2]);
    free(s);
    *noise = med > 0.0 ? 1.858 * mad / sqrt((double)n) / med : 1.0;
    return med;
}

/* One flushed sample, in milliseconds. */
static vecattn_status one_sample(va_tune_bench *b, double *ms) {
    vecattn_ctx *ctx = b->ctx;
    int gated = b->gate_dev != 0;
    ++b->gate_value;
    if (gated &&
        va_cuStreamWaitValue32(b->stream, b->gate_dev, b->gate_value, CU_STREAM_WAIT_VALUE_GEQ) != CUDA_SUCCESS)
        gated = 0, b->gate_dev = 0; /* not supported here: time without the hold */
    vecattn_status st =
        va_check_cu(ctx, va_cuMemsetD8Async(b->flush, (unsigned char)b->gate_value, b->flush_bytes, b->stream),
                    "cuMemsetD8Async (L2 flush)");
    if (!st) st = va_check_cu(ctx, va_cuEventRecord(b->start, b->stream), "cuEventRecord");
    if (!st) st = run_once(b);
    if (!st) st = va_check_cu(ctx, va_cuEventRecord(b->stop, b->stream), "cuEventRecord");
    if (gated) *b->gate = b->gate_value; /* release the stream, whatever happened */
    if (st) return st;
    float f = 0.0f;
    st = va_check_cu(ctx, va_cuEventSynchronize(b->stop), "cuEventSynchronize");
    if (!st) st = va_check_cu(ctx, va_cuEventElapsedTime(&f, b->start, b->stop), "cuEventElapsedTime");
    *ms = f;
    return st;
}

/* Run until `warm_ms` of wall time passed (at least twice). */
static vecattn_status warm_up(va_tune_bench *b, double warm_ms) {
    double t0 = now_ms();
    vecattn_status st = VECATTN_OK;
    for (int i = 0; !st && (i < 2 || now_ms() - t0 < warm_ms); ++i) {
        st = run_once(b);
        if (!st) st = va_check_cu(b->ctx, va_cuStreamSynchronize(b->stream), "cuStreamSynchronize");
    }
    return st;
}

vecattn_status va_tune_bench_time(va_tune_bench *b, const va_kernel_spec *spec, va_timing *t) {
    vecattn_ctx *ctx = b->ctx;
    const int min_n = b->quick ? 5 : 10, max_n = b->quick ? 40 : 200;
    const double warm_ms = b->quick ? 20.0 : 50.0, cap_ms = b->quick ? 400.0 : 2500.0;
    memset(t, 0, sizeof *t);
    vecattn_status st = va_check_cu(ctx, va_cuCtxPushCurrent(ctx->primary), "cuCtxPushCurrent");
    if (st) return st;
    double *ms = malloc(sizeof(double) * (size_t)max_n);
    if (!ms) st = va_fail(ctx, VECATTN_E_NOMEM, "out of memory");
    va_force_spec(ctx, spec->kind, spec);
    if (!st) st = warm_up(b, warm_ms);
    double t0 = now_ms();
    int n = 0;
    while (!st && n < max_n) {
        st = one_sample(b, &ms[n]);
        if (st) break;
        ++n;
        if (n >= min_n) {
            t->median_ms = median_noise(ms, n, &t->noise);
            if (t->noise < 0.01 || now_ms() - t0 > cap_ms) break;
        }
    }
    if (!st && n < min_n) t->median_ms = median_noise(ms, n, &t->noise);
    t->samples = n;
    free(ms);
    CUcontext popped;
    va_cuCtxPopCurrent(&popped);
    return st;
}
