/*
** test_validation.c -- argument checking and error reporting, without a GPU.
**
** Every bad input of vecattn_check_prefill_args must give its documented status code and a
** message that names the argument; the check must never dereference a tensor pointer, so
** the tensors here are fake device addresses. Also: context creation where the driver
** cannot be loaded, the status strings, and the NULL-context paths.
*/
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L /* setenv */
#endif

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "test_util.h"
#include "vecattn.h"

#define MISSING_DRIVER "/nonexistent/libcuda.so.1"

/* A valid problem: fake, 16-byte aligned device pointers that must never be read. */
static void valid_args(vecattn_prefill_args *a)
{
    vecattn_prefill_args_init(a);
    a->q = (const void *)0x10000;
    a->k = (const void *)0x20000;
    a->v = (const void *)0x30000;
    a->o = (void *)0x40000;
    a->batch = 1, a->heads_q = 4, a->heads_kv = 2, a->seq_q = 256, a->seq_k = 256;
    a->head_dim = 128;
    vecattn_set_contiguous_bhsd(a);
}

static const float bad_head_thresholds[4] = {0.9f, 0.9f, 1.5f, 0.9f};
static const float good_head_thresholds[4] = {0.9f, 0.5f, 1.0f, 0.001f};

/* One mutation of the valid problem per case. */
static void m_none(vecattn_prefill_args *a) { (void)a; }
static void m_head_dim(vecattn_prefill_args *a) { a->head_dim = 96, vecattn_set_contiguous_bhsd(a); }
static void m_seq_q0(vecattn_prefill_args *a) { a->seq_q = 0; }
static void m_seq_k0(vecattn_prefill_args *a) { a->seq_k = 0; }
static void m_seq_q_gt_k(vecattn_prefill_args *a) { a->seq_q = 300; }
static void m_heads(vecattn_prefill_args *a) { a->heads_q = 5; }
static void m_batch(vecattn_prefill_args *a) { a->batch = 0; }
static void m_q_null(vecattn_prefill_args *a) { a->q = NULL; }
static void m_k_null(vecattn_prefill_args *a) { a->k = NULL; }
static void m_v_null(vecattn_prefill_args *a) { a->v = NULL; }
static void m_o_null(vecattn_prefill_args *a) { a->o = NULL; }
static void m_misaligned(vecattn_prefill_args *a) { a->q = (const void *)0x1002; }
static void m_stride8(vecattn_prefill_args *a) { a->k_stride[2] = 132; }
static void m_overlap(vecattn_prefill_args *a) { a->q_stride[2] = 64; }
static void m_th0(vecattn_prefill_args *a) { a->threshold = 0.0f; }
static void m_th_neg(vecattn_prefill_args *a) { a->threshold = -0.5f; }
static void m_th_big(vecattn_prefill_args *a) { a->threshold = 1.5f; }
static void m_th_nan(vecattn_prefill_args *a) { a->threshold = NAN; }
static void m_th_head(vecattn_prefill_args *a) { a->thresholds = bad_head_thresholds; }
static void m_pq48(vecattn_prefill_args *a) { a->pq = 48; }
static void m_bk12(vecattn_prefill_args *a) { a->bk = 12; }
static void m_gk0(vecattn_prefill_args *a) { a->gk = 0; }
static void m_bk_gt_pq(vecattn_prefill_args *a) { a->pq = 16, a->bk = 32; }
static void m_chunk(vecattn_prefill_args *a) { a->chunk_size = 100; }
static void m_chunk_neg(vecattn_prefill_args *a) { a->chunk_size = -64; }
static void m_dtype(vecattn_prefill_args *a) { a->dtype = (vecattn_dtype)7; }
/* valid variants */
static void m_d64_fp16(vecattn_prefill_args *a)
{
    a->head_dim = 64, a->dtype = VECATTN_FP16, vecattn_set_contiguous_bhsd(a);
}
static void m_bshd(vecattn_prefill_args *a) { vecattn_set_contiguous_bshd(a); }
static void m_sq_lt_sk(vecattn_prefill_args *a) { a->seq_q = 20, vecattn_set_contiguous_bhsd(a); }
static void m_p1(vecattn_prefill_args *a) { a->threshold = 1.0f; }
static void m_heads_ok(vecattn_prefill_args *a) { a->thresholds = good_head_thresholds; }
static void m_noncausal_bk(vecattn_prefill_args *a) { a->causal = 0, a->pq = 16, a->bk = 128; }
static void m_dit(vecattn_prefill_args *a) { a->causal = 0, a->gk = 8192, a->threshold = 0.001f; }
static void m_chunk_ok(vecattn_prefill_args *a) { a->chunk_size = 3 * 64; }
static void m_dense(vecattn_prefill_args *a) { a->dense = 1; }

