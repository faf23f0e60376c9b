/*
** vecattn.h -- vector-sparse attention for CUDA GPUs, generated and compiled at run time.
**
** This header is the reference manual of the library.
**
** WHAT IT DOES
**   vecattn computes attention O = softmax(scale * Q K^T) V where, for every block of Pq
**   consecutive queries, only a few key positions ("vertical vectors") are kept. The
**   selection pools each query block, scores the pooled query against every key and keeps
**   the keys that pass a MinP-gap rule; the sparse kernel gathers only the kept K/V rows
**   and runs flash-style attention on them. The exact semantics are those of
**   shared/spec/vector-sparse-attention.md, restated briefly at each function below.
**
**   Kernels are CUDA C++ source specialised for (head dim, Pq, Bk, Gk, causal, dtype, tile
**   configuration, GPU architecture), compiled with NVRTC to a CUBIN and loaded through the
**   CUDA Driver API. libcuda.so.1 is loaded with dlopen(), so the library links and its code
**   generator runs on machines without a GPU; a context can only be created where a driver
**   and a device exist (VECATTN_E_NO_DRIVER / VECATTN_E_NO_DEVICE otherwise).
**
** A SHORT EXAMPLE
**
**     vecattn_ctx *ctx;
**     if (vecattn_create(&ctx, 0, NULL, 0) != VECATTN_OK) {
**         fprintf(stderr, "vecattn: %s\n", vecattn_errmsg(ctx));
**         vecattn_destroy(ctx);
**         return 1;
**     }
**     vecattn_prefill_args a;
**     vecattn_prefill_args_init(&a);            // the method's defaults: p 0.9, Pq 64, Bk 16, Gk 16, causal
**     a.q = dq; a.k = dk; a.v = dv; a.o = dout; // device pointers, [B, H, S, D] contiguous
**     a.batch = 1; a.heads_q = 32; a.heads_kv = 32; a.seq_q = 32768; a.seq_k = 32768; a.head_dim = 128;
**     vecattn_set_contiguous_bhsd(&a);
**     float sparsity;
**     a.sparsity_out = &sparsity;               // optional: makes the call wait for the GPU
**     if (vecattn_prefill(ctx, &a, stream) != VECATTN_OK)
**         fprintf(stderr, "vecattn: %s\n", vecattn_errmsg(ctx));
**     vecattn_destroy(ctx);
**
** TENSORS AND STRIDES
**   Q is [B, Hq, Sq, D]; K and V are [B, Hkv, Sk, D]; O is [B, Hq, Sq, D]. Every tensor is
**   described by a base device pointer plus three element strides (batch, head, sequence);
**   the last dimension must be contiguous. Contiguous [B, H, S, D] ("BHSD") and
**   [B, S, H, D] ("BSHD") are both such views. Base pointers must be 16-byte aligned and the
**   strides multiples of 8 elements (each row is read with 16-byte loads).
**   Queries are aligned to the end of the keys: local query t sits at key position
**   t + (Sk - Sq), so Sq <= Sk (bottom-right alignment, as in FlashAttention).
**   GQA: query head h reads KV head h / (Hq / Hkv).
**
** MEMORY MANAGEMENT
**   The context owns everything it allocates: compiled modules, and a device workspace that
**   grows on demand and is reused by later calls. Its size is bounded by the chunk size
**   (see vecattn_prefill_args.chunk_size), never by the whole nQ x Sk problem; a caller may
**   pass its own instead (vecattn_prefill_args.workspace, for CUDA graphs). The caller
**   owns all tensors it passes. Strings returned by vecattn_errmsg() belong to the context
**   and stay valid until its next call.
**
** STREAMS AND THREADS
**   Work is enqueued on the caller's stream; the functions return without waiting for the GPU
**   unless a host-side output (sparsity_out, total_out) is requested. The context makes its
**   device's primary context current for the duration of a call and restores the caller's.
**   A context may be used by one thread at a time; distinct contexts are independent.
**   The in-process kernel cache is shared by all contexts and is thread-safe.
**
** ENVIRONMENT (read when a context is created)
**   VECATTN_LIBCUDA      path of the driver library to dlopen (default "libcuda.so.1").
**   VECATTN_CACHE        the kernel/tuning cache file when vecattn_create gets no path
**                        (default $XDG_CACHE_HOME/vecattn/cache.db, else
**                        ~/.cache/vecattn/cache.db). An unwritable file is used read-only,
**                        else an in-memory cache is used, with one warning on stderr (the
**                        only thing the library prints unasked); a damaged file is moved
**                        aside and recreated.
**   VECATTN_NO_JIT=1     never run NVRTC: a kernel missing from the cache is an error
**                        (VECATTN_E_CACHE) naming the `vecattn-autotune precompile` to run.
**   VECATTN_AUTOTUNE=1   tune a (problem, GPU) pair the cache has no entry for on its first
**                        use, on the caller's inputs (that call waits for the GPU). An entry
**                        measured with other kernels (an older vecattn) counts as none; without
**                        this variable such entries are still used when nothing newer matches.
**   VECATTN_CACHE_WAL    0 or 1 forces SQLite's journal mode (default: WAL on local disks).
**   VECATTN_PRETUNED_DIR a directory of shipped tuning files to use instead of
**                        <prefix>/share/vecattn/pretuned (empty: none).
**   VECATTN_TILES_SELECT, VECATTN_TILES_ATTENTION
**                        tile parameters forced on every problem, e.g.
**                        "block_m=64,block_n=64,warps=4" (experiments; see
**                        `vecattn-autotune source --help`).
**   VECATTN_DUMP_SOURCE  a directory: every generated kernel source is written there as
**                        <kernel name>.cu before it is compiled.
**   VECATTN_LOG          "debug" prints what the library does to stderr (default: silent).
*/
#ifndef VECATTN_H
#define VECATTN_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(_WIN32)
#  define VECATTN_API
#elif defined(VECATTN_BUILDING)
#  define VECATTN_API __attribute__((visibility("default")))
#else
#  define VECATTN_API
#endif

