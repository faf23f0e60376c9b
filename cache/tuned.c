/*
** tuned.c -- tuned tile configurations: validation, merge (the faster entry stays) and the
** run-time lookup.
**
** Lookup order (as Kernel Launcher's wisdom files, with one query): the exact key of this
** device (cc + SM count + name) and buckets -> the nearest bucket of the same device (smallest
** |seq_bucket difference|, then |sparsity_bucket difference|) -> another device of the same
** compute capability (one with the same SM count first, then the nearest bucket) -> miss.
** Rows come from the user's table and from the shipped files (the all_tuned view); a row
** that does not validate is passed over, so a bad row can cost a tuned config, never a
** launch.
*/
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "cache/cache_internal.h"

/* ---- names ---------------------------------------------------------------------------- */

const char *va_dtype_name(vecattn_dtype dtype) {
    return dtype == VECATTN_BF16 ? "bf16" : dtype == VECATTN_FP16 ? "fp16" : "?";
}

const char *va_stage_name(va_stage stage) {
    return stage == VA_STAGE_SELECTION ? "selection" : stage == VA_STAGE_ATTENTION ? "attention" : "?";
}

int va_dtype_parse(const char *name, vecattn_dtype *out) {
    if (!name) return 0;
    if (!strcmp(name, "bf16")) *out = VECATTN_BF16;
    else if (!strcmp(name, "fp16")) *out = VECATTN_FP16;
    else return 0;
    return 1;
}

int va_stage_parse(const char *name, va_stage *out) {
    if (!name) return 0;
    if (!strcmp(name, "selection")) *out = VA_STAGE_SELECTION;
    else if (!strcmp(name, "attention")) *out = VA_STAGE_ATTENTION;
    else return 0;
    return 1;
}

/* ---- validation ----------------------------------------------------------------------- */

#define BAD(...) (snprintf(msg, msg_size, __VA_ARGS__), VECATTN_E_INVALID_ARG)

static int text_fits(const char *s, size_t cap) { return memchr(s, 0, cap) != NULL; }

static vecattn_status check_device(const va_device_id *d, char *msg, size_t msg_size) {
    if (!va_arch_target(d->cc)) return BAD("field \"cc\": %d is not a supported compute capability", d->cc);
    if (d->sm_count < 1 || d->sm_count > 1024) return BAD("field \"sm_count\": %d is not in 1..1024", d->sm_count);
    if (!text_fits(d->name, sizeof d->name) || !d->name[0])
        return BAD("field \"name\": empty or longer than %zu bytes", sizeof d->name - 1);
    return VECATTN_OK;
}

static vecattn_status check_buckets(const va_tune_key *k, char *msg, size_t msg_size) {
    if (k->stage != VA_STAGE_SELECTION && k->stage != VA_STAGE_ATTENTION)
        return BAD("field \"stage\": %d is neither selection nor attention", (int)k->stage);
    if (k->seq_bucket < 12 || k->seq_bucket > 17)
        return BAD("field \"seq_bucket\": %d is not in 12..17 (4K .. 128K keys)", k->seq_bucket);
    if (k->stage == VA_STAGE_SELECTION && k->sparsity_bucket != -1)
        return BAD("field \"sparsity_bucket\": %d, but the selection stage has none (-1)", k->sparsity_bucket);
    if (k->stage == VA_STAGE_ATTENTION && (k->sparsity_bucket < 0 || k->sparsity_bucket > 3))
        return BAD("field \"sparsity_bucket\": %d is not in 0..3", k->sparsity_bucket);
    return VECATTN_OK;
}