typedef struct check_case {
    const char *name;
    void (*mutate)(vecattn_prefill_args *);
    vecattn_status want;
    const char *needle; /* the message must contain it; NULL: no requirement */
} check_case;

static const check_case cases[] = {
    {"valid defaults", m_none, VECATTN_OK, NULL},
    {"head_dim 96", m_head_dim, VECATTN_E_HEAD_DIM, "head_dim"},
    {"seq_q 0", m_seq_q0, VECATTN_E_SHAPE, "seq_q"},
    {"seq_k 0", m_seq_k0, VECATTN_E_SHAPE, "seq_k"},
    {"seq_q > seq_k", m_seq_q_gt_k, VECATTN_E_SHAPE, "seq_q"},
    {"heads_q % heads_kv", m_heads, VECATTN_E_SHAPE, "heads"},
    {"batch 0", m_batch, VECATTN_E_SHAPE, "batch"},
    {"q NULL", m_q_null, VECATTN_E_LAYOUT, "q"},
    {"k NULL", m_k_null, VECATTN_E_LAYOUT, "k"},
    {"v NULL", m_v_null, VECATTN_E_LAYOUT, "v"},
    {"o NULL", m_o_null, VECATTN_E_LAYOUT, "o"},
    {"misaligned q", m_misaligned, VECATTN_E_LAYOUT, "q"},
    {"stride not a multiple of 8", m_stride8, VECATTN_E_LAYOUT, "stride"},
    {"overlapping rows", m_overlap, VECATTN_E_LAYOUT, "stride"},
    {"threshold 0", m_th0, VECATTN_E_THRESHOLD, "threshold"},
    {"threshold -0.5", m_th_neg, VECATTN_E_THRESHOLD, "threshold"},
    {"threshold 1.5", m_th_big, VECATTN_E_THRESHOLD, "threshold"},
    {"threshold NaN", m_th_nan, VECATTN_E_THRESHOLD, "threshold"},
    {"per-head threshold 1.5", m_th_head, VECATTN_E_THRESHOLD, "threshold"},
    {"pq 48", m_pq48, VECATTN_E_BLOCKING, "pq"},
    {"bk 12", m_bk12, VECATTN_E_BLOCKING, "bk"},
    {"gk 0", m_gk0, VECATTN_E_BLOCKING, "gk"},
    {"causal bk > pq", m_bk_gt_pq, VECATTN_E_BLOCKING, "bk"},
    {"chunk_size 100", m_chunk, VECATTN_E_BLOCKING, "chunk_size"},
    {"chunk_size -64", m_chunk_neg, VECATTN_E_BLOCKING, "chunk_size"},
    {"dtype 7", m_dtype, VECATTN_E_DTYPE, "dtype"},
    {"D 64 fp16", m_d64_fp16, VECATTN_OK, NULL},
    {"BSHD strides", m_bshd, VECATTN_OK, NULL},
    {"Sq < Sk", m_sq_lt_sk, VECATTN_OK, NULL},
    {"threshold 1", m_p1, VECATTN_OK, NULL},
    {"valid per-head thresholds", m_heads_ok, VECATTN_OK, NULL},
    {"non-causal bk > pq", m_noncausal_bk, VECATTN_OK, NULL},
    {"non-causal gk 8192 p 0.001", m_dit, VECATTN_OK, NULL},
    {"chunk_size 3 pq", m_chunk_ok, VECATTN_OK, NULL},
    {"dense", m_dense, VECATTN_OK, NULL},
};

static void run_check_case(const check_case *c)
{
    vecattn_prefill_args a;
    valid_args(&a);
    c->mutate(&a);
    char msg[512] = "";
    vecattn_status st = vecattn_check_prefill_args(&a, msg, sizeof msg);
    CHECK(st == c->want, "%s: status %d (%s), want %d; message \"%s\"", c->name, (int)st,
          vecattn_status_string(st), (int)c->want, msg);
    if (c->want != VECATTN_OK) {
        CHECK(msg[0] != '\0', "%s: empty message", c->name);
        CHECK(!c->needle || strstr(msg, c->needle), "%s: message \"%s\" does not name \"%s\"",
              c->name, msg, c->needle);
    }
    /* the code does not depend on whether a message is wanted */
    CHECK(vecattn_check_prefill_args(&a, NULL, 0) == st, "%s: NULL msg changes the code",
          c->name);
}

