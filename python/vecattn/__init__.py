"""vecattn: vector-sparse attention for CUDA GPUs, from Python.

A ctypes binding of libvecattn.so (include/vecattn.h is the reference); no compiler is
needed to install it. The library is looked up in $VECATTN_LIBRARY, the build trees of the
source checkout this package sits in, the install prefix, then the system's search path.

    import vecattn
    o = vecattn.prefill(q, k, v, threshold=0.9)                  # torch CUDA tensors
    o, sparsity = vecattn.prefill(q, k, v, return_sparsity=True)
    counts, offsets, indices = vecattn.select(q, k)
    th = vecattn.load_thresholds("thresholds.json")              # [layers][heads]
    o = vecattn.prefill(q, k, v, threshold=th[layer])

torch is imported on first use of prefill/select, so the rest works without it.
"""
from ._lib import LibraryNotFound, VecattnError, status_name
from .thresholds import load_thresholds

__version__ = "0.1.0"
__all__ = ["prefill", "select", "device_info", "load_thresholds", "library_version", "VecattnError",
           "LibraryNotFound", "status_name"]


def library_version():
    """Version of the loaded libvecattn.so (LibraryNotFound when it cannot be loaded)."""
    from ._lib import lib
    return lib().vecattn_version().decode()


def _torch_api():
    from . import _torch
    return _torch


def prefill(*args, **kwargs):
    return _torch_api().prefill(*args, **kwargs)


def select(*args, **kwargs):
    return _torch_api().select(*args, **kwargs)


def device_info(*args, **kwargs):
    return _torch_api().device_info(*args, **kwargs)


try:  # the docstrings of the real functions, where torch is there to import them
    from . import _torch as _t
    prefill.__doc__, select.__doc__, device_info.__doc__ = _t.prefill.__doc__, _t.select.__doc__, _t.device_info.__doc__
except ImportError:
    pass
