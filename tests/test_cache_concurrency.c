/*
** test_cache_concurrency.c -- 8 processes (fork) on one cache file at once: each imports a
** JSON file (entries of its own and entries every process has, with different times), puts
** tuned entries and CUBINs of its own and shared ones, and compiles one shared kernel through
** the claim protocol (get -> claim -> re-check -> "compile" -> put). Afterwards: no process
** failed, no row is lost or torn (every blob is byte-exact, verify finds nothing), the shared
** entries hold the fastest time, and the shared kernel was "compiled" exactly once. Run with
** WAL and with the rollback journal (the network file system setting).
*/
#include <string.h>
#include <sys/wait.h>
#include <time.h>

#include "test_util.h"
#include "cache_util.h"

enum { PROCS = 8, OWN_KERNELS = 20, SHARED_KERNELS = 5, OWN_TUNED = 6 };

static const char device_fmt[] = "worker-%d";

static size_t blob_size(unsigned seed) { return 2000 + (seed * 7919u) % 60000; }

static va_kernel_key kernel_key(uint64_t hash, char *name_buf) {
    snprintf(name_buf, 32, "k%llu", (unsigned long long)hash);
    return (va_kernel_key){.source_hash = hash, .options = "-arch=sm_90a", .arch = 90, .nvrtc_id = "13.0/t",
                           .name = name_buf};
}

/* The JSON file of worker w: its own entries (device worker-w, seq 12..17) and the shared
** ones (device "shared", seq 12..14) with time 1 + w / 10: worker 0 is fastest. */
static void write_worker_json(const char *path, int w) {
    char tiles[128], buf[16384], dev[32];
    default_tiles(VA_STAGE_SELECTION, 90, 128, tiles, sizeof tiles);
    snprintf(dev, sizeof dev, device_fmt, w);
    size_t n = (size_t)snprintf(buf, sizeof buf,
        "{\"format\": \"vecattn-tuned\", \"format_version\": 1, \"metadata\": {\"vecattn_version\": \"0.1.0\","
        " \"device\": {\"name\": \"%s\", \"cc\": 90, \"sm_count\": 132}, \"driver_version\": 13000,"
        " \"nvrtc\": \"13.0/t\"}, \"entries\": [", dev);
    for (int seq = 12; seq <= 17; ++seq)
        n += (size_t)snprintf(buf + n, sizeof buf - n,
            "%s{\"dtype\": \"bf16\", \"head_dim\": 128, \"pq\": 64, \"bk\": 16, \"gk\": 16, \"causal\": true,"
            " \"stage\": \"selection\", \"seq_bucket\": %d, \"sparsity_bucket\": -1, \"tiles\": \"%s\","
            " \"time_ms\": %d.5, \"tflops\": 1, \"tuned_at\": 1}", seq == 12 ? "" : ", ", seq, tiles, seq);
    for (int seq = 12; seq <= 14; ++seq)
        n += (size_t)snprintf(buf + n, sizeof buf - n,
            ", {\"dtype\": \"bf16\", \"head_dim\": 128, \"pq\": 64, \"bk\": 16, \"gk\": 16, \"causal\": true,"
            " \"stage\": \"selection\", \"seq_bucket\": %d, \"sparsity_bucket\": -1, \"tiles\": \"%s\","
            " \"time_ms\": %.1f, \"tflops\": 1, \"tuned_at\": 1,"
            " \"device\": {\"name\": \"shared\", \"cc\": 90, \"sm_count\": 132}}", seq, tiles, 1.0 + w / 10.0);
    snprintf(buf + n, sizeof buf - n, "]}");
    CHECK(write_file(path, buf, strlen(buf)) == 0, "write %s", path);
}

/* get -> claim -> re-check -> compile -> put, as runtime/module.c does. 1 when this worker
** "compiled"; -1 on an error. */
static int compile_shared(va_cache *c) {
    char name[32];
    va_kernel_key key = kernel_key(999999, name);
    void *got = NULL;
    size_t size = 0;
    if (va_cache_get_kernel(c, &key, &got, &size)) return free(got), 0;
    time_t start = time(NULL);
    while (!va_cache_claim_kernel(c, &key, 60)) {
        if (va_cache_get_kernel(c, &key, &got, &size)) return free(got), 0;
        if (time(NULL) - start > 30) return -1;
        struct timespec ts = {0, 10 * 1000000L};
        nanosleep(&ts, NULL);
    }
    if (va_cache_get_kernel(c, &key, &got, &size)) return va_cache_release_claim(c, &key), free(got), 0;
    struct timespec ts = {0, 200 * 1000000L};  /* the "compile" */
    nanosleep(&ts, NULL);
    void *blob = fake_cubin(999999, blob_size(999999));
    int rc = va_cache_put_kernel(c, &key, blob, blob_size(999999)) == VECATTN_OK ? 1 : -1;
    free(blob);
    return rc;
}