static void test_check_cases(void)
{
    for (size_t n = 0; n < sizeof cases / sizeof cases[0]; n++)
        run_check_case(&cases[n]);

    char msg[64] = "";
    CHECK(vecattn_check_prefill_args(NULL, msg, sizeof msg) == VECATTN_E_MISUSE,
          "NULL args: %s", msg);
    CHECK(msg[0] != '\0', "NULL args: empty message");

    /* a short buffer is NUL-terminated and nothing is written past it */
    vecattn_prefill_args a;
    valid_args(&a);
    a.head_dim = 96;
    char small[16];
    memset(small, 'X', sizeof small);
    vecattn_check_prefill_args(&a, small, 8);
    CHECK(memchr(small, '\0', 8) != NULL, "message not terminated within msg_size");
    CHECK(small[8] == 'X' && small[15] == 'X', "message written past msg_size");
}

static void test_args_helpers(void)
{
    vecattn_prefill_args a;
    memset(&a, 0x5A, sizeof a); /* init must not depend on the previous contents */
    vecattn_prefill_args_init(&a);
    CHECK(a.threshold == 0.9f && a.pq == 64 && a.bk == 16 && a.gk == 16 && a.causal == 1,
          "defaults: p %g pq %d bk %d gk %d causal %d", a.threshold, a.pq, a.bk, a.gk,
          a.causal);
    CHECK(a.dtype == VECATTN_BF16 && a.head_dim == 128 && a.dense == 0 && a.scale == 0.0f,
          "defaults: dtype %d D %d dense %d scale %g", (int)a.dtype, a.head_dim, a.dense,
          a.scale);
    CHECK(!a.q && !a.k && !a.v && !a.o && !a.lse && !a.thresholds && !a.sparsity_out &&
              a.chunk_size == 0,
          "defaults: pointers and chunk_size are zero");

    a.batch = 2, a.heads_q = 6, a.heads_kv = 3, a.seq_q = 5, a.seq_k = 7, a.head_dim = 64;
    vecattn_set_contiguous_bhsd(&a);
    CHECK(a.q_stride[0] == 6 * 5 * 64 && a.q_stride[1] == 5 * 64 && a.q_stride[2] == 64,
          "BHSD q strides");
    CHECK(a.k_stride[0] == 3 * 7 * 64 && a.k_stride[1] == 7 * 64 && a.k_stride[2] == 64,
          "BHSD k strides");
    CHECK(!memcmp(a.o_stride, a.q_stride, sizeof a.q_stride) &&
              !memcmp(a.v_stride, a.k_stride, sizeof a.k_stride),
          "BHSD o/v strides");
    vecattn_set_contiguous_bshd(&a);
    CHECK(a.q_stride[0] == 5 * 6 * 64 && a.q_stride[1] == 64 && a.q_stride[2] == 6 * 64,
          "BSHD q strides");
    CHECK(a.k_stride[0] == 7 * 3 * 64 && a.k_stride[1] == 64 && a.k_stride[2] == 3 * 64,
          "BSHD k strides");
}

/* Must run before anything else loads the driver: va_driver_load runs once per process. */
static void test_missing_driver(void)
{
    setenv("VECATTN_LIBCUDA", MISSING_DRIVER, 1);
    vecattn_ctx *ctx = NULL;
    vecattn_status st = vecattn_create(&ctx, 0, NULL, VECATTN_CREATE_DEFAULT);
    CHECK(st == VECATTN_E_NO_DRIVER, "vecattn_create without a driver: %d", (int)st);
    CHECK(ctx != NULL, "vecattn_create must set *ctx on failure");
    if (ctx) {
        const char *msg = vecattn_errmsg(ctx);
        CHECK(msg && strstr(msg, MISSING_DRIVER), "errmsg \"%s\" should name the library",
              msg ? msg : "(null)");
        CHECK(vecattn_errcode(ctx) == VECATTN_E_NO_DRIVER, "errcode %d",
              (int)vecattn_errcode(ctx));
    }
    vecattn_destroy(ctx);
    vecattn_destroy(NULL);
}

static void test_null_context(void)
{
    vecattn_prefill_args a;
    valid_args(&a);
    int32_t *counts = (int32_t *)0x50000;
    vecattn_selection sel = {counts, (int64_t *)0x60000, NULL, 0};
    int64_t total = 0;
    vecattn_device_info info;
    CHECK(vecattn_prefill(NULL, &a, NULL) == VECATTN_E_MISUSE, "prefill(NULL ctx)");
    CHECK(vecattn_select(NULL, &a, &sel, &total, NULL) == VECATTN_E_MISUSE, "select(NULL)");
    CHECK(vecattn_sparse_attention(NULL, &a, NULL, &sel, NULL) == VECATTN_E_MISUSE,
          "sparse_attention(NULL ctx)");
    CHECK(vecattn_get_device_info(NULL, &info) == VECATTN_E_MISUSE, "device_info(NULL)");
    CHECK(vecattn_errmsg(NULL) != NULL && vecattn_errmsg(NULL)[0] != '\0', "errmsg(NULL)");
}

