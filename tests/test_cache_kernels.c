/*
** test_cache_kernels.c -- compiled CUBINs in the cache: put/get by the full key, a stale
** NVRTC identity (a miss), a CUBIN whose checksum does not match (a miss, and the row is
** deleted), claims (held by a live process, taken over from a dead one or an expired lease,
** released by the put), failed configs, and the read-only and memory fallbacks of a file
** that cannot be written or read (run as another user when this test runs as root).
*/
#include <errno.h>
#include <signal.h>
#include <string.h>
#include <sys/wait.h>

#include "test_util.h"
#include "cache_util.h"

static va_kernel_key make_key(uint64_t hash, const char *nvrtc) {
    return (va_kernel_key){.source_hash = hash, .options = "-arch=sm_90a -std=c++17", .arch = 90,
                           .nvrtc_id = nvrtc, .name = "attn_test"};
}

static void test_put_get(const char *file) {
    va_cache *c = va_cache_open(file, NULL);
    va_kernel_key key = make_key(0xfedcba9876543210ull, "13.0/libnvrtc.so.13.0.88/1");
    void *blob = fake_cubin(1, 70000), *other = fake_cubin(2, 70000), *got = NULL;
    size_t size = 0;
    CHECK(!va_cache_get_kernel(c, &key, &got, &size), "miss on an empty cache");
    CHECK(va_cache_put_kernel(c, &key, blob, 70000) == VECATTN_OK, "put: %s", va_cache_errmsg(c));
    CHECK(va_cache_get_kernel(c, &key, &got, &size) && size == 70000 && !memcmp(got, blob, size), "hit");
    free(got);
    /* The first published CUBIN of a key stays. */
    CHECK(va_cache_put_kernel(c, &key, other, 70000) == VECATTN_OK, "second put");
    CHECK(va_cache_get_kernel(c, &key, &got, &size) && !memcmp(got, blob, size), "the first CUBIN stays");
    free(got);
    /* Every key column matters. */
    va_kernel_key k2 = key;
    k2.nvrtc_id = "13.0/libnvrtc.so.13.0.48/1";
    CHECK(!va_cache_get_kernel(c, &k2, &got, &size), "a stale NVRTC identity is a miss");
    k2 = key, k2.arch = 80;
    CHECK(!va_cache_get_kernel(c, &k2, &got, &size), "another arch is a miss");
    k2 = key, k2.options = "-arch=sm_90a";
    CHECK(!va_cache_get_kernel(c, &k2, &got, &size), "other options are a miss");
    k2 = key, k2.source_hash ^= 1;
    CHECK(!va_cache_get_kernel(c, &k2, &got, &size), "another hash is a miss");
    CHECK(va_cache_delete_kernel(c, &key) == VECATTN_OK && !va_cache_get_kernel(c, &key, &got, &size), "delete");
    CHECK(va_cache_put_kernel(c, &key, blob, 0) == VECATTN_E_INVALID_ARG, "an empty CUBIN is refused");
    va_cache_close(c);
    free(blob), free(other);
}

/* Flip one byte of the stored blob, keeping its checksum. */
static void flip_blob_byte(const char *file, size_t offset) {
    sqlite3 *db = NULL;
    sqlite3_blob *b = NULL;
    CHECK(sqlite3_open(file, &db) == SQLITE_OK, "open %s", file);
    sqlite3_int64 rowid = -1;
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(db, "SELECT rowid FROM kernels LIMIT 1", -1, &st, NULL) == SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW)
        rowid = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    unsigned char byte = 0;
    int ok = sqlite3_blob_open(db, "main", "kernels", "cubin", rowid, 1, &b) == SQLITE_OK &&
             sqlite3_blob_read(b, &byte, 1, (int)offset) == SQLITE_OK;
    byte ^= 0x5a;
    ok = ok && sqlite3_blob_write(b, &byte, 1, (int)offset) == SQLITE_OK;
    CHECK(ok, "flip a byte of the stored CUBIN: %s", sqlite3_errmsg(db));
    sqlite3_blob_close(b);
    sqlite3_close(db);
}

