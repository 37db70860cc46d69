"""IsoFLOP sweeps (paper §3.2.1): train a family of model sizes at each compute budget and
record their held-out loss, then fit the scaling laws.

Conventions (stated in every run record as `convention`):
- N is the non-embedding parameter count, the output layer included
  (`ModelArgs.num_params(exclude_embedding=True)`): the parameters that FLOPs touch.
- C = D · `ModelArgs.flops_per_token(seq_len)` = D · (6N + 12·layers·dim·seq): the training
  FLOPs of D tokens, attention included (PaLM / torchtitan). So a run at budget C of a model of
  N sees D = C / flops_per_token tokens.

Each run uses the paper's IsoFLOP schedule: linear warmup, cosine decay to 0.1x the peak LR,
AdamW with weight decay 0.1 (decoupled: 0.1 x LR each step), a batch fixed per budget. Training
goes through `herd.train.pretrain`; the held-out loss of every run is measured here on the same
fixed validation rows, so runs compare exactly. A sweep is resumable: `runs.jsonl` is appended
after each run, and runs already in it are skipped.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

from herd.errors import HerdError
from herd.model.args import ModelArgs
from herd.scaling.config import IsoFLOPConfig

CONVENTION = "N = non-embedding params (output layer included); C = D * ModelArgs.flops_per_token(seq_len)"


def model_for_size(n_nonemb: float, vocab_size: int, seq_len: int = 2048) -> ModelArgs:
    """A Llama-shaped model of about `n_nonemb` non-embedding parameters (output layer included).
    Like `herd.model.scaled_preset` (dim ~ 64 x layers, GQA 2:1) but on a finer grid that reaches
    the tiny sizes CPU sweeps need: dims in steps of 32 from 32, head dim 16 below 64, 32 up to
    256, 64 above; 1 layer and up. The output layer alone is vocab x dim, so N has a floor for a vocab."""
    best = None
    for n_layers in range(1, 49):
        for dim in range(32, 4097, 32):
            if not (16 * n_layers <= dim <= 128 * n_layers):
                continue
            head_dim = 16 if dim < 64 else 32 if dim <= 256 else 64
            if dim % head_dim:
                continue
            n_heads = dim // head_dim
            n_kv = max(1, n_heads // 2)
            while n_heads % n_kv:
                n_kv -= 1
            a = ModelArgs(
                dim=dim,
                n_layers=n_layers,
                n_heads=n_heads,
                n_kv_heads=n_kv,
                vocab_size=vocab_size,
                multiple_of=32,
                max_seq_len=seq_len,
            )
            err = abs(math.log(a.num_params(exclude_embedding=True) / n_nonemb)) + 0.1 * abs(
                math.log(dim / (64 * n_layers))
            )
            if best is None or err < best[0]:
                best = (err, a)
    return best[1]


def plan_runs(cfg: IsoFLOPConfig, vocab_size: int) -> list[dict]:
    """The (budget, model, tokens, batch) of every run. Sizes whose token count would give fewer
    than `min_steps` steps of one sequence are dropped (too few steps to mean anything)."""
    plan = []
    for C in cfg.budgets:
        if cfg.sizes:
            targets = list(cfg.sizes)
        else:
            # Chinchilla guess: C ≈ 6·N·(k·N) -> N ≈ sqrt(C / (6k)).
            guess = math.sqrt(C / (6 * cfg.tokens_per_param))
            # The vocab sets a floor on N (the output layer): the range starts no lower than the
            # floor and still spans spread^2 (log-spaced), so a budget whose guess is near the
            # floor keeps points on both sides of it, and larger budgets get larger grids.
            floor = model_for_size(1, vocab_size).num_params(exclude_embedding=True)
            lo = max(floor, guess / cfg.spread)
            hi = max(guess * cfg.spread, lo * cfg.spread)
            k = cfg.n_sizes
            targets = [lo * (hi / lo) ** (i / (k - 1)) for i in range(k)] if k > 1 else [guess]
        models, seen = [], set()
        for n in targets:
            m = model_for_size(n, vocab_size, seq_len=max(cfg.seq_len, 256))
            key = (m.dim, m.n_layers)
            if key in seen:
                continue
            seen.add(key)
            tokens = C / m.flops_per_token(cfg.seq_len)
            if tokens < cfg.min_steps * cfg.seq_len:
                continue
            models.append((m, tokens))
        if len(models) < 3:
            raise HerdError(
                f"budget {C:.3g} FLOPs leaves {len(models)} usable model sizes (need 3): raise the budget or "
                f"give smaller --sizes"
            )
        # One batch size per budget (the paper fixes it per budget): as large as lets the run with
        # the fewest tokens still take min_steps steps.
        d_min = min(t for _, t in models)
        batch = max(1, min(cfg.max_batch, int(d_min // (cfg.min_steps * cfg.seq_len))))
        for m, tokens in models:
            steps = max(1, round(tokens / (batch * cfg.seq_len)))
            plan.append(
                {
                    "flops": float(C),
                    "model": m,
                    "tokens": steps * batch * cfg.seq_len,
                    "steps": steps,
                    "batch_size": batch,
                    "n_params": m.num_params(exclude_embedding=True),
                    "name": f"C{C:.2e}_d{m.dim}_l{m.n_layers}",
                }
            )
    return plan


def train_config(cfg: IsoFLOPConfig, run: dict, out_dir: Path):
    """The TrainConfig of one IsoFLOP run: cosine to 0.1x peak, warmup, wd 0.1, no annealing."""
    from herd.train.config import TrainConfig

    m: ModelArgs = run["model"]
    overrides = {
        k: getattr(m, k)
        for k in ("dim", "n_layers", "n_heads", "n_kv_heads", "vocab_size", "multiple_of", "max_seq_len")
    }
    steps = run["steps"]
    d = {
        "model": {"preset": "herd-5m", "overrides": overrides},
        "data": {
            "sources": [{"path": p, "weight": 1.0} for p in cfg.data],
            "seed": cfg.seed,
            "val": cfg.val_data,
            "doc_mask": cfg.doc_mask,
        },
        "optim": {"lr": cfg.lr, "weight_decay": 0.1},
        "schedule": {
            "warmup_steps": max(1, int(cfg.warmup_frac * steps)),
            "decay_steps": steps,
            "final_lr": 0.1 * cfg.lr,
            "decay": "cosine",
        },
        "stages": [{"after_tokens": 0, "batch_size": run["batch_size"], "seq_len": cfg.seq_len}],
        "eval": {"interval": 0, "batches": 2, "batch_size": cfg.val_batch_size},
        "checkpoint": {"interval": 0, "keep": 1},
        "run": {
            "out": str(out_dir),
            "steps": steps,
            "device": cfg.device,
            "precision": cfg.dtype,
            "seed": cfg.seed,
            "progress": False,
            "log_interval": max(1, steps // 5),
            "resume": True,
            "peak_flops": cfg.peak_flops,
            "threads": cfg.threads,
        },
    }
    return TrainConfig.from_dict(d).validate()


def heldout_loss(
    model,
    data: list[str],
    *,
    seq_len: int,
    batches: int,
    batch_size: int,
    seed: int = 0,
    device=None,
    doc_mask: bool = True,
    split: str | None = None,
) -> float:
    """Mean next-token loss (nats) over fixed rows of the data's 'val' split (the same rows for
    every model: the loader is deterministic in its seed), with the document mask."""
    import torch
    import torch.nn.functional as F

    from herd.data import IGNORE, MixtureLoader
    from herd.data.shards import has_split

    if split is None:
        if not all(has_split(p, "val") for p in data):
            raise HerdError(
                f"{data[0]}: no 'val' split to measure held-out loss on; tokenize with a val "
                "fraction or give a held-out directory"
            )
        split = "val"
    loader = MixtureLoader([(p, 1.0) for p in data], split=split, seed=seed + 12345)
    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for _ in range(batches):
            b = loader.next_batch(batch_size, seq_len).to(device)
            logits = model(b.inputs, doc_ids=b.doc_ids if doc_mask else None)
            loss = F.cross_entropy(
                logits.float().flatten(0, 1), b.targets.flatten(), ignore_index=IGNORE, reduction="sum"
            )
            total += float(loss)
            count += int((b.targets != IGNORE).sum())
    model.train(was_training)
    return total / max(count, 1)


def _vocab_of(data: list[str]) -> int:
    from herd.data import read_meta

    sizes = {int(read_meta(p)["tokenizer"]["n_words"]) for p in data}
    if len(sizes) != 1:
        raise HerdError(f"the data directories were tokenized with different vocabularies: {sorted(sizes)}")
    return sizes.pop()


def _train_one(cfg: IsoFLOPConfig, run: dict, run_dir: Path):
    """Train one run with herd's pretrainer; return the final model."""
    from herd.checkpoint import load_model
    from herd.train import pretrain

    result = pretrain(train_config(cfg, run, run_dir))
    model, _ = load_model(result["model_dir"])
    return model


