"""Loss curves of pretraining in bf16 autocast against fp32 (issue [4/7]): the same tiny model, data
(State of the Union addresses, byte-level) and seed, trained by herd's own trainer (`herd pretrain`'s
code) with run.precision fp32 and bf16; prints the curves' agreement and writes a PNG figure.

    python bench/precision_curves.py --steps 300 --out docs/img/precision_curves.png
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "data"))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="precision_curves.png")
    a = ap.parse_args(argv)
    from token_fixtures import real_text_files

    from herd.data import tokenize_files
    from herd.tokenizer import Tokenizer
    from herd.train import Source, load_config, pretrain

    work = Path(tempfile.mkdtemp(prefix="herd-curves-"))
    tok = Tokenizer({bytes([i]): i for i in range(256)}, name="bytes")
    tokenize_files(real_text_files(), tok, work / "data", val_fraction=0.1, workers=1, progress=False)
    curves, val = {}, {}
    for prec in ("fp32", "bf16"):
        cfg = load_config(None, [
            "--model.preset", "herd-5m", "--model.dim", str(a.dim), "--model.n_layers", str(a.layers),
            "--model.n_heads", "4", "--model.n_kv_heads", "2", "--model.vocab_size", "512",
            "--model.multiple_of", "32", "--optim.lr", "3e-3", "--schedule.warmup_steps", "20",
            "--schedule.final_lr", "3e-4", "--stages.0.batch_size", "8", "--stages.0.seq_len", "256",
            "--eval.interval", "0", "--eval.batches", "8", "--checkpoint.interval", "0",
            "--run.progress", "false", "--run.log_interval", "0", "--run.threads", str(a.threads),
            "--run.steps", str(a.steps), "--run.precision", prec, "--run.out", str(work / prec)])
        cfg.data.sources = [Source(path=str(work / "data"), weight=1.0)]
        res = pretrain(cfg, log=lambda s: None)
        recs = [json.loads(x) for x in (work / prec / "metrics.jsonl").read_text().splitlines()]
        curves[prec] = [r["loss"] for r in recs if r.get("kind") == "train"]
        val[prec] = res["val_loss"]
    a32, a16 = curves["fp32"], curves["bf16"]
    tail = len(a32) // 2
    noise = sum(abs(a32[i] - a32[i - 1]) for i in range(len(a32) - tail, len(a32))) / tail
    diff = sum(abs(x - y) for x, y in zip(a32[-tail:], a16[-tail:])) / tail
    print(f"{a.steps} steps, dim {a.dim}, {a.layers} layers: "
          f"final train loss fp32 {a32[-1]:.4f} bf16 {a16[-1]:.4f}; "
          f"val loss fp32 {val['fp32']:.4f} bf16 {val['bf16']:.4f}; "
          f"mean |fp32 - bf16| over the last {tail} steps "
          f"{diff:.4f} vs step-to-step noise {noise:.4f}; load {os.getloadavg()[0]:.1f}")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(range(1, len(a32) + 1), a32, label=f"fp32 (val {val['fp32']:.3f})", lw=1.2)
    ax.plot(range(1, len(a16) + 1), a16, label=f"bf16 autocast (val {val['bf16']:.3f})", lw=1.2, ls="--")
    ax.set_xlabel("step")
    ax.set_ylabel("train loss (nats/byte)")
    ax.set_title(f"herd pretraining, bf16 autocast vs fp32 (dim {a.dim}, {a.layers} layers, byte-level SOTU)")
    ax.legend()
    ax.grid(alpha=0.3)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(a.out, dpi=110, bbox_inches="tight")
    print(f"figure: {a.out}")


if __name__ == "__main__":
    main()
