/*
** kernels.c -- compiled CUBINs, the compile claims, and the configurations that failed.
**
** A CUBIN row is keyed by everything that built it (source-and-options hash, the options,
** the target, the NVRTC identity with its build), so a hit can be loaded without asking
** NVRTC. Each blob carries its own FNV-1a checksum: a row whose blob does not match is
** deleted and reported as a miss, never handed to the driver.
**
** Claims implement lock -> re-check -> compile -> publish without holding a transaction
** across the compile: a claim is a row with a lease, written and released in short
** transactions; others wait for the put (or for the lease to end, or for the claiming
** process to die, which is checked on the same host).
*/
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cache/cache_internal.h"

#define KEY_WHERE "source_hash = ?1 AND options = ?2 AND arch = ?3 AND nvrtc_id = ?4"

void va_cache_kernel_key(va_kernel_key *key, const va_generated *gen, int arch, const char *nvrtc_id,
                         char *options_buf, size_t buf_size) {
    size_t len = 0;
    if (buf_size) options_buf[0] = 0;
    for (int i = 0; i < gen->n_options && gen->options[i]; ++i) {
        int n = snprintf(options_buf + len, buf_size > len ? buf_size - len : 0, "%s%s",
                         i ? " " : "", gen->options[i]);
        if (n < 0 || len + (size_t)n >= buf_size) break;
        len += (size_t)n;
    }
    *key = (va_kernel_key){.source_hash = gen->hash, .options = options_buf, .arch = arch,
                           .nvrtc_id = nvrtc_id, .name = gen->name};
}

static void bind_key(sqlite3_stmt *st, const va_kernel_key *key) {
    sqlite3_bind_int64(st, 1, va_u64_to_i64(key->source_hash));
    sqlite3_bind_text(st, 2, key->options ? key->options : "", -1, SQLITE_STATIC);
    sqlite3_bind_int(st, 3, key->arch);
    sqlite3_bind_text(st, 4, key->nvrtc_id ? key->nvrtc_id : "", -1, SQLITE_STATIC);
}

static uint64_t checksum(const void *data, size_t size) { return va_fnv1a(VA_FNV_OFFSET, data, size); }

/* Delete a row only while it still holds the bad checksum: another process may have put a
** good blob in the meantime. */
static void delete_bad_row(va_cache *c, const va_kernel_key *key, sqlite3_int64 stored) {
    if (!va_cache_writable(c) || va_sql_begin(c) != SQLITE_OK) return;
    sqlite3_stmt *st = va_sql_prepare(c, "DELETE FROM kernels WHERE " KEY_WHERE " AND checksum = ?5");
    int rc = SQLITE_ERROR;
    if (st) {
        bind_key(st, key);
        sqlite3_bind_int64(st, 5, stored);
        rc = va_sql_run(c, st, "delete a damaged kernel");
    }
    va_sql_end(c, rc);
}

int va_cache_get_kernel(va_cache *c, const va_kernel_key *key, void **cubin, size_t *size) {
    *cubin = NULL;
    *size = 0;
    if (va_cache_ready(c) != 0) return 0;
    sqlite3_stmt *st = va_sql_prepare(c, "SELECT cubin, checksum FROM kernels WHERE " KEY_WHERE);
    if (!st) return 0;
    bind_key(st, key);
    int rc = sqlite3_step(st), hit = 0, bad = 0;
    sqlite3_int64 stored = 0;
    if (rc == SQLITE_ROW) {
        const void *blob = sqlite3_column_blob(st, 0);
        size_t n = (size_t)sqlite3_column_bytes(st, 0);
        stored = sqlite3_column_int64(st, 1);
        if (!blob || n == 0 || va_u64_to_i64(checksum(blob, n)) != stored) {
            bad = 1;
        } else if ((*cubin = malloc(n)) != NULL) {
            memcpy(*cubin, blob, n);
            *size = n;
            hit = 1;
        }
    } else if (rc != SQLITE_DONE) {
        va_sql_fail(c, rc, "look up a kernel");
    }
    sqlite3_finalize(st);
    if (bad) {
        snprintf(c->errmsg, sizeof c->errmsg, "kernel %s: stored CUBIN fails its checksum; deleted",
                 key->name ? key->name : "?");
        delete_bad_row(c, key, stored);
    }
    return hit;
}

