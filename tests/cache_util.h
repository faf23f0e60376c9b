/*
** cache_util.h -- what the cache tests share: a scratch directory, sample tuned entries,
** raw SQLite peeks at a file (independent of the code under test), and files.
**
** Include after test_util.h. Every helper is static: each test program is one file.
*/
#ifndef VECATTN_CACHE_UTIL_H
#define VECATTN_CACHE_UTIL_H

#include <dirent.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cache/cache.h"
#include "codegen/codegen.h"

/* A fresh directory under $TMPDIR (or /tmp); the caller frees the name. */
static inline char *scratch_dir(const char *tag) {
    const char *tmp = getenv("TMPDIR");
    char *dir = malloc(4096);
    snprintf(dir, 4096, "%s/vecattn-%s-XXXXXX", tmp && *tmp ? tmp : "/tmp", tag);
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        exit(2);
    }
    return dir;
}

/* rm -r: the scratch directories hold files and at most one level of directories. */
static inline void remove_tree(const char *dir) {
    DIR *d = opendir(dir);
    struct dirent *e;
    while (d && (e = readdir(d)) != NULL) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        char path[4400];
        snprintf(path, sizeof path, "%.4000s/%s", dir, e->d_name);
        struct stat st;
        if (lstat(path, &st) == 0 && S_ISDIR(st.st_mode)) remove_tree(path);
        else remove(path);
    }
    if (d) closedir(d);
    rmdir(dir);
}

static inline char *path_in(const char *dir, const char *name) {
    char *p = malloc(4096);
    snprintf(p, 4096, "%s/%s", dir, name);
    return p;
}

/* The default tiles of a stage, as text: stays right when codegen/ adds tile parameters. */
static inline void default_tiles(va_stage stage, int cc, int head_dim, char *buf, size_t n) {
    va_kernel_spec s;
    if (stage == VA_STAGE_SELECTION) va_spec_default_select(&s, cc, VECATTN_BF16, head_dim, 1, 64, 16, 16);
    else va_spec_default_attention(&s, cc, VECATTN_BF16, head_dim, 1, 64);
    va_spec_tiles_format(&s, buf, n);
}

/* A valid entry: bf16, the method's blocking, causal, on the given device and buckets. */
static inline void sample_entry(va_tune_key *k, va_tune_value *v, int cc, int sms, const char *name, va_stage stage,
                         int seq_bucket, int sparsity_bucket, double time_ms) {
    memset(k, 0, sizeof *k);
    memset(v, 0, sizeof *v);
    k->device.cc = cc;
    k->device.sm_count = sms;
    snprintf(k->device.name, sizeof k->device.name, "%s", name);
    k->dtype = VECATTN_BF16;
    k->head_dim = 128;
    k->pq = 64, k->bk = 16, k->gk = 16, k->causal = 1;
    k->stage = stage;
    k->seq_bucket = seq_bucket;
    k->sparsity_bucket = stage == VA_STAGE_SELECTION ? -1 : sparsity_bucket;
    default_tiles(stage, cc, 128, v->tiles, sizeof v->tiles);
    v->time_ms = time_ms;
    v->tflops = 100.0 / time_ms;
    v->tuned_at = 1700000000;
    snprintf(v->vecattn_version, sizeof v->vecattn_version, "0.1.0");
    v->driver_version = 13000;
    snprintf(v->nvrtc_id, sizeof v->nvrtc_id, "13.0/test");
    snprintf(v->kernel_version, sizeof v->kernel_version, "%s", va_tune_kernel_version(stage));
}

/* The number a query on `path` returns, read with a connection of its own; -1 on error. */
static inline long long peek_int(const char *path, const char *sql) {
    sqlite3 *db = NULL;
    long long v = -1;
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK) {
        sqlite3_stmt *st = NULL;
        if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW)
            v = sqlite3_column_int64(st, 0);
        sqlite3_finalize(st);
    }
    sqlite3_close(db);
    return v;
}

/* Run SQL on `path` with a connection of its own; 0 on success. */
static inline int poke(const char *path, const char *sql) {
    sqlite3 *db = NULL;
    int rc = sqlite3_open(path, &db);
    if (rc == SQLITE_OK) {
        sqlite3_busy_timeout(db, 10000);
        rc = sqlite3_exec(db, sql, NULL, NULL, NULL);
    }
    sqlite3_close(db);
    return rc;
}

static inline int write_file(const char *path, const void *data, size_t len) {
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    size_t n = fwrite(data, 1, len, f);
    return fclose(f) == 0 && n == len ? 0 : -1;
}

static inline long long file_bytes(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 ? (long long)st.st_size : -1;
}

/* A kernel key for tests, with a deterministic fake CUBIN of `size` bytes from `seed`. */
static inline void *fake_cubin(unsigned seed, size_t size) {
    unsigned char *p = malloc(size);
    for (size_t i = 0; i < size; ++i) p[i] = (unsigned char)((seed * 2654435761u + i * 40503u) >> 7);
    return p;
}

#endif /* VECATTN_CACHE_UTIL_H */
