/*
** test_reference.c -- the CPU reference against hand-computed cases (no GPU needed).
**
** The GPU tests trust tests/ref/vecattn_ref.c, so this file pins it to the spec with cases
** small enough to check by hand: conversions, pooling (two roundings, a partial last block),
** the selection walk (running max updated slice by slice, tile reset, causal candidates,
** Sq < Sk alignment), attention on tiny key sets, the sparsity formula, and invariances
** (all keys kept == dense, BSHD == BHSD, GQA == repeated KV heads).
**
** Selection cases use D = 64 with q[t][0] = 8 and the default scale 1/8, so qs = (1, 0, ...)
** and s(i, j) = k[j][0] exactly; keys are placed at least 0.25 away from every decision
** boundary and the threshold is p = e^-1 (gap ~= 1).
*/
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "ref/vecattn_ref.h"
#include "test_util.h"

/* ------------------------------------------------------------------------------------- */
/* A host problem: args with host pointers, contiguous [B, H, S, D]                        */
/* ------------------------------------------------------------------------------------- */

typedef struct host_problem {
    vecattn_prefill_args a;
    uint16_t *q, *k, *v;
} host_problem;

static void set_bhsd(int64_t st[3], int H, int S, int D)
{
    st[0] = (int64_t)H * S * D;
    st[1] = (int64_t)S * D;
    st[2] = D;
}

/* Zero-filled tensors; the selection parameters default to non-causal, p = e^-1. */
static void hp_init(host_problem *p, int B, int Hq, int Hkv, int Sq, int Sk, int D,
                    vecattn_dtype dt)
{
    memset(p, 0, sizeof *p);
    vecattn_prefill_args *a = &p->a;
    a->batch = B, a->heads_q = Hq, a->heads_kv = Hkv, a->seq_q = Sq, a->seq_k = Sk;
    a->head_dim = D, a->dtype = dt;
    a->pq = 16, a->bk = 4, a->gk = 2, a->threshold = expf(-1.0f);
    p->q = calloc((size_t)B * Hq * Sq * D, sizeof(uint16_t));
    p->k = calloc((size_t)B * Hkv * Sk * D, sizeof(uint16_t));
    p->v = calloc((size_t)B * Hkv * Sk * D, sizeof(uint16_t));
    if (!p->q || !p->k || !p->v)
        abort();
    a->q = p->q, a->k = p->k, a->v = p->v;
    set_bhsd(a->q_stride, Hq, Sq, D);
    set_bhsd(a->k_stride, Hkv, Sk, D);
    set_bhsd(a->v_stride, Hkv, Sk, D);
    set_bhsd(a->o_stride, Hq, Sq, D);
}

static void hp_free(host_problem *p)
{
    free(p->q), free(p->k), free(p->v);
}

static void hp_random(host_problem *p, uint64_t seed)
{
    const vecattn_prefill_args *a = &p->a;
    size_t nq = (size_t)a->batch * a->heads_q * a->seq_q * a->head_dim;
    size_t nk = (size_t)a->batch * a->heads_kv * a->seq_k * a->head_dim;
    va_ref_fill_random(p->q, nq, a->dtype, &seed, -1.0f, 1.0f);
    va_ref_fill_random(p->k, nk, a->dtype, &seed, -1.0f, 1.0f);
    va_ref_fill_random(p->v, nk, a->dtype, &seed, -1.0f, 1.0f);
}

static uint16_t *elem(uint16_t *base, const int64_t st[3], int b, int h, int s, int d)
{
    return base + b * st[0] + h * st[1] + s * st[2] + d;
}

static void set_q(host_problem *p, int t, int d, float x)
{
    *elem(p->q, p->a.q_stride, 0, 0, t, d) = va_ref_from_float(x, p->a.dtype);
}

static void set_k(host_problem *p, int j, int d, float x)
{
    *elem(p->k, p->a.k_stride, 0, 0, j, d) = va_ref_from_float(x, p->a.dtype);
}

static void set_v(host_problem *p, int j, int d, float x)
{
    *elem(p->v, p->a.v_stride, 0, 0, j, d) = va_ref_from_float(x, p->a.dtype);
}

/* Selection CSR of a problem (ref), freed with csr_free. */
typedef struct csr {
    int rows;
    int32_t *counts;
    int64_t *offsets;
    int32_t *indices;
    int64_t total;
} csr;

static void csr_select(csr *c, const vecattn_prefill_args *a)
{
    c->rows = a->batch * a->heads_q * va_ref_num_qblocks(a);
    c->counts = malloc(sizeof(int32_t) * (size_t)c->rows);
    c->offsets = malloc(sizeof(int64_t) * ((size_t)c->rows + 1));
    if (!c->counts || !c->offsets)
        abort();
    c->total = va_ref_select(a, c->counts, c->offsets, &c->indices);
    if (c->total < 0)
        abort();
}

static void csr_free(csr *c)
{
    free(c->counts), free(c->offsets), free(c->indices);
}

static int csr_equal(const csr *x, const csr *y)
{
    return x->rows == y->rows && x->total == y->total &&
           !memcmp(x->counts, y->counts, sizeof(int32_t) * (size_t)x->rows) &&
           !memcmp(x->offsets, y->offsets, sizeof(int64_t) * ((size_t)x->rows + 1)) &&
           !memcmp(x->indices, y->indices, sizeof(int32_t) * (size_t)x->total);
}

/* Does row r of the CSR hold exactly the keys `want[0..n)`? */
static int row_is(const csr *c, int r, const int *want, int n)
{
    if (c->counts[r] != n || c->offsets[r + 1] - c->offsets[r] != n)
        return 0;
    for (int x = 0; x < n; x++)
        if (c->indices[c->offsets[r] + x] != want[x])
            return 0;
    return 1;
}

static void print_row(const char *what, const csr *c, int r)
{
    fprintf(stderr, "  %s row %d:", what, r);
    for (int64_t x = c->offsets[r]; x < c->offsets[r] + c->counts[r]; x++)
        fprintf(stderr, " %d", c->indices[x]);
    fputc('\n', stderr);
}

/* Selection of a one-(b, h) problem, checked row by row against expected key lists. */
static void expect_selection(const char *name, const vecattn_prefill_args *a,
                             const int *const *want, const int *nwant)
{
    csr c;
    csr_select(&c, a);
    for (int r = 0; r < c.rows; r++) {
        int ok = row_is(&c, r, want[r], nwant[r]);
        CHECK(ok, "%s: block %d selects the wrong keys", name, r);
        if (!ok)
            print_row(name, &c, r);
    }
    csr_free(&c);
}

