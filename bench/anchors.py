#!/usr/bin/env python3
"""Dense attention anchors for vecattn-bench: torch SDPA with the cuDNN and FlashAttention-2
backends on the same shapes, timed the same way (CUDA events, 3 warm-up runs, L2 flushed by a
256 MiB write before every sample, median). Appends rows with vecattn-bench's CSV columns.

  python3 bench/anchors.py --seq 16384,32768 --heads 32 --heads-kv 32 --head-dim 128 \
      --causal --csv out.csv
"""
import argparse
import os
import statistics

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

COLUMNS = ("impl,mode,batch,heads_q,heads_kv,seq,head_dim,causal,dtype,threshold,sparsity,"
           "select_ms,attention_ms,total_ms,tflops_kept,select_in_prefill_ms,workspace_mib")
BACKENDS = {"cudnn": SDPBackend.CUDNN_ATTENTION, "fa2": SDPBackend.FLASH_ATTENTION}


def time_median(fn, samples):
    flush = torch.empty(256 << 20, dtype=torch.uint8, device="cuda")
    for _ in range(3):
        fn()
    times = []
    for i in range(samples):
        flush.fill_(i & 0xFF)
        start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        stop.record()
        stop.synchronize()
        times.append(start.elapsed_time(stop))
    return statistics.median(times)


def run_case(impl, seq, args, dtype):
    torch.manual_seed(seq)
    q = torch.rand(args.batch, args.heads, seq, args.head_dim, device="cuda", dtype=dtype) * 2 - 1
    k = torch.rand(args.batch, args.heads_kv, seq, args.head_dim, device="cuda", dtype=dtype) * 2 - 1
    v = torch.rand_like(k) * 2 - 1
    gqa = args.heads != args.heads_kv
    if gqa:  # the backends differ in native GQA support; expand so both run the same math
        rep = args.heads // args.heads_kv
        k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)

    def fn():
        with sdpa_kernel(BACKENDS[impl]):
            return F.scaled_dot_product_attention(q, k, v, is_causal=args.causal)

    ms = time_median(fn, args.samples)
    pairs = seq * seq * (0.5 if args.causal else 1.0)
    tflops = 4.0 * args.batch * args.heads * pairs * args.head_dim / (ms * 1e-3) / 1e12
    return ms, tflops


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seq", default="16384")
    ap.add_argument("--heads", type=int, default=32)
    ap.add_argument("--heads-kv", type=int, default=32)
    ap.add_argument("--head-dim", type=int, default=128)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--causal", action="store_true")
    ap.add_argument("--dtype", default="bf16", choices=["bf16", "fp16"])
    ap.add_argument("--samples", type=int, default=20)
    ap.add_argument("--impl", default="cudnn,fa2")
    ap.add_argument("--csv")
    args = ap.parse_args()
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float16
    out = None
    if args.csv:
        new = not os.path.exists(args.csv) or os.path.getsize(args.csv) == 0
        out = open(args.csv, "a")
        if new:
            out.write(COLUMNS + "\n")
    for seq in (int(s) for s in args.seq.split(",")):
        for impl in args.impl.split(","):
            try:
                ms, tflops = run_case(impl, seq, args, dtype)
            except RuntimeError as e:  # a backend that refuses the shape
                print(f"{impl:6s} S={seq} skipped: {str(e).splitlines()[0]}")
                continue
            print(f"{impl:6s} S={seq:<6d} H={args.heads}/{args.heads_kv} D={args.head_dim} "
                  f"{'causal' if args.causal else 'non-causal'} {ms:.3f} ms ({tflops:.0f} TFLOP/s)")
            if out:
                out.write(f"{impl},dense,{args.batch},{args.heads},{args.heads_kv},{seq},{args.head_dim},"
                          f"{int(args.causal)},{args.dtype},0,0,0,{ms:.4f},{ms:.4f},{tflops:.1f},0,0\n")
    if out:
        out.close()


if __name__ == "__main__":
    main()
