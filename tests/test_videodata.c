/*
** test_videodata.c -- the video-like data generator and the .npy loader (CPU only).
**
** Generator: deterministic from the seed, independent of strides and of which tensors are
** generated, and its sparsity at the defaults lands in the range videodata.h documents
** (checked with the float64 reference selection). Loader: good files of every supported
** dtype, version and rank read back exactly; every malformed file written below gives its
** named error and a message naming the file.
*/
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "autotune/videodata.h"
#include "ref/vecattn_ref.h"
#include "test_util.h"

static char tmpdir[256];

/* ---- helpers -------------------------------------------------------------------------- */

static vecattn_prefill_args small_problem(int heads_q, int heads_kv, int seq_q, int seq_k, vecattn_dtype dt) {
    vecattn_prefill_args a;
    vecattn_prefill_args_init(&a);
    a.batch = 2, a.heads_q = heads_q, a.heads_kv = heads_kv, a.seq_q = seq_q, a.seq_k = seq_k;
    a.head_dim = 64, a.dtype = dt;
    vecattn_set_contiguous_bhsd(&a);
    return a;
}

static size_t elems(const vecattn_prefill_args *a, int heads, int seq) {
    return (size_t)a->batch * heads * seq * a->head_dim;
}

/* Element (b, h, s, d) of a tensor with strides st. */
static uint16_t at(const uint16_t *x, const int64_t st[3], int b, int h, int s, int d) {
    return x[b * st[0] + h * st[1] + (int64_t)s * st[2] + d];
}

/* 1 when x (strides sx) and y (strides sy) hold the same [B, H, S, D] values. */
static int same_tensor(const uint16_t *x, const int64_t sx[3], const uint16_t *y, const int64_t sy[3], int B, int H,
                       int S, int D) {
    for (int b = 0; b < B; ++b)
        for (int h = 0; h < H; ++h)
            for (int s = 0; s < S; ++s)
                for (int d = 0; d < D; ++d)
                    if (at(x, sx, b, h, s, d) != at(y, sy, b, h, s, d)) return 0;
    return 1;
}

/* ---- generator -------------------------------------------------------------------------- */

static void test_conversions(void) {
    CHECK(va_video_from_float(1.0f, VECATTN_FP16) == 0x3c00, "fp16(1)");
    CHECK(va_video_from_float(1.0f, VECATTN_BF16) == 0x3f80, "bf16(1)");
    CHECK(va_video_from_float(-2.5f, VECATTN_FP16) == 0xc100, "fp16(-2.5)");
    CHECK(va_video_from_float(65504.0f, VECATTN_FP16) == 0x7bff, "fp16 max");
    CHECK(va_video_from_float(65520.0f, VECATTN_FP16) == 0x7c00, "fp16 overflow to Inf");
    CHECK(va_video_from_float(5.9604645e-8f, VECATTN_FP16) == 0x0001, "fp16 smallest subnormal");
    CHECK(va_video_from_float(1.0f + 1.0f / 2048.0f, VECATTN_FP16) == 0x3c00, "fp16 tie to even");
    CHECK(va_video_from_float(1.0f + 1.0f / 256.0f, VECATTN_BF16) == 0x3f80, "bf16 tie to even");
    for (int i = 0; i < 0x7c00; i += 7) /* every finite fp16 round-trips */
        CHECK(va_video_from_float(va_video_to_float((uint16_t)i, VECATTN_FP16), VECATTN_FP16) == i, "fp16 %04x", i);
}

