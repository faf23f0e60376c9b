/*
** vecattn_ref.c -- the CPU float64 reference of shared/spec/vector-sparse-attention.md.
**
** Compiled with -ffp-contract=off (tests/CMakeLists.txt): va_ref_pool must reproduce the
** GPU's float additions, divisions and multiplications one rounding at a time, and a fused
** multiply-add would skip one. Everything else is double and does not care.
**
** Sections: conversions | geometry | pooling and selection | attention | sparsity |
** test data | comparison.
*/
#include "ref/vecattn_ref.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------------------------- */
/* Conversions                                                                            */
/* ------------------------------------------------------------------------------------- */

static uint32_t float_bits(float x)
{
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    return u;
}

static float bits_float(uint32_t u)
{
    float x;
    memcpy(&x, &u, sizeof x);
    return x;
}

/* Shift `m` right by `shift` (1..31) bits, rounding to nearest even. */
static uint32_t shift_round_even(uint32_t m, int shift)
{
    uint32_t kept = m >> shift;
    uint32_t rest = m & ((1u << shift) - 1u);
    uint32_t half = 1u << (shift - 1);
    if (rest > half || (rest == half && (kept & 1u)))
        kept++;
    return kept;
}

static float fp16_to_float(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1Fu;
    uint32_t man = h & 0x3FFu;
    if (exp == 0) {
        /* zero or subnormal: man * 2^-24, exact in float */
        float v = (float)man * 0x1p-24f;
        return sign ? -v : v;
    }
    if (exp == 31)
        return bits_float(sign | 0x7F800000u | (man << 13));
    return bits_float(sign | ((exp - 15u + 127u) << 23) | (man << 13));
}

static uint16_t float_to_fp16(float x)
{
    uint32_t u = float_bits(x);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
    uint32_t abs = u & 0x7FFFFFFFu;
    if (abs > 0x7F800000u)
        return sign | 0x7E00u;                      /* NaN: quiet */
    if (abs == 0x7F800000u)
        return sign | 0x7C00u;                      /* Inf */
    int e = (int)(abs >> 23) - 127;                 /* unbiased exponent */
    uint32_t m = (abs & 0x7FFFFFu) | 0x800000u;     /* 24-bit significand */
    if (e >= 16)
        return sign | 0x7C00u;                      /* >= 65536: overflow */
    if (e >= -14) {
        /* normal range: exponent and mantissa are contiguous, so a rounding carry into
        ** the exponent is right, up to 0x7C00 = Inf for [65520, 65536) */
        uint32_t h = ((uint32_t)(e + 15) << 10) | ((m >> 13) & 0x3FFu);
        uint32_t rest = m & 0x1FFFu;
        if (rest > 0x1000u || (rest == 0x1000u && (h & 1u)))
            h++;
        return sign | (uint16_t)h;
    }
    /* subnormal: value = m * 2^(e-23) = (m >> (-e-1)) * 2^-24; below 2^-25 it is 0
    ** (float subnormals, e = -127, land here too) */
    if (e < -25)
        return sign;
    return sign | (uint16_t)shift_round_even(m, -e - 1);
}

static float bf16_to_float(uint16_t h)
{
    return bits_float((uint32_t)h << 16);
}

