/*
** test_cache_json.c -- the tuned-file format: export -> import round trip (every field, every
** device), export of one device, merging (the faster entry stays), and a corpus of malformed
** files (wrong types, missing and unknown fields, huge numbers, NaN-like values, truncated,
** not JSON, wrong format version, ...) each of which must give VECATTN_E_JSON with a message
** naming the file, the entry and the field, and write nothing.
*/
#include <string.h>

#include "test_util.h"
#include "cache_util.h"

/* ---- a fingerprint of everything in the tuned table ------------------------------------- */

typedef struct digest {
    uint64_t h;
    int n;
} digest;

static int add_to_digest(const va_tune_key *k, const va_tune_value *v, int shipped, void *user) {
    digest *d = user;
    /* Field by field: the structs have padding whose bytes are not part of the entry. */
    d->h = va_fnv1a(d->h, k->device.name, strlen(k->device.name));
    int ints[] = {k->device.cc, k->device.sm_count, (int)k->dtype, k->head_dim, k->pq, k->bk, k->gk, k->causal,
                  (int)k->stage, k->seq_bucket, k->sparsity_bucket, v->driver_version, shipped};
    d->h = va_fnv1a(d->h, ints, sizeof ints);
    d->h = va_fnv1a(d->h, v->tiles, strlen(v->tiles));
    d->h = va_fnv1a(d->h, &v->time_ms, sizeof v->time_ms);
    d->h = va_fnv1a(d->h, &v->tflops, sizeof v->tflops);
    d->h = va_fnv1a(d->h, &v->tuned_at, sizeof v->tuned_at);
    d->h = va_fnv1a(d->h, v->vecattn_version, strlen(v->vecattn_version));
    d->h = va_fnv1a(d->h, v->nvrtc_id, strlen(v->nvrtc_id));
    d->h = va_fnv1a(d->h, v->kernel_version, strlen(v->kernel_version) + 1);
    ++d->n;
    return 0;
}

static digest digest_of(va_cache *c) {
    digest d = {VA_FNV_OFFSET, 0};
    int skipped = 0;
    CHECK(va_cache_foreach_tuned(c, 0, NULL, add_to_digest, &d, &skipped) == VECATTN_OK && skipped == 0,
          "walk the tuned entries");
    return d;
}

/* Entries on three devices, both stages, several buckets, one with other versions. */
static void fill(va_cache *c) {
    va_tune_key k;
    va_tune_value v;
    const struct { int cc, sms; const char *name; } devs[] = {
        {90, 132, "NVIDIA H100 80GB HBM3"}, {90, 114, "NVIDIA H100 PCIe"}, {80, 108, "NVIDIA A100-SXM4-80GB"}};
    for (int d = 0; d < 3; ++d)
        for (int seq = 12; seq <= 17; seq += 5) {
            sample_entry(&k, &v, devs[d].cc, devs[d].sms, devs[d].name, VA_STAGE_SELECTION, seq, -1, 0.1 + seq * 0.01);
            CHECK(va_cache_put_tuned(c, &k, &v) == VECATTN_OK, "put: %s", va_cache_errmsg(c));
            for (int sp = 0; sp < 4; sp += 3) {
                sample_entry(&k, &v, devs[d].cc, devs[d].sms, devs[d].name, VA_STAGE_ATTENTION, seq, sp,
                             1.0 / 3.0 + sp);  /* a time that does not print exactly in 15 digits */
                k.causal = sp == 0;
                k.head_dim = 64;
                default_tiles(VA_STAGE_ATTENTION, devs[d].cc, 64, v.tiles, sizeof v.tiles);
                if (d == 2) snprintf(v.nvrtc_id, sizeof v.nvrtc_id, "12.8/other"), v.driver_version = 12080;
                if (d == 1) v.kernel_version[0] = '\0'; /* unknown: no field in the file */
                CHECK(va_cache_put_tuned(c, &k, &v) == VECATTN_OK, "put: %s", va_cache_errmsg(c));
            }
        }
}