vecattn_status va_cache_put_kernel(va_cache *c, const va_kernel_key *key, const void *cubin, size_t size) {
    if (!cubin || size == 0 || size > (size_t)1 << 30) return VECATTN_E_INVALID_ARG;
    if (va_cache_ready(c) != 0 || !va_cache_writable(c)) return VECATTN_E_CACHE;
    int rc = va_sql_begin(c);
    if (rc != SQLITE_OK) return VECATTN_E_CACHE;
    /* OR IGNORE: the first published CUBIN of a key stays (every one is equally good). */
    sqlite3_stmt *st = va_sql_prepare(c,
        "INSERT OR IGNORE INTO kernels (source_hash, options, arch, nvrtc_id, name, cubin, checksum,"
        " created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)");
    rc = SQLITE_ERROR;
    if (st) {
        bind_key(st, key);
        sqlite3_bind_text(st, 5, key->name ? key->name : "", -1, SQLITE_STATIC);
        sqlite3_bind_blob64(st, 6, cubin, size, SQLITE_STATIC);
        sqlite3_bind_int64(st, 7, va_u64_to_i64(checksum(cubin, size)));
        sqlite3_bind_int64(st, 8, va_now());
        rc = va_sql_run(c, st, "store a kernel");
    }
    if (rc == SQLITE_OK && (st = va_sql_prepare(c, "DELETE FROM claims WHERE " KEY_WHERE))) {
        bind_key(st, key);
        rc = va_sql_run(c, st, "release the claim");
    }
    return va_sql_end(c, rc) == SQLITE_OK ? VECATTN_OK : VECATTN_E_CACHE;
}

vecattn_status va_cache_delete_kernel(va_cache *c, const va_kernel_key *key) {
    if (va_cache_ready(c) != 0 || !va_cache_writable(c)) return VECATTN_E_CACHE;
    int rc = va_sql_begin(c);
    if (rc != SQLITE_OK) return VECATTN_E_CACHE;
    sqlite3_stmt *st = va_sql_prepare(c, "DELETE FROM kernels WHERE " KEY_WHERE);
    rc = SQLITE_ERROR;
    if (st) {
        bind_key(st, key);
        rc = va_sql_run(c, st, "delete a kernel");
    }
    return va_sql_end(c, rc) == SQLITE_OK ? VECATTN_OK : VECATTN_E_CACHE;
}

/* ---- claims --------------------------------------------------------------------------- */

static void host_name(char *buf, size_t n) {
    if (gethostname(buf, n) != 0) snprintf(buf, n, "unknown");
    buf[n - 1] = 0;
}

/* A claim still counts while its lease runs and its process, when on this host, lives. */
static int claim_is_live(sqlite3_stmt *row, const char *host) {
    const char *owner = (const char *)sqlite3_column_text(row, 0);
    long long pid = sqlite3_column_int64(row, 1);
    long long expires = sqlite3_column_int64(row, 2);
    if (expires <= va_now()) return 0;
    if (!owner || strcmp(owner, host) != 0) return 1;
    if (pid == (long long)getpid()) return 0;  /* our own, left by an earlier attempt */
    return !(pid > 0 && kill((pid_t)pid, 0) != 0 && errno == ESRCH);
}

