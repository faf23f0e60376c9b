/*
** admin.c -- what `vecattn-autotune show`, `verify` and `clear` need: row counts and sizes,
** a full check of every row and blob, and deleting tables' rows.
*/
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "cache/cache_internal.h"

/* ---- stats ---------------------------------------------------------------------------- */

static const char *journal_name(va_cache *c) {
    static const char *const modes[] = {"wal", "delete", "truncate", "persist", "memory", "off"};
    sqlite3_stmt *st = va_sql_prepare(c, "PRAGMA main.journal_mode");
    const char *name = "unknown";
    if (st && sqlite3_step(st) == SQLITE_ROW) {
        const char *text = (const char *)sqlite3_column_text(st, 0);
        for (size_t i = 0; text && i < sizeof modes / sizeof modes[0]; ++i)
            if (!sqlite3_stricmp(text, modes[i])) name = modes[i];
    }
    sqlite3_finalize(st);
    return name;
}

static long long file_size(const char *path, const char *suffix) {
    char full[4200];
    struct stat st;
    snprintf(full, sizeof full, "%s%s", path, suffix);
    return stat(full, &st) == 0 ? (long long)st.st_size : 0;
}

vecattn_status va_cache_get_stats(va_cache *c, va_cache_stats *s) {
    memset(s, 0, sizeof *s);
    if (va_cache_ready(c) != 0) return VECATTN_E_CACHE;
    va_shipped_ensure(c);
    s->schema_version = (int)va_sql_int(c, "PRAGMA main.user_version", -1);
    s->journal_mode = journal_name(c);
    s->tuned = va_sql_int(c, "SELECT count(*) FROM main.tuned", -1);
    s->shipped = va_sql_int(c, "SELECT count(*) FROM " VA_TUNED_SHIPPED, -1);
    s->kernels = va_sql_int(c, "SELECT count(*) FROM kernels", -1);
    s->failed = va_sql_int(c, "SELECT count(*) FROM failed", -1);
    s->claims = va_sql_int(c, "SELECT count(*) FROM claims", -1);
    s->kernel_bytes = va_sql_int(c, "SELECT coalesce(sum(length(cubin)), 0) FROM kernels", -1);
    if (c->mode != VA_CACHE_MEMORY) s->file_bytes = file_size(c->path, "") + file_size(c->path, "-wal");
    return s->schema_version < 0 || s->tuned < 0 || s->kernels < 0 ? VECATTN_E_CACHE : VECATTN_OK;
}

/* ---- verify --------------------------------------------------------------------------- */

typedef struct reporter {
    void (*fn)(const char *line, void *user);
    void *user;
    int bad;
} reporter;

static void report(reporter *r, const char *line) {
    ++r->bad;
    if (r->fn) r->fn(line, r->user);
}

static int verify_file(va_cache *c, reporter *r) {
    sqlite3_stmt *st = va_sql_prepare(c, "PRAGMA main.integrity_check");
    if (!st) return -1;
    int rc;
    char line[1200];
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        const char *text = (const char *)sqlite3_column_text(st, 0);
        if (text && strcmp(text, "ok") != 0) {
            snprintf(line, sizeof line, "file %s: %s", c->path, text);
            report(r, line);
        }
    }
    sqlite3_finalize(st);
    if (rc == SQLITE_DONE) return 0;
    va_sql_fail(c, rc, "PRAGMA integrity_check");
    return -1;
}

