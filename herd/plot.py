"""`herd plot RUN_DIR`: the curves of a training run as PNG files and one HTML page.

Reads RUN_DIR/metrics.jsonl, which `herd pretrain` writes (one record per step: loss, lr, tokens/s,
MFU, ...; validation records with val_loss) and so do `herd sft`, `rm` and `dpo` (loss, lr and their
own numbers per step). Writes RUN_DIR/plots/ (or --out): loss.png, lr.png, tokens_per_s.png, mfu.png
(those the run has), one PNG per other per-step number of a post-training run, and index.html showing
them all with the run's last values. TensorBoard: `herd pretrain --run.tensorboard true` logs the same
scalars under RUN_DIR/tensorboard (`tensorboard --logdir RUN_DIR`).
"""

from __future__ import annotations

import html
import json
import math
from pathlib import Path

from herd.errors import HerdError

# (file stem, title, y label, keys drawn: (record key, legend))
PRETRAIN_PLOTS = [
    ("loss", "Loss", "cross-entropy (nats/token)", [("loss", "train"), ("val_loss", "validation")]),
    ("lr", "Learning rate", "LR", [("lr", "lr")]),
    ("tokens_per_s", "Throughput", "tokens / s", [("tokens_per_s", "per step"),
                                                   ("tokens_per_s_avg", "average of 20 steps")]),
    ("mfu", "Model FLOPs utilisation", "MFU (%)", [("mfu", "MFU")]),
]
SKIP_KEYS = {"step", "kind", "tokens", "seq_len", "batch_size", "phase", "spike", "mem_gib", "step_time",
             "grad_norm_clipped"}


def read_metrics(run_dir: Path) -> list[dict]:
    f = run_dir / "metrics.jsonl"
    if not run_dir.exists():
        raise HerdError(f"run folder not found: {run_dir}")
    if not run_dir.is_dir():
        raise HerdError(f"{run_dir} is a file; give the folder of a training run (it holds metrics.jsonl)")
    if not f.is_file():
        hint = f"; did you mean {run_dir.parent}?" if (run_dir.parent / "metrics.jsonl").is_file() else ""
        raise HerdError(f"{run_dir} has no metrics.jsonl: not the folder of a herd "
                        f"pretrain/sft/rm/dpo run{hint}")
    recs = []
    for line in f.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            r = json.loads(line)
        except ValueError:
            continue  # a line cut by a crash
        if isinstance(r, dict) and isinstance(r.get("step"), (int, float)):
            recs.append(r)
    if not any(r.get("kind", "train") in ("train", "val") for r in recs):
        raise HerdError(f"{f} holds no training steps yet; plot it once the run has logged some")
    return recs


def series(recs: list[dict], key: str) -> tuple[list[float], list[float]]:
    xs, ys = [], []
    for r in recs:
        v = r.get(key)
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
            xs.append(r["step"])
            ys.append(100 * v if key == "mfu" else v)
    return xs, ys


def plot_run(run_dir, out=None) -> dict:
    """Draw the run's curves into `out` (default RUN_DIR/plots); returns {"out", "pngs", "html"}."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    recs = read_metrics(run_dir)
    out = Path(out) if out else run_dir / "plots"
    if out.exists() and not out.is_dir():
        raise HerdError(f"--out {out} is a file; give a folder")
    out.mkdir(parents=True, exist_ok=True)
    plots = list(PRETRAIN_PLOTS)
    drawn = {k for _, _, _, keys in plots for k, _ in keys}
    extra = sorted({k for r in recs for k, v in r.items() if k not in drawn and k not in SKIP_KEYS
                    and isinstance(v, (int, float)) and not isinstance(v, bool)
                    and r.get("kind", "train") == "train"})
    plots += [(k, k.replace("_", " "), k, [(k, k)]) for k in extra]
    pngs = []
    for stem, title, ylabel, keys in plots:
        lines = [(label, *series(recs, k)) for k, label in keys]
        lines = [ln for ln in lines if ln[1]]
        if not lines:
            continue
        fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
        for label, xs, ys in lines:
            ax.plot(xs, ys, label=label, marker="o" if len(xs) < 30 else None, markersize=3)
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        if len(lines) > 1:
            ax.legend()
        fig.tight_layout()
        fig.savefig(out / f"{stem}.png")
        plt.close(fig)
        pngs.append(stem + ".png")
    if not pngs:
        raise HerdError(f"{run_dir / 'metrics.jsonl'}: no numbers to plot")
    last = {}
    for r in recs:
        for k, v in r.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in ("kind",):
                last[k] = v
    rows = "".join(f"<tr><td>{html.escape(k)}</td><td>{v:.6g}</td></tr>" for k, v in sorted(last.items()))
    imgs = "".join(f'<figure><img src="{p}" alt="{p}"><figcaption>{p}</figcaption></figure>' for p in pngs)
    page = ("<!doctype html><html><head><meta charset='utf-8'><title>herd run "
            f"{html.escape(str(run_dir))}</title>"
            "<style>body{font-family:sans-serif;margin:2em}figure{display:inline-block;margin:0.5em}"
            "td{padding:0 1em}</style></head><body>"
            f"<h1>herd run <code>{html.escape(str(run_dir))}</code></h1>"
            f"<p>{len(recs)} records from metrics.jsonl</p>{imgs}"
            f"<h2>last values</h2><table>{rows}</table></body></html>\n")
    from herd.fileio import atomic_write

    atomic_write(out / "index.html", page)
    return {"out": str(out), "pngs": pngs, "html": str(out / "index.html")}


def cmd_plot(args) -> int:
    res = plot_run(args.run_dir, args.out)
    if args.json:
        print(json.dumps(res, indent=1))
    else:
        print(f"{len(res['pngs'])} plots ({', '.join(res['pngs'])}) written to {res['out']}; open "
              f"{res['html']}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("plot", help="plot a training run: loss, LR, tokens/s and MFU curves (PNG + HTML)",
                       description=__doc__.split("\n\n")[1].replace("\n", " "))
    p.add_argument("run_dir", metavar="RUN_DIR", help="the folder of a herd pretrain, sft, rm or dpo run")
    p.add_argument("--out", default=None, metavar="DIR", help="where the plots go (default: RUN_DIR/plots)")
    p.add_argument("--json", action="store_true", help="print what was written as JSON")
    p.set_defaults(func=cmd_plot)


__all__ = ["plot_run", "read_metrics", "register"]
