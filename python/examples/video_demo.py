"""One attention layer of a video-sized problem through dense SDPA and vecattn.

    python3 python/examples/video_demo.py                      # 30 frames of 45 x 80 tokens
    python3 python/examples/video_demo.py --frames 8 --heads 4  # smaller
    python3 python/examples/video_demo.py --qkv DIR             # your own dumps: q.npy, k.npy, v.npy [H, S, D]

Prints, for causal and non-causal attention: time of SDPA (cuDNN/Flash, whatever torch picks)
and of vecattn.prefill (CUDA events, warm-up, median), the measured sparsity, and the relative
L2 difference between the two outputs (both bf16; SDPA's output is the reference). Saves a
picture of one head: which keys each query block keeps (vertical vectors) next to the true
attention map of a sample of queries, both binned along the key axis.

Video-like data (when no --qkv): the model of autotune/videodata.h in a few lines of torch.
Token s sits at (t, y, x) in a frames x height x width grid. F is a smooth random field
(Gaussian values on a coarse lattice every --corr frames/rows/columns, trilinearly
interpolated, each channel normalised); u is one random direction; a few positions per frame
(--vertical) are "vertical" keys that every query favours.
    q = f_h * field * F + q_bias * u + noise * e,   f_h in [1 - var, 1 + var] per head
    k = field * F + vertical * u  (vertical tokens only) + noise * e
    v = a second field G + noise * e
Defaults: field 0.4, noise 0.15, q_bias 0.3, vertical 0.6, 2 vertical positions per frame,
corr 3 frames x 4 rows x 4 columns, head variation 0.3: the defaults of the C generator,
which give flat, mostly local attention (about 5% of the mass on the vertical keys). With
--vertical 1.5 about half the mass sits on vertical keys, the structure the method assumes;
bench/NOTES.md ("Accuracy") shows how recall depends on it.
"""
import argparse
import math
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import vecattn  # noqa: E402


def smooth_field(frames, height, width, dim, corr, gen, device):
    lattice = [max(2, math.ceil(n / c) + 1) for n, c in zip((frames, height, width), corr)]
    coarse = torch.randn(1, dim, *lattice, generator=gen, device=device)
    f = F.interpolate(coarse, size=(frames, height, width), mode="trilinear", align_corners=True)
    f = f.reshape(dim, -1).t()  # [S, D]
    return (f - f.mean(0)) / f.std(0).clamp_min(1e-6)


def video_qkv(args, device):
    gen = torch.Generator(device=device).manual_seed(args.seed)
    S, D, H = args.frames * args.height * args.width, args.head_dim, args.heads
    corr = (3, 4, 4)
    Fq = smooth_field(args.frames, args.height, args.width, D, corr, gen, device)
    G = smooth_field(args.frames, args.height, args.width, D, corr, gen, device)
    u = torch.randn(D, generator=gen, device=device)
    u = u / u.norm() * math.sqrt(D)
    per_frame = torch.randint(0, args.height * args.width, (2,), generator=gen, device=device)
    vertical = (torch.arange(args.frames, device=device)[:, None] * args.height * args.width + per_frame).flatten()
    qs, ks, vs = [], [], []
    for h in range(H):
        f_h = 1.0 + 0.3 * (2 * torch.rand((), generator=gen, device=device) - 1)
        q = f_h * args.field * Fq + 0.3 * u + 0.15 * torch.randn(S, D, generator=gen, device=device)
        k = args.field * Fq + 0.15 * torch.randn(S, D, generator=gen, device=device)
        k[vertical] += args.vertical * u
        v = G + 0.15 * torch.randn(S, D, generator=gen, device=device)
        qs.append(q.to(torch.bfloat16)), ks.append(k.to(torch.bfloat16)), vs.append(v.to(torch.bfloat16))
    return (torch.stack(x)[None] for x in (qs, ks, vs))  # [1, H, S, D]


def load_qkv(path, device):
    import numpy as np
    out = []
    for name in ("q", "k", "v"):
        a = np.load(os.path.join(path, f"{name}.npy"))
        t = torch.from_numpy(a.view(np.int16)).view(torch.bfloat16) if a.dtype in (np.uint16, np.int16) else torch.from_numpy(a)
        t = t.to(device=device, dtype=torch.bfloat16)
        out.append(t if t.dim() == 4 else t[None])
    return out


