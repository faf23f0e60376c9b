/*
** spec.c -- kernel specifications: built-in defaults, validation, launch shapes.
** The numbers here must agree with the templates (SelectShape, AttnShape).
*/
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codegen/codegen.h"


static int is_pow2_between(int x, int lo, int hi) {
    return x >= lo && x <= hi && (x & (x - 1)) == 0;
}

void va_spec_default_select(va_kernel_spec *spec, int arch, vecattn_dtype dtype, int head_dim,
                            int causal, int pq, int bk, int gk) {
    *spec = (va_kernel_spec){0};
    spec->kind = VA_KERNEL_SELECT;
    spec->arch = arch;
    spec->dtype = dtype;
    spec->head_dim = head_dim;
    spec->causal = causal ? 1 : 0;
    spec->pq = pq;
    spec->bk = bk;
    spec->gk = gk;
    spec->select_rows = 64;  /* H200, 32K causal: 16 / 32 / 64 rows = 4.8 / 3.2 / 2.8 ms (v3) */
}

void va_spec_default_attention(va_kernel_spec *spec, int arch, vecattn_dtype dtype, int head_dim,
                               int causal, int pq) {
    *spec = (va_kernel_spec){0};
    spec->kind = VA_KERNEL_ATTENTION;
    spec->arch = arch;
    spec->dtype = dtype;
    spec->head_dim = head_dim;
    spec->causal = causal ? 1 : 0;
    spec->pq = pq;
    spec->block_m = pq < 64 ? pq : 64;
    spec->block_n = 64;
    spec->warps = spec->block_m / 16;
    /* Measured on an H200 (bench/NOTES.md, v3): three CTAs per SM, which fits only with Q
    ** re-read from shared memory, gains 16% non-causal at D 128; D 64 is indifferent. */
    if (head_dim == 128) spec->q_in_smem = 1, spec->ctas_per_sm = 3;
    /* Hopper: the wgmma kernel (H200, 16K: 277-295 TFLOP/s at D 128 against 207 for mma.sync),
    ** at 4 CTAs per SM (128 registers, no spill; 32K causal 290 -> 311 TFLOP/s). */
    if (arch == 90 && pq >= 64) {
        spec->impl = 1;
        spec->block_m = 64, spec->block_n = 64, spec->warps = 4;
        spec->q_in_smem = 0, spec->ctas_per_sm = 4;
    }
    /* Where a query block has 128 rows (the dense mode always tiles so): two warpgroups share
    ** each K/V tile, half the gather traffic per FLOP, fed by eight producer warps, 128 keys
    ** a step (bench/NOTES.md, attention v7 and v8; H200 32K causal dense: v4 ~290, v7 348,
    ** v8 403 TFLOP/s). */
    if (arch == 90 && pq >= 128) {
        spec->impl = 2;
        spec->block_m = 128, spec->block_n = 128, spec->warps = 16, spec->ctas_per_sm = 1;
    }
}

const char *va_arch_target(int arch) {
    switch (arch) {
    case 80: return "sm_80";
    case 86: return "sm_86";
    case 87: return "sm_87";
    case 89: return "sm_89";
    case 90: return "sm_90a";
    case 100: return "sm_100a";
    case 120: return "sm_120a";
    default: return NULL;
    }
}

/* Largest dynamic shared memory a CTA may opt into, per architecture. */
static size_t arch_smem_limit(int arch) {
    if (arch == 80 || arch == 87) return 163 * 1024;
    if (arch == 90 || arch == 100) return 227 * 1024;
    return 99 * 1024;
}

static int select_key_chunk(const va_kernel_spec *s) { return s->bk > 64 ? s->bk : 64; }

int va_spec_threads(const va_kernel_spec *s) {
    return s->kind == VA_KERNEL_SELECT ? s->select_rows * 2 : s->warps * 32;  /* selection: a warp per 16 rows */
}

