/*
** nvrtc.c -- generated source to CUBIN with NVRTC. No include paths: the generated source
** is self-contained (see codegen.c), which is what lets an application ship only the driver
** and libnvrtc.
*/
#define _GNU_SOURCE /* dladdr */
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <string.h>

#include <nvrtc.h>

#include "runtime/runtime.h"

void va_nvrtc_version(int *major, int *minor) {
    if (nvrtcVersion(major, minor) != NVRTC_SUCCESS) *major = *minor = 0;
}

/* The program's log as a malloc'ed string, or NULL. */
static char *program_log(nvrtcProgram prog) {
    size_t size = 0;
    if (nvrtcGetProgramLogSize(prog, &size) != NVRTC_SUCCESS || size <= 1) return NULL;
    char *log = malloc(size);
    if (log && nvrtcGetProgramLog(prog, log) != NVRTC_SUCCESS) {
        free(log);
        log = NULL;
    }
    return log;
}

static char *copy_text(const char *text) { return text ? strdup(text) : NULL; }

vecattn_status va_nvrtc_compile(const va_generated *gen, void **cubin_out, size_t *cubin_size,
                                char **log_out) {
    *cubin_out = NULL;
    *cubin_size = 0;
    if (log_out) *log_out = NULL;
    nvrtcProgram prog;
    nvrtcResult r = nvrtcCreateProgram(&prog, gen->source, gen->name, 0, NULL, NULL);
    if (r != NVRTC_SUCCESS) {
        if (log_out) *log_out = copy_text(nvrtcGetErrorString(r));
        return VECATTN_E_NVRTC;
    }
    vecattn_status st = VECATTN_OK;
    r = nvrtcCompileProgram(prog, gen->n_options, (const char *const *)gen->options);
    if (r != NVRTC_SUCCESS) {
        if (log_out) {
            *log_out = program_log(prog);
            if (!*log_out) *log_out = copy_text(nvrtcGetErrorString(r));
        }
        st = VECATTN_E_NVRTC;
        goto done;
    }
    size_t size = 0;
    if (nvrtcGetCUBINSize(prog, &size) != NVRTC_SUCCESS || size == 0) {
        if (log_out) *log_out = copy_text("NVRTC produced no CUBIN");
        st = VECATTN_E_NVRTC;
        goto done;
    }
    void *cubin = malloc(size);
    if (!cubin) {
        st = VECATTN_E_NOMEM;
        goto done;
    }
    if (nvrtcGetCUBIN(prog, cubin) != NVRTC_SUCCESS) {
        free(cubin);
        if (log_out) *log_out = copy_text("nvrtcGetCUBIN failed");
        st = VECATTN_E_NVRTC;
        goto done;
    }
    *cubin_out = cubin;
    *cubin_size = size;
done:
    nvrtcDestroyProgram(&prog);
    return st;
}

/* ---- identity ------------------------------------------------------------------------- */

static pthread_once_t identity_once = PTHREAD_ONCE_INIT;
static char identity[256];

/* nvrtcVersion() gives only major.minor; the file that dladdr() finds behind it is named
** after the full version (libnvrtc.so.13.0.88) and its size changes with every build, so
** both go into the identity: a cache never hands back a CUBIN of another NVRTC build. */
static void compute_identity(void) {
    int major = 0, minor = 0;
    va_nvrtc_version(&major, &minor);
    Dl_info info;
    char resolved[4096] = "";
    long long size = -1;
    if (dladdr((void *)&nvrtcVersion, &info) && info.dli_fname && realpath(info.dli_fname, resolved)) {
        struct stat st;
        if (stat(resolved, &st) == 0) size = (long long)st.st_size;
    }
    const char *base = strrchr(resolved, '/');
    snprintf(identity, sizeof identity, "%d.%d/%s/%lld", major, minor, base ? base + 1 : "unknown", size);
}

const char *va_nvrtc_identity(void) {
    pthread_once(&identity_once, compute_identity);
    return identity;
}