/* The kernel the entry describes: the stage's defaults, then its tiles. */
static vecattn_status check_tiles(const va_tune_key *k, const char *tiles, char *msg, size_t msg_size) {
    va_kernel_spec spec;
    if (k->stage == VA_STAGE_SELECTION)
        va_spec_default_select(&spec, k->device.cc, k->dtype, k->head_dim, k->causal, k->pq, k->bk, k->gk);
    else
        va_spec_default_attention(&spec, k->device.cc, k->dtype, k->head_dim, k->causal, k->pq);
    char why[256];
    /* The semantic fields alone first: a bad pq is not the tiles' fault. */
    if (k->stage == VA_STAGE_SELECTION && va_spec_validate(&spec, why, sizeof why) != VECATTN_OK)
        return BAD("fields \"pq\", \"bk\", \"gk\", \"causal\": %s", why);
    if (!tiles[0]) return BAD("field \"tiles\": empty");
    if (va_spec_tiles_parse(&spec, tiles, why, sizeof why) != VECATTN_OK ||
        va_spec_validate(&spec, why, sizeof why) != VECATTN_OK)
        return BAD("field \"tiles\": %s", why);
    return VECATTN_OK;
}

static vecattn_status check_value(const va_tune_value *v, char *msg, size_t msg_size) {
    if (!text_fits(v->tiles, sizeof v->tiles)) return BAD("field \"tiles\": longer than %zu bytes", sizeof v->tiles - 1);
    if (!(isfinite(v->time_ms) && v->time_ms > 0 && v->time_ms <= 1e7))
        return BAD("field \"time_ms\": %g is not a finite time in (0, 1e7] ms", v->time_ms);
    if (!(isfinite(v->tflops) && v->tflops >= 0 && v->tflops <= 1e6))
        return BAD("field \"tflops\": %g is not in [0, 1e6]", v->tflops);
    if (v->tuned_at < 0 || v->tuned_at > ((int64_t)1 << 40))
        return BAD("field \"tuned_at\": %lld is not a unix time", (long long)v->tuned_at);
    if (!text_fits(v->vecattn_version, sizeof v->vecattn_version))
        return BAD("field \"vecattn_version\": longer than %zu bytes", sizeof v->vecattn_version - 1);
    if (!text_fits(v->nvrtc_id, sizeof v->nvrtc_id))
        return BAD("field \"nvrtc\": longer than %zu bytes", sizeof v->nvrtc_id - 1);
    if (v->driver_version < 0) return BAD("field \"driver_version\": %d is negative", v->driver_version);
    return VECATTN_OK;
}

vecattn_status va_cache_check_entry(const va_tune_key *k, const va_tune_value *v, char *msg, size_t msg_size) {
    vecattn_status st = check_device(&k->device, msg, msg_size);
    if (st == VECATTN_OK && k->dtype != VECATTN_BF16 && k->dtype != VECATTN_FP16)
        st = BAD("field \"dtype\": %d is neither bf16 nor fp16", (int)k->dtype);
    if (st == VECATTN_OK && k->head_dim != 64 && k->head_dim != 128)
        st = BAD("field \"head_dim\": %d is not 64 or 128", k->head_dim);
    if (st == VECATTN_OK && (k->pq < 16 || k->pq > 128 || (k->pq & (k->pq - 1))))
        st = BAD("field \"pq\": %d is not a power of two in 16..128", k->pq);
    if (st == VECATTN_OK && (k->bk < 8 || k->bk > 128 || (k->bk & (k->bk - 1))))
        st = BAD("field \"bk\": %d is not a power of two in 8..128", k->bk);
    if (st == VECATTN_OK && (k->gk < 1 || k->gk > 65536)) st = BAD("field \"gk\": %d is not in 1..65536", k->gk);
    if (st == VECATTN_OK && k->causal != 0 && k->causal != 1) st = BAD("field \"causal\": %d is not 0 or 1", k->causal);
    if (st == VECATTN_OK) st = check_buckets(k, msg, msg_size);
    if (st == VECATTN_OK) st = check_value(v, msg, msg_size);
    if (st == VECATTN_OK) st = check_tiles(k, v->tiles, msg, msg_size);
    return st;
}

/* ---- rows ----------------------------------------------------------------------------- */

/* Parameters ?1 .. ?12 are the key, in the order of VA_TUNED_COLUMNS. */
#define KEY_WHERE                                                                                 \
    "cc = ?1 AND sm_count = ?2 AND device_name = ?3 AND dtype = ?4 AND head_dim = ?5 AND pq = ?6" \
    " AND bk = ?7 AND gk = ?8 AND causal = ?9 AND stage = ?10 AND seq_bucket = ?11"               \
    " AND sparsity_bucket = ?12"

