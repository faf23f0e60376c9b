/*
** npy.c -- the .npy loader of videodata.h: strict header validation, named errors.
**
** Format (numpy.lib.format): "\x93NUMPY", major, minor, a little-endian header length
** (2 bytes in 1.0, 4 bytes in 2.0 and 3.0), then an ASCII Python dict literal padded with
** spaces and ended by '\n', so that the data starts at a multiple of 64 bytes (16 in old
** writers; both are accepted), then the raw elements.
** Sections: messages, the header dict, reading, conversion, Q/K/V.
*/
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "autotune/videodata.h"

/* Header texts longer than this are refused: numpy itself writes a few hundred bytes. */
#define NPY_MAX_HEADER (1u << 20)

/* ---- messages ---------------------------------------------------------------------------- */

const char *va_npy_status_name(va_npy_status st) {
    static const char *const names[] = {"VA_NPY_OK",       "VA_NPY_E_OPEN",  "VA_NPY_E_MAGIC",   "VA_NPY_E_VERSION",
                                        "VA_NPY_E_HEADER", "VA_NPY_E_DTYPE", "VA_NPY_E_ORDER",   "VA_NPY_E_SHAPE",
                                        "VA_NPY_E_SIZE",   "VA_NPY_E_NOMEM", "VA_NPY_E_MISMATCH"};
    return (unsigned)st < sizeof names / sizeof names[0] ? names[st] : "VA_NPY_E_UNKNOWN";
}

static va_npy_status fail(va_npy_status st, char *msg, size_t n, const char *name, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

/* "<file>: <reason> [VA_NPY_E_...]" into msg; returns st. */
static va_npy_status fail(va_npy_status st, char *msg, size_t n, const char *name, const char *fmt, ...) {
    if (!msg || !n) return st;
    int len = snprintf(msg, n, "%s: ", name);
    if (len >= 0 && (size_t)len < n) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg + len, n - (size_t)len, fmt, ap);
        va_end(ap);
    }
    size_t used = strlen(msg);
    if (used < n) snprintf(msg + used, n - used, " [%s]", va_npy_status_name(st));
    return st;
}

/* Fail with the message context `x` in scope. */
#define BAD(st, ...) fail(st, x->msg, x->n, x->name, __VA_ARGS__)

/* ---- the header dict --------------------------------------------------------------------- */

typedef struct cursor {
    const char *p, *end;
} cursor;

typedef struct header {
    int have_descr, have_order, have_shape;
    va_npy_type type;
    int fortran;
    int ndim;
    int64_t shape[4];
} header;

typedef struct ctx {
    const char *name;
    char *msg;
    size_t n;
} ctx;

static void skip_ws(cursor *c) {
    while (c->p < c->end && (*c->p == ' ' || *c->p == '\t')) ++c->p;
}

static int eat(cursor *c, char ch) {
    skip_ws(c);
    if (c->p < c->end && *c->p == ch) return ++c->p, 1;
    return 0;
}

/* A quoted string without escapes, copied into out[cap]. */
static int string_lit(cursor *c, char *out, size_t cap) {
    skip_ws(c);
    if (c->p >= c->end || (*c->p != '\'' && *c->p != '"')) return 0;
    char q = *c->p++;
    size_t len = 0;
    while (c->p < c->end && *c->p != q) {
        if (*c->p == '\\' || len + 1 >= cap) return 0;
        out[len++] = *c->p++;
    }
    if (c->p >= c->end) return 0;
    ++c->p;
    out[len] = 0;
    return 1;
}

static va_npy_status parse_descr(cursor *c, header *h, const ctx *x) {
    char d[32];
    if (!string_lit(c, d, sizeof d))
        return BAD(VA_NPY_E_DTYPE, "descr: not a plain type string (structured dtypes are not supported)");
    if (!strcmp(d, "<f2"))
        h->type = VA_NPY_F16;
    else if (!strcmp(d, "<u2") || !strcmp(d, "<i2"))
        h->type = VA_NPY_BF16;
    else if (!strcmp(d, "<f4"))
        h->type = VA_NPY_F32;
    else if (d[0] == '>')
        return BAD(VA_NPY_E_DTYPE, "descr '%s': big-endian data is not supported", d);
    else
        return BAD(VA_NPY_E_DTYPE, "descr '%s': expected '<f2', '<u2'/'<i2' (bfloat16 bits) or '<f4'", d);
    return VA_NPY_OK;
}