/* ------------------------------------------------------------------------------------- */
/* Conversions                                                                            */
/* ------------------------------------------------------------------------------------- */

static int is_nan_bits(uint16_t x, vecattn_dtype dt)
{
    return isnan(va_ref_to_float(x, dt));
}

static void test_known_conversions(void)
{
    static const struct {
        vecattn_dtype dt;
        float x;
        uint16_t bits;
    } cases[] = {
        {VECATTN_BF16, 1.0f, 0x3F80},
        {VECATTN_BF16, -2.0f, 0xC000},
        {VECATTN_BF16, 0.1f, 0x3DCD},
        {VECATTN_BF16, 0x1.01p0f, 0x3F80},        /* tie, even below */
        {VECATTN_BF16, 0x1.03p0f, 0x3F82},        /* tie, odd below: up */
        {VECATTN_BF16, 0x1.0101p0f, 0x3F81},      /* just above the tie */
        {VECATTN_BF16, 3.3895313892515355e38f, 0x7F7F}, /* largest finite bf16 */
        {VECATTN_BF16, 3.4028234663852886e38f, 0x7F80}, /* FLT_MAX rounds to Inf */
        {VECATTN_BF16, INFINITY, 0x7F80},
        {VECATTN_BF16, -0.0f, 0x8000},
        {VECATTN_BF16, 0x1p-133f, 0x0001},        /* bf16 subnormal */
        {VECATTN_FP16, 1.0f, 0x3C00},
        {VECATTN_FP16, -2.0f, 0xC000},
        {VECATTN_FP16, 0.1f, 0x2E66},
        {VECATTN_FP16, 65504.0f, 0x7BFF},
        {VECATTN_FP16, 65519.0f, 0x7BFF},
        {VECATTN_FP16, 65520.0f, 0x7C00},         /* tie at the edge: to even = Inf */
        {VECATTN_FP16, 1e6f, 0x7C00},
        {VECATTN_FP16, -INFINITY, 0xFC00},
        {VECATTN_FP16, 0x1p-14f, 0x0400},         /* smallest normal */
        {VECATTN_FP16, 0x1.ff8p-15f, 0x03FF},     /* largest subnormal */
        {VECATTN_FP16, 0x1.ffcp-15f, 0x0400},     /* tie, odd below: up into the normals */
        {VECATTN_FP16, 0x1.ffap-15f, 0x03FF},     /* below that tie */
        {VECATTN_FP16, 0x1p-24f, 0x0001},         /* smallest subnormal */
        {VECATTN_FP16, 0x1p-25f, 0x0000},         /* tie with zero: even = 0 */
        {VECATTN_FP16, 0x1.8p-25f, 0x0001},
        {VECATTN_FP16, 0x1.8p-24f, 0x0002},       /* tie between 1 and 2: even = 2 */
        {VECATTN_FP16, 0x1.4p-23f, 0x0002},       /* 2.5 ulp: tie, even = 2 */
        {VECATTN_FP16, 1e-10f, 0x0000},
        {VECATTN_FP16, -1e-10f, 0x8000},
        {VECATTN_FP16, 0x1p-140f, 0x0000},        /* float subnormal */
        {VECATTN_FP16, 0x1.002p0f, 0x3C00},       /* tie, even below */
        {VECATTN_FP16, 0x1.006p0f, 0x3C02},       /* tie, odd below: up */
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        uint16_t got = va_ref_from_float(cases[c].x, cases[c].dt);
        CHECK(got == cases[c].bits, "%s from_float(%a) = 0x%04X, want 0x%04X",
              cases[c].dt == VECATTN_FP16 ? "fp16" : "bf16", cases[c].x, got, cases[c].bits);
    }
    CHECK(is_nan_bits(va_ref_from_float(NAN, VECATTN_BF16), VECATTN_BF16), "bf16 NaN");
    CHECK(is_nan_bits(va_ref_from_float(NAN, VECATTN_FP16), VECATTN_FP16), "fp16 NaN");
    CHECK(va_ref_to_float(0x0001, VECATTN_FP16) == 0x1p-24f, "fp16 subnormal value");
    CHECK(va_ref_to_float(0x7BFF, VECATTN_FP16) == 65504.0f, "fp16 max value");
    CHECK(isinf(va_ref_to_float(0x7C00, VECATTN_FP16)), "fp16 Inf value");
    CHECK(va_ref_to_float(0xFFFF, VECATTN_FP16) != va_ref_to_float(0xFFFF, VECATTN_FP16),
          "0xFFFF (the poison pattern) is NaN in fp16");
    CHECK(va_ref_to_float(0xFFFF, VECATTN_BF16) != va_ref_to_float(0xFFFF, VECATTN_BF16),
          "0xFFFF (the poison pattern) is NaN in bf16");
}

/* Every non-NaN bit pattern survives to_float -> from_float. */
static void test_roundtrip_all_bits(vecattn_dtype dt)
{
    int bad = 0;
    for (uint32_t b = 0; b < 0x10000u; b++) {
        uint16_t x = (uint16_t)b;
        if (is_nan_bits(x, dt))
            continue;
        if (va_ref_from_float(va_ref_to_float(x, dt), dt) != x && bad++ < 5)
            CHECK(0, "roundtrip of 0x%04X (%s)", x, dt == VECATTN_FP16 ? "fp16" : "bf16");
    }
    CHECK(bad == 0, "%d bit patterns do not roundtrip", bad);
}

/* Nearest-even rounding, checked against the two neighbours found in double. */
static int rounds_to_nearest_even(float x, uint16_t got, vecattn_dtype dt)
{
    double g = va_ref_to_float(got, dt), err = fabs((double)x - g);
    uint16_t neighbours[2] = {(uint16_t)(got + 1), (uint16_t)(got - 1)};
    for (int n = 0; n < 2; n++) {
        if ((got & 0x7FFF) == 0 && n == 1)
            continue; /* below +-0 the pattern wraps to the other sign */
        double y = va_ref_to_float(neighbours[n], dt);
        if (isnan(y) || isinf(y))
            continue;
        double e = fabs((double)x - y);
        if (e < err || (e == err && (got & 1)))
            return 0;
    }
    return 1;
}

