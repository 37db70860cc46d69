"""Precision `auto`: bf16 where this machine's matrix engine makes it faster, fp32 elsewhere.

The machines herd runs on differ: on an Intel Xeon with AMX-BF16 a bf16 matmul runs ~10x faster
than fp32; on an AVX2-only CPU (e.g. AMD Zen 3) bf16 is emulated and ~30x slower. So nothing is
hard-coded: `resolve_precision` times fp32 against bf16 matmuls of the model's own shapes (a few
ms), caches the figures per machine (~/.cache/herd/precision.json, keyed by CPU model, CPU
flags, torch version, threads and shapes) and picks:

- training (`kind="train"`): bf16 autocast with fp32 master weights when a forward+backward-shaped
  set of bf16 matmuls (weight casts included, as autocast does them) beats fp32 by `TRAIN_MARGIN`;
- inference (`kind="infer"`): bf16 weights when bf16 prefill matmuls beat fp32 by `TRAIN_MARGIN`
  and the batch-1 decode product (bound by reading the weights) is not slower than fp32.

On a GPU `auto` is bf16 where the device supports it (tensor cores), fp32 otherwise; the peak is
the datasheet's (herd.train.metrics). Explicit `fp32`, `bf16` (and `fp16`) are honoured as given.

    from herd.precision import resolve_precision
    dtype, reason, peak = resolve_precision("auto", "cpu", shapes=(dim, ffn_hidden, tokens))
    # -> torch.bfloat16, "bf16: matmuls of the model's shapes ran 6.1x faster than fp32 ...", 1.9e12

`peak` is the measured (CPU) or datasheet (GPU) dense matmul FLOP/s of the chosen dtype, the
denominator of MFU. `shapes_of(args, tokens)` gives the shapes of a ModelArgs.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import sys
import time
from pathlib import Path

from herd.errors import HerdError

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
_NAMES = {"auto": "auto", "fp32": "fp32", "float32": "fp32", "float": "fp32", "bf16": "bf16",
          "bfloat16": "bf16", "fp16": "fp16", "float16": "fp16", "half": "fp16"}
TRAIN_MARGIN = 1.5  # bf16 must be this much faster than fp32 to be picked (noise; at dim 96 the block ran
# 1.2x faster in bf16 yet the whole demo run was 1.3x slower; from dim 128 it ran 1.8x and more)
DECODE_MARGIN = 0.9  # batch-1 decode in bf16 may be at most this much slower than fp32
BF16_FLAGS = ("amx_bf16", "avx512_bf16", "avx_ne_convert", "bf16", "sve_bf16")  # x86 and Arm (bf16)
CACHE_VERSION = 2  # 2: the train probe times a feed-forward block's step


def parse_precision(value) -> str:
    """'auto' | 'fp32' | 'bf16' | 'fp16' from any accepted spelling (float32, bfloat16, a torch.dtype)."""
    name = str(value if value is not None else "auto").strip().lower().removeprefix("torch.")
    if name not in _NAMES:
        raise HerdError(f"precision {value!r}: use auto, fp32 or bf16 (or fp16 on a GPU)")
    return _NAMES[name]


def to_dtype(name: str):
    import torch

    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[parse_precision(name)]


# ---- the machine ------------------------------------------------------------------------------------
def cpu_info() -> tuple[str, list[str]]:
    """(CPU model name, sorted CPU flags) from /proc/cpuinfo (platform strings elsewhere)."""
    model, flags = platform.processor() or platform.machine(), []
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, val = line.partition(":")
                key = key.strip().lower()
                if key in ("model name", "cpu model", "hardware") and model in ("", platform.machine()):
                    model = val.strip()
                elif key in ("flags", "features") and not flags:
                    flags = sorted(val.split())
    except OSError:
        pass
    return model, flags


def bf16_hardware(flags: list[str]) -> list[str]:
    """The CPU flags that mean bf16 matrix/vector hardware (empty on AVX2-only CPUs)."""
    return [f for f in BF16_FLAGS if f in flags]


def cache_path() -> Path:
    base = os.environ.get("HERD_CACHE_DIR") or \
        Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "herd"
    return Path(base) / "precision.json"


def shapes_of(args, tokens: int = 512) -> tuple[int, int, int]:
    """(dim, ffn hidden size, tokens per matmul) of a ModelArgs: the probe's matmul shapes."""
    return int(args.dim), int(args.ffn_hidden_dim), int(tokens)


# ---- the probe --------------------------------------------------------------------------------------
def _best(fns: dict, reps: int) -> dict:
    """{name: best seconds} of each callable, the repeats interleaved (a busy machine slows all alike)."""
    for fn in fns.values():
        fn()
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(reps):
        for k, fn in fns.items():
            t = time.perf_counter()
            fn()
            best[k] = min(best[k], time.perf_counter() - t)
    return best