static va_npy_status parse_order(cursor *c, header *h, const ctx *x) {
    skip_ws(c);
    size_t left = (size_t)(c->end - c->p);
    if (left >= 5 && !strncmp(c->p, "False", 5))
        c->p += 5, h->fortran = 0;
    else if (left >= 4 && !strncmp(c->p, "True", 4))
        c->p += 4, h->fortran = 1;
    else
        return BAD(VA_NPY_E_HEADER, "fortran_order: expected True or False");
    if (h->fortran) return BAD(VA_NPY_E_ORDER, "fortran_order: True; only C order is supported");
    return VA_NPY_OK;
}

static va_npy_status parse_shape(cursor *c, header *h, const ctx *x) {
    if (!eat(c, '(')) return BAD(VA_NPY_E_HEADER, "shape: expected a tuple");
    h->ndim = 0;
    while (!eat(c, ')')) {
        skip_ws(c);
        if (c->p >= c->end || *c->p < '0' || *c->p > '9')
            return BAD(VA_NPY_E_HEADER, "shape: expected a non-negative integer");
        int64_t v = 0;
        while (c->p < c->end && *c->p >= '0' && *c->p <= '9') {
            v = v * 10 + (*c->p++ - '0');
            if (v > 0x7fffffff) return BAD(VA_NPY_E_SHAPE, "shape: dimension %d is larger than 2^31 - 1", h->ndim);
        }
        if (h->ndim == 4) return BAD(VA_NPY_E_SHAPE, "shape: more than 4 dimensions");
        h->shape[h->ndim++] = v;
        if (!eat(c, ',')) {
            if (!eat(c, ')')) return BAD(VA_NPY_E_HEADER, "shape: expected ',' or ')'");
            break;
        }
    }
    if (h->ndim < 2)
        return BAD(VA_NPY_E_SHAPE, "shape: %d dimension%s; expected [S, D], [H, S, D] or [B, H, S, D]", h->ndim,
                   h->ndim == 1 ? "" : "s");
    for (int i = 0; i < h->ndim; ++i)
        if (h->shape[i] == 0) return BAD(VA_NPY_E_SHAPE, "shape: dimension %d is 0", i);
    return VA_NPY_OK;
}

/* One "'key': value" pair. */
static va_npy_status parse_item(cursor *c, header *h, const ctx *x) {
    char key[32];
    if (!string_lit(c, key, sizeof key)) return BAD(VA_NPY_E_HEADER, "expected a quoted key");
    if (!eat(c, ':')) return BAD(VA_NPY_E_HEADER, "expected ':' after '%s'", key);
    int *seen = !strcmp(key, "descr")           ? &h->have_descr
                : !strcmp(key, "fortran_order") ? &h->have_order
                : !strcmp(key, "shape")         ? &h->have_shape
                                                : NULL;
    if (!seen) return BAD(VA_NPY_E_HEADER, "unknown key '%s'", key);
    if (*seen) return BAD(VA_NPY_E_HEADER, "key '%s' appears twice", key);
    *seen = 1;
    if (seen == &h->have_descr) return parse_descr(c, h, x);
    if (seen == &h->have_order) return parse_order(c, h, x);
    return parse_shape(c, h, x);
}

static va_npy_status parse_dict(const char *text, size_t len, header *h, const ctx *x) {
    memset(h, 0, sizeof *h);
    if (len == 0 || text[len - 1] != '\n') return BAD(VA_NPY_E_HEADER, "header does not end with a newline");
    cursor c = {text, text + len - 1};
    if (!eat(&c, '{')) return BAD(VA_NPY_E_HEADER, "header is not a dict");
    while (!eat(&c, '}')) {
        va_npy_status st = parse_item(&c, h, x);
        if (st != VA_NPY_OK) return st;
        if (!eat(&c, ',')) {
            if (!eat(&c, '}')) return BAD(VA_NPY_E_HEADER, "expected ',' or '}' in the header dict");
            break;
        }
    }
    skip_ws(&c);
    if (c.p != c.end) return BAD(VA_NPY_E_HEADER, "unexpected text after the header dict");
    const char *missing = !h->have_descr   ? "descr"
                          : !h->have_order ? "fortran_order"
                          : !h->have_shape ? "shape"
                                           : NULL;
    if (missing) return BAD(VA_NPY_E_HEADER, "key '%s' is missing", missing);
    return VA_NPY_OK;
}