static void test_random_rounding(vecattn_dtype dt)
{
    uint64_t rng = 12345;
    float range = dt == VECATTN_FP16 ? 60000.0f : 1e30f;
    int bad = 0;
    for (int n = 0; n < 200000; n++) {
        /* a log-uniform magnitude, so subnormals and large values are both hit */
        float mag = powf(2.0f, va_ref_rng_uniform(&rng, -30.0f, log2f(range)));
        float x = (va_ref_rng_next(&rng) & 1) ? mag : -mag;
        uint16_t got = va_ref_from_float(x, dt);
        if (!rounds_to_nearest_even(x, got, dt) && bad++ < 5)
            CHECK(0, "%s: from_float(%a) = 0x%04X is not the nearest-even value",
                  dt == VECATTN_FP16 ? "fp16" : "bf16", x, got);
#ifdef __FLT16_MAX__
        if (dt == VECATTN_FP16) {
            /* the compiler's own conversion, where it has one */
            __extension__ _Float16 h = (__extension__(_Float16) x);
            uint16_t hb;
            memcpy(&hb, &h, sizeof hb);
            if (hb != got && bad++ < 5)
                CHECK(0, "fp16 from_float(%a) = 0x%04X, _Float16 says 0x%04X", x, got, hb);
        }
#endif
    }
    CHECK(bad == 0, "%d random values rounded wrongly", bad);
}

/* ------------------------------------------------------------------------------------- */
/* Pooling                                                                                */
/* ------------------------------------------------------------------------------------- */

/*
** Sq = 20, Pq = 16: block 0 has 16 rows, block 1 the 4 rows 16..19. scale = 0.75.
**   dim 0: q = 8 in block 0 -> qs 6; q = t + 1 in block 1 -> mean 18.5 (divide by 4, not
**          16), qs 13.875 (exact in both dtypes).
**   dim 1: fifteen rows 1.0 and one row 1 + 12u (u = ulp(1)): mean 1 + 0.75u rounds to 1 + u;
**          (1 + u) * 0.75 = 0.75 + 1.5 ulp(0.75) is a tie that rounds (to even) to 0.75 + u.
**          Without the first rounding, (1 + 0.75u) * 0.75 = 0.75 + 1.125 ulp(0.75) would give
**          0.75 + u/2: this pins the two roundings.
*/
static void test_pool(vecattn_dtype dt)
{
    float u = dt == VECATTN_FP16 ? 0x1p-10f : 0x1p-7f;
    host_problem p;
    hp_init(&p, 1, 1, 1, 20, 20, 64, dt);
    p.a.scale = 0.75f;
    for (int t = 0; t < 16; t++) {
        set_q(&p, t, 0, 8.0f);
        set_q(&p, t, 1, t == 3 ? 1.0f + 12.0f * u : 1.0f);
    }
    for (int t = 16; t < 20; t++)
        set_q(&p, t, 0, (float)(t + 1));
    float qs[64];
    va_ref_pool(&p.a, 0, 0, 0, qs);
    CHECK(qs[0] == 6.0f, "pool block 0 dim 0 = %a", qs[0]);
    CHECK(qs[1] == 0.75f + u, "pool block 0 dim 1 = %a, want %a (two roundings)", qs[1],
          0.75f + u);
    CHECK(qs[2] == 0.0f, "pool block 0 dim 2 = %a", qs[2]);
    va_ref_pool(&p.a, 0, 0, 1, qs);
    CHECK(qs[0] == 13.875f, "pool partial block 1 dim 0 = %g, want 13.875", qs[0]);
    CHECK(qs[1] == 0.0f, "pool partial block 1 dim 1 = %a", qs[1]);
    hp_free(&p);
}

static void test_scale_and_gap(void)
{
    vecattn_prefill_args a;
    memset(&a, 0, sizeof a);
    a.head_dim = 64;
    CHECK(va_ref_scale(&a) == 0.125f, "default scale at D 64");
    a.head_dim = 128;
    CHECK(va_ref_scale(&a) == 1.0f / sqrtf(128.0f), "default scale at D 128");
    a.scale = 0.3f;
    CHECK(va_ref_scale(&a) == 0.3f, "explicit scale");
    CHECK(va_ref_gap(1.0f) == 0.0f, "gap(1) = %g", va_ref_gap(1.0f));
    CHECK(fabsf(va_ref_gap(0.9f) - 0.1053605f) < 1e-6f, "gap(0.9) = %g", va_ref_gap(0.9f));
    CHECK(fabsf(va_ref_gap(0.001f) - 6.9077554f) < 1e-5f, "gap(0.001) = %g",
          va_ref_gap(0.001f));
    float th[3] = {0.5f, 0.25f, 0.125f};
    a.threshold = 0.9f;
    CHECK(va_ref_head_threshold(&a, 2) == 0.9f, "scalar threshold");
    a.thresholds = th;
    CHECK(va_ref_head_threshold(&a, 2) == 0.125f, "per-head threshold");
}

/* ------------------------------------------------------------------------------------- */
/* Selection by hand                                                                      */
/* ------------------------------------------------------------------------------------- */

/* qs = (1, 0, ...) for every block: q[t][0] = 8 with scale 1/8 at D 64. */
static void unit_queries(host_problem *p)
{
    for (int t = 0; t < p->a.seq_q; t++)
        set_q(p, t, 0, 8.0f);
}

static void set_key_scores(host_problem *p, const float *s, int n)
{
    for (int j = 0; j < n; j++)
        set_k(p, j, 0, s[j]);
}

/*
** Non-causal, Sk = 20, Bk = 4, Gk = 2 (tiles [0,8), [8,16), [16,20)), gap ~= 1:
**   tile 0: slice [0,4)  max 3     -> keeps >= 2:     1, 3
**           slice [4,8)  max 5     -> keeps >= 4:     4, 5   (1 and 3 stay: earlier slices
**                                                             pass against a smaller max)
**   tile 1: slice [8,12) max -1    -> keeps >= -2:    8, 11  (the max restarted)
**           slice [12,16) max 0.75 -> keeps >= -0.25: 13, 15
**   tile 2: slice [16,20) max 10   -> keeps >= 9:     16, 17, 19
*/
static const float noncausal_scores[20] = {1,     3,  0,    2.5,  5,    4.5,  3.5,
                                           0,     -1.75, -3, -2.5, -1,   -1.5, 0.5,
                                           -0.5f, 0.75f, 10, 9.5f, 8.75f, 9.25f};