def median_ms(fn, warmup=2, reps=5):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return sorted(times)[len(times) // 2]


def binned_selection(q, k, head, args, causal, bins):
    counts, offsets, indices = vecattn.select(q[:, head:head + 1], k[:, head:head + 1], threshold=args.threshold,
                                              causal=causal)
    nq, S = counts.shape[-1], k.shape[2]
    rows = torch.repeat_interleave(torch.arange(nq, device=q.device), counts.flatten().long())
    img = torch.zeros(nq, bins, device=q.device)
    img.index_put_((rows, (indices.long() * bins) // S), torch.ones_like(rows, dtype=torch.float), accumulate=True)
    if causal:  # the forced keys: the sink and each block's own diagonal
        for i in range(nq):
            img[i, 0] += 64
            img[i, (i * 64 * bins) // S] += 64
    return img / (S / bins)


def binned_attention(q, k, head, causal, bins, n_rows=192, pq=64):
    S, D = k.shape[2], k.shape[3]
    blocks = torch.linspace(0, S // pq - 1, n_rows, device=q.device).long()
    t = blocks * pq + pq // 2
    s = (q[0, head, t].float() @ k[0, head].float().t()) / math.sqrt(D)
    if causal:
        s = s.masked_fill(torch.arange(S, device=q.device)[None] > t[:, None], float("-inf"))
    p = torch.softmax(s, dim=-1)
    img = torch.zeros(n_rows, bins, device=q.device)
    img.index_add_(1, (torch.arange(S, device=q.device) * bins) // S, p)
    return img, blocks


def picture(q, k, args, causal, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    bins = 800
    sel = binned_selection(q, k, args.head, args, causal, bins).cpu()
    att, blocks = binned_attention(q, k, args.head, causal, bins)
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(13, 5))
    a1.imshow(sel[blocks.cpu()].clamp(max=1).numpy(), aspect="auto", cmap="Blues", interpolation="nearest")
    a1.set(title=f"vecattn: kept keys per query block (head {args.head}, p {args.threshold})",
           xlabel=f"key position (bins of {k.shape[2] // bins})", ylabel="query block (sample)")
    a2.imshow(torch.log10(att.cpu().clamp_min(1e-6)).numpy(), aspect="auto", cmap="magma", interpolation="nearest")
    a2.set(title="true attention mass per key bin (log10), one query per block", xlabel="key position (bins)")
    fig.suptitle(f"{'causal' if causal else 'non-causal'}: vertical stripes are the vectors the selection keeps")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    print(f"  saved {path}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=30)
    ap.add_argument("--height", type=int, default=45)
    ap.add_argument("--width", type=int, default=80)
    ap.add_argument("--heads", type=int, default=24)
    ap.add_argument("--head-dim", type=int, default=128)
    ap.add_argument("--threshold", type=float, default=0.9)
    ap.add_argument("--field", type=float, default=0.4, help="weight of the local field (peakedness)")
    ap.add_argument("--vertical", type=float, default=0.6, help="weight of u in the vertical keys")
    ap.add_argument("--head", type=int, default=0, help="head shown in the picture")
    ap.add_argument("--qkv", help="directory with q.npy, k.npy, v.npy ([H, S, D] or [B, H, S, D])")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", default="video_demo", help="prefix of the PNG files")
    args = ap.parse_args()
    device = torch.device("cuda")
    q, k, v = load_qkv(args.qkv, device) if args.qkv else video_qkv(args, device)
    info = vecattn.device_info()
    print(f"{info['name']} (sm_{info['compute_capability'][0]}{info['compute_capability'][1]}); "
          f"Q/K/V {list(q.shape)} bf16, threshold {args.threshold}")
    for causal in (True, False):
        dense_ms = median_ms(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=causal))
        vec_ms = median_ms(lambda: vecattn.prefill(q, k, v, threshold=args.threshold, causal=causal))
        ref = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
        o, sparsity = vecattn.prefill(q, k, v, threshold=args.threshold, causal=causal, return_sparsity=True)
        err = ((o.float() - ref.float()).norm() / ref.float().norm()).item()
        print(f"{'causal' if causal else 'non-causal':>10}: SDPA {dense_ms:8.2f} ms   vecattn {vec_ms:8.2f} ms "
              f"({dense_ms / vec_ms:.2f}x)   sparsity {sparsity:.3f}   rel L2 vs SDPA {err:.3e}")
        picture(q, k, args, causal, f"{args.out}_{'causal' if causal else 'noncausal'}.png")


if __name__ == "__main__":
    main()