static void test_determinism_and_strides(vecattn_dtype dt) {
    vecattn_prefill_args a = small_problem(4, 2, 200, 300, dt);
    size_t nq = elems(&a, 4, 200), nk = elems(&a, 2, 300);
    uint16_t *q1 = malloc(nq * 2), *k1 = malloc(nk * 2), *v1 = malloc(nk * 2);
    uint16_t *q2 = malloc(nq * 2), *k2 = malloc(nk * 2), *v2 = malloc(nk * 2);
    va_video_params p;
    va_video_defaults(&p);
    CHECK(va_video_fill(&a, q1, k1, v1, &p) == 0, "fill");
    CHECK(va_video_fill(&a, q2, k2, v2, &p) == 0, "fill again");
    CHECK(!memcmp(q1, q2, nq * 2) && !memcmp(k1, k2, nk * 2) && !memcmp(v1, v2, nk * 2), "not deterministic");
    memset(k2, 0, nk * 2);
    CHECK(va_video_fill(&a, NULL, k2, NULL, &p) == 0 && !memcmp(k1, k2, nk * 2), "K depends on whether Q/V are made");
    p.seed = 2;
    CHECK(va_video_fill(&a, q2, k2, v2, &p) == 0 && memcmp(k1, k2, nk * 2) != 0, "the seed changes nothing");

    /* [B, S, H, D] with padded rows (D + 8) must hold the same values as BHSD */
    vecattn_prefill_args w = a;
    int row = a.head_dim + 8;
    int64_t qs[3] = {(int64_t)a.seq_q * 4 * row, row, 4 * row}, ks[3] = {(int64_t)a.seq_k * 2 * row, row, 2 * row};
    memcpy(w.q_stride, qs, sizeof qs), memcpy(w.k_stride, ks, sizeof ks), memcpy(w.v_stride, ks, sizeof ks);
    uint16_t *qw = calloc((size_t)qs[0] * 2, 2), *kw = calloc((size_t)ks[0] * 2, 2),
             *vw = calloc((size_t)ks[0] * 2, 2);
    va_video_defaults(&p);
    CHECK(va_video_fill(&w, qw, kw, vw, &p) == 0, "fill BSHD");
    CHECK(same_tensor(q1, a.q_stride, qw, w.q_stride, 2, 4, 200, 64), "Q differs between layouts");
    CHECK(same_tensor(k1, a.k_stride, kw, w.k_stride, 2, 2, 300, 64), "K differs between layouts");
    CHECK(same_tensor(v1, a.v_stride, vw, w.v_stride, 2, 2, 300, 64), "V differs between layouts");
    int pad_clean = 1; /* the 8 padding elements of every row stay untouched */
    for (size_t i = 0; i < (size_t)ks[0] * 2; i += (size_t)row)
        for (int d = 64; d < row; ++d) pad_clean &= kw[i + (size_t)d] == 0;
    CHECK(pad_clean, "the generator wrote outside the rows");
    free(q1), free(k1), free(v1), free(q2), free(k2), free(v2), free(qw), free(kw), free(vw);
}

static void test_bad_arguments(void) {
    vecattn_prefill_args a = small_problem(3, 2, 10, 10, VECATTN_BF16);
    uint16_t buf[8];
    va_video_params p;
    va_video_defaults(&p);
    CHECK(va_video_fill(&a, buf, NULL, NULL, &p) == -1, "heads_q %% heads_kv accepted");
    a = small_problem(2, 2, 20, 10, VECATTN_BF16);
    CHECK(va_video_fill(&a, buf, NULL, NULL, &p) == -1, "seq_q > seq_k accepted");
    a = small_problem(2, 2, 10, 10, VECATTN_BF16);
    p.corr_x = 0.0f;
    CHECK(va_video_fill(&a, buf, NULL, NULL, &p) == -1, "corr_x 0 accepted");
}