static void test_select_noncausal(void)
{
    host_problem p;
    hp_init(&p, 1, 1, 1, 16, 20, 64, VECATTN_BF16);
    unit_queries(&p);
    set_key_scores(&p, noncausal_scores, 20);

    static const int tiled[] = {1, 3, 4, 5, 8, 11, 13, 15, 16, 17, 19};
    const int *w1[] = {tiled};
    int n1[] = {11};
    expect_selection("non-causal gk 2", &p.a, w1, n1);

    signed char flags[20];
    va_ref_select_row(&p.a, 0, 0, 0, flags);
    for (int j = 0, x = 0; j < 20; j++) {
        int want = x < 11 && tiled[x] == j;
        x += want;
        CHECK(flags[j] == (want ? VA_REF_SELECTED : VA_REF_NOT_SELECTED),
              "non-causal flag of key %d is %d", j, flags[j]);
    }
    CHECK(3.0 + va_ref_gap(p.a.threshold) < 5.0,
          "key 1 passes only because the max was still 3 when its slice was tested");

    /* One tile for the whole row: the max carries on, tiles 1 and 2 lose their keys. */
    p.a.gk = 8192;
    static const int one_tile[] = {1, 3, 4, 5, 16, 17, 19};
    const int *w2[] = {one_tile};
    int n2[] = {7};
    expect_selection("non-causal one tile", &p.a, w2, n2);

    /* p = 1 (gap 0): only the running maxima. */
    p.a.gk = 2;
    p.a.threshold = 1.0f;
    static const int maxima[] = {1, 4, 11, 15, 16};
    const int *w3[] = {maxima};
    int n3[] = {5};
    expect_selection("non-causal p 1", &p.a, w3, n3);
    hp_free(&p);
}

/*
** Causal, Pq = 8, Bk = 4, Sq = 16, Sk = 30 (queries start at key 14):
**   block 0: p0 = 14, candidates [8, 14);  block 1: p0 = 22, candidates [8, 22).
** Key scores: sink [0, 8) = 100 and keys [22, 30) = 50 are never candidates and must
** neither be kept nor raise a max; keys 14, 15 (= 7) are candidates of block 1 only.
**   block 0: [8,12) max 2 -> 9, 10;  [12,14) max 3 -> 12 (7 is not in block 0's max)
**   block 1, Gk 1: [8,12) -> 9, 10;  [12,16) max 7 -> 14, 15;
**                  [16,20) max -4.5 -> 16, 17, 18;  [20,22) max -5.75 -> 20, 21
**   block 1, Gk 4 (tiles [0,16), [16,32)): the same, except that [20,22) now tests against
**                  the tile's max -4.5 and keeps nothing.
*/
static void causal_keys(host_problem *p)
{
    static const float mid[14] = {0,  2,     1.5f,  0.5f, 3,     -1,    7,
                                  7,  -5,    -5.25f, -4.5f, -6,  -6,    -5.75f};
    for (int j = 0; j < 8; j++)
        set_k(p, j, 0, 100.0f);
    for (int j = 8; j < 22; j++)
        set_k(p, j, 0, mid[j - 8]);
    for (int j = 22; j < 30; j++)
        set_k(p, j, 0, 50.0f);
}

static void test_select_causal(void)
{
    host_problem p;
    hp_init(&p, 1, 1, 1, 16, 30, 64, VECATTN_BF16);
    p.a.causal = 1, p.a.pq = 8, p.a.bk = 4, p.a.gk = 1;
    unit_queries(&p);
    causal_keys(&p);

    int64_t lo, hi;
    va_ref_candidates(&p.a, 0, &lo, &hi);
    CHECK(lo == 8 && hi == 14, "block 0 candidates [%lld, %lld)", (long long)lo, (long long)hi);
    va_ref_candidates(&p.a, 1, &lo, &hi);
    CHECK(lo == 8 && hi == 22, "block 1 candidates [%lld, %lld)", (long long)lo, (long long)hi);
    int32_t fr[4];
    va_ref_forced_ranges(&p.a, 0, fr);
    CHECK(fr[0] == 0 && fr[1] == 8 && fr[2] == 14 && fr[3] == 22, "block 0 forced");
    va_ref_forced_ranges(&p.a, 1, fr);
    CHECK(fr[0] == 0 && fr[1] == 8 && fr[2] == 22 && fr[3] == 30, "block 1 forced");

    static const int b0[] = {9, 10, 12};
    static const int b1[] = {9, 10, 14, 15, 16, 17, 18, 20, 21};
    const int *w[] = {b0, b1};
    int n[] = {3, 9};
    expect_selection("causal gk 1", &p.a, w, n);

    p.a.gk = 4;
    int n4[] = {3, 7};
    expect_selection("causal gk 4", &p.a, w, n4);

    signed char flags[30];
    va_ref_select_row(&p.a, 0, 0, 0, flags);
    for (int j = 0; j < 30; j++)
        if (j < 8 || j >= 14)
            CHECK(flags[j] == VA_REF_NOT_SELECTED, "block 0: non-candidate %d flagged", j);
    hp_free(&p);
}

/* Sq 16, Sk 20, Pq 8 (causal): block 0 starts at key 4 < Pq, so it has no candidate and
** its sink is cut at p0: forced = [0, 4) and [4, 12). */
static void test_causal_early_block(void)
{
    host_problem p;
    hp_init(&p, 1, 1, 1, 16, 20, 64, VECATTN_FP16);
    p.a.causal = 1, p.a.pq = 8, p.a.bk = 8, p.a.gk = 1;
    int64_t lo, hi;
    int32_t fr[4];
    va_ref_candidates(&p.a, 0, &lo, &hi);
    CHECK(lo >= hi, "block 0 has no candidate: [%lld, %lld)", (long long)lo, (long long)hi);
    va_ref_forced_ranges(&p.a, 0, fr);
    CHECK(fr[0] == 0 && fr[1] == 4 && fr[2] == 4 && fr[3] == 12, "block 0 forced %d %d %d %d",
          fr[0], fr[1], fr[2], fr[3]);
    va_ref_candidates(&p.a, 1, &lo, &hi);
    CHECK(lo == 8 && hi == 12, "block 1 candidates [%lld, %lld)", (long long)lo, (long long)hi);
    csr c;
    csr_select(&c, &p.a);
    CHECK(c.counts[0] == 0, "block 0 selects %d keys", c.counts[0]);
    CHECK(c.counts[1] >= 1, "block 1 selects nothing");
    csr_free(&c);
    hp_free(&p);
}