static void verify_kernel(sqlite3_stmt *st, reporter *r) {
    const char *name = (const char *)sqlite3_column_text(st, 0);
    uint64_t hash = va_i64_to_u64(sqlite3_column_int64(st, 1));
    int arch = sqlite3_column_int(st, 2);
    const char *nvrtc = (const char *)sqlite3_column_text(st, 3);
    const void *blob = sqlite3_column_blob(st, 4);
    size_t n = (size_t)sqlite3_column_bytes(st, 4);
    uint64_t stored = va_i64_to_u64(sqlite3_column_int64(st, 5));
    uint64_t sum = blob ? va_fnv1a(VA_FNV_OFFSET, blob, n) : 0;
    char line[1200];
    const char *why = NULL;
    char buf[128];
    if (!blob || n == 0) why = "empty CUBIN";
    else if (sum != stored)
        why = (snprintf(buf, sizeof buf, "checksum mismatch (stored %016llx, computed %016llx)",
                        (unsigned long long)stored, (unsigned long long)sum), buf);
    else if (!va_arch_target(arch))
        why = (snprintf(buf, sizeof buf, "unknown arch %d", arch), buf);
    if (!why) return;
    snprintf(line, sizeof line, "kernel %s (hash %016llx, arch %d, nvrtc %s): %s", name ? name : "?",
             (unsigned long long)hash, arch, nvrtc ? nvrtc : "?", why);
    report(r, line);
}

static int verify_kernels(va_cache *c, reporter *r) {
    sqlite3_stmt *st = va_sql_prepare(c, "SELECT name, source_hash, arch, nvrtc_id, cubin, checksum FROM kernels");
    if (!st) return -1;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) verify_kernel(st, r);
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? 0 : (va_sql_fail(c, rc, "read the kernels"), -1);
}

static int verify_tuned(va_cache *c, reporter *r) {
    sqlite3_stmt *st = va_sql_prepare(c, "SELECT " VA_TUNED_COLUMNS " FROM main.tuned");
    if (!st) return -1;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        va_tune_key k;
        va_tune_value v;
        char why[512], line[1400];
        if (va_tuned_from_row(st, 0, &k, &v, why, sizeof why) &&
            va_cache_check_entry(&k, &v, why, sizeof why) == VECATTN_OK)
            continue;
        snprintf(line, sizeof line, "tuned %s cc %d sm %d %s d%d pq%d bk%d gk%d %s %s seq 2^%d sparsity %d: %s",
                 sqlite3_column_text(st, 2), sqlite3_column_int(st, 0), sqlite3_column_int(st, 1),
                 sqlite3_column_text(st, 3), sqlite3_column_int(st, 4), sqlite3_column_int(st, 5),
                 sqlite3_column_int(st, 6), sqlite3_column_int(st, 7),
                 sqlite3_column_int(st, 8) ? "causal" : "non-causal", sqlite3_column_text(st, 9),
                 sqlite3_column_int(st, 10), sqlite3_column_int(st, 11), why);
        report(r, line);
    }
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? 0 : (va_sql_fail(c, rc, "read the tuned entries"), -1);
}

int va_cache_verify(va_cache *c, void (*fn)(const char *line, void *user), void *user) {
    if (va_cache_ready(c) != 0) return -1;
    reporter r = {fn, user, 0};
    if (verify_file(c, &r) != 0 || verify_kernels(c, &r) != 0 || verify_tuned(c, &r) != 0) return -1;
    return r.bad;
}

/* ---- clear ---------------------------------------------------------------------------- */

vecattn_status va_cache_clear(va_cache *c, unsigned what) {
    if (va_cache_ready(c) != 0) return VECATTN_E_CACHE;
    if (!va_cache_writable(c)) {
        snprintf(c->errmsg, sizeof c->errmsg, "cache %s is read-only", c->path);
        return VECATTN_E_CACHE;
    }
    int rc = va_sql_begin(c);
    if (rc == SQLITE_OK && (what & VA_CACHE_CLEAR_KERNELS)) rc = va_sql_exec(c, "DELETE FROM kernels; DELETE FROM claims");
    if (rc == SQLITE_OK && (what & VA_CACHE_CLEAR_TUNED)) rc = va_sql_exec(c, "DELETE FROM main.tuned");
    if (rc == SQLITE_OK && (what & VA_CACHE_CLEAR_FAILED)) rc = va_sql_exec(c, "DELETE FROM failed");
    if (va_sql_end(c, rc) != SQLITE_OK) return VECATTN_E_CACHE;
    /* Give the space back; another process reading now only makes this wait or skip. */
    sqlite3_exec(c->db, "VACUUM", NULL, NULL, NULL);
    return VECATTN_OK;
}
