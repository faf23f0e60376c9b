"""Loading libvecattn.so and the ctypes mirror of include/vecattn.h.

Only the C API is used (no compiler at install time). The structures below must match the
header field by field; tests/python/test_binding_cpu.py checks the layout against the
library itself (vecattn_prefill_args_init writes known defaults at known offsets).
"""
import ctypes
import ctypes.util
import glob
import os
import threading

__all__ = ["LibraryNotFound", "VecattnError", "PrefillArgs", "Selection", "DeviceInfo", "lib", "status_name"]

BF16, FP16 = 0, 1

# vecattn_status values (never renumbered) and their names.
STATUS_NAMES = {
    0: "VECATTN_OK", 1: "VECATTN_E_MISUSE", 2: "VECATTN_E_NOMEM", 3: "VECATTN_E_INTERNAL",
    10: "VECATTN_E_INVALID_ARG", 11: "VECATTN_E_HEAD_DIM", 12: "VECATTN_E_SHAPE", 13: "VECATTN_E_LAYOUT",
    14: "VECATTN_E_THRESHOLD", 15: "VECATTN_E_BLOCKING", 16: "VECATTN_E_DTYPE", 17: "VECATTN_E_CAPACITY",
    20: "VECATTN_E_NO_DRIVER", 21: "VECATTN_E_NO_DEVICE", 22: "VECATTN_E_DRIVER", 23: "VECATTN_E_LAUNCH",
    24: "VECATTN_E_ARCH", 30: "VECATTN_E_NVRTC", 31: "VECATTN_E_CODEGEN", 40: "VECATTN_E_CACHE",
    41: "VECATTN_E_CACHE_CORRUPT", 42: "VECATTN_E_JSON",
}


class LibraryNotFound(ImportError):
    """libvecattn.so could not be found or loaded; the message lists every path tried."""


class VecattnError(RuntimeError):
    """A vecattn call failed: `status` (int), `name` (e.g. VECATTN_E_HEAD_DIM) and the
    library's message (vecattn_errmsg or vecattn_check_prefill_args)."""

    def __init__(self, status, message):
        self.status = int(status)
        self.name = STATUS_NAMES.get(self.status, f"status {self.status}")
        self.message = message
        super().__init__(f"{self.name}: {message}")


def status_name(status):
    return STATUS_NAMES.get(int(status), f"status {int(status)}")


class PrefillArgs(ctypes.Structure):
    _fields_ = [
        ("q", ctypes.c_void_p), ("k", ctypes.c_void_p), ("v", ctypes.c_void_p), ("o", ctypes.c_void_p),
        ("lse", ctypes.c_void_p),
        ("q_stride", ctypes.c_int64 * 3), ("k_stride", ctypes.c_int64 * 3),
        ("v_stride", ctypes.c_int64 * 3), ("o_stride", ctypes.c_int64 * 3),
        ("batch", ctypes.c_int), ("heads_q", ctypes.c_int), ("heads_kv", ctypes.c_int),
        ("seq_q", ctypes.c_int), ("seq_k", ctypes.c_int), ("head_dim", ctypes.c_int),
        ("dtype", ctypes.c_int), ("causal", ctypes.c_int), ("dense", ctypes.c_int),
        ("threshold", ctypes.c_float), ("thresholds", ctypes.c_void_p),
        ("pq", ctypes.c_int), ("bk", ctypes.c_int), ("gk", ctypes.c_int),
        ("scale", ctypes.c_float), ("chunk_size", ctypes.c_int),
        ("sparsity_out", ctypes.c_void_p),
        ("workspace", ctypes.c_void_p), ("workspace_size", ctypes.c_size_t),
    ]


class Selection(ctypes.Structure):
    _fields_ = [("counts", ctypes.c_void_p), ("offsets", ctypes.c_void_p), ("indices", ctypes.c_void_p),
                ("indices_capacity", ctypes.c_int64)]


