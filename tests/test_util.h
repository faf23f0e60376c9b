/*
** test_util.h -- the few things every test program shares: CHECK, the skip code, and the
** "is there a GPU here?" probe.
**
** A test program includes this header once (it defines the failure counter), counts its
** failures with CHECK, and ends with `return test_exit_code();`. GPU tests call
** test_gpu_available() first and exit with TEST_SKIP (CTest's SKIP_RETURN_CODE) when it
** says no, so that a machine without a GPU reports them as skipped, never as passed.
*/
#ifndef VECATTN_TEST_UTIL_H
#define VECATTN_TEST_UTIL_H

#include <stdio.h>

#include "runtime/runtime.h"

/* The exit code CTest treats as "skipped" (SKIP_RETURN_CODE in tests/CMakeLists.txt). */
#define TEST_SKIP 77

/* Failed CHECKs so far in this program. */
static int test_failures = 0;

/* Count a failure and print file:line, the condition and a printf-style message.
** Usage: CHECK(x == 3, "x is %d", x); the message is required (it may have no %). */
#define CHECK(cond, ...)                                                                  \
    do {                                                                                  \
        if (!(cond)) {                                                                    \
            test_failures++;                                                              \
            fprintf(stderr, "%s:%d: CHECK(%s) failed: ", __FILE__, __LINE__, #cond);     \
            fprintf(stderr, __VA_ARGS__);                                                 \
            fputc('\n', stderr);                                                          \
        }                                                                                 \
    } while (0)

/* 0 when every CHECK passed, else 1; prints a one-line verdict. */
static inline int test_exit_code(const char *program)
{
    if (test_failures)
        fprintf(stderr, "%s: %d check(s) FAILED\n", program, test_failures);
    else
        printf("%s: all checks passed\n", program);
    return test_failures ? 1 : 0;
}

/*
** 1 when the driver loads and reports at least one device; else 0 with the reason in `why`
** (the caller prints "SKIP: <why>" and returns TEST_SKIP). Loads the driver as the library
** does (va_driver_load honours $VECATTN_LIBCUDA).
*/
static inline int test_gpu_available(char *why, size_t n)
{
    char msg[512];
    if (va_driver_load(msg, sizeof msg) != VECATTN_OK) {
        snprintf(why, n, "no CUDA driver: %s", msg);
        return 0;
    }
    CUresult r = va_cuInit(0);
    if (r != CUDA_SUCCESS) {
        snprintf(why, n, "cuInit failed: %s", va_cu_error_name(r));
        return 0;
    }
    int count = 0;
    r = va_cuDeviceGetCount(&count);
    if (r != CUDA_SUCCESS || count < 1) {
        snprintf(why, n, "no CUDA device (cuDeviceGetCount: %s, count %d)",
                 va_cu_error_name(r), count);
        return 0;
    }
    return 1;
}

#endif /* VECATTN_TEST_UTIL_H */
