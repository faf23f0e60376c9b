/*
** fuzz_json_import.c -- libFuzzer target for the tuned-file import (cache/json.c).
**
** Beyond "no crash, no leak, no undefined behaviour" (built with ASan and UBSan) it checks
** the import's promises on every input: a rejected file writes nothing and has a message
** that starts with its label; an accepted file leaves only rows that verify.
** Built only with clang (tests/CMakeLists.txt); run briefly by CTest on tests/corpus/json.
*/
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cache/cache.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static long long tuned_rows(va_cache *c) {
    va_cache_stats s;
    return va_cache_get_stats(c, &s) == VECATTN_OK ? s.tuned : -1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static va_cache *cache;
    static unsigned runs;
    if (!cache && !(cache = va_cache_open(":memory:", NULL))) abort();
    long long before = tuned_rows(cache);
    char msg[2048] = "";
    int merged = -1;
    vecattn_status st = va_cache_import_json_text(cache, (const char *)data, size, "fuzz", &merged, msg, sizeof msg);
    if (st != VECATTN_OK) {
        if (st != VECATTN_E_JSON || strncmp(msg, "fuzz: ", 6) != 0) {
            fprintf(stderr, "rejected without a proper status or message: %d \"%s\"\n", (int)st, msg);
            abort();
        }
        if (tuned_rows(cache) != before || merged != 0) {
            fprintf(stderr, "a rejected file wrote rows: %s\n", msg);
            abort();
        }
    } else if (va_cache_verify(cache, NULL, NULL) != 0) {
        fprintf(stderr, "an accepted file left rows that do not verify\n");
        abort();
    }
    if (++runs % 4096 == 0) va_cache_clear(cache, VA_CACHE_CLEAR_ALL);  /* bounded memory */
    return 0;
}
