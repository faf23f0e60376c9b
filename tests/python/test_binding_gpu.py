"""The Python binding on a GPU: vecattn.prefill / vecattn.select against float64 references
on the CPU, views and GQA, CUDA-graph capture and replay with new inputs, torch.compile.

Bounds on ||O - O_ref|| / ||O_ref|| (as tests/test_gpu_attention.c): bf16 1e-2, fp16 2e-3.
The sparse references attend exactly the GPU's lists (plus the spec's forced keys), and
the lists themselves are compared with the C reference selection (tests/ref, loaded from
$VECATTN_REF_LIBRARY): keys within the fp32 rounding margin of the rule may differ, at most
0.1% of the kept keys. Exits 77 when torch or a CUDA device is missing.
"""
import ctypes
import math
import os
import sys
import zlib

try:
    import torch
except ImportError:
    print("SKIP: torch is not installed")
    sys.exit(77)
if not torch.cuda.is_available():
    print("SKIP: no CUDA device")
    sys.exit(77)

import vecattn
from vecattn._lib import BF16, FP16, PrefillArgs

failures = []


def check(ok, msg):
    print(("ok    " if ok else "FAIL  ") + msg)
    if not ok:
        failures.append(msg)


def tolerance(dtype):
    return 1e-2 if dtype == torch.bfloat16 else 2e-3