/* One worker; the exit status is 0 ok, 1 an error, +10 when it compiled the shared kernel. */
static int worker(const char *file, const char *json, int w) {
    va_cache *c = va_cache_open(file, NULL);
    if (!c || va_cache_get_mode(c) != VA_CACHE_READ_WRITE) return 1;
    char msg[1024], name[32];
    int errors = 0, merged = 0;
    errors += va_cache_import_json(c, json, &merged, msg, sizeof msg) != VECATTN_OK;
    for (int j = 0; j < OWN_KERNELS + SHARED_KERNELS; ++j) {
        unsigned seed = j < OWN_KERNELS ? (unsigned)(w * 1000 + j) : (unsigned)(500000 + j);
        va_kernel_key key = kernel_key(seed, name);
        void *blob = fake_cubin(seed, blob_size(seed));
        errors += va_cache_put_kernel(c, &key, blob, blob_size(seed)) != VECATTN_OK;
        free(blob);
    }
    for (int sp = 0; sp < OWN_TUNED; ++sp) {
        va_tune_key k;
        va_tune_value v;
        char dev[32];
        snprintf(dev, sizeof dev, device_fmt, w);
        sample_entry(&k, &v, 90, 132, dev, VA_STAGE_ATTENTION, 12 + sp, sp % 4, 2.0);
        errors += va_cache_put_tuned(c, &k, &v) != VECATTN_OK;
    }
    int compiled = compile_shared(c);
    va_cache_close(c);
    if (errors || compiled < 0) fprintf(stderr, "worker %d: %d errors, compile %d: %s\n", w, errors, compiled, msg);
    return (errors || compiled < 0 ? 1 : 0) + (compiled == 1 ? 10 : 0);
}

static void check_kernel(va_cache *c, unsigned seed) {
    char name[32];
    va_kernel_key key = kernel_key(seed, name);
    void *got = NULL, *want = fake_cubin(seed, blob_size(seed));
    size_t size = 0;
    CHECK(va_cache_get_kernel(c, &key, &got, &size) && size == blob_size(seed) && !memcmp(got, want, size),
          "kernel %u is there, byte-exact", seed);
    free(got), free(want);
}

/* The seeds the workers used: their own, the shared ones, and the claimed one. */
static void check_kernels(va_cache *c) {
    for (int w = 0; w < PROCS; ++w)
        for (int j = 0; j < OWN_KERNELS; ++j) check_kernel(c, (unsigned)(w * 1000 + j));
    for (int j = OWN_KERNELS; j < OWN_KERNELS + SHARED_KERNELS; ++j) check_kernel(c, (unsigned)(500000 + j));
    check_kernel(c, 999999);
}

static void check_tuned(va_cache *c) {
    for (int seq = 12; seq <= 14; ++seq) {
        va_tune_key k;
        va_tune_value v, got;
        sample_entry(&k, &v, 90, 132, "shared", VA_STAGE_SELECTION, seq, -1, 1.0);
        CHECK(va_cache_lookup_tuned(c, &k, &got) == VA_TUNE_EXACT && got.time_ms == 1.0,
              "shared entry seq %d holds the fastest time (%g)", seq, got.time_ms);
    }
}

static void run(const char *dir, const char *wal) {
    setenv("VECATTN_CACHE_WAL", wal, 1);
    char file[4200], json[PROCS][4200];
    snprintf(file, sizeof file, "%s/shared-%s.db", dir, wal);
    for (int w = 0; w < PROCS; ++w) {
        snprintf(json[w], sizeof json[w], "%s/worker-%d.json", dir, w);
        write_worker_json(json[w], w);
    }
    fflush(NULL);
    pid_t pids[PROCS];
    for (int w = 0; w < PROCS; ++w)
        if ((pids[w] = fork()) == 0) _exit(worker(file, json[w], w));
    int compiled = 0, failed = 0;
    for (int w = 0; w < PROCS; ++w) {
        int status = 0;
        waitpid(pids[w], &status, 0);
        int code = WIFEXITED(status) ? WEXITSTATUS(status) : 100;
        compiled += code >= 10;
        failed += code % 10 != 0;
    }
    CHECK(failed == 0, "WAL=%s: %d workers failed", wal, failed);
    CHECK(compiled == 1, "WAL=%s: the shared kernel was compiled %d times, want once", wal, compiled);
    va_cache *c = va_cache_open(file, NULL);
    va_cache_stats s;
    CHECK(va_cache_get_stats(c, &s) == VECATTN_OK, "stats");
    CHECK(s.kernels == PROCS * OWN_KERNELS + SHARED_KERNELS + 1, "WAL=%s: %lld kernels", wal, s.kernels);
    CHECK(s.tuned == PROCS * (6 + OWN_TUNED) + 3, "WAL=%s: %lld tuned entries", wal, s.tuned);
    CHECK(s.claims == 0, "WAL=%s: %lld claims left", wal, s.claims);
    CHECK(va_cache_verify(c, NULL, NULL) == 0, "WAL=%s: verify finds no bad row", wal);
    check_kernels(c);
    check_tuned(c);
    va_cache_close(c);
    unsetenv("VECATTN_CACHE_WAL");
}

int main(void) {
    char *dir = scratch_dir("concurrency");
    run(dir, "1");
    run(dir, "0");
    remove_tree(dir);
    free(dir);
    return test_exit_code("test_cache_concurrency");
}
