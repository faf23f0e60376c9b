/*
** json.c -- import of tuned-configuration files (cache/pretuned/FORMAT.md) with cJSON.
**
** A file is checked completely before anything is written: the format name and version,
** then every field of the metadata and of each entry for presence, type and range (unknown
** fields and duplicate fields are errors too: a typo must not pass silently), then each
** entry as a whole (va_cache_check_entry: the tiles parse into a valid kernel of the stage).
** Only then are the entries merged, in one transaction. The first problem found is the
** message: "<file>: entry <i>: field \"<name>\": <reason>".
*/
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "cache/cache_internal.h"

enum { MAX_FILE_BYTES = 64 << 20, MAX_ENTRIES = 100000, FORMAT_VERSION = 1 };

/* What an entry inherits from "metadata" unless it says otherwise. */
typedef struct entry_defaults {
    va_device_id device;
    char vecattn_version[32];
    int driver_version;
    char nvrtc[64];
} entry_defaults;

/* Where in the file a check is: for the message. */
typedef struct json_ctx {
    const char *label;
    const char *where;          /* "metadata", "entry 3", ... or "" */
    char *msg;
    size_t msg_size;
} json_ctx;

static vecattn_status fail(json_ctx *j, const char *field, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* "<label>: <where>: field \"<field>\": <reason>"; returns VECATTN_E_JSON. */
static vecattn_status fail(json_ctx *j, const char *field, const char *fmt, ...) {
    char reason[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(reason, sizeof reason, fmt, ap);
    va_end(ap);
    snprintf(j->msg, j->msg_size, "%s: %s%s%s%s%s%s", j->label, j->where, j->where[0] ? ": " : "",
             field ? "field \"" : "", field ? field : "", field ? "\": " : "", reason);
    return VECATTN_E_JSON;
}

/* ---- fields --------------------------------------------------------------------------- */

/* Every member of `obj` must be one of `known` (NULL-terminated) and appear once. */
static vecattn_status check_members(json_ctx *j, const cJSON *obj, const char *const *known) {
    for (const cJSON *m = obj->child; m; m = m->next) {
        int ok = 0;
        for (const char *const *k = known; *k && !ok; ++k) ok = !strcmp(m->string, *k);
        if (!ok) return fail(j, m->string, "unknown field");
        for (const cJSON *o = m->next; o; o = o->next)
            if (!strcmp(o->string, m->string)) return fail(j, m->string, "appears twice");
    }
    return VECATTN_OK;
}

static const cJSON *require(json_ctx *j, const cJSON *obj, const char *name, vecattn_status *st) {
    const cJSON *m = cJSON_GetObjectItemCaseSensitive(obj, name);
    if (!m) *st = fail(j, name, "missing");
    return m;
}

static vecattn_status get_int(json_ctx *j, const cJSON *obj, const char *name, long long lo, long long hi,
                              long long *out) {
    vecattn_status st = VECATTN_OK;
    const cJSON *m = require(j, obj, name, &st);
    if (!m) return st;
    if (!cJSON_IsNumber(m)) return fail(j, name, "expected an integer");
    double v = m->valuedouble;
    if (!isfinite(v) || v != floor(v)) return fail(j, name, "%g is not an integer", v);
    if (v < (double)lo || v > (double)hi) return fail(j, name, "%.17g is not in %lld..%lld", v, lo, hi);
    *out = (long long)v;
    return VECATTN_OK;
}

static vecattn_status get_double(json_ctx *j, const cJSON *obj, const char *name, double lo, double hi,
                                 double *out) {
    vecattn_status st = VECATTN_OK;
    const cJSON *m = require(j, obj, name, &st);
    if (!m) return st;
    if (!cJSON_IsNumber(m)) return fail(j, name, "expected a number");
    double v = m->valuedouble;
    if (!isfinite(v) || v < lo || v > hi) return fail(j, name, "%g is not a finite number in [%g, %g]", v, lo, hi);
    *out = v;
    return VECATTN_OK;
}

/* A string of 1 .. cap-1 bytes without control characters. */
static vecattn_status get_string(json_ctx *j, const cJSON *obj, const char *name, char *out, size_t cap) {
    vecattn_status st = VECATTN_OK;
    const cJSON *m = require(j, obj, name, &st);
    if (!m) return st;
    if (!cJSON_IsString(m) || !m->valuestring) return fail(j, name, "expected a string");
    size_t n = strlen(m->valuestring);
    if (n == 0 || n >= cap) return fail(j, name, "length %zu is not in 1..%zu", n, cap - 1);
    for (size_t i = 0; i < n; ++i)
        if ((unsigned char)m->valuestring[i] < 0x20) return fail(j, name, "contains a control character");
    memcpy(out, m->valuestring, n + 1);
    return VECATTN_OK;
}

static vecattn_status get_pow2(json_ctx *j, const cJSON *obj, const char *name, int lo, int hi, int *out) {
    long long v = 0;
    vecattn_status st = get_int(j, obj, name, lo, hi, &v);
    if (st == VECATTN_OK && (v & (v - 1))) return fail(j, name, "%lld is not a power of two", v);
    *out = (int)v;
    return st;
}

static vecattn_status get_small_int(json_ctx *j, const cJSON *obj, const char *name, int lo, int hi, int *out) {
    long long v = 0;
    vecattn_status st = get_int(j, obj, name, lo, hi, &v);
    *out = (int)v;
    return st;
}

/* ---- metadata ------------------------------------------------------------------------- */

static vecattn_status read_device(json_ctx *j, const cJSON *obj, va_device_id *d) {
    static const char *const known[] = {"name", "cc", "sm_count", NULL};
    if (!cJSON_IsObject(obj)) return fail(j, "device", "expected an object {\"name\", \"cc\", \"sm_count\"}");
    vecattn_status st = check_members(j, obj, known);
    memset(d, 0, sizeof *d);
    if (st == VECATTN_OK) st = get_string(j, obj, "name", d->name, sizeof d->name);
    if (st == VECATTN_OK) st = get_small_int(j, obj, "cc", 50, 1000, &d->cc);
    if (st == VECATTN_OK && !va_arch_target(d->cc))
        st = fail(j, "cc", "%d is not a compute capability this vecattn supports", d->cc);
    if (st == VECATTN_OK) st = get_small_int(j, obj, "sm_count", 1, 1024, &d->sm_count);
    return st;
}

/* The fields an entry may override: all optional there, all required in "metadata". */
static vecattn_status read_inherited(json_ctx *j, const cJSON *obj, int required, entry_defaults *d) {
    vecattn_status st = VECATTN_OK;
    const cJSON *dev = cJSON_GetObjectItemCaseSensitive(obj, "device");
    if (dev || required) {
        json_ctx sub = *j;
        char where[64];
        snprintf(where, sizeof where, "%s%sdevice", j->where, j->where[0] ? ": " : "");
        sub.where = where;
        st = dev ? read_device(&sub, dev, &d->device) : fail(j, "device", "missing");
    }
    if (st == VECATTN_OK && (required || cJSON_GetObjectItemCaseSensitive(obj, "vecattn_version")))
        st = get_string(j, obj, "vecattn_version", d->vecattn_version, sizeof d->vecattn_version);
    if (st == VECATTN_OK && (required || cJSON_GetObjectItemCaseSensitive(obj, "driver_version")))
        st = get_small_int(j, obj, "driver_version", 0, 10000000, &d->driver_version);
    if (st == VECATTN_OK && (required || cJSON_GetObjectItemCaseSensitive(obj, "nvrtc")))
        st = get_string(j, obj, "nvrtc", d->nvrtc, sizeof d->nvrtc);
    return st;
}

static vecattn_status read_header(json_ctx *j, const cJSON *root, entry_defaults *defaults) {
    static const char *const known[] = {"format", "format_version", "metadata", "entries", NULL};
    static const char *const meta_known[] = {"vecattn_version", "device", "driver_version", "nvrtc", NULL};
    if (!cJSON_IsObject(root)) return fail(j, NULL, "the top level is not an object");
    vecattn_status st = check_members(j, root, known);
    char format[32];
    if (st == VECATTN_OK) st = get_string(j, root, "format", format, sizeof format);
    if (st == VECATTN_OK && strcmp(format, "vecattn-tuned") != 0)
        st = fail(j, "format", "\"%s\" is not \"vecattn-tuned\"", format);
    long long version = 0;
    if (st == VECATTN_OK) st = get_int(j, root, "format_version", 0, 1000000, &version);
    if (st == VECATTN_OK && version != FORMAT_VERSION)
        st = fail(j, "format_version", "%lld is not supported (this vecattn reads version %d)", version,
                  FORMAT_VERSION);
    const cJSON *meta = st == VECATTN_OK ? require(j, root, "metadata", &st) : NULL;
    if (meta && !cJSON_IsObject(meta)) st = fail(j, "metadata", "expected an object");
    if (st != VECATTN_OK) return st;
    json_ctx sub = *j;
    sub.where = "metadata";
    if ((st = check_members(&sub, meta, meta_known)) != VECATTN_OK) return st;
    return read_inherited(&sub, meta, 1, defaults);
}

/* ---- entries -------------------------------------------------------------------------- */

/* Optional "kernel_version": 16 lowercase hex digits (va_kernel_version); absent: unknown. */
static vecattn_status get_kernel_version(json_ctx *j, const cJSON *e, char out[VA_KERNEL_VERSION_LEN + 1]) {
    out[0] = '\0';
    if (!cJSON_GetObjectItemCaseSensitive(e, "kernel_version")) return VECATTN_OK;
    vecattn_status st = get_string(j, e, "kernel_version", out, VA_KERNEL_VERSION_LEN + 1);
    int ok = st == VECATTN_OK && strlen(out) == VA_KERNEL_VERSION_LEN;
    for (int i = 0; ok && i < VA_KERNEL_VERSION_LEN; ++i) ok = strchr("0123456789abcdef", out[i]) != NULL;
    if (st == VECATTN_OK && !ok) st = fail(j, "kernel_version", "expected 16 lowercase hex digits");
    if (st != VECATTN_OK) out[0] = '\0';
    return st;
}

static vecattn_status read_entry(json_ctx *j, const cJSON *e, const entry_defaults *defaults,
                                 va_tune_key *k, va_tune_value *v) {
    static const char *const known[] = {
        "dtype", "head_dim", "pq", "bk", "gk", "causal", "stage", "seq_bucket", "sparsity_bucket", "tiles",
        "time_ms", "tflops", "tuned_at", "kernel_version", "device", "vecattn_version", "driver_version", "nvrtc",
        NULL};
    if (!cJSON_IsObject(e)) return fail(j, NULL, "expected an object");
    vecattn_status st = check_members(j, e, known);
    entry_defaults d = *defaults;
    if (st == VECATTN_OK) st = read_inherited(j, e, 0, &d);
    memset(k, 0, sizeof *k);
    memset(v, 0, sizeof *v);
    char name[16];
    if (st == VECATTN_OK) st = get_string(j, e, "dtype", name, sizeof name);
    if (st == VECATTN_OK && !va_dtype_parse(name, &k->dtype)) st = fail(j, "dtype", "\"%s\" is not bf16 or fp16", name);
    if (st == VECATTN_OK) st = get_small_int(j, e, "head_dim", 0, 1 << 20, &k->head_dim);
    if (st == VECATTN_OK && k->head_dim != 64 && k->head_dim != 128)
        st = fail(j, "head_dim", "%d is not 64 or 128", k->head_dim);
    if (st == VECATTN_OK) st = get_pow2(j, e, "pq", 16, 128, &k->pq);
    if (st == VECATTN_OK) st = get_pow2(j, e, "bk", 8, 128, &k->bk);
    if (st == VECATTN_OK) st = get_small_int(j, e, "gk", 1, 65536, &k->gk);
    const cJSON *causal = st == VECATTN_OK ? require(j, e, "causal", &st) : NULL;
    if (causal && !cJSON_IsBool(causal)) st = fail(j, "causal", "expected true or false");
    k->causal = cJSON_IsTrue(causal);
    if (st == VECATTN_OK) st = get_string(j, e, "stage", name, sizeof name);
    if (st == VECATTN_OK && !va_stage_parse(name, &k->stage))
        st = fail(j, "stage", "\"%s\" is not selection or attention", name);
    if (st == VECATTN_OK) st = get_small_int(j, e, "seq_bucket", 12, 17, &k->seq_bucket);
    if (st == VECATTN_OK) st = get_small_int(j, e, "sparsity_bucket", -1, 3, &k->sparsity_bucket);
    if (st == VECATTN_OK) st = get_string(j, e, "tiles", v->tiles, sizeof v->tiles);
    if (st == VECATTN_OK) st = get_double(j, e, "time_ms", 1e-9, 1e7, &v->time_ms);
    if (st == VECATTN_OK) st = get_double(j, e, "tflops", 0, 1e6, &v->tflops);
    long long tuned_at = 0;
    if (st == VECATTN_OK) st = get_int(j, e, "tuned_at", 0, 1ll << 40, &tuned_at);
    if (st == VECATTN_OK) st = get_kernel_version(j, e, v->kernel_version);
    if (st != VECATTN_OK) return st;
    k->device = d.device;
    v->tuned_at = tuned_at;
    v->driver_version = d.driver_version;
    memcpy(v->vecattn_version, d.vecattn_version, sizeof v->vecattn_version);
    memcpy(v->nvrtc_id, d.nvrtc, sizeof v->nvrtc_id);
    char why[512];
    if (va_cache_check_entry(k, v, why, sizeof why) != VECATTN_OK) return fail(j, NULL, "%s", why);
    return VECATTN_OK;
}

/* ---- import --------------------------------------------------------------------------- */

static vecattn_status parse_error(json_ctx *j, const char *text, const char *end) {
    int line = 1, col = 1;
    for (const char *p = text; end && p < end && *p; ++p) {
        if (*p == '\n') ++line, col = 1;
        else ++col;
    }
    return fail(j, NULL, "not valid JSON (line %d, column %d)", line, col);
}

/* Merge the checked entries, all or nothing. */
static vecattn_status merge_all(va_cache *c, const char *table, json_ctx *j, const va_tune_key *keys,
                                const va_tune_value *values, int n, int *merged) {
    /* The shipped table is TEMP: a plain BEGIN takes no lock on the file (which may be
    ** read-only); the user's table takes the write lock up front. */
    int rc = strcmp(table, VA_TUNED_MAIN) ? va_sql_exec(c, "BEGIN") : va_sql_begin(c), count = 0;
    for (int i = 0; i < n && rc == SQLITE_OK; ++i) {
        int changed = 0;
        rc = va_tuned_merge(c, table, &keys[i], &values[i], &changed);
        count += changed;
    }
    if (va_sql_end(c, rc) != SQLITE_OK) {
        snprintf(j->msg, j->msg_size, "%s: cannot write to cache %s: %s", j->label, va_cache_path(c), c->errmsg);
        return VECATTN_E_CACHE;
    }
    if (merged) *merged = count;
    return VECATTN_OK;
}

static vecattn_status import_tree(va_cache *c, const char *table, json_ctx *j, const cJSON *root, int *merged) {
    entry_defaults defaults;
    memset(&defaults, 0, sizeof defaults);
    vecattn_status st = read_header(j, root, &defaults);
    const cJSON *entries = st == VECATTN_OK ? require(j, root, "entries", &st) : NULL;
    if (st != VECATTN_OK) return st;
    if (!cJSON_IsArray(entries)) return fail(j, "entries", "expected an array");
    int n = cJSON_GetArraySize(entries);
    if (n > MAX_ENTRIES) return fail(j, "entries", "%d entries, more than %d", n, MAX_ENTRIES);
    va_tune_key *keys = calloc((size_t)n + 1, sizeof *keys);
    va_tune_value *values = calloc((size_t)n + 1, sizeof *values);
    if (!keys || !values) st = fail(j, NULL, "out of memory");
    int i = 0;
    char where[32];
    for (const cJSON *e = entries->child; e && st == VECATTN_OK; e = e->next, ++i) {
        snprintf(where, sizeof where, "entry %d", i);
        j->where = where;
        st = read_entry(j, e, &defaults, &keys[i], &values[i]);
    }
    j->where = "";
    if (st == VECATTN_OK) st = merge_all(c, table, j, keys, values, n, merged);
    free(keys);
    free(values);
    return st;
}

vecattn_status va_json_import_into(va_cache *c, const char *table, const char *text, size_t len,
                                   const char *label, int *merged, char *msg, size_t msg_size) {
    json_ctx j = {.label = label ? label : "(json)", .where = "", .msg = msg, .msg_size = msg_size};
    if (merged) *merged = 0;
    if (msg_size) msg[0] = 0;
    if (!c || va_cache_ready(c) != 0) return snprintf(msg, msg_size, "%s: no cache", j.label), VECATTN_E_CACHE;
    if (!strcmp(table, VA_TUNED_MAIN) && !va_cache_writable(c))
        return snprintf(msg, msg_size, "%s: cache %s is read-only", j.label, va_cache_path(c)), VECATTN_E_CACHE;
    if (len > MAX_FILE_BYTES) return fail(&j, NULL, "larger than %d bytes", MAX_FILE_BYTES);
    if (memchr(text, 0, len)) return fail(&j, NULL, "contains a NUL byte: not a JSON text file");
    /* cJSON wants the terminating NUL inside the length to reject trailing garbage. */
    char *buf = malloc(len + 1);
    if (!buf) return fail(&j, NULL, "out of memory");
    memcpy(buf, text, len);
    buf[len] = 0;
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(buf, len + 1, &end, 1);
    vecattn_status st = root ? import_tree(c, table, &j, root, merged) : parse_error(&j, buf, end);
    cJSON_Delete(root);
    free(buf);
    return st;
}

char *va_read_file(const char *path, size_t limit, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap + 1);
    while (buf) {
        n += fread(buf + n, 1, cap - n, f);
        if (n < cap || ferror(f)) break;
        if (cap >= limit) {
            free(buf);
            buf = NULL;
            errno = EFBIG;
            break;
        }
        cap *= 2;
        char *grown = realloc(buf, cap + 1);
        if (!grown) free(buf);
        buf = grown;
    }
    int failed = ferror(f);
    fclose(f);
    if (buf && failed) {
        free(buf);
        buf = NULL;
        errno = EIO;
    }
    if (buf) {
        buf[n] = 0;
        *len = n;
    }
    return buf;
}

vecattn_status va_cache_import_json(va_cache *c, const char *file, int *merged, char *msg, size_t msg_size) {
    size_t len = 0;
    char *text = va_read_file(file, MAX_FILE_BYTES, &len);
    if (!text) {
        snprintf(msg, msg_size, "%s: cannot read: %s", file, strerror(errno));
        if (merged) *merged = 0;
        return VECATTN_E_INVALID_ARG;
    }
    vecattn_status st = va_json_import_into(c, VA_TUNED_MAIN, text, len, file, merged, msg, msg_size);
    free(text);
    return st;
}

vecattn_status va_cache_import_json_text(va_cache *c, const char *text, size_t len, const char *label,
                                         int *merged, char *msg, size_t msg_size) {
    return va_json_import_into(c, VA_TUNED_MAIN, text ? text : "", text ? len : 0, label, merged, msg, msg_size);
}
