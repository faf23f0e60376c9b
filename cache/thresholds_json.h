/*
** thresholds_json.h -- per-head thresholds files (JSON), written by `vecattn-autotune
** thresholds` and read by vecattn_load_thresholds (include/vecattn.h) and the Python binding.
**
**   {"format": "vecattn-thresholds", "version": 1,
**    "pq": 64, "bk": 16, "gk": 16, "causal": true,
**    "target_sparsity": 0.8, "recall_target": 0.95, "feasible": true,
**    "mean_sparsity": 0.81, "mean_recall": 0.96,
**    "thresholds": [[p of head 0, p of head 1, ...], ...],   one row per layer
**    "sparsity":   [[...]], "recall": [[...]]}              as measured, same shape
** Readers need only format, version and thresholds; everything else documents the run.
*/
#ifndef VECATTN_THRESHOLDS_JSON_H
#define VECATTN_THRESHOLDS_JSON_H

#include "vecattn.h"

#define VA_THRESHOLDS_FORMAT "vecattn-thresholds"
#define VA_THRESHOLDS_VERSION 1

typedef struct va_thresholds_doc {
    int layers, heads;
    int pq, bk, gk, causal;
    double target_sparsity, recall_target, mean_sparsity, mean_recall;
    int feasible;
    const float *thresholds;   /* [layers * heads] */
    const double *sparsity;    /* [layers * heads] */
    const double *recall;      /* [layers * heads] */
} va_thresholds_doc;

/* Write the document to `path` (replaced); VECATTN_E_JSON with msg on failure. */
vecattn_status va_thresholds_write(const char *path, const va_thresholds_doc *doc, char *msg, size_t msg_size);

#endif /* VECATTN_THRESHOLDS_JSON_H */
