/*
** cache_internal.h -- what the files of cache/ share: the handle, SQL helpers, recovery.
**
** Error handling: a failed SQLite call records "what: sqlite message" in cache->errmsg. A
** SQLITE_CORRUPT or SQLITE_NOTADB seen after open marks the cache damaged; the next public
** call (va_cache_ready) moves the file aside and recreates it, so no call has to unwind
** half-finished statements of a damaged file.
*/
#ifndef VECATTN_CACHE_INTERNAL_H
#define VECATTN_CACHE_INTERNAL_H

#include <sqlite3.h>

#include "cache/cache.h"

/* Wait this long for another process's write transaction before giving up (a miss). */
#define VA_CACHE_BUSY_TIMEOUT_MS 10000

struct va_cache {
    sqlite3 *db;
    va_cache_mode mode;
    char *path;                /* the file, or ":memory:" */
    int damaged;               /* a query reported SQLITE_CORRUPT / SQLITE_NOTADB */
    int warning_pending;       /* warning[] not yet taken by va_cache_take_warning */
    char warning[1024];
    char errmsg[1024];
    int shipped_wanted;        /* va_cache_use_shipped(cache, 1) was called */
    int shipped_loaded;        /* the shipped directories were read */
    char shipped_status[1024];
};

/* ---- store.c ----------------------------------------------------------------------------- */

/* 0 when the cache can be used for a call: recovers a damaged file first. */
int va_cache_ready(va_cache *cache);

/* ---- schema.c ---------------------------------------------------------------------------- */

/* Bring the main schema to the current version (BEGIN IMMEDIATE .. COMMIT). SQLITE_OK, or an
** SQLite code with the reason in cache->errmsg; SQLITE_READONLY when a migration is needed but
** the file is read-only, SQLITE_MISMATCH when the file is newer than this build. */
int va_schema_migrate(va_cache *cache);

/* The tables of tuned entries: the user's, and the shipped files' (a TEMP table: writable
** even on a read-only connection, where an attached database would not be). */
#define VA_TUNED_MAIN "main.tuned"
#define VA_TUNED_SHIPPED "temp.shipped_tuned"

/* Create the shipped table and the temp view all_tuned over both tables. */
int va_schema_attach_shipped(va_cache *cache);

/* ---- SQL helpers (store.c) ------------------------------------------------------------- */

/* Record a failure of `what` (rc is an SQLite result code); returns rc. Marks the cache
** damaged on SQLITE_CORRUPT / SQLITE_NOTADB. */
int va_sql_fail(va_cache *cache, int rc, const char *what);

/* Run SQL without results. */
int va_sql_exec(va_cache *cache, const char *sql);

/* Prepare `sql`; NULL (and errmsg) on failure. */
sqlite3_stmt *va_sql_prepare(va_cache *cache, const char *sql);

/* Step a statement that returns no rows and finalize it. */
int va_sql_run(va_cache *cache, sqlite3_stmt *stmt, const char *what);

/* The one integer of a query ("SELECT count(*) ..."), or `fallback`. */
long long va_sql_int(va_cache *cache, const char *sql, long long fallback);

/* Writes: BEGIN IMMEDIATE (waits up to the busy timeout for other writers), then COMMIT or
** ROLLBACK. va_sql_end commits when rc is SQLITE_OK, else rolls back; returns the final rc. */
int va_sql_begin(va_cache *cache);
int va_sql_end(va_cache *cache, int rc);

/* 1 when writes are possible (read-write file or memory). */
int va_cache_writable(const va_cache *cache);

/* uint64 hashes are stored as the int64 of the same bits. */
sqlite3_int64 va_u64_to_i64(uint64_t v);
uint64_t va_i64_to_u64(sqlite3_int64 v);

/* Unix seconds. */
long long va_now(void);

/* ---- tuned.c ----------------------------------------------------------------------------- */

/* The columns of a tuned row, in the order va_tuned_from_row reads them. */
#define VA_TUNED_COLUMNS                                                                       \
    "cc, sm_count, device_name, dtype, head_dim, pq, bk, gk, causal, stage, seq_bucket, "      \
    "sparsity_bucket, tiles, time_ms, tflops, tuned_at, vecattn_version, driver_version, nvrtc_id, " \
    "kernel_version"
enum { VA_TUNED_NCOLS = 20 };

/* Decode the VA_TUNED_COLUMNS of a row starting at column `col`; 0 and a reason in msg when
** the row cannot be (unknown dtype or stage name, text too long). */
int va_tuned_from_row(sqlite3_stmt *st, int col, va_tune_key *key, va_tune_value *value, char *msg,
                      size_t msg_size);

/* Insert into `table` (VA_TUNED_MAIN or VA_TUNED_SHIPPED), keeping the faster of an existing
** entry of the same key and this one. Called inside a transaction. *changed receives 1 when it
** wrote. */
int va_tuned_merge(va_cache *cache, const char *table, const va_tune_key *key,
                   const va_tune_value *value, int *changed);

/* ---- json.c ------------------------------------------------------------------------------ */

/* Validate and merge `text` into `table` (one transaction). */
vecattn_status va_json_import_into(va_cache *cache, const char *table, const char *text, size_t len,
                                   const char *label, int *merged, char *msg, size_t msg_size);

/* Read a whole file (at most `limit` bytes) into a NUL-terminated buffer; NULL and errno. */
char *va_read_file(const char *path, size_t limit, size_t *len);

/* ---- pretuned.c -------------------------------------------------------------------------- */

/* Read the shipped directories once, when asked for (before a lookup). */
void va_shipped_ensure(va_cache *cache);

#endif /* VECATTN_CACHE_INTERNAL_H */
