/*
** test_gpu_thresholds.c -- per-head threshold tuning end to end on the GPU: video-like Q/K
** (autotune/videodata.h, heads that differ), bisection and samples measured with
** autotune/recall.h, the DP, the file written and read back with vecattn_load_thresholds,
** and every head re-measured with the thresholds read back: the figures must be those the
** DP chose (the thresholds are rounded to 6 decimals before they are measured, and the
** kernels are deterministic), the mean sparsity must reach the target, and each head's
** bisected option must reach the recall target. Exits 77 (SKIP) without a GPU.
*/
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "autotune/recall.h"
#include "autotune/thresholds.h"
#include "autotune/videodata.h"
#include "cache/thresholds_json.h"
#include "gpu_util.h"
#include "test_util.h"

#define HEADS 4
#define TARGET_SPARSITY 0.6
#define RECALL_TARGET 0.9

typedef struct eval_state {
    va_recall *r;
    va_recall_stats stats[HEADS];
} eval_state;

static vecattn_status eval(void *user, const float *th, double *sp, double *rc) {
    eval_state *e = user;
    vecattn_status st = va_recall_measure(e->r, th, e->stats, NULL);
    for (int h = 0; h < HEADS; ++h) sp[h] = e->stats[h].sparsity, rc[h] = e->stats[h].recall;
    return st;
}

static void run(gpu_env *env, int causal) {
    vecattn_prefill_args a;
    vecattn_prefill_args_init(&a);
    a.batch = 1, a.heads_q = a.heads_kv = HEADS, a.seq_q = a.seq_k = 4096, a.head_dim = 128, a.causal = causal;
    vecattn_set_contiguous_bhsd(&a);
    size_t n = (size_t)HEADS * a.seq_q * a.head_dim;
    uint16_t *q = malloc(n * 2), *k = malloc(n * 2);
    va_video_params vp;
    va_video_defaults(&vp);
    vp.head_variation = 0.6f;
    CHECK(va_video_fill(&a, q, k, NULL, &vp) == 0, "video data");
    CUdeviceptr dq = gpu_alloc(n * 2), dk = gpu_alloc(n * 2);
    gpu_upload(dq, q, n * 2), gpu_upload(dk, k, n * 2);
    a.q = (const void *)dq, a.k = (const void *)dk;

    eval_state e = {0};
    va_thr_options options[HEADS];
    vecattn_status st = va_recall_open(env->ctx, &a, env->stream, &e.r);
    CHECK(st == VECATTN_OK, "va_recall_open: %s", va_recall_errmsg(e.r));
    if (st == VECATTN_OK) st = va_thr_search_layer(HEADS, RECALL_TARGET, eval, &e, options);
    CHECK(st == VECATTN_OK, "search: %s", va_recall_errmsg(e.r));
    int choice[HEADS];
    double sp = 0, rc = 0;
    int feasible = st == VECATTN_OK ? va_thr_dp(options, HEADS, TARGET_SPARSITY, choice, &sp, &rc) : -1;
    CHECK(feasible == 1 && sp >= TARGET_SPARSITY, "causal %d: DP feasible %d, mean sparsity %.4f", causal, feasible, sp);
    for (int h = 0; feasible >= 0 && h < HEADS; ++h) {
        /* the bisected threshold (the largest reaching the recall target) is among the options */
        double best_sp = 0.0;
        for (int c = 0; c < options[h].count; ++c)
            if (options[h].recall[c] >= RECALL_TARGET) best_sp = fmax(best_sp, options[h].sparsity[c]);
        CHECK(best_sp > 0.0, "head %d: no option reaches recall %.2f", h, RECALL_TARGET);
    }
    if (feasible >= 0) {
        float th[HEADS], back[HEADS];
        double csp[HEADS], crc[HEADS];
        for (int h = 0; h < HEADS; ++h)
            th[h] = options[h].threshold[choice[h]], csp[h] = options[h].sparsity[choice[h]], crc[h] = options[h].recall[choice[h]];
        va_thresholds_doc doc = {1, HEADS, a.pq, a.bk, a.gk, causal, TARGET_SPARSITY, RECALL_TARGET, sp, rc, feasible, th, csp, crc};
        char path[64], msg[512];
        snprintf(path, sizeof path, "/tmp/test_gpu_thresholds_%d.json", (int)getpid());
        st = va_thresholds_write(path, &doc, msg, sizeof msg);
        if (st == VECATTN_OK) st = vecattn_load_thresholds(path, 0, back, HEADS, NULL, NULL, msg, sizeof msg);
        CHECK(st == VECATTN_OK, "file: %s", msg);
        unlink(path);
        va_recall_stats again[HEADS];
        st = va_recall_measure(e.r, back, again, NULL);
        for (int h = 0; st == VECATTN_OK && h < HEADS; ++h) {
            CHECK(back[h] == th[h] && fabs(again[h].recall - crc[h]) <= 1e-9 && fabs(again[h].sparsity - csp[h]) <= 1e-9,
                  "head %d: threshold %g (file %g), re-measured %.6f/%.6f, chosen %.6f/%.6f", h, th[h], back[h],
                  again[h].sparsity, again[h].recall, csp[h], crc[h]);
            printf("  causal %d head %d: threshold %-9g sparsity %.4f recall %.4f (%d options)\n", causal, h, th[h], csp[h],
                   crc[h], options[h].count);
        }
        printf("causal %d: mean sparsity %.4f (target %.2f), mean recall %.4f\n", causal, sp, TARGET_SPARSITY, rc);
    }
    va_recall_close(e.r);
    gpu_free(dq), gpu_free(dk);
    free(q), free(k);
}

int main(void) {
    gpu_env env;
    int rc = gpu_env_open(&env);
    if (rc != 0) return rc;
    run(&env, 0);
    run(&env, 1);
    gpu_env_close(&env);
    return test_exit_code("test_gpu_thresholds");
}
