/*
** autotune.h -- choosing and measuring tile configurations (internal to vecattn).
**
** Three files implement it:
**   tuning.c          va_choose_spec's lookup (exact -> nearest bucket -> same compute
**                     capability -> built-in default), tune keys and buckets, forced specs,
**                     and tuning a missing entry on first use when VECATTN_AUTOTUNE=1.
**   autotune_bench.c  one problem on the device: the outputs of the default config, the
**                     check of a candidate against them, and timing (driver events, warm-up
**                     by time, L2 flushed before each sample, median to < 1% noise).
**   autotune_core.c   tuning one (stage, problem): candidates, compiled in parallel on CPU
**                     threads, checked, timed, the winner stored with va_cache_put_tuned.
**
** WHY THE CORE IS IN THE LIBRARY
**   VECATTN_AUTOTUNE=1 must work in any application that links libvecattn, not only in
**   vecattn-autotune; so the measuring code lives here and the tool (autotune/tuner.c) only
**   adds what the library must not carry: the video-like inputs, the bucket plan, the
**   threshold search, progress and JSON. On first use the library tunes on the caller's own
**   Q/K/V (read only; it writes its own scratch output), which is the most realistic input.
**
** Candidates always run through the library's own launch path (vecattn_select,
** vecattn_sparse_attention, vecattn_prefill): va_force_spec makes va_choose_spec return a
** given spec, so a timed candidate is launched exactly as prefill would launch it.
*/
#ifndef VECATTN_AUTOTUNE_H
#define VECATTN_AUTOTUNE_H

#include "runtime/runtime.h"

/* ---- buckets and keys (tuning.c) -------------------------------------------------------- */

/* round(log2(seq_k)) clamped to 12..17 (4K .. 128K). */
int va_tune_seq_bucket(int seq_k);

/* Kept fraction (1 - sparsity) -> 0: > 50%, 1: 20-50%, 2: 5-20%, 3: < 5%. */
int va_tune_sparsity_bucket(double kept);

/* A kept fraction inside a bucket, the one the tuner aims at: 1.0 (bucket 0 is tuned in dense
** mode: that is what asks for it at run time), 0.33, 0.11, 0.025. */
double va_tune_bucket_kept(int bucket);

/* The bucket of a va_choose_spec sparsity hint: -1 (unknown) -> 2, else that of 1 - hint. */
int va_tune_hint_bucket(double sparsity_hint);

/* The key of a problem's stage on the context's device (sparsity_bucket -1 for selection). */
void va_tune_key_init(const vecattn_ctx *ctx, va_kernel_kind kind, const vecattn_prefill_args *a,
                      int sparsity_bucket, va_tune_key *key);

/* "attention d128 pq64 bk16 gk16 causal bf16 Sk 2^15 kept-bucket 2": for logs and progress. */
void va_tune_key_describe(const va_tune_key *key, char *buf, size_t size);

/* The built-in default spec of a stage for a problem on the context's device. */
void va_default_spec(const vecattn_ctx *ctx, va_kernel_kind kind, const vecattn_prefill_args *a,
                     va_kernel_spec *spec);

/* ---- forcing a spec (tuning.c) ---------------------------------------------------------- */

/* From now on va_choose_spec returns `spec` for every problem of this kind whose semantic
** parameters (arch, dtype, head dim, causal, pq, and bk, gk for selection) it matches.
** NULL goes back to the normal choice. */
void va_force_spec(vecattn_ctx *ctx, va_kernel_kind kind, const va_kernel_spec *spec);

/* Turn VECATTN_AUTOTUNE's first-use tuning on (1) or off (0) for this context, whatever the
** environment says (the tool turns it off: it tunes explicitly). */
void va_tuning_set_auto(vecattn_ctx *ctx, int on);

/* Forget the choices this context remembered (after the cache changed). */
void va_tuning_forget(vecattn_ctx *ctx);

/* ---- measuring one problem (autotune_bench.c) ------------------------------------------- */

typedef struct va_tune_bench va_tune_bench;

typedef struct va_timing {
    double median_ms;
    double noise;              /* relative standard error of the median (MAD-based) */
    int samples;
} va_timing;

