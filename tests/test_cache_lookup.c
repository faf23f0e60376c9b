/*
** test_cache_lookup.c -- the run-time lookup order of tuned configurations: exact -> nearest
** bucket of the same device (|seq difference| first, then |sparsity difference|) -> another
** device of the same compute capability (same SM count first) -> miss; put keeps the faster
** entry; a row that does not validate is passed over (and named by verify); shipped files
** are seen without an import and never written to the user's file.
*/
#include <string.h>

#include "test_util.h"
#include "cache_util.h"

#define H100 "NVIDIA H100 80GB HBM3"

static void put(va_cache *c, int cc, int sms, const char *name, int seq, int sp, double ms) {
    va_tune_key k;
    va_tune_value v;
    sample_entry(&k, &v, cc, sms, name, VA_STAGE_ATTENTION, seq, sp, ms);
    CHECK(va_cache_put_tuned(c, &k, &v) == VECATTN_OK, "put %s seq %d sp %d: %s", name, seq, sp, va_cache_errmsg(c));
}

/* Look up and return the match and the time of the entry found (0 on a miss). */
static va_tune_match look(va_cache *c, int cc, int sms, const char *name, int seq, int sp, double *ms) {
    va_tune_key k;
    va_tune_value v, got;
    sample_entry(&k, &v, cc, sms, name, VA_STAGE_ATTENTION, seq, sp, 1.0);
    memset(&got, 0, sizeof got);
    va_tune_match m = va_cache_lookup_tuned(c, &k, &got);
    *ms = m == VA_TUNE_MISS ? 0 : got.time_ms;
    return m;
}

static void test_order(va_cache *c) {
    double ms;
    CHECK(look(c, 90, 132, H100, 15, 2, &ms) == VA_TUNE_MISS, "an empty cache misses");
    put(c, 90, 132, H100, 15, 2, 1.0);
    put(c, 90, 132, H100, 13, 0, 2.0);
    put(c, 90, 132, H100, 16, 3, 3.0);
    put(c, 90, 114, "NVIDIA H100 PCIe", 15, 2, 4.0);
    put(c, 90, 132, "NVIDIA H100 NVL", 17, 0, 5.0);  /* same SMs, other name, far bucket */

    CHECK(look(c, 90, 132, H100, 15, 2, &ms) == VA_TUNE_EXACT && ms == 1.0, "exact: %g", ms);
    CHECK(look(c, 90, 132, H100, 15, 0, &ms) == VA_TUNE_NEAREST_BUCKET && ms == 1.0,
          "same seq, other sparsity: the same-seq entry (%g)", ms);
    CHECK(look(c, 90, 132, H100, 13, 3, &ms) == VA_TUNE_NEAREST_BUCKET && ms == 2.0,
          "seq distance first: seq 13 sp 0 before seq 15 sp 2 (%g)", ms);
    CHECK(look(c, 90, 132, H100, 17, 3, &ms) == VA_TUNE_NEAREST_BUCKET && ms == 3.0, "nearest seq 16 (%g)", ms);
    CHECK(look(c, 90, 132, H100, 14, 0, &ms) == VA_TUNE_NEAREST_BUCKET && ms == 2.0,
          "a tie in seq (13 and 15) goes to the nearer sparsity, 13/0, though slower (%g)", ms);
    CHECK(look(c, 90, 132, H100, 14, 1, &ms) == VA_TUNE_NEAREST_BUCKET && ms == 1.0,
          "a tie in both (13/0 and 15/2 for 14/1) goes to the faster (%g)", ms);
    CHECK(look(c, 90, 114, "NVIDIA H100 PCIe", 12, 0, &ms) == VA_TUNE_NEAREST_BUCKET && ms == 4.0,
          "the other device has its own entry (%g)", ms);
    CHECK(look(c, 90, 132, "renamed H100", 15, 2, &ms) == VA_TUNE_SAME_CC && ms == 1.0,
          "a device name the driver spells differently: same cc and SMs, nearest bucket (%g)", ms);
    CHECK(look(c, 90, 114, "renamed PCIe", 17, 0, &ms) == VA_TUNE_SAME_CC && ms == 4.0,
          "same cc: the same SM count first, before another device's exact bucket (%g)", ms);
    CHECK(look(c, 90, 100, "H100 cut down", 15, 2, &ms) == VA_TUNE_SAME_CC && ms == 1.0,
          "same cc, no same SM count: the nearest bucket, then the fastest (%g)", ms);
    CHECK(look(c, 80, 108, "NVIDIA A100", 15, 2, &ms) == VA_TUNE_MISS, "another cc misses");

    va_tune_key k;
    va_tune_value v, got;
    sample_entry(&k, &v, 90, 132, H100, VA_STAGE_ATTENTION, 15, 2, 1.0);
    k.head_dim = 64;
    CHECK(va_cache_lookup_tuned(c, &k, &got) == VA_TUNE_MISS, "another head dim misses");
    sample_entry(&k, &v, 90, 132, H100, VA_STAGE_ATTENTION, 15, 2, 1.0);
    k.causal = 0;
    CHECK(va_cache_lookup_tuned(c, &k, &got) == VA_TUNE_MISS, "non-causal misses");
    sample_entry(&k, &v, 90, 132, H100, VA_STAGE_SELECTION, 15, -1, 1.0);
    CHECK(va_cache_lookup_tuned(c, &k, &got) == VA_TUNE_MISS, "the other stage misses");
}