def run_isoflop(cfg: IsoFLOPConfig):
    """Run (or resume) the sweep, then fit and plot. Returns the ScalingFit."""
    from herd.scaling.fit import fit_runs
    from herd.scaling.plot import plot_all

    if len(cfg.budgets) < 2:
        raise HerdError("an IsoFLOP sweep needs 2 or more budgets (e.g. --budgets 3e13,1e14)")
    for p in cfg.data:
        if not (Path(p) / "meta.json").is_file():
            raise HerdError(f"{p}: not a tokenized data directory (run `herd tokenize` first)")
    vocab = cfg.vocab_size or _vocab_of(cfg.data)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    plan = plan_runs(cfg, vocab)
    runs_file = out / "runs.jsonl"
    done = {}
    if runs_file.is_file():
        for line in runs_file.read_text().splitlines():
            if line.strip():
                try:
                    r = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut by a kill: that run is redone
                done[r.get("name")] = r
    todo = [r for r in plan if r["name"] not in done]
    print(f"isoflop: {len(plan)} runs over {len(cfg.budgets)} budgets ({len(plan) - len(todo)} done already)")
    for i, run in enumerate(todo):
        t0 = time.time()
        run_dir = out / "runs" / run["name"]
        model = _train_one(cfg, run, run_dir)
        val = [cfg.val_data] if cfg.val_data else cfg.data
        loss = heldout_loss(
            model,
            val,
            split="train" if cfg.val_data else None,
            seq_len=cfg.seq_len,
            batches=cfg.val_batches,
            batch_size=cfg.val_batch_size,
            seed=cfg.seed,
            doc_mask=cfg.doc_mask,
        )
        m: ModelArgs = run["model"]
        rec = {
            "name": run["name"],
            "flops": run["flops"],
            "n_params": run["n_params"],
            "tokens": run["tokens"],
            "loss": loss,
            "steps": run["steps"],
            "batch_size": run["batch_size"],
            "seq_len": cfg.seq_len,
            "model": {
                "dim": m.dim,
                "n_layers": m.n_layers,
                "n_heads": m.n_heads,
                "n_kv_heads": m.n_kv_heads,
                "vocab_size": m.vocab_size,
            },
            "total_params": m.num_params(),
            "lr": cfg.lr,
            "seconds": round(time.time() - t0, 2),
            "convention": CONVENTION,
        }
        with open(runs_file, "a") as f:
            f.write(json.dumps(rec) + "\n")
            f.flush()
        done[run["name"]] = rec
        print(
            f"isoflop [{len(plan) - len(todo) + i + 1}/{len(plan)}] C={run['flops']:.2e} "
            f"N={run['n_params']:,} D={run['tokens']:,} loss={loss:.4f} ({rec['seconds']:.1f}s)"
        )
    runs = [done[r["name"]] for r in plan]
    fit = fit_runs(runs, convention=CONVENTION)
    fit.save(out / "fit.json")
    plot_all(fit, runs, out)
    return fit


__all__ = [
    "IsoFLOPConfig",
    "CONVENTION",
    "model_for_size",
    "plan_runs",
    "train_config",
    "heldout_loss",
    "run_isoflop",
]
