"""The torch side: one library context per CUDA device, the calls on the tensor's current
stream, and the `vecattn::prefill` custom op (torch.compile and CUDA graphs).

CUDA graphs: a call allocates its workspace from torch's caching allocator on every call
(never the context's own, which can move), queues on torch's current stream and does not
synchronise unless return_sparsity is asked for, so it can be captured after one warm-up
call (the warm-up compiles or loads the kernels, which a capture must not do).
"""
import atexit
import ctypes
import threading

import torch

from ._args import View, build_args, check_args, thresholds_list, workspace_size
from ._lib import DeviceInfo, Selection, VecattnError, lib

_contexts = {}
_contexts_lock = threading.Lock()


class _Context:
    """A vecattn_ctx; the library allows one thread at a time per context."""

    def __init__(self, device):
        self.lock = threading.Lock()
        handle = ctypes.c_void_p()
        st = lib().vecattn_create(ctypes.byref(handle), device, None, 0)
        if st != 0:
            msg = lib().vecattn_errmsg(handle).decode(errors="replace")
            lib().vecattn_destroy(handle)
            raise VecattnError(st, msg)
        self.handle = handle

    def check(self, st, what):
        if st != 0:
            raise VecattnError(st, f"{what}: {lib().vecattn_errmsg(self.handle).decode(errors='replace')}")


def _context(device_index):
    with _contexts_lock:
        ctx = _contexts.get(device_index)
        if ctx is None:
            ctx = _contexts[device_index] = _Context(device_index)
        return ctx


@atexit.register
def _destroy_contexts():
    with _contexts_lock:
        for ctx in _contexts.values():
            lib().vecattn_destroy(ctx.handle)
        _contexts.clear()


def _view(name, t):
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
    if t.device.type != "cuda":
        raise ValueError(f"{name}: must be a CUDA tensor (is on {t.device})")
    return View(name, t.data_ptr(), t.shape, t.stride(), t.dtype, t.device.index)


def _stream(t):
    return ctypes.c_void_p(torch.cuda.current_stream(t.device).cuda_stream)


def _run_prefill(q, k, v, thresholds, pq, bk, gk, causal, dense, chunk_size, scale, layout, sparsity_out=None):
    o = torch.empty_like(q)
    a, keep = build_args(_view("q", q), _view("k", k), _view("v", v), _view("o", o), layout, thresholds, pq, bk,
                         gk, causal, dense, chunk_size, scale)
    check_args(a)
    ws_bytes = workspace_size(a)
    ws = torch.empty(max(ws_bytes, 1), dtype=torch.uint8, device=q.device) if ws_bytes else None
    if ws is not None:
        a.workspace, a.workspace_size = ws.data_ptr(), ws_bytes
    if sparsity_out is not None:
        a.sparsity_out = ctypes.cast(ctypes.pointer(sparsity_out), ctypes.c_void_p)
    ctx = _context(q.device.index)
    with torch.cuda.device(q.device), ctx.lock:
        ctx.check(lib().vecattn_prefill(ctx.handle, ctypes.byref(a), _stream(q)), "vecattn_prefill")
    del keep
    return o


@torch.library.custom_op("vecattn::prefill", mutates_args=())
def _prefill_op(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, thresholds: list[float], pq: int, bk: int,
                gk: int, causal: bool, dense: bool, chunk_size: int, scale: float, layout: str) -> torch.Tensor:
    return _run_prefill(q, k, v, thresholds, pq, bk, gk, causal, dense, chunk_size, scale if scale > 0 else None,
                        layout)


@_prefill_op.register_fake
def _prefill_fake(q, k, v, thresholds, pq, bk, gk, causal, dense, chunk_size, scale, layout):
    return torch.empty_like(q)


def prefill(q, k, v, threshold=0.9, pq=64, bk=16, gk=16, causal=True, chunk_size=0, scale=None,
            return_sparsity=False, layout="bhsd", dense=False):
    """Vector-sparse attention of CUDA tensors q [B, Hq, Sq, D], k and v [B, Hkv, Sk, D]
    (layout="bshd": [B, S, H, D]; any view whose last dimension is contiguous), bfloat16 or
    float16. `threshold`: p in (0, 1], or one value per query head. Returns o shaped like q;
    with return_sparsity, (o, sparsity) -- that waits for the GPU and is not capturable."""
    thresholds = thresholds_list(threshold, _heads_q(q, layout))
    if return_sparsity:
        sparsity = ctypes.c_float(float("nan"))
        o = _run_prefill(q, k, v, thresholds, pq, bk, gk, causal, dense, chunk_size, scale, layout, sparsity)
        return o, sparsity.value
    return _prefill_op(q, k, v, thresholds, int(pq), int(bk), int(gk), bool(causal), bool(dense), int(chunk_size),
                       float(scale) if scale is not None else 0.0, layout)


def _heads_q(q, layout):
    if q.dim() != 4:
        raise ValueError(f"q: expected a 4-D tensor ({layout.upper()}), got shape {list(q.shape)}")
    return q.shape[1] if layout == "bhsd" else q.shape[2]


def select(q, k, threshold=0.9, pq=64, bk=16, gk=16, causal=True, scale=None, layout="bhsd"):
    """The selection alone: (counts [B, Hq, nQ] int32, offsets [B*Hq*nQ + 1] int64, indices
    int32) in CSR form (vecattn.h, vecattn_select): query block r keeps
    indices[offsets[r]:offsets[r+1]], ascending; the forced keys (causal sink and diagonal)
    are not listed. Waits for the GPU once (to size the index list)."""
    thresholds = thresholds_list(threshold, _heads_q(q, layout))
    a, keep = build_args(_view("q", q), _view("k", k), None, None, layout, thresholds, pq, bk, gk, causal, False,
                         0, scale)
    check_args(a, need_v_o=False)
    nq = (a.seq_q + a.pq - 1) // a.pq
    counts = torch.empty((a.batch, a.heads_q, nq), dtype=torch.int32, device=q.device)
    offsets = torch.empty(a.batch * a.heads_q * nq + 1, dtype=torch.int64, device=q.device)
    sel = Selection(counts.data_ptr(), offsets.data_ptr(), None, 0)
    total = ctypes.c_int64(0)
    ctx = _context(q.device.index)
    with torch.cuda.device(q.device), ctx.lock:
        ctx.check(lib().vecattn_select(ctx.handle, ctypes.byref(a), ctypes.byref(sel), ctypes.byref(total), _stream(q)),
                  "vecattn_select (sizes)")
        indices = torch.empty(max(total.value, 1), dtype=torch.int32, device=q.device)
        sel.indices, sel.indices_capacity = indices.data_ptr(), indices.numel()
        ctx.check(lib().vecattn_select(ctx.handle, ctypes.byref(a), ctypes.byref(sel), None, _stream(q)),
                  "vecattn_select (indices)")
    del keep
    return counts, offsets, indices[: total.value]


def device_info(device=None):
    """Name, compute capability, SMs, driver and NVRTC versions of a CUDA device."""
    index = torch.device(device if device is not None else "cuda").index or 0
    info = DeviceInfo()
    ctx = _context(index)
    with ctx.lock:
        ctx.check(lib().vecattn_get_device_info(ctx.handle, ctypes.byref(info)), "vecattn_get_device_info")
    return {"name": info.name.decode(), "compute_capability": (info.compute_major, info.compute_minor),
            "sm_count": info.sm_count, "driver_version": info.driver_version,
            "nvrtc_version": (info.nvrtc_major, info.nvrtc_minor), "total_memory": info.total_memory}