static void test_checksum(const char *file) {
    va_cache *c = va_cache_open(file, NULL);
    va_kernel_key key = make_key(77, "13.0/x");
    void *blob = fake_cubin(3, 50000), *got = NULL;
    size_t size = 0;
    CHECK(va_cache_put_kernel(c, &key, blob, 50000) == VECATTN_OK, "put");
    flip_blob_byte(file, 31337);
    CHECK(!va_cache_get_kernel(c, &key, &got, &size) && got == NULL, "a CUBIN failing its checksum is a miss");
    CHECK(strstr(va_cache_errmsg(c), "checksum"), "the reason is kept: %s", va_cache_errmsg(c));
    CHECK(peek_int(file, "SELECT count(*) FROM kernels") == 0, "and its row is deleted");
    CHECK(va_cache_put_kernel(c, &key, blob, 50000) == VECATTN_OK && va_cache_get_kernel(c, &key, &got, &size),
          "a new put heals it");
    free(got);
    va_cache_close(c);
    free(blob);
}

/* ---- claims --------------------------------------------------------------------------- */

/* A child claims `key` and holds it until the parent closes `release[1]`. */
static pid_t claim_in_child(const char *file, const va_kernel_key *key, int *release_fd) {
    int ready[2], release[2];
    if (pipe(ready) != 0 || pipe(release) != 0) return -1;
    pid_t pid = fork();
    if (pid == 0) {
        close(ready[0]), close(release[1]);
        va_cache *c = va_cache_open(file, NULL);
        char ok = va_cache_claim_kernel(c, key, 60) ? 'y' : 'n';
        if (write(ready[1], &ok, 1) != 1) _exit(3);
        char byte;
        while (read(release[0], &byte, 1) > 0) continue;
        va_cache_close(c);
        _exit(ok == 'y' ? 0 : 1);
    }
    close(ready[1]), close(release[0]);
    char ok = 'n';
    CHECK(read(ready[0], &ok, 1) == 1 && ok == 'y', "the child claimed the kernel");
    close(ready[0]);
    *release_fd = release[1];
    return pid;
}

static void test_claims(const char *file) {
    va_cache *c = va_cache_open(file, NULL);
    va_kernel_key key = make_key(1234, "13.0/x");
    int release_fd = -1, status = 0;
    pid_t child = claim_in_child(file, &key, &release_fd);
    CHECK(!va_cache_claim_kernel(c, &key, 60), "a live claim of another process holds");
    close(release_fd);
    waitpid(child, &status, 0);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child status %d", status);
    CHECK(va_cache_claim_kernel(c, &key, 60), "the claim of a dead process is taken over");
    CHECK(va_cache_claim_kernel(c, &key, 60), "our own claim is ours again");
    void *blob = fake_cubin(4, 1000);
    CHECK(va_cache_put_kernel(c, &key, blob, 1000) == VECATTN_OK, "put");
    CHECK(peek_int(file, "SELECT count(*) FROM claims") == 0, "the put releases the claim");
    /* Another host: only the lease counts. */
    char sql[512];
    snprintf(sql, sizeof sql,
             "INSERT INTO claims VALUES (%lld, '%s', %d, '%s', 'elsewhere', 1, strftime('%%s','now') + 100)",
             (long long)key.source_hash, key.options, key.arch, key.nvrtc_id);
    CHECK(poke(file, sql) == SQLITE_OK, "a claim from another host");
    CHECK(!va_cache_claim_kernel(c, &key, 60), "a live lease from another host holds");
    CHECK(poke(file, "UPDATE claims SET expires_at = strftime('%s','now') - 1") == SQLITE_OK, "expire it");
    CHECK(va_cache_claim_kernel(c, &key, 60), "an expired lease is taken over");
    va_cache_release_claim(c, &key);
    CHECK(peek_int(file, "SELECT count(*) FROM claims") == 0, "release");
    va_cache_close(c);
    free(blob);
}

static void test_failed(const char *file) {
    va_cache *c = va_cache_open(file, NULL);
    char long_log[10000];
    memset(long_log, 'x', sizeof long_log - 1);
    long_log[sizeof long_log - 1] = 0;
    CHECK(!va_cache_is_failed(c, 99), "not failed yet");
    CHECK(va_cache_mark_failed(c, 99, "attn_bad", long_log) == VECATTN_OK && va_cache_is_failed(c, 99), "failed");
    CHECK(peek_int(file, "SELECT length(why) FROM failed") == 4096, "a long log is cut to 4 KiB");
    CHECK(!va_cache_is_failed(c, 98), "another hash is not failed");
    va_cache_close(c);
}