/* The documented range: sparsity 0.80 .. 0.95 at S 4096, D 128, H 2, p 0.9, defaults. */
static void test_sparsity(int causal) {
    vecattn_prefill_args a;
    vecattn_prefill_args_init(&a);
    a.batch = 1, a.heads_q = a.heads_kv = 2, a.seq_q = a.seq_k = 4096, a.causal = causal;
    vecattn_set_contiguous_bhsd(&a);
    size_t n = elems(&a, 2, 4096);
    uint16_t *q = malloc(n * 2), *k = malloc(n * 2);
    CHECK(va_video_fill(&a, q, k, NULL, NULL) == 0, "fill");
    a.q = q, a.k = k;
    int rows = 2 * va_ref_num_qblocks(&a);
    int32_t *counts = malloc(sizeof(int32_t) * (size_t)rows), *indices = NULL;
    int64_t *offsets = malloc(sizeof(int64_t) * (size_t)(rows + 1));
    CHECK(va_ref_select(&a, counts, offsets, &indices) >= 0, "reference selection");
    double s = va_ref_sparsity(&a, counts);
    printf("sparsity at the defaults, S 4096, %s: %.4f\n", causal ? "causal" : "non-causal", s);
    CHECK(s >= 0.80 && s <= 0.95, "sparsity %.4f outside the documented 0.80 .. 0.95 (%s)", s,
          causal ? "causal" : "non-causal");
    free(q), free(k), free(counts), free(offsets), free(indices);
}

/* ---- .npy ---------------------------------------------------------------------------------- */

/* Write magic + version + header (padded to `align` with a final '\n') + data. */
static void write_npy(const char *path, int major, const char *dict, int align, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    size_t prefix = major == 1 ? 10 : 12, len = strlen(dict) + 1;
    while ((prefix + len) % (size_t)align) ++len;
    unsigned char head[12] = {0x93, 'N', 'U', 'M', 'P', 'Y', (unsigned char)major, 0};
    for (size_t i = 0; i < prefix - 8; ++i) head[8 + i] = (unsigned char)(len >> (8 * i));
    fwrite(head, 1, prefix, f);
    fputs(dict, f);
    for (size_t i = strlen(dict); i + 1 < len; ++i) fputc(' ', f);
    fputc('\n', f);
    if (n) fwrite(data, 1, n, f);
    fclose(f);
}

static const char *tmp_path(const char *name) {
    static char path[512];
    snprintf(path, sizeof path, "%s/%s", tmpdir, name);
    return path;
}

static void remove_tmpdir(void) {
    DIR *dir = opendir(tmpdir);
    for (struct dirent *e; dir && (e = readdir(dir));)
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) remove(tmp_path(e->d_name));
    if (dir) closedir(dir);
    rmdir(tmpdir);
}

static void test_npy_good(void) {
    uint16_t h16[2 * 3 * 4];
    float f32[2 * 3 * 4];
    for (int i = 0; i < 24; ++i) {
        f32[i] = (float)i * 0.25f - 2.0f;
        h16[i] = va_video_from_float(f32[i], VECATTN_FP16);
    }
    struct {
        const char *file, *dict;
        int major;
        const void *data;
        size_t bytes;
        int ndim, batch, heads, seq, dim;
    } cases[] = {
        {"sd.npy", "{'descr': '<f2', 'fortran_order': False, 'shape': (6, 4), }", 1, h16, 48, 2, 1, 1, 6, 4},
        {"hsd.npy", "{\"shape\": (2, 3, 4), \"descr\": \"<f4\", \"fortran_order\": False}", 2, f32, 96, 3, 1, 2, 3,
         4},
        {"bhsd.npy", "{'descr':'<f2','fortran_order':False,'shape':(1,2,3,4,)}", 3, h16, 48, 4, 1, 2, 3, 4},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; ++c) {
        write_npy(tmp_path(cases[c].file), cases[c].major, cases[c].dict, 64, cases[c].data, cases[c].bytes);
        va_npy_array arr;
        char msg[512] = "";
        va_npy_status st = va_npy_read(tmp_path(cases[c].file), &arr, msg, sizeof msg);
        CHECK(st == VA_NPY_OK, "%s: %s", cases[c].file, msg);
        if (st != VA_NPY_OK) continue;
        CHECK(arr.ndim == cases[c].ndim && arr.batch == cases[c].batch && arr.heads == cases[c].heads &&
                  arr.seq == cases[c].seq && arr.head_dim == cases[c].dim,
              "%s: shape read as %d-D [%d, %d, %d, %d]", cases[c].file, arr.ndim, arr.batch, arr.heads, arr.seq,
              arr.head_dim);
        uint16_t out[24];
        int64_t st3[3] = {(int64_t)arr.heads * arr.seq * arr.head_dim, (int64_t)arr.seq * arr.head_dim, arr.head_dim};
        va_npy_to_tensor(&arr, VECATTN_FP16, out, st3);
        CHECK(!memcmp(out, h16, sizeof out), "%s: values differ", cases[c].file);
        va_npy_free(&arr);
    }
}

