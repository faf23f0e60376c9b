/*
** json_export.c -- write tuned entries as a vecattn-tuned file (cache/pretuned/FORMAT.md).
**
** "metadata" takes the device and versions of the first entry; an entry whose device or
** versions differ carries its own. The file is written beside its destination and renamed
** into place, so a reader never sees half a file.
*/
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "cache/cache_internal.h"

typedef struct export_state {
    cJSON *root, *entries;
    int count;
    int have_meta;
    va_device_id device;           /* metadata's, for the per-entry overrides */
    va_tune_value meta;            /* vecattn_version, driver_version, nvrtc_id of metadata */
} export_state;

static cJSON *device_object(const va_device_id *d) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "name", d->name);
    cJSON_AddNumberToObject(o, "cc", d->cc);
    cJSON_AddNumberToObject(o, "sm_count", d->sm_count);
    return o;
}

static int same_device(const va_device_id *a, const va_device_id *b) {
    return a->cc == b->cc && a->sm_count == b->sm_count && !strcmp(a->name, b->name);
}

static void add_metadata(export_state *s, const va_tune_key *k, const va_tune_value *v) {
    cJSON *meta = cJSON_AddObjectToObject(s->root, "metadata");
    cJSON_AddStringToObject(meta, "vecattn_version", v->vecattn_version);
    cJSON_AddItemToObject(meta, "device", device_object(&k->device));
    cJSON_AddNumberToObject(meta, "driver_version", v->driver_version);
    cJSON_AddStringToObject(meta, "nvrtc", v->nvrtc_id);
    s->entries = cJSON_AddArrayToObject(s->root, "entries");
    s->device = k->device;
    s->meta = *v;
    s->have_meta = 1;
}

/* What the entry says beyond metadata: its device and versions where they differ. */
static void add_overrides(export_state *s, cJSON *e, const va_tune_key *k, const va_tune_value *v) {
    if (!same_device(&k->device, &s->device)) cJSON_AddItemToObject(e, "device", device_object(&k->device));
    if (strcmp(v->vecattn_version, s->meta.vecattn_version))
        cJSON_AddStringToObject(e, "vecattn_version", v->vecattn_version);
    if (v->driver_version != s->meta.driver_version) cJSON_AddNumberToObject(e, "driver_version", v->driver_version);
    if (strcmp(v->nvrtc_id, s->meta.nvrtc_id)) cJSON_AddStringToObject(e, "nvrtc", v->nvrtc_id);
}

static int add_entry(const va_tune_key *k, const va_tune_value *v, int shipped, void *user) {
    export_state *s = user;
    (void)shipped;
    if (!s->have_meta) add_metadata(s, k, v);
    cJSON *e = cJSON_CreateObject();
    cJSON_AddStringToObject(e, "dtype", va_dtype_name(k->dtype));
    cJSON_AddNumberToObject(e, "head_dim", k->head_dim);
    cJSON_AddNumberToObject(e, "pq", k->pq);
    cJSON_AddNumberToObject(e, "bk", k->bk);
    cJSON_AddNumberToObject(e, "gk", k->gk);
    cJSON_AddBoolToObject(e, "causal", k->causal);
    cJSON_AddStringToObject(e, "stage", va_stage_name(k->stage));
    cJSON_AddNumberToObject(e, "seq_bucket", k->seq_bucket);
    cJSON_AddNumberToObject(e, "sparsity_bucket", k->sparsity_bucket);
    cJSON_AddStringToObject(e, "tiles", v->tiles);
    cJSON_AddNumberToObject(e, "time_ms", v->time_ms);
    cJSON_AddNumberToObject(e, "tflops", v->tflops);
    cJSON_AddNumberToObject(e, "tuned_at", (double)v->tuned_at);
    if (v->kernel_version[0]) cJSON_AddStringToObject(e, "kernel_version", v->kernel_version);
    add_overrides(s, e, k, v);
    cJSON_AddItemToArray(s->entries, e);
    ++s->count;
    return 0;
}

/* Write `text` to a temporary file beside `file`, then rename it into place. */
static int write_atomically(const char *file, const char *text, char *why, size_t n) {
    size_t tmp_len = strlen(file) + 32;
    char *tmp = malloc(tmp_len);
    if (!tmp) return snprintf(why, n, "out of memory"), -1;
    snprintf(tmp, tmp_len, "%s.tmp-%ld", file, (long)getpid());
    FILE *f = fopen(tmp, "wb");
    int ok = f != NULL;
    if (ok) ok = fputs(text, f) >= 0 && fputc('\n', f) != EOF;
    if (ok) ok = fflush(f) == 0 && fsync(fileno(f)) == 0;
    if (f && fclose(f) != 0) ok = 0;
    if (ok) ok = rename(tmp, file) == 0;
    if (!ok) {
        snprintf(why, n, "%s", strerror(errno));
        unlink(tmp);
    }
    free(tmp);
    return ok ? 0 : -1;
}

vecattn_status va_cache_export_json(va_cache *c, const char *file, const va_device_id *only, int *count,
                                    char *msg, size_t msg_size) {
    export_state s;
    memset(&s, 0, sizeof s);
    if (count) *count = 0;
    s.root = cJSON_CreateObject();
    if (!s.root) return snprintf(msg, msg_size, "%s: out of memory", file), VECATTN_E_NOMEM;
    cJSON_AddStringToObject(s.root, "format", "vecattn-tuned");
    cJSON_AddNumberToObject(s.root, "format_version", 1);
    int skipped = 0;
    vecattn_status st = va_cache_foreach_tuned(c, 0, only, add_entry, &s, &skipped);
    char *text = NULL;
    char why[256] = "";
    if (st != VECATTN_OK) {
        snprintf(msg, msg_size, "%s: cannot read cache %s: %s", file, va_cache_path(c), va_cache_errmsg(c));
    } else if (s.count == 0) {
        st = VECATTN_E_CACHE;
        snprintf(msg, msg_size, "%s: not written: no tuned entries%s in cache %s", file,
                 only ? " for that device" : "", va_cache_path(c));
    } else if (!(text = cJSON_Print(s.root)) || write_atomically(file, text, why, sizeof why) != 0) {
        st = VECATTN_E_CACHE;
        snprintf(msg, msg_size, "%s: cannot write: %s", file, text ? why : "out of memory");
    } else {
        if (count) *count = s.count;
        snprintf(msg, msg_size, "%s: %d entries written%s", file, s.count,
                 skipped ? " (invalid rows skipped: see `vecattn-autotune verify`)" : "");
    }
    cJSON_free(text);
    cJSON_Delete(s.root);
    return st;
}
