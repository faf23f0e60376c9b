/*
** context.c -- the vecattn_ctx: creation on a device, errors on the handle, the debug log,
** the device workspace.
*/
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/runtime.h"

vecattn_status va_fail(vecattn_ctx *ctx, vecattn_status code, const char *fmt, ...) {
    if (ctx) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(ctx->errmsg, sizeof ctx->errmsg, fmt, ap);
        va_end(ap);
        ctx->last_status = code;
        va_log(ctx, "error %d (%s): %s", (int)code, vecattn_status_string(code), ctx->errmsg);
    }
    return code;
}

void va_log(const vecattn_ctx *ctx, const char *fmt, ...) {
    if (!ctx || !ctx->log_debug) return;
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "vecattn: ");
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

vecattn_status va_check_cu(vecattn_ctx *ctx, CUresult r, const char *what) {
    if (r == CUDA_SUCCESS) return VECATTN_OK;
    vecattn_status code = r == CUDA_ERROR_OUT_OF_MEMORY ? VECATTN_E_NOMEM : VECATTN_E_DRIVER;
    return va_fail(ctx, code, "%s failed: %s", what, va_cu_error_name(r));
}

static void clear_error(vecattn_ctx *ctx) {
    ctx->last_status = VECATTN_OK;
    snprintf(ctx->errmsg, sizeof ctx->errmsg, "not an error");
}

static vecattn_status open_device(vecattn_ctx *ctx, int device) {
    char msg[512];
    vecattn_status st = va_driver_load(msg, sizeof msg);
    if (st != VECATTN_OK) return va_fail(ctx, st, "%s", msg);
    int count = 0;
    st = va_check_cu(ctx, va_cuDeviceGetCount(&count), "cuDeviceGetCount");
    if (st != VECATTN_OK) return st;
    if (device < 0 || device >= count)
        return va_fail(ctx, VECATTN_E_NO_DEVICE, "device %d does not exist (%d CUDA device%s)",
                       device, count, count == 1 ? "" : "s");
    if ((st = va_check_cu(ctx, va_cuDeviceGet(&ctx->device, device), "cuDeviceGet"))) return st;
    int major = 0, minor = 0;
    va_cuDeviceGetAttribute(&major, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, ctx->device);
    va_cuDeviceGetAttribute(&minor, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, ctx->device);
    va_cuDeviceGetAttribute(&ctx->sm_count, CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT, ctx->device);
    ctx->arch = major * 10 + minor;
    if (ctx->arch < 80)
        return va_fail(ctx, VECATTN_E_ARCH, "device %d has compute capability %d.%d; vecattn needs 8.0+",
                       device, major, minor);
    if (!va_arch_target(ctx->arch))
        return va_fail(ctx, VECATTN_E_ARCH, "compute capability %d.%d is not known to this vecattn",
                       major, minor);
    return va_check_cu(ctx, va_cuDevicePrimaryCtxRetain(&ctx->primary, ctx->device),
                       "cuDevicePrimaryCtxRetain");
}

/* The persistent cache never makes create fail: it falls back to read-only or memory, and
** that warning is the one message the library prints without being asked. */
static void open_cache(vecattn_ctx *ctx) {
    const char *warning = NULL;
    ctx->cache = va_cache_open(ctx->cache_path, &warning);
    if (warning) fprintf(stderr, "vecattn: warning: %s\n", warning);
    if (!ctx->cache) return;
    va_cache_use_shipped(ctx->cache, 1);
    va_log(ctx, "cache %s (%s)", va_cache_path(ctx->cache),
           va_cache_get_mode(ctx->cache) == VA_CACHE_READ_WRITE ? "read-write"
           : va_cache_get_mode(ctx->cache) == VA_CACHE_READ_ONLY ? "read-only" : "in memory");
}

vecattn_status vecattn_create(vecattn_ctx **out, int device, const char *cache_path,
                              unsigned flags) {
    (void)flags;
    if (!out) return VECATTN_E_MISUSE;
    vecattn_ctx *ctx = calloc(1, sizeof *ctx);
    *out = ctx;
    if (!ctx) return VECATTN_E_NOMEM;
    ctx->magic = VA_CTX_MAGIC;
    ctx->device_ordinal = device;
    clear_error(ctx);
    const char *log = getenv("VECATTN_LOG");
    ctx->log_debug = log && strcmp(log, "debug") == 0;
    const char *dump = getenv("VECATTN_DUMP_SOURCE");
    if (dump && *dump) ctx->dump_dir = strdup(dump);
    if (cache_path) ctx->cache_path = strdup(cache_path);
    const char *no_jit = getenv("VECATTN_NO_JIT");
    ctx->no_jit = no_jit && *no_jit && strcmp(no_jit, "0") != 0;
    vecattn_status st = open_device(ctx, device);
    if (st != VECATTN_OK) return st;
    open_cache(ctx);
    va_log(ctx, "device %d: sm_%d, %d SMs", device, ctx->arch, ctx->sm_count);
    return VECATTN_OK;
}

