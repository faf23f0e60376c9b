/*
** tuner.h -- tune a plan of (stage, shape bucket) entries on a GPU: the engine behind
** `vecattn-autotune tune` (autotune/cli_tune.c) and the GPU test of tuning.
**
** For each sequence length Sk of the plan (Sq = Sk, B 1, MHA), the tuner makes video-like
** inputs (videodata.h) on the device, then tunes
**   - the selection stage at p 0.9 (its cost hardly depends on the kept fraction), and
**   - the attention stage for each sparsity bucket of the plan: bucket 0 (> 50% kept) in
**     dense mode, which is what asks for it at run time; buckets 1-3 at the threshold that
**     lands the measured kept fraction in the bucket (bisection on ln p, as in vecattn_bench);
**     a bucket the data cannot reach at this length is reported "unreachable".
** Each entry is one va_autotune() request (runtime/autotune.h): candidates compiled in
** parallel, checked against the default config, timed, the winner stored in the context's
** cache. Progress goes to stderr: entry i/n, candidates done/total, the last and the best
** config, and an ETA (estimated from the work of the entries left).
**
** Heads: by default as many as keep B*H*S near 2^20 tokens, between 8 and 32 (32 up to 32K,
** 8 at 128K): enough CTAs to fill an H100 at every length, inputs small enough to generate
** in about a second. Four distinct heads are generated and repeated.
*/
#ifndef VECATTN_TUNER_H
#define VECATTN_TUNER_H

#include "autotune/videodata.h"
#include "runtime/autotune.h"

#define VA_TUNER_MAX_SEQS 16

typedef enum va_tuner_mode { VA_TUNER_DEFAULT = 0, VA_TUNER_QUICK = 1, VA_TUNER_FULL = 2 } va_tuner_mode;

typedef struct va_tuner_options {
    int head_dim, pq, bk, gk, causal;
    vecattn_dtype dtype;
    int seqs[VA_TUNER_MAX_SEQS];     /* Sk values */
    int n_seqs;
    int buckets[4];                  /* attention sparsity buckets, 0..3 */
    int n_buckets;
    int selection, attention;        /* stages to tune (1/0) */
    int quick;                       /* quick measuring (va_tune_request.quick) */
    double time_budget_s;            /* the whole run; 0: none */
    int heads;                       /* 0: by sequence length, see above */
    int store;                       /* write winners to the cache (default 1) */
    int progress;                    /* progress lines on stderr (default 1) */
    va_video_params video;
} va_tuner_options;

/*
** The method's default settings (D 128, Pq 64, Bk 16, Gk 16, causal, bf16) and the plan of
** a mode:
**   quick:   Sk 8K and 32K; selection and attention bucket 2 (5-20% kept); quick timing
**   default: Sk 4K .. 128K (powers of two); selection, attention buckets 0 (dense) and 2
**   full:    Sk 4K .. 128K; selection, attention buckets 0, 1, 2, 3
*/
void va_tuner_defaults(va_tuner_options *o, va_tuner_mode mode);

/* One tuned (stage, bucket). */
typedef struct va_tuner_entry {
    va_tune_key key;
    int seq, heads;
    int dense;
    float threshold;                 /* the threshold used (0 in dense mode) */
    double kept;                     /* the measured kept fraction */
    const char *status;              /* "ok", "unreachable", "failed", "over-budget" */
    char why[512];                   /* for "failed" and "unreachable" */
    va_tune_result *result;          /* NULL unless tuning ran */
} va_tuner_entry;

typedef struct va_tuner_report {
    va_tuner_entry *entries;
    int n;
    double seconds;
} va_tuner_report;

/* Run the plan on the context's device. VECATTN_OK when every entry is "ok" or
** "unreachable"; the report is filled either way (free it with va_tuner_report_free).
** A failure that breaks the device stops the run. */
vecattn_status va_tuner_run(vecattn_ctx *ctx, const va_tuner_options *o, va_tuner_report *rep);
void va_tuner_report_free(va_tuner_report *rep);

/* ---- the pieces, for tests and benchmarks ------------------------------------------------- */

/* Video-like Q, K, V on the device: [1, heads, seq, D] contiguous, and O. */
typedef struct va_tuner_problem {
    vecattn_prefill_args args;       /* device pointers, the options' semantic settings, p 0.9 */
    CUdeviceptr q, k, v, o;
} va_tuner_problem;

/* heads 0: the default for seq (see above). Needs the context's device current or not:
** it makes it current itself. */
vecattn_status va_tuner_problem_make(vecattn_ctx *ctx, const va_tuner_options *o, int seq, int heads,
                                     va_tuner_problem *p);
void va_tuner_problem_free(vecattn_ctx *ctx, va_tuner_problem *p);
int va_tuner_default_heads(int seq);

/* The threshold whose measured kept fraction is in `bucket` (1..3), nearest the bucket's
** target; 1 when found (a->threshold set, *kept measured), 0 when the bucket is out of reach
** (a->threshold is then the closest one), -1 on a library error (message on ctx). */
int va_tuner_find_threshold(vecattn_ctx *ctx, vecattn_prefill_args *a, int bucket, double *kept);

#endif /* VECATTN_TUNER_H */