static void test_round_trip(const char *dir) {
    va_cache *a = va_cache_open(":memory:", NULL), *b = va_cache_open(":memory:", NULL);
    char *file = path_in(dir, "all.json"), msg[2048];
    int count = 0, merged = 0;
    CHECK(va_cache_export_json(a, file, NULL, &count, msg, sizeof msg) == VECATTN_E_CACHE, "empty export fails");
    CHECK(file_bytes(file) < 0, "an empty export writes no file");
    fill(a);
    digest da = digest_of(a);
    CHECK(va_cache_export_json(a, file, NULL, &count, msg, sizeof msg) == VECATTN_OK, "export: %s", msg);
    CHECK(count == da.n && count == 18, "exported %d of %d entries", count, da.n);
    CHECK(va_cache_import_json(b, file, &merged, msg, sizeof msg) == VECATTN_OK, "import: %s", msg);
    digest db = digest_of(b);
    CHECK(merged == count && db.n == da.n && db.h == da.h, "round trip: %d entries, digests %016llx %016llx",
          db.n, (unsigned long long)da.h, (unsigned long long)db.h);
    /* Importing the same file again changes nothing: every entry is as fast as itself. */
    CHECK(va_cache_import_json(b, file, &merged, msg, sizeof msg) == VECATTN_OK && merged == 0, "re-import merges 0");
    /* One device, chosen by cc + SM count. */
    va_device_id only = {.cc = 90, .sm_count = 114};
    va_cache *c = va_cache_open(":memory:", NULL);
    char *one = path_in(dir, "one.json");
    CHECK(va_cache_export_json(a, one, &only, &count, msg, sizeof msg) == VECATTN_OK && count == 6,
          "export of one device: %d entries (%s)", count, msg);
    CHECK(va_cache_import_json(c, one, &merged, msg, sizeof msg) == VECATTN_OK && merged == 6, "import one: %s", msg);
    va_device_id none = {.cc = 86, .sm_count = 84};
    CHECK(va_cache_export_json(a, one, &none, &count, msg, sizeof msg) == VECATTN_E_CACHE, "no entries for 86:84");
    va_cache_close(a), va_cache_close(b), va_cache_close(c);
    free(file), free(one);
}

/* ---- merging ------------------------------------------------------------------------- */

static const char doc_head[] =
    "{\"format\": \"vecattn-tuned\", \"format_version\": 1, \"metadata\": {\"vecattn_version\": \"0.1.0\","
    " \"device\": {\"name\": \"NVIDIA H100 80GB HBM3\", \"cc\": 90, \"sm_count\": 132}, \"driver_version\": 13000,"
    " \"nvrtc\": \"13.0/x\"}, \"entries\": [";

static void test_merge(void) {
    va_cache *c = va_cache_open(":memory:", NULL);
    va_tune_key k;
    va_tune_value v, got;
    sample_entry(&k, &v, 90, 132, "NVIDIA H100 80GB HBM3", VA_STAGE_SELECTION, 15, -1, 2.0);
    CHECK(va_cache_put_tuned(c, &k, &v) == VECATTN_OK, "put");
    char doc[4096], msg[1024];
    int merged = -1;
    const char *entry = "{\"dtype\": \"bf16\", \"head_dim\": 128, \"pq\": 64, \"bk\": 16, \"gk\": 16, \"causal\": true,"
                        " \"stage\": \"selection\", \"seq_bucket\": 15, \"sparsity_bucket\": -1, \"tiles\": \"%s\","
                        " \"time_ms\": %s, \"tflops\": 1, \"tuned_at\": 1}";
    char e[1024];
    snprintf(e, sizeof e, entry, v.tiles, "3.0");
    snprintf(doc, sizeof doc, "%s%s]}", doc_head, e);
    CHECK(va_cache_import_json_text(c, doc, strlen(doc), "slower", &merged, msg, sizeof msg) == VECATTN_OK &&
              merged == 0, "a slower entry is not merged (%d): %s", merged, msg);
    CHECK(va_cache_lookup_tuned(c, &k, &got) == VA_TUNE_EXACT && got.time_ms == 2.0, "the faster one stays");
    snprintf(e, sizeof e, entry, v.tiles, "0.5");
    snprintf(doc, sizeof doc, "%s%s]}", doc_head, e);
    CHECK(va_cache_import_json_text(c, doc, strlen(doc), "faster", &merged, msg, sizeof msg) == VECATTN_OK &&
              merged == 1, "a faster entry replaces it: %s", msg);
    CHECK(va_cache_lookup_tuned(c, &k, &got) == VA_TUNE_EXACT && got.time_ms == 0.5 && !strcmp(got.nvrtc_id, "13.0/x"),
          "the imported entry, with the metadata's versions");
    va_cache_close(c);
}

