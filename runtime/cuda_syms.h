/*
** cuda_syms.h -- every CUDA Driver API entry point vecattn uses, named once.
**
** VA_CU_SYMBOLS(X) expands X(name, "exported symbol", (parameter types)) per entry point.
** driver.c turns the list into function pointers va_<name> and resolves them with dlsym;
** a missing symbol is reported by its exported name. Add a row here to use a new call.
** The exported names carry the _v2/_v3 suffixes that cuda.h's macros would add.
*/
#ifndef VECATTN_CUDA_SYMS_H
#define VECATTN_CUDA_SYMS_H

#include <cuda.h>

#define VA_CU_SYMBOLS(X)                                                                         \
    X(cuInit, "cuInit", (unsigned int))                                                          \
    X(cuDriverGetVersion, "cuDriverGetVersion", (int *))                                         \
    X(cuGetErrorName, "cuGetErrorName", (CUresult, const char **))                               \
    X(cuDeviceGetCount, "cuDeviceGetCount", (int *))                                             \
    X(cuDeviceGet, "cuDeviceGet", (CUdevice *, int))                                             \
    X(cuDeviceGetName, "cuDeviceGetName", (char *, int, CUdevice))                               \
    X(cuDeviceGetAttribute, "cuDeviceGetAttribute", (int *, CUdevice_attribute, CUdevice))       \
    X(cuDeviceTotalMem, "cuDeviceTotalMem_v2", (size_t *, CUdevice))                             \
    X(cuDevicePrimaryCtxRetain, "cuDevicePrimaryCtxRetain", (CUcontext *, CUdevice))             \
    X(cuDevicePrimaryCtxRelease, "cuDevicePrimaryCtxRelease_v2", (CUdevice))                     \
    X(cuCtxPushCurrent, "cuCtxPushCurrent_v2", (CUcontext))                                      \
    X(cuCtxPopCurrent, "cuCtxPopCurrent_v2", (CUcontext *))                                      \
    X(cuCtxSynchronize, "cuCtxSynchronize", (void))                                              \
    X(cuModuleLoadData, "cuModuleLoadData", (CUmodule *, const void *))                          \
    X(cuModuleGetFunction, "cuModuleGetFunction", (CUfunction *, CUmodule, const char *))        \
    X(cuFuncSetAttribute, "cuFuncSetAttribute", (CUfunction, CUfunction_attribute, int))         \
    X(cuFuncGetAttribute, "cuFuncGetAttribute", (int *, CUfunction_attribute, CUfunction))       \
    X(cuLaunchKernel, "cuLaunchKernel",                                                          \
      (CUfunction, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned,         \
       CUstream, void **, void **))                                                              \
    X(cuMemAlloc, "cuMemAlloc_v2", (CUdeviceptr *, size_t))                                      \
    X(cuMemFree, "cuMemFree_v2", (CUdeviceptr))                                                  \
    X(cuMemAllocHost, "cuMemAllocHost_v2", (void **, size_t))                                    \
    X(cuMemFreeHost, "cuMemFreeHost", (void *))                                                  \
    X(cuMemcpyHtoD, "cuMemcpyHtoD_v2", (CUdeviceptr, const void *, size_t))                     \
    X(cuMemcpyDtoH, "cuMemcpyDtoH_v2", (void *, CUdeviceptr, size_t))                           \
    X(cuMemcpyDtoHAsync, "cuMemcpyDtoHAsync_v2", (void *, CUdeviceptr, size_t, CUstream))       \
    X(cuMemsetD8, "cuMemsetD8_v2", (CUdeviceptr, unsigned char, size_t))                        \
    X(cuMemsetD8Async, "cuMemsetD8Async", (CUdeviceptr, unsigned char, size_t, CUstream))       \
    X(cuMemHostGetDevicePointer, "cuMemHostGetDevicePointer_v2",                                 \
      (CUdeviceptr *, void *, unsigned))                                                         \
    X(cuStreamWaitValue32, "cuStreamWaitValue32_v2",                                             \
      (CUstream, CUdeviceptr, cuuint32_t, unsigned))                                             \
    X(cuStreamCreate, "cuStreamCreate", (CUstream *, unsigned int))                              \
    X(cuStreamDestroy, "cuStreamDestroy_v2", (CUstream))                                         \
    X(cuStreamSynchronize, "cuStreamSynchronize", (CUstream))                                    \
    X(cuEventCreate, "cuEventCreate", (CUevent *, unsigned int))                                 \
    X(cuEventDestroy, "cuEventDestroy_v2", (CUevent))                                            \
    X(cuEventRecord, "cuEventRecord", (CUevent, CUstream))                                       \
    X(cuEventSynchronize, "cuEventSynchronize", (CUevent))                                       \
    X(cuEventElapsedTime, "cuEventElapsedTime_v2", (float *, CUevent, CUevent))                \
    X(cuTensorMapEncodeTiled, "cuTensorMapEncodeTiled",                                          \
      (CUtensorMap *, CUtensorMapDataType, cuuint32_t, void *, const cuuint64_t *,              \
       const cuuint64_t *, const cuuint32_t *, const cuuint32_t *, CUtensorMapInterleave,        \
       CUtensorMapSwizzle, CUtensorMapL2promotion, CUtensorMapFloatOOBfill))

/* Function pointers va_cuInit, va_cuMemAlloc, ... (valid after va_driver_load() succeeded). */
#define VA_CU_DECLARE(name, sym, params) extern CUresult(*va_##name) params;
VA_CU_SYMBOLS(VA_CU_DECLARE)
#undef VA_CU_DECLARE

#endif /* VECATTN_CUDA_SYMS_H */
