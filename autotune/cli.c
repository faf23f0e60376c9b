/*
** cli.c -- vecattn-autotune, the command-line tool.
**
**   info      describe the CUDA device, its driver and NVRTC
**   source    print the generated CUDA source of one kernel (no GPU needed)
**   selftest  NVRTC-compile the default kernels, then run one small prefill on the GPU
**   tune      tune the tile configurations on this GPU into the cache (cli_tune.c)
**   list, show, export, import, precompile, verify, clear: the cache (cli_cache.c,
**             cli_precompile.c); --cache PATH in front of any subcommand
**
** Exit codes: 0 ok, 1 usage error, 2 runtime failure.
** Sections: usage, flag parsing, helpers, info, source, selftest (compile, GPU), main.
*/
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L /* clock_gettime */
#endif

#include <math.h>    /* provides: isfinite, fabsf */
#include <stdarg.h>  /* provides: va_list for usage_error */
#include <stdint.h>  /* provides: uint16_t, uint32_t, uint64_t, uintptr_t */
#include <stdio.h>   /* provides: printf, fprintf, fputs */
#include <stdlib.h>  /* provides: malloc, free, strtol */
#include <string.h>  /* provides: strcmp, strncmp, strchr, memcpy, memset */
#include <time.h>    /* provides: clock_gettime */

#include "autotune/cli_cache.h" /* provides: va_cli_list .. va_cli_clear, va_cli_cache_option */
#include "codegen/codegen.h" /* provides: va_kernel_spec, va_spec_default_*, va_generate */
#include "runtime/runtime.h" /* provides: struct vecattn_ctx, va_nvrtc_*, va_driver_load, va_cu* */
#include "vecattn.h"         /* provides: the public API */

enum { CLI_CONTINUE = -1, CLI_OK = 0, CLI_USAGE = 1, CLI_FAIL = 2 };

/* ---- usage ---------------------------------------------------------------------------- */

static const char usage_text[] =
    "usage: vecattn-autotune [--cache PATH] <subcommand> [flags]\n"
    "\n"
    "Subcommands:\n"
    "  info            describe the CUDA device, its driver and NVRTC\n"
    "  source          print the generated CUDA source of one kernel to stdout (no GPU needed)\n"
    "  selftest        NVRTC-compile the default kernels (D 128 and 64, bf16, causal and\n"
    "                  non-causal, sm_80 and sm_90a), then run a small prefill on the GPU;\n"
    "                  without a driver or GPU the GPU part is skipped and the exit code is 0\n"
    "  tune            measure tile configurations on this GPU and store the fastest per shape\n"
    "                  bucket in the cache; flags: vecattn-autotune tune --help\n"
    "  thresholds      one threshold per (layer, head) from dumped Q/K: bisection to a recall\n"
    "                  target, DP to a mean sparsity; flags: vecattn-autotune thresholds --help\n"
    VA_CLI_CACHE_SUBCOMMANDS
    "\n"
    "Flags without a subcommand:\n"
    "  --help, -h      print this text\n"
    "  --version       print the versions of vecattn and NVRTC\n"
    "\n"
    "info and selftest:\n"
    "  --device N      CUDA device ordinal (default 0)\n"
    "\n"
    "source:\n"
    "  --kernel K      select | attention (default select)\n"
    "  --head-dim D    64 | 128 (default 128)\n"
    "  --pq N          query block (pooling) size: 16, 32, 64, 128 (default 64)\n"
    "  --bk N          key slice size, selection only: 8, 16, 32, 64, 128 (default 16)\n"
    "  --gk N          slices per selection tile, selection only (default 16)\n"
    "  --causal        causal, bottom-right aligned (default)\n"
    "  --non-causal    not causal\n"
    "  --dtype T       bf16 | fp16 (default bf16)\n"
    "  --arch A        target GPU: sm_80, sm_86, sm_89, sm_90a, ... (default sm_90a)\n"
    "  --tiles T       tile parameters, e.g. select_rows=32 or block_m=64,block_n=64,warps=4,\n"
    "                  q_in_smem=1,ctas_per_sm=3,impl=0 (default: the built-in heuristic;\n"
    "                  impl=1 is the sm_90a wgmma kernel)\n"
    "  --options       also print the module name, NVRTC options and hash to stderr\n"
    "\n"
    "Every subcommand accepts --help. Flag values may be given as '--flag V' or '--flag=V'.\n"
    "Exit codes: 0 ok, 1 usage error, 2 runtime failure.\n"
    "\n"
    VA_CLI_CACHE_FLAGS
    "\n"
    "Environment: VECATTN_LIBCUDA, VECATTN_DUMP_SOURCE, VECATTN_LOG, VECATTN_CACHE,\n"
    "VECATTN_CACHE_WAL, VECATTN_NO_JIT, VECATTN_AUTOTUNE (see README.md).\n";