/* ---- the malformed corpus ------------------------------------------------------------ */

/* The fields of a valid selection entry; a case replaces one (or drops it, or adds one). */
static const char *const good_fields[][2] = {
    {"dtype", "\"bf16\""}, {"head_dim", "128"}, {"pq", "64"}, {"bk", "16"}, {"gk", "16"}, {"causal", "true"},
    {"stage", "\"selection\""}, {"seq_bucket", "15"}, {"sparsity_bucket", "-1"}, {"tiles", "\"select_rows=16\""},
    {"time_ms", "1.5"}, {"tflops", "10"}, {"tuned_at", "1700000000"}};

/* A document of two entries: a valid one, then one with `field` set to `value` (NULL: left out;
** a field not in the list is added). */
static void build_doc(char *doc, size_t n, const char *field, const char *value) {
    size_t len = (size_t)snprintf(doc, n, "%s{", doc_head);
    int found = 0;
    for (size_t i = 0; i < sizeof good_fields / sizeof good_fields[0]; ++i)
        len += (size_t)snprintf(doc + len, n - len, "%s\"%s\": %s", i ? ", " : "", good_fields[i][0], good_fields[i][1]);
    len += (size_t)snprintf(doc + len, n - len, "}, {");
    for (size_t i = 0, first = 1; i < sizeof good_fields / sizeof good_fields[0]; ++i) {
        int is_it = !strcmp(good_fields[i][0], field);
        found |= is_it;
        if (is_it && !value) continue;
        len += (size_t)snprintf(doc + len, n - len, "%s\"%s\": %s", first ? "" : ", ", good_fields[i][0],
                                is_it ? value : good_fields[i][1]);
        first = 0;
    }
    if (!found) len += (size_t)snprintf(doc + len, n - len, ", \"%s\": %s", field, value);
    snprintf(doc + len, n - len, "}]}");
}

typedef struct field_case {
    const char *field, *value, *expect;
} field_case;