static void bind_key(sqlite3_stmt *st, const va_tune_key *k) {
    sqlite3_bind_int(st, 1, k->device.cc);
    sqlite3_bind_int(st, 2, k->device.sm_count);
    sqlite3_bind_text(st, 3, k->device.name, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 4, va_dtype_name(k->dtype), -1, SQLITE_STATIC);
    sqlite3_bind_int(st, 5, k->head_dim);
    sqlite3_bind_int(st, 6, k->pq);
    sqlite3_bind_int(st, 7, k->bk);
    sqlite3_bind_int(st, 8, k->gk);
    sqlite3_bind_int(st, 9, k->causal);
    sqlite3_bind_text(st, 10, va_stage_name(k->stage), -1, SQLITE_STATIC);
    sqlite3_bind_int(st, 11, k->seq_bucket);
    sqlite3_bind_int(st, 12, k->sparsity_bucket);
}

static void bind_value(sqlite3_stmt *st, const va_tune_value *v) {
    sqlite3_bind_text(st, 13, v->tiles, -1, SQLITE_STATIC);
    sqlite3_bind_double(st, 14, v->time_ms);
    sqlite3_bind_double(st, 15, v->tflops);
    sqlite3_bind_int64(st, 16, v->tuned_at);
    sqlite3_bind_text(st, 17, v->vecattn_version, -1, SQLITE_STATIC);
    sqlite3_bind_int(st, 18, v->driver_version);
    sqlite3_bind_text(st, 19, v->nvrtc_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 20, v->kernel_version, -1, SQLITE_STATIC);
}

/* Copy a text column; 0 when it is NULL or does not fit. */
static int copy_text(sqlite3_stmt *st, int col, char *dst, size_t cap) {
    const char *text = (const char *)sqlite3_column_text(st, col);
    if (!text || (size_t)sqlite3_column_bytes(st, col) >= cap) return 0;
    memcpy(dst, text, (size_t)sqlite3_column_bytes(st, col) + 1);
    return 1;
}

int va_tuned_from_row(sqlite3_stmt *st, int col, va_tune_key *k, va_tune_value *v, char *msg, size_t msg_size) {
    memset(k, 0, sizeof *k);
    memset(v, 0, sizeof *v);
    k->device.cc = sqlite3_column_int(st, col + 0);
    k->device.sm_count = sqlite3_column_int(st, col + 1);
    if (!copy_text(st, col + 2, k->device.name, sizeof k->device.name))
        return snprintf(msg, msg_size, "device_name missing or too long"), 0;
    if (!va_dtype_parse((const char *)sqlite3_column_text(st, col + 3), &k->dtype))
        return snprintf(msg, msg_size, "unknown dtype \"%s\"", sqlite3_column_text(st, col + 3)), 0;
    k->head_dim = sqlite3_column_int(st, col + 4);
    k->pq = sqlite3_column_int(st, col + 5);
    k->bk = sqlite3_column_int(st, col + 6);
    k->gk = sqlite3_column_int(st, col + 7);
    k->causal = sqlite3_column_int(st, col + 8);
    if (!va_stage_parse((const char *)sqlite3_column_text(st, col + 9), &k->stage))
        return snprintf(msg, msg_size, "unknown stage \"%s\"", sqlite3_column_text(st, col + 9)), 0;
    k->seq_bucket = sqlite3_column_int(st, col + 10);
    k->sparsity_bucket = sqlite3_column_int(st, col + 11);
    if (!copy_text(st, col + 12, v->tiles, sizeof v->tiles) ||
        !copy_text(st, col + 16, v->vecattn_version, sizeof v->vecattn_version) ||
        !copy_text(st, col + 18, v->nvrtc_id, sizeof v->nvrtc_id) ||
        !copy_text(st, col + 19, v->kernel_version, sizeof v->kernel_version))
        return snprintf(msg, msg_size, "a text column is missing or too long"), 0;
    v->time_ms = sqlite3_column_double(st, col + 13);
    v->tflops = sqlite3_column_double(st, col + 14);
    v->tuned_at = sqlite3_column_int64(st, col + 15);
    v->driver_version = sqlite3_column_int(st, col + 17);
    return 1;
}

