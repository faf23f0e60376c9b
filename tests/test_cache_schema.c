/*
** test_cache_schema.c -- where the cache lives, how it is created, and schema versions:
** path resolution ($VECATTN_CACHE, $XDG_CACHE_HOME, ~/.cache), modes 0700/0600, a new file
** at the current version, a forward migration from version 1 that keeps the rows, a file
** of a newer version left untouched (memory fallback), a foreign SQLite file, and the
** journal mode (WAL on a local file system, the rollback journal when forced).
*/
#include <string.h>

#include "test_util.h"
#include "cache_util.h"

static void test_default_paths(const char *dir) {
    char *explicit_path = path_in(dir, "explicit.db"), *xdg = path_in(dir, "xdg"), *home = path_in(dir, "home");
    char want[4096];
    setenv("VECATTN_CACHE", explicit_path, 1);
    char *p = va_cache_default_path();
    CHECK(p && !strcmp(p, explicit_path), "VECATTN_CACHE: got %s", p ? p : "(null)");
    free(p);
    unsetenv("VECATTN_CACHE");
    setenv("XDG_CACHE_HOME", xdg, 1);
    setenv("HOME", home, 1);
    p = va_cache_default_path();
    snprintf(want, sizeof want, "%s/vecattn/cache.db", xdg);
    CHECK(p && !strcmp(p, want), "XDG_CACHE_HOME: got %s, want %s", p ? p : "(null)", want);
    free(p);
    setenv("XDG_CACHE_HOME", "relative/dir", 1);  /* invalid per the XDG spec: ignored */
    p = va_cache_default_path();
    snprintf(want, sizeof want, "%s/.cache/vecattn/cache.db", home);
    CHECK(p && !strcmp(p, want), "HOME: got %s, want %s", p ? p : "(null)", want);
    free(p);
    free(explicit_path), free(xdg), free(home);
}

static void test_create(const char *dir) {
    char *xdg = path_in(dir, "xdg2");
    setenv("XDG_CACHE_HOME", xdg, 1);
    const char *warning = "unset";
    va_cache *c = va_cache_open(NULL, &warning);
    CHECK(c && va_cache_get_mode(c) == VA_CACHE_READ_WRITE, "a new default cache opens read-write");
    CHECK(warning == NULL, "no warning for a new cache: %s", warning ? warning : "");
    char file[4200], sub[4096];
    snprintf(sub, sizeof sub, "%s/vecattn", xdg);
    snprintf(file, sizeof file, "%s/cache.db", sub);
    CHECK(c && !strcmp(va_cache_path(c), file), "path %s, want %s", c ? va_cache_path(c) : "", file);
    struct stat st;
    CHECK(stat(sub, &st) == 0 && (st.st_mode & 0777) == 0700, "directory mode %o, want 700", st.st_mode & 0777);
    CHECK(stat(file, &st) == 0 && (st.st_mode & 0777) == 0600, "file mode %o, want 600", st.st_mode & 0777);
    va_cache_close(c);
    CHECK(peek_int(file, "PRAGMA user_version") == va_cache_schema_version(), "user_version %lld",
          peek_int(file, "PRAGMA user_version"));
    static const char *const tables[] = {"tuned", "kernels", "failed", "claims"};
    for (int i = 0; i < 4; ++i) {
        char sql[128];
        snprintf(sql, sizeof sql, "SELECT count(*) FROM sqlite_master WHERE type='table' AND name='%s'", tables[i]);
        CHECK(peek_int(file, sql) == 1, "table %s exists", tables[i]);
    }
    c = va_cache_open(":memory:", &warning);
    CHECK(c && va_cache_get_mode(c) == VA_CACHE_MEMORY && !warning, "\":memory:\" gives a memory cache, silently");
    CHECK(c && !strcmp(va_cache_path(c), ":memory:"), "memory path");
    va_cache_close(c);
    unsetenv("XDG_CACHE_HOME");
    free(xdg);
}