/* ---- reading ------------------------------------------------------------------------------- */

static size_t type_size(va_npy_type t) { return t == VA_NPY_F32 ? 4 : 2; }

/* Magic, version, header length: *data_at is where the dict ends. Needs the first 12 bytes
** (fewer when the file is shorter). */
static va_npy_status parse_prefix(const unsigned char *b, size_t have, size_t file_size, size_t *dict_at,
                                  size_t *data_at, const ctx *x) {
    if (have < 10 || memcmp(b, "\x93NUMPY", 6) != 0)
        return BAD(VA_NPY_E_MAGIC, "not an .npy file (no \\x93NUMPY magic)");
    unsigned major = b[6], minor = b[7];
    size_t hlen;
    if (major == 1 && minor == 0) {
        hlen = (size_t)b[8] | (size_t)b[9] << 8;
        *dict_at = 10;
    } else if ((major == 2 || major == 3) && minor == 0) {
        if (have < 12) return BAD(VA_NPY_E_HEADER, "file ends inside the header length");
        hlen = (size_t)b[8] | (size_t)b[9] << 8 | (size_t)b[10] << 16 | (size_t)b[11] << 24;
        *dict_at = 12;
    } else {
        return BAD(VA_NPY_E_VERSION, "format version %u.%u is not 1.0, 2.0 or 3.0", major, minor);
    }
    if (hlen > NPY_MAX_HEADER || *dict_at + hlen > file_size)
        return BAD(VA_NPY_E_HEADER, "header length %zu runs past the end of the file (%zu bytes)", hlen, file_size);
    *data_at = *dict_at + hlen;
    if (*data_at % 16 != 0)
        return BAD(VA_NPY_E_HEADER, "header is not padded: data starts at byte %zu, not a multiple of 16", *data_at);
    return VA_NPY_OK;
}

/* Fill `out` from a validated header (data not yet read). */
static va_npy_status shape_out(const header *h, size_t data_bytes, va_npy_array *out, const ctx *x) {
    size_t count = 1;
    for (int i = 0; i < h->ndim; ++i) {
        if (count > ((size_t)1 << 40) / (size_t)h->shape[i])
            return BAD(VA_NPY_E_SHAPE, "shape: more than 2^40 elements");
        count *= (size_t)h->shape[i];
    }
    size_t need = count * type_size(h->type);
    if (data_bytes < need)
        return BAD(VA_NPY_E_SIZE, "truncated: %zu data bytes, the shape needs %zu", data_bytes, need);
    if (data_bytes > need)
        return BAD(VA_NPY_E_SIZE, "%zu bytes after the data the shape describes", data_bytes - need);
    memset(out, 0, sizeof *out);
    out->type = h->type;
    out->ndim = h->ndim;
    memcpy(out->shape, h->shape, sizeof h->shape);
    const int64_t *s = h->shape + h->ndim - 2; /* S, D */
    out->seq = (int)s[0], out->head_dim = (int)s[1];
    out->heads = h->ndim >= 3 ? (int)h->shape[h->ndim - 3] : 1;
    out->batch = h->ndim == 4 ? (int)h->shape[0] : 1;
    out->count = count;
    return VA_NPY_OK;
}

/* Everything but the data: prefix, dict, sizes. */
static va_npy_status parse_head(const unsigned char *b, size_t have, size_t file_size, size_t *data_at,
                                va_npy_array *out, const ctx *x) {
    size_t dict_at = 0;
    va_npy_status st = parse_prefix(b, have, file_size, &dict_at, data_at, x);
    if (st != VA_NPY_OK) return st;
    if (have < *data_at) return BAD(VA_NPY_E_HEADER, "header could not be read");
    header h;
    if ((st = parse_dict((const char *)b + dict_at, *data_at - dict_at, &h, x))) return st;
    return shape_out(&h, file_size - *data_at, out, x);
}

