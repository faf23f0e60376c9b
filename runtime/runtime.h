/*
** runtime.h -- the driver (dlopen'ed), NVRTC, the in-process module cache, launches, and
** the context internals shared by the API implementation.
*/
#ifndef VECATTN_RUNTIME_H
#define VECATTN_RUNTIME_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cuda.h>

#include "cache/cache.h"
#include "codegen/codegen.h"
#include "vecattn.h"

/* ---- driver entry points, loaded with dlopen ---------------------------------------- */
#include "runtime/cuda_syms.h"

/* Load libcuda.so.1 (or $VECATTN_LIBCUDA) once per process and resolve every symbol of
** cuda_syms.h. VECATTN_E_NO_DRIVER with a reason in msg when that fails. Thread-safe. */
vecattn_status va_driver_load(char *msg, size_t msg_size);

/* The driver's name for an error code ("CUDA_ERROR_OUT_OF_MEMORY"), never NULL. */
const char *va_cu_error_name(CUresult r);

/* TMA descriptors of a problem's K and V for the warp-specialized attention kernel (boxes of
** 64 columns x block_n rows); sets ap->tma to 1, or to 0 where the driver refuses the layout
** (the kernel then gathers every step). Returns ap->tma. */
struct vecattn_attn_params;
int va_encode_kv_maps(const vecattn_prefill_args *a, int block_n, struct vecattn_attn_params *ap);

/* ---- NVRTC -------------------------------------------------------------------------- */

/* Compile generated source to a CUBIN. On VECATTN_E_NVRTC, *log_out (malloc'ed, may be
** NULL) holds the compiler log. *cubin_out is malloc'ed. */
vecattn_status va_nvrtc_compile(const va_generated *gen, void **cubin_out, size_t *cubin_size,
                                char **log_out);

/* NVRTC's version. */
void va_nvrtc_version(int *major, int *minor);

/* NVRTC's identity for cache keys, including its build: e.g. "13.0/libnvrtc.so.13.0.88/<size>"
** (the resolved library file name carries the build number). Static string. */
const char *va_nvrtc_identity(void);

/* ---- context ------------------------------------------------------------------------ */

/* How a context chooses tile configurations (runtime/tuning.c, runtime/autotune.h). All
** zero after vecattn_create's calloc, which means: nothing forced, VECATTN_AUTOTUNE not read
** yet, no tuning running, no choice remembered. Owns no memory. */
typedef struct va_tuning_state {
    int forced_set[2];               /* per va_kernel_kind: va_force_spec is in effect */
    va_kernel_spec forced[2];
    int auto_mode;                   /* 0 not read yet, 1 off, 2 on (VECATTN_AUTOTUNE=1) */
    int active;                      /* a tuning runs on this context: never nest another */
    int memo_count, memo_next;       /* the last choices, so that a prefill does not query */
    struct {                         /* SQLite for every call */
        va_tune_key key;
        va_kernel_spec spec;
    } memo[8];
} va_tuning_state;

struct vecattn_ctx {
    uint32_t magic;            /* VA_CTX_MAGIC while alive: catches use after destroy */
    vecattn_status last_status;
    char errmsg[8192];
    int device_ordinal;
    CUdevice device;
    CUcontext primary;         /* retained primary context, or NULL */
    int arch;                  /* compute capability * 10 */
    int sm_count;
    char *cache_path;          /* as given to vecattn_create, or NULL */
    va_cache *cache;           /* the persistent store, opened at create (never NULL after a
                                  successful create unless memory ran out) */
    int no_jit;                /* VECATTN_NO_JIT: a CUBIN missing from the cache is an error */
    int log_debug;
    char *dump_dir;
    /* device workspace, grown on demand */
    CUdeviceptr workspace;
    size_t workspace_size;
    /* pinned host word for reading back totals */
    void *host_scratch;
    va_tuning_state tuning;    /* tile choice: forced specs, first-use tuning, remembered choices */
};

#define VA_CTX_MAGIC 0x76656361u  /* "veca" */

/* Record a failure on the context and return its code: the one place to break on errors. */
vecattn_status va_fail(vecattn_ctx *ctx, vecattn_status code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Debug log to stderr when VECATTN_LOG=debug. */
void va_log(const vecattn_ctx *ctx, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Check a driver result; on failure record "<what>: <CUDA_ERROR_...>" and return
** VECATTN_E_DRIVER (or `code` for launches). */
vecattn_status va_check_cu(vecattn_ctx *ctx, CUresult r, const char *what);

/* Start an API call: check the handle, clear the last error, make the device's primary
** context current (pushed). Every successful enter is paired with va_ctx_leave(). */
vecattn_status va_ctx_enter(vecattn_ctx *ctx);
void va_ctx_leave(vecattn_ctx *ctx);

/* Query-key pairs of one (batch, head) of the problem: *valid (causal: the visible ones) and
** *forced, those the spec's forced keys (causal sink and diagonal) attend; for sparsities. */
void va_pair_counts(const vecattn_prefill_args *a, double *valid, double *forced);

/* Ensure at least `bytes` of device workspace. Growing waits for the device first, since
** work queued earlier may still read the old buffer. */
vecattn_status va_workspace_reserve(vecattn_ctx *ctx, size_t bytes);

/* ---- tile configurations ------------------------------------------------------------------- */

/* The dense mode has no query blocks of its own; it tiles queries by VA_DENSE_PQ rows, the
** most the kernels take, where the sm_90a kernel shares each K/V tile between two warpgroups. */
#define VA_DENSE_PQ 128

/* The query block size the attention kernel of `a` is built for: a->pq, or VA_DENSE_PQ in the
** dense mode. */
int va_attention_pq(const vecattn_prefill_args *a);

/* The spec (semantic parameters of `a`, tuned or default tiles) for a stage of a problem.
** sparsity_hint: the expected fraction of pairs skipped, or -1 when unknown. */
vecattn_status va_choose_spec(vecattn_ctx *ctx, va_kernel_kind kind, const vecattn_prefill_args *a,
                              double sparsity_hint, va_kernel_spec *spec);

/* ---- modules ------------------------------------------------------------------------ */

typedef struct va_module va_module;

/* Get (compile and load on first use) the module of a spec. Process-wide and thread-safe;
** modules live until the process ends. */
vecattn_status va_module_get(vecattn_ctx *ctx, const va_kernel_spec *spec, va_module **out);

/* The CUBIN of a generated module, without the driver: from ctx->cache (SQLite), else, unless
** ctx->no_jit, compiled with NVRTC (claim -> re-check -> compile -> put). *cubin is
** malloc'ed; *from_cache is 1 when it came from SQLite. Needs no device: ctx->cache and
** ctx->no_jit are all it reads of the context. */
vecattn_status va_module_cubin(vecattn_ctx *ctx, const va_kernel_spec *spec, const va_generated *gen,
                               void **cubin, size_t *size, int *from_cache);

/* An entry point of a loaded module ("select_count", "select_fill", "select_mask", "scan", "attention"). */
vecattn_status va_module_function(vecattn_ctx *ctx, va_module *mod, const char *entry,
                                  CUfunction *out);

/* Launch `fn` with one parameter block passed by value. */
vecattn_status va_launch(vecattn_ctx *ctx, CUfunction fn, unsigned gx, unsigned gy, unsigned gz,
                         unsigned threads, size_t smem, CUstream stream, void *params,
                         size_t params_size);

#endif /* VECATTN_RUNTIME_H */