size_t va_spec_smem_bytes(const va_kernel_spec *s) {
    size_t d = (size_t)s->head_dim;
    if (s->kind == VA_KERNEL_SELECT) {
        size_t kc = (size_t)select_key_chunk(s), rows = (size_t)s->select_rows;
        /* pooled queries (then key buffer 2), two more key buffers: select.cuh's SelectShape */
        size_t q_bytes = rows * d * 2, k_bytes = kc * d * 2;
        return (q_bytes > k_bytes ? q_bytes : k_bytes) + 2 * k_bytes;
    }
    size_t bm = (size_t)s->block_m, bn = (size_t)s->block_n;
    if (s->impl == 2) { /* Q | K stages | V stages | positions, flags | 3 mbarriers per stage */
        size_t stages = (size_t)va_spec_stages(s);
        size_t producer_warps = (size_t)va_spec_producer_warps(s);
        return 1024 + bm * d * 2 + stages * (2 * bn * d * 2 + bn * 4 + 4 * producer_warps) + 8 + stages * 24;
    }
    size_t align_slack = s->impl == 1 ? 1024 : 0;  /* wgmma tiles start on 1024-byte boundaries */
    return bm * d * 2 + 2 * bn * d * 2 + 2 * bn * 4 + align_slack;
}

/* The warp-specialized kernel's K/V ring: two stages keep two CTAs of one warpgroup on an
** SM; a CTA of two warpgroups is alone on its SM and takes four of 64 keys or three of 128. */
int va_spec_producer_warps(const va_kernel_spec *s) { return s->warps - s->block_m / 16; }

int va_spec_stages(const va_kernel_spec *s) {
    if (s->impl != 2) return 1;
    return s->block_m == 64 ? 2 : s->block_n == 128 ? 3 : 4; /* 3 x 64 KiB fill the 227 KiB */
}

#define BAD(...) (snprintf(msg, msg_size, __VA_ARGS__), VECATTN_E_CODEGEN)

static vecattn_status validate_common(const va_kernel_spec *s, char *msg, size_t msg_size) {
    if (!va_arch_target(s->arch))
        return BAD("arch %d is not supported (sm_80 and newer: 80, 86, 87, 89, 90, 100, 120)",
                   s->arch);
    if (s->dtype != VECATTN_BF16 && s->dtype != VECATTN_FP16)
        return BAD("dtype %d is neither bf16 nor fp16", (int)s->dtype);
    if (s->head_dim != 64 && s->head_dim != 128)
        return BAD("head_dim %d is not supported (64 or 128)", s->head_dim);
    if (!is_pow2_between(s->pq, 16, 128))
        return BAD("pq %d is not one of 16, 32, 64, 128", s->pq);
    return VECATTN_OK;
}

static vecattn_status validate_select(const va_kernel_spec *s, char *msg, size_t msg_size) {
    if (!is_pow2_between(s->bk, 8, 128))
        return BAD("bk %d is not one of 8, 16, 32, 64, 128", s->bk);
    if (s->gk < 1 || (long long)s->gk * s->bk > (1ll << 30))
        return BAD("gk %d must be >= 1 with gk * bk <= 2^30", s->gk);
    if (s->causal && (s->bk > s->pq || s->pq % s->bk != 0))
        return BAD("causal selection needs bk <= pq and pq %% bk == 0 (bk %d, pq %d)", s->bk, s->pq);
    if (!is_pow2_between(s->select_rows, 16, 128))
        return BAD("select_rows %d is not one of 16, 32, 64, 128", s->select_rows);
    return VECATTN_OK;
}

