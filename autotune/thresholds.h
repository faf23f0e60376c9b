/*
** thresholds.h -- per-head threshold tuning (the method's DP tuning for video diffusion
** models), independent of how recall and sparsity are measured.
**
** 1. Bisection: per head, the largest threshold p (the sparsest selection) whose recall
**    reaches the target, on x = ln p in [ln VA_THR_MIN, 0]; every head of a layer is
**    bisected at once, since one measurement takes a vector of per-head thresholds.
** 2. Samples: around each head's bisected p, p * 0.9^k for k = -4 .. 8 (clamped to
**    [VA_THR_MIN, 1]): sparser and denser options for the DP; and a fixed grid over the
**    whole range (1e-4 .. 1), so that the DP can reach a sparsity target that the recall
**    target alone would not (the original samples only p * 0.9^k, k = 1..8, and then cannot
**    trade recall for sparsity when the two targets disagree on the data).
** 3. DP over all heads of all layers, in order: the state is the running mean sparsity
**    rounded to 1e-4 (as the original method), the value the summed recall; unlike the
**    original, each state carries the exact sparsity sum of its path, so rounding never
**    drifts (over 1000 heads the rounded mean alone drifts by 1%). The answer is the final
**    state whose exact mean is >= the target with the largest recall (else the sparsest
**    state, reported as infeasible).
** Thresholds are rounded to 6 decimals before they are measured, so that a written file
** reproduces the measured figures exactly.
*/
#ifndef VECATTN_THRESHOLDS_H
#define VECATTN_THRESHOLDS_H

#include "vecattn.h"

#define VA_THR_MIN 1e-6
#define VA_THR_BISECT_STEPS 14
#define VA_THR_LOCAL 13          /* the bisected p and 12 multiples */
#define VA_THR_GRID 14           /* the fixed grid */
#define VA_THR_SAMPLES (VA_THR_LOCAL + VA_THR_GRID)
#define VA_THR_DP_STATES 10001   /* mean sparsity 0.0000 .. 1.0000 */

/* Measures `heads` thresholds at once: sparsity[h] and recall[h]. Returns VECATTN_OK or a
** status that stops the search. */
typedef vecattn_status (*va_thr_eval)(void *user, const float *thresholds, double *sparsity, double *recall);

/* One head's measured options. */
typedef struct va_thr_options {
    int count;
    float threshold[VA_THR_SAMPLES];
    double sparsity[VA_THR_SAMPLES], recall[VA_THR_SAMPLES];
} va_thr_options;

/* Round to 6 decimals within [VA_THR_MIN, 1]. */
float va_thr_round(double p);

/* Steps 1 and 2 for one layer of `heads` heads: options[heads]. */
vecattn_status va_thr_search_layer(int heads, double recall_target, va_thr_eval eval, void *user,
                                   va_thr_options *options);

/* Step 3 over n heads (all layers, in order): choice[n] indexes options[h]. Returns 1 when
** the mean sparsity reaches the target, 0 when the sparsest choice was taken instead, -1
** when memory ran out. *mean_sparsity and *mean_recall describe the choice. */
int va_thr_dp(const va_thr_options *options, int n, double target_sparsity, int *choice, double *mean_sparsity,
              double *mean_recall);

#endif /* VECATTN_THRESHOLDS_H */