/*
** Set up a stage of the problem `a` (device q, k, v; o, lse and sparsity_out are ignored:
** the bench writes its own buffers) and compute the default config's outputs. Attention
** in sparse mode runs on the selection of the default selection config, computed once; with
** a->dense it is dense attention. `quick` shortens warm-up and sampling.
*/
vecattn_status va_tune_bench_open(vecattn_ctx *ctx, va_kernel_kind kind, const vecattn_prefill_args *a,
                                  int quick, va_tune_bench **out);
void va_tune_bench_close(va_tune_bench *b);

/* The problem's kept fraction (attention: measured; 1 in dense mode; selection: 1). */
double va_tune_bench_kept(const va_tune_bench *b);

/* Floating-point operations of one run: attention 4*D per attended pair; selection 2*D per
** scored (block, candidate key) pair for each of the two passes (count and fill) that
** vecattn_select runs. */
double va_tune_bench_flops(const va_tune_bench *b);

/* Outcome of a check. */
typedef enum va_check_result {
    VA_CHECK_OK = 0,
    VA_CHECK_WRONG = 1,        /* ran, but the output differs from the default config's */
    VA_CHECK_LAUNCH = 2,       /* could not be loaded or launched (a config error) */
    VA_CHECK_BROKEN = 3        /* the device context is unusable (sticky error): stop */
} va_check_result;

/* Run `spec` once and compare with the default config: identical counts, offsets and
** indices for the selection; relative L2 <= 1e-2 for attention. `why` says what differed. */
va_check_result va_tune_bench_check(va_tune_bench *b, const va_kernel_spec *spec, char *why, size_t why_size);

/* 1 when the device context has a sticky error (after a fault): tuning must stop. */
int va_tune_bench_broken(va_tune_bench *b);

/* Time `spec` (already checked): median of enough L2-flushed samples. */
vecattn_status va_tune_bench_time(va_tune_bench *b, const va_kernel_spec *spec, va_timing *t);

/* ---- tuning one (stage, problem) (autotune_core.c) -------------------------------------- */

#define VA_TUNE_MAX_CANDIDATES 64

typedef enum va_candidate_state {
    VA_CAND_PENDING = 0,
    VA_CAND_TIMED,             /* checked and timed */
    VA_CAND_KNOWN_BAD,         /* marked failed in the cache earlier: skipped */
    VA_CAND_COMPILE_FAILED,
    VA_CAND_LAUNCH_FAILED,
    VA_CAND_WRONG,             /* output differs from the default config's */
    VA_CAND_OVER_BUDGET        /* not timed: the time budget ran out */
} va_candidate_state;

const char *va_candidate_state_name(va_candidate_state s);

typedef struct va_tune_candidate {
    va_kernel_spec spec;
    char tiles[128];
    uint64_t hash;             /* of the generated module */
    va_candidate_state state;
    va_timing timing;
    double compile_ms;
    char why[256];             /* for the failed states */
} va_tune_candidate;

typedef struct va_tune_progress {
    const va_tune_key *key;
    int done, total;           /* candidates finished (any state) of this request */
    const va_tune_candidate *last;
    const va_tune_candidate *best;   /* NULL until one was timed */
    double elapsed_s;          /* since the request started */
} va_tune_progress;

typedef struct va_tune_request {
    va_kernel_kind kind;
    vecattn_prefill_args args;       /* the problem, device inputs (see va_tune_bench_open) */
    va_tune_key key;                 /* where the winner goes */
    int quick;
    double budget_s;                 /* 0: none; else candidates not started in time are skipped */
    int store;                       /* put the winner into ctx->cache */
    int compile_threads;             /* 0: one per CPU */
    void (*progress)(void *user, const va_tune_progress *p);
    void *user;
} va_tune_request;

typedef struct va_tune_result {
    int n;
    va_tune_candidate cand[VA_TUNE_MAX_CANDIDATES];
    int reference;             /* index of the default config */
    int best;                  /* index of the fastest timed config, -1 if none */
    double kept;               /* the problem's kept fraction (va_tune_bench_kept) */
    double flops;              /* per run */
    double compile_s, measure_s;
    va_tune_value value;       /* what was stored (or would have been) */
    int stored;
} va_tune_result;

/* Tune. VECATTN_OK when a winner was found (it may be the default); the result is filled in
** either way. The cache is not written when store is 0 or ctx->cache is NULL. */
vecattn_status va_autotune(vecattn_ctx *ctx, const va_tune_request *req, va_tune_result *res);

#endif /* VECATTN_AUTOTUNE_H */