/* ---- merge and put -------------------------------------------------------------------- */

/* 1 when `table` holds an entry of the key at least as fast as `time_ms`. */
static int has_faster(va_cache *c, const char *table, const va_tune_key *k, double time_ms, int *rc) {
    char sql[512];
    snprintf(sql, sizeof sql, "SELECT time_ms FROM %s WHERE " KEY_WHERE, table);
    sqlite3_stmt *st = va_sql_prepare(c, sql);
    if (!st) return *rc = SQLITE_ERROR, 0;
    bind_key(st, k);
    int step = sqlite3_step(st), faster = 0;
    if (step == SQLITE_ROW) faster = sqlite3_column_double(st, 0) <= time_ms;
    *rc = step == SQLITE_ROW || step == SQLITE_DONE ? SQLITE_OK : va_sql_fail(c, step, "read a tuned entry");
    sqlite3_finalize(st);
    return faster;
}

int va_tuned_merge(va_cache *c, const char *table, const va_tune_key *k, const va_tune_value *v, int *changed) {
    int rc;
    *changed = 0;
    if (has_faster(c, table, k, v->time_ms, &rc) || rc != SQLITE_OK) return rc;
    char sql[1024];
    /* DELETE + INSERT rather than REPLACE: the shipped table has no primary key. */
    snprintf(sql, sizeof sql, "DELETE FROM %s WHERE " KEY_WHERE, table);
    sqlite3_stmt *st = va_sql_prepare(c, sql);
    if (!st) return SQLITE_ERROR;
    bind_key(st, k);
    if ((rc = va_sql_run(c, st, "replace a tuned entry")) != SQLITE_OK) return rc;
    snprintf(sql, sizeof sql,
             "INSERT INTO %s (" VA_TUNED_COLUMNS ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8,"
             " ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20)", table);
    if (!(st = va_sql_prepare(c, sql))) return SQLITE_ERROR;
    bind_key(st, k);
    bind_value(st, v);
    rc = va_sql_run(c, st, "store a tuned entry");
    *changed = rc == SQLITE_OK;
    return rc;
}

vecattn_status va_cache_put_tuned(va_cache *c, const va_tune_key *k, const va_tune_value *v) {
    if (va_cache_ready(c) != 0) return VECATTN_E_CACHE;
    if (va_cache_check_entry(k, v, c->errmsg, sizeof c->errmsg) != VECATTN_OK) return VECATTN_E_INVALID_ARG;
    if (!va_cache_writable(c)) {
        snprintf(c->errmsg, sizeof c->errmsg, "cache %s is read-only", c->path);
        return VECATTN_E_CACHE;
    }
    int changed = 0, rc = va_sql_begin(c);
    if (rc == SQLITE_OK) rc = va_sql_end(c, va_tuned_merge(c, VA_TUNED_MAIN, k, v, &changed));
    return rc == SQLITE_OK ? VECATTN_OK : VECATTN_E_CACHE;
}

/* ---- lookup --------------------------------------------------------------------------- */

/* Rows measured with the current kernels first at every level; then the level (exact
** buckets, nearest buckets of this device, another device of the same cc). A row of another
** kernel version is used only when no current one matches at all: a fallback hint. */
static const char lookup_sql[] =
    "SELECT " VA_TUNED_COLUMNS ","
    "  CASE WHEN sm_count = ?2 AND device_name = ?3 THEN"
    "    CASE WHEN seq_bucket = ?11 AND sparsity_bucket = ?12 THEN 1 ELSE 2 END"
    "  ELSE 3 END AS level"
    " FROM all_tuned"
    " WHERE cc = ?1 AND dtype = ?4 AND head_dim = ?5 AND pq = ?6 AND bk = ?7 AND gk = ?8"
    "   AND causal = ?9 AND stage = ?10"
    " ORDER BY kernel_version <> ?13, level, sm_count <> ?2, abs(seq_bucket - ?11),"
    "   abs(sparsity_bucket - ?12), time_ms"
    " LIMIT 64";

