/*
** cli_cache.c -- vecattn-autotune list, show, export, import, verify, clear, and --cache.
**
** Every subcommand opens the cache the way the library does (va_cache_open: --cache, else
** $VECATTN_CACHE, else the user cache directory) and prints the open warning, if any, on
** stderr. Messages name the file, the field and the reason.
** Exit codes: 0 ok, 1 usage error, 2 runtime failure.
** Sections: flags, opening, list, show, export, import, verify, clear.
*/
#include <errno.h>   /* provides: errno for va_cli_int */
#include <stdarg.h>  /* provides: va_list for usage */
#include <stdio.h>   /* provides: printf, fprintf */
#include <stdlib.h>  /* provides: setenv, strtol */
#include <string.h>  /* provides: strcmp, strncmp, strchr */
#include <time.h>    /* provides: gmtime_r, strftime */

#include "autotune/cli_cache.h"
#include "cache/cache.h"     /* provides: va_cache_* */
#include "runtime/runtime.h" /* provides: va_nvrtc_identity */


/* ---- flags ---------------------------------------------------------------------------- */

int va_cli_usage(const char *cmd, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "vecattn-autotune%s%s: ", *cmd ? " " : "", cmd);
    vfprintf(stderr, fmt, ap);
    fputs("\n(see vecattn-autotune --help)\n", stderr);
    va_end(ap);
    return VA_CLI_USAGE;
}

int va_cli_failure(const char *cmd, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "vecattn-autotune %s: ", cmd);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return VA_CLI_FAIL;
}

static int set_cache_env(const char *cmd, const char *path) {
    if (!path || !*path) return va_cli_usage(cmd, "--cache needs a file name");
    if (setenv("VECATTN_CACHE", path, 1) != 0) return va_cli_failure(cmd, "cannot set VECATTN_CACHE");
    return VA_CLI_OK;
}

int va_cli_cache_option(int *argc, char **argv) {
    while (*argc > 1 && !strncmp(argv[1], "--cache", 7) && (argv[1][7] == 0 || argv[1][7] == '=')) {
        int take = argv[1][7] == '=' ? 1 : 2;
        const char *path = take == 1 ? argv[1] + 8 : *argc > 2 ? argv[2] : NULL;
        if (set_cache_env("", path) != VA_CLI_OK) return VA_CLI_USAGE;
        memmove(argv + 1, argv + 1 + take, (size_t)(*argc - 1 - take + 1) * sizeof *argv);
        *argc -= take;
    }
    return VA_CLI_OK;
}

int va_cli_int(const char *s, int lo, int hi, int *out) {
    char *end;
    errno = 0;
    long v = s ? strtol(s, &end, 10) : 0;
    if (!s || errno || end == s || *end || v < lo || v > hi) return 0;
    *out = (int)v;
    return 1;
}

int va_cli_parse(const char *cmd, int argc, char **argv, const va_cli_opt *opts, const char **pos, int max_pos) {
    int n_pos = 0;
    for (int i = 0; i < argc; ++i) {
        const char *a = argv[i], *eq = strchr(a, '=');
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            printf("usage: vecattn-autotune [--cache PATH] <subcommand> [flags]\n\n" VA_CLI_CACHE_SUBCOMMANDS
                   "\n" VA_CLI_CACHE_FLAGS);
            return VA_CLI_OK;
        }
        if (a[0] != '-' || a[1] != '-') {
            if (n_pos == max_pos) return va_cli_usage(cmd, "unexpected argument '%s'", a);
            pos[n_pos++] = a;
            continue;
        }
        size_t len = eq ? (size_t)(eq - a) : strlen(a);
        const va_cli_opt *o = NULL;
        for (const va_cli_opt *p = opts; p->name && !o; ++p)
            if (strlen(p->name) == len && !strncmp(p->name, a, len)) o = p;
        if (!o && len == 7 && !strncmp(a, "--cache", 7)) {
            const char *path = eq ? eq + 1 : i + 1 < argc ? argv[++i] : NULL;
            if (set_cache_env(cmd, path) != VA_CLI_OK) return VA_CLI_USAGE;
            continue;
        }
        if (!o) return va_cli_usage(cmd, "unknown flag '%s'", a);
        if (o->flag) {
            if (eq) return va_cli_usage(cmd, "flag '%s' takes no value", o->name);
            *o->flag = 1;
            continue;
        }
        const char *v = eq ? eq + 1 : i + 1 < argc ? argv[++i] : NULL;
        if (!v) return va_cli_usage(cmd, "flag '%s' needs a value", o->name);
        *o->value = v;
    }
    return VA_CLI_CONTINUE;
}

