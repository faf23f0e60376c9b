/*
** videodata.c -- the video-like Q/K/V generator of videodata.h, and the element conversions.
**
** Sections: conversions, random streams, the smooth field, the generator.
*/
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "autotune/videodata.h"

/* ---- conversions ------------------------------------------------------------------------ */

static uint32_t float_bits(float x) {
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    return u;
}

static float bits_float(uint32_t u) {
    float x;
    memcpy(&x, &u, sizeof x);
    return x;
}

static uint16_t to_bf16(float x) {
    uint32_t u = float_bits(x);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40u); /* quiet NaN */
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

static uint16_t to_fp16(float x) {
    uint32_t u = float_bits(x);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
    uint32_t ax = u & 0x7fffffffu;
    if (ax > 0x7f800000u) return (uint16_t)(sign | 0x7e00u);  /* NaN */
    if (ax >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u); /* >= 65520: Inf */
    if (ax < 0x38800000u)                                     /* below 2^-14: subnormal */
        return (uint16_t)(sign | (uint16_t)nearbyintf(bits_float(ax) * 16777216.0f));
    uint32_t r = ax - (112u << 23); /* rebias 127 -> 15 */
    r += 0xfffu + ((r >> 13) & 1u);
    return (uint16_t)(sign | (uint16_t)(r >> 13));
}

uint16_t va_video_from_float(float x, vecattn_dtype dt) { return dt == VECATTN_FP16 ? to_fp16(x) : to_bf16(x); }

float va_video_to_float(uint16_t h, vecattn_dtype dt) {
    if (dt != VECATTN_FP16) return bits_float((uint32_t)h << 16);
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16, exp = (h >> 10) & 0x1fu, man = h & 0x3ffu;
    if (exp == 0) {
        float f = ldexpf((float)man, -24);
        return sign ? -f : f;
    }
    uint32_t body = exp == 31 ? 0x7f800000u | (man << 13) : ((exp + 112u) << 23) | (man << 13);
    return bits_float(sign | body);
}

/* ---- random streams -------------------------------------------------------------------- */

/* One splitmix64 stream per (batch, head, purpose): the data never depends on which tensors
** are generated, nor on the order they are written in. */
enum { STREAM_LATTICE_F = 1, STREAM_LATTICE_G, STREAM_VERTICAL, STREAM_FACTOR, STREAM_Q, STREAM_K, STREAM_V };