/* ------------------------------------------------------------------------------------- */
/* Selection invariants on random data                                                    */
/* ------------------------------------------------------------------------------------- */

/* Row r of the CSR as a key bitmap; also checks the list is strictly ascending, in range. */
static void row_bitmap(const csr *c, int r, int sk, unsigned char *in)
{
    memset(in, 0, (size_t)sk);
    for (int64_t x = c->offsets[r]; x < c->offsets[r] + c->counts[r]; x++) {
        int j = c->indices[x];
        CHECK(j >= 0 && j < sk, "row %d: index %d out of range", r, j);
        CHECK(x == c->offsets[r] || c->indices[x - 1] < j, "row %d: not ascending", r);
        if (j >= 0 && j < sk)
            in[j] = 1;
    }
}

/* Flags vs CSR, candidates only, every tile with a candidate keeps >= 1 key. Returns the
** number of ambiguous keys of the row; adds its candidates to *cands. */
static long check_row(const vecattn_prefill_args *a, const csr *c, int b, int h, int i,
                      signed char *flags, unsigned char *in, long *cands)
{
    int nq = va_ref_num_qblocks(a), sk = a->seq_k;
    int r = (b * a->heads_q + h) * nq + i;
    int64_t lo, hi, tile = (int64_t)a->gk * a->bk;
    long amb = 0;
    va_ref_candidates(a, i, &lo, &hi);
    va_ref_select_row(a, b, h, i, flags);
    row_bitmap(c, r, sk, in);
    for (int j = 0; j < sk; j++) {
        int cand = j >= lo && j < hi;
        CHECK(cand || (flags[j] == VA_REF_NOT_SELECTED && !in[j]), "row %d key %d", r, j);
        CHECK(flags[j] != VA_REF_SELECTED || in[j], "row %d: selected key %d not listed", r, j);
        CHECK(!in[j] || flags[j] != VA_REF_NOT_SELECTED, "row %d: listed key %d fails", r, j);
        amb += flags[j] == VA_REF_AMBIGUOUS;
    }
    for (int64_t t0 = lo / tile * tile; lo < hi && t0 < hi; t0 += tile) {
        int kept = 0;
        for (int64_t j = t0 > lo ? t0 : lo; j < t0 + tile && j < hi; j++)
            kept += in[j];
        CHECK(kept >= 1, "row %d: the tile at %lld keeps nothing", r, (long long)t0);
    }
    *cands += hi > lo ? (long)(hi - lo) : 0;
    return amb;
}

/* All the row checks over a problem; returns the fraction of candidates kept. */
static double check_selection_invariants(const char *name, const vecattn_prefill_args *a)
{
    csr c;
    csr_select(&c, a);
    signed char *flags = malloc((size_t)a->seq_k);
    unsigned char *in = malloc((size_t)a->seq_k);
    if (!flags || !in)
        abort();
    long amb = 0, cands = 0;
    int nq = va_ref_num_qblocks(a);
    for (int b = 0; b < a->batch; b++)
        for (int h = 0; h < a->heads_q; h++)
            for (int i = 0; i < nq; i++)
                amb += check_row(a, &c, b, h, i, flags, in, &cands);
    CHECK(c.offsets[0] == 0 && c.offsets[c.rows] == c.total, "%s: offsets", name);
    CHECK(amb * 1000 <= cands, "%s: %ld ambiguous keys of %ld candidates", name, amb, cands);
    printf("  %-28s kept %6lld of %7ld candidates, %ld ambiguous, sparsity %.4f\n", name,
           (long long)c.total, cands, amb, va_ref_sparsity(a, c.counts));
    double kept = cands ? (double)c.total / (double)cands : 0.0;
    free(flags), free(in);
    csr_free(&c);
    return kept;
}

static void test_selection_invariants(void)
{
    static const struct {
        int causal, sq, sk, pq, bk, gk;
        float p;
        vecattn_dtype dt;
    } cases[] = {
        {1, 200, 200, 16, 8, 2, 0.9f, VECATTN_BF16},
        {1, 77, 301, 32, 8, 3, 0.5f, VECATTN_FP16},
        {1, 5, 130, 64, 16, 16, 1.0f, VECATTN_BF16},
        {0, 150, 150, 16, 32, 1, 0.9f, VECATTN_FP16},
        {0, 33, 257, 64, 16, 8192, 0.001f, VECATTN_BF16},
        {0, 100, 300, 128, 128, 2, 0.99f, VECATTN_FP16},
    };
    for (size_t n = 0; n < sizeof cases / sizeof cases[0]; n++) {
        host_problem p;
        hp_init(&p, 2, 2, 1, cases[n].sq, cases[n].sk, 64, cases[n].dt);
        p.a.causal = cases[n].causal, p.a.pq = cases[n].pq, p.a.bk = cases[n].bk;
        p.a.gk = cases[n].gk, p.a.threshold = cases[n].p;
        hp_random(&p, 1000 + n);
        char name[64];
        snprintf(name, sizeof name, "random case %zu", n);
        check_selection_invariants(name, &p.a);
        hp_free(&p);
    }
}

/* The vertical generator gives a selection at p 0.9 that is neither empty nor dense:
** a few keys per 256-key tile (about 2% of the candidates at this size). */
static void test_vertical(int D)
{
    host_problem p;
    hp_init(&p, 1, 2, 1, 1024, 1024, D, VECATTN_BF16);
    p.a.causal = 1, p.a.pq = 64, p.a.bk = 16, p.a.gk = 16, p.a.threshold = 0.9f;
    va_ref_vertical vp;
    va_ref_vertical_defaults(&vp);
    uint64_t rng = 77;
    va_ref_fill_vertical(&p.a, p.q, p.k, &rng, &vp);
    char name[64];
    snprintf(name, sizeof name, "vertical D %d", D);
    double kept = check_selection_invariants(name, &p.a);
    CHECK(kept > 0.002 && kept < 0.5, "vertical data D %d: %.4f of the candidates kept", D,
          kept);
    hp_free(&p);
}