/* ---- opening -------------------------------------------------------------------------- */

static const char *mode_name(va_cache_mode m) {
    return m == VA_CACHE_READ_WRITE ? "read-write" : m == VA_CACHE_READ_ONLY ? "read-only" : "in memory";
}

va_cache *va_cli_open_cache(const char *cmd, int writable) {
    const char *warning = NULL;
    va_cache *c = va_cache_open(NULL, &warning);
    if (warning) fprintf(stderr, "vecattn-autotune: warning: %s\n", warning);
    if (!c) {
        va_cli_failure(cmd, "out of memory opening the cache");
        return NULL;
    }
    va_cache_use_shipped(c, 1);
    if (writable && va_cache_get_mode(c) != VA_CACHE_READ_WRITE) {
        va_cli_failure(cmd, "cache %s is %s; this needs a writable cache file (--cache PATH)", va_cache_path(c),
                mode_name(va_cache_get_mode(c)));
        va_cache_close(c);
        return NULL;
    }
    return c;
}

/* "90:132", "9.0:132" or a device name found in the tuned entries. */
static int parse_device(const char *cmd, va_cache *c, const char *text, va_device_id *out) {
    memset(out, 0, sizeof *out);
    int major = 0, minor = 0, sms = 0;
    char tail;
    if (sscanf(text, "%d.%d:%d%c", &major, &minor, &sms, &tail) == 3 && minor >= 0 && minor < 10) {
        out->cc = major * 10 + minor;
    } else if (sscanf(text, "%d:%d%c", &major, &sms, &tail) == 2) {
        out->cc = major;
    } else {
        if (va_cache_find_device(c, text, out)) return VA_CLI_OK;
        return va_cli_failure(cmd, "no tuned entries for a device named '%s' in cache %s (give CC:SMS, e.g. 90:132)",
                       text, va_cache_path(c));
    }
    out->sm_count = sms;
    if (!va_arch_target(out->cc) || sms < 1) return va_cli_usage(cmd, "--device '%s': expected CC:SMS such as 90:132", text);
    return VA_CLI_OK;
}

/* ---- list ----------------------------------------------------------------------------- */

static int print_entry(const va_tune_key *k, const va_tune_value *v, int shipped, void *user) {
    char when[32] = "?";
    time_t t = (time_t)v->tuned_at;
    struct tm tm;
    if (gmtime_r(&t, &tm)) strftime(when, sizeof when, "%Y-%m-%d", &tm);
    /* tuned with other kernels: only a fallback for lookups (cache/pretuned/FORMAT.md) */
    int stale = strcmp(v->kernel_version, va_tune_kernel_version(k->stage)) != 0;
    printf("%-26.26s %3d %4d %-4s %4d %3d %3d %3d %-10s %-9s 2^%-2d %2d  %-40s %9.4f %7.1f  %s%s%s\n",
           k->device.name, k->device.cc, k->device.sm_count, va_dtype_name(k->dtype), k->head_dim, k->pq,
           k->bk, k->gk, k->causal ? "causal" : "non-causal", va_stage_name(k->stage), k->seq_bucket,
           k->sparsity_bucket, v->tiles, v->time_ms, v->tflops, when, shipped ? "  (shipped)" : "",
           stale ? "  (other kernel version)" : "");
    ++*(int *)user;
    return 0;
}

