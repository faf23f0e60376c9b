#!/usr/bin/env python3
"""Plots of a timing CSV written by vecattn-bench and bench/anchors.py (same columns).

  python3 bench/plot.py bench.csv --out bench.png [--head-dim 128] [--heads-kv 32]

Two panels: time against sequence length per method (vecattn dense, vecattn sparse at each
sparsity found in the CSV, cuDNN, FA2), for causal and non-causal; and vecattn's sparse
prefill speedup over cuDNN against sparsity, one line per sequence length.
Needs matplotlib (on the GPU machine; Debian: python3-matplotlib).
"""
import argparse
import csv
import sys
from collections import defaultdict


def read_rows(path, head_dim, heads_kv):
    with open(path, newline="") as f:
        rows = [r for r in csv.DictReader(f)]
    need = {"impl", "mode", "seq", "head_dim", "heads_kv", "causal", "sparsity", "total_ms"}
    if rows and not need <= set(rows[0]):
        sys.exit(f"plot.py: {path} lacks the columns {sorted(need - set(rows[0]))}")
    keep = []
    for r in rows:
        if int(r["head_dim"]) != head_dim or int(r["heads_kv"]) != heads_kv:
            continue
        r["seq"], r["causal"] = int(r["seq"]), int(r["causal"])
        r["sparsity"], r["total_ms"] = float(r["sparsity"]), float(r["total_ms"])
        keep.append(r)
    if not keep:
        sys.exit(f"plot.py: no rows with head_dim {head_dim} and heads_kv {heads_kv} in {path}")
    return keep


def series_label(r):
    if r["impl"] != "vecattn":
        return r["impl"]
    if r["mode"] == "dense":
        return "vecattn dense"
    return f"vecattn sparse {round(r['sparsity'] * 100):d}%"


def time_panel(ax, rows, causal):
    lines = defaultdict(dict)
    for r in rows:
        if r["causal"] == causal:
            lines[series_label(r)][r["seq"]] = r["total_ms"]
    for label in sorted(lines):
        pts = sorted(lines[label].items())
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=label)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("sequence length")
    ax.set_ylabel("time (ms)")
    ax.set_title("causal" if causal else "non-causal")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)


def speedup_panel(ax, rows):
    cudnn = {(r["seq"], r["causal"]): r["total_ms"] for r in rows if r["impl"] == "cudnn"}
    lines = defaultdict(list)
    for r in rows:
        base = cudnn.get((r["seq"], r["causal"]))
        if r["impl"] == "vecattn" and r["mode"] == "sparse" and base:
            lines[(r["seq"], r["causal"])].append((r["sparsity"], base / r["total_ms"]))
    for (seq, causal), pts in sorted(lines.items()):
        pts.sort()
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o",
                label=f"S={seq // 1024}K {'causal' if causal else 'non-causal'}")
    ax.axhline(1.0, color="gray", lw=0.8)
    ax.set_xlabel("sparsity")
    ax.set_ylabel("speedup over cuDNN dense")
    ax.set_title("selection + sparse attention vs cuDNN")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("csv")
    ap.add_argument("--out", default="bench.png")
    ap.add_argument("--head-dim", type=int, default=128)
    ap.add_argument("--heads-kv", type=int, default=32)
    args = ap.parse_args()
    rows = read_rows(args.csv, args.head_dim, args.heads_kv)
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        sys.exit("plot.py: matplotlib is not installed (Debian: python3-matplotlib)")
    causal_modes = sorted({r["causal"] for r in rows}, reverse=True)
    fig, axes = plt.subplots(1, len(causal_modes) + 1, figsize=(5 * (len(causal_modes) + 1), 4.2))
    for ax, causal in zip(axes, causal_modes):
        time_panel(ax, rows, causal)
    speedup_panel(axes[-1], rows)
    fig.suptitle(f"vecattn vs cuDNN / FA2, D {args.head_dim}, {args.heads_kv} KV heads, bf16")
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