const char *va_tune_kernel_version(va_stage stage) {
    return va_kernel_version(stage == VA_STAGE_SELECTION ? VA_KERNEL_SELECT : VA_KERNEL_ATTENTION);
}

va_tune_match va_cache_lookup_tuned(va_cache *c, const va_tune_key *key, va_tune_value *value) {
    if (va_cache_ready(c) != 0) return VA_TUNE_MISS;
    va_shipped_ensure(c);
    sqlite3_stmt *st = va_sql_prepare(c, lookup_sql);
    if (!st) return VA_TUNE_MISS;
    bind_key(st, key);
    sqlite3_bind_text(st, 13, va_tune_kernel_version(key->stage), -1, SQLITE_STATIC);
    va_tune_match match = VA_TUNE_MISS;
    int rc = SQLITE_DONE;
    while (match == VA_TUNE_MISS && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        va_tune_key k;
        va_tune_value v;
        char why[256];
        if (!va_tuned_from_row(st, 0, &k, &v, why, sizeof why) ||
            va_cache_check_entry(&k, &v, why, sizeof why) != VECATTN_OK)
            continue;  /* verify names it; here it only costs this candidate */
        *value = v;
        match = (va_tune_match)sqlite3_column_int(st, VA_TUNED_NCOLS);
    }
    if (match == VA_TUNE_MISS && rc != SQLITE_DONE && rc != SQLITE_ROW) va_sql_fail(c, rc, "look up a tuned entry");
    sqlite3_finalize(st);
    return match;
}

/* ---- walking and devices -------------------------------------------------------------- */

vecattn_status va_cache_foreach_tuned(va_cache *c, int include_shipped, const va_device_id *only,
                                      va_tuned_fn fn, void *user, int *skipped) {
    if (skipped) *skipped = 0;
    if (va_cache_ready(c) != 0) return VECATTN_E_CACHE;
    if (include_shipped) va_shipped_ensure(c);
    char sql[1024];
    snprintf(sql, sizeof sql,
             "SELECT " VA_TUNED_COLUMNS ", shipped FROM %s WHERE ?1 IS NULL OR (cc = ?1 AND sm_count = ?2)"
             " ORDER BY shipped, device_name, cc, sm_count, dtype, head_dim, pq, bk, gk, causal, stage,"
             " seq_bucket, sparsity_bucket",
             include_shipped ? "all_tuned" : "(SELECT *, 0 AS shipped FROM main.tuned)");
    sqlite3_stmt *st = va_sql_prepare(c, sql);
    if (!st) return VECATTN_E_CACHE;
    if (only) {
        sqlite3_bind_int(st, 1, only->cc);
        sqlite3_bind_int(st, 2, only->sm_count);
    }
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        va_tune_key k;
        va_tune_value v;
        char why[256];
        if (!va_tuned_from_row(st, 0, &k, &v, why, sizeof why) ||
            va_cache_check_entry(&k, &v, why, sizeof why) != VECATTN_OK) {
            if (skipped) ++*skipped;
            continue;
        }
        if (fn(&k, &v, sqlite3_column_int(st, VA_TUNED_NCOLS), user)) {
            rc = SQLITE_DONE;
            break;
        }
    }
    if (rc != SQLITE_DONE) va_sql_fail(c, rc, "read the tuned entries");
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? VECATTN_OK : VECATTN_E_CACHE;
}

int va_cache_find_device(va_cache *c, const char *name, va_device_id *out) {
    if (va_cache_ready(c) != 0 || !name) return 0;
    va_shipped_ensure(c);
    sqlite3_stmt *st = va_sql_prepare(c,
        "SELECT cc, sm_count, device_name FROM all_tuned WHERE device_name = ?1 COLLATE NOCASE LIMIT 1");
    if (!st) return 0;
    sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
    int found = sqlite3_step(st) == SQLITE_ROW;
    if (found) {
        memset(out, 0, sizeof *out);
        out->cc = sqlite3_column_int(st, 0);
        out->sm_count = sqlite3_column_int(st, 1);
        snprintf(out->name, sizeof out->name, "%s", (const char *)sqlite3_column_text(st, 2));
    }
    sqlite3_finalize(st);
    return found;
}
