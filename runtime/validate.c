/*
** validate.c -- argument defaults and checks. Every rule here has a named status code and
** a message naming the argument; nothing is launched or written when a check fails.
*/
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "templates/vecattn_params.h"
#include "vecattn.h"

void vecattn_prefill_args_init(vecattn_prefill_args *a) {
    if (!a) return;
    memset(a, 0, sizeof *a);
    a->dtype = VECATTN_BF16;
    a->head_dim = 128;
    a->causal = 1;
    a->threshold = 0.9f;
    a->pq = 64;
    a->bk = 16;
    a->gk = 16;
}

static void set_strides(int64_t s[3], int64_t b, int64_t h, int64_t seq) {
    s[0] = b;
    s[1] = h;
    s[2] = seq;
}

void vecattn_set_contiguous_bhsd(vecattn_prefill_args *a) {
    int64_t d = a->head_dim, sq = a->seq_q, sk = a->seq_k;
    set_strides(a->q_stride, a->heads_q * sq * d, sq * d, d);
    set_strides(a->o_stride, a->heads_q * sq * d, sq * d, d);
    set_strides(a->k_stride, a->heads_kv * sk * d, sk * d, d);
    set_strides(a->v_stride, a->heads_kv * sk * d, sk * d, d);
}

void vecattn_set_contiguous_bshd(vecattn_prefill_args *a) {
    int64_t d = a->head_dim, sq = a->seq_q, sk = a->seq_k;
    set_strides(a->q_stride, sq * a->heads_q * d, d, a->heads_q * d);
    set_strides(a->o_stride, sq * a->heads_q * d, d, a->heads_q * d);
    set_strides(a->k_stride, sk * a->heads_kv * d, d, a->heads_kv * d);
    set_strides(a->v_stride, sk * a->heads_kv * d, d, a->heads_kv * d);
}

#define FAIL(code, ...) (snprintf(msg, msg_size, __VA_ARGS__), (code))

static int is_pow2_in(int x, int lo, int hi) { return x >= lo && x <= hi && (x & (x - 1)) == 0; }

static vecattn_status check_sizes(const vecattn_prefill_args *a, char *msg, size_t msg_size) {
    if (a->dtype != VECATTN_BF16 && a->dtype != VECATTN_FP16)
        return FAIL(VECATTN_E_DTYPE, "dtype = %d: use VECATTN_BF16 or VECATTN_FP16", (int)a->dtype);
    if (a->head_dim != 64 && a->head_dim != 128)
        return FAIL(VECATTN_E_HEAD_DIM, "head_dim = %d: supported head dims are 64 and 128", a->head_dim);
    if (a->batch <= 0) return FAIL(VECATTN_E_SHAPE, "batch = %d: must be >= 1", a->batch);
    if (a->heads_q <= 0 || a->heads_kv <= 0)
        return FAIL(VECATTN_E_SHAPE, "heads_q = %d, heads_kv = %d: both must be >= 1", a->heads_q, a->heads_kv);
    if (a->heads_q % a->heads_kv != 0)
        return FAIL(VECATTN_E_SHAPE, "heads_q = %d is not a multiple of heads_kv = %d", a->heads_q, a->heads_kv);
    if (a->seq_q <= 0 || a->seq_k <= 0)
        return FAIL(VECATTN_E_SHAPE, "seq_q = %d, seq_k = %d: both must be >= 1", a->seq_q, a->seq_k);
    if (a->seq_q > a->seq_k)
        return FAIL(VECATTN_E_SHAPE, "seq_q = %d > seq_k = %d: queries are aligned to the end of the keys",
                    a->seq_q, a->seq_k);
    return VECATTN_OK;
}

/* One tensor: pointer present, 16-byte aligned, strides multiples of 8 elements that keep
** rows (D contiguous elements) apart. */
static vecattn_status check_tensor(const char *name, const void *ptr, const int64_t s[3], int count_b,
                                   int count_h, int d, char *msg, size_t msg_size) {
    if (!ptr) return FAIL(VECATTN_E_LAYOUT, "%s is NULL", name);
    if ((uintptr_t)ptr % 16 != 0)
        return FAIL(VECATTN_E_LAYOUT, "%s = %p is not 16-byte aligned", name, ptr);
    static const char *const dims[3] = {"batch", "head", "sequence"};
    for (int i = 0; i < 3; ++i) {
        if (s[i] % 8 != 0 || s[i] < 0)
            return FAIL(VECATTN_E_LAYOUT, "%s %s stride = %lld: must be a non-negative multiple of 8 elements",
                        name, dims[i], (long long)s[i]);
    }
    if (s[2] > INT32_MAX)
        return FAIL(VECATTN_E_LAYOUT, "%s sequence stride = %lld: must be below 2^31 elements", name,
                    (long long)s[2]);
    if (s[2] < d)
        return FAIL(VECATTN_E_LAYOUT, "%s sequence stride = %lld is smaller than head_dim = %d (rows overlap)",
                    name, (long long)s[2], d);
    if (count_h > 1 && s[1] < d)
        return FAIL(VECATTN_E_LAYOUT, "%s head stride = %lld is smaller than head_dim = %d", name,
                    (long long)s[1], d);
    if (count_b > 1 && s[0] < d)
        return FAIL(VECATTN_E_LAYOUT, "%s batch stride = %lld is smaller than head_dim = %d", name,
                    (long long)s[0], d);
    return VECATTN_OK;
}

