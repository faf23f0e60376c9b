/*
** test_thresholds.c -- per-head threshold tuning without a GPU: the DP on hand-checked
** cases, the bisection against a monotone fake measurement, and thresholds files through
** the public reader vecattn_load_thresholds (round trip and malformed files).
*/
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "autotune/thresholds.h"
#include "cache/thresholds_json.h"
#include "test_util.h"
#include "vecattn.h"

static va_thr_options two(double s0, double r0, double s1, double r1) {
    va_thr_options o = {2, {0.9f, 0.5f}, {s0, s1}, {r0, r1}};
    return o;
}

/* Two heads, two options each, by hand:
**   (A0, B0) mean 0.9 recall 1.75; (A0, B1) 0.7, 1.77; (A1, B0) 0.7, 1.94; (A1, B1) 0.5, 1.96. */
static void test_dp(void) {
    va_thr_options o[2] = {two(0.9, 0.80, 0.5, 0.99), two(0.9, 0.95, 0.5, 0.97)};
    int choice[2] = {-1, -1};
    double sp, rc;
    int feasible = va_thr_dp(o, 2, 0.7, choice, &sp, &rc);
    CHECK(feasible == 1 && choice[0] == 1 && choice[1] == 0, "target 0.7: feasible %d, choice %d %d", feasible,
          choice[0], choice[1]);
    CHECK(fabs(sp - 0.7) < 1e-12 && fabs(rc - 0.97) < 1e-12, "target 0.7: mean sparsity %g recall %g", sp, rc);
    feasible = va_thr_dp(o, 2, 0.5, choice, &sp, &rc);
    CHECK(feasible == 1 && choice[0] == 1 && choice[1] == 1, "target 0.5: every pair qualifies, the best recall wins");
    feasible = va_thr_dp(o, 2, 0.95, choice, &sp, &rc);
    CHECK(feasible == 0 && choice[0] == 0 && choice[1] == 0 && fabs(sp - 0.9) < 1e-12,
          "target 0.95 is out of reach: the sparsest choice, flagged (feasible %d, sparsity %g)", feasible, sp);
    /* a tie in recall: either choice is right, but the state must stay >= the target */
    va_thr_options t[2] = {two(0.8, 0.9, 0.6, 0.9), two(0.8, 0.9, 0.6, 0.9)};
    feasible = va_thr_dp(t, 2, 0.7, choice, &sp, &rc);
    CHECK(feasible == 1 && sp >= 0.7 && fabs(rc - 0.9) < 1e-12, "ties: sparsity %g recall %g", sp, rc);
    /* many heads: the mean is kept per step to 1e-4, so 1000 heads still land on the target */
    int n = 1000;
    va_thr_options *m = malloc(sizeof *m * n);
    int *ch = malloc(sizeof(int) * n);
    for (int h = 0; h < n; ++h) m[h] = two(0.95, 0.90 - 0.0001 * (h % 7), 0.60, 0.99);
    feasible = va_thr_dp(m, n, 0.80, ch, &sp, &rc);
    CHECK(feasible == 1 && sp >= 0.80 - 1e-3 && sp < 0.81, "1000 heads: sparsity %.5f", sp);
    free(m), free(ch);
}

/* Fake measurement: recall_h(p) = 1 - a_h * p, sparsity = p; the recall target 0.9 is met
** up to p* = 0.1 / a_h (clamped to 1). */
static const double slopes[3] = {0.2, 1.0, 0.05};

static vecattn_status fake_eval(void *user, const float *th, double *sp, double *rc) {
    int *calls = user;
    ++*calls;
    for (int h = 0; h < 3; ++h) sp[h] = th[h], rc[h] = 1.0 - slopes[h] * th[h];
    return VECATTN_OK;
}

static void test_bisection(void) {
    va_thr_options o[3];
    int calls = 0;
    vecattn_status st = va_thr_search_layer(3, 0.9, fake_eval, &calls, o);
    CHECK(st == VECATTN_OK && calls == VA_THR_BISECT_STEPS + VA_THR_SAMPLES, "status %d, %d measurements", (int)st, calls);
    for (int h = 0; h < 3; ++h) {
        double want = fmin(0.1 / slopes[h], 1.0), best = 0.0;
        for (int c = 0; c < o[h].count; ++c)
            if (o[h].recall[c] >= 0.9 && o[h].threshold[c] > best) best = o[h].threshold[c];
        /* 14 steps over ln p in [ln 1e-6, 0] leave 13.8 / 2^14 of ln p: under 0.1% */
        CHECK(fabs(best - want) <= 2e-3 * want, "head %d: best threshold %.6f reaching 0.9, want %.6f", h, best, want);
        CHECK(o[h].count >= 5, "head %d: %d options", h, o[h].count);
        for (int c = 0; c < o[h].count; ++c)
            CHECK(o[h].threshold[c] == va_thr_round(o[h].threshold[c]), "thresholds are rounded to 6 decimals");
    }
}