static void print_usage(FILE *f)
{
    fputs(usage_text, f);
}

static int usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Print "vecattn-autotune: <message>" and a pointer to --help; returns CLI_USAGE. */
static int usage_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("vecattn-autotune: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputs("\n(see vecattn-autotune --help)\n", stderr);
    va_end(ap);
    return CLI_USAGE;
}

static int is_help(const char *arg)
{
    return strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0;
}

/* ---- flag parsing ------------------------------------------------------------------- */

typedef enum flag_type {
    FLAG_INT,   /* --name N: a non-negative integer into *ival */
    FLAG_STR,   /* --name S: a string into *sval */
    FLAG_SET    /* --name: stores set_to into *ival */
} flag_type;

typedef struct flag_def {
    const char *name;
    flag_type type;
    int *ival;
    const char **sval;
    int set_to;
} flag_def;

static const flag_def *find_flag(const flag_def *defs, size_t n, const char *arg, size_t len)
{
    for (size_t i = 0; i < n; i++)
        if (strlen(defs[i].name) == len && strncmp(defs[i].name, arg, len) == 0)
            return &defs[i];
    return NULL;
}

static int parse_count(const char *text, int *out)
{
    char *end = NULL;
    long v = strtol(text, &end, 10);
    if (end == text || *end != '\0' || v < 0 || v > 1000000000L)
        return 0;
    *out = (int)v;
    return 1;
}

/* Parse the flags of subcommand `cmd`. CLI_CONTINUE when all were understood, CLI_OK after
** --help, CLI_USAGE (with a message naming the culprit) otherwise. */
static int parse_flags(const char *cmd, int argc, char **argv, const flag_def *defs, size_t n)
{
    for (int i = 0; i < argc; i++) {
        const char *arg = argv[i];
        if (is_help(arg)) {
            print_usage(stdout);
            return CLI_OK;
        }
        const char *eq = strchr(arg, '=');
        const flag_def *f = find_flag(defs, n, arg, eq ? (size_t)(eq - arg) : strlen(arg));
        if (f == NULL)
            return usage_error("unknown flag or argument '%s' for '%s'", arg, cmd);
        if (f->type == FLAG_SET) {
            if (eq)
                return usage_error("flag '%s' of '%s' takes no value", f->name, cmd);
            *f->ival = f->set_to;
            continue;
        }
        const char *value = eq ? eq + 1 : (i + 1 < argc ? argv[++i] : NULL);
        if (value == NULL)
            return usage_error("flag '%s' of '%s' needs a value", f->name, cmd);
        if (f->type == FLAG_STR)
            *f->sval = value;
        else if (!parse_count(value, f->ival))
            return usage_error("flag '%s' expects a non-negative integer, got '%s'", f->name,
                               value);
    }
    return CLI_CONTINUE;
}

static int parse_device_flag(const char *cmd, int argc, char **argv, int *device)
{
    const flag_def defs[] = {{"--device", FLAG_INT, device, NULL, 0}};
    return parse_flags(cmd, argc, argv, defs, sizeof defs / sizeof defs[0]);
}

static int parse_kernel(const char *s, va_kernel_kind *out)
{
    if (strcmp(s, "select") == 0)
        *out = VA_KERNEL_SELECT;
    else if (strcmp(s, "attention") == 0)
        *out = VA_KERNEL_ATTENTION;
    else
        return 0;
    return 1;
}

