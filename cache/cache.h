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
**
** Environment: VECATTN_CACHE (the file), XDG_CACHE_HOME and HOME (default locations),
** VECATTN_CACHE_WAL=0|1 (force the rollback journal or WAL; default: WAL only on local file
** systems), VECATTN_PRETUNED_DIR (replaces the shipped-file directories; empty: none).
** Shipped tuned files (cache/pretuned/FORMAT.md) are read lazily, into a TEMP table in
** memory, once va_cache_use_shipped() asked for them.
**
** Files: store.c (open, fallbacks, recovery), schema.c (tables, migrations), kernels.c,
** tuned.c, admin.c (stats, list, verify, clear), json.c (import), json_export.c, pretuned.c,
** sql.c (helpers); cache_internal.h is what they share.
*/
#ifndef VECATTN_CACHE_H
#define VECATTN_CACHE_H

#include <stddef.h>
#include <stdint.h>

#include "codegen/codegen.h"
#include "vecattn.h"

typedef struct va_cache va_cache;

typedef enum va_cache_mode {
    VA_CACHE_READ_WRITE = 0,
    VA_CACHE_READ_ONLY = 1,
    VA_CACHE_MEMORY = 2       /* nothing persists */
} va_cache_mode;

/* Open (creating when needed) the cache at `path` (NULL: the default location above;
** ":memory:": nothing persists, silently). Always returns a usable cache unless memory runs
** out (then NULL); *warning (may be NULL) receives a static or cache-owned one-line warning,
** or NULL when none. With warning == NULL the warning waits for va_cache_take_warning. */
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
    char kernel_version[VA_KERNEL_VERSION_LEN + 1]; /* va_kernel_version() of the stage when
                                                       measured; "" = unknown (older rows) */
} va_tune_value;

/* How a lookup matched (for the debug log). */
typedef enum va_tune_match {
    VA_TUNE_MISS = 0,
    VA_TUNE_EXACT = 1,             /* same device, same buckets */
    VA_TUNE_NEAREST_BUCKET = 2,    /* same device, nearest seq/sparsity bucket */
    VA_TUNE_SAME_CC = 3            /* another device of the same compute capability */
} va_tune_match;

/* Look up in the order exact -> nearest bucket of the same device -> same compute
** capability, among rows of the current kernel version first (va_tune_kernel_version), then
** among the others; returns the match level and fills *value on a hit. */
va_tune_match va_cache_lookup_tuned(va_cache *cache, const va_tune_key *key, va_tune_value *value);

/* The kernel version (va_kernel_version) of a stage's kernels in this build: what tuned rows
** are written with and preferred by in lookups (value.kernel_version differs for a fallback). */
const char *va_tune_kernel_version(va_stage stage);

/* Insert or replace, keeping the faster of an existing and the new entry. */
vecattn_status va_cache_put_tuned(va_cache *cache, const va_tune_key *key, const va_tune_value *value);

/* Configs that failed to compile or launch (never retried): keyed by the module hash. */
vecattn_status va_cache_mark_failed(va_cache *cache, uint64_t source_hash, const char *name, const char *why);
int va_cache_is_failed(va_cache *cache, uint64_t source_hash);

/* ---- additions: errors, kernel keys, claims ------------------------------------------ */

/* The last error of a cache call that returned a failure (cache-owned, never NULL). */
const char *va_cache_errmsg(const va_cache *cache);

/* A warning raised after open (a damaged file found by a later query and moved aside), once:
** NULL when there is none or it was taken already. */
const char *va_cache_take_warning(va_cache *cache);

/* The key of a generated module: options joined by single spaces into `options_buf`
** (NULL-terminated list, as va_generated holds them). The one place that spells the key, so
** that the runtime and `vecattn-autotune precompile` agree. */
void va_cache_kernel_key(va_kernel_key *key, const va_generated *gen, int arch, const char *nvrtc_id,
                         char *options_buf, size_t buf_size);

/* Drop the row of `key` (a CUBIN the driver refused to load). */
vecattn_status va_cache_delete_kernel(va_cache *cache, const va_kernel_key *key);

/* Give up a claim without a put (the compile failed). */
void va_cache_release_claim(va_cache *cache, const va_kernel_key *key);

/* ---- additions: tuned entries ---------------------------------------------------------- */

/* "bf16"/"fp16", "selection"/"attention" and back; the spellings of the JSON format and the
** database. The parsers return 0 for an unknown name. */
const char *va_dtype_name(vecattn_dtype dtype);
const char *va_stage_name(va_stage stage);
int va_dtype_parse(const char *name, vecattn_dtype *out);
int va_stage_parse(const char *name, va_stage *out);