/* A file made by the version-1 step, with a row, is upgraded in place. */
static void test_migration(const char *dir) {
    char *file = path_in(dir, "v1.db");
    char sql[4096];
    snprintf(sql, sizeof sql,
             "%s PRAGMA user_version=1;"
             "INSERT INTO tuned VALUES (90, 132, 'H100', 'bf16', 128, 64, 16, 16, 1, 'selection', 15, -1,"
             " 'select_rows=16', 1.25, 50.0, 1700000000, '0.1.0', 13000, '13.0/x');",
             va_cache_migration_sql(1));
    CHECK(poke(file, sql) == SQLITE_OK, "build a version-1 file");
    CHECK(peek_int(file, "SELECT count(*) FROM sqlite_master WHERE name='failed'") == 0, "v1 has no failed table");
    const char *warning = NULL;
    va_cache *c = va_cache_open(file, &warning);
    CHECK(c && va_cache_get_mode(c) == VA_CACHE_READ_WRITE && !warning, "v1 file opens read-write: %s",
          warning ? warning : "");
    va_tune_key k;
    va_tune_value v;
    sample_entry(&k, &v, 90, 132, "H100", VA_STAGE_SELECTION, 15, -1, 9.0);
    va_tune_value got;
    CHECK(va_cache_lookup_tuned(c, &k, &got) == VA_TUNE_EXACT && got.time_ms == 1.25, "the v1 row survives");
    CHECK(va_cache_mark_failed(c, 42, "m", "why") == VECATTN_OK && va_cache_is_failed(c, 42), "v2 table works");
    va_cache_close(c);
    CHECK(peek_int(file, "PRAGMA user_version") == va_cache_schema_version(), "migrated to the current version");
    free(file);
}

/* A newer vecattn's file is never changed: memory fallback with a warning. */
static void test_newer_version(const char *dir) {
    char *file = path_in(dir, "v99.db");
    CHECK(poke(file, "CREATE TABLE x(a); PRAGMA user_version=99;") == SQLITE_OK, "build a v99 file");
    const char *warning = NULL;
    va_cache *c = va_cache_open(file, &warning);
    CHECK(c && va_cache_get_mode(c) == VA_CACHE_MEMORY, "a newer schema falls back to memory");
    CHECK(warning && strstr(warning, "newer"), "warning names the reason: %s", warning ? warning : "(none)");
    va_cache_close(c);
    CHECK(peek_int(file, "PRAGMA user_version") == 99, "the newer file is untouched");
    CHECK(peek_int(file, "SELECT count(*) FROM sqlite_master") == 1, "no tables added");
    free(file);
}

/* Someone else's SQLite file with a table called "tuned": not ours to change. */
static void test_foreign_file(const char *dir) {
    char *file = path_in(dir, "foreign.db");
    CHECK(poke(file, "CREATE TABLE tuned(x); INSERT INTO tuned VALUES (1);") == SQLITE_OK, "build a foreign file");
    const char *warning = NULL;
    va_cache *c = va_cache_open(file, &warning);
    CHECK(c && va_cache_get_mode(c) == VA_CACHE_MEMORY && warning, "a foreign file gives memory + a warning");
    va_cache_close(c);
    CHECK(peek_int(file, "SELECT count(*) FROM tuned") == 1 && peek_int(file, "PRAGMA user_version") == 0,
          "the foreign file is untouched");
    free(file);
}

static void test_journal(const char *dir) {
    char *file = path_in(dir, "journal.db");
    setenv("VECATTN_CACHE_WAL", "0", 1);
    va_cache *c = va_cache_open(file, NULL);
    va_cache_stats s;
    CHECK(c && va_cache_get_stats(c, &s) == VECATTN_OK && !strcmp(s.journal_mode, "delete"),
          "VECATTN_CACHE_WAL=0 gives the rollback journal");
    va_cache_close(c);
    setenv("VECATTN_CACHE_WAL", "1", 1);
    c = va_cache_open(file, NULL);
    CHECK(c && va_cache_get_stats(c, &s) == VECATTN_OK && !strcmp(s.journal_mode, "wal"), "VECATTN_CACHE_WAL=1: wal");
    CHECK(s.schema_version == va_cache_schema_version() && s.tuned == 0 && s.kernels == 0, "stats of a new file");
    va_cache_close(c);
    unsetenv("VECATTN_CACHE_WAL");
    free(file);
}

int main(void) {
    char *dir = scratch_dir("schema");
    test_default_paths(dir);
    test_create(dir);
    test_migration(dir);
    test_newer_version(dir);
    test_foreign_file(dir);
    test_journal(dir);
    remove_tree(dir);
    free(dir);
    return test_exit_code("test_cache_schema");
}