def run_probe(kind: str, shapes: tuple[int, int, int], reps: int = 3) -> dict:
    """Measured FLOP/s of fp32 and bf16 on this CPU (current torch threads) at `shapes` = (dim,
    hidden, tokens): {"fp32": .., "bf16": ..} for the kind's workload, "*_decode" (batch 1, infer
    only), "*_peak" (1024^3 matmul, the MFU denominator) and "ms" (the probe's own time)."""
    import torch
    import torch.nn.functional as F

    t_start = time.perf_counter()
    dim, hidden, tokens = shapes
    M = max(16, min(int(tokens), 512))
    g = torch.Generator().manual_seed(0)
    x = torch.randn(M, dim, generator=g)
    w = torch.randn(hidden, dim, generator=g) / dim ** 0.5
    out: dict = {"shapes": [dim, hidden, M]}
    if kind == "train":
        # one feed-forward block (w1, w3, silu-gate, w2), forward and backward, in fp32 and under bf16
        # autocast: the casts, the elementwise work and the small-matrix overheads a real step pays are
        # in it (matmuls alone favoured bf16 even for models where a whole bf16 step ran slower)
        w1, w3 = (torch.randn(hidden, dim, generator=g) / dim ** 0.5 for _ in range(2))
        w2 = torch.randn(dim, hidden, generator=g) / hidden ** 0.5
        ws = [t.requires_grad_() for t in (w1, w3, w2)]

        def block(autocast: bool):
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                h = F.linear(F.silu(F.linear(x, ws[0])) * F.linear(x, ws[1]), ws[2])
            h.float().square().mean().backward()
            for t in ws:
                t.grad = None

        flops = 3 * 3 * 2 * M * dim * hidden
        t0 = time.perf_counter()
        block(False)
        n = max(reps, min(25, int(0.04 / max(time.perf_counter() - t0, 1e-6))))  # ~40 ms a side: small blocks
        t = _best({"fp32": lambda: block(False), "bf16": lambda: block(True)}, n)  # are noisy
        out["fp32"], out["bf16"] = flops / t["fp32"], flops / t["bf16"]
    with torch.no_grad():
        if kind != "train":
            wb, xb = w.bfloat16(), x.bfloat16()
            flops = 2 * M * dim * hidden
            t = _best({"fp32": lambda: F.linear(x, w), "bf16": lambda: F.linear(xb, wb)}, reps)
            out["fp32"], out["bf16"] = flops / t["fp32"], flops / t["bf16"]
            # batch-1 decode reads the weights: a bigger matrix (all of a layer's FFN), repeated
            w3, x1 = torch.randn(3 * hidden, dim, generator=g), torch.randn(1, dim, generator=g)
            w3b, x1b = w3.bfloat16(), x1.bfloat16()
            f1 = 2 * 3 * hidden * dim
            t = _best({"fp32": lambda: [F.linear(x1, w3) for _ in range(4)],
                       "bf16": lambda: [torch.mv(w3b, x1b[0]) for _ in range(4)]}, reps)  # as decode.py
            out["fp32_decode"], out["bf16_decode"] = f1 / t["fp32"] * 4, f1 / t["bf16"] * 4
        n = 1024
        a = torch.randn(n, n, generator=g)
        ab = a.bfloat16()
        t = _best({"fp32": lambda: a @ a, "bf16": lambda: ab @ ab}, reps)
        out["fp32_peak"], out["bf16_peak"] = 2 * n ** 3 / t["fp32"], 2 * n ** 3 / t["bf16"]
    out["ms"] = (time.perf_counter() - t_start) * 1e3
    return out


def probe(kind: str, shapes: tuple[int, int, int], refresh: bool = False) -> tuple[dict, bool]:
    """(run_probe's figures, True when they came from the per-machine cache)."""
    import torch

    model, flags = cpu_info()
    key_src = json.dumps([CACHE_VERSION, model, flags, torch.__version__, torch.get_num_threads(), kind,
                          list(shapes)])
    key = hashlib.sha256(key_src.encode()).hexdigest()[:20]
    path = cache_path()
    cache: dict = {}
    try:
        cache = json.loads(path.read_text())
    except (OSError, ValueError):
        cache = {}
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    ncpu = os.cpu_count() or 1
    hit = cache.get(key) if isinstance(cache.get(key), dict) and "fp32" in cache[key] else None
    # figures taken on an overloaded machine are re-measured once it is calmer (both precisions were timed
    # interleaved, so their ratio holds up under load better than their absolute values)
    stale = hit is not None and hit.get("load", 0) > 1.5 * ncpu and load < hit.get("load", 0) / 2
    if not refresh and hit is not None and not stale:
        return hit, True
    res = run_probe(kind, shapes)
    res.update(cpu=model, threads=torch.get_num_threads(), torch=torch.__version__, kind=kind,
               when=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), load=round(load, 2))
    cache[key] = res
    try:  # best effort: a read-only home or a concurrent writer only loses the cache entry
        from herd.fileio import atomic_write_json

        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(path, cache, indent=1)
    except (OSError, HerdError):
        pass
    return res, False