/* ------------------------------------------------------------------------------------- */
/* Attention                                                                              */
/* ------------------------------------------------------------------------------------- */

static int near(double x, double y, double tol)
{
    return fabs(x - y) <= tol;
}

/* Two keys, scores 1 and 0: weights e/(e+1), 1/(e+1). */
static void test_attention_two_keys(void)
{
    host_problem p;
    hp_init(&p, 1, 1, 1, 1, 2, 64, VECATTN_BF16);
    p.a.dense = 1;
    set_q(&p, 0, 0, 8.0f);
    set_k(&p, 0, 0, 1.0f);
    set_v(&p, 0, 0, 2.0f);
    set_v(&p, 1, 1, 4.0f);
    double o[64], lse, e = exp(1.0);
    CHECK(va_ref_attention(&p.a, NULL, NULL, NULL, NULL, o, &lse) == 0, "attention");
    CHECK(near(o[0], 2.0 * e / (e + 1.0), 1e-14), "o[0] = %.17g", o[0]);
    CHECK(near(o[1], 4.0 / (e + 1.0), 1e-14), "o[1] = %.17g", o[1]);
    CHECK(o[2] == 0.0, "o[2] = %g", o[2]);
    CHECK(near(lse, log(e + 1.0), 1e-14), "lse = %.17g", lse);
    hp_free(&p);
}

/* q = 0 makes every weight equal, so o is the mean of the visible v[j][0] = j + 1. */
static void value_ramp(host_problem *p)
{
    for (int j = 0; j < p->a.seq_k; j++)
        set_v(p, j, 0, (float)(j + 1));
}

static double run_attention(const vecattn_prefill_args *a, const int32_t *fr,
                            const int32_t *counts, const int64_t *offsets, const int32_t *idx,
                            double *o, double *lse)
{
    int rc = va_ref_attention(a, fr, counts, offsets, idx, o, lse);
    CHECK(rc == 0, "va_ref_attention failed");
    return rc;
}

static void test_attention_causal_mask(void)
{
    /* dense causal, Sq 2 < Sk 3: query 0 sits at key 1 and sees keys 0, 1 */
    host_problem p;
    hp_init(&p, 1, 1, 1, 2, 3, 64, VECATTN_FP16);
    p.a.dense = 1, p.a.causal = 1;
    value_ramp(&p);
    double o[2 * 64], lse[2];
    run_attention(&p.a, NULL, NULL, NULL, NULL, o, lse);
    CHECK(near(o[0], 1.5, 1e-14) && near(lse[0], log(2.0), 1e-14), "q0: %g %g", o[0], lse[0]);
    CHECK(near(o[64], 2.0, 1e-14) && near(lse[1], log(3.0), 1e-14), "q1: %g %g", o[64],
          lse[1]);
    hp_free(&p);
}

/*
** Spec forced keys, causal, Sq = Sk = 6, Pq = 2: block 2 (queries 4, 5) has the sink {0, 1}
** and the diagonal {4, 5}; key 3 comes from its list. Query 4 sees {0, 1, 3, 4}, query 5
** sees {0, 1, 3, 4, 5}; queries 0..3 only see forced keys (every candidate range is empty
** or unlisted).
*/
static void test_attention_spec_forced(void)
{
    host_problem p;
    hp_init(&p, 1, 1, 1, 6, 6, 64, VECATTN_BF16);
    p.a.causal = 1, p.a.pq = 2;
    value_ramp(&p);
    int32_t counts[3] = {0, 0, 1};
    int64_t offsets[4] = {0, 0, 0, 1};
    int32_t idx[1] = {3};
    double o[6 * 64], lse[6];
    static const double want[6] = {1.0, 1.5, 2.0, 2.5, 3.0, 3.6};
    static const int nkeys[6] = {1, 2, 3, 4, 4, 5};
    run_attention(&p.a, NULL, counts, offsets, idx, o, lse);
    for (int t = 0; t < 6; t++)
        CHECK(near(o[t * 64], want[t], 1e-14) && near(lse[t], log(nkeys[t]), 1e-14),
              "query %d: o %g (want %g), lse %g", t, o[t * 64], want[t], lse[t]);
    /* without lists, query 4 sees {0, 1, 4}, query 5 {0, 1, 4, 5} */
    run_attention(&p.a, NULL, NULL, NULL, NULL, o, lse);
    CHECK(near(o[4 * 64], 8.0 / 3.0, 1e-14), "no lists, query 4: %g", o[4 * 64]);
    CHECK(near(o[5 * 64], 3.5, 1e-14), "no lists, query 5: %g", o[5 * 64]);
    hp_free(&p);
}

/* Caller's forced ranges + lists, and the empty key set (o = 0, lse = -inf). */
static void test_attention_byo(void)
{
    host_problem p;
    hp_init(&p, 1, 1, 1, 1, 5, 64, VECATTN_FP16);
    value_ramp(&p);
    int32_t fr[4] = {1, 2, 4, 4}; /* key 1, then an empty range */
    int32_t counts[1] = {1};
    int64_t offsets[2] = {0, 1};
    int32_t idx[1] = {3};
    double o[64], lse;
    run_attention(&p.a, fr, counts, offsets, idx, o, &lse);
    CHECK(near(o[0], 3.0, 1e-14) && near(lse, log(2.0), 1e-14), "keys {1, 3}: %g %g", o[0],
          lse);
    int32_t none[4] = {0, 0, 3, 3};
    counts[0] = 0;
    run_attention(&p.a, none, counts, offsets, idx, o, &lse);
    CHECK(o[0] == 0.0 && o[63] == 0.0 && isinf(lse) && lse < 0, "empty key set: %g %g", o[0],
          lse);
    hp_free(&p);
}

static double max_abs_diff(const double *x, const double *y, size_t n)
{
    double m = 0.0;
    for (size_t e = 0; e < n; e++) {
        if (isinf(x[e]) && x[e] == y[e])
            continue;
        m = fmax(m, fabs(x[e] - y[e]));
        if (isnan(x[e]) || isnan(y[e]))
            return INFINITY;
    }
    return m;
}

