/*
** store.c -- opening the cache: where it lives, read-write -> read-only -> memory, WAL or
** not, and what happens to a damaged file.
**
** The order of the fallbacks follows what users of other kernel caches ran into: a read-only
** $HOME on clusters (CuPy #2296, FlashInfer PR #973) must not stop a program, so a file that
** cannot be written is still read, and a file that cannot be read gives an in-memory cache.
** SQLite's WAL needs shared memory between the processes, which network file systems do not
** give (MIOpen #2214), so WAL is used only where statfs says the file system is local. A
** truncated cache after a crash became a crash loop elsewhere (Triton's JSON cache); here a
** damaged file is renamed to <path>.corrupt-<unix time> and a fresh one is created.
*/
#define _GNU_SOURCE /* statfs */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#ifdef __linux__
#include <sys/vfs.h>
#endif

#include "cache/cache_internal.h"

typedef enum open_result { OPEN_OK, OPEN_CORRUPT, OPEN_FAILED } open_result;

/* ---- location ------------------------------------------------------------------------- */

static char *join_path(const char *dir, const char *tail) {
    size_t n = strlen(dir) + strlen(tail) + 2;
    char *p = malloc(n);
    if (p) snprintf(p, n, "%s/%s", dir, tail);
    return p;
}

char *va_cache_default_path(void) {
    const char *env = getenv("VECATTN_CACHE");
    if (env && *env) return strdup(env);
    /* The XDG spec says a relative $XDG_CACHE_HOME is invalid and must be ignored. */
    const char *xdg = getenv("XDG_CACHE_HOME");
    if (xdg && xdg[0] == '/') return join_path(xdg, "vecattn/cache.db");
    const char *home = getenv("HOME");
    if (!home || !*home) {
        struct passwd *pw = getpwuid(getuid());
        home = pw ? pw->pw_dir : NULL;
    }
    if (!home || !*home) return NULL;
    return join_path(home, ".cache/vecattn/cache.db");
}

/* mkdir -p with mode 0700 for the directories it creates (existing ones keep theirs). */
static int make_dirs(const char *dir) {
    char buf[PATH_MAX];
    if (snprintf(buf, sizeof buf, "%s", dir) >= (int)sizeof buf) return errno = ENAMETOOLONG, -1;
    for (char *p = buf + 1; *p; ++p) {
        if (*p != '/') continue;
        *p = 0;
        if (mkdir(buf, 0700) != 0 && errno != EEXIST) return -1;
        *p = '/';
    }
    if (mkdir(buf, 0700) != 0 && errno != EEXIST) return -1;
    struct stat st;
    if (stat(buf, &st) != 0) return -1;
    return S_ISDIR(st.st_mode) ? 0 : (errno = ENOTDIR, -1);
}

static void dir_of(const char *path, char *dir, size_t n) {
    const char *slash = strrchr(path, '/');
    if (!slash) snprintf(dir, n, ".");
    else if (slash == path) snprintf(dir, n, "/");
    else snprintf(dir, n, "%.*s", (int)(slash - path), path);
}

/* Create the directory (0700) and the file (0600) when missing. 1: the file can be written;
** 0: it exists but can only be read; -1: it cannot be used at all. `why` says what failed. */
static int prepare_file(const char *path, char *why, size_t n) {
    char dir[PATH_MAX];
    dir_of(path, dir, sizeof dir);
    if (make_dirs(dir) != 0) {
        snprintf(why, n, "cannot create directory %.500s: %s", dir, strerror(errno));
        return access(path, R_OK) == 0 ? 0 : -1;
    }
    /* Created here rather than by SQLite, whose default mode is 0644. */
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) {
        snprintf(why, n, "%s", strerror(errno));
        return access(path, R_OK) == 0 ? 0 : -1;
    }
    close(fd);
    /* The rollback journal and the WAL are new files beside the database. */
    if (access(dir, W_OK) != 0) {
        snprintf(why, n, "directory %.500s is not writable", dir);
        return 0;
    }
    return 1;
}

/* ---- journal mode ----------------------------------------------------------------------- */