static uint16_t float_to_bf16(float x)
{
    uint32_t u = float_bits(x);
    if ((u & 0x7FFFFFFFu) > 0x7F800000u)
        return (uint16_t)((u >> 16) | 0x0040u);     /* NaN: keep sign, force quiet */
    /* round to nearest even on the low 16 bits; a carry into the exponent is right,
    ** up to Inf */
    u += 0x7FFFu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

float va_ref_to_float(uint16_t bits, vecattn_dtype dt)
{
    return dt == VECATTN_FP16 ? fp16_to_float(bits) : bf16_to_float(bits);
}

uint16_t va_ref_from_float(float x, vecattn_dtype dt)
{
    return dt == VECATTN_FP16 ? float_to_fp16(x) : float_to_bf16(x);
}

static float round_to_dtype(float x, vecattn_dtype dt)
{
    return va_ref_to_float(va_ref_from_float(x, dt), dt);
}

/* ------------------------------------------------------------------------------------- */
/* Geometry                                                                               */
/* ------------------------------------------------------------------------------------- */

float va_ref_scale(const vecattn_prefill_args *a)
{
    if (a->scale != 0.0f)
        return a->scale;
    return 1.0f / sqrtf((float)a->head_dim);
}

float va_ref_head_threshold(const vecattn_prefill_args *a, int h)
{
    return a->thresholds ? a->thresholds[h] : a->threshold;
}

float va_ref_gap(float p)
{
    return (float)(-log((double)p));
}

int va_ref_num_qblocks(const vecattn_prefill_args *a)
{
    return (a->seq_q + a->pq - 1) / a->pq;
}

int va_ref_block_rows(const vecattn_prefill_args *a, int i)
{
    int rows = a->seq_q - i * a->pq;
    return rows < a->pq ? rows : a->pq;
}

int64_t va_ref_block_p0(const vecattn_prefill_args *a, int i)
{
    return (int64_t)i * a->pq + (a->seq_k - a->seq_q);
}

static int64_t max64(int64_t x, int64_t y) { return x > y ? x : y; }
static int64_t min64(int64_t x, int64_t y) { return x < y ? x : y; }

void va_ref_candidates(const vecattn_prefill_args *a, int i, int64_t *lo, int64_t *hi)
{
    if (a->causal) {
        *lo = min64(a->pq, a->seq_k);
        *hi = min64(va_ref_block_p0(a, i), a->seq_k);
    } else {
        *lo = 0;
        *hi = a->seq_k;
    }
}

void va_ref_forced_ranges(const vecattn_prefill_args *a, int i, int32_t r[4])
{
    if (!a->causal) {
        r[0] = r[1] = r[2] = r[3] = 0;
        return;
    }
    int64_t p0 = va_ref_block_p0(a, i);
    r[0] = 0;
    r[1] = (int32_t)min64(a->pq, p0);
    r[2] = (int32_t)p0;
    r[3] = (int32_t)(p0 + va_ref_block_rows(a, i));
}

/* Element (b, head, s, 0) of a tensor described by element strides. */
static const uint16_t *row_ptr(const void *base, const int64_t stride[3], int b, int head,
                               int64_t s)
{
    return (const uint16_t *)base + b * stride[0] + head * stride[1] + s * stride[2];
}

static int kv_head(const vecattn_prefill_args *a, int h)
{
    return h / (a->heads_q / a->heads_kv);
}

/* ------------------------------------------------------------------------------------- */
/* Pooling and selection                                                                  */
/* ------------------------------------------------------------------------------------- */

void va_ref_pool(const vecattn_prefill_args *a, int b, int h, int i, float *qs)
{
    int rows = va_ref_block_rows(a, i);
    float scale = va_ref_scale(a);
    for (int d = 0; d < a->head_dim; d++) {
        float sum = 0.0f;
        for (int t = i * a->pq; t < i * a->pq + rows; t++)
            sum += va_ref_to_float(row_ptr(a->q, a->q_stride, b, h, t)[d], a->dtype);
        float mean = sum / (float)rows;
        float qbar = round_to_dtype(mean, a->dtype);
        qs[d] = round_to_dtype(qbar * scale, a->dtype);
    }
}

/* Scores of the candidates [lo, hi) of (b, h) against qs: s[j - lo] in double and
** mag[j - lo] = sum_d |qs[d] * k[j][d]|, the scale of the fp32 rounding error. */
static void candidate_scores(const vecattn_prefill_args *a, int b, int h, const float *qs,
                             int64_t lo, int64_t hi, double *s, double *mag)
{
    int hk = kv_head(a, h);
    for (int64_t j = lo; j < hi; j++) {
        const uint16_t *k = row_ptr(a->k, a->k_stride, b, hk, j);
        double acc = 0.0, m = 0.0;
        for (int d = 0; d < a->head_dim; d++) {
            double p = (double)qs[d] * (double)va_ref_to_float(k[d], a->dtype);
            acc += p;
            m += fabs(p);
        }
        s[j - lo] = acc;
        mag[j - lo] = m;
    }
}

/*
** The MinP-gap walk of one tile [t0, t1) of candidates (t0 >= lo): flags and, when `pass`
** is given, the decision in double.
** A key within the error bound of its decision is ambiguous, with one exception: the key
** that holds the running max by more than 2*tol over every other candidate seen in the
** tile is the GPU's max too, and fl(s + gap) >= s = m for gap >= 0, so it always passes
** there (without this, every max would be "ambiguous" at p = 1).
*/
static void select_tile(const vecattn_prefill_args *a, int64_t lo, int64_t t0, int64_t t1,
                        const double *s, const double *mag, double gap, signed char *flags,
                        unsigned char *pass)
{
    double tol = 0.0;
    for (int64_t j = t0; j < t1; j++)
        tol = fmax(tol, (double)a->head_dim * 0x1p-23 * mag[j - lo]);
    double m = -INFINITY, second = -INFINITY; /* the two largest scores seen so far */
    for (int64_t s0 = t0 / a->bk * a->bk; s0 < t1; s0 += a->bk) {
        int64_t b0 = max64(s0, t0), b1 = min64(s0 + a->bk, t1);
        /* the max is updated with the whole slice before any key of it is tested */
        for (int64_t j = b0; j < b1; j++) {
            double x = s[j - lo];
            if (x > m)
                second = m, m = x;
            else if (x > second)
                second = x;
        }
        double slack = 2.0 * tol + 0x1p-23 * (fabs(m) + gap);
        int clear_max = m - second > 2.0 * tol;
        for (int64_t j = b0; j < b1; j++) {
            double margin = s[j - lo] + gap - m;
            int ok = margin >= 0.0;
            int sure = fabs(margin) > slack || (clear_max && s[j - lo] == m);
            flags[j] = !sure ? VA_REF_AMBIGUOUS : (ok ? VA_REF_SELECTED : VA_REF_NOT_SELECTED);
            if (pass)
                pass[j] = (unsigned char)ok;
        }
    }
}

/* va_ref_select_row plus the double decision per key (pass may be NULL). 0 or -1 (OOM). */
static int select_row_full(const vecattn_prefill_args *a, int b, int h, int i,
                           signed char *flags, unsigned char *pass)
{
    memset(flags, VA_REF_NOT_SELECTED, (size_t)a->seq_k);
    if (pass)
        memset(pass, 0, (size_t)a->seq_k);
    int64_t lo, hi;
    va_ref_candidates(a, i, &lo, &hi);
    if (lo >= hi)
        return 0;
    float *qs = malloc(sizeof(float) * (size_t)a->head_dim);
    double *s = malloc(sizeof(double) * (size_t)(hi - lo));
    double *mag = malloc(sizeof(double) * (size_t)(hi - lo));
    if (!qs || !s || !mag) {
        free(qs), free(s), free(mag);
        return -1;
    }
    va_ref_pool(a, b, h, i, qs);
    candidate_scores(a, b, h, qs, lo, hi, s, mag);
    double gap = (double)va_ref_gap(va_ref_head_threshold(a, h));
    int64_t tile = (int64_t)a->gk * a->bk;
    for (int64_t t0 = lo / tile * tile; t0 < hi; t0 += tile)
        select_tile(a, lo, max64(t0, lo), min64(t0 + tile, hi), s, mag, gap, flags, pass);
    free(qs), free(s), free(mag);
    return 0;
}

void va_ref_select_row(const vecattn_prefill_args *a, int b, int h, int i, signed char *flags)
{
    if (select_row_full(a, b, h, i, flags, NULL) != 0)
        abort(); /* out of memory in a test: nothing sensible to return */
}

int64_t va_ref_select(const vecattn_prefill_args *a, int32_t *counts, int64_t *offsets,
                      int32_t **indices)
{
    int nq = va_ref_num_qblocks(a);
    size_t cap = 1024;
    int64_t total = 0;
    int32_t *idx = malloc(cap * sizeof *idx);
    signed char *flags = malloc((size_t)a->seq_k);
    unsigned char *pass = malloc((size_t)a->seq_k);
    if (!idx || !flags || !pass)
        goto oom;
    offsets[0] = 0;
    for (int b = 0; b < a->batch; b++)
        for (int h = 0; h < a->heads_q; h++)
            for (int i = 0; i < nq; i++) {
                int64_t r = ((int64_t)b * a->heads_q + h) * nq + i;
                if (select_row_full(a, b, h, i, flags, pass) != 0)
                    goto oom;
                int64_t start = total;
                for (int j = 0; j < a->seq_k; j++) {
                    if (!pass[j])
                        continue;
                    if ((size_t)total == cap) {
                        int32_t *grown = realloc(idx, 2 * cap * sizeof *idx);
                        if (!grown)
                            goto oom;
                        idx = grown, cap *= 2;
                    }
                    idx[total++] = j;
                }
                counts[r] = (int32_t)(total - start);
                offsets[r + 1] = total;
            }
    free(flags), free(pass);
    *indices = idx;
    return total;
oom:
    free(idx), free(flags), free(pass);
    *indices = NULL;
    return -1;
}

/* ------------------------------------------------------------------------------------- */
/* Attention                                                                              */
/* ------------------------------------------------------------------------------------- */

/* K or V of one (batch, KV head) converted to double once: [Sk, D]. */
static void load_kv(const vecattn_prefill_args *a, const void *base, const int64_t stride[3],
                    int b, int hk, double *out)
{
    int D = a->head_dim;
    for (int j = 0; j < a->seq_k; j++) {
        const uint16_t *src = row_ptr(base, stride, b, hk, j);
        for (int d = 0; d < D; d++)
            out[(size_t)j * D + d] = va_ref_to_float(src[d], a->dtype);
    }
}

static void mark_range(unsigned char *mark, int64_t s, int64_t e, int64_t sk)
{
    for (int64_t j = max64(s, 0); j < min64(e, sk); j++)
        mark[j] = 1;
}

/* The key set of block i (before the per-row causal mask), ascending; returns its size. */
static int block_keys(const vecattn_prefill_args *a, int64_t r, int i,
                      const int32_t *forced_ranges, const int32_t *counts,
                      const int64_t *offsets, const int32_t *indices, unsigned char *mark,
                      int32_t *keys)
{
    int sk = a->seq_k, n = 0;
    if (a->dense) {
        for (int j = 0; j < sk; j++)
            keys[n++] = j;
        return n;
    }
    memset(mark, 0, (size_t)sk);
    int32_t fr[4];
    if (forced_ranges)
        memcpy(fr, forced_ranges + r * 4, sizeof fr);
    else
        va_ref_forced_ranges(a, i, fr);
    mark_range(mark, fr[0], fr[1], sk);
    mark_range(mark, fr[2], fr[3], sk);
    if (counts)
        for (int64_t x = offsets[r]; x < offsets[r] + counts[r]; x++)
            if (indices[x] >= 0 && indices[x] < sk) /* out of range: the caller's error */
                mark[indices[x]] = 1;
    for (int j = 0; j < sk; j++)
        if (mark[j])
            keys[n++] = j;
    return n;
}

/* Softmax attention of one query row over keys[0..n) (those visible), in double. */
static void attend_row(const vecattn_prefill_args *a, const double *q, const double *kd,
                       const double *vd, const int32_t *keys, int n, int64_t pos, double scale,
                       double *score, double *o, double *lse)
{
    int D = a->head_dim, m = 0;
    double mx = -INFINITY;
    for (int x = 0; x < n; x++) {
        if (a->causal && keys[x] > pos)
            break; /* keys are ascending: the rest is masked too */
        const double *k = kd + (size_t)keys[x] * D;
        double dot = 0.0;
        for (int d = 0; d < D; d++)
            dot += q[d] * k[d];
        score[x] = scale * dot;
        mx = fmax(mx, score[x]);
        m = x + 1;
    }
    memset(o, 0, sizeof(double) * (size_t)D);
    if (m == 0) {
        if (lse)
            *lse = -INFINITY;
        return;
    }
    double sum = 0.0;
    for (int x = 0; x < m; x++) {
        double w = exp(score[x] - mx);
        const double *v = vd + (size_t)keys[x] * D;
        sum += w;
        for (int d = 0; d < D; d++)
            o[d] += w * v[d];
    }
    for (int d = 0; d < D; d++)
        o[d] /= sum;
    if (lse)
        *lse = mx + log(sum);
}

int va_ref_attention(const vecattn_prefill_args *a, const int32_t *forced_ranges,
                     const int32_t *counts, const int64_t *offsets, const int32_t *indices,
                     double *o, double *lse)
{
    int D = a->head_dim, sk = a->seq_k, nq = va_ref_num_qblocks(a);
    double scale = (double)va_ref_scale(a);
    double *kd = malloc(sizeof(double) * (size_t)sk * D);
    double *vd = malloc(sizeof(double) * (size_t)sk * D);
    double *q = malloc(sizeof(double) * (size_t)D);
    double *score = malloc(sizeof(double) * (size_t)sk);
    int32_t *keys = malloc(sizeof(int32_t) * (size_t)sk);
    unsigned char *mark = malloc((size_t)sk);
    int rc = -1;
    if (!kd || !vd || !q || !score || !keys || !mark)
        goto done;
    for (int b = 0; b < a->batch; b++) {
        int loaded = -1; /* KV head whose K/V are in kd/vd */
        for (int h = 0; h < a->heads_q; h++) {
            int hk = kv_head(a, h);
            if (hk != loaded) {
                load_kv(a, a->k, a->k_stride, b, hk, kd);
                load_kv(a, a->v, a->v_stride, b, hk, vd);
                loaded = hk;
            }
            for (int i = 0; i < nq; i++) {
                int64_t r = ((int64_t)b * a->heads_q + h) * nq + i;
                int n = block_keys(a, r, i, forced_ranges, counts, offsets, indices, mark,
                                   keys);
                for (int t = i * a->pq; t < i * a->pq + va_ref_block_rows(a, i); t++) {
                    size_t row = ((size_t)b * a->heads_q + h) * a->seq_q + t;
                    const uint16_t *src = row_ptr(a->q, a->q_stride, b, h, t);
                    for (int d = 0; d < D; d++)
                        q[d] = va_ref_to_float(src[d], a->dtype);
                    attend_row(a, q, kd, vd, keys, n, (int64_t)t + sk - a->seq_q, scale, score,
                               o + row * D, lse ? lse + row : NULL);
                }
            }
        }
    }
    rc = 0;
done:
    free(kd), free(vd), free(q), free(score), free(keys), free(mark);
    return rc;
}

/* ------------------------------------------------------------------------------------- */
/* Sparsity                                                                               */
/* ------------------------------------------------------------------------------------- */

double va_ref_sparsity(const vecattn_prefill_args *a, const int32_t *counts)
{
    if (a->dense)
        return 0.0;
    int nq = va_ref_num_qblocks(a);
    double sq = a->seq_q, sk = a->seq_k;
    /* per (b, h): causal sum over t of (t + Sk - Sq + 1) */
    double valid = a->causal ? sq * (sk - sq + 1.0) + sq * (sq - 1.0) / 2.0 : sq * sk;
    valid *= (double)a->batch * a->heads_q;
    double attended = 0.0;
    for (int b = 0; b < a->batch; b++)
        for (int h = 0; h < a->heads_q; h++)
            for (int i = 0; i < nq; i++) {
                double rows = va_ref_block_rows(a, i);
                int64_t r = ((int64_t)b * a->heads_q + h) * nq + i;
                double listed = counts ? counts[r] : 0.0;
                if (a->causal) {
                    double sink = (double)min64(a->pq, va_ref_block_p0(a, i));
                    attended += rows * (sink + listed) + rows * (rows + 1.0) / 2.0;
                } else {
                    attended += rows * listed;
                }
            }
    return 1.0 - attended / valid;
}

/* ------------------------------------------------------------------------------------- */
/* Test data                                                                              */
/* ------------------------------------------------------------------------------------- */

uint64_t va_ref_rng_next(uint64_t *state)
{
    uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

float va_ref_rng_uniform(uint64_t *state, float lo, float hi)
{
    double u = (double)(va_ref_rng_next(state) >> 11) * 0x1p-53; /* [0, 1) */
    return (float)(lo + (hi - lo) * u);
}

/* A nonzero element: redraw a few times, then fall back to a fixed nonzero value. */
static uint16_t nonzero_element(vecattn_dtype dt, uint64_t *rng, float lo, float hi)
{
    for (int tries = 0; tries < 8; tries++) {
        uint16_t x = va_ref_from_float(va_ref_rng_uniform(rng, lo, hi), dt);
        if ((x & 0x7FFFu) != 0)
            return x;
    }
    float fallback = hi != 0.0f ? hi : (lo != 0.0f ? lo : 1.0f);
    uint16_t x = va_ref_from_float(fallback, dt);
    return (x & 0x7FFFu) ? x : va_ref_from_float(1.0f, dt);
}

void va_ref_fill_random(uint16_t *x, size_t n, vecattn_dtype dt, uint64_t *rng_state, float lo,
                        float hi)
{
    for (size_t e = 0; e < n; e++)
        x[e] = nonzero_element(dt, rng_state, lo, hi);
}

void va_ref_vertical_defaults(va_ref_vertical *vp)
{
    vp->noise = 1.0f;
    vp->q_bias = 1.0f;
    vp->amplitude = 1.0f;
    vp->period = 50;
}

/* One row of D elements: noise + w * u, rounded to the dtype, never zero. */
static void fill_row(uint16_t *row, int D, vecattn_dtype dt, uint64_t *rng, float noise,
                     float w, const float *u)
{
    for (int d = 0; d < D; d++) {
        float x = va_ref_rng_uniform(rng, -noise, noise) + w * u[d];
        uint16_t bits = va_ref_from_float(x, dt);
        row[d] = (bits & 0x7FFFu) ? bits : nonzero_element(dt, rng, -noise, noise);
    }
}

void va_ref_fill_vertical(const vecattn_prefill_args *a, uint16_t *q, uint16_t *k,
                          uint64_t *rng_state, const va_ref_vertical *vp)
{
    int D = a->head_dim, group = a->heads_q / a->heads_kv;
    int period = vp->period > 0 ? vp->period : 1;
    float *u = malloc(sizeof(float) * (size_t)D);
    if (!u)
        abort(); /* test data generation: nothing sensible to return */
    for (int b = 0; b < a->batch; b++)
        for (int hk = 0; hk < a->heads_kv; hk++) {
            for (int d = 0; d < D; d++)
                u[d] = va_ref_rng_uniform(rng_state, -1.0f, 1.0f);
            int phase = (int)(va_ref_rng_next(rng_state) % (uint64_t)period);
            for (int j = 0; j < a->seq_k; j++) {
                uint16_t *row = k + b * a->k_stride[0] + hk * a->k_stride[1] + j * a->k_stride[2];
                float w = (j + phase) % period == 0 ? vp->amplitude : 0.0f;
                fill_row(row, D, a->dtype, rng_state, vp->noise, w, u);
            }
            for (int h = hk * group; h < (hk + 1) * group; h++)
                for (int t = 0; t < a->seq_q; t++) {
                    uint16_t *row =
                        q + b * a->q_stride[0] + h * a->q_stride[1] + t * a->q_stride[2];
                    fill_row(row, D, a->dtype, rng_state, vp->noise, vp->q_bias, u);
                }
        }
    free(u);
}

/* ------------------------------------------------------------------------------------- */
/* Comparison                                                                             */
/* ------------------------------------------------------------------------------------- */

double va_ref_rel_l2(const uint16_t *out, vecattn_dtype dt, const int64_t stride[3],
                     const double *ref, int B, int H, int S, int D)
{
    double diff2 = 0.0, ref2 = 0.0;
    for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++)
            for (int s = 0; s < S; s++) {
                const uint16_t *o = row_ptr(out, stride, b, h, s);
                const double *r = ref + (((size_t)b * H + h) * S + s) * D;
                for (int d = 0; d < D; d++) {
                    double x = va_ref_to_float(o[d], dt);
                    if (!isfinite(x))
                        return INFINITY;
                    diff2 += (x - r[d]) * (x - r[d]);
                    ref2 += r[d] * r[d];
                }
            }
    if (ref2 == 0.0)
        return diff2 == 0.0 ? 0.0 : INFINITY;
    return sqrt(diff2 / ref2);
}
