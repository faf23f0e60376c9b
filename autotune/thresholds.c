/*
** thresholds.c -- bisection, samples and the DP of per-head threshold tuning (thresholds.h).
*/
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "autotune/thresholds.h"

float va_thr_round(double p) {
    if (!(p > VA_THR_MIN)) p = VA_THR_MIN;
    if (p > 1.0) p = 1.0;
    double r = round(p * 1e6) / 1e6;
    return (float)(r < VA_THR_MIN ? VA_THR_MIN : r);
}

vecattn_status va_thr_search_layer(int heads, double recall_target, va_thr_eval eval, void *user,
                                   va_thr_options *options) {
    double *lo = malloc(sizeof(double) * heads), *hi = malloc(sizeof(double) * heads);
    double *sp = malloc(sizeof(double) * heads), *rc = malloc(sizeof(double) * heads);
    float *th = malloc(sizeof(float) * heads);
    vecattn_status st = lo && hi && sp && rc && th ? VECATTN_OK : VECATTN_E_NOMEM;
    /* invariant: recall(exp(lo)) >= target is assumed (the densest end), hi is the unknown end */
    for (int h = 0; st == VECATTN_OK && h < heads; ++h) lo[h] = log(VA_THR_MIN), hi[h] = 0.0;
    for (int step = 0; st == VECATTN_OK && step < VA_THR_BISECT_STEPS; ++step) {
        for (int h = 0; h < heads; ++h) th[h] = va_thr_round(exp(0.5 * (lo[h] + hi[h])));
        if ((st = eval(user, th, sp, rc)) != VECATTN_OK) break;
        for (int h = 0; h < heads; ++h) {
            double x = log(th[h]);
            if (rc[h] >= recall_target) lo[h] = x; else hi[h] = x;
        }
    }
    static const double grid[VA_THR_GRID] = {1e-4, 1e-3, 0.01, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0};
    for (int h = 0; st == VECATTN_OK && h < heads; ++h) options[h].count = 0;
    for (int k = -4; st == VECATTN_OK && k <= 8 + VA_THR_GRID; ++k) {
        for (int h = 0; h < heads; ++h)
            th[h] = va_thr_round(k <= 8 ? exp(lo[h]) * pow(0.9, k) : grid[k - 9]);
        if ((st = eval(user, th, sp, rc)) != VECATTN_OK) break;
        for (int h = 0; h < heads; ++h) {
            va_thr_options *o = &options[h];
            int dup = 0;
            for (int c = 0; c < o->count; ++c) dup |= o->threshold[c] == th[h];
            if (dup) continue;
            o->threshold[o->count] = th[h], o->sparsity[o->count] = sp[h], o->recall[o->count] = rc[h];
            o->count++;
        }
    }
    free(lo), free(hi), free(sp), free(rc), free(th);
    return st;
}

static int state_of(double mean) {
    long s = lround(mean * (VA_THR_DP_STATES - 1));
    return (int)(s < 0 ? 0 : s > VA_THR_DP_STATES - 1 ? VA_THR_DP_STATES - 1 : s);
}

/* The state is the bucket (1e-4) of the running mean sparsity; each state also carries the
** exact sparsity sum of the path it keeps, so that buckets never drift: the next bucket is
** computed from the exact sum, and the target is checked on the exact mean. */
int va_thr_dp(const va_thr_options *options, int n, double target_sparsity, int *choice, double *mean_sparsity,
              double *mean_recall) {
    const int S = VA_THR_DP_STATES;
    double *value = malloc(sizeof(double) * S), *next = malloc(sizeof(double) * S);
    double *sum = malloc(sizeof(double) * S), *next_sum = malloc(sizeof(double) * S);
    /* back[h][state]: the previous state and the option taken to reach `state` after head h */
    uint16_t *prev = malloc(sizeof(uint16_t) * (size_t)n * S);
    uint8_t *opt = malloc((size_t)n * S);
    int feasible = -1;
    if (!value || !next || !sum || !next_sum || !prev || !opt) goto out;
    for (int s = 0; s < S; ++s) value[s] = -INFINITY, sum[s] = 0.0;
    value[0] = 0.0; /* before any head: nothing chosen */
    for (int h = 0; h < n; ++h) {
        for (int s = 0; s < S; ++s) next[s] = -INFINITY;
        for (int s = 0; s < S; ++s) {
            if (value[s] == -INFINITY) continue;
            for (int c = 0; c < options[h].count; ++c) {
                double new_sum = sum[s] + options[h].sparsity[c];
                int t = state_of(new_sum / (h + 1));
                double v = value[s] + options[h].recall[c];
                if (v > next[t] || (v == next[t] && new_sum > next_sum[t])) {
                    next[t] = v, next_sum[t] = new_sum;
                    prev[(size_t)h * S + t] = (uint16_t)s;
                    opt[(size_t)h * S + t] = (uint8_t)c;
                }
            }
        }
        double *swap = value;
        value = next, next = swap;
        swap = sum, sum = next_sum, next_sum = swap;
    }
    int best = -1;
    for (int s = 0; s < S; ++s)
        if (value[s] != -INFINITY && n > 0 && sum[s] / n >= target_sparsity && (best < 0 || value[s] > value[best]))
            best = s;
    feasible = best >= 0;
    for (int s = S - 1; best < 0 && s >= 0; --s)
        if (value[s] != -INFINITY) best = s;
    double sp = 0.0, rc = 0.0;
    for (int h = n - 1, s = best; h >= 0; --h) {
        choice[h] = opt[(size_t)h * S + s];
        sp += options[h].sparsity[choice[h]];
        rc += options[h].recall[choice[h]];
        s = prev[(size_t)h * S + s];
    }
    *mean_sparsity = n ? sp / n : 0.0;
    *mean_recall = n ? rc / n : 0.0;
out:
    free(value), free(next), free(sum), free(next_sum), free(prev), free(opt);
    return feasible;
}