/* "sm_80" -> 80, "sm_90a" -> 90; the code generator decides which ones it supports. */
static int parse_arch(const char *s, int *out)
{
    if (strncmp(s, "sm_", 3) != 0)
        return 0;
    char *end = NULL;
    long v = strtol(s + 3, &end, 10);
    if (end == s + 3 || v < 10 || v > 1000 || (*end != '\0' && strcmp(end, "a") != 0))
        return 0;
    *out = (int)v;
    return 1;
}

/* ---- helpers ------------------------------------------------------------------------ */

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec * 1e-6;
}

static uint16_t float_to_bf16(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    u += 0x7fffu + ((u >> 16) & 1u); /* round to nearest even; inputs are finite */
    return (uint16_t)(u >> 16);
}

static float bf16_to_float(uint16_t h)
{
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* splitmix64: a reproducible stream of random numbers from `*state`. */
static uint64_t next_random(uint64_t *state)
{
    uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* A uniform value in [-1, 1]. */
static float random_unit(uint64_t *state)
{
    return (float)(next_random(state) >> 40) * (2.0f / 16777216.0f) - 1.0f;
}

/* ---- info --------------------------------------------------------------------------- */

static void print_device_info(const vecattn_ctx *ctx, const vecattn_device_info *info,
                              int device)
{
    int arch = info->compute_major * 10 + info->compute_minor;
    printf("vecattn          %s\n", vecattn_version());
    printf("device           %d: %s\n", device, info->name);
    printf("compute          %d.%d (%s)\n", info->compute_major, info->compute_minor,
           va_arch_target(arch));
    printf("SMs              %d\n", info->sm_count);
    printf("memory           %.1f GiB (%zu bytes)\n",
           (double)info->total_memory / (1024.0 * 1024.0 * 1024.0), info->total_memory);
    printf("driver           CUDA %d.%d (%d)\n", info->driver_version / 1000,
           info->driver_version % 1000 / 10, info->driver_version);
    printf("NVRTC            %d.%d\n", info->nvrtc_major, info->nvrtc_minor);
    printf("kernel cache     %s\n", ctx->cache ? va_cache_path(ctx->cache) : "(none)");
}

static int cmd_info(int argc, char **argv)
{
    int device = 0;
    int rc = parse_device_flag("info", argc, argv, &device);
    if (rc != CLI_CONTINUE)
        return rc;

    int nv_major = 0, nv_minor = 0;
    va_nvrtc_version(&nv_major, &nv_minor);
    vecattn_ctx *ctx = NULL;
    vecattn_status st = vecattn_create(&ctx, device, NULL, VECATTN_CREATE_DEFAULT);
    if (st != VECATTN_OK) {
        fprintf(stderr, "vecattn-autotune info: no usable CUDA device %d: %s [%s]; NVRTC %d.%d\n",
                device, vecattn_errmsg(ctx), vecattn_status_string(st), nv_major, nv_minor);
        vecattn_destroy(ctx);
        return CLI_FAIL;
    }
    vecattn_device_info info;
    st = vecattn_get_device_info(ctx, &info);
    if (st == VECATTN_OK)
        print_device_info(ctx, &info, device);
    else
        fprintf(stderr, "vecattn-autotune info: %s\n", vecattn_errmsg(ctx));
    vecattn_destroy(ctx);
    return st == VECATTN_OK ? CLI_OK : CLI_FAIL;
}

/* ---- source ------------------------------------------------------------------------- */

typedef struct source_opts {
    va_kernel_kind kind;
    int arch;
    vecattn_dtype dtype;
    int head_dim, causal;
    int pq, bk, gk;
    const char *tiles;                 /* NULL: the built-in heuristic */
    int show_options;
} source_opts;

static int parse_source(int argc, char **argv, source_opts *o)
{
    vecattn_prefill_args defaults;
    vecattn_prefill_args_init(&defaults);
    const char *kernel = "select", *dtype = "bf16", *arch = "sm_90a";
    *o = (source_opts){.head_dim = defaults.head_dim, .causal = defaults.causal,
                       .pq = defaults.pq, .bk = defaults.bk, .gk = defaults.gk,
                       .tiles = NULL};
    const flag_def defs[] = {
        {"--kernel", FLAG_STR, NULL, &kernel, 0},
        {"--head-dim", FLAG_INT, &o->head_dim, NULL, 0},
        {"--pq", FLAG_INT, &o->pq, NULL, 0},
        {"--bk", FLAG_INT, &o->bk, NULL, 0},
        {"--gk", FLAG_INT, &o->gk, NULL, 0},
        {"--causal", FLAG_SET, &o->causal, NULL, 1},
        {"--non-causal", FLAG_SET, &o->causal, NULL, 0},
        {"--dtype", FLAG_STR, NULL, &dtype, 0},
        {"--arch", FLAG_STR, NULL, &arch, 0},
        {"--tiles", FLAG_STR, NULL, &o->tiles, 0},
        {"--options", FLAG_SET, &o->show_options, NULL, 1},
    };
    int rc = parse_flags("source", argc, argv, defs, sizeof defs / sizeof defs[0]);
    if (rc != CLI_CONTINUE)
        return rc;
    if (!parse_kernel(kernel, &o->kind))
        return usage_error("--kernel must be select or attention, not '%s'", kernel);
    if (!va_dtype_parse(dtype, &o->dtype))
        return usage_error("--dtype must be bf16 or fp16, not '%s'", dtype);
    if (!parse_arch(arch, &o->arch))
        return usage_error("--arch must look like sm_80 or sm_90a, not '%s'", arch);
    return CLI_CONTINUE;
}

/* The spec of `source`: defaults, then --tiles; 0 and a message in msg when --tiles is bad. */
static int source_spec(const source_opts *o, va_kernel_spec *spec, char *msg, size_t msg_size)
{
    memset(spec, 0, sizeof *spec);
    if (o->kind == VA_KERNEL_SELECT)
        va_spec_default_select(spec, o->arch, o->dtype, o->head_dim, o->causal, o->pq, o->bk,
                               o->gk);
    else
        va_spec_default_attention(spec, o->arch, o->dtype, o->head_dim, o->causal, o->pq);
    return !o->tiles || va_spec_tiles_parse(spec, o->tiles, msg, msg_size) == VECATTN_OK;
}

static void print_options(const va_generated *gen)
{
    fprintf(stderr, "name: %s\noptions:", gen->name);
    for (int i = 0; i < gen->n_options; i++)
        fprintf(stderr, " %s", gen->options[i]);
    fprintf(stderr, "\nhash: %016llx\n", (unsigned long long)gen->hash);
}

static int cmd_source(int argc, char **argv)
{
    source_opts o;
    int rc = parse_source(argc, argv, &o);
    if (rc != CLI_CONTINUE)
        return rc;

    va_kernel_spec spec;
    char msg[512] = "";
    if (!source_spec(&o, &spec, msg, sizeof msg))
        return usage_error("source: --tiles: %s", msg);
    if (va_spec_validate(&spec, msg, sizeof msg) != VECATTN_OK)
        return usage_error("source: invalid kernel: %s", msg);
    va_generated gen;
    memset(&gen, 0, sizeof gen);
    if (va_generate(&spec, &gen, msg, sizeof msg) != VECATTN_OK) {
        fprintf(stderr, "vecattn-autotune source: generation failed: %s\n", msg);
        return CLI_FAIL;
    }
    fputs(gen.source, stdout);
    if (o.show_options)
        print_options(&gen);
    va_generated_free(&gen);
    return fflush(stdout) == 0 && !ferror(stdout) ? CLI_OK : CLI_FAIL;
}

/* ---- selftest: NVRTC ---------------------------------------------------------------- */

/* Generate and compile one kernel, printing one line. 1 on success. */
static int compile_one(const va_kernel_spec *spec)
{
    char msg[512] = "";
    va_generated gen;
    memset(&gen, 0, sizeof gen);
    if (va_generate(spec, &gen, msg, sizeof msg) != VECATTN_OK) {
        printf("  FAIL  %-52s generation: %s\n", va_arch_target(spec->arch), msg);
        return 0;
    }
    void *cubin = NULL;
    size_t cubin_size = 0;
    char *log = NULL;
    double t0 = now_ms();
    vecattn_status st = va_nvrtc_compile(&gen, &cubin, &cubin_size, &log);
    double ms = now_ms() - t0;
    if (st == VECATTN_OK) {
        printf("  ok    %-52s %9.1f ms  %8zu bytes\n", gen.name, ms, cubin_size);
    } else {
        printf("  FAIL  %-52s %9.1f ms  %s\n", gen.name, ms, vecattn_status_string(st));
        fprintf(stderr, "%s\n", log ? log : "(no compiler log)");
    }
    free(log);
    free(cubin);
    va_generated_free(&gen);
    return st == VECATTN_OK;
}

/* The default selection and attention kernels for D 128 and 64, bf16, causal and
** non-causal, sm_80 and sm_90a. Returns the number of failures. */
static int selftest_compile(void)
{
    static const int archs[] = {80, 90};
    static const int dims[] = {128, 64};
    vecattn_prefill_args d;
    vecattn_prefill_args_init(&d);
    int major = 0, minor = 0, total = 0, failures = 0;
    va_nvrtc_version(&major, &minor);
    printf("NVRTC %d.%d: generating and compiling the default kernels\n", major, minor);
    for (size_t a = 0; a < sizeof archs / sizeof archs[0]; a++)
        for (size_t h = 0; h < sizeof dims / sizeof dims[0]; h++)
            for (int causal = 1; causal >= 0; causal--) {
                va_kernel_spec spec;
                memset(&spec, 0, sizeof spec);
                va_spec_default_select(&spec, archs[a], VECATTN_BF16, dims[h], causal, d.pq,
                                       d.bk, d.gk);
                failures += !compile_one(&spec);
                memset(&spec, 0, sizeof spec);
                va_spec_default_attention(&spec, archs[a], VECATTN_BF16, dims[h], causal, d.pq);
                failures += !compile_one(&spec);
                total += 2;
            }
    printf("%d of %d kernels compiled\n", total - failures, total);
    return failures;
}

/* ---- selftest: GPU ------------------------------------------------------------------ */

/* A small problem: Q, K, V, O as [1, 4, 1000, 128] bf16 on the device. */
typedef struct gpu_problem {
    int heads, seq, dim;
    size_t elems; /* per tensor */
    CUdeviceptr q, k, v, o;
} gpu_problem;

static int cu_fail(const char *what, CUresult r)
{
    fprintf(stderr, "vecattn-autotune selftest: %s failed: %s\n", what, va_cu_error_name(r));
    return CLI_FAIL;
}

static int upload_random(CUdeviceptr dst, size_t elems, uint64_t seed)
{
    uint16_t *host = malloc(elems * sizeof *host);
    if (host == NULL) {
        fprintf(stderr, "vecattn-autotune selftest: out of host memory\n");
        return CLI_FAIL;
    }
    for (size_t i = 0; i < elems; i++)
        host[i] = float_to_bf16(random_unit(&seed));
    CUresult r = va_cuMemcpyHtoD(dst, host, elems * sizeof *host);
    free(host);
    return r == CUDA_SUCCESS ? CLI_OK : cu_fail("cuMemcpyHtoD", r);
}

static int problem_alloc(gpu_problem *pb)
{
    CUdeviceptr *bufs[] = {&pb->q, &pb->k, &pb->v, &pb->o};
    size_t bytes = pb->elems * sizeof(uint16_t);
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) {
        CUresult r = va_cuMemAlloc(bufs[i], bytes);
        if (r != CUDA_SUCCESS)
            return cu_fail("cuMemAlloc", r);
    }
    for (size_t i = 0; i < 3; i++) {
        int rc = upload_random(*bufs[i], pb->elems, 1000 + i);
        if (rc != CLI_OK)
            return rc;
    }
    return CLI_OK;
}

static void problem_free(gpu_problem *pb)
{
    CUdeviceptr bufs[] = {pb->q, pb->k, pb->v, pb->o};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
        if (bufs[i])
            va_cuMemFree(bufs[i]);
}

/* Download O: every value must be finite and, as a convex combination of rows of V (all in
** [-1, 1]), at most 1 in magnitude. */
static int check_output(const gpu_problem *pb)
{
    uint16_t *host = malloc(pb->elems * sizeof *host);
    if (host == NULL) {
        fprintf(stderr, "vecattn-autotune selftest: out of host memory\n");
        return CLI_FAIL;
    }
    CUresult r = va_cuMemcpyDtoH(host, pb->o, pb->elems * sizeof *host);
    if (r != CUDA_SUCCESS) {
        free(host);
        return cu_fail("cuMemcpyDtoH", r);
    }
    size_t bad = 0;
    float max_abs = 0.0f;
    for (size_t i = 0; i < pb->elems; i++) {
        float x = bf16_to_float(host[i]);
        if (!isfinite(x))
            bad++;
        else if (fabsf(x) > max_abs)
            max_abs = fabsf(x);
    }
    free(host);
    printf("output: %zu values, %zu NaN/Inf, max |o| %.4f\n", pb->elems, bad, max_abs);
    if (bad != 0 || max_abs > 1.01f) {
        fprintf(stderr, "vecattn-autotune selftest: FAILED: the output has %s\n",
                bad ? "NaN/Inf values" : "values larger than any value of V");
        return CLI_FAIL;
    }
    return CLI_OK;
}

static int prefill_and_check(vecattn_ctx *ctx, const gpu_problem *pb)
{
    vecattn_prefill_args a;
    vecattn_prefill_args_init(&a);
    a.q = (const void *)(uintptr_t)pb->q;
    a.k = (const void *)(uintptr_t)pb->k;
    a.v = (const void *)(uintptr_t)pb->v;
    a.o = (void *)(uintptr_t)pb->o;
    a.batch = 1;
    a.heads_q = a.heads_kv = pb->heads;
    a.seq_q = a.seq_k = pb->seq;
    a.head_dim = pb->dim;
    vecattn_set_contiguous_bhsd(&a);
    float sparsity = -1.0f;
    a.sparsity_out = &sparsity;

    double t0 = now_ms();
    vecattn_status st = vecattn_prefill(ctx, &a, NULL);
    double first_ms = now_ms() - t0;
    if (st == VECATTN_OK) {
        t0 = now_ms();
        st = vecattn_prefill(ctx, &a, NULL);
    }
    double second_ms = now_ms() - t0;
    if (st != VECATTN_OK) {
        fprintf(stderr, "vecattn-autotune selftest: vecattn_prefill failed: %s\n",
                vecattn_errmsg(ctx));
        return CLI_FAIL;
    }
    printf("prefill B=1 H=%d S=%d D=%d bf16 causal p=%.2f: sparsity %.4f\n", pb->heads, pb->seq,
           pb->dim, (double)a.threshold, (double)sparsity);
    printf("time: first call %.1f ms (includes any compiling and loading), second call %.3f ms "
           "(host wall clock)\n", first_ms, second_ms);
    if (!(sparsity >= 0.0f && sparsity < 1.0f)) {
        fprintf(stderr, "vecattn-autotune selftest: FAILED: sparsity %f outside [0, 1)\n",
                (double)sparsity);
        return CLI_FAIL;
    }
    return check_output(pb);
}

/* Allocate, fill, run and check, with the context's device current. */
static int run_gpu_problem(vecattn_ctx *ctx)
{
    char msg[512] = "";
    if (va_driver_load(msg, sizeof msg) != VECATTN_OK) {
        fprintf(stderr, "vecattn-autotune selftest: %s\n", msg);
        return CLI_FAIL;
    }
    CUresult r = va_cuCtxPushCurrent(ctx->primary);
    if (r != CUDA_SUCCESS)
        return cu_fail("cuCtxPushCurrent", r);
    gpu_problem pb = {.heads = 4, .seq = 1000, .dim = 128};
    pb.elems = (size_t)pb.heads * (size_t)pb.seq * (size_t)pb.dim;
    int rc = problem_alloc(&pb);
    if (rc == CLI_OK)
        rc = prefill_and_check(ctx, &pb);
    problem_free(&pb);
    CUcontext popped;
    va_cuCtxPopCurrent(&popped);
    return rc;
}

static int selftest_gpu(int device)
{
    vecattn_ctx *ctx = NULL;
    vecattn_status st = vecattn_create(&ctx, device, NULL, VECATTN_CREATE_DEFAULT);
    int rc = CLI_OK;
    if (st == VECATTN_E_NO_DRIVER || st == VECATTN_E_NO_DEVICE) {
        printf("no CUDA driver/GPU found (%s): the toolchain check above passed; "
               "GPU execution skipped\n", vecattn_errmsg(ctx));
    } else if (st == VECATTN_E_ARCH) {
        printf("no supported GPU (sm_80 or newer) at device %d (%s): the toolchain check above "
               "passed; GPU execution skipped\n", device, vecattn_errmsg(ctx));
    } else if (st != VECATTN_OK) {
        fprintf(stderr, "vecattn-autotune selftest: cannot use CUDA device %d: %s\n", device,
                vecattn_errmsg(ctx));
        rc = CLI_FAIL;
    } else {
        rc = run_gpu_problem(ctx);
        if (rc == CLI_OK)
            printf("selftest passed\n");
    }
    vecattn_destroy(ctx);
    return rc;
}

static int cmd_selftest(int argc, char **argv)
{
    int device = 0;
    int rc = parse_device_flag("selftest", argc, argv, &device);
    if (rc != CLI_CONTINUE)
        return rc;
    if (selftest_compile() != 0) {
        fprintf(stderr, "vecattn-autotune selftest: FAILED: some kernels did not compile\n");
        return CLI_FAIL;
    }
    fflush(stdout);
    return selftest_gpu(device);
}

/* ---- main --------------------------------------------------------------------------- */

int va_cli_tune(int argc, char **argv);       /* cli_tune.c */
int va_cli_thresholds(int argc, char **argv); /* cli_thresholds.c */

static int print_version(void)
{
    int major = 0, minor = 0;
    va_nvrtc_version(&major, &minor);
    printf("vecattn-autotune %s (libvecattn %s, NVRTC %d.%d)\n", VECATTN_VERSION_STRING,
           vecattn_version(), major, minor);
    printf("kernel versions: selection %s, attention %s\n", va_kernel_version(VA_KERNEL_SELECT),
           va_kernel_version(VA_KERNEL_ATTENTION));
    return CLI_OK;
}

int main(int argc, char **argv)
{
    static const struct {
        const char *name;
        int (*run)(int argc, char **argv);
    } commands[] = {
        {"info", cmd_info},
        {"source", cmd_source},
        {"selftest", cmd_selftest},
        {"tune", va_cli_tune},
        {"list", va_cli_list},
        {"show", va_cli_show},
        {"export", va_cli_export},
        {"import", va_cli_import},
        {"precompile", va_cli_precompile},
        {"verify", va_cli_verify},
        {"clear", va_cli_clear},
        {"thresholds", va_cli_thresholds},
    };
    if (va_cli_cache_option(&argc, argv) != 0)
        return CLI_USAGE;
    if (argc < 2) {
        print_usage(stderr);
        return CLI_USAGE;
    }
    const char *cmd = argv[1];
    if (is_help(cmd) || strcmp(cmd, "help") == 0) {
        print_usage(stdout);
        return CLI_OK;
    }
    if (strcmp(cmd, "--version") == 0)
        return print_version();
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (strcmp(cmd, commands[i].name) == 0)
            return commands[i].run(argc - 2, argv + 2);
    return usage_error("unknown subcommand '%s'", cmd);
}