va_npy_status va_npy_parse(const void *bytes, size_t size, const char *name, va_npy_array *out, char *msg,
                           size_t msg_size) {
    ctx x = {name ? name : "(memory)", msg, msg_size};
    size_t data_at;
    memset(out, 0, sizeof *out);
    va_npy_status st = parse_head(bytes, size, size, &data_at, out, &x);
    if (st != VA_NPY_OK) return st;
    size_t n = out->count * type_size(out->type);
    if (!(out->data = malloc(n ? n : 1))) {
        memset(out, 0, sizeof *out);
        return fail(VA_NPY_E_NOMEM, msg, msg_size, x.name, "out of memory");
    }
    memcpy(out->data, (const unsigned char *)bytes + data_at, n);
    return VA_NPY_OK;
}

va_npy_status va_npy_read(const char *path, va_npy_array *out, char *msg, size_t msg_size) {
    ctx x = {path, msg, msg_size};
    memset(out, 0, sizeof *out);
    FILE *f = fopen(path, "rb");
    if (!f) return fail(VA_NPY_E_OPEN, msg, msg_size, path, "cannot open the file");
    long size = fseek(f, 0, SEEK_END) == 0 ? ftell(f) : -1;
    unsigned char *head = NULL;
    size_t data_at = 0, have = 0;
    va_npy_status st = VA_NPY_OK;
    if (size < 0 || fseek(f, 0, SEEK_SET)) st = fail(VA_NPY_E_OPEN, msg, msg_size, path, "cannot read the file");
    if (st == VA_NPY_OK) {
        /* the prefix first, then as much of the header as it announces */
        size_t want = (size_t)size < 12 ? (size_t)size : 12;
        unsigned char prefix[12];
        have = fread(prefix, 1, want, f);
        size_t dict_at = 0;
        st = parse_prefix(prefix, have, (size_t)size, &dict_at, &data_at, &x);
        if (st == VA_NPY_OK && !(head = malloc(data_at)))
            st = fail(VA_NPY_E_NOMEM, msg, msg_size, path, "out of memory");
        if (st == VA_NPY_OK) {
            memcpy(head, prefix, have);
            have += fread(head + have, 1, data_at - have, f);
            st = parse_head(head, have, (size_t)size, &data_at, out, &x);
        }
    }
    size_t n = out->count * type_size(out->type);
    if (st == VA_NPY_OK && !(out->data = malloc(n ? n : 1)))
        st = fail(VA_NPY_E_NOMEM, msg, msg_size, path, "out of memory");
    if (st == VA_NPY_OK && fread(out->data, 1, n, f) != n)
        st = fail(VA_NPY_E_SIZE, msg, msg_size, path, "short read of the data");
    free(head);
    fclose(f);
    if (st != VA_NPY_OK) va_npy_free(out);
    return st;
}

void va_npy_free(va_npy_array *a) {
    if (!a) return;
    free(a->data);
    memset(a, 0, sizeof *a);
}

/* ---- conversion ---------------------------------------------------------------------------- */

static float element(const va_npy_array *a, size_t i) {
    const unsigned char *p = (const unsigned char *)a->data + i * type_size(a->type);
    if (a->type == VA_NPY_F32) {
        uint32_t u = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
        float f;
        memcpy(&f, &u, sizeof f);
        return f;
    }
    uint16_t h = (uint16_t)(p[0] | p[1] << 8);
    return va_video_to_float(h, a->type == VA_NPY_F16 ? VECATTN_FP16 : VECATTN_BF16);
}

/* The element's bits when they already are of dtype dt (no rounding), else -1. */
static int same_bits(const va_npy_array *a, size_t i, vecattn_dtype dt) {
    if (a->type == VA_NPY_F32 || (a->type == VA_NPY_F16) != (dt == VECATTN_FP16)) return -1;
    const unsigned char *p = (const unsigned char *)a->data + i * 2;
    return p[0] | p[1] << 8;
}