static vecattn_status check_layout(const vecattn_prefill_args *a, int need_v_o, char *msg, size_t msg_size) {
    vecattn_status st;
    int d = a->head_dim;
    if ((st = check_tensor("q", a->q, a->q_stride, a->batch, a->heads_q, d, msg, msg_size))) return st;
    if ((st = check_tensor("k", a->k, a->k_stride, a->batch, a->heads_kv, d, msg, msg_size))) return st;
    if (!need_v_o) return VECATTN_OK;
    if ((st = check_tensor("v", a->v, a->v_stride, a->batch, a->heads_kv, d, msg, msg_size))) return st;
    if ((st = check_tensor("o", a->o, a->o_stride, a->batch, a->heads_q, d, msg, msg_size))) return st;
    if (a->lse && (uintptr_t)a->lse % 4 != 0)
        return FAIL(VECATTN_E_LAYOUT, "lse = %p is not 4-byte aligned", (void *)a->lse);
    return VECATTN_OK;
}

static int threshold_ok(float p) { return isfinite(p) && p > 0.0f && p <= 1.0f; }

static vecattn_status check_selection(const vecattn_prefill_args *a, char *msg, size_t msg_size) {
    if (!is_pow2_in(a->pq, 16, 128)) return FAIL(VECATTN_E_BLOCKING, "pq = %d: use 16, 32, 64 or 128", a->pq);
    if (a->chunk_size < 0 || a->chunk_size % a->pq != 0)
        return FAIL(VECATTN_E_BLOCKING, "chunk_size = %d: must be 0 or a positive multiple of pq = %d",
                    a->chunk_size, a->pq);
    if (a->dense) return VECATTN_OK;  /* no selection: bk, gk and thresholds are unused */
    if (!is_pow2_in(a->bk, 8, 128)) return FAIL(VECATTN_E_BLOCKING, "bk = %d: use 8, 16, 32, 64 or 128", a->bk);
    if (a->gk < 1 || (int64_t)a->gk * a->bk > (1 << 30))
        return FAIL(VECATTN_E_BLOCKING, "gk = %d: must be >= 1 with gk * bk <= 2^30", a->gk);
    if (a->causal && (a->bk > a->pq || a->pq % a->bk != 0))
        return FAIL(VECATTN_E_BLOCKING, "bk = %d with pq = %d: causal selection needs bk <= pq and pq %% bk == 0",
                    a->bk, a->pq);
    if (a->thresholds) {
        if (a->heads_q > VECATTN_MAX_HEADS_WITH_THRESHOLDS)
            return FAIL(VECATTN_E_THRESHOLD, "thresholds: per-head thresholds support at most %d heads, heads_q = %d",
                        VECATTN_MAX_HEADS_WITH_THRESHOLDS, a->heads_q);
        for (int h = 0; h < a->heads_q; ++h)
            if (!threshold_ok(a->thresholds[h]))
                return FAIL(VECATTN_E_THRESHOLD, "thresholds[%d] = %g: must be in (0, 1]", h, a->thresholds[h]);
    } else if (!threshold_ok(a->threshold)) {
        return FAIL(VECATTN_E_THRESHOLD, "threshold = %g: must be in (0, 1]", a->threshold);
    }
    return VECATTN_OK;
}

/* Checks shared by every entry point; `need_v_o` is 0 for the selection alone. */
vecattn_status va_check_args(const vecattn_prefill_args *a, int need_v_o, char *msg, size_t msg_size) {
    char scratch[8];
    if (!msg) {
        msg = scratch;
        msg_size = sizeof scratch;
    }
    if (!a) return FAIL(VECATTN_E_MISUSE, "args is NULL");
    vecattn_status st = check_sizes(a, msg, msg_size);
    if (st == VECATTN_OK) st = check_selection(a, msg, msg_size);
    if (st == VECATTN_OK) st = check_layout(a, need_v_o, msg, msg_size);
    if (st == VECATTN_OK && (!isfinite(a->scale) || a->scale < 0.0f))
        st = FAIL(VECATTN_E_INVALID_ARG, "scale = %g: must be finite and >= 0 (0 = 1/sqrt(head_dim))", a->scale);
    if (st == VECATTN_OK) snprintf(msg, msg_size, "ok");
    return st;
}

vecattn_status vecattn_check_prefill_args(const vecattn_prefill_args *a, char *msg, size_t msg_size) {
    return va_check_args(a, 1, msg, msg_size);
}