static uint64_t next_u64(uint64_t *s) {
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static uint64_t stream_seed(uint64_t seed, int b, int h, int purpose) {
    uint64_t s = seed ^ 0x5851f42d4c957f2dull;
    uint64_t parts[3] = {(uint64_t)b, (uint64_t)h, (uint64_t)purpose};
    for (int i = 0; i < 3; ++i) {
        s ^= parts[i] + 0x632be59bd9b4e019ull;
        s = next_u64(&s);
    }
    return s;
}

/* Approximately N(0, 1): the sum of four 16-bit uniforms, centred and scaled (one draw per
** value keeps generation of a 128K-token problem under a second or so). */
static float gauss(uint64_t *s) {
    uint64_t z = next_u64(s);
    float sum = (float)(z & 0xffff) + (float)((z >> 16) & 0xffff) + (float)((z >> 32) & 0xffff) + (float)(z >> 48);
    return (sum * (1.0f / 65536.0f) - 2.0f) * 1.7320508f; /* variance 4/12 -> 1 */
}

static float uniform_pm1(uint64_t *s) { return (float)(next_u64(s) >> 40) * (2.0f / 16777216.0f) - 1.0f; }

/* ---- the smooth field ------------------------------------------------------------------- */

/* Value noise: N(0, 1) vectors on a lattice of spacing (ct, cy, cx), interpolated with
** smoothstep weights w and divided by sqrt(sum w^2), so each component stays N(0, 1). */
typedef struct field {
    int nt, ny, nx, dim;
    float ct, cy, cx;
    float *g; /* [nt][ny][nx][dim] */
} field;

static int field_make(field *f, int frames, int height, int width, int dim, const va_video_params *p, uint64_t seed) {
    f->ct = p->corr_t, f->cy = p->corr_y, f->cx = p->corr_x, f->dim = dim;
    f->nt = (int)ceilf((float)(frames - 1) / f->ct) + 2;
    f->ny = (int)ceilf((float)(height - 1) / f->cy) + 2;
    f->nx = (int)ceilf((float)(width - 1) / f->cx) + 2;
    size_t n = (size_t)f->nt * f->ny * f->nx * dim;
    f->g = malloc(n * sizeof *f->g);
    if (!f->g) return -1;
    for (size_t i = 0; i < n; ++i) f->g[i] = gauss(&seed);
    return 0;
}

/* Lattice cell and the two smoothstep weights along one axis. */
static void axis(float coord, float spacing, int *cell, float w[2]) {
    float c = coord / spacing;
    float fl = floorf(c), fr = c - fl;
    float s = fr * fr * (3.0f - 2.0f * fr);
    *cell = (int)fl;
    w[0] = 1.0f - s, w[1] = s;
}

static void field_eval(const field *f, int t, int y, int x, float *out) {
    int it, iy, ix;
    float wt[2], wy[2], wx[2];
    axis((float)t, f->ct, &it, wt);
    axis((float)y, f->cy, &iy, wy);
    axis((float)x, f->cx, &ix, wx);
    float norm = 1.0f / sqrtf((wt[0] * wt[0] + wt[1] * wt[1]) * (wy[0] * wy[0] + wy[1] * wy[1]) *
                              (wx[0] * wx[0] + wx[1] * wx[1]));
    memset(out, 0, sizeof(float) * (size_t)f->dim);
    for (int a = 0; a < 2; ++a)
        for (int b = 0; b < 2; ++b)
            for (int c = 0; c < 2; ++c) {
                float w = wt[a] * wy[b] * wx[c] * norm;
                const float *g = f->g + (((size_t)(it + a) * f->ny + iy + b) * f->nx + ix + c) * f->dim;
                for (int d = 0; d < f->dim; ++d) out[d] += w * g[d];
            }
}

/* ---- the generator ---------------------------------------------------------------------- */

void va_video_defaults(va_video_params *p) {
    memset(p, 0, sizeof *p);
    p->frame_height = 24;
    p->frame_width = 32;
    p->corr_t = 3.0f;
    p->corr_y = 4.0f;
    p->corr_x = 4.0f;
    p->field = 0.4f;
    p->noise = 0.15f;
    p->vertical_per_frame = 2;
    p->vertical = 0.6f;
    p->q_bias = 0.3f;
    p->head_variation = 0.3f;
    p->v_field = 1.0f;
    p->seed = 1;
}

/* What one (batch, KV head) needs while its rows are written. */
typedef struct head_state {
    field f, g;
    float *u;        /* [dim] the vertical direction */
    char *vertical;  /* [frame tokens] 1 where the position is vertical */
    float *factor;   /* [group] f_h per query head of the group */
    uint64_t *q_rng; /* [group] noise streams of the query heads */
    uint64_t k_rng, v_rng;
    float *fv, *gv; /* [dim] field values at the current token */
} head_state;

static void head_free(head_state *hs) {
    free(hs->f.g), free(hs->g.g), free(hs->u), free(hs->vertical), free(hs->factor), free(hs->q_rng);
    free(hs->fv), free(hs->gv);
    memset(hs, 0, sizeof *hs);
}

static int head_init(head_state *hs, const vecattn_prefill_args *a, const va_video_params *p, int b, int hk,
                     int need_v) {
    int dim = a->head_dim, group = a->heads_q / a->heads_kv;
    int frame = p->frame_height * p->frame_width;
    int frames = (a->seq_k + frame - 1) / frame;
    memset(hs, 0, sizeof *hs);
    hs->u = malloc(sizeof(float) * (size_t)dim);
    hs->vertical = calloc((size_t)frame, 1);
    hs->factor = malloc(sizeof(float) * (size_t)group);
    hs->q_rng = malloc(sizeof(uint64_t) * (size_t)group);
    hs->fv = malloc(sizeof(float) * (size_t)dim);
    hs->gv = malloc(sizeof(float) * (size_t)dim);
    if (!hs->u || !hs->vertical || !hs->factor || !hs->q_rng || !hs->fv || !hs->gv ||
        field_make(&hs->f, frames, p->frame_height, p->frame_width, dim, p,
                   stream_seed(p->seed, b, hk, STREAM_LATTICE_F)) ||
        (need_v && field_make(&hs->g, frames, p->frame_height, p->frame_width, dim, p,
                              stream_seed(p->seed, b, hk, STREAM_LATTICE_G)))) {
        head_free(hs);
        return -1;
    }
    uint64_t s = stream_seed(p->seed, b, hk, STREAM_VERTICAL);
    for (int d = 0; d < dim; ++d) hs->u[d] = gauss(&s);
    int want = p->vertical_per_frame < frame ? p->vertical_per_frame : frame;
    for (int placed = 0; placed < want;) {
        int pos = (int)(next_u64(&s) % (uint64_t)frame);
        if (!hs->vertical[pos]) hs->vertical[pos] = 1, ++placed;
    }
    for (int j = 0; j < group; ++j) {
        int h = hk * group + j;
        uint64_t fs = stream_seed(p->seed, b, h, STREAM_FACTOR);
        hs->factor[j] = 1.0f + p->head_variation * uniform_pm1(&fs);
        hs->q_rng[j] = stream_seed(p->seed, b, h, STREAM_Q);
    }
    hs->k_rng = stream_seed(p->seed, b, hk, STREAM_K);
    hs->v_rng = stream_seed(p->seed, b, hk, STREAM_V);
    return 0;
}

/* row[d] = wf * f[d] + wu * u[d] + noise * N(0, 1), rounded to dt. */
static void write_row(uint16_t *row, int dim, vecattn_dtype dt, float wf, const float *f, float wu, const float *u,
                      float noise, uint64_t *rng) {
    for (int d = 0; d < dim; ++d) {
        float x = wf * f[d] + noise * gauss(rng);
        if (wu != 0.0f) x += wu * u[d];
        row[d] = va_video_from_float(x, dt);
    }
}

static void fill_head(const vecattn_prefill_args *a, const va_video_params *p, head_state *hs, int b, int hk,
                      uint16_t *q, uint16_t *k, uint16_t *v) {
    int dim = a->head_dim, group = a->heads_q / a->heads_kv;
    int frame = p->frame_height * p->frame_width, shift = a->seq_k - a->seq_q;
    for (int s = 0; s < a->seq_k; ++s) {
        int t = s / frame, y = (s / p->frame_width) % p->frame_height, x = s % p->frame_width;
        if (q || k) field_eval(&hs->f, t, y, x, hs->fv);
        if (k) {
            uint16_t *row = k + b * a->k_stride[0] + hk * a->k_stride[1] + (int64_t)s * a->k_stride[2];
            float wu = hs->vertical[s % frame] ? p->vertical : 0.0f;
            write_row(row, dim, a->dtype, p->field, hs->fv, wu, hs->u, p->noise, &hs->k_rng);
        }
        if (v) {
            field_eval(&hs->g, t, y, x, hs->gv);
            uint16_t *row = v + b * a->v_stride[0] + hk * a->v_stride[1] + (int64_t)s * a->v_stride[2];
            write_row(row, dim, a->dtype, p->v_field, hs->gv, 0.0f, hs->u, p->noise, &hs->v_rng);
        }
        if (q && s >= shift)
            for (int j = 0; j < group; ++j) {
                int h = hk * group + j;
                uint16_t *row = q + b * a->q_stride[0] + h * a->q_stride[1] + (int64_t)(s - shift) * a->q_stride[2];
                write_row(row, dim, a->dtype, p->field * hs->factor[j], hs->fv, p->q_bias, hs->u, p->noise,
                          &hs->q_rng[j]);
            }
    }
}

static int params_ok(const vecattn_prefill_args *a, const va_video_params *p) {
    if (a->batch <= 0 || a->heads_q <= 0 || a->heads_kv <= 0 || a->heads_q % a->heads_kv != 0) return 0;
    if (a->seq_q <= 0 || a->seq_k <= 0 || a->seq_q > a->seq_k || a->head_dim <= 0) return 0;
    if (a->dtype != VECATTN_BF16 && a->dtype != VECATTN_FP16) return 0;
    if (p->frame_height <= 0 || p->frame_width <= 0) return 0;
    return p->corr_t > 0.0f && p->corr_y > 0.0f && p->corr_x > 0.0f && p->vertical_per_frame >= 0;
}

int va_video_fill(const vecattn_prefill_args *a, uint16_t *q, uint16_t *k, uint16_t *v, const va_video_params *p) {
    va_video_params defaults;
    if (!p) va_video_defaults(&defaults), p = &defaults;
    if (!a || !params_ok(a, p)) return -1;
    for (int b = 0; b < a->batch; ++b)
        for (int hk = 0; hk < a->heads_kv; ++hk) {
            head_state hs;
            if (head_init(&hs, a, p, b, hk, v != NULL)) return -1;
            fill_head(a, p, &hs, b, hk, q, k, v);
            head_free(&hs);
        }
    return 0;
}