/* p = 1e-30 (gap ~69): every candidate is kept, so the sparse path is dense attention. */
static void all_kept_case(int causal, int sq, int sk, int D, vecattn_dtype dt)
{
    host_problem p;
    hp_init(&p, 1, 2, 2, sq, sk, D, dt);
    p.a.causal = causal, p.a.pq = 16, p.a.bk = 8, p.a.gk = 2, p.a.threshold = 1e-30f;
    hp_random(&p, (uint64_t)(sq * 31 + sk + causal));
    csr c;
    csr_select(&c, &p.a);
    for (int r = 0; r < c.rows; r++) {
        int64_t lo, hi;
        va_ref_candidates(&p.a, r % va_ref_num_qblocks(&p.a), &lo, &hi);
        CHECK(c.counts[r] == (hi > lo ? hi - lo : 0), "all kept: row %d keeps %d", r,
              c.counts[r]);
    }
    CHECK(va_ref_sparsity(&p.a, c.counts) == 0.0, "all kept: sparsity %g",
          va_ref_sparsity(&p.a, c.counts));
    size_t n = (size_t)2 * sq;
    double *o1 = malloc(n * D * sizeof(double)), *o2 = malloc(n * D * sizeof(double));
    double *l1 = malloc(n * sizeof(double)), *l2 = malloc(n * sizeof(double));
    if (!o1 || !o2 || !l1 || !l2)
        abort();
    run_attention(&p.a, NULL, c.counts, c.offsets, c.indices, o1, l1);
    p.a.dense = 1;
    run_attention(&p.a, NULL, NULL, NULL, NULL, o2, l2);
    CHECK(max_abs_diff(o1, o2, n * D) <= 1e-12, "all kept (causal %d, %dx%d): o differs by %g",
          causal, sq, sk, max_abs_diff(o1, o2, n * D));
    CHECK(max_abs_diff(l1, l2, n) <= 1e-12, "all kept: lse differs by %g",
          max_abs_diff(l1, l2, n));
    free(o1), free(o2), free(l1), free(l2);
    csr_free(&c);
    hp_free(&p);
}

static void test_all_kept(void)
{
    all_kept_case(1, 100, 100, 64, VECATTN_BF16);
    all_kept_case(1, 37, 100, 128, VECATTN_FP16);
    all_kept_case(0, 50, 90, 64, VECATTN_FP16);
    all_kept_case(0, 20, 20, 32, VECATTN_BF16); /* the reference does not care about D */
}

/* ------------------------------------------------------------------------------------- */
/* Sparsity                                                                               */
/* ------------------------------------------------------------------------------------- */

static void test_sparsity(void)
{
    vecattn_prefill_args a;
    memset(&a, 0, sizeof a);
    a.batch = 1, a.heads_q = 1, a.heads_kv = 1, a.head_dim = 64, a.pq = 4;

    /* causal 10 x 10: valid 55. Blocks attend 0+10, 4*4+10, 2*(4+2)+3 -> 51 */
    a.causal = 1, a.seq_q = 10, a.seq_k = 10;
    int32_t c1[3] = {0, 0, 2};
    CHECK(near(va_ref_sparsity(&a, c1), 4.0 / 55.0, 1e-15), "causal sparsity %.17g",
          va_ref_sparsity(&a, c1));
    CHECK(near(va_ref_sparsity(&a, NULL), 8.0 / 55.0, 1e-15), "causal, no lists %.17g",
          va_ref_sparsity(&a, NULL));

    /* causal 4 x 10: valid 4*7 + 6 = 34; sink 4, one listed, diagonal 10 -> 30 */
    a.seq_q = 4;
    int32_t c2[1] = {1};
    CHECK(near(va_ref_sparsity(&a, c2), 4.0 / 34.0, 1e-15), "causal Sq < Sk sparsity %.17g",
          va_ref_sparsity(&a, c2));

    /* non-causal 6 x 10, two heads: valid 120; 4*3 + 2*5 + 4*1 + 2*0 = 26 */
    a.causal = 0, a.seq_q = 6, a.heads_q = 2, a.heads_kv = 2;
    int32_t c3[4] = {3, 5, 1, 0};
    CHECK(near(va_ref_sparsity(&a, c3), 1.0 - 26.0 / 120.0, 1e-15),
          "non-causal sparsity %.17g", va_ref_sparsity(&a, c3));
    a.dense = 1;
    CHECK(va_ref_sparsity(&a, NULL) == 0.0, "dense sparsity");
}

/* ------------------------------------------------------------------------------------- */
/* Layout and head mapping invariances                                                    */
/* ------------------------------------------------------------------------------------- */

/* Copy a contiguous BHSD tensor into a BSHD one. */
static uint16_t *to_bshd(const uint16_t *src, int B, int H, int S, int D, int64_t st[3])
{
    uint16_t *dst = malloc(sizeof(uint16_t) * (size_t)B * H * S * D);
    if (!dst)
        abort();
    st[0] = (int64_t)S * H * D, st[1] = D, st[2] = (int64_t)H * D;
    for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++)
            for (int s = 0; s < S; s++)
                memcpy(dst + b * st[0] + h * st[1] + s * st[2],
                       src + (((size_t)b * H + h) * S + s) * D, sizeof(uint16_t) * D);
    return dst;
}

/* Selection and attention of two problems must agree bit for bit. */
static void expect_same_results(const char *name, const vecattn_prefill_args *x,
                                const vecattn_prefill_args *y)
{
    csr cx, cy;
    csr_select(&cx, x);
    csr_select(&cy, y);
    CHECK(csr_equal(&cx, &cy), "%s: selections differ", name);
    size_t rows = (size_t)x->batch * x->heads_q * x->seq_q;
    double *ox = malloc(rows * x->head_dim * sizeof(double));
    double *oy = malloc(rows * x->head_dim * sizeof(double));
    double *lx = malloc(rows * sizeof(double)), *ly = malloc(rows * sizeof(double));
    if (!ox || !oy || !lx || !ly)
        abort();
    run_attention(x, NULL, cx.counts, cx.offsets, cx.indices, ox, lx);
    run_attention(y, NULL, cx.counts, cx.offsets, cx.indices, oy, ly);
    CHECK(!memcmp(ox, oy, rows * x->head_dim * sizeof(double)), "%s: outputs differ", name);
    CHECK(!memcmp(lx, ly, rows * sizeof(double)), "%s: lse differs", name);
    free(ox), free(oy), free(lx), free(ly);
    csr_free(&cx), csr_free(&cy);
}