void vecattn_destroy(vecattn_ctx *ctx) {
    if (!ctx || ctx->magic != VA_CTX_MAGIC) return;
    if (ctx->primary) {
        if (va_cuCtxPushCurrent(ctx->primary) == CUDA_SUCCESS) {
            if (ctx->workspace) va_cuMemFree(ctx->workspace);
            if (ctx->host_scratch) va_cuMemFreeHost(ctx->host_scratch);
            CUcontext popped;
            va_cuCtxPopCurrent(&popped);
        }
        va_cuDevicePrimaryCtxRelease(ctx->device);
    }
    va_cache_close(ctx->cache);
    free(ctx->cache_path);
    free(ctx->dump_dir);
    ctx->magic = 0;
    free(ctx);
}

const char *vecattn_errmsg(const vecattn_ctx *ctx) {
    if (!ctx) return vecattn_status_string(VECATTN_E_NOMEM);
    if (ctx->magic != VA_CTX_MAGIC) return vecattn_status_string(VECATTN_E_MISUSE);
    return ctx->errmsg;
}

vecattn_status vecattn_errcode(const vecattn_ctx *ctx) {
    if (!ctx) return VECATTN_E_NOMEM;
    if (ctx->magic != VA_CTX_MAGIC) return VECATTN_E_MISUSE;
    return ctx->last_status;
}

vecattn_status va_ctx_enter(vecattn_ctx *ctx) {
    if (!ctx || ctx->magic != VA_CTX_MAGIC) return VECATTN_E_MISUSE;
    clear_error(ctx);
    if (!ctx->primary)
        return va_fail(ctx, VECATTN_E_MISUSE, "this context has no device (vecattn_create failed)");
    return va_check_cu(ctx, va_cuCtxPushCurrent(ctx->primary), "cuCtxPushCurrent");
}

void va_ctx_leave(vecattn_ctx *ctx) {
    CUcontext popped;
    va_cuCtxPopCurrent(&popped);
    (void)ctx;
}

vecattn_status va_workspace_reserve(vecattn_ctx *ctx, size_t bytes) {
    if (bytes <= ctx->workspace_size) return VECATTN_OK;
    /* The old workspace may still be read by work queued earlier: wait for it before freeing. */
    if (ctx->workspace) {
        vecattn_status st = va_check_cu(ctx, va_cuCtxSynchronize(), "cuCtxSynchronize");
        if (st != VECATTN_OK) return st;
        va_cuMemFree(ctx->workspace);
        ctx->workspace = 0;
        ctx->workspace_size = 0;
    }
    size_t rounded = (bytes + (1u << 20) - 1) & ~(size_t)((1u << 20) - 1);
    vecattn_status st = va_check_cu(ctx, va_cuMemAlloc(&ctx->workspace, rounded), "cuMemAlloc (workspace)");
    if (st != VECATTN_OK) return st;
    ctx->workspace_size = rounded;
    va_log(ctx, "workspace grown to %zu bytes", rounded);
    return VECATTN_OK;
}

vecattn_status vecattn_get_device_info(vecattn_ctx *ctx, vecattn_device_info *info) {
    vecattn_status st = va_ctx_enter(ctx);
    if (st != VECATTN_OK) return st;
    if (!info) {
        va_ctx_leave(ctx);
        return va_fail(ctx, VECATTN_E_MISUSE, "info is NULL");
    }
    memset(info, 0, sizeof *info);
    va_cuDeviceGetName(info->name, (int)sizeof info->name, ctx->device);
    info->compute_major = ctx->arch / 10;
    info->compute_minor = ctx->arch % 10;
    info->sm_count = ctx->sm_count;
    va_cuDriverGetVersion(&info->driver_version);
    va_nvrtc_version(&info->nvrtc_major, &info->nvrtc_minor);
    va_cuDeviceTotalMem(&info->total_memory, ctx->device);
    va_ctx_leave(ctx);
    return VECATTN_OK;
}