def decide(kind: str, figures: dict, flags: list[str]) -> tuple[str, str]:
    """('bf16' | 'fp32', reason) from probe figures; pure, so the rule is tested with any figures."""
    hw = bf16_hardware(flags)
    hw_s = f"CPU has {'/'.join(hw)}" if hw else "no bf16 matrix hardware in the CPU flags (e.g. AVX2 only)"
    f32, b16 = figures["fp32"], figures["bf16"]
    ratio = b16 / f32
    what = "a feed-forward block's forward+backward" if kind == "train" else "prefill matmuls"
    gf = f"{b16 / 1e9:,.1f} vs {f32 / 1e9:,.1f} GFLOP/s"
    if ratio < TRAIN_MARGIN:
        return "fp32", f"fp32: bf16 {what} of the model's shapes ran {ratio:.2f}x fp32 ({gf}); {hw_s}"
    if kind != "train":
        d = figures["bf16_decode"] / figures["fp32_decode"]
        if d < DECODE_MARGIN:
            return "fp32", (f"fp32: bf16 batch-1 decode ran {d:.2f}x fp32 (prefill {ratio:.1f}x); bf16 would "
                            f"slow decoding; {hw_s}")
        return "bf16", f"bf16: {what} ran {ratio:.1f}x fp32 ({gf}), batch-1 decode {d:.2f}x; {hw_s}"
    return "bf16", f"bf16 autocast: {what} ran {ratio:.1f}x fp32 ({gf}); {hw_s}"


def resolve_precision(requested="auto", device="cpu", shapes=None, kind: str = "train", log=None,
                      need_peak: bool = True):
    """(torch dtype, reason, peak FLOP/s of that dtype) for `requested` (auto | fp32 | bf16 | fp16)
    on `device`. `shapes` = (dim, ffn hidden, tokens per matmul) of the model (default: a 35M-param
    model's); `kind` = "train" (bf16 autocast, fp32 master weights) or "infer" (bf16 weights).
    `log` (a callable) gets the one line naming the choice and the reason. With need_peak=False an explicit
    fp32/bf16 on a CPU is returned without probing (peak 0.0)."""
    import torch

    req = parse_precision(requested)
    dev = torch.device(device) if not isinstance(device, torch.device) else device
    if kind not in ("train", "infer"):
        raise ValueError(f"kind must be train or infer, got {kind!r}")
    if dev.type == "cuda":
        from herd.train.metrics import peak_flops

        if req == "auto":
            req = "bf16" if torch.cuda.is_bf16_supported() else "fp32"
            reason = f"{req}: GPU {torch.cuda.get_device_name(dev)}" + \
                     (" has bf16 tensor cores" if req == "bf16" else " has no bf16 support")
        else:
            reason = f"{req}: requested"
        dtype = to_dtype(req)
        peak = peak_flops(dev, dtype)
    elif dev.type != "cpu":
        dtype = to_dtype("fp32" if req == "auto" else req)
        reason, peak = (f"{parse_precision(dtype)}: {'requested' if req != 'auto' else 'default'} "
                        f"on {dev.type}"), 0.0
    else:
        if req == "fp16":
            raise HerdError("precision fp16 is for GPUs; on a CPU use auto, fp32 or bf16")
        if req != "auto" and not need_peak:
            if log is not None:
                log(f"herd: precision {req} — requested")
            return to_dtype(req), "requested", 0.0
        figures, cached = probe(kind, tuple(int(s) for s in (shapes or (512, 1536, 512))))
        _, flags = cpu_info()
        if req == "auto":
            req, reason = decide(kind, figures, flags)
            reason += f" (probe {figures.get('ms', 0):.0f} ms{', cached' if cached else ''})"
        else:
            reason = f"{req}: requested (bf16 ran {figures['bf16'] / figures['fp32']:.2f}x fp32 here)"
        dtype = to_dtype(req)
        peak = figures[f"{req}_peak"]
    if log is not None:
        log(f"herd: precision {parse_precision(dtype)} — {reason}")
    return dtype, reason, peak


def log_stderr(line: str) -> None:
    print(line, file=sys.stderr)


def checkpoint_dtype(requested, device, ckpt=None, log=log_stderr):
    """The dtype to load a checkpoint in for inference (generate, chat, eval, serve): `requested`
    auto | fp32 | bf16 | fp16, resolved with the probe of the checkpoint's own shapes (its config is
    read without the weights; a missing or bad checkpoint is its HerdError, before any log line); the
    choice and reason go to `log`."""
    parse_precision(requested)
    shapes = None
    if ckpt is not None:
        from herd.checkpoint import read_args

        try:
            shapes = shapes_of(read_args(ckpt), 256)
        except (OSError, ValueError, TypeError, KeyError):
            shapes = None  # the load itself reports what is wrong
    return resolve_precision(requested, device, shapes=shapes, kind="infer", log=log, need_peak=False)[0]


__all__ = ["PRECISIONS", "bf16_hardware", "cache_path", "checkpoint_dtype", "cpu_info", "decide",
           "log_stderr",
           "parse_precision", "probe", "resolve_precision", "run_probe", "shapes_of", "to_dtype"]