static void expect_bad(const char *file, va_npy_status want) {
    va_npy_array arr;
    char msg[512] = "";
    va_npy_status st = va_npy_read(tmp_path(file), &arr, msg, sizeof msg);
    CHECK(st == want, "%s: got %s, want %s (%s)", file, va_npy_status_name(st), va_npy_status_name(want), msg);
    CHECK(strstr(msg, file) != NULL && strstr(msg, va_npy_status_name(want)) != NULL,
          "%s: the message does not name the file and the error: %s", file, msg);
    CHECK(arr.data == NULL, "%s: data left behind", file);
}

static void test_npy_bad(void) {
    uint16_t d[32] = {0}; /* 48 bytes make a valid (6, 4) float16 array; more for "trailing" */
    const char *ok = "{'descr': '<f2', 'fortran_order': False, 'shape': (6, 4), }";
    struct {
        const char *file, *dict;
        int major, align;
        size_t bytes;
        va_npy_status want;
    } cases[] = {
        {"version.npy", ok, 4, 64, 48, VA_NPY_E_VERSION},
        {"unknown_key.npy", "{'descr': '<f2', 'fortran_order': False, 'shape': (6, 4), 'x': 1}", 1, 64, 48,
         VA_NPY_E_HEADER},
        {"duplicate.npy", "{'descr': '<f2', 'descr': '<f2', 'fortran_order': False, 'shape': (6, 4)}", 1, 64, 48,
         VA_NPY_E_HEADER},
        {"missing.npy", "{'descr': '<f2', 'fortran_order': False}", 1, 64, 48, VA_NPY_E_HEADER},
        {"not_dict.npy", "('<f2', False, (6, 4))", 1, 64, 48, VA_NPY_E_HEADER},
        {"junk_after.npy", "{'descr': '<f2', 'fortran_order': False, 'shape': (6, 4)} x", 1, 64, 48, VA_NPY_E_HEADER},
        {"unpadded.npy", ok, 1, 5, 48, VA_NPY_E_HEADER},
        {"fortran.npy", "{'descr': '<f2', 'fortran_order': True, 'shape': (6, 4)}", 1, 64, 48, VA_NPY_E_ORDER},
        {"bigendian.npy", "{'descr': '>f2', 'fortran_order': False, 'shape': (6, 4)}", 1, 64, 48, VA_NPY_E_DTYPE},
        {"float64.npy", "{'descr': '<f8', 'fortran_order': False, 'shape': (3, 2)}", 1, 64, 48, VA_NPY_E_DTYPE},
        {"rank1.npy", "{'descr': '<f2', 'fortran_order': False, 'shape': (24,)}", 1, 64, 48, VA_NPY_E_SHAPE},
        {"rank5.npy", "{'descr': '<f2', 'fortran_order': False, 'shape': (1, 1, 1, 6, 4)}", 1, 64, 48,
         VA_NPY_E_SHAPE},
        {"zero_dim.npy", "{'descr': '<f2', 'fortran_order': False, 'shape': (0, 4)}", 1, 64, 0, VA_NPY_E_SHAPE},
        {"negative.npy", "{'descr': '<f2', 'fortran_order': False, 'shape': (-6, 4)}", 1, 64, 48, VA_NPY_E_HEADER},
        {"truncated.npy", ok, 1, 64, 40, VA_NPY_E_SIZE},
        {"trailing.npy", ok, 1, 64, 50, VA_NPY_E_SIZE},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; ++c) {
        write_npy(tmp_path(cases[c].file), cases[c].major, cases[c].dict, cases[c].align, d, cases[c].bytes);
        expect_bad(cases[c].file, cases[c].want);
    }
    FILE *f = fopen(tmp_path("magic.npy"), "wb");
    fputs("PK\x03\x04 not numpy at all", f);
    fclose(f);
    expect_bad("magic.npy", VA_NPY_E_MAGIC);
    f = fopen(tmp_path("past_end.npy"), "wb");
    fwrite("\x93NUMPY\x01\x00\xff\x00{'descr'", 1, 18, f);
    fclose(f);
    expect_bad("past_end.npy", VA_NPY_E_HEADER);
    expect_bad("does_not_exist.npy", VA_NPY_E_OPEN);
}