class DeviceInfo(ctypes.Structure):
    _fields_ = [("name", ctypes.c_char * 256), ("compute_major", ctypes.c_int), ("compute_minor", ctypes.c_int),
                ("sm_count", ctypes.c_int), ("driver_version", ctypes.c_int), ("nvrtc_major", ctypes.c_int),
                ("nvrtc_minor", ctypes.c_int), ("total_memory", ctypes.c_size_t)]


def _candidates():
    """Where libvecattn.so may be, in the order they are tried."""
    here = os.path.dirname(os.path.abspath(__file__))
    env = os.environ.get("VECATTN_LIBRARY")
    if env:
        return [env], True  # an explicit choice is never second-guessed
    paths = []
    repo = os.path.dirname(os.path.dirname(here))          # <repo>/python/vecattn -> <repo>
    paths += sorted(glob.glob(os.path.join(repo, "build*", "libvecattn.so")))
    for up in (3, 4):                                       # <prefix>/lib/python3*/site-packages/vecattn
        prefix_lib = os.path.abspath(os.path.join(here, *[".."] * up))
        paths.append(os.path.join(prefix_lib, "libvecattn.so"))
    found = ctypes.util.find_library("vecattn")
    if found:
        paths.append(found)
    paths.append("libvecattn.so.0")                         # the loader's own search path
    return paths, False


_PROTOTYPES = {
    "vecattn_status_string": (ctypes.c_char_p, [ctypes.c_int]),
    "vecattn_version": (ctypes.c_char_p, []),
    "vecattn_create": (ctypes.c_int, [ctypes.POINTER(ctypes.c_void_p), ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]),
    "vecattn_destroy": (None, [ctypes.c_void_p]),
    "vecattn_errmsg": (ctypes.c_char_p, [ctypes.c_void_p]),
    "vecattn_prefill_args_init": (None, [ctypes.c_void_p]),
    "vecattn_check_prefill_args": (ctypes.c_int, [ctypes.POINTER(PrefillArgs), ctypes.c_char_p, ctypes.c_size_t]),
    "vecattn_prefill_workspace_size": (ctypes.c_int, [ctypes.POINTER(PrefillArgs), ctypes.POINTER(ctypes.c_size_t)]),
    "vecattn_prefill": (ctypes.c_int, [ctypes.c_void_p, ctypes.POINTER(PrefillArgs), ctypes.c_void_p]),
    "vecattn_select": (ctypes.c_int, [ctypes.c_void_p, ctypes.POINTER(PrefillArgs), ctypes.POINTER(Selection),
                                      ctypes.POINTER(ctypes.c_int64), ctypes.c_void_p]),
    "vecattn_sparse_attention": (ctypes.c_int, [ctypes.c_void_p, ctypes.POINTER(PrefillArgs), ctypes.c_void_p,
                                                ctypes.POINTER(Selection), ctypes.c_void_p]),
    "vecattn_get_device_info": (ctypes.c_int, [ctypes.c_void_p, ctypes.POINTER(DeviceInfo)]),
}

_lock = threading.Lock()
_lib = None


def lib():
    """The loaded library (loaded on first use), or LibraryNotFound."""
    global _lib
    with _lock:
        if _lib is None:
            _lib = _load()
        return _lib


def _load():
    paths, explicit = _candidates()
    tried = []
    for path in paths:
        if os.path.sep in path and not os.path.exists(path):
            tried.append(f"{path} (no such file)")
            continue
        try:
            handle = ctypes.CDLL(path)
        except OSError as e:
            tried.append(f"{path} ({e})")
            continue
        missing = [name for name in _PROTOTYPES if not hasattr(handle, name)]
        if missing:
            tried.append(f"{path} (not a vecattn {'' if explicit else 'of this version '}library: lacks {missing[0]})")
            continue
        for name, (restype, argtypes) in _PROTOTYPES.items():
            fn = getattr(handle, name)
            fn.restype, fn.argtypes = restype, argtypes
        return handle
    hint = ("VECATTN_LIBRARY names the library file" if explicit else
            "build the library (cmake --build build), install it (cmake --install), "
            "or set VECATTN_LIBRARY to the path of libvecattn.so")
    raise LibraryNotFound("vecattn: cannot load libvecattn.so; tried:\n  " + "\n  ".join(tried) + f"\n{hint}")