/* 1 when `dir` is on a file system whose locks or shared memory do not span hosts reliably. */
static int on_network_fs(const char *dir) {
#ifdef __linux__
    static const unsigned long network_types[] = {
        0x6969,     /* NFS */          0x517b,     /* SMB */         0xff534d42, /* CIFS */
        0xfe534d42, /* SMB2 */         0x65735546, /* FUSE (sshfs, gcsfuse, ...) */
        0x00c36400, /* Ceph */         0x5346414f, /* AFS */         0x6b414653, /* OpenAFS */
        0x73757245, /* Coda */         0x0bd00bd0, /* Lustre */      0x47504653, /* GPFS */
        0x01021997, /* 9P */           0x19830326, /* BeeGFS */      0xaad7aaea, /* PanFS */
        0x01161970, /* GFS2 */         0x7461636f, /* OCFS2 */       0x564c,     /* NCP */
    };
    struct statfs fs;
    if (statfs(dir, &fs) != 0) return 1;  /* unknown: the safe choice */
    unsigned long type = (unsigned long)fs.f_type & 0xffffffffUL;
    for (size_t i = 0; i < sizeof network_types / sizeof network_types[0]; ++i)
        if (type == network_types[i]) return 1;
#else
    (void)dir;
#endif
    return 0;
}

static int want_wal(const char *path) {
    const char *env = getenv("VECATTN_CACHE_WAL");
    if (env && (!strcmp(env, "0") || !strcmp(env, "1"))) return env[0] == '1';
    char dir[PATH_MAX];
    dir_of(path, dir, sizeof dir);
    return !on_network_fs(dir);
}

/* The journal mode the file has now ("wal", "delete", ...) into `mode`. */
static int journal_mode(va_cache *c, char *mode, size_t n) {
    sqlite3_stmt *st = va_sql_prepare(c, "PRAGMA journal_mode");
    if (!st) return sqlite3_errcode(c->db);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) snprintf(mode, n, "%s", (const char *)sqlite3_column_text(st, 0));
    sqlite3_finalize(st);
    return rc == SQLITE_ROW ? SQLITE_OK : va_sql_fail(c, rc, "PRAGMA journal_mode");
}

/* WAL lets readers run while a writer commits; the rollback journal works everywhere. The
** mode is persistent in the file, so it is changed only when it differs. */
static int set_journal(va_cache *c) {
    const char *want = want_wal(c->path) ? "wal" : "delete";
    char mode[16] = "";
    int rc = journal_mode(c, mode, sizeof mode);
    if (rc == SQLITE_OK && sqlite3_stricmp(mode, want) != 0) {
        char sql[64];
        snprintf(sql, sizeof sql, "PRAGMA journal_mode=%s", want);
        rc = va_sql_exec(c, sql);
        /* Another process may hold the file: keep its mode, the cache works in both. */
        if (rc == SQLITE_BUSY || rc == SQLITE_LOCKED) rc = SQLITE_OK;
        if (rc == SQLITE_OK) rc = journal_mode(c, mode, sizeof mode);
    }
    /* In WAL mode NORMAL cannot corrupt the file, it can only lose the last commits in a
    ** power cut: right for a cache. The setting is per connection. */
    if (rc == SQLITE_OK && !sqlite3_stricmp(mode, "wal")) rc = va_sql_exec(c, "PRAGMA synchronous=NORMAL");
    return rc;
}

/* ---- opening ---------------------------------------------------------------------------- */

static int is_corrupt(int rc) {
    rc &= 0xff;
    return rc == SQLITE_CORRUPT || rc == SQLITE_NOTADB;
}

/* Above this size only the small tables get a quick_check at open: the full check reads every
** page, 13-16 ms for 60 MB of CUBINs (measured), at every process start. A truncated file is
** still found at open (SQLite compares the header's page count with the file's length on the
** first read), the CUBINs carry their own checksums, and SQLITE_CORRUPT from any later query
** triggers the recovery. */
enum { FULL_CHECK_MAX_BYTES = 16 << 20 };

/* Run one quick_check statement: SQLITE_OK when it says "ok". */
static int run_quick_check(va_cache *c, const char *sql) {
    sqlite3_stmt *st = va_sql_prepare(c, sql);
    if (!st) return sqlite3_errcode(c->db);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        const char *text = (const char *)sqlite3_column_text(st, 0);
        if (text && strcmp(text, "ok") != 0) {
            snprintf(c->errmsg, sizeof c->errmsg, "quick_check: %.900s", text);
            rc = SQLITE_CORRUPT;
        } else {
            rc = SQLITE_OK;
        }
    } else {
        rc = va_sql_fail(c, rc, sql);
    }
    sqlite3_finalize(st);
    return rc;
}

/* Find a truncated or overwritten file at open rather than in the middle of a lookup. */
static int quick_check(va_cache *c) {
    struct stat st;
    long long size = stat(c->path, &st) == 0 ? (long long)st.st_size : 0;
    if (size <= FULL_CHECK_MAX_BYTES) return run_quick_check(c, "PRAGMA quick_check");
    static const char *const small_tables[] = {"sqlite_schema", "tuned", "failed", "claims"};
    int rc = SQLITE_OK;
    for (size_t i = 0; i < 4 && rc == SQLITE_OK; ++i) {
        char sql[128];
        snprintf(sql, sizeof sql, "SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = '%s'", small_tables[i]);
        if (i > 0 && va_sql_int(c, sql, 0) != 1) continue;  /* not ours (yet): the migration decides */
        snprintf(sql, sizeof sql, "PRAGMA quick_check(%s)", small_tables[i]);
        rc = run_quick_check(c, sql);
    }
    return rc;
}