#define VECATTN_VERSION_MAJOR 0
#define VECATTN_VERSION_MINOR 1
#define VECATTN_VERSION_PATCH 0
#define VECATTN_VERSION_STRING "0.1.0"

/* The stream type of the CUDA Driver API; a runtime-API cudaStream_t is the same pointer. */
typedef struct CUstream_st *vecattn_stream;

/*
** STATUS CODES
** Numbered in groups of ten and never renumbered: 0 ok, 1-9 general, 10-19 bad input,
** 20-29 device and driver, 30-39 NVRTC and code generation, 40-49 cache and JSON.
** vecattn_status_string() gives fixed text per code; vecattn_errmsg() gives the details
** of the last failure on a context (which argument, the NVRTC log, the driver's error name).
*/
typedef enum vecattn_status {
    VECATTN_OK = 0,
    VECATTN_E_MISUSE = 1,          /* NULL or destroyed context, NULL argument block */
    VECATTN_E_NOMEM = 2,           /* host or device allocation failed */
    VECATTN_E_INTERNAL = 3,        /* a bug in vecattn: please report it */
    VECATTN_E_INVALID_ARG = 10,    /* an argument outside its documented range */
    VECATTN_E_HEAD_DIM = 11,       /* head dim not supported (64 or 128) */
    VECATTN_E_SHAPE = 12,          /* empty or inconsistent sizes: S = 0, Sq > Sk, Hq % Hkv != 0 */
    VECATTN_E_LAYOUT = 13,         /* bad strides or alignment, NULL tensor pointer */
    VECATTN_E_THRESHOLD = 14,      /* threshold outside (0, 1] or not finite */
    VECATTN_E_BLOCKING = 15,       /* Pq, Bk, Gk or chunk_size not allowed */
    VECATTN_E_DTYPE = 16,          /* unknown element type */
    VECATTN_E_CAPACITY = 17,       /* a caller-provided buffer is too small */
    VECATTN_E_NO_DRIVER = 20,      /* libcuda.so.1 could not be loaded or lacks a symbol */
    VECATTN_E_NO_DEVICE = 21,      /* no CUDA device, or the ordinal is out of range */
    VECATTN_E_DRIVER = 22,         /* a CUDA driver call failed */
    VECATTN_E_LAUNCH = 23,         /* a kernel launch failed */
    VECATTN_E_ARCH = 24,           /* the GPU is older than sm_80 */
    VECATTN_E_NVRTC = 30,          /* NVRTC failed to compile a generated kernel */
    VECATTN_E_CODEGEN = 31,        /* the kernel specification is invalid */
    VECATTN_E_CACHE = 40,          /* the kernel cache could not be used */
    VECATTN_E_CACHE_CORRUPT = 41,  /* the kernel cache file is damaged */
    VECATTN_E_JSON = 42            /* malformed JSON */
} vecattn_status;