int va_cli_list(int argc, char **argv) {
    const char *device = NULL;
    const va_cli_opt opts[] = {{"--device", &device, NULL}, {NULL, NULL, NULL}};
    int rc = va_cli_parse("list", argc, argv, opts, NULL, 0);
    if (rc != VA_CLI_CONTINUE) return rc;
    va_cache *c = va_cli_open_cache("list", 0);
    if (!c) return VA_CLI_FAIL;
    va_device_id only;
    if (device && (rc = parse_device("list", c, device, &only)) != VA_CLI_OK) {
        va_cache_close(c);
        return rc;
    }
    printf("%-26s %3s %4s %-4s %4s %3s %3s %3s %-10s %-9s %-4s %2s  %-40s %9s %7s  %s\n", "device", "cc", "SMs",
           "type", "D", "pq", "bk", "gk", "mask", "stage", "Sk", "sp", "tiles", "ms", "TFLOP/s", "tuned");
    int count = 0, skipped = 0;
    vecattn_status st = va_cache_foreach_tuned(c, 1, device ? &only : NULL, print_entry, &count, &skipped);
    if (st == VECATTN_OK)
        printf("%d entr%s in %s%s\n", count, count == 1 ? "y" : "ies", va_cache_path(c),
               skipped ? " (invalid rows not shown: run verify)" : "");
    else
        va_cli_failure("list", "cache %s: %s", va_cache_path(c), va_cache_errmsg(c));
    va_cache_close(c);
    return st == VECATTN_OK ? VA_CLI_OK : VA_CLI_FAIL;
}

/* ---- show ----------------------------------------------------------------------------- */

int va_cli_show(int argc, char **argv) {
    const va_cli_opt opts[] = {{NULL, NULL, NULL}};
    int rc = va_cli_parse("show", argc, argv, opts, NULL, 0);
    if (rc != VA_CLI_CONTINUE) return rc;
    va_cache *c = va_cli_open_cache("show", 0);
    if (!c) return VA_CLI_FAIL;
    va_cache_stats s;
    vecattn_status st = va_cache_get_stats(c, &s);
    printf("cache            %s\n", va_cache_path(c));
    printf("mode             %s\n", mode_name(va_cache_get_mode(c)));
    if (st == VECATTN_OK) {
        printf("schema version   %d (this vecattn writes %d)\n", s.schema_version, va_cache_schema_version());
        printf("journal          %s\n", s.journal_mode);
        printf("tuned entries    %lld\n", s.tuned);
        printf("shipped entries  %lld (%s)\n", s.shipped, va_cache_shipped_status(c));
        printf("kernels          %lld (%.1f MiB of CUBINs)\n", s.kernels, (double)s.kernel_bytes / 1048576.0);
        printf("failed configs   %lld\n", s.failed);
        printf("compile claims   %lld\n", s.claims);
        printf("file size        %.1f MiB (%lld bytes)\n", (double)s.file_bytes / 1048576.0, s.file_bytes);
    }
    printf("NVRTC            %s\n", va_nvrtc_identity());
    if (st != VECATTN_OK) va_cli_failure("show", "cache %s: %s", va_cache_path(c), va_cache_errmsg(c));
    va_cache_close(c);
    return st == VECATTN_OK ? VA_CLI_OK : VA_CLI_FAIL;
}

/* ---- export and import ---------------------------------------------------------------- */

int va_cli_export(int argc, char **argv) {
    const char *device = NULL, *file = NULL;
    const va_cli_opt opts[] = {{"--device", &device, NULL}, {NULL, NULL, NULL}};
    int rc = va_cli_parse("export", argc, argv, opts, &file, 1);
    if (rc != VA_CLI_CONTINUE) return rc;
    if (!file) return va_cli_usage("export", "missing the FILE.json argument");
    va_cache *c = va_cli_open_cache("export", 0);
    if (!c) return VA_CLI_FAIL;
    va_device_id only;
    if (device && (rc = parse_device("export", c, device, &only)) != VA_CLI_OK) {
        va_cache_close(c);
        return rc;
    }
    char msg[2048];
    vecattn_status st = va_cache_export_json(c, file, device ? &only : NULL, NULL, msg, sizeof msg);
    if (st == VECATTN_OK) printf("%s\n", msg);
    else va_cli_failure("export", "%s", msg);
    va_cache_close(c);
    return st == VECATTN_OK ? VA_CLI_OK : VA_CLI_FAIL;
}

