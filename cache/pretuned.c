/*
** pretuned.c -- the tuned files that ship with vecattn, seen by lookups without an import.
**
** Where: <dir of the code>/<VECATTN_PRETUNED_FROM_LIBDIR> (the install rule puts the files in
** <prefix>/share/vecattn/pretuned; the code is libvecattn.so in <prefix>/lib, or a program
** linked with the static library in <prefix>/bin), and, when the code runs from the build
** tree, the source tree's cache/pretuned. The directory of the code comes from dladdr, so an
** installed tree can be moved.
**
** $VECATTN_PRETUNED_DIR, when set, replaces both (empty: no shipped files).
**
** The entries go into the TEMP table shipped_tuned, in memory: the user's cache file is
** never written, read-only and memory caches see them too, and the user's own entries are
** kept apart (list marks shipped ones; export writes only the user's).
*/
#define _GNU_SOURCE /* dladdr */
#include <dirent.h>
#include <dlfcn.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cache/cache_internal.h"

#ifndef VECATTN_PRETUNED_FROM_LIBDIR
#define VECATTN_PRETUNED_FROM_LIBDIR "../share/vecattn/pretuned"
#endif
#ifndef VECATTN_PRETUNED_FROM_BINDIR
#define VECATTN_PRETUNED_FROM_BINDIR "../share/vecattn/pretuned"
#endif

enum { MAX_PRETUNED_BYTES = 16 << 20, MAX_FILES = 256 };

void va_cache_use_shipped(va_cache *c, int on) {
    if (c) c->shipped_wanted = on != 0;
}

const char *va_cache_shipped_status(va_cache *c) {
    if (!c) return "";
    va_shipped_ensure(c);
    return c->shipped_status[0] ? c->shipped_status : "not used";
}

static void append_status(va_cache *c, const char *text) {
    size_t len = strlen(c->shipped_status);
    snprintf(c->shipped_status + len, sizeof c->shipped_status - len, "%s%s", len ? "; " : "", text);
}

static int by_name(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* The *.json names of `dir`, sorted so that the load order (and any message) is stable. */
static int list_json(const char *dir, char **names, int max) {
    DIR *d = opendir(dir);
    if (!d) return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL && n < max) {
        size_t len = strlen(e->d_name);
        if (len > 5 && !strcmp(e->d_name + len - 5, ".json") && e->d_name[0] != '.')
            if ((names[n] = strdup(e->d_name)) != NULL) ++n;
    }
    closedir(d);
    qsort(names, (size_t)n, sizeof *names, by_name);
    return n;
}

static int load_file(va_cache *c, const char *path, int *entries, char *msg, size_t msg_size) {
    size_t len = 0;
    char *text = va_read_file(path, MAX_PRETUNED_BYTES, &len);
    if (!text) return snprintf(msg, msg_size, "%.900s: cannot read", path), -1;
    int merged = 0;
    vecattn_status st = va_json_import_into(c, VA_TUNED_SHIPPED, text, len, path, &merged, msg, msg_size);
    free(text);
    *entries += merged;
    return st == VECATTN_OK ? 0 : -1;
}

int va_cache_load_shipped_dir(va_cache *c, const char *dir, char *msg, size_t msg_size) {
    char *names[MAX_FILES];
    if (msg_size) msg[0] = 0;
    if (!c || va_cache_ready(c) != 0) return snprintf(msg, msg_size, "no cache"), -1;
    int n = list_json(dir, names, MAX_FILES), entries = 0, bad = 0;
    char first_bad[1024] = "";
    for (int i = 0; i < n; ++i) {
        char path[PATH_MAX], why[1024];
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        if (load_file(c, path, &entries, why, sizeof why) != 0 && !bad++)
            snprintf(first_bad, sizeof first_bad, "%s", why);  /* the others still load */
        free(names[i]);
    }
    if (n < 0) snprintf(msg, msg_size, "cannot read the directory");
    else if (!bad) snprintf(msg, msg_size, "%d file%s, %d entries", n, n == 1 ? "" : "s", entries);
    else snprintf(msg, msg_size, "%d of %d files, %d entries; skipped %d, the first: %.700s", n - bad, n, entries,
                  bad, first_bad);
    return bad ? -1 : entries;
}

/* The directory holding the code of vecattn, and whether that is a shared library. */
static int code_dir(char *dir, size_t n, int *is_library) {
    Dl_info info;
    char resolved[PATH_MAX];
    if (!dladdr((void *)&va_cache_use_shipped, &info) || !info.dli_fname ||
        !realpath(info.dli_fname, resolved))
        return -1;
    const char *base = strrchr(resolved, '/');
    *is_library = base && strstr(base, ".so") != NULL;
    snprintf(dir, n, "%.*s", base ? (int)(base - resolved) : 0, resolved);
    return 0;
}

static void load_into_status(va_cache *c, const char *dir) {
    struct stat st;
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) return;
    char msg[1024], line[PATH_MAX + 1100];
    va_cache_load_shipped_dir(c, dir, msg, sizeof msg);
    snprintf(line, sizeof line, "%s: %s", dir, msg);
    append_status(c, line);
}

void va_shipped_ensure(va_cache *c) {
    if (!c->shipped_wanted || c->shipped_loaded) return;
    c->shipped_loaded = 1;
    /* Set, it replaces the search (a team's directory; empty: none, as the tests want). */
    const char *only = getenv("VECATTN_PRETUNED_DIR");
    if (only) {
        if (*only) load_into_status(c, only);
        if (!c->shipped_status[0]) append_status(c, "VECATTN_PRETUNED_DIR: no files loaded");
        return;
    }
    char dir[PATH_MAX], path[PATH_MAX + 64];
    int is_library = 0;
    if (code_dir(dir, sizeof dir, &is_library) != 0) {
        append_status(c, "cannot locate the vecattn code (dladdr failed)");
        return;
    }
    snprintf(path, sizeof path, "%s/%s", dir,
             is_library ? VECATTN_PRETUNED_FROM_LIBDIR : VECATTN_PRETUNED_FROM_BINDIR);
    load_into_status(c, path);
#if defined(VECATTN_SOURCE_DIR) && defined(VECATTN_BINARY_DIR)
    /* Running from the build tree: the files are not installed yet. */
    char build[PATH_MAX];
    size_t len;
    if (realpath(VECATTN_BINARY_DIR, build) && (len = strlen(build)) && !strncmp(dir, build, len) &&
        (dir[len] == '/' || dir[len] == 0))
        load_into_status(c, VECATTN_SOURCE_DIR "/cache/pretuned");
#endif
    if (!c->shipped_status[0]) append_status(c, "no shipped files found");
}