static const field_case field_cases[] = {
    {"pq", "\"64\"", "entry 1: field \"pq\": expected an integer"},
    {"pq", "24", "field \"pq\": 24 is not a power of two"},
    {"pq", "1e400", "field \"pq\""},                         /* parses as infinity */
    {"pq", "64.5", "field \"pq\": 64.5 is not an integer"},
    {"head_dim", "96", "field \"head_dim\": 96 is not 64 or 128"},
    {"head_dim", "-128", "field \"head_dim\""},
    {"gk", NULL, "field \"gk\": missing"},
    {"tiles", NULL, "field \"tiles\": missing"},
    {"time_ms", "1e308", "field \"time_ms\""},
    {"time_ms", "-1", "field \"time_ms\""},
    {"time_ms", "0", "field \"time_ms\""},
    {"time_ms", "\"NaN\"", "field \"time_ms\": expected a number"},
    {"time_ms", "NaN", "not valid JSON"},
    {"time_ms", "Infinity", "not valid JSON"},
    {"time_ms", "-Infinity", "not valid JSON"},
    {"time_ms", "null", "field \"time_ms\": expected a number"},
    {"tflops", "[1]", "field \"tflops\": expected a number"},
    {"tuned_at", "1.5", "field \"tuned_at\": 1.5 is not an integer"},
    {"tuned_at", "99999999999999999999999999", "field \"tuned_at\""},
    {"causal", "1", "field \"causal\": expected true or false"},
    {"causal", "\"true\"", "field \"causal\""},
    {"stage", "\"decode\"", "field \"stage\""},
    {"dtype", "\"fp32\"", "field \"dtype\""},
    {"dtype", "{}", "field \"dtype\": expected a string"},
    {"seq_bucket", "30", "field \"seq_bucket\""},
    {"sparsity_bucket", "2", "field \"sparsity_bucket\""},  /* selection has none */
    {"tiles", "\"block_m=64\"", "field \"tiles\""},        /* an attention parameter */
    {"tiles", "\"select_rows=48\"", "field \"tiles\""},
    {"tiles", "\"select_rows=\"", "field \"tiles\""},
    {"tiles", "\"\"", "field \"tiles\": length 0"},
    {"tiles", "\"select_rows=16\\u0001\"", "control character"},
    {"tiles", "\"select_rows=16,select_rows=16,select_rows=16,select_rows=16,select_rows=16,select_rows=16,"
              "select_rows=16,select_rows=16,select_rows=16\"", "field \"tiles\": length"},
    {"colour", "\"blue\"", "field \"colour\": unknown field"},
    {"device", "{\"name\": \"X\", \"cc\": 75, \"sm_count\": 40}", "device: field \"cc\""},
    {"device", "{\"name\": \"X\", \"cc\": 90}", "device: field \"sm_count\": missing"},
    {"nvrtc", "42", "field \"nvrtc\": expected a string"},
    {"kernel_version", "\"0123\"", "field \"kernel_version\": expected 16 lowercase hex digits"},
    {"kernel_version", "\"0123456789ABCDEF\"", "field \"kernel_version\": expected 16 lowercase hex digits"},
    {"kernel_version", "\"0123456789abcdef0\"", "field \"kernel_version\""},
    {"kernel_version", "16", "field \"kernel_version\": expected a string"},
};

typedef struct doc_case {
    const char *name, *text, *expect;
} doc_case;

static const doc_case doc_cases[] = {
    {"empty", "", "not valid JSON"},
    {"not json", "hello", "not valid JSON (line 1"},
    {"array", "[]", "the top level is not an object"},
    {"empty object", "{}", "field \"format\": missing"},
    {"trailing garbage", "{} x", "not valid JSON"},
    {"format", "{\"format\": \"other\", \"format_version\": 1}", "field \"format\": \"other\""},
    {"format_version 2", "{\"format\": \"vecattn-tuned\", \"format_version\": 2}", "format_version\": 2 is not supported"},
    {"format_version text", "{\"format\": \"vecattn-tuned\", \"format_version\": \"1\"}", "format_version\": expected"},
    {"no metadata", "{\"format\": \"vecattn-tuned\", \"format_version\": 1, \"entries\": []}", "field \"metadata\": missing"},
    {"duplicate key", "{\"format\": \"vecattn-tuned\", \"format\": \"vecattn-tuned\"}", "field \"format\": appears twice"},
    {"no entries", "", "field \"entries\": missing"},            /* filled in below */
    {"entries object", "", "field \"entries\": expected an array"},
    {"entry not object", "", "entry 0: expected an object"},
    {"metadata sm_count", "", "metadata: device: field \"sm_count\": 0 is not in"},
    {"metadata name", "", "metadata: device: field \"name\": length"},
};

static void fill_doc_case(const doc_case *dc, char *doc, size_t n) {
    if (dc->text[0] || !strcmp(dc->name, "empty")) {
        snprintf(doc, n, "%s", dc->text);
    } else if (!strcmp(dc->name, "no entries")) {
        snprintf(doc, n, "%.*s}", (int)(strlen(doc_head) - strlen(", \"entries\": [")), doc_head);
    } else if (!strcmp(dc->name, "entries object")) {
        snprintf(doc, n, "%.*s{}}", (int)strlen(doc_head) - 1, doc_head);
    } else if (!strcmp(dc->name, "entry not object")) {
        snprintf(doc, n, "%s[1]]}", doc_head);
    } else {
        build_doc(doc, n, "tuned_at", "1");
        const char *from = !strcmp(dc->name, "metadata sm_count") ? "\"sm_count\": 132" : "\"NVIDIA H100 80GB HBM3\"";
        const char *to = !strcmp(dc->name, "metadata sm_count")
                             ? "\"sm_count\": 0"
                             : "\"0123456789012345678901234567890123456789012345678901234567890123456789"
                               "012345678901234567890123456789012345678901234567890123456789\"";
        char *at = strstr(doc, from), rest[8192];
        snprintf(rest, sizeof rest, "%s", at + strlen(from));
        snprintf(at, n - (size_t)(at - doc), "%s%s", to, rest);
    }
}