int va_cli_import(int argc, char **argv) {
    const char *file = NULL;
    const va_cli_opt opts[] = {{NULL, NULL, NULL}};
    int rc = va_cli_parse("import", argc, argv, opts, &file, 1);
    if (rc != VA_CLI_CONTINUE) return rc;
    if (!file) return va_cli_usage("import", "missing the FILE.json argument");
    va_cache *c = va_cli_open_cache("import", 1);
    if (!c) return VA_CLI_FAIL;
    char msg[2048];
    int merged = 0;
    vecattn_status st = va_cache_import_json(c, file, &merged, msg, sizeof msg);
    if (st == VECATTN_OK)
        printf("%s: %d entr%s merged into %s (others kept a faster existing entry)\n", file, merged,
               merged == 1 ? "y" : "ies", va_cache_path(c));
    else
        va_cli_failure("import", "%s (nothing was imported)", msg);
    va_cache_close(c);
    return st == VECATTN_OK ? VA_CLI_OK : VA_CLI_FAIL;
}

/* ---- verify --------------------------------------------------------------------------- */

static void print_bad(const char *line, void *user) {
    (void)user;
    printf("BAD  %s\n", line);
}

int va_cli_verify(int argc, char **argv) {
    const va_cli_opt opts[] = {{NULL, NULL, NULL}};
    int rc = va_cli_parse("verify", argc, argv, opts, NULL, 0);
    if (rc != VA_CLI_CONTINUE) return rc;
    va_cache *c = va_cli_open_cache("verify", 0);
    if (!c) return VA_CLI_FAIL;
    va_cache_stats s;
    va_cache_get_stats(c, &s);
    int bad = va_cache_verify(c, print_bad, NULL);
    if (bad < 0) va_cli_failure("verify", "cache %s: %s", va_cache_path(c), va_cache_errmsg(c));
    else
        printf("%s: %lld kernels, %lld tuned entries checked: %d bad\n", va_cache_path(c), s.kernels, s.tuned, bad);
    va_cache_close(c);
    return bad == 0 ? VA_CLI_OK : VA_CLI_FAIL;
}

/* ---- clear ---------------------------------------------------------------------------- */

int va_cli_clear(int argc, char **argv) {
    int kernels = 0, tuned = 0, all = 0;
    const va_cli_opt opts[] = {{"--kernels", NULL, &kernels}, {"--tuned", NULL, &tuned}, {"--all", NULL, &all},
                        {NULL, NULL, NULL}};
    int rc = va_cli_parse("clear", argc, argv, opts, NULL, 0);
    if (rc != VA_CLI_CONTINUE) return rc;
    /* Tuned entries cost GPU hours and compiled kernels seconds: only the latter by default. */
    unsigned what = all ? VA_CACHE_CLEAR_ALL
                        : (tuned ? VA_CACHE_CLEAR_TUNED : 0) |
                              (kernels || !tuned ? VA_CACHE_CLEAR_KERNELS | VA_CACHE_CLEAR_FAILED : 0);
    va_cache *c = va_cli_open_cache("clear", 1);
    if (!c) return VA_CLI_FAIL;
    vecattn_status st = va_cache_clear(c, what);
    if (st == VECATTN_OK)
        printf("%s: cleared%s%s\n", va_cache_path(c),
               what & VA_CACHE_CLEAR_KERNELS ? " compiled kernels, failed configs" : "",
               what & VA_CACHE_CLEAR_TUNED ? (what & VA_CACHE_CLEAR_KERNELS ? ", tuned entries" : " tuned entries")
                                           : "");
    else
        va_cli_failure("clear", "cache %s: %s", va_cache_path(c), va_cache_errmsg(c));
    va_cache_close(c);
    return st == VECATTN_OK ? VA_CLI_OK : VA_CLI_FAIL;
}
