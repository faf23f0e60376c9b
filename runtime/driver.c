/*
** driver.c -- load libcuda.so.1 at run time. Linking the driver would make the library
** unloadable on machines without one; with dlopen, code generation and NVRTC work
** everywhere and only creating a context needs a driver.
*/
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/runtime.h"

#define VA_CU_DEFINE(name, sym, params) CUresult(*va_##name) params = NULL;
VA_CU_SYMBOLS(VA_CU_DEFINE)
#undef VA_CU_DEFINE

static pthread_once_t load_once = PTHREAD_ONCE_INIT;
static vecattn_status load_status = VECATTN_E_NO_DRIVER;
static char load_message[512];

static const char *driver_path(void) {
    const char *env = getenv("VECATTN_LIBCUDA");
    return env && *env ? env : "libcuda.so.1";
}

static void load_driver(void) {
    const char *path = driver_path();
    void *lib = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
        const char *why = dlerror();
        snprintf(load_message, sizeof load_message,
                 "no CUDA driver: cannot load %s (%s); install the NVIDIA driver or set "
                 "VECATTN_LIBCUDA",
                 path, why ? why : "unknown reason");
        return;
    }
#define VA_CU_RESOLVE(name, sym, params)                                                        \
    if (!(*(void **)&va_##name = dlsym(lib, sym))) {                                             \
        snprintf(load_message, sizeof load_message,                                              \
                 "the CUDA driver %s lacks %s: it is older than vecattn needs (CUDA 12.8+)",     \
                 path, sym);                                                                     \
        return;                                                                                  \
    }
    VA_CU_SYMBOLS(VA_CU_RESOLVE)
#undef VA_CU_RESOLVE
    CUresult r = va_cuInit(0);
    if (r != CUDA_SUCCESS) {
        snprintf(load_message, sizeof load_message, "cuInit failed: %s (is a GPU present?)",
                 va_cu_error_name(r));
        load_status = r == CUDA_ERROR_NO_DEVICE ? VECATTN_E_NO_DEVICE : VECATTN_E_DRIVER;
        return;
    }
    load_status = VECATTN_OK;
}

vecattn_status va_driver_load(char *msg, size_t msg_size) {
    pthread_once(&load_once, load_driver);
    if (load_status != VECATTN_OK && msg) snprintf(msg, msg_size, "%s", load_message);
    return load_status;
}

const char *va_cu_error_name(CUresult r) {
    const char *name = NULL;
    if (va_cuGetErrorName && va_cuGetErrorName(r, &name) == CUDA_SUCCESS && name) return name;
    return "CUDA_ERROR_UNKNOWN";
}
