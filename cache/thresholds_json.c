/*
** thresholds_json.c -- reading and writing per-head thresholds files (thresholds_json.h).
*/
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "cache/cache_internal.h" /* provides: va_read_file */
#include "cache/thresholds_json.h"

static vecattn_status fail(char *msg, size_t msg_size, vecattn_status st, const char *path, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

static vecattn_status fail(char *msg, size_t msg_size, vecattn_status st, const char *path, const char *fmt, ...) {
    if (msg && msg_size) {
        int n = snprintf(msg, msg_size, "%s: ", path ? path : "(null)");
        va_list ap;
        va_start(ap, fmt);
        if (n >= 0 && (size_t)n < msg_size) vsnprintf(msg + n, msg_size - (size_t)n, fmt, ap);
        va_end(ap);
    }
    return st;
}

/* The "thresholds" matrix after checking format, version and shape; *layers, *heads set. */
static vecattn_status checked_matrix(const cJSON *root, const char *path, const cJSON **matrix, int *layers,
                                     int *heads, char *msg, size_t msg_size) {
    const cJSON *format = cJSON_GetObjectItemCaseSensitive(root, "format");
    const cJSON *version = cJSON_GetObjectItemCaseSensitive(root, "version");
    const cJSON *m = cJSON_GetObjectItemCaseSensitive(root, "thresholds");
    if (!cJSON_IsString(format) || strcmp(format->valuestring, VA_THRESHOLDS_FORMAT) != 0)
        return fail(msg, msg_size, VECATTN_E_JSON, path, "\"format\" is not \"%s\"", VA_THRESHOLDS_FORMAT);
    if (!cJSON_IsNumber(version) || version->valuedouble != VA_THRESHOLDS_VERSION)
        return fail(msg, msg_size, VECATTN_E_JSON, path, "\"version\" is not %d", VA_THRESHOLDS_VERSION);
    if (!cJSON_IsArray(m) || cJSON_GetArraySize(m) == 0)
        return fail(msg, msg_size, VECATTN_E_JSON, path, "\"thresholds\" is not a non-empty array of layers");
    int l = 0, h = -1;
    for (const cJSON *row = m->child; row; row = row->next, ++l) {
        if (!cJSON_IsArray(row) || cJSON_GetArraySize(row) == 0)
            return fail(msg, msg_size, VECATTN_E_JSON, path, "thresholds[%d] is not a non-empty array of heads", l);
        if (h >= 0 && cJSON_GetArraySize(row) != h)
            return fail(msg, msg_size, VECATTN_E_JSON, path, "thresholds[%d] has %d heads, thresholds[0] has %d", l,
                        cJSON_GetArraySize(row), h);
        h = cJSON_GetArraySize(row);
        int k = 0;
        for (const cJSON *x = row->child; x; x = x->next, ++k) {
            double p = cJSON_IsNumber(x) ? x->valuedouble : NAN;
            if (!(isfinite(p) && p > 0.0 && p <= 1.0))
                return fail(msg, msg_size, VECATTN_E_JSON, path, "thresholds[%d][%d] is not a number in (0, 1]", l, k);
        }
    }
    *matrix = m, *layers = l, *heads = h;
    return VECATTN_OK;
}

vecattn_status vecattn_load_thresholds(const char *path, int layer, float *thresholds, int heads, int *layers_out,
                                       int *heads_out, char *msg, size_t msg_size) {
    if (msg && msg_size) msg[0] = '\0';
    if (!path) return fail(msg, msg_size, VECATTN_E_MISUSE, path, "no path");
    size_t size = 0;
    char *text = va_read_file(path, (size_t)64 << 20, &size);
    if (!text) return fail(msg, msg_size, VECATTN_E_JSON, path, "cannot read the file");
    cJSON *root = cJSON_ParseWithLength(text, size);
    free(text);
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return fail(msg, msg_size, VECATTN_E_JSON, path, "malformed JSON (or not an object)");
    }
    const cJSON *m = NULL;
    int layers = 0, file_heads = 0;
    vecattn_status st = checked_matrix(root, path, &m, &layers, &file_heads, msg, msg_size);
    if (st == VECATTN_OK) {
        if (layers_out) *layers_out = layers;
        if (heads_out) *heads_out = file_heads;
    }
    if (st == VECATTN_OK && thresholds) {
        if (layer < 0 || layer >= layers)
            st = fail(msg, msg_size, VECATTN_E_INVALID_ARG, path, "layer %d: the file has layers 0..%d", layer,
                      layers - 1);
        else if (heads != file_heads)
            st = fail(msg, msg_size, VECATTN_E_INVALID_ARG, path, "heads = %d, the file has %d per layer", heads,
                      file_heads);
        else {
            const cJSON *x = cJSON_GetArrayItem(m, layer)->child;
            for (int h = 0; h < heads; ++h, x = x->next) thresholds[h] = (float)x->valuedouble;
        }
    }
    cJSON_Delete(root);
    return st;
}

