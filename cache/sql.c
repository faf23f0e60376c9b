/*
** sql.c -- small SQLite helpers shared by the cache files: errors into the handle, one-shot
** statements, and the write transaction.
*/
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "cache/cache_internal.h"

int va_sql_fail(va_cache *c, int rc, const char *what) {
    const char *text = c->db ? sqlite3_errmsg(c->db) : sqlite3_errstr(rc);
    /* sqlite3_errmsg describes the latest call; an rc from an earlier one gets its own text. */
    if (c->db && (sqlite3_errcode(c->db) & 0xff) != (rc & 0xff)) text = sqlite3_errstr(rc);
    snprintf(c->errmsg, sizeof c->errmsg, "%s: %s", what, text);
    int primary = rc & 0xff;
    if (primary == SQLITE_CORRUPT || primary == SQLITE_NOTADB) c->damaged = 1;
    return rc;
}

int va_sql_exec(va_cache *c, const char *sql) {
    int rc = sqlite3_exec(c->db, sql, NULL, NULL, NULL);
    return rc == SQLITE_OK ? rc : va_sql_fail(c, rc, sql);
}

sqlite3_stmt *va_sql_prepare(va_cache *c, const char *sql) {
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(c->db, sql, -1, &st, NULL);
    if (rc != SQLITE_OK) {
        va_sql_fail(c, rc, "prepare");
        sqlite3_finalize(st);
        return NULL;
    }
    return st;
}

int va_sql_run(va_cache *c, sqlite3_stmt *st, const char *what) {
    int rc = sqlite3_step(st);
    sqlite3_finalize(st);
    if (rc == SQLITE_DONE || rc == SQLITE_ROW) return SQLITE_OK;
    return va_sql_fail(c, rc, what);
}

long long va_sql_int(va_cache *c, const char *sql, long long fallback) {
    sqlite3_stmt *st = va_sql_prepare(c, sql);
    if (!st) return fallback;
    long long v = fallback;
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) v = sqlite3_column_int64(st, 0);
    else va_sql_fail(c, rc, sql);
    sqlite3_finalize(st);
    return v;
}

/* IMMEDIATE takes the write lock at BEGIN, so the busy timeout applies there instead of a
** deadlock-prone upgrade from a read lock in the middle of the transaction. */
int va_sql_begin(va_cache *c) { return va_sql_exec(c, "BEGIN IMMEDIATE"); }

int va_sql_end(va_cache *c, int rc) {
    if (rc == SQLITE_OK) {
        rc = va_sql_exec(c, "COMMIT");
        if (rc == SQLITE_OK) return rc;
    }
    /* Keep the first error's message: ROLLBACK's own outcome does not matter. */
    if (sqlite3_get_autocommit(c->db) == 0) sqlite3_exec(c->db, "ROLLBACK", NULL, NULL, NULL);
    return rc;
}

sqlite3_int64 va_u64_to_i64(uint64_t v) {
    sqlite3_int64 r;
    memcpy(&r, &v, sizeof r);
    return r;
}

uint64_t va_i64_to_u64(sqlite3_int64 v) {
    uint64_t r;
    memcpy(&r, &v, sizeof r);
    return r;
}

long long va_now(void) { return (long long)time(NULL); }
