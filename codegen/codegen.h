/*
** codegen.h -- from a kernel specification to CUDA C++ source text.
**
** A vecattn_kernel_spec names everything a generated module is specialised for. The
** generator emits a self-describing source: a banner (vecattn version, template hashes,
** every parameter, the cache key), a constexpr prelude, the embedded templates behind
** #line directives, and one explicit instantiation per entry point. The same spec always
** gives byte-identical source and NVRTC options, hence the same content hash.
*/
#ifndef VECATTN_CODEGEN_H
#define VECATTN_CODEGEN_H

#include <stddef.h>
#include <stdint.h>

#include "vecattn.h"

typedef enum va_kernel_kind {
    VA_KERNEL_SELECT = 0,     /* entry points: select_count, select_fill, select_mask, scan */
    VA_KERNEL_ATTENTION = 1   /* entry point: attention */
} va_kernel_kind;

typedef struct va_kernel_spec {
    va_kernel_kind kind;
    int arch;                 /* compute capability * 10: 80, 86, 89, 90 (compiled as sm_90a) */
    vecattn_dtype dtype;
    int head_dim;             /* 64 or 128 */
    int causal;
    int pq, bk, gk;           /* semantic blocking (selection uses all, attention uses pq) */
    /* selection tiles */
    int select_rows;          /* pooled query rows per CTA: 16, 32, 64 or 128 */
    /* attention tiles */
    int block_m;              /* query rows per CTA: divides pq */
    int block_n;              /* keys per inner step: 32 or 64 */
    int warps;                /* warps per CTA: block_m = 16 * warps * (1 or 2 row atoms per warp) */
    int q_in_smem;            /* 1: re-read Q fragments from shared memory every step (fewer
                                 registers); 0: keep them in registers (one row atom per warp) */
    int impl;                 /* 0: mma.sync (sm_80+); 1: wgmma (sm_90a; block_m 64 or 128 =
                                 a warpgroup per 64 rows, block_n 64, pq >= block_m); 2: wgmma,
                                 warp-specialized (as 1, plus 1, 2, 4 or 8 producer warps) */
    int ctas_per_sm;          /* 0, or the CTAs per SM the compiler must fit (__launch_bounds__
                                 minimum: caps registers at 64K / (threads * ctas_per_sm)) */
} va_kernel_spec;

/* Generated module: owned strings, freed with va_generated_free(). */
typedef struct va_generated {
    char *source;             /* NUL-terminated CUDA C++ */
    char *name;               /* readable module name, e.g. attn_d128_pq64_bm64_bn64_causal1_bf16_sm90a */
    char *options[8];         /* NVRTC options, NULL-terminated */
    int n_options;
    uint64_t hash;            /* FNV-1a 64 over source and options */
} va_generated;

/* Spec defaults for a problem: the built-in heuristic tile configuration. */
void va_spec_default_select(va_kernel_spec *spec, int arch, vecattn_dtype dtype, int head_dim,
                            int causal, int pq, int bk, int gk);
void va_spec_default_attention(va_kernel_spec *spec, int arch, vecattn_dtype dtype,
                               int head_dim, int causal, int pq);

/* The tile parameters of a spec (the fields the autotuner may change; never the semantic
** ones) as "name=value,name=value" in a fixed order, e.g. "select_rows=16" or
** "block_m=64,block_n=64". Returns the length written (snprintf semantics). */
int va_spec_tiles_format(const va_kernel_spec *spec, char *buf, size_t buf_size);

/* Set the tile parameters named in `text` (format above; unknown names and bad numbers are
** VECATTN_E_CODEGEN with a reason). Parameters not named keep their values. */
vecattn_status va_spec_tiles_parse(va_kernel_spec *spec, const char *text, char *msg, size_t msg_size);

/* The autotuner's search space: every valid tile configuration for the semantic parameters
** (kind, arch, dtype, head_dim, causal, pq, bk, gk) of `base`, pruned by va_spec_validate.
** Writes at most `max` specs to out and returns how many there are in all. */
int va_spec_candidates(const va_kernel_spec *base, va_kernel_spec *out, int max);

/* VECATTN_OK, or VECATTN_E_CODEGEN with a reason in msg. */
vecattn_status va_spec_validate(const va_kernel_spec *spec, char *msg, size_t msg_size);

/* Generate. VECATTN_E_CODEGEN for an invalid spec, VECATTN_E_NOMEM. */
vecattn_status va_generate(const va_kernel_spec *spec, va_generated *out, char *msg,
                           size_t msg_size);
void va_generated_free(va_generated *gen);

/* Dynamic shared memory bytes and threads per CTA of an entry point of a spec. */
int va_spec_threads(const va_kernel_spec *spec);
size_t va_spec_smem_bytes(const va_kernel_spec *spec);

/* K/V pipeline stages of the warp-specialized attention kernel (impl 2; 1 otherwise). */
int va_spec_stages(const va_kernel_spec *spec);

/* Producer warps of the warp-specialized attention kernel: the warps beyond one per 16 rows. */
int va_spec_producer_warps(const va_kernel_spec *spec);

/* The "sm_90a"-style target name for an arch number. */
const char *va_arch_target(int arch);

/*
** The version of a kind's kernels: 16 hex digits of FNV-1a 64 over the embedded templates
** that its generated code includes (for attention, both the mma.sync and the wgmma kernels).
** A tuned tile configuration records the version it was measured with: after any change to
** the templates, rows of the old version are only a fallback (cache/FORMAT.md).
*/
#define VA_KERNEL_VERSION_LEN 16
const char *va_kernel_version(va_kernel_kind kind);

/* FNV-1a 64-bit, chainable: pass the previous result as `h` (start with VA_FNV_OFFSET). */
#define VA_FNV_OFFSET 0xcbf29ce484222325ull
uint64_t va_fnv1a(uint64_t h, const void *data, size_t len);

/* Embedded template files (generated at build time from templates/). */
typedef struct va_template_file {
    const char *name;         /* e.g. "select.cuh" */
    const char *text;
    size_t length;
} va_template_file;
const va_template_file *va_template_find(const char *name);
extern const va_template_file va_templates[];
extern const int va_template_count;

#endif /* VECATTN_CODEGEN_H */
