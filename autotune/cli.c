/*
** cli.c -- vecattn-autotune, the command-line tool.
**
**   info      describe the CUDA device, its driver and NVRTC
**   source    print the generated CUDA source of one kernel (no GPU needed)
**   selftest  NVRTC-compile the default kernels, then run one small prefill on the GPU
**             (cli_selftest.c)
**   tune      tune the tile configurations on this GPU into the cache (cli_tune.c)
**   list, show, export, import, precompile, verify, clear: the cache (cli_cache.c,
**             cli_precompile.c); --cache PATH in front of any subcommand
**
** Exit codes: 0 ok, 1 usage error, 2 runtime failure.
** Sections: usage, flag parsing, info, source, main.
*/
#include <stdio.h>   /* provides: printf, fprintf, fputs */
#include <stdlib.h>  /* provides: strtol */
#include <string.h>  /* provides: strcmp, strncmp, memset */

#include "autotune/cli_cache.h" /* provides: va_cli_parse, va_cli_int, va_cli_usage, va_cli_list .. */
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
    "                  impl=1 is the sm_90a wgmma kernel, impl=2 its warp-specialized form)\n"
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

static int is_help(const char *arg)
{
    return strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0;
}

/* ---- flag parsing (va_cli_parse, shared with the cache subcommands) ------------------- */

/* CLI_OK after printing the usage when any argument asks for help, else CLI_CONTINUE. */
static int help_requested(int argc, char **argv)
{
    for (int i = 0; i < argc; i++)
        if (is_help(argv[i])) {
            print_usage(stdout);
            return CLI_OK;
        }
    return CLI_CONTINUE;
}

/* A whole integer flag value in [lo, hi] into *out (untouched when the flag was absent). */
static int int_flag(const char *cmd, const char *name, const char *text, int lo, int hi, int *out)
{
    if (text && !va_cli_int(text, lo, hi, out))
        return va_cli_usage(cmd, "flag '%s' expects an integer in [%d, %d], got '%s'", name, lo, hi, text);
    return CLI_CONTINUE;
}

int va_cli_device_flag(const char *cmd, int argc, char **argv, int *device)
{
    const char *text = NULL;
    const va_cli_opt opts[] = {{"--device", &text, NULL}, {NULL, NULL, NULL}};
    int rc = help_requested(argc, argv);
    if (rc == CLI_CONTINUE)
        rc = va_cli_parse(cmd, argc, argv, opts, NULL, 0);
    return rc == CLI_CONTINUE ? int_flag(cmd, "--device", text, 0, 1023, device) : rc;
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
    int rc = va_cli_device_flag("info", argc, argv, &device);
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
    const char *head_dim = NULL, *pq = NULL, *bk = NULL, *gk = NULL;
    int causal = 0, non_causal = 0;
    *o = (source_opts){.head_dim = defaults.head_dim, .causal = defaults.causal,
                       .pq = defaults.pq, .bk = defaults.bk, .gk = defaults.gk,
                       .tiles = NULL};
    const va_cli_opt opts[] = {
        {"--kernel", &kernel, NULL}, {"--head-dim", &head_dim, NULL}, {"--pq", &pq, NULL},
        {"--bk", &bk, NULL}, {"--gk", &gk, NULL}, {"--causal", NULL, &causal},
        {"--non-causal", NULL, &non_causal}, {"--dtype", &dtype, NULL}, {"--arch", &arch, NULL},
        {"--tiles", &o->tiles, NULL}, {"--options", NULL, &o->show_options}, {NULL, NULL, NULL},
    };
    int rc = help_requested(argc, argv);
    if (rc == CLI_CONTINUE)
        rc = va_cli_parse("source", argc, argv, opts, NULL, 0);
    /* any non-negative count here; the generator checks the values (source_spec, va_spec_validate) */
    const int big = 1000000000;
    if (rc == CLI_CONTINUE)
        rc = int_flag("source", "--head-dim", head_dim, 0, big, &o->head_dim);
    if (rc == CLI_CONTINUE)
        rc = int_flag("source", "--pq", pq, 0, big, &o->pq);
    if (rc == CLI_CONTINUE)
        rc = int_flag("source", "--bk", bk, 0, big, &o->bk);
    if (rc == CLI_CONTINUE)
        rc = int_flag("source", "--gk", gk, 0, big, &o->gk);
    if (rc != CLI_CONTINUE)
        return rc;
    if (causal && non_causal)
        return va_cli_usage("source", "--causal and --non-causal exclude each other");
    if (causal || non_causal)
        o->causal = causal;
    if (!parse_kernel(kernel, &o->kind))
        return va_cli_usage("source", "--kernel must be select or attention, not '%s'", kernel);
    if (!va_dtype_parse(dtype, &o->dtype))
        return va_cli_usage("source", "--dtype must be bf16 or fp16, not '%s'", dtype);
    if (!parse_arch(arch, &o->arch))
        return va_cli_usage("source", "--arch must look like sm_80 or sm_90a, not '%s'", arch);
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
        return va_cli_usage("source", "--tiles: %s", msg);
    if (va_spec_validate(&spec, msg, sizeof msg) != VECATTN_OK)
        return va_cli_usage("source", "invalid kernel: %s", msg);
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

/* ---- main --------------------------------------------------------------------------- */

int va_cli_tune(int argc, char **argv);       /* cli_tune.c */
int va_cli_selftest(int argc, char **argv);   /* cli_selftest.c */
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
        {"selftest", va_cli_selftest},
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
    return va_cli_usage("", "unknown subcommand '%s'", cmd);
}