typedef enum vecattn_dtype {
    VECATTN_BF16 = 0,
    VECATTN_FP16 = 1
} vecattn_dtype;

/* Fixed English text for a status code; never NULL. */
VECATTN_API const char *vecattn_status_string(vecattn_status status);

/* The library's version, "MAJOR.MINOR.PATCH". */
VECATTN_API const char *vecattn_version(void);

/* ------------------------------------------------------------------------------------- */
/* Context                                                                                */
/* ------------------------------------------------------------------------------------- */

typedef struct vecattn_ctx vecattn_ctx;

/* Flags for vecattn_create(). */
#define VECATTN_CREATE_DEFAULT 0u

/*
** Create a context on CUDA device `device` (an ordinal as in cuDeviceGet).
** `cache_path` names the kernel and tuning cache file (SQLite), or NULL for $VECATTN_CACHE or
** the default location. A cache that cannot be written never makes a call fail (see
** ENVIRONMENT above).
** On failure *ctx is still set, unless memory ran out, so that vecattn_errmsg(*ctx) can
** say why; destroy it either way. Returns VECATTN_E_NO_DRIVER where libcuda.so.1 cannot
** be loaded, VECATTN_E_NO_DEVICE where the ordinal does not exist, VECATTN_E_ARCH for GPUs
** older than sm_80.
*/
VECATTN_API vecattn_status vecattn_create(vecattn_ctx **ctx, int device, const char *cache_path,
                                          unsigned flags);

/* Release the context and everything it owns. NULL is allowed. Waits for nothing: the
** caller must make sure no work that uses the context's workspace is still running. */
VECATTN_API void vecattn_destroy(vecattn_ctx *ctx);

/* Details of the last failure on this context ("not an error" after success). A NULL
** context gives the text for VECATTN_E_NOMEM. Valid until the context's next call. */
VECATTN_API const char *vecattn_errmsg(const vecattn_ctx *ctx);

/* The status of the last call on this context. */
VECATTN_API vecattn_status vecattn_errcode(const vecattn_ctx *ctx);

/* ------------------------------------------------------------------------------------- */
/* Prefill: selection + sparse attention                                                  */
/* ------------------------------------------------------------------------------------- */

