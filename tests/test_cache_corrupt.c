/*
** test_cache_corrupt.c -- damaged database files: truncated (inside the header, mid-file),
** byte-flipped (the magic, a b-tree page header), random bytes, and damage that only a later
** query finds. Each must give one warning, be renamed to <path>.corrupt-<unix time>, and be
** replaced by a working empty cache: never a crash, never a failure to open.
*/
#include <dirent.h>
#include <string.h>

#include "test_util.h"
#include "cache_util.h"

/* A good cache with enough rows to span many pages (`blob_bytes` per CUBIN); its bytes are
** returned. */
static unsigned char *good_file(const char *file, size_t blob_bytes, size_t *size) {
    remove(file);
    va_cache *c = va_cache_open(file, NULL);
    for (unsigned i = 0; i < 40; ++i) {
        va_kernel_key key = {.source_hash = 1000 + i, .options = "-arch=sm_80", .arch = 80, .nvrtc_id = "13.0/x",
                             .name = "k"};
        void *blob = fake_cubin(i, blob_bytes + 100 * i);
        CHECK(va_cache_put_kernel(c, &key, blob, blob_bytes + 100 * i) == VECATTN_OK, "put %u", i);
        free(blob);
    }
    va_tune_key k;
    va_tune_value v;
    for (int seq = 12; seq <= 17; ++seq) {
        sample_entry(&k, &v, 90, 132, "H100", VA_STAGE_SELECTION, seq, -1, 1.0);
        CHECK(va_cache_put_tuned(c, &k, &v) == VECATTN_OK, "put tuned");
    }
    va_cache_close(c);  /* the last close checkpoints the WAL into the file */
    long long n = file_bytes(file);
    unsigned char *bytes = malloc((size_t)n);
    FILE *f = fopen(file, "rb");
    CHECK(f && fread(bytes, 1, (size_t)n, f) == (size_t)n, "read the good file");
    if (f) fclose(f);
    *size = (size_t)n;
    return bytes;
}

static int count_corrupt_copies(const char *dir) {
    DIR *d = opendir(dir);
    int n = 0;
    struct dirent *e;
    while (d && (e = readdir(d)) != NULL)
        n += strstr(e->d_name, ".corrupt-") && !strstr(e->d_name, "-wal") && !strstr(e->d_name, "-shm") &&
             !strstr(e->d_name, "-journal");
    if (d) closedir(d);
    return n;
}

/* Open a damaged file: one warning, moved aside, a fresh working cache; then no warning. */
static void expect_recovered(const char *dir, const char *file, const char *what) {
    int before = count_corrupt_copies(dir);
    const char *warning = NULL;
    va_cache *c = va_cache_open(file, &warning);
    CHECK(c && va_cache_get_mode(c) == VA_CACHE_READ_WRITE, "%s: read-write after recovery", what);
    CHECK(warning && strstr(warning, "damaged") && strstr(warning, ".corrupt-"), "%s: warning \"%s\"", what,
          warning ? warning : "(none)");
    CHECK(count_corrupt_copies(dir) == before + 1, "%s: the damaged file was moved aside", what);
    va_kernel_key key = {.source_hash = 1, .options = "", .arch = 80, .nvrtc_id = "x", .name = "k"};
    void *blob = fake_cubin(9, 500), *got = NULL;
    size_t size = 0;
    CHECK(c && va_cache_put_kernel(c, &key, blob, 500) == VECATTN_OK && va_cache_get_kernel(c, &key, &got, &size),
          "%s: the new cache works", what);
    CHECK(c && va_cache_verify(c, NULL, NULL) == 0, "%s: the new cache verifies", what);
    free(blob), free(got);
    va_cache_close(c);
    c = va_cache_open(file, &warning);
    CHECK(c && !warning, "%s: no warning the second time", what);
    va_cache_close(c);
}

static void write_variant(const char *file, const unsigned char *bytes, size_t size) {
    char side[4200];
    snprintf(side, sizeof side, "%s-wal", file), remove(side);
    snprintf(side, sizeof side, "%s-shm", file), remove(side);
    CHECK(write_file(file, bytes, size) == 0, "write %s", file);
}