int va_cache_claim_kernel(va_cache *c, const va_kernel_key *key, int lease_s) {
    /* Without a shared file nobody else can compile it: claimed. Errors too: never block. */
    if (va_cache_ready(c) != 0 || c->mode != VA_CACHE_READ_WRITE) return 1;
    char host[256];
    host_name(host, sizeof host);
    if (va_sql_begin(c) != SQLITE_OK) return 1;
    int rc = SQLITE_ERROR, live = 0;
    sqlite3_stmt *st = va_sql_prepare(c, "SELECT host, pid, expires_at FROM claims WHERE " KEY_WHERE);
    if (st) {
        bind_key(st, key);
        rc = sqlite3_step(st);
        if (rc == SQLITE_ROW) live = claim_is_live(st, host);
        rc = rc == SQLITE_ROW || rc == SQLITE_DONE ? SQLITE_OK : va_sql_fail(c, rc, "read a claim");
        sqlite3_finalize(st);
    }
    if (rc == SQLITE_OK && !live &&
        (st = va_sql_prepare(c, "INSERT OR REPLACE INTO claims (source_hash, options, arch, nvrtc_id,"
                                " host, pid, expires_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"))) {
        bind_key(st, key);
        sqlite3_bind_text(st, 5, host, -1, SQLITE_TRANSIENT);
        sqlite3_bind_int64(st, 6, (sqlite3_int64)getpid());
        sqlite3_bind_int64(st, 7, va_now() + (lease_s > 0 ? lease_s : 1));
        rc = va_sql_run(c, st, "write a claim");
    }
    rc = va_sql_end(c, rc);
    return rc != SQLITE_OK || !live;
}

void va_cache_release_claim(va_cache *c, const va_kernel_key *key) {
    if (va_cache_ready(c) != 0 || c->mode != VA_CACHE_READ_WRITE) return;
    if (va_sql_begin(c) != SQLITE_OK) return;
    int rc = SQLITE_ERROR;
    sqlite3_stmt *st = va_sql_prepare(c, "DELETE FROM claims WHERE " KEY_WHERE " AND pid = ?5");
    if (st) {
        bind_key(st, key);
        sqlite3_bind_int64(st, 5, (sqlite3_int64)getpid());
        rc = va_sql_run(c, st, "release a claim");
    }
    va_sql_end(c, rc);
}

/* ---- failed configurations ------------------------------------------------------------ */

vecattn_status va_cache_mark_failed(va_cache *c, uint64_t source_hash, const char *name, const char *why) {
    if (va_cache_ready(c) != 0 || !va_cache_writable(c)) return VECATTN_E_CACHE;
    if (va_sql_begin(c) != SQLITE_OK) return VECATTN_E_CACHE;
    int rc = SQLITE_ERROR;
    sqlite3_stmt *st = va_sql_prepare(c,
        "INSERT OR REPLACE INTO failed (source_hash, name, why, failed_at) VALUES (?1, ?2, ?3, ?4)");
    if (st) {
        sqlite3_bind_int64(st, 1, va_u64_to_i64(source_hash));
        sqlite3_bind_text(st, 2, name ? name : "", -1, SQLITE_STATIC);
        /* A compiler log can be long: the first 4 KiB say what went wrong. */
        sqlite3_bind_text(st, 3, why ? why : "", why && strlen(why) > 4096 ? 4096 : -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 4, va_now());
        rc = va_sql_run(c, st, "record a failed config");
    }
    return va_sql_end(c, rc) == SQLITE_OK ? VECATTN_OK : VECATTN_E_CACHE;
}

int va_cache_is_failed(va_cache *c, uint64_t source_hash) {
    if (va_cache_ready(c) != 0) return 0;
    sqlite3_stmt *st = va_sql_prepare(c, "SELECT 1 FROM failed WHERE source_hash = ?1");
    if (!st) return 0;
    sqlite3_bind_int64(st, 1, va_u64_to_i64(source_hash));
    int rc = sqlite3_step(st);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) va_sql_fail(c, rc, "look up a failed config");
    sqlite3_finalize(st);
    return rc == SQLITE_ROW;
}
