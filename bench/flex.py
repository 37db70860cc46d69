"""The document mask at long context: per-document SDPA vs FlexAttention's block mask (paper §3.2, §3.4.2).

One attention core call, q [1, H, T, D] with GQA, a row of T tokens packed with N documents of random
lengths: herd's exact per-document SDPA loop (`sdpa_attention`, the CPU path) against the compiled
FlexAttention kernel over herd's block mask (`herd.model.flex`, the CUDA path), and causal SDPA over the
whole row without a document mask as the floor. Forward only on the CPU (torch 2.13's CPU FlexAttention
has no backward); forward + backward on CUDA. Calls alternate between the cores (round robin, so load
from other jobs hits each alike); the median per core and the ratio to the per-document loop are printed,
with the block mask's build time (once per step in training: cached across layers) and its sparsity.

    python bench/flex.py                                     # 8K tokens, 64 documents, H 32/8, D 128
    python bench/flex.py --seq 32768 --docs 8 64 512 --rounds 5
"""

from __future__ import annotations

import argparse
import platform
import statistics
import subprocess
import time


def sync(device):
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def layout(T: int, n: int, seed: int):
    import torch

    g = torch.Generator().manual_seed(seed)
    cuts = sorted(torch.randperm(T - 1, generator=g)[: n - 1].add(1).tolist())
    b = [0, *cuts, T]
    return [[(b[i], b[i + 1]) for i in range(n)]]


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seq", type=int, default=8192)
    p.add_argument("--docs", type=int, nargs="+", default=[64])
    p.add_argument("--heads", type=int, default=32)
    p.add_argument("--kv-heads", type=int, default=8)
    p.add_argument("--head-dim", type=int, default=128)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"])
    p.add_argument("--threads", type=int, default=0)
    a = p.parse_args()

    import torch
    import torch.nn.functional as F

    from herd.model import flex
    from herd.model import transformer as tr

    device = a.device if a.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    if a.threads:
        torch.set_num_threads(a.threads)
    dtype = torch.bfloat16 if a.dtype == "bf16" else torch.float32
    train = device == "cuda"
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    print(f"# {platform.processor() or platform.machine()}, torch {torch.__version__}, commit {commit}, "
          f"{device}, {a.dtype}, threads {torch.get_num_threads()}, {'fwd+bwd' if train else 'forward'}")
    T, H, Hkv, D = a.seq, a.heads, a.kv_heads, a.head_dim
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, h, T, D, generator=g).to(device, dtype).requires_grad_(train)
               for h in (H, Hkv, Hkv))

    def _loop(q, k, v, segs):  # sdpa_attention's CPU path, also on CUDA (where it would dispatch to flex)
        out = torch.empty_like(q)
        for s, e in segs[0]:
            out[:, :, s:e] = tr._causal(q[:, :, s:e], k[:, :, s:e], v[:, :, s:e])
        return out

    def run(fn):
        sync(device)
        t0 = time.perf_counter()
        if train:
            fn().sum().backward()
        else:
            with torch.no_grad():
                fn()
        sync(device)
        return time.perf_counter() - t0

    print("| docs | per-document SDPA (ms) | FlexAttention (ms) | flex vs per-doc | causal, no doc mask (ms) "
          "| block mask build (ms) | tiles skipped |")
    print("|---|---|---|---|---|---|---|")
    for n in a.docs:
        segs = layout(T, n, n)
        t0 = time.perf_counter()
        bm = flex.document_block_mask(segs, T, device)
        build = time.perf_counter() - t0
        cores = {
            "doc": lambda: _loop(q, k, v, segs),
            "flex": lambda: flex.flex_document_attention(q, k, v, segs),
            "causal": lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True),
        }
        for fn in cores.values():  # warm up: compile flex for this shape, fill caches
            run(fn)
        times = {name: [] for name in cores}
        for _ in range(a.rounds):
            for name, fn in cores.items():
                times[name].append(run(fn))
        med = {name: statistics.median(t) * 1e3 for name, t in times.items()}
        print(f"| {n} | {med['doc']:.1f} | {med['flex']:.1f} | {med['doc'] / med['flex']:.2f}x | "
              f"{med['causal']:.1f} | {build * 1e3:.1f} | {bm.sparsity():.1f}% |")


if __name__ == "__main__":
    main()