/*
** One attention problem. Initialise with vecattn_prefill_args_init() (the method's default
** settings), then fill in the tensors and sizes.
**
** Semantic parameters (they change the result):
**   threshold   p in (0, 1]: key j is kept for query block i when, inside its tile,
**               s(i,j) >= running_max - ln(1/p). Higher p keeps fewer keys.
**   thresholds  optional device-independent *host* array of Hq thresholds (one per query
**               head); overrides `threshold` when not NULL.
**   pq          query block (pooling) size: 16, 32, 64 or 128.
**   bk          key slice size: 8, 16, 32, 64 or 128; when causal, bk <= pq and pq % bk == 0.
**   gk          slices per selection tile (>= 1); the running max restarts every gk*bk keys.
**   causal      1: causal with bottom-right alignment; the first pq keys (the sink) and the
**               query block's own diagonal block are always attended.
**   dense       1: attend to every key (no selection); the same kernel as the sparse path,
**               for comparison with dense attention libraries.
**   scale       softmax scale; 0 means 1/sqrt(D).
** Resource parameters (they never change the result):
**   chunk_size  queries per chunk, a multiple of pq; 0 lets the library choose. Chunks are
**               processed one after another so that the workspace stays bounded (0: the
**               selection's bit masks, one bit per candidate key and query block, under
**               768 MiB: one chunk up to 96K x 32 heads causal, two at 128K).
** Workspace (optional; resource only):
**   workspace, workspace_size
**               a device buffer of at least vecattn_prefill_workspace_size() bytes, 256-byte
**               aligned, used instead of the context's own workspace. The call then allocates
**               and frees no device memory, so it can be captured in a CUDA graph and replayed:
**               give every captured call its own buffer (e.g. from the framework's allocator)
**               that lives as long as the graph. NULL: the context's workspace, which grows
**               on demand (growing waits for the device and moves the buffer).
** Outputs:
**   o           [B, Hq, Sq, D], written in the input dtype.
**   lse         optional [B, Hq, Sq] float32 device array: natural-log sum of exp per row.
**   sparsity_out  optional host pointer: 1 - attended pairs / valid pairs. Asking for it
**               makes the call wait for the GPU.
*/
typedef struct vecattn_prefill_args {
    const void *q;             /* [B, Hq, Sq, D] */
    const void *k;             /* [B, Hkv, Sk, D] */
    const void *v;             /* [B, Hkv, Sk, D] */
    void *o;                   /* [B, Hq, Sq, D] */
    float *lse;                /* [B, Hq, Sq], optional */
    int64_t q_stride[3];       /* element strides of Q for batch, head, sequence */
    int64_t k_stride[3];
    int64_t v_stride[3];
    int64_t o_stride[3];
    int batch, heads_q, heads_kv, seq_q, seq_k, head_dim;
    vecattn_dtype dtype;
    int causal;
    int dense;
    float threshold;
    const float *thresholds;   /* host array [Hq] or NULL */
    int pq, bk, gk;
    float scale;
    int chunk_size;
    float *sparsity_out;       /* host, optional */
    void *workspace;           /* device, optional: see "Workspace" above */
    size_t workspace_size;     /* bytes at `workspace` */
} vecattn_prefill_args;

/* Fill `args` with zeros and the method's defaults (p 0.9, Pq 64, Bk 16, Gk 16, causal,
** bf16, D 128). */
VECATTN_API void vecattn_prefill_args_init(vecattn_prefill_args *args);

/* Set every stride for contiguous [B, H, S, D] tensors from the sizes already set. */
VECATTN_API void vecattn_set_contiguous_bhsd(vecattn_prefill_args *args);

/* Set every stride for contiguous [B, S, H, D] tensors from the sizes already set. */
VECATTN_API void vecattn_set_contiguous_bshd(vecattn_prefill_args *args);

/*
** Check the arguments without touching any device: the codes of the table above and a
** message naming the argument. `msg` (may be NULL) receives up to msg_size bytes.
** vecattn_prefill() runs the same check first and writes nothing when it fails.
*/
VECATTN_API vecattn_status vecattn_check_prefill_args(const vecattn_prefill_args *args, char *msg,
                                                      size_t msg_size);

/*
** Device workspace that vecattn_prefill() needs for `args` (0 in dense mode): the largest
** chunk's counts and selection bit masks (one bit per key up to the chunk's last candidate,
** per query block and head). Depends on sizes, pq, causal and chunk_size only, so one query
** serves every call of the same shape. Runs no device code.
*/
VECATTN_API vecattn_status vecattn_prefill_workspace_size(const vecattn_prefill_args *args, size_t *bytes);

/* Selection and sparse attention (or dense attention when args->dense) on `stream`.
** A caller's workspace smaller than needed gives VECATTN_E_CAPACITY, and nothing runs. */
VECATTN_API vecattn_status vecattn_prefill(vecattn_ctx *ctx, const vecattn_prefill_args *args,
                                           vecattn_stream stream);

/* ------------------------------------------------------------------------------------- */
/* The two stages separately                                                              */
/* ------------------------------------------------------------------------------------- */