static void close_db(va_cache *c) {
    if (c->db) sqlite3_close_v2(c->db);
    c->db = NULL;
}

/* "file:<path>?immutable=1" with the URI's special characters escaped. */
static char *immutable_uri(const char *path) {
    size_t n = strlen(path);
    char *uri = malloc(3 * n + 32), *o = uri;
    if (!uri) return NULL;
    o += sprintf(o, "file:");
    for (const char *p = path; *p; ++p)
        o += *p == '%' || *p == '?' || *p == '#' ? sprintf(o, "%%%02X", (unsigned char)*p) : (*o = *p, 1);
    sprintf(o, "?immutable=1");
    return uri;
}

/* readonly: 0 read-write, 1 read-only, 2 immutable. The last one is for a WAL file in a
** directory we cannot write: SQLite cannot read it otherwise (it needs the -shm file), and
** whoever could change it is not us. */
static open_result try_open(va_cache *c, int readonly, char *why, size_t n) {
    int flags = SQLITE_OPEN_FULLMUTEX | (readonly == 2 ? SQLITE_OPEN_URI : 0) |
                (readonly ? SQLITE_OPEN_READONLY : SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE);
    c->errmsg[0] = 0;
    char *uri = readonly == 2 ? immutable_uri(c->path) : NULL;
    int rc = sqlite3_open_v2(uri ? uri : c->path, &c->db, flags, NULL);
    free(uri);
    if (rc != SQLITE_OK) {
        va_sql_fail(c, rc, "open");
    } else {
        sqlite3_busy_timeout(c->db, VA_CACHE_BUSY_TIMEOUT_MS);
        rc = quick_check(c);
    }
    if (rc == SQLITE_OK && !readonly && sqlite3_db_readonly(c->db, "main") == 1) {
        snprintf(c->errmsg, sizeof c->errmsg, "the file is read-only");
        rc = SQLITE_READONLY;
    }
    if (rc == SQLITE_OK && !readonly) rc = set_journal(c);
    if (rc == SQLITE_OK) rc = va_schema_migrate(c);
    if (rc == SQLITE_OK) rc = va_schema_attach_shipped(c);
    if (rc == SQLITE_OK) return OPEN_OK;
    snprintf(why, n, "%.700s", c->errmsg[0] ? c->errmsg : sqlite3_errstr(rc));
    close_db(c);
    c->damaged = 0;
    return is_corrupt(rc) ? OPEN_CORRUPT : OPEN_FAILED;
}

static int open_memory(va_cache *c) {
    close_db(c);
    free(c->path);
    c->path = strdup(":memory:");
    c->mode = VA_CACHE_MEMORY;
    int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX;
    if (!c->path || sqlite3_open_v2(":memory:", &c->db, flags, NULL) != SQLITE_OK) return -1;
    if (va_schema_migrate(c) != SQLITE_OK || va_schema_attach_shipped(c) != SQLITE_OK) return -1;
    return 0;
}

static long long file_id(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 ? (long long)st.st_ino ^ ((long long)st.st_dev << 32) : -1;
}

/* Rename the damaged file and its journals to <path>.corrupt-<unix time>[-n]. A stale -wal
** left beside a new file would be replayed into it, so the journals move too. */
static int move_aside(const char *path, char *dest, size_t n) {
    long long t = va_now();
    for (int i = 0; i < 100; ++i) {
        if (i == 0) snprintf(dest, n, "%s.corrupt-%lld", path, t);
        else snprintf(dest, n, "%s.corrupt-%lld-%d", path, t, i);
        if (access(dest, F_OK) == 0) continue;
        if (rename(path, dest) != 0) return -1;
        static const char *const suffixes[] = {"-wal", "-shm", "-journal"};
        for (size_t k = 0; k < 3; ++k) {
            char from[PATH_MAX + 16], to[PATH_MAX + 32];
            snprintf(from, sizeof from, "%s%s", path, suffixes[k]);
            snprintf(to, sizeof to, "%s%s", dest, suffixes[k]);
            if (access(from, F_OK) == 0 && rename(from, to) != 0) unlink(from);
        }
        return 0;
    }
    return errno = EEXIST, -1;
}

