/*
** schema.c -- the tables of the cache and the forward migrations between their versions.
**
** PRAGMA user_version holds the schema version of a file. Opening a file of an older version
** runs the missing steps of `migrations` in one write transaction; a file of a newer version
** (written by a newer vecattn) is never touched: the open falls back to memory. A new file is
** simply "version 0" and takes every step.
**
** Version 1 holds the tuned configurations and the compiled kernels; version 2 adds the
** failed configurations and the compile claims. Both were laid down in the same change; the
** split keeps a real migration step under test (tests/test_cache_schema.c). Version 3 records
** the kernel version (codegen.h, va_kernel_version) a tuned row was measured with; older rows
** get '' (unknown).
*/
#include <stdio.h>
#include <string.h>

#include "cache/cache_internal.h"

/* The schema version this build writes. Bump it when a table, column, index or the meaning
** of a stored value changes, and append the step that takes version N-1 to N below. Never
** edit a step that has been released: files in the wild were made by it. */
#define VA_CACHE_SCHEMA_VERSION 3

typedef struct migration {
    int to_version;
    const char *sql;
} migration;

static const migration migrations[] = {
    {1,
     /* Tuned tile configurations: key columns of va_tune_key, value columns of va_tune_value.
     ** dtype and stage are stored by name ("bf16", "attention"): stable across enum changes. */
     "CREATE TABLE tuned ("
     "  cc INTEGER NOT NULL, sm_count INTEGER NOT NULL, device_name TEXT NOT NULL,"
     "  dtype TEXT NOT NULL, head_dim INTEGER NOT NULL, pq INTEGER NOT NULL,"
     "  bk INTEGER NOT NULL, gk INTEGER NOT NULL, causal INTEGER NOT NULL, stage TEXT NOT NULL,"
     "  seq_bucket INTEGER NOT NULL, sparsity_bucket INTEGER NOT NULL,"
     "  tiles TEXT NOT NULL, time_ms REAL NOT NULL, tflops REAL NOT NULL,"
     "  tuned_at INTEGER NOT NULL, vecattn_version TEXT NOT NULL,"
     "  driver_version INTEGER NOT NULL, nvrtc_id TEXT NOT NULL,"
     "  PRIMARY KEY (cc, sm_count, device_name, dtype, head_dim, pq, bk, gk, causal, stage,"
     "               seq_bucket, sparsity_bucket));"
     /* Compiled kernels: the key says what built the CUBIN (source and options hash, the
     ** options text, the target, the NVRTC build); checksum is FNV-1a 64 of the blob. */
     "CREATE TABLE kernels ("
     "  source_hash INTEGER NOT NULL, options TEXT NOT NULL, arch INTEGER NOT NULL,"
     "  nvrtc_id TEXT NOT NULL, name TEXT NOT NULL, cubin BLOB NOT NULL,"
     "  checksum INTEGER NOT NULL, created_at INTEGER NOT NULL,"
     "  PRIMARY KEY (source_hash, options, arch, nvrtc_id));"},
    {2,
     /* Modules that failed to compile or launch: never retried by the autotuner. */
     "CREATE TABLE failed ("
     "  source_hash INTEGER PRIMARY KEY, name TEXT NOT NULL, why TEXT NOT NULL,"
     "  failed_at INTEGER NOT NULL);"
     /* Who compiles a kernel now: other processes wait for its put instead of compiling
     ** the same module again (a lease, so that a crashed process does not block forever). */
     "CREATE TABLE claims ("
     "  source_hash INTEGER NOT NULL, options TEXT NOT NULL, arch INTEGER NOT NULL,"
     "  nvrtc_id TEXT NOT NULL, host TEXT NOT NULL, pid INTEGER NOT NULL,"
     "  expires_at INTEGER NOT NULL,"
     "  PRIMARY KEY (source_hash, options, arch, nvrtc_id));"},
    {3,
     /* The templates' version a tuned row was measured with ('' before version 3). */
     "ALTER TABLE tuned ADD COLUMN kernel_version TEXT NOT NULL DEFAULT '';"},
};
enum { N_MIGRATIONS = (int)(sizeof migrations / sizeof migrations[0]) };

_Static_assert(sizeof migrations / sizeof migrations[0] == VA_CACHE_SCHEMA_VERSION,
               "one migration step per schema version");

int va_cache_schema_version(void) { return VA_CACHE_SCHEMA_VERSION; }

const char *va_cache_migration_sql(int version) {
    for (int i = 0; i < N_MIGRATIONS; ++i)
        if (migrations[i].to_version == version) return migrations[i].sql;
    return NULL;
}

static int read_version(va_cache *c, int *version) {
    sqlite3_stmt *st = va_sql_prepare(c, "PRAGMA user_version");
    if (!st) return sqlite3_errcode(c->db);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) *version = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    return rc == SQLITE_ROW ? SQLITE_OK : va_sql_fail(c, rc, "PRAGMA user_version");
}

static int apply_steps(va_cache *c, int from) {
    for (int i = 0; i < N_MIGRATIONS; ++i) {
        if (migrations[i].to_version <= from) continue;
        int rc = sqlite3_exec(c->db, migrations[i].sql, NULL, NULL, NULL);
        if (rc != SQLITE_OK) {
            char what[96];
            snprintf(what, sizeof what, "schema step to version %d", migrations[i].to_version);
            return va_sql_fail(c, rc, what);
        }
    }
    char sql[64];
    snprintf(sql, sizeof sql, "PRAGMA user_version=%d", VA_CACHE_SCHEMA_VERSION);
    return va_sql_exec(c, sql);
}

static int check_version(va_cache *c, int version) {
    if (version <= VA_CACHE_SCHEMA_VERSION) return SQLITE_OK;
    snprintf(c->errmsg, sizeof c->errmsg,
             "schema version %d was written by a newer vecattn (this one writes %d)", version,
             VA_CACHE_SCHEMA_VERSION);
    return SQLITE_MISMATCH;
}

int va_schema_migrate(va_cache *c) {
    int version = 0;
    int rc = read_version(c, &version);
    if (rc == SQLITE_OK) rc = check_version(c, version);
    if (rc != SQLITE_OK || version == VA_CACHE_SCHEMA_VERSION) return rc;
    if (sqlite3_db_readonly(c->db, "main") == 1) {
        snprintf(c->errmsg, sizeof c->errmsg,
                 "schema version %d needs an upgrade to %d, and the file is read-only", version,
                 VA_CACHE_SCHEMA_VERSION);
        return SQLITE_READONLY;
    }
    /* Another process may migrate at the same time: read the version again under the lock. */
    rc = va_sql_begin(c);
    if (rc != SQLITE_OK) return rc;
    rc = read_version(c, &version);
    if (rc == SQLITE_OK) rc = check_version(c, version);
    if (rc == SQLITE_OK && version < VA_CACHE_SCHEMA_VERSION) rc = apply_steps(c, version);
    return va_sql_end(c, rc);
}

/* The shipped pretuned entries live in a TEMP table (memory of this connection) with the
** layout of main.tuned (copied, so the two never drift); all_tuned is what lookups read. */
int va_schema_attach_shipped(va_cache *c) {
    static const char sql[] =
        "CREATE TEMP TABLE shipped_tuned AS SELECT * FROM main.tuned WHERE 0;"
        "CREATE TEMP VIEW all_tuned AS"
        "  SELECT *, 0 AS shipped FROM main.tuned UNION ALL"
        "  SELECT *, 1 AS shipped FROM temp.shipped_tuned;";
    return va_sql_exec(c, sql);
}