static cJSON *matrix_json(int layers, int heads, const float *f, const double *d) {
    cJSON *m = cJSON_CreateArray();
    for (int l = 0; m && l < layers; ++l) {
        cJSON *row = cJSON_CreateArray();
        for (int h = 0; row && h < heads; ++h) {
            double x = f ? (double)f[l * heads + h] : d[l * heads + h];
            /* 6 decimals: the tuner rounds its thresholds so, and they read back exactly */
            cJSON_AddItemToArray(row, cJSON_CreateNumber(round(x * 1e6) / 1e6));
        }
        cJSON_AddItemToArray(m, row);
    }
    return m;
}

vecattn_status va_thresholds_write(const char *path, const va_thresholds_doc *doc, char *msg, size_t msg_size) {
    cJSON *root = cJSON_CreateObject();
    if (!root) return fail(msg, msg_size, VECATTN_E_NOMEM, path, "out of memory");
    cJSON_AddStringToObject(root, "format", VA_THRESHOLDS_FORMAT);
    cJSON_AddNumberToObject(root, "version", VA_THRESHOLDS_VERSION);
    cJSON_AddNumberToObject(root, "pq", doc->pq);
    cJSON_AddNumberToObject(root, "bk", doc->bk);
    cJSON_AddNumberToObject(root, "gk", doc->gk);
    cJSON_AddBoolToObject(root, "causal", doc->causal);
    cJSON_AddNumberToObject(root, "target_sparsity", doc->target_sparsity);
    cJSON_AddNumberToObject(root, "recall_target", doc->recall_target);
    cJSON_AddBoolToObject(root, "feasible", doc->feasible);
    cJSON_AddNumberToObject(root, "mean_sparsity", round(doc->mean_sparsity * 1e6) / 1e6);
    cJSON_AddNumberToObject(root, "mean_recall", round(doc->mean_recall * 1e6) / 1e6);
    cJSON_AddItemToObject(root, "thresholds", matrix_json(doc->layers, doc->heads, doc->thresholds, NULL));
    if (doc->sparsity) cJSON_AddItemToObject(root, "sparsity", matrix_json(doc->layers, doc->heads, NULL, doc->sparsity));
    if (doc->recall) cJSON_AddItemToObject(root, "recall", matrix_json(doc->layers, doc->heads, NULL, doc->recall));
    char *text = cJSON_Print(root);
    cJSON_Delete(root);
    if (!text) return fail(msg, msg_size, VECATTN_E_NOMEM, path, "out of memory");
    FILE *f = fopen(path, "wb");
    int ok = f && fputs(text, f) >= 0 && fputc('\n', f) != EOF;
    if (f && fclose(f) != 0) ok = 0;
    free(text);
    return ok ? VECATTN_OK : fail(msg, msg_size, VECATTN_E_JSON, path, "cannot write the file");
}