void va_npy_to_tensor(const va_npy_array *a, vecattn_dtype dt, uint16_t *out, const int64_t stride[3]) {
    size_t i = 0;
    for (int b = 0; b < a->batch; ++b)
        for (int h = 0; h < a->heads; ++h)
            for (int s = 0; s < a->seq; ++s) {
                uint16_t *row = out + b * stride[0] + h * stride[1] + (int64_t)s * stride[2];
                for (int d = 0; d < a->head_dim; ++d, ++i) {
                    int bits = same_bits(a, i, dt);
                    row[d] = bits >= 0 ? (uint16_t)bits : va_video_from_float(element(a, i), dt);
                }
            }
}

/* ---- Q/K/V ---------------------------------------------------------------------------------- */

/* K and V agree; Q has K's batch and head dim, a multiple of its heads, no more rows. */
static va_npy_status check_qkv(const va_npy_array *q, const va_npy_array *k, const va_npy_array *v, char *msg,
                               size_t n, const char *qn, const char *vn) {
    if (k->batch != v->batch || k->heads != v->heads || k->seq != v->seq || k->head_dim != v->head_dim)
        return fail(VA_NPY_E_MISMATCH, msg, n, vn, "shape [%d, %d, %d, %d] differs from K's [%d, %d, %d, %d]",
                    v->batch, v->heads, v->seq, v->head_dim, k->batch, k->heads, k->seq, k->head_dim);
    if (q->batch != k->batch)
        return fail(VA_NPY_E_MISMATCH, msg, n, qn, "batch %d differs from K's %d", q->batch, k->batch);
    if (q->head_dim != k->head_dim)
        return fail(VA_NPY_E_MISMATCH, msg, n, qn, "head dim %d differs from K's %d", q->head_dim, k->head_dim);
    if (q->heads % k->heads)
        return fail(VA_NPY_E_MISMATCH, msg, n, qn, "heads %d is not a multiple of K's %d", q->heads, k->heads);
    if (q->seq > k->seq)
        return fail(VA_NPY_E_MISMATCH, msg, n, qn, "sequence %d is longer than K's %d", q->seq, k->seq);
    return VA_NPY_OK;
}

static uint16_t *tensor_of(const va_npy_array *a, vecattn_dtype dt, int64_t stride[3]) {
    stride[2] = a->head_dim;
    stride[1] = (int64_t)a->seq * a->head_dim;
    stride[0] = stride[1] * a->heads;
    uint16_t *t = malloc(a->count * sizeof *t);
    if (t) va_npy_to_tensor(a, dt, t, stride);
    return t;
}

va_npy_status va_npy_load_qkv(const char *q_path, const char *k_path, const char *v_path, vecattn_dtype dt,
                              vecattn_prefill_args *a, uint16_t **q, uint16_t **k, uint16_t **v, char *msg,
                              size_t msg_size) {
    va_npy_array arr[3];
    const char *paths[3] = {q_path, k_path, v_path};
    memset(arr, 0, sizeof arr);
    *q = *k = *v = NULL;
    va_npy_status st = VA_NPY_OK;
    for (int i = 0; i < 3 && st == VA_NPY_OK; ++i) st = va_npy_read(paths[i], &arr[i], msg, msg_size);
    if (st == VA_NPY_OK) st = check_qkv(&arr[0], &arr[1], &arr[2], msg, msg_size, q_path, v_path);
    if (st == VA_NPY_OK) {
        *q = tensor_of(&arr[0], dt, a->q_stride);
        *k = tensor_of(&arr[1], dt, a->k_stride);
        *v = tensor_of(&arr[2], dt, a->v_stride);
        memcpy(a->o_stride, a->q_stride, sizeof a->o_stride);
        if (!*q || !*k || !*v) {
            free(*q), free(*k), free(*v);
            *q = *k = *v = NULL;
            st = fail(VA_NPY_E_NOMEM, msg, msg_size, q_path, "out of memory");
        }
    }
    if (st == VA_NPY_OK) {
        a->batch = arr[0].batch, a->heads_q = arr[0].heads, a->heads_kv = arr[1].heads;
        a->seq_q = arr[0].seq, a->seq_k = arr[1].seq, a->head_dim = arr[0].head_dim, a->dtype = dt;
    }
    for (int i = 0; i < 3; ++i) va_npy_free(&arr[i]);
    return st;
}