/*
** Selection output in CSR form, for nQ = ceil(Sq / pq) query blocks per (batch, head):
**   counts   [B, Hq, nQ] int32: kept keys per query block;
**   offsets  [B*Hq*nQ + 1] int64: row r's keys are indices[offsets[r] .. offsets[r+1]);
**   indices  int32 key positions, strictly ascending within a row.
** Forced keys (the causal sink and diagonal) are not in the lists.
** All three arrays are device memory owned by the caller.
*/
typedef struct vecattn_selection {
    int32_t *counts;
    int64_t *offsets;
    int32_t *indices;
    int64_t indices_capacity;  /* elements available at `indices` */
} vecattn_selection;

/*
** Run the selection of `args` (q, k, sizes, strides, dtype and the semantic parameters;
** v and o are not read). Writes counts and offsets, then the indices.
** Sizing the index buffer: call first with sel->indices == NULL; counts and offsets are
** written and *total_out (host, required then) receives the number of kept keys, which
** makes the call wait for the GPU. Then call again with a buffer of at least that size.
** With an index buffer, total_out may be NULL and the call does not wait; if the buffer
** was too small, the rows that do not fit are not written, and *total_out (when given)
** tells the size needed and VECATTN_E_CAPACITY is returned.
** Not available in dense mode.
*/
VECATTN_API vecattn_status vecattn_select(vecattn_ctx *ctx, const vecattn_prefill_args *args,
                                          const vecattn_selection *sel, int64_t *total_out,
                                          vecattn_stream stream);

/*
** Sparse attention on caller-provided key sets ("bring your own indices").
** For query block i of (b, h) the key set is forced(i) U {indices of its row}:
**   forced(i) comes from `forced_ranges` when not NULL: a device int32 array
**     [B, Hq, nQ, 4] = {start0, end0, start1, end1} of two half-open key ranges (empty
**     ranges allowed); when NULL, the spec's rule is used (causal: the sink [0, min(Pq, p0))
**     and the diagonal block; non-causal: nothing).
**   With args->causal, every key j > pos(t) is masked for query t.
** The index lists use the layout of vecattn_selection (counts + offsets + indices) and must
** not repeat a key nor overlap the forced ranges; out-of-range keys are an error of the
** caller that the kernel does not check. args->threshold, gk and bk are not used.
*/
VECATTN_API vecattn_status vecattn_sparse_attention(vecattn_ctx *ctx,
                                                    const vecattn_prefill_args *args,
                                                    const int32_t *forced_ranges,
                                                    const vecattn_selection *sel,
                                                    vecattn_stream stream);

/* ------------------------------------------------------------------------------------- */
/* Device information                                                                     */
/* ------------------------------------------------------------------------------------- */

typedef struct vecattn_device_info {
    char name[256];
    int compute_major, compute_minor;
    int sm_count;
    int driver_version;        /* as cuDriverGetVersion: 1000*major + 10*minor */
    int nvrtc_major, nvrtc_minor;
    size_t total_memory;
} vecattn_device_info;

/* Describe the context's device. */
VECATTN_API vecattn_status vecattn_get_device_info(vecattn_ctx *ctx, vecattn_device_info *info);

/* ------------------------------------------------------------------------------------- */
/* Per-head thresholds files                                                              */
/* ------------------------------------------------------------------------------------- */

/*
** Read one layer of a per-head thresholds file, as written by
** `vecattn-autotune thresholds` (JSON: {"format": "vecattn-thresholds", "version": 1,
** "thresholds": [[p per head] per layer], ...}; see `vecattn-autotune thresholds --help`).
** The values go to args.thresholds of the calls for that layer.
**   layers_out, heads_out  optional: the file's number of layers and heads per layer;
**   thresholds             NULL to ask only for the sizes, else `heads` floats receiving
**                          layer `layer` (0-based).
** VECATTN_E_JSON when the file is missing, malformed, not of this format or version, ragged,
** or holds a value outside (0, 1]; VECATTN_E_INVALID_ARG when `layer` is out of range or
** `heads` differs from the file's. `msg` (may be NULL) receives a message naming the file
** and the problem. Needs no context and no device.
*/
VECATTN_API vecattn_status vecattn_load_thresholds(const char *path, int layer, float *thresholds, int heads,
                                                   int *layers_out, int *heads_out, char *msg, size_t msg_size);

#ifdef __cplusplus
}
#endif
#endif /* VECATTN_H */