static vecattn_status validate_attention(const va_kernel_spec *s, char *msg, size_t msg_size) {
    if (!is_pow2_between(s->block_m, 16, 128) || s->block_m > s->pq)
        return BAD("block_m %d must be 16, 32, 64 or 128 and divide pq %d", s->block_m, s->pq);
    if (s->block_n != 32 && s->block_n != 64 && !(s->impl == 2 && s->block_n == 128))
        return BAD("block_n %d is not 32 or 64 (128: impl 2 only)", s->block_n);
    if (s->impl < 0 || s->impl > 2)
        return BAD("impl %d is not 0 (mma.sync), 1 (wgmma) or 2 (wgmma, warp-specialized)", s->impl);
    if (s->impl == 2) {
        int producer_warps = va_spec_producer_warps(s);
        if (s->arch != 90 || (s->block_m != 64 && s->block_m != 128) ||
            (s->block_n != 64 && !(s->block_n == 128 && s->block_m == 128)) ||
            (producer_warps != 1 && producer_warps != 2 && producer_warps != 4 && producer_warps != 8) ||
            s->pq < s->block_m ||
            s->q_in_smem != 0)
            return BAD("impl 2 (warp-specialized wgmma) needs sm_90a, block_m 64 or 128, warps = block_m / 16 "
                       "+ 1, 2, 4 or 8 (a warpgroup per 64 rows and the producer warps), block_n 64 (or 128 with "
                       "block_m 128), q_in_smem 0 and pq >= block_m");
        if (s->ctas_per_sm < 0 || s->ctas_per_sm > 2) return BAD("ctas_per_sm %d is not in 0..2", s->ctas_per_sm);
        /* its K/V ring takes most of an SM's shared memory, and at two CTAs ptxas finds 64-102
        ** registers a thread: too few for the wgmmas (C7602) or only serialized (C7512) */
        if (s->block_m == 128 && s->ctas_per_sm == 2)
            return BAD("impl 2 with block_m 128 (two consumer warpgroups) runs one CTA per SM: ctas_per_sm 0 or 1");
        if (producer_warps % 4 == 0 && s->ctas_per_sm == 0)
            return BAD("impl 2 with whole producer warpgroups needs ctas_per_sm 1 or 2: the register split "
                       "(setmaxnreg) is computed from the launch bound");
        return VECATTN_OK;
    }
    if (s->impl == 1 && (s->arch != 90 || (s->block_m != 64 && s->block_m != 128) || s->block_n != 64 ||
                         s->warps != s->block_m / 16 || s->pq < s->block_m))
        return BAD("impl 1 (wgmma) needs sm_90a, block_m 64 or 128 (a warpgroup per 64 rows: warps 4 or 8), "
                   "block_n 64 and pq >= block_m");
    if (s->q_in_smem != 0 && s->q_in_smem != 1) return BAD("q_in_smem %d is not 0 or 1", s->q_in_smem);
    if (s->block_m == 32 * s->warps && !s->q_in_smem)
        return BAD("q_in_smem 0 with two row atoms per warp (block_m %d, warps %d): Q is always re-read",
                   s->block_m, s->warps);
    if (s->ctas_per_sm < 0 || s->ctas_per_sm > 8)
        return BAD("ctas_per_sm %d is not in 0..8", s->ctas_per_sm);
    if (!is_pow2_between(s->warps, 1, 8) ||
        (s->block_m != 16 * s->warps && s->block_m != 32 * s->warps))
        return BAD("warps %d: block_m %d must be 16 or 32 rows per warp", s->warps, s->block_m);
    return VECATTN_OK;
}

vecattn_status va_spec_validate(const va_kernel_spec *s, char *msg, size_t msg_size) {
    if (!s) return BAD("no kernel spec");
    vecattn_status st = validate_common(s, msg, msg_size);
    if (st == VECATTN_OK)
        st = s->kind == VA_KERNEL_SELECT      ? validate_select(s, msg, msg_size)
             : s->kind == VA_KERNEL_ATTENTION ? validate_attention(s, msg, msg_size)
                                              : BAD("unknown kernel kind %d", (int)s->kind);
    if (st == VECATTN_OK && va_spec_smem_bytes(s) > arch_smem_limit(s->arch))
        return BAD("tiles need %zu bytes of shared memory, %s allows %zu", va_spec_smem_bytes(s),
                   va_arch_target(s->arch), arch_smem_limit(s->arch));
    return st;
}

/* ---- tile parameters as text ------------------------------------------------------------ */

/* One row per tunable field: its name, the kind it belongs to, and where it lives. */
typedef struct tile_field {
    const char *name;
    va_kernel_kind kind;
    size_t offset;
} tile_field;

static const tile_field tile_fields[] = {
    {"select_rows", VA_KERNEL_SELECT, offsetof(va_kernel_spec, select_rows)},
    {"block_m", VA_KERNEL_ATTENTION, offsetof(va_kernel_spec, block_m)},
    {"block_n", VA_KERNEL_ATTENTION, offsetof(va_kernel_spec, block_n)},
    {"warps", VA_KERNEL_ATTENTION, offsetof(va_kernel_spec, warps)},
    {"impl", VA_KERNEL_ATTENTION, offsetof(va_kernel_spec, impl)},
    {"q_in_smem", VA_KERNEL_ATTENTION, offsetof(va_kernel_spec, q_in_smem)},
    {"ctas_per_sm", VA_KERNEL_ATTENTION, offsetof(va_kernel_spec, ctas_per_sm)},
};
enum { N_TILE_FIELDS = (int)(sizeof tile_fields / sizeof tile_fields[0]) };