/* Q/K/V through va_npy_load_qkv: bf16 bits in, bf16 out unchanged; a K/V mismatch is named. */
static void test_npy_qkv(void) {
    uint16_t q[2 * 4 * 8], k[1 * 6 * 8];
    for (int i = 0; i < 64; ++i) q[i] = va_video_from_float((float)i, VECATTN_BF16);
    for (int i = 0; i < 48; ++i) k[i] = va_video_from_float(-(float)i, VECATTN_BF16);
    write_npy(tmp_path("q.npy"), 1, "{'descr': '<u2', 'fortran_order': False, 'shape': (2, 4, 8), }", 64, q,
              sizeof q);
    write_npy(tmp_path("k.npy"), 1, "{'descr': '<i2', 'fortran_order': False, 'shape': (1, 6, 8), }", 64, k,
              sizeof k);
    write_npy(tmp_path("v5.npy"), 1, "{'descr': '<i2', 'fortran_order': False, 'shape': (1, 5, 8), }", 64, k, 80);
    char qp[512], kp[512], vp[512], msg[512] = "";
    snprintf(qp, sizeof qp, "%s", tmp_path("q.npy"));
    snprintf(kp, sizeof kp, "%s", tmp_path("k.npy"));
    snprintf(vp, sizeof vp, "%s", tmp_path("v5.npy"));
    vecattn_prefill_args a;
    vecattn_prefill_args_init(&a);
    uint16_t *tq, *tk, *tv;
    va_npy_status st = va_npy_load_qkv(qp, kp, kp, VECATTN_BF16, &a, &tq, &tk, &tv, msg, sizeof msg);
    CHECK(st == VA_NPY_OK, "load_qkv: %s", msg);
    if (st == VA_NPY_OK) {
        CHECK(a.batch == 1 && a.heads_q == 2 && a.heads_kv == 1 && a.seq_q == 4 && a.seq_k == 6 && a.head_dim == 8,
              "sizes");
        CHECK(!memcmp(tq, q, sizeof q) && !memcmp(tk, k, sizeof k) && !memcmp(tv, k, sizeof k), "values");
        CHECK(a.q_stride[1] == 32 && a.k_stride[1] == 48 && a.q_stride[2] == 8, "strides");
        free(tq), free(tk), free(tv);
    }
    st = va_npy_load_qkv(qp, kp, vp, VECATTN_BF16, &a, &tq, &tk, &tv, msg, sizeof msg);
    CHECK(st == VA_NPY_E_MISMATCH && strstr(msg, "v5.npy"), "K/V mismatch: %s (%s)", va_npy_status_name(st), msg);
    CHECK(tq == NULL && tk == NULL && tv == NULL, "mismatch left tensors behind");
}

int main(void) {
    const char *base = getenv("TMPDIR");
    snprintf(tmpdir, sizeof tmpdir, "%s/vecattn_npy_XXXXXX", base && *base ? base : "/tmp");
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    test_conversions();
    test_determinism_and_strides(VECATTN_BF16);
    test_determinism_and_strides(VECATTN_FP16);
    test_bad_arguments();
    test_sparsity(1);
    test_sparsity(0);
    test_npy_good();
    test_npy_bad();
    test_npy_qkv();
    remove_tmpdir();
    return test_exit_code("test_videodata");
}