static char path_buf[256];

static const char *write_tmp(const char *text) {
    snprintf(path_buf, sizeof path_buf, "/tmp/test_thresholds_%d.json", (int)getpid());
    FILE *f = fopen(path_buf, "w");
    fputs(text, f);
    fclose(f);
    return path_buf;
}

static void test_files(void) {
    float th[6] = {0.9f, 0.123457f, 1.0f, 0.000001f, 0.5f, 0.25f};
    double sp[6] = {0.9, 0.8, 0.7, 0.6, 0.5, 0.4}, rc[6] = {0.99, 0.98, 0.97, 0.96, 0.95, 0.94};
    va_thresholds_doc doc = {2, 3, 64, 16, 16, 0, 0.7, 0.95, 0.65, 0.965, 1, th, sp, rc};
    char msg[512];
    const char *path = write_tmp("");
    CHECK(va_thresholds_write(path, &doc, msg, sizeof msg) == VECATTN_OK, "write: %s", msg);
    int layers = 0, heads = 0;
    CHECK(vecattn_load_thresholds(path, 0, NULL, 0, &layers, &heads, msg, sizeof msg) == VECATTN_OK && layers == 2 &&
              heads == 3,
          "sizes: %d x %d (%s)", layers, heads, msg);
    float got[3];
    for (int l = 0; l < 2; ++l) {
        CHECK(vecattn_load_thresholds(path, l, got, 3, NULL, NULL, msg, sizeof msg) == VECATTN_OK, "layer %d: %s", l, msg);
        for (int h = 0; h < 3; ++h) CHECK(got[h] == th[l * 3 + h], "layer %d head %d: %g read back as %g", l, h, th[l * 3 + h], got[h]);
    }
    CHECK(vecattn_load_thresholds(path, 2, got, 3, NULL, NULL, msg, sizeof msg) == VECATTN_E_INVALID_ARG &&
              strstr(msg, "layer 2"),
          "layer out of range: %s", msg);
    CHECK(vecattn_load_thresholds(path, 0, got, 4, NULL, NULL, msg, sizeof msg) == VECATTN_E_INVALID_ARG &&
              strstr(msg, "heads"),
          "heads mismatch: %s", msg);

    static const struct {
        const char *text, *needle;
    } bad[] = {
        {"{\"format\": \"vecattn-thresholds\", \"version\": 1, \"thresholds\": [[0.9, 0.5]", "malformed"},
        {"[1, 2]", "malformed"},
        {"{\"format\": \"other\", \"version\": 1, \"thresholds\": [[0.9]]}", "format"},
        {"{\"format\": \"vecattn-thresholds\", \"version\": 2, \"thresholds\": [[0.9]]}", "version"},
        {"{\"format\": \"vecattn-thresholds\", \"version\": 1}", "thresholds"},
        {"{\"format\": \"vecattn-thresholds\", \"version\": 1, \"thresholds\": []}", "thresholds"},
        {"{\"format\": \"vecattn-thresholds\", \"version\": 1, \"thresholds\": [[0.9, 0.5], [0.9]]}", "thresholds[1] has 1"},
        {"{\"format\": \"vecattn-thresholds\", \"version\": 1, \"thresholds\": [[0.9, 1.5]]}", "thresholds[0][1]"},
        {"{\"format\": \"vecattn-thresholds\", \"version\": 1, \"thresholds\": [[0.0]]}", "thresholds[0][0]"},
        {"{\"format\": \"vecattn-thresholds\", \"version\": 1, \"thresholds\": [[\"0.9\"]]}", "thresholds[0][0]"},
        {"{\"format\": \"vecattn-thresholds\", \"version\": 1, \"thresholds\": [[-1e400]]}", "thresholds[0][0]"},
        {"{\"format\": \"vecattn-thresholds\", \"version\": 1, \"thresholds\": [0.9]}", "thresholds[0]"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; ++i) {
        path = write_tmp(bad[i].text);
        vecattn_status st = vecattn_load_thresholds(path, 0, got, 1, NULL, NULL, msg, sizeof msg);
        CHECK(st == VECATTN_E_JSON && strstr(msg, bad[i].needle) && strstr(msg, path),
              "bad file %zu: status %d, message \"%s\" (want \"%s\")", i, (int)st, msg, bad[i].needle);
    }
    CHECK(vecattn_load_thresholds("/nonexistent/t.json", 0, got, 1, NULL, NULL, msg, sizeof msg) == VECATTN_E_JSON &&
              strstr(msg, "/nonexistent/t.json"),
          "missing file: %s", msg);
    unlink(path_buf);
}

int main(void) {
    test_dp();
    test_bisection();
    test_files();
    return test_exit_code("test_thresholds");
}