/* VECATTN_OK when a key and value could be stored: every field in range and the tiles parse
** (va_spec_tiles_parse) into a spec of the stage's kind that va_spec_validate accepts.
** Otherwise VECATTN_E_INVALID_ARG and "field: reason" in msg. */
vecattn_status va_cache_check_entry(const va_tune_key *key, const va_tune_value *value, char *msg,
                                    size_t msg_size);

/* Calls `fn` for every tuned entry (ordered by device, then key), `shipped` 1 for entries of
** the shipped files; `only` (NULL: all) keeps the entries of one device by cc + sm_count.
** Rows that fail va_cache_check_entry are skipped and counted in *skipped (may be NULL);
** `vecattn-autotune verify` names them. A non-zero return from fn stops the walk. */
typedef int (*va_tuned_fn)(const va_tune_key *key, const va_tune_value *value, int shipped, void *user);
vecattn_status va_cache_foreach_tuned(va_cache *cache, int include_shipped, const va_device_id *only,
                                      va_tuned_fn fn, void *user, int *skipped);

/* The cc and SM count of the device called `name` in the tuned entries (case-insensitive):
** 1 found, 0 not. */
int va_cache_find_device(va_cache *cache, const char *name, va_device_id *out);

/* ---- additions: JSON (cache/pretuned/FORMAT.md) ---------------------------------------- */

/* Write the tuned entries (all, or those of `only` matched by cc + sm_count) to `file`
** atomically (a temporary file renamed into place). *count receives the number written.
** VECATTN_E_CACHE (nothing to export, or a write error) with a message naming the file. */
vecattn_status va_cache_export_json(va_cache *cache, const char *file, const va_device_id *only,
                                    int *count, char *msg, size_t msg_size);

/* Import a file: every field is validated first, then all entries are merged in one
** transaction (the faster of an existing and an imported entry stays); any bad field is
** VECATTN_E_JSON with "<file>: entry <i>: field \"<name>\": <reason>" and nothing written.
** *merged (may be NULL) receives the number of entries that changed the cache. */
vecattn_status va_cache_import_json(va_cache *cache, const char *file, int *merged, char *msg,
                                    size_t msg_size);
/* The same on text in memory (`label` names it in messages), for the fuzzer and the tests. */
vecattn_status va_cache_import_json_text(va_cache *cache, const char *text, size_t len, const char *label,
                                         int *merged, char *msg, size_t msg_size);

/* ---- additions: shipped files ---------------------------------------------------------- */

/* Let lookups see the shipped pretuned files: every *.json of <libdir>/../share/vecattn/pretuned
** (libdir: where the code of vecattn lives, found with dladdr) and, when running from the build
** tree, of the source tree's cache/pretuned ($VECATTN_PRETUNED_DIR replaces both). Read at
** the first lookup, into a TEMP table in memory: nothing is written to the cache file. */
void va_cache_use_shipped(va_cache *cache, int on);
/* Load the *.json files of one directory into the shipped table now; returns how many
** entries were loaded, or -1 (a message in msg) when a file was bad (the others still load). */
int va_cache_load_shipped_dir(va_cache *cache, const char *dir, char *msg, size_t msg_size);
/* Where shipped files are looked for and what was loaded (cache-owned text, for `show`). */
const char *va_cache_shipped_status(va_cache *cache);

/* ---- additions: administration (vecattn-autotune show / verify / clear) ---------------- */

typedef struct va_cache_stats {
    int schema_version;
    const char *journal_mode;      /* "wal", "delete", "memory", ... */
    long long tuned, shipped, kernels, failed, claims;   /* rows */
    long long kernel_bytes;        /* CUBIN bytes stored */
    long long file_bytes;          /* the database file plus its -wal file, 0 in memory */
} va_cache_stats;
vecattn_status va_cache_get_stats(va_cache *cache, va_cache_stats *stats);

/* Check every CUBIN against its checksum (and its key), every tuned row with
** va_cache_check_entry, and the file with PRAGMA integrity_check. `report` gets one line per
** bad row naming it. Returns the number of bad rows, or -1 when the check could not run. */
int va_cache_verify(va_cache *cache, void (*report)(const char *line, void *user), void *user);

enum {
    VA_CACHE_CLEAR_KERNELS = 1,    /* compiled kernels and claims */
    VA_CACHE_CLEAR_TUNED = 2,
    VA_CACHE_CLEAR_FAILED = 4,
    VA_CACHE_CLEAR_ALL = 7
};
/* Delete the rows of the tables named by `what` in one transaction, then VACUUM. */
vecattn_status va_cache_clear(va_cache *cache, unsigned what);

/* The schema version this build writes (PRAGMA user_version), and the SQL that takes the
** previous version to `version` (1 .. current), for the migration tests. */
int va_cache_schema_version(void);
const char *va_cache_migration_sql(int version);

#endif /* VECATTN_CACHE_H */