static void test_at_open(const char *dir, const char *file) {
    size_t size = 0;
    unsigned char *good = good_file(file, 3000, &size);
    size_t page = (size_t)good[16] << 8 | good[17];
    if (page == 1) page = 65536;
    CHECK(size > 8 * page, "the good file has %zu bytes in pages of %zu", size, page);
    unsigned char *bad = malloc(size);

    write_variant(file, good, 60);
    expect_recovered(dir, file, "truncated inside the header");
    write_variant(file, good, size / 2);
    expect_recovered(dir, file, "truncated to half");
    memcpy(bad, good, size);
    bad[0] ^= 0xff, bad[5] ^= 0x20;
    write_variant(file, bad, size);
    expect_recovered(dir, file, "magic flipped");
    memcpy(bad, good, size);
    bad[page] = 0x77;  /* page 2: not a b-tree page type */
    write_variant(file, bad, size);
    expect_recovered(dir, file, "b-tree page type flipped");
    for (size_t i = 0; i < size; ++i) bad[i] = (unsigned char)(i * 2654435761u >> 13);
    write_variant(file, bad, size);
    expect_recovered(dir, file, "random bytes");
    free(good), free(bad);
}

/* Damage after open, seen by a lookup: that call misses, the next recovers with a warning. */
static void test_later(const char *dir, const char *file) {
    setenv("VECATTN_CACHE_WAL", "0", 1);  /* the change counter in the header invalidates caches */
    size_t size = 0;
    unsigned char *good = good_file(file, 3000, &size);
    size_t page = (size_t)good[16] << 8 | good[17];
    va_cache *c = va_cache_open(file, NULL);
    /* Another writer scribbles over every page but the first and bumps the change counter. */
    unsigned char *bad = malloc(size);
    memcpy(bad, good, size);
    for (size_t i = page; i < size; ++i) bad[i] = (unsigned char)(i * 40503u >> 5);
    bad[27] ^= 1;
    FILE *f = fopen(file, "r+b");
    CHECK(f && fwrite(bad, 1, size, f) == size, "overwrite in place");
    if (f) fclose(f);
    int before = count_corrupt_copies(dir);
    va_kernel_key key = {.source_hash = 1005, .options = "-arch=sm_80", .arch = 80, .nvrtc_id = "13.0/x"};
    void *got = NULL;
    size_t got_size = 0;
    CHECK(!va_cache_get_kernel(c, &key, &got, &got_size), "a damaged file is a miss");
    CHECK(va_cache_take_warning(c) == NULL, "no warning before the recovery");
    va_tune_key k;
    va_tune_value v;
    sample_entry(&k, &v, 90, 132, "H100", VA_STAGE_SELECTION, 15, -1, 1.0);
    CHECK(va_cache_put_tuned(c, &k, &v) == VECATTN_OK, "the next call recovers and works");
    const char *w = va_cache_take_warning(c);
    CHECK(w && strstr(w, "damaged"), "one warning: %s", w ? w : "(none)");
    CHECK(va_cache_take_warning(c) == NULL, "only once");
    CHECK(count_corrupt_copies(dir) == before + 1, "moved aside");
    va_cache_close(c);
    unsetenv("VECATTN_CACHE_WAL");
    free(good), free(bad);
}

/* Above 16 MiB the open checks only the small tables and the length: a truncated large file
** is still found at open. */
static void test_large(const char *dir, const char *file) {
    size_t size = 0;
    unsigned char *good = good_file(file, 500000, &size);
    CHECK(size > (16u << 20), "the large file has %zu bytes", size);
    write_variant(file, good, size * 6 / 10);
    expect_recovered(dir, file, "a large file truncated");
    free(good);
}

int main(void) {
    char *dir = scratch_dir("corrupt");
    char *file = path_in(dir, "cache.db");
    test_at_open(dir, file);
    test_later(dir, file);
    test_large(dir, file);
    remove_tree(dir);
    free(file), free(dir);
    return test_exit_code("test_cache_corrupt");
}