def make_inputs(B, Hq, Hkv, Sq, Sk, D, dtype, seed, layout="bhsd"):
    """Random, never zero, with a few globally attended ("vertical") keys so that the
    selection keeps a fraction of the keys, as in video attention."""
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, Hq, Sq, D, generator=g) * 0.5
    k = torch.randn(B, Hkv, Sk, D, generator=g) * 0.5
    v = torch.randn(B, Hkv, Sk, D, generator=g)
    u = torch.randn(D, generator=g)
    u = u / u.norm() * math.sqrt(D)
    vertical = torch.randperm(Sk, generator=g)[: max(Sk // 64, 1)]
    k[:, :, vertical, :] += 0.6 * u
    q += 0.3 * u
    out = []
    for t in (q, k, v):
        t = t.to(dtype)
        if layout == "bshd":
            t = t.transpose(1, 2).contiguous().transpose(1, 2)  # a [B, S, H, D] tensor viewed as BHSD
        out.append(t.cuda())
    return out


def as_layout(t, layout):
    return t if layout == "bhsd" else t.transpose(1, 2)


def reference(q, k, v, mask, scale=None):
    """float64 attention on the CPU with a boolean [B, Hq, Sq, Sk] mask of attended keys."""
    qd, kd, vd = (x.detach().cpu().double() for x in (q, k, v))
    rep = qd.shape[1] // kd.shape[1]
    kd, vd = kd.repeat_interleave(rep, 1), vd.repeat_interleave(rep, 1)
    s = (qd @ kd.transpose(-1, -2)) * (scale or 1.0 / math.sqrt(q.shape[-1]))
    s = s.masked_fill(~mask, float("-inf"))
    p = torch.softmax(s, dim=-1).nan_to_num(0.0)
    return p @ vd


def causal_mask(Sq, Sk):
    t = torch.arange(Sq)[:, None] + (Sk - Sq)
    return torch.arange(Sk)[None, :] <= t


def rel_l2(out, ref):
    out = out.detach().cpu().double()
    return ((out - ref).norm() / ref.norm()).item()


def sparse_mask(counts, offsets, indices, B, Hq, Sq, Sk, pq, causal):
    counts, offsets, indices = counts.cpu(), offsets.cpu(), indices.cpu()
    nq = (Sq + pq - 1) // pq
    mask = torch.zeros(B, Hq, Sq, Sk, dtype=torch.bool)
    for b in range(B):
        for h in range(Hq):
            for i in range(nq):
                r = (b * Hq + h) * nq + i
                rows = slice(i * pq, min((i + 1) * pq, Sq))
                keys = indices[offsets[r]: offsets[r] + counts[b, h, i]].long()
                mask[b, h, rows, keys] = True
                if causal:
                    p0 = i * pq + (Sk - Sq)
                    mask[b, h, rows, : min(pq, p0)] = True
                    mask[b, h, rows, p0: p0 + (rows.stop - rows.start)] = True
    if causal:
        mask &= causal_mask(Sq, Sk)
    return mask


def c_reference_selection(q, k, threshold, pq, bk, gk, causal):
    """va_ref_select of tests/ref on host copies: (counts, offsets, indices) tensors."""
    ref = ctypes.CDLL(os.environ["VECATTN_REF_LIBRARY"])
    ref.va_ref_select.restype = ctypes.c_int64
    ref.va_ref_select.argtypes = [ctypes.POINTER(PrefillArgs), ctypes.c_void_p, ctypes.c_void_p,
                                  ctypes.POINTER(ctypes.c_void_p)]
    qh, kh = q.detach().cpu().contiguous(), k.detach().cpu().contiguous()
    B, Hq, Sq, D = qh.shape
    Hkv, Sk = kh.shape[1], kh.shape[2]
    a = PrefillArgs()
    vecattn._lib.lib().vecattn_prefill_args_init(ctypes.byref(a))
    a.q, a.k, a.v, a.o = qh.data_ptr(), kh.data_ptr(), kh.data_ptr(), qh.data_ptr()
    a.q_stride[:] = a.o_stride[:] = (Hq * Sq * D, Sq * D, D)
    a.k_stride[:] = a.v_stride[:] = (Hkv * Sk * D, Sk * D, D)
    a.batch, a.heads_q, a.heads_kv, a.seq_q, a.seq_k, a.head_dim = B, Hq, Hkv, Sq, Sk, D
    a.dtype = BF16 if q.dtype == torch.bfloat16 else FP16
    a.causal, a.pq, a.bk, a.gk = int(causal), pq, bk, gk
    keep = None
    if isinstance(threshold, (list, tuple)):
        keep = (ctypes.c_float * len(threshold))(*threshold)
        a.thresholds = ctypes.cast(keep, ctypes.c_void_p)
    else:
        a.threshold = threshold
    nq = (Sq + pq - 1) // pq
    counts = torch.empty(B * Hq * nq, dtype=torch.int32)
    offsets = torch.empty(B * Hq * nq + 1, dtype=torch.int64)
    idx_ptr = ctypes.c_void_p()
    total = ref.va_ref_select(ctypes.byref(a), counts.data_ptr(), offsets.data_ptr(), ctypes.byref(idx_ptr))
    assert total >= 0
    indices = torch.tensor((ctypes.c_int32 * max(total, 1)).from_address(idx_ptr.value)[:total], dtype=torch.int32)
    ctypes.CDLL(None).free(idx_ptr)
    return counts.view(B, Hq, nq), offsets, indices


def same_selection(gpu, cpu):
    """Symmetric difference of the kept (row, key) sets, and the number kept."""
    def pairs(sel):
        counts, offsets, indices = (x.cpu() for x in sel)
        rows = torch.repeat_interleave(torch.arange(counts.numel()), counts.flatten().long())
        return set(zip(rows.tolist(), indices.tolist()))
    a, b = pairs(gpu), pairs(cpu)
    return len(a ^ b), len(b)


CASES = [  # name, B, Hq, Hkv, Sq, Sk, D, dtype, causal, pq, bk, gk, threshold, layout
    ("bf16_d128_causal", 1, 4, 4, 1000, 1000, 128, torch.bfloat16, True, 64, 16, 16, 0.9, "bhsd"),
    ("fp16_d64_noncausal_sq700_sk1200", 1, 2, 2, 700, 1200, 64, torch.float16, False, 64, 16, 16, 0.5, "bhsd"),
    ("bf16_d128_gqa4_bshd_perhead", 2, 8, 2, 777, 777, 128, torch.bfloat16, True, 64, 16, 8, "perhead", "bshd"),
    ("fp16_d128_causal_pq128", 1, 2, 2, 1500, 1500, 128, torch.float16, True, 128, 32, 16, 0.9, "bhsd"),
]


def run_case(c):
    name, B, Hq, Hkv, Sq, Sk, D, dtype, causal, pq, bk, gk, th, layout = c
    if th == "perhead":
        th = [0.9, 0.5, 0.99, 0.3, 0.9, 0.7, 0.95, 0.6][:Hq]
    q, k, v = make_inputs(B, Hq, Hkv, Sq, Sk, D, dtype, seed=zlib.crc32(name.encode()), layout=layout)
    qa, ka, va = (as_layout(t, layout) for t in (q, k, v))
    full = causal_mask(Sq, Sk) if causal else torch.ones(Sq, Sk, dtype=torch.bool)
    full = full.expand(B, Hq, Sq, Sk)
    dense_ref = reference(q, k, v, full)
    # (a) all kept: dense mode, and a threshold so small that the rule keeps everything
    for label, kw in (("dense", dict(dense=True)), ("p=1e-6", dict(threshold=1e-6))):
        o = vecattn.prefill(qa, ka, va, pq=pq, bk=bk, gk=gk, causal=causal, layout=layout, **kw)
        err = rel_l2(as_layout(o, layout), dense_ref)
        check(err <= tolerance(dtype), f"{name} {label} vs float64 SDPA-equivalent: rel L2 {err:.2e}")
    sdpa = torch.nn.functional.scaled_dot_product_attention(
        q.cpu().double(), k.cpu().double().repeat_interleave(Hq // Hkv, 1), v.cpu().double().repeat_interleave(Hq // Hkv, 1),
        attn_mask=full)
    check(rel_l2(sdpa, dense_ref) < 1e-10, f"{name} the float64 reference equals float64 SDPA")
    # (b) sparse: the GPU's lists against the C reference, the output against float64 on them
    sel = vecattn.select(qa, ka, threshold=th, pq=pq, bk=bk, gk=gk, causal=causal, layout=layout)
    diff, kept = same_selection(sel, c_reference_selection(q, k, th, pq, bk, gk, causal))
    check(diff <= max(1, kept // 1000), f"{name} selection vs C reference: {diff} of {kept} kept keys differ")
    o, sparsity = vecattn.prefill(qa, ka, va, threshold=th, pq=pq, bk=bk, gk=gk, causal=causal, layout=layout,
                                  return_sparsity=True)
    mask = sparse_mask(*sel, B, Hq, Sq, Sk, pq, causal)
    err = rel_l2(as_layout(o, layout), reference(q, k, v, mask))
    want = 1.0 - mask.sum().item() / full.sum().item()
    check(err <= tolerance(dtype) and abs(sparsity - want) < 1e-4,
          f"{name} sparse: rel L2 {err:.2e} on the same key sets, sparsity {sparsity:.4f} (mask {want:.4f})")


def run_graph():
    """Capture on a side stream after a warm-up, replay with new input values."""
    B, H, S, D, dtype = 1, 4, 1024, 128, torch.bfloat16
    q, k, v = make_inputs(B, H, H, S, S, D, dtype, seed=7)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        vecattn.prefill(q, k, v)  # warm-up: kernels compiled or loaded before the capture
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = vecattn.prefill(q, k, v)
    graph.replay()
    first = out.clone()
    q2, k2, v2 = make_inputs(B, H, H, S, S, D, dtype, seed=8)
    q.copy_(q2), k.copy_(k2), v.copy_(v2)
    out.fill_(float("nan"))  # poisoned: only a replay can fill it
    graph.replay()
    torch.cuda.synchronize()
    sel = vecattn.select(q, k)
    err = rel_l2(out, reference(q, k, v, sparse_mask(*sel, B, H, S, S, 64, True)))
    changed = not torch.equal(out, first)
    check(err <= tolerance(dtype) and changed, f"CUDA graph replay with new inputs: rel L2 {err:.2e}, output changed: {changed}")


def run_compile():
    q, k, v = make_inputs(1, 2, 2, 512, 512, 64, torch.float16, seed=9)

    def layer(q, k, v):
        return vecattn.prefill(q, k, v, threshold=0.8) * 2.0

    eager = layer(q, k, v)
    compiled = torch.compile(layer, fullgraph=True)(q, k, v)
    check(torch.equal(eager, compiled), "torch.compile(fullgraph=True) gives the eager result")


def run_errors():
    q, k, v = make_inputs(1, 2, 2, 256, 256, 128, torch.bfloat16, seed=3)
    try:
        vecattn.prefill(q, k, v, threshold=1.5)
        check(False, "threshold 1.5 must raise")
    except vecattn.VecattnError as e:
        check(e.status == 14 and "threshold" in e.message, f"threshold 1.5 raises {e.name}: {e.message}")
    try:
        vecattn.prefill(q.cpu(), k, v)
        check(False, "a CPU tensor must raise")
    except ValueError as e:
        check("CUDA" in str(e), f"CPU tensor raises ValueError: {e}")


if __name__ == "__main__":
    print("device:", vecattn.device_info())
    for c in CASES:
        run_case(c)
    run_graph()
    run_compile()
    run_errors()
    print(f"test_binding_gpu: {len(failures)} failure(s)")
    sys.exit(1 if failures else 0)