/* Read-write, recovering a damaged file once. 1 opened, 0 not (why says why). */
static int open_read_write(va_cache *c, char *why, size_t n) {
    long long id = file_id(c->path);
    open_result r = try_open(c, 0, why, n);
    if (r == OPEN_CORRUPT) {
        char dest[PATH_MAX + 64] = "", damage[512];
        snprintf(damage, sizeof damage, "%s", why);
        /* Another process may have replaced the file since: then only reopen. */
        int moved = 0;
        if (file_id(c->path) == id) {
            if (move_aside(c->path, dest, sizeof dest) != 0) {
                snprintf(why, n, "damaged (%s) and cannot be moved aside: %s", damage, strerror(errno));
                return 0;
            }
            moved = 1;
        }
        int fd = open(c->path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
        if (fd >= 0) close(fd);
        r = try_open(c, 0, why, n);
        if (r == OPEN_OK && moved)
            snprintf(c->warning, sizeof c->warning, "cache %s was damaged (%.300s); moved to %.400s and recreated",
                     c->path, damage, dest);
    }
    if (r != OPEN_OK) return 0;
    c->mode = VA_CACHE_READ_WRITE;
    return 1;
}

/* The fallbacks, in order; sets c->mode and, for anything but a clean read-write open,
** c->warning. */
static int open_file(va_cache *c) {
    char why[768] = "";
    int access_level = prepare_file(c->path, why, sizeof why);
    if (access_level == 1 && open_read_write(c, why, sizeof why)) return 0;
    if (access_level >= 0 && !c->warning[0]) {
        char why_ro[768] = "";
        if (try_open(c, 1, why_ro, sizeof why_ro) == OPEN_OK || try_open(c, 2, why_ro, sizeof why_ro) == OPEN_OK) {
            c->mode = VA_CACHE_READ_ONLY;
            snprintf(c->warning, sizeof c->warning,
                     "cache %s is not writable (%s); using it read-only", c->path, why);
            return 0;
        }
        snprintf(why, sizeof why, "%s", why_ro);
    }
    char *requested = c->path;
    c->path = NULL;
    snprintf(c->warning, sizeof c->warning,
             "cache %s cannot be used (%s); using an in-memory cache, compiled kernels will not be kept",
             requested, why);
    free(requested);
    return open_memory(c);
}

va_cache *va_cache_open(const char *path, const char **warning) {
    if (warning) *warning = NULL;
    va_cache *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    c->path = path && *path ? strdup(path) : va_cache_default_path();
    int rc;
    if (!c->path) {
        snprintf(c->warning, sizeof c->warning,
                 "no location for the cache ($VECATTN_CACHE and $HOME are unset); using an in-memory cache");
        rc = open_memory(c);
    } else if (!strcmp(c->path, ":memory:")) {
        rc = open_memory(c);
    } else {
        rc = open_file(c);
    }
    if (rc != 0) {
        va_cache_close(c);
        return NULL;
    }
    if (c->warning[0]) {
        if (warning) *warning = c->warning;
        else c->warning_pending = 1;
    }
    return c;
}

void va_cache_close(va_cache *cache) {
    if (!cache) return;
    close_db(cache);
    free(cache->path);
    free(cache);
}

const char *va_cache_path(const va_cache *cache) { return cache && cache->path ? cache->path : ":memory:"; }

va_cache_mode va_cache_get_mode(const va_cache *cache) { return cache ? cache->mode : VA_CACHE_MEMORY; }

const char *va_cache_errmsg(const va_cache *cache) {
    return cache && cache->errmsg[0] ? cache->errmsg : "no error";
}

const char *va_cache_take_warning(va_cache *cache) {
    if (!cache || !cache->warning_pending) return NULL;
    cache->warning_pending = 0;
    return cache->warning;
}

int va_cache_writable(const va_cache *cache) { return cache->mode != VA_CACHE_READ_ONLY; }

/* A query found the file damaged after open: the same recovery as at open, now. */
int va_cache_ready(va_cache *cache) {
    if (!cache || !cache->db) return -1;
    if (!cache->damaged) return 0;
    cache->damaged = 0;
    close_db(cache);
    cache->warning[0] = 0;
    int rc;
    if (cache->mode == VA_CACHE_READ_WRITE) {
        rc = open_file(cache);
        if (!cache->warning[0])
            snprintf(cache->warning, sizeof cache->warning,
                     "cache %s was damaged; reopened", cache->path);
    } else {
        snprintf(cache->warning, sizeof cache->warning,
                 "cache %s is damaged and read-only; using an in-memory cache", cache->path);
        rc = open_memory(cache);
    }
    cache->warning_pending = 1;
    return rc == 0 && cache->db ? 0 : -1;
}
