/*
** gpu_util.h -- what the GPU tests share: the device session, test cases as data, the host
** and device buffers of one problem, and the two-call selection protocol.
**
** Memory goes through the driver entry points of runtime/cuda_syms.h (va_cuMemAlloc, ...),
** inside the device's primary context, which is the one vecattn uses. A failing driver call
** here is a broken test machine, not a library bug: it prints and exits with status 1.
** Nothing here counts CHECK failures (test_util.h's counter is per program); functions
** report through their return values.
*/
#ifndef VECATTN_TEST_GPU_UTIL_H
#define VECATTN_TEST_GPU_UTIL_H

#include <stddef.h>
#include <stdint.h>

#include "runtime/runtime.h"
#include "vecattn.h"

/* ---- the device session ------------------------------------------------------------ */

typedef struct gpu_env {
    vecattn_ctx *ctx;
    CUdevice dev;
    CUcontext primary;  /* retained and current for the whole test */
    CUstream stream;    /* every library call is enqueued here */
} gpu_env;

/* 0 when ready; TEST_SKIP after printing "SKIP: <why>" (no driver, no device, GPU older
** than sm_80); 1 after printing the error. */
int gpu_env_open(gpu_env *env);
void gpu_env_close(gpu_env *env);

/* Abort the test program (exit 1) when a driver call fails. */
void gpu_must(CUresult r, const char *what);

CUdeviceptr gpu_alloc(size_t bytes);          /* never 0: at least 16 bytes are allocated */
void gpu_free(CUdeviceptr p);                 /* 0 is allowed */
void gpu_upload(CUdeviceptr dst, const void *src, size_t bytes);
void gpu_download(void *dst, CUdeviceptr src, size_t bytes); /* waits for the device first */
/* Fill with 0xFF bytes: NaN in bf16, fp16 and fp32, -1 in int32 and int64. */
void gpu_poison(CUdeviceptr p, size_t bytes);

/* ---- test cases ---------------------------------------------------------------------- */

#define TC_BSHD 1u       /* [B, S, H, D] tensors instead of [B, H, S, D] */
#define TC_PER_HEAD 2u   /* per-head thresholds (host array) derived from `threshold` */
#define TC_VERTICAL 4u   /* Q and K from va_ref_fill_vertical instead of uniform noise */
#define TC_LSE 8u        /* ask for the log-sum-exp */

typedef struct test_case {
    const char *name;   /* also seeds the random inputs */
    int batch, heads_q, heads_kv, seq_q, seq_k, head_dim;
    vecattn_dtype dtype;
    int causal, pq, bk, gk;
    float threshold;
    unsigned flags;     /* TC_* */
} test_case;

/* ---- one problem: host inputs (for the reference) and device buffers (for the API) ---- */

typedef struct test_problem {
    test_case c;
    vecattn_prefill_args host;  /* q, k, v are the host arrays below; no outputs */
    vecattn_prefill_args dev;   /* device q, k, v, o (and lse with TC_LSE) */
    uint16_t *q, *k, *v;        /* host inputs, in the same layout as on the device */
    float *thresholds;          /* host [Hq] with TC_PER_HEAD, else NULL */
    CUdeviceptr dq, dk, dv, dout, dlse;
    size_t q_elems, kv_elems;   /* elements of Q (= of O) and of K (= of V) */
    int nq;                     /* query blocks per (b, h) */
    int64_t rows;               /* B * Hq * nq: rows of the selection CSR */
} test_problem;

/* Build the problem of a case: fresh inputs seeded from the case name, uploaded. */
void problem_create(test_problem *p, const test_case *c);
void problem_destroy(test_problem *p);

/* Poison O (and LSE) on the device, so that an unwritten output can never pass. */
void problem_poison_outputs(const test_problem *p);

/* Download O (q_elems dtype bits) and, with TC_LSE, LSE ([B, Hq, Sq] floats; may be NULL). */
void problem_download_outputs(const test_problem *p, uint16_t *o, float *lse);

/* A seeded generator state for anything else a test draws for this case. */
uint64_t problem_seed(const test_problem *p, uint64_t salt);

/* ---- selections in the API's CSR layout ------------------------------------------------ */

typedef struct gpu_selection {
    vecattn_selection dev;      /* device counts, offsets, indices */
    int64_t rows, total;
    int32_t *counts;            /* host copies [rows] */
    int64_t *offsets;           /* [rows + 1] */
    int32_t *indices;           /* [max(total, 1)] */
} gpu_selection;

/*
** vecattn_select on the problem, the documented way: a first call without an index
** buffer gives counts, offsets and the total; a second call with a buffer of exactly that
** size writes the indices (outputs are poisoned before each call). Then everything is
** downloaded into the host copies. On a library error the status is returned and `s` is
** left empty; *consistent is set to 0 when the second call's total differs from the first.
*/
vecattn_status gpu_select(gpu_env *env, const test_problem *p, gpu_selection *s,
                          int *consistent);

/* Allocate host arrays for `rows` rows and `total` indices (to be filled by the caller). */
void gpu_selection_alloc_host(gpu_selection *s, int64_t rows, int64_t total);

/* Copy the host arrays to fresh device buffers (sets s->dev). */
void gpu_selection_upload(gpu_selection *s);

/* Bitwise equality of the host copies. */
int gpu_selection_equal(const gpu_selection *x, const gpu_selection *y);

void gpu_selection_free(gpu_selection *s);

#endif /* VECATTN_TEST_GPU_UTIL_H */