static void test_put_keeps_faster(va_cache *c) {
    double ms;
    put(c, 90, 132, H100, 15, 2, 7.0);
    CHECK(look(c, 90, 132, H100, 15, 2, &ms) == VA_TUNE_EXACT && ms == 1.0, "a slower put is ignored (%g)", ms);
    put(c, 90, 132, H100, 15, 2, 0.5);
    CHECK(look(c, 90, 132, H100, 15, 2, &ms) == VA_TUNE_EXACT && ms == 0.5, "a faster put replaces (%g)", ms);
    va_tune_key k;
    va_tune_value v;
    sample_entry(&k, &v, 90, 132, H100, VA_STAGE_ATTENTION, 15, 2, 0.1);
    snprintf(v.tiles, sizeof v.tiles, "block_m=48");
    CHECK(va_cache_put_tuned(c, &k, &v) == VECATTN_E_INVALID_ARG && strstr(va_cache_errmsg(c), "tiles"),
          "invalid tiles are refused: %s", va_cache_errmsg(c));
    sample_entry(&k, &v, 90, 132, H100, VA_STAGE_ATTENTION, 11, 2, 0.1);
    CHECK(va_cache_put_tuned(c, &k, &v) == VECATTN_E_INVALID_ARG && strstr(va_cache_errmsg(c), "seq_bucket"),
          "a bucket out of range is refused: %s", va_cache_errmsg(c));
}

static void count_line(const char *line, void *user) {
    (void)line;
    ++*(int *)user;
}

/* A faster row with bad tiles written behind the cache's back: passed over, named by verify. */
static void test_bad_row(const char *file) {
    va_cache *c = va_cache_open(file, NULL);
    put(c, 90, 132, H100, 14, 1, 2.0);
    CHECK(poke(file, "INSERT INTO tuned SELECT cc, sm_count, device_name, dtype, head_dim, pq, bk, gk, causal,"
                     " stage, seq_bucket, 0, 'block_m=999', 0.01, tflops, tuned_at, vecattn_version,"
                     " driver_version, nvrtc_id, kernel_version FROM tuned WHERE seq_bucket = 14") == SQLITE_OK,
          "insert a bad row");
    double ms;
    CHECK(look(c, 90, 132, H100, 14, 0, &ms) == VA_TUNE_NEAREST_BUCKET && ms == 2.0,
          "the bad exact row is passed over for a valid one (%g)", ms);
    int bad = 0;
    CHECK(va_cache_verify(c, count_line, &bad) == 1 && bad == 1, "verify names the bad row (%d)", bad);
    va_cache_close(c);
}