/* ---- fallbacks ------------------------------------------------------------------------ */

/* As root, file modes do not stop us: drop to `nobody` in a child for these checks. */
static int run_unprivileged(void (*fn)(const char *), const char *arg) {
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        test_failures = 0;  /* the child reports its own */
        if (geteuid() == 0 && (setgid(65534) != 0 || setuid(65534) != 0)) _exit(99);
        fn(arg);
        _exit(test_failures ? 1 : 0);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 98;
}

static void check_read_only(const char *file) {
    const char *warning = NULL;
    va_cache *c = va_cache_open(file, &warning);
    CHECK(c && va_cache_get_mode(c) == VA_CACHE_READ_ONLY, "a file that cannot be written opens read-only");
    CHECK(warning && strstr(warning, "read-only") && strstr(warning, file), "one warning naming the file: %s",
          warning ? warning : "(none)");
    va_kernel_key key = make_key(5, "13.0/x");
    void *got = NULL, *blob = fake_cubin(5, 3000);
    size_t size = 0;
    CHECK(va_cache_get_kernel(c, &key, &got, &size) && size == 3000 && !memcmp(got, blob, 3000), "reads work");
    CHECK(va_cache_put_kernel(c, &key, blob, 3000) == VECATTN_E_CACHE, "writes are refused");
    CHECK(va_cache_claim_kernel(c, &key, 60) == 1, "claims never block a read-only cache");
    char msg[512];
    CHECK(va_cache_import_json_text(c, "{}", 2, "x.json", NULL, msg, sizeof msg) == VECATTN_E_CACHE, "no import");
    free(got), free(blob);
    va_cache_close(c);
}

static void check_memory(const char *file) {
    const char *warning = NULL;
    va_cache *c = va_cache_open(file, &warning);
    CHECK(c && va_cache_get_mode(c) == VA_CACHE_MEMORY, "a file that cannot be read gives memory");
    CHECK(warning && strstr(warning, "in-memory") && strstr(warning, file), "the warning: %s", warning ? warning : "");
    va_kernel_key key = make_key(6, "13.0/x");
    void *got = NULL, *blob = fake_cubin(6, 100);
    size_t size = 0;
    CHECK(va_cache_put_kernel(c, &key, blob, 100) == VECATTN_OK && va_cache_get_kernel(c, &key, &got, &size),
          "the memory cache works");
    free(got), free(blob);
    va_cache_close(c);
}

static void test_fallbacks(const char *dir) {
    char *sub = path_in(dir, "ro"), *file = path_in(sub, "c.db"), *blocked = path_in(sub, "x/c.db");
    chmod(dir, 0755);
    va_cache *c = va_cache_open(file, NULL);
    va_kernel_key key = make_key(5, "13.0/x");
    void *blob = fake_cubin(5, 3000);
    CHECK(va_cache_put_kernel(c, &key, blob, 3000) == VECATTN_OK, "put before making it read-only");
    va_cache_close(c);
    free(blob);
    CHECK(chmod(sub, 0555) == 0 && chmod(file, 0444) == 0, "chmod");
    CHECK(run_unprivileged(check_read_only, file) == 0, "read-only fallback (see the child's messages)");
    CHECK(run_unprivileged(check_memory, blocked) == 0, "a directory that cannot be made gives memory");
    CHECK(chmod(file, 0) == 0, "chmod 0");
    CHECK(run_unprivileged(check_memory, file) == 0, "an unreadable file gives memory");
    chmod(sub, 0755), chmod(file, 0600);
    free(sub), free(file), free(blocked);
}

int main(void) {
    char *dir = scratch_dir("kernels");
    char *file = path_in(dir, "c.db");
    test_put_get(file);
    test_checksum(file);
    test_claims(file);
    test_failed(file);
    test_fallbacks(dir);
    remove_tree(dir);
    free(file), free(dir);
    return test_exit_code("test_cache_kernels");
}
