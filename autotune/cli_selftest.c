/*
** cli_selftest.c -- `vecattn-autotune selftest`: NVRTC-compile the default kernels (D 128
** and 64, bf16, causal and not, sm_80 and sm_90a), then run one small prefill on the GPU and
** check that its sparsity is in [0, 1) and its output finite and within V's range (the tests
** compare against the float64 reference). Without a driver or a GPU the GPU part is skipped and
** the exit code stays 0 (the compile part is what a machine without a GPU can check).
** Sections: helpers, NVRTC, GPU, the command.
*/
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L /* clock_gettime */
#endif

#include <math.h>    /* provides: isfinite, fabsf */
#include <stdint.h>  /* provides: uint16_t, uint32_t, uint64_t */
#include <stdio.h>   /* provides: printf, fprintf */
#include <stdlib.h>  /* provides: malloc, free */
#include <string.h>  /* provides: memcpy, memset */
#include <time.h>    /* provides: clock_gettime */

#include "autotune/cli_cache.h" /* provides: va_cli_device_flag, VA_CLI_* */
#include "codegen/codegen.h" /* provides: va_kernel_spec, va_spec_default_*, va_generate */
#include "runtime/runtime.h" /* provides: struct vecattn_ctx, va_nvrtc_*, va_cu* */
#include "vecattn.h"         /* provides: the public API */

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
    return VA_CLI_FAIL;
}

static int upload_random(CUdeviceptr dst, size_t elems, uint64_t seed)
{
    uint16_t *host = malloc(elems * sizeof *host);
    if (host == NULL) {
        fprintf(stderr, "vecattn-autotune selftest: out of host memory\n");
        return VA_CLI_FAIL;
    }
    for (size_t i = 0; i < elems; i++)
        host[i] = float_to_bf16(random_unit(&seed));
    CUresult r = va_cuMemcpyHtoD(dst, host, elems * sizeof *host);
    free(host);
    return r == CUDA_SUCCESS ? VA_CLI_OK : cu_fail("cuMemcpyHtoD", r);
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
        if (rc != VA_CLI_OK)
            return rc;
    }
    return VA_CLI_OK;
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
        return VA_CLI_FAIL;
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
        return VA_CLI_FAIL;
    }
    return VA_CLI_OK;
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
        return VA_CLI_FAIL;
    }
    printf("prefill B=1 H=%d S=%d D=%d bf16 causal p=%.2f: sparsity %.4f\n", pb->heads, pb->seq,
           pb->dim, (double)a.threshold, (double)sparsity);
    printf("time: first call %.1f ms (includes any compiling and loading), second call %.3f ms "
           "(host wall clock)\n", first_ms, second_ms);
    if (!(sparsity >= 0.0f && sparsity < 1.0f)) {
        fprintf(stderr, "vecattn-autotune selftest: FAILED: sparsity %f outside [0, 1)\n",
                (double)sparsity);
        return VA_CLI_FAIL;
    }
    return check_output(pb);
}

/* Allocate, fill, run and check, with the context's device current. */
static int run_gpu_problem(vecattn_ctx *ctx)
{
    char msg[512] = "";
    if (va_driver_load(msg, sizeof msg) != VECATTN_OK) {
        fprintf(stderr, "vecattn-autotune selftest: %s\n", msg);
        return VA_CLI_FAIL;
    }
    CUresult r = va_cuCtxPushCurrent(ctx->primary);
    if (r != CUDA_SUCCESS)
        return cu_fail("cuCtxPushCurrent", r);
    gpu_problem pb = {.heads = 4, .seq = 1000, .dim = 128};
    pb.elems = (size_t)pb.heads * (size_t)pb.seq * (size_t)pb.dim;
    int rc = problem_alloc(&pb);
    if (rc == VA_CLI_OK)
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
    int rc = VA_CLI_OK;
    if (st == VECATTN_E_NO_DRIVER || st == VECATTN_E_NO_DEVICE) {
        printf("no CUDA driver/GPU found (%s): the toolchain check above passed; "
               "GPU execution skipped\n", vecattn_errmsg(ctx));
    } else if (st == VECATTN_E_ARCH) {
        printf("no supported GPU (sm_80 or newer) at device %d (%s): the toolchain check above "
               "passed; GPU execution skipped\n", device, vecattn_errmsg(ctx));
    } else if (st != VECATTN_OK) {
        fprintf(stderr, "vecattn-autotune selftest: cannot use CUDA device %d: %s\n", device,
                vecattn_errmsg(ctx));
        rc = VA_CLI_FAIL;
    } else {
        rc = run_gpu_problem(ctx);
        if (rc == VA_CLI_OK)
            printf("selftest passed\n");
    }
    vecattn_destroy(ctx);
    return rc;
}

int va_cli_selftest(int argc, char **argv)
{
    int device = 0;
    int rc = va_cli_device_flag("selftest", argc, argv, &device);
    if (rc != VA_CLI_CONTINUE)
        return rc;
    if (selftest_compile() != 0) {
        fprintf(stderr, "vecattn-autotune selftest: FAILED: some kernels did not compile\n");
        return VA_CLI_FAIL;
    }
    fflush(stdout);
    return selftest_gpu(device);
}
