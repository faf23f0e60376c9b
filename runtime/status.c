/*
** status.c -- fixed text for every status code, one row per code.
*/
#include "vecattn.h"

const char *vecattn_status_string(vecattn_status status) {
    switch (status) {
    case VECATTN_OK: return "not an error";
    case VECATTN_E_MISUSE: return "library misuse (NULL or destroyed context, NULL argument)";
    case VECATTN_E_NOMEM: return "out of memory";
    case VECATTN_E_INTERNAL: return "internal error in vecattn";
    case VECATTN_E_INVALID_ARG: return "invalid argument";
    case VECATTN_E_HEAD_DIM: return "unsupported head dimension";
    case VECATTN_E_SHAPE: return "empty or inconsistent tensor sizes";
    case VECATTN_E_LAYOUT: return "bad tensor pointer, stride or alignment";
    case VECATTN_E_THRESHOLD: return "threshold out of range (0, 1]";
    case VECATTN_E_BLOCKING: return "unsupported Pq, Bk, Gk or chunk size";
    case VECATTN_E_DTYPE: return "unsupported element type";
    case VECATTN_E_CAPACITY: return "caller-provided buffer too small";
    case VECATTN_E_NO_DRIVER: return "CUDA driver not available";
    case VECATTN_E_NO_DEVICE: return "no such CUDA device";
    case VECATTN_E_DRIVER: return "CUDA driver call failed";
    case VECATTN_E_LAUNCH: return "kernel launch failed";
    case VECATTN_E_ARCH: return "GPU architecture not supported";
    case VECATTN_E_NVRTC: return "NVRTC compilation failed";
    case VECATTN_E_CODEGEN: return "invalid kernel specification";
    case VECATTN_E_CACHE: return "kernel cache unavailable";
    case VECATTN_E_CACHE_CORRUPT: return "kernel cache corrupted";
    case VECATTN_E_JSON: return "malformed JSON";
    }
    return "unknown status code";
}

const char *vecattn_version(void) { return VECATTN_VERSION_STRING; }
