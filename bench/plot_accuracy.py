"""Plot the accuracy CSV of `vecattn-bench --accuracy`: per data set and causality, recall vs
sparsity and error vs sparsity, vector-wise selection against the 64x64 block-sparse baseline.

  python3 bench/plot_accuracy.py accuracy.csv --out accuracy.png
"""
import argparse
import csv
import sys
from collections import defaultdict

import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("csv")
    ap.add_argument("--out", default="accuracy.png")
    args = ap.parse_args()
    with open(args.csv, newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["head"] == "all"]
    if not rows:
        sys.exit(f"plot_accuracy.py: no overall rows in {args.csv}")
    groups = defaultdict(lambda: defaultdict(list))
    for r in rows:
        key = f"{r['dataset']}, S {r['seq']}, {'causal' if r['causal'] == '1' else 'non-causal'}"
        groups[key][r["method"]].append(r)
    fig, axes = plt.subplots(len(groups), 2, figsize=(11, 3.6 * len(groups)), squeeze=False)
    style = {"vector": ("tab:blue", "o", "vector-wise (p)"), "block": ("tab:orange", "s", "block-sparse 64x64 (tau)")}
    for row, (key, methods) in enumerate(sorted(groups.items())):
        ax_r, ax_e = axes[row]
        for method, rs in methods.items():
            rs = sorted(rs, key=lambda r: float(r["sparsity"]))
            sp = [float(r["sparsity"]) for r in rs]
            color, marker, label = style.get(method, ("gray", "x", method))
            ax_r.plot(sp, [float(r["recall"]) for r in rs], marker=marker, color=color, label=label)
            ax_e.plot(sp, [float(r["err_dense"]) for r in rs], marker=marker, color=color, label=f"{label}: vs dense")
            ax_e.plot(sp, [float(r["err_same_set"]) for r in rs], marker=marker, color=color, linestyle=":",
                      label=f"{label}: vs same keys")
        ax_r.set(title=f"{key}: attention-mass recall", xlabel="sparsity", ylabel="recall")
        ax_e.set(title=f"{key}: relative L2 error", xlabel="sparsity", ylabel="error", yscale="log")
        ax_e.axhline(1e-2, color="gray", linewidth=0.8, linestyle="--")
        for ax in (ax_r, ax_e):
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