static int *field_ptr(va_kernel_spec *s, const tile_field *f) { return (int *)((char *)s + f->offset); }

int va_spec_tiles_format(const va_kernel_spec *s, char *buf, size_t n) {
    int len = 0;
    if (n) buf[0] = 0;
    for (int i = 0; i < N_TILE_FIELDS; ++i) {
        if (tile_fields[i].kind != s->kind) continue;
        int v = *field_ptr((va_kernel_spec *)s, &tile_fields[i]);
        size_t room = (size_t)len < n ? n - (size_t)len : 0;
        len += snprintf(room ? buf + len : NULL, room, "%s%s=%d", len ? "," : "", tile_fields[i].name, v);
    }
    return len;
}

vecattn_status va_spec_tiles_parse(va_kernel_spec *s, const char *text, char *msg, size_t msg_size) {
    const char *p = text ? text : "";
    while (*p) {
        const char *eq = strchr(p, '=');
        if (!eq) return BAD("tiles \"%s\": expected name=value", text);
        size_t name_len = (size_t)(eq - p);
        const tile_field *f = NULL;
        for (int i = 0; i < N_TILE_FIELDS && !f; ++i)
            if (tile_fields[i].kind == s->kind && strlen(tile_fields[i].name) == name_len &&
                !strncmp(tile_fields[i].name, p, name_len))
                f = &tile_fields[i];
        if (!f) return BAD("tiles \"%s\": unknown parameter \"%.*s\"", text, (int)name_len, p);
        char *end;
        long v = strtol(eq + 1, &end, 10);
        if (end == eq + 1 || (*end && *end != ',') || v < 0 || v > 1 << 20)
            return BAD("tiles \"%s\": bad value for %s", text, f->name);
        *field_ptr(s, f) = (int)v;
        p = *end ? end + 1 : end;
    }
    return VECATTN_OK;
}

/* ---- the search space ---------------------------------------------------------------------- */

static void add_if_valid(const va_kernel_spec *s, va_kernel_spec *out, int max, int *n) {
    char msg[8];
    if (va_spec_validate(s, msg, sizeof msg) != VECATTN_OK) return;
    if (*n < max) out[*n] = *s;
    ++*n;
}

int va_spec_candidates(const va_kernel_spec *base, va_kernel_spec *out, int max) {
    int n = 0;
    va_kernel_spec s = *base;
    if (base->kind == VA_KERNEL_SELECT) {
        for (int rows = 16; rows <= 128; rows *= 2) {
            s.select_rows = rows;
            add_if_valid(&s, out, max, &n);
        }
        return n;
    }
    for (int bm = 16; bm <= 128; bm *= 2)
        for (int bn = 32; bn <= 64; bn *= 2)
            for (int warps = 1; warps <= 8; warps *= 2)
                for (int ctas = 0; ctas <= 3; ctas += ctas ? 1 : 2) /* 0, 2, 3 */
                    for (int q_smem = 0; q_smem <= 1; ++q_smem) {
                        s.impl = 0, s.block_m = bm, s.block_n = bn, s.warps = warps, s.ctas_per_sm = ctas;
                        s.q_in_smem = q_smem || bm == 32 * warps;  /* two atoms: always */
                        if (q_smem || !s.q_in_smem) add_if_valid(&s, out, max, &n);
                    }
    s = *base;  /* the Hopper kernel: one or two warpgroups; 128 registers per thread fit
                ** 4 CTAs of one, 2 of two */
    s.impl = 1, s.block_n = 64, s.q_in_smem = 0;
    for (int wgs = 1; wgs <= 2; ++wgs)
        for (int ctas = 0; ctas <= 4 / wgs; ctas += 4 / wgs) {
            s.block_m = 64 * wgs, s.warps = 4 * wgs, s.ctas_per_sm = ctas;
            add_if_valid(&s, out, max, &n);
        }
    s.impl = 2; /* warp-specialized: 2 CTAs per SM of one warpgroup, 1 of two */
    for (int wgs = 1; wgs <= 2; ++wgs)
        for (int producers = 1; producers <= 8; producers *= 2) {
            s.block_m = 64 * wgs, s.warps = 4 * wgs + producers, s.ctas_per_sm = 3 - wgs;
            for (s.block_n = 64; s.block_n <= 128; s.block_n *= 2) add_if_valid(&s, out, max, &n);
        }
    return n;
}
