/*
** cache.h -- the persistent store: tuned tile configurations, compiled CUBINs and configs
** that failed, in one SQLite database shared by every process of a user.
**
** Location: the explicit path (vecattn_create's cache_path, `--cache PATH`), else
** $VECATTN_CACHE, else $XDG_CACHE_HOME/vecattn/cache.db, else ~/.cache/vecattn/cache.db.
** The directory is created 0700 and the file 0600. If the file cannot be opened for writing
** the cache falls back to read-only, then to an in-memory database, with one warning; a
** damaged file is moved aside and recreated, with one warning. Nothing here ever makes a
** prefill fail: every lookup can miss.
**
** Concurrency: every write is one transaction (BEGIN IMMEDIATE) under a busy timeout; WAL
** only on local file systems. Compiling happens outside any transaction:
** claim -> re-check -> compile -> publish (va_cache_claim_kernel / va_cache_put_kernel).
*/
#ifndef VECATTN_CACHE_H
#define VECATTN_CACHE_H

#include <stddef.h>
#include <stdint.h>

#include "vecattn.h"

typedef struct va_cache va_cache;

typedef enum va_cache_mode {
    VA_CACHE_READ_WRITE = 0,
    VA_CACHE_READ_ONLY = 1,
    VA_CACHE_MEMORY = 2       /* nothing persists */
} va_cache_mode;

/* Open (creating when needed) the cache at `path` (NULL: the default location above).
** Always returns a usable cache unless memory runs out (then NULL); *warning (may be NULL)
** receives a static or cache-owned one-line warning, or NULL when none. */
va_cache *va_cache_open(const char *path, const char **warning);
void va_cache_close(va_cache *cache);
const char *va_cache_path(const va_cache *cache);   /* ":memory:" for the memory fallback */
va_cache_mode va_cache_get_mode(const va_cache *cache);

/* The default location, resolved from the environment (malloc'ed). */
char *va_cache_default_path(void);

/* ---- compiled kernels ------------------------------------------------------------------ */

/* What a CUBIN was built from: the same key never hands back a CUBIN of another source,
** options, architecture or compiler. */
typedef struct va_kernel_key {
    uint64_t source_hash;          /* va_generated.hash (source and options) */
    const char *options;           /* NVRTC options joined by spaces */
    int arch;                      /* compute capability * 10 */
    const char *nvrtc_id;          /* NVRTC identity incl. build, see va_nvrtc_identity() */
    const char *name;              /* module name, informational */
} va_kernel_key;

/* 1 and a malloc'ed copy on a hit whose checksum verifies; 0 on a miss (a row whose
** checksum fails is deleted and counts as a miss). */
int va_cache_get_kernel(va_cache *cache, const va_kernel_key *key, void **cubin, size_t *size);

/* Store a CUBIN (with its checksum); an existing row for the key is kept. */
vecattn_status va_cache_put_kernel(va_cache *cache, const va_kernel_key *key, const void *cubin, size_t size);

/* Claim the right to compile `key` for up to `lease_s` seconds: 1 claimed (compile, then
** put, which releases the claim), 0 another process holds a live claim (wait for its put
** with va_cache_get_kernel, or compile anyway once the lease expired). */
int va_cache_claim_kernel(va_cache *cache, const va_kernel_key *key, int lease_s);

/* ---- tuned configurations -------------------------------------------------------------- */

typedef enum va_stage { VA_STAGE_SELECTION = 0, VA_STAGE_ATTENTION = 1 } va_stage;

typedef struct va_device_id {
    int cc;                        /* compute capability * 10 */
    int sm_count;
    char name[128];
} va_device_id;

/* A shape bucket: seq_bucket = log2 of Sk rounded to the nearest power of two within
** [12, 17] (4K .. 128K); sparsity_bucket = 0..3 for kept fractions > 50%, 20-50%, 5-20%,
** < 5% (attention only; -1 for selection). */
typedef struct va_tune_key {
    va_device_id device;
    vecattn_dtype dtype;
    int head_dim, pq, bk, gk, causal;
    va_stage stage;
    int seq_bucket;
    int sparsity_bucket;
} va_tune_key;

typedef struct va_tune_value {
    char tiles[128];               /* va_spec_tiles_format() text */
    double time_ms;
    double tflops;
    int64_t tuned_at;              /* unix seconds */
    char vecattn_version[32];
    int driver_version;
    char nvrtc_id[64];
} va_tune_value;

/* How a lookup matched (for the debug log). */
typedef enum va_tune_match {
    VA_TUNE_MISS = 0,
    VA_TUNE_EXACT = 1,             /* same device, same buckets */
    VA_TUNE_NEAREST_BUCKET = 2,    /* same device, nearest seq/sparsity bucket */
    VA_TUNE_SAME_CC = 3            /* another device of the same compute capability */
} va_tune_match;

/* Look up in the order exact -> nearest bucket of the same device -> same compute
** capability; returns the match level and fills *value on a hit. */
va_tune_match va_cache_lookup_tuned(va_cache *cache, const va_tune_key *key, va_tune_value *value);

/* Insert or replace, keeping the faster of an existing and the new entry. */
vecattn_status va_cache_put_tuned(va_cache *cache, const va_tune_key *key, const va_tune_value *value);

/* Configs that failed to compile or launch (never retried): keyed by the module hash. */
vecattn_status va_cache_mark_failed(va_cache *cache, uint64_t source_hash, const char *name, const char *why);
int va_cache_is_failed(va_cache *cache, uint64_t source_hash);

#endif /* VECATTN_CACHE_H */