static void test_bshd(void)
{
    host_problem p;
    int B = 2, H = 3, Sq = 45, Sk = 70, D = 64;
    hp_init(&p, B, H, H, Sq, Sk, D, VECATTN_BF16);
    p.a.causal = 1, p.a.pq = 16, p.a.bk = 8, p.a.gk = 2, p.a.threshold = 0.6f;
    hp_random(&p, 99);
    vecattn_prefill_args s = p.a;
    uint16_t *q = to_bshd(p.q, B, H, Sq, D, s.q_stride);
    uint16_t *k = to_bshd(p.k, B, H, Sk, D, s.k_stride);
    uint16_t *v = to_bshd(p.v, B, H, Sk, D, s.v_stride);
    s.q = q, s.k = k, s.v = v;
    float qa[64], qb[64];
    va_ref_pool(&p.a, 1, 2, 2, qa);
    va_ref_pool(&s, 1, 2, 2, qb);
    CHECK(!memcmp(qa, qb, sizeof qa), "BSHD pooling differs");
    expect_same_results("BSHD vs BHSD", &p.a, &s);

    /* rel_l2 reads a BSHD output through its strides: the rounded reference is close */
    size_t n = (size_t)B * H * Sq * D;
    double *ref = malloc(n * sizeof(double));
    uint16_t *out = malloc(n * sizeof(uint16_t)), *outs;
    if (!ref || !out)
        abort();
    run_attention(&p.a, NULL, NULL, NULL, NULL, ref, NULL);
    for (size_t e = 0; e < n; e++)
        out[e] = va_ref_from_float((float)ref[e], p.a.dtype);
    int64_t ost[3];
    outs = to_bshd(out, B, H, Sq, D, ost);
    double err = va_ref_rel_l2(outs, p.a.dtype, ost, ref, B, H, Sq, D);
    CHECK(err > 0.0 && err < 0x1p-8, "rel_l2 of the rounded reference in BSHD: %g", err);
    free(ref), free(out), free(outs), free(q), free(k), free(v);
    hp_free(&p);
}

/* GQA 4:2 must equal MHA with each KV head repeated (query head h reads KV head h / 2). */
static void test_gqa(void)
{
    host_problem g, m;
    int Hq = 4, Sq = 40, Sk = 60, D = 64;
    hp_init(&g, 1, Hq, 2, Sq, Sk, D, VECATTN_FP16);
    hp_init(&m, 1, Hq, Hq, Sq, Sk, D, VECATTN_FP16);
    g.a.causal = m.a.causal = 1;
    g.a.pq = m.a.pq = 16;
    g.a.bk = m.a.bk = 8;
    hp_random(&g, 4242);
    memcpy(m.q, g.q, sizeof(uint16_t) * (size_t)Hq * Sq * D);
    size_t head = (size_t)Sk * D;
    for (int h = 0; h < Hq; h++) {
        memcpy(m.k + h * head, g.k + (h / 2) * head, head * sizeof(uint16_t));
        memcpy(m.v + h * head, g.v + (h / 2) * head, head * sizeof(uint16_t));
    }
    expect_same_results("GQA vs repeated KV", &g.a, &m.a);
    hp_free(&g), hp_free(&m);
}

/* ------------------------------------------------------------------------------------- */
/* Helpers                                                                                */
/* ------------------------------------------------------------------------------------- */

static void test_helpers(void)
{
    uint16_t x[4096];
    uint64_t rng = 0; /* splitmix64 accepts a zero state */
    va_ref_fill_random(x, 4096, VECATTN_BF16, &rng, -1.0f, 1.0f);
    int zeros = 0, outside = 0;
    for (int e = 0; e < 4096; e++) {
        float f = va_ref_to_float(x[e], VECATTN_BF16);
        zeros += f == 0.0f;
        outside += !(f >= -1.0f && f <= 1.0f);
    }
    CHECK(zeros == 0 && outside == 0, "fill_random: %d zeros, %d outside", zeros, outside);
    va_ref_fill_random(x, 16, VECATTN_FP16, &rng, 0.0f, 0.0f);
    for (int e = 0; e < 16; e++)
        CHECK((x[e] & 0x7FFF) != 0, "fill_random [0, 0) still gives nonzero elements");

    int64_t st[3] = {4, 4, 4};
    double ref[4] = {1.0, 0.0, 0.0, 0.0};
    uint16_t out[4] = {va_ref_from_float(1.5f, VECATTN_BF16), 0, 0, 0};
    CHECK(near(va_ref_rel_l2(out, VECATTN_BF16, st, ref, 1, 1, 1, 4), 0.5, 1e-15), "rel_l2");
    out[0] = va_ref_from_float(1.0f, VECATTN_BF16);
    CHECK(va_ref_rel_l2(out, VECATTN_BF16, st, ref, 1, 1, 1, 4) == 0.0, "rel_l2 exact");
    out[2] = 0xFFFF; /* NaN */
    CHECK(va_ref_rel_l2(out, VECATTN_BF16, st, ref, 1, 1, 1, 4) > 1.0, "rel_l2 with NaN");
    out[2] = 0x7C00; /* fp16 Inf */
    CHECK(va_ref_rel_l2(out, VECATTN_FP16, st, ref, 1, 1, 1, 4) > 1.0, "rel_l2 with Inf");
    double zero[4] = {0, 0, 0, 0};
    uint16_t zout[4] = {0, 0, 0, 0};
    CHECK(va_ref_rel_l2(zout, VECATTN_FP16, st, zero, 1, 1, 1, 4) == 0.0, "rel_l2 0 vs 0");
}

int main(void)
{
    test_known_conversions();
    test_roundtrip_all_bits(VECATTN_BF16);
    test_roundtrip_all_bits(VECATTN_FP16);
    test_random_rounding(VECATTN_BF16);
    test_random_rounding(VECATTN_FP16);
    test_scale_and_gap();
    test_pool(VECATTN_BF16);
    test_pool(VECATTN_FP16);
    test_select_noncausal();
    test_select_causal();
    test_causal_early_block();
    test_selection_invariants();
    test_vertical(64);
    test_vertical(128);
    test_attention_two_keys();
    test_attention_causal_mask();
    test_attention_spec_forced();
    test_attention_byo();
    test_all_kept();
    test_sparsity();
    test_bshd();
    test_gqa();
    test_helpers();
    return test_exit_code("test_reference");
}