/* Import `doc`: must fail with VECATTN_E_JSON, name the label and `expect`, write nothing. */
static void expect_rejected(va_cache *c, digest before, const char *label, const char *doc, size_t len,
                            const char *expect) {
    char msg[2048] = "";
    int merged = -1;
    vecattn_status st = va_cache_import_json_text(c, doc, len, label, &merged, msg, sizeof msg);
    CHECK(st == VECATTN_E_JSON, "%s: status %d, want VECATTN_E_JSON (%s)", label, (int)st, msg);
    CHECK(!strncmp(msg, label, strlen(label)) && strstr(msg, expect), "%s: message \"%s\" lacks \"%s\"", label,
          msg, expect);
    digest after = digest_of(c);
    CHECK(after.n == before.n && after.h == before.h && merged == 0, "%s: nothing written", label);
}

static void test_malformed(void) {
    va_cache *c = va_cache_open(":memory:", NULL);
    fill(c);
    digest before = digest_of(c);
    char doc[16384], label[128];
    build_doc(doc, sizeof doc, "tuned_at", "1700000000");
    int merged = 0;
    char msg[1024];
    va_cache *scratch = va_cache_open(":memory:", NULL);
    CHECK(va_cache_import_json_text(scratch, doc, strlen(doc), "good", &merged, msg, sizeof msg) == VECATTN_OK &&
              merged == 1, "the corpus's base document is valid: %s", msg);
    va_cache_close(scratch);
    for (size_t i = 0; i < sizeof field_cases / sizeof field_cases[0]; ++i) {
        const field_case *fc = &field_cases[i];
        build_doc(doc, sizeof doc, fc->field, fc->value);
        snprintf(label, sizeof label, "case-%s-%zu.json", fc->field, i);
        expect_rejected(c, before, label, doc, strlen(doc), fc->expect);
    }
    for (size_t i = 0; i < sizeof doc_cases / sizeof doc_cases[0]; ++i) {
        fill_doc_case(&doc_cases[i], doc, sizeof doc);
        snprintf(label, sizeof label, "doc-%zu.json", i);
        expect_rejected(c, before, label, doc, strlen(doc), doc_cases[i].expect);
    }
    /* Truncated at every tenth byte; a NUL inside; nested too deep for cJSON. */
    build_doc(doc, sizeof doc, "tuned_at", "1700000000");
    for (size_t cut = 0; cut + 1 < strlen(doc); cut += 10) {
        snprintf(label, sizeof label, "truncated-%zu.json", cut);
        expect_rejected(c, before, label, doc, cut, "");
    }
    expect_rejected(c, before, "nul.json", "{\"format\"\0:1}", 13, "NUL byte");
    size_t depth = 3000;
    char *deep = malloc(2 * depth + 1);
    memset(deep, '[', depth);
    memset(deep + depth, ']', depth);
    deep[2 * depth] = 0;
    expect_rejected(c, before, "deep.json", deep, 2 * depth, "not valid JSON");
    free(deep);
    va_cache_close(c);
}

static void test_missing_file(const char *dir) {
    va_cache *c = va_cache_open(":memory:", NULL);
    char *file = path_in(dir, "absent.json"), msg[1024];
    CHECK(va_cache_import_json(c, file, NULL, msg, sizeof msg) == VECATTN_E_INVALID_ARG && strstr(msg, file),
          "a missing file is named: %s", msg);
    va_cache_close(c);
    free(file);
}

int main(void) {
    char *dir = scratch_dir("json");
    test_round_trip(dir);
    test_merge();
    test_malformed();
    test_missing_file(dir);
    remove_tree(dir);
    free(dir);
    return test_exit_code("test_cache_json");
}