static void test_shipped(const char *dir, const char *file) {
    char *ship = path_in(dir, "pretuned"), *good = path_in(ship, "h100.json"), *broken = path_in(ship, "broken.json");
    mkdir(ship, 0700);
    char tiles[128], doc[2048];
    default_tiles(VA_STAGE_ATTENTION, 90, 128, tiles, sizeof tiles);
    snprintf(doc, sizeof doc,
             "{\"format\": \"vecattn-tuned\", \"format_version\": 1, \"metadata\": {\"vecattn_version\": \"0.1.0\","
             " \"device\": {\"name\": \"" H100 "\", \"cc\": 90, \"sm_count\": 132}, \"driver_version\": 13000,"
             " \"nvrtc\": \"13.0/x\"}, \"entries\": [{\"dtype\": \"bf16\", \"head_dim\": 128, \"pq\": 64,"
             " \"bk\": 16, \"gk\": 16, \"causal\": true, \"stage\": \"attention\", \"seq_bucket\": 12,"
             " \"sparsity_bucket\": 1, \"tiles\": \"%s\", \"time_ms\": 0.25, \"tflops\": 1, \"tuned_at\": 1,"
             " \"kernel_version\": \"%s\"}]}",
             tiles, va_tune_kernel_version(VA_STAGE_ATTENTION));
    CHECK(write_file(good, doc, strlen(doc)) == 0 && write_file(broken, "{\"format\"", 10) == 0, "write files");
    va_cache *c = va_cache_open(file, NULL);
    long long rows = peek_int(file, "SELECT count(*) FROM tuned");
    char msg[1024];
    CHECK(va_cache_load_shipped_dir(c, ship, msg, sizeof msg) == -1 && strstr(msg, "broken.json"),
          "a bad shipped file is named: %s", msg);
    double ms;
    CHECK(look(c, 90, 132, H100, 12, 1, &ms) == VA_TUNE_EXACT && ms == 0.25, "the good shipped file is seen (%g)", ms);
    CHECK(peek_int(file, "SELECT count(*) FROM tuned") == rows, "the user's file is not written");
    va_cache_stats s;
    CHECK(va_cache_get_stats(c, &s) == VECATTN_OK && s.shipped == 1 && s.tuned == rows, "stats: %lld shipped",
          s.shipped);
    va_cache_close(c);
    /* Read-only caches see shipped files too. */
    va_cache *m = va_cache_open(":memory:", NULL);
    remove(broken);
    CHECK(va_cache_load_shipped_dir(m, ship, msg, sizeof msg) == 1, "loaded into a memory cache: %s", msg);
    CHECK(look(m, 90, 132, H100, 12, 1, &ms) == VA_TUNE_EXACT, "and seen there");
    va_cache_close(m);
    free(ship), free(good), free(broken);
}

/* Rows of another kernel version (templates changed since they were tuned) are only a
** fallback: a current row of the same compute capability beats a stale exact one. */
static void test_kernel_version(const char *dir) {
    char *file = path_in(dir, "kv.db");
    va_cache *c = va_cache_open(file, NULL);
    va_tune_key k;
    va_tune_value v, got;
    sample_entry(&k, &v, 90, 132, H100, VA_STAGE_ATTENTION, 15, 2, 1.0);
    snprintf(v.kernel_version, sizeof v.kernel_version, "0123456789abcdef"); /* an older build's */
    CHECK(va_cache_put_tuned(c, &k, &v) == VECATTN_OK, "put a stale row");
    CHECK(va_cache_lookup_tuned(c, &k, &got) == VA_TUNE_EXACT && !strcmp(got.kernel_version, "0123456789abcdef"),
          "alone, the stale row is used (version \"%s\")", got.kernel_version);
    put(c, 90, 114, "NVIDIA H100 PCIe", 13, 0, 3.0); /* current kernels, another device */
    memset(&got, 0, sizeof got);
    va_tune_match m = va_cache_lookup_tuned(c, &k, &got);
    CHECK(m == VA_TUNE_SAME_CC && got.time_ms == 3.0 &&
              !strcmp(got.kernel_version, va_tune_kernel_version(VA_STAGE_ATTENTION)),
          "a current same-cc row beats a stale exact one (match %d, %g ms)", (int)m, got.time_ms);
    CHECK(strlen(va_tune_kernel_version(VA_STAGE_ATTENTION)) == 16 &&
              strcmp(va_tune_kernel_version(VA_STAGE_ATTENTION), va_tune_kernel_version(VA_STAGE_SELECTION)),
          "16 hex digits per stage, different stages differ");
    va_cache_close(c);
    free(file);
}

int main(void) {
    char *dir = scratch_dir("lookup");
    char *file = path_in(dir, "c.db");
    va_cache *c = va_cache_open(file, NULL);
    test_order(c);
    test_put_keeps_faster(c);
    va_cache_close(c);
    test_bad_row(file);
    test_shipped(dir, file);
    test_kernel_version(dir);
    remove_tree(dir);
    free(file), free(dir);
    return test_exit_code("test_cache_lookup");
}