static void test_status_strings(void)
{
    static const vecattn_status all[] = {
        VECATTN_OK,           VECATTN_E_MISUSE,    VECATTN_E_NOMEM,
        VECATTN_E_INTERNAL,   VECATTN_E_INVALID_ARG, VECATTN_E_HEAD_DIM,
        VECATTN_E_SHAPE,      VECATTN_E_LAYOUT,    VECATTN_E_THRESHOLD,
        VECATTN_E_BLOCKING,   VECATTN_E_DTYPE,     VECATTN_E_CAPACITY,
        VECATTN_E_NO_DRIVER,  VECATTN_E_NO_DEVICE, VECATTN_E_DRIVER,
        VECATTN_E_LAUNCH,     VECATTN_E_ARCH,      VECATTN_E_NVRTC,
        VECATTN_E_CODEGEN,    VECATTN_E_CACHE,     VECATTN_E_CACHE_CORRUPT,
        VECATTN_E_JSON,
    };
    size_t n = sizeof all / sizeof all[0];
    for (size_t x = 0; x < n; x++) {
        const char *s = vecattn_status_string(all[x]);
        CHECK(s && s[0], "status %d has no text", (int)all[x]);
        for (size_t y = 0; s && y < x; y++) {
            const char *t = vecattn_status_string(all[y]);
            CHECK(!t || strcmp(s, t) != 0, "statuses %d and %d share the text \"%s\"",
                  (int)all[x], (int)all[y], s);
        }
    }
    CHECK(vecattn_status_string((vecattn_status)999) != NULL, "unknown status gives NULL");
    CHECK(strcmp(vecattn_version(), VECATTN_VERSION_STRING) == 0, "version %s",
          vecattn_version());
}

/* vecattn_prefill_workspace_size by hand: S 256, Pq 64, 4 heads. Counts have room for 16 key
** pieces per query block; each block's mask covers its chunk's last candidate in whole
** 128-key groups (4 words); counts and masks are each rounded up to 256 bytes. */
static void test_workspace_size(void)
{
    vecattn_prefill_args a;
    valid_args(&a);
    size_t bytes = 1;
    CHECK(vecattn_prefill_workspace_size(&a, &bytes) == VECATTN_OK, "workspace size (causal)");
    /* one chunk: counts 16*16*4 -> 1024; masks: block 3's candidates end at key 192 -> 8 words,
    ** 16 blocks * 8 * 4 -> 512 */
    CHECK(bytes == 1024 + 512, "causal workspace %zu, want 1536", bytes);
    a.causal = 0; /* 256 keys: 8 words as well */
    CHECK(vecattn_prefill_workspace_size(&a, &bytes) == VECATTN_OK && bytes == 1024 + 512,
          "non-causal workspace %zu, want 1536", bytes);
    a.causal = 1, a.chunk_size = 64; /* largest chunk: one block, counts 4*16*4, masks 4*8*4 */
    CHECK(vecattn_prefill_workspace_size(&a, &bytes) == VECATTN_OK && bytes == 256 + 256,
          "one-block chunks: workspace %zu, want 512", bytes);
    a.seq_q = a.seq_k = 131072, a.heads_q = a.heads_kv = 32, a.chunk_size = 0;
    vecattn_set_contiguous_bhsd(&a);
    CHECK(vecattn_prefill_workspace_size(&a, &bytes) == VECATTN_OK && bytes <= ((size_t)1 << 30),
          "128K x 32 heads: workspace %zu, want at most 1 GiB", bytes);
    a.dense = 1;
    CHECK(vecattn_prefill_workspace_size(&a, &bytes) == VECATTN_OK && bytes == 0, "dense: %zu", bytes);
    a.dense = 0, a.head_dim = 96;
    CHECK(vecattn_prefill_workspace_size(&a, &bytes) == VECATTN_E_HEAD_DIM, "bad args are checked");
    CHECK(vecattn_prefill_workspace_size(&a, NULL) == VECATTN_E_MISUSE, "NULL bytes");
    CHECK(vecattn_prefill_workspace_size(NULL, &bytes) == VECATTN_E_MISUSE, "NULL args");
}

int main(void)
{
    test_missing_driver(); /* first: it sets VECATTN_LIBCUDA before the driver is loaded */
    test_check_cases();
    test_args_helpers();
    test_null_context();
    test_workspace_size();
    test_status_strings();
    return test_exit_code("test_validation");
}
