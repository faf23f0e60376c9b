"""Plain-Python argument building: tensor descriptions -> vecattn_prefill_args.

Nothing here needs torch, so the checks and the C checker can be exercised on machines
without a GPU (tests/python/test_binding_cpu.py).
"""
import ctypes
import math

from ._lib import BF16, FP16, PrefillArgs, VecattnError, lib

DTYPES = {"bfloat16": BF16, "bf16": BF16, "float16": FP16, "fp16": FP16, "half": FP16}
LAYOUTS = ("bhsd", "bshd")


class View:
    """One tensor as the library sees it: device address, 4-D shape and element strides
    (as torch reports them), dtype name and CUDA device index."""

    def __init__(self, name, ptr, shape, strides, dtype, device=0):
        self.name, self.ptr, self.device = name, int(ptr), device
        self.shape, self.strides, self.dtype = tuple(shape), tuple(strides), str(dtype).replace("torch.", "")

    def bhsd(self, layout):
        """(B, H, S, D) and the (batch, head, sequence) strides for `layout`."""
        b, x, y, d = self.shape
        sb, sx, sy, _ = self.strides
        return ((b, x, y, d), (sb, sx, sy)) if layout == "bhsd" else ((b, y, x, d), (sb, sy, sx))


def _check_views(views, layout):
    if layout not in LAYOUTS:
        raise ValueError(f"layout={layout!r}: use 'bhsd' ([B, H, S, D]) or 'bshd' ([B, S, H, D])")
    for t in views:
        if len(t.shape) != 4:
            raise ValueError(f"{t.name}: expected a 4-D tensor ({layout.upper()}), got shape {list(t.shape)}")
        if t.dtype not in DTYPES:
            raise TypeError(f"{t.name}: dtype {t.dtype} is not supported (bfloat16 or float16)")
        if t.strides[3] != 1 and t.shape[3] != 1:
            raise ValueError(f"{t.name}: the last dimension must be contiguous (stride {t.strides[3]})")
    q = views[0]
    for t in views[1:]:
        if t.dtype != q.dtype:
            raise TypeError(f"{t.name}: dtype {t.dtype} differs from q's {q.dtype}")
        if t.device != q.device:
            raise ValueError(f"{t.name}: on device {t.device}, q on device {q.device}")


def thresholds_list(threshold, heads_q):
    """A float, or one threshold per query head -> list of floats (length 1 or heads_q)."""
    if hasattr(threshold, "tolist"):
        threshold = threshold.tolist()
    if isinstance(threshold, (int, float)):
        return [float(threshold)]
    values = [float(x) for x in threshold]
    if len(values) != heads_q:
        raise ValueError(f"threshold: {len(values)} per-head values for {heads_q} query heads")
    return values


def build_args(q, k, v, o, layout="bhsd", thresholds=(0.9,), pq=64, bk=16, gk=16, causal=True, dense=False,
               chunk_size=0, scale=None):
    """PrefillArgs for the views (v and o may be None for the selection alone), plus the
    objects that must stay alive while the C structure is used."""
    views = [t for t in (q, k, v, o) if t is not None]
    _check_views(views, layout)
    (B, Hq, Sq, D), qs = q.bhsd(layout)
    (Bk_, Hkv, Sk, Dk), ks = k.bhsd(layout)
    if (Bk_, Dk) != (B, D):
        raise ValueError(f"k: batch and head dim {Bk_}, {Dk} differ from q's {B}, {D}")
    if v is not None and v.bhsd(layout)[0] != (Bk_, Hkv, Sk, Dk):
        raise ValueError(f"v: shape {list(v.shape)} differs from k's {list(k.shape)}")
    if o is not None and o.bhsd(layout)[0] != (B, Hq, Sq, D):
        raise ValueError(f"o: shape {list(o.shape)} differs from q's {list(q.shape)}")
    a = PrefillArgs()
    lib().vecattn_prefill_args_init(ctypes.byref(a))
    a.q, a.k = q.ptr, k.ptr
    a.v = v.ptr if v is not None else None
    a.o = o.ptr if o is not None else None
    a.q_stride[:] = qs
    a.k_stride[:] = ks
    a.v_stride[:] = v.bhsd(layout)[1] if v is not None else ks
    a.o_stride[:] = o.bhsd(layout)[1] if o is not None else qs
    a.batch, a.heads_q, a.heads_kv, a.seq_q, a.seq_k, a.head_dim = B, Hq, Hkv, Sq, Sk, D
    a.dtype = DTYPES[q.dtype]
    a.causal, a.dense = int(bool(causal)), int(bool(dense))
    a.pq, a.bk, a.gk, a.chunk_size = int(pq), int(bk), int(gk), int(chunk_size)
    a.scale = 0.0 if scale is None else float(scale)
    if scale is not None and not (math.isfinite(a.scale) and a.scale > 0):
        raise ValueError(f"scale={scale}: must be a positive finite number (None: 1/sqrt(D))")
    keep = []
    values = list(thresholds)
    if len(values) == 1:
        a.threshold = values[0]
    else:
        arr = (ctypes.c_float * len(values))(*values)
        keep.append(arr)
        a.thresholds = ctypes.cast(arr, ctypes.c_void_p)
    return a, keep


def check_args(a, need_v_o=True):
    """The library's own checks (no device needed); VecattnError with its message."""
    msg = ctypes.create_string_buffer(512)
    if need_v_o:
        st = lib().vecattn_check_prefill_args(ctypes.byref(a), msg, len(msg))
    else:  # the selection reads neither v nor o: check with placeholders
        probe = PrefillArgs.from_buffer_copy(a)
        probe.v = probe.v or probe.k
        probe.o = probe.o or probe.q
        st = lib().vecattn_check_prefill_args(ctypes.byref(probe), msg, len(msg))
    if st != 0:
        raise VecattnError(st, msg.value.decode(errors="replace"))


def workspace_size(a):
    n = ctypes.c_size_t(0)
    st = lib().vecattn_prefill_workspace_size(ctypes.byref(a), ctypes.byref(n))
    if st != 0:
        raise VecattnError(st, "vecattn_prefill_workspace_size")
    return n.value
