"""What the post-training loops (paper §4.1) share: the device and dtype, loading the policy, the
optimizer and its schedule (both from herd.train.schedule, as in pretraining), per-sequence
log-probs, padding, and an interruptible, resumable step loop.

Device and dtype: every stage reads `device` ("auto" = cuda when available, else cpu) and `dtype`
("auto" = bfloat16 on a GPU, float32 on a CPU) from its config, resolved by `resolve_device`.
Training keeps fp32 weights and runs the forward under autocast in `dtype` (as the pretraining
trainer does); sampling loads the weights in `dtype` itself.

Resuming: every `save_every` steps (and on Ctrl-C) the loop writes `OUT/train_state.pt` (the
trainable tensors, the optimizer, the step, the data order's seed); running the same command
again continues from there. The file holds only tensors and numbers and is read with
`weights_only=True`. It is removed when the run finishes and the checkpoint is written.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from herd.errors import HerdError
from herd.fileio import AtomicFile
from herd.train.parallel import resolve_device

IGNORE = -100


def model_shapes(path) -> tuple[int, int, int] | None:
    """herd.precision's probe shapes of the checkpoint at `path`, read from its config without the
    weights; None when it cannot be read (the load reports a bad checkpoint; the probe uses its default
    shapes)."""
    from herd.checkpoint import read_args
    from herd.precision import shapes_of

    try:
        return shapes_of(read_args(path), 512)
    except (HerdError, OSError, ValueError, TypeError):
        return None


def cfg_device(cfg) -> tuple[torch.device, torch.dtype]:
    """resolve_device of a stage config's `device` and `dtype` (both "auto" when it has none); "auto" on a
    CPU probes the shapes of the stage's model (cfg.model) when its config can be read (herd.precision)."""
    shapes = None
    if str(getattr(cfg, "dtype", "auto")).lower() == "auto" and getattr(cfg, "model", None):
        shapes = model_shapes(cfg.model)
    return resolve_device(getattr(cfg, "device", "auto"), getattr(cfg, "dtype", "auto"), shapes=shapes)


def autocast(device: torch.device, dtype: torch.dtype):
    """The forward's precision context: nothing in fp32, else torch.autocast in `dtype` (the
    weights, the optimizer and the loss stay fp32)."""
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def load_policy(path, tokenizer=None, device="cpu", dtype=torch.float32):
    """(model, tokenizer) on `device` in `dtype` (fp32 for training; the compute dtype for
    sampling); a clear error when no tokenizer can be found."""
    from herd.checkpoint import load_model

    model, tok = load_model(path, device=device, dtype=dtype, tokenizer=tokenizer)
    if tok is None:
        raise HerdError(f"{path}: no tokenizer beside the weights; pass --tokenizer PATH (or 'llama3')")
    if tok.n_words > model.args.vocab_size:
        raise HerdError(f"tokenizer has {tok.n_words} ids but the model's vocab_size is "
                        f"{model.args.vocab_size}")
    return model, tok


def check_positive(name: str, v, *, integer: bool = False, allow_zero: bool = False):
    ok = isinstance(v, (int, float)) and not isinstance(v, bool) and (v >= 0 if allow_zero else v > 0)
    if integer:
        ok = ok and float(v).is_integer()
    if not ok:
        kind = "integer" if integer else "number"
        raise HerdError(f"{name} must be a {'non-negative' if allow_zero else 'positive'} {kind}, got {v!r}")


# Linear warmup, then cosine decay to 10% of the peak over the run [unconfirmed: the paper gives
# only the peak LR, 1e-5 for SFT and DPO of the 405B]; herd.train.schedule.warmup_decay_lr.
FINAL_LR_RATIO = 0.1


def lr_at(step: int, total: int, lr: float, warmup: int) -> float:
    """The LR of optimizer step `step` of `total`: pretraining's warmup + cosine schedule
    (herd.train.schedule.warmup_decay_lr) from `lr` to FINAL_LR_RATIO * lr at the last step."""
    from herd.train.schedule import warmup_decay_lr

    return warmup_decay_lr(step, peak=lr, final=FINAL_LR_RATIO * lr, warmup=warmup, decay_steps=total)


def make_optimizer(params, lr: float, weight_decay: float):
    """AdamW (betas 0.9/0.95, eps 1e-8) over pretraining's parameter groups
    (herd.train.schedule.param_groups: decay on matrices, none on the norm gains)."""
    from herd.train.schedule import param_groups

    groups = param_groups(params, weight_decay)
    if not any(g["params"] for g in groups):
        raise HerdError("no trainable parameters")
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.95), eps=1e-8)


def pad_right(seqs: list[list[int]], value: int) -> torch.Tensor:
    T = max(len(s) for s in seqs)
    out = torch.full((len(seqs), T), value, dtype=torch.long)
    for i, s in enumerate(seqs):
        out[i, : len(s)] = torch.tensor(s, dtype=torch.long)
    return out


def sequence_logps(model, tokens: torch.Tensor, labels: torch.Tensor,
                   **kw) -> tuple[torch.Tensor, torch.Tensor]:
    """Per sequence: sum of log p(label) over positions whose label is not IGNORE, and how many
    there are. tokens, labels: [B, T] (labels already shifted: label[t] is the target after t)."""
    logits = model(tokens, **kw)
    mask = labels != IGNORE
    lp = torch.log_softmax(logits.float(), dim=-1)
    tok_lp = lp.gather(-1, labels.clamp_min(0).unsqueeze(-1)).squeeze(-1) * mask
    return tok_lp.sum(-1), mask.sum(-1)


def masked_labels(tokens: list[int], mask: list[bool]) -> list[int]:
    """labels[t] = tokens[t+1] where token t+1 carries loss, else IGNORE; same length as tokens."""
    lab = [tokens[i + 1] if mask[i + 1] else IGNORE for i in range(len(tokens) - 1)]
    return lab + [IGNORE]


def cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Mean CE over the target tokens of the whole batch (per-token normalisation) and their count."""
    n = int((labels != IGNORE).sum())
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), labels.reshape(-1),
                           ignore_index=IGNORE,
                           reduction="sum")
    return loss / max(n, 1), n


class StepLoop:
    """An interruptible, resumable loop over `total` optimizer steps with a progress bar.

    `state_tensors` are the trainable tensors saved for resuming (the adapters with LoRA)."""

    def __init__(self, out, model, optimizer, total: int, *, lr: float, warmup: int, save_every: int,
                 resume: bool = True, desc: str = "train", fingerprint: dict | None = None):
        self.out = Path(out)
        self.model, self.opt, self.total = model, optimizer, total
        self.lr, self.warmup, self.save_every, self.desc = lr, warmup, save_every, desc
        self.fingerprint = fingerprint or {}
        self.path = self.out / "train_state.pt"
        self.step = 0
        self.history: list[dict] = []
        if resume and self.path.is_file():
            self._load()

    def _trainable(self) -> dict[str, torch.Tensor]:
        return {n: p for n, p in self.model.named_parameters() if p.requires_grad}

    def _load(self):
        try:
            st = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as e:
            raise HerdError(f"{self.path}: cannot read the saved training state ({e}); delete it to "
                            "start over")
        if st.get("fingerprint") != self.fingerprint:
            raise HerdError(f"{self.path}: saved by a run with other settings ({st.get('fingerprint')}); "
                            "delete it to start over, or run with the same settings to resume")
        params = self._trainable()
        with torch.no_grad():
            for n, t in st["params"].items():
                if n not in params:
                    raise HerdError(f"{self.path}: tensor {n} is not trainable in this run; delete it to "
                                    "start over")
                params[n].copy_(t)
        self.opt.load_state_dict(st["optimizer"])
        self.step = int(st["step"])
        self.history = list(st.get("history", []))
        print(f"herd: resuming {self.desc} from step {self.step} of {self.total} ({self.path})",
              file=sys.stderr)

    def save(self):
        self.out.mkdir(parents=True, exist_ok=True)
        st = {"params": {n: p.detach().clone() for n, p in self._trainable().items()},
              "optimizer": self.opt.state_dict(), "step": self.step, "fingerprint": self.fingerprint,
              "history": self.history}
        with AtomicFile(self.path) as a:
            torch.save(st, a.tmp)

    def run(self, step_fn, log_every: int = 10, quiet: bool = False):
        """Call `step_fn(step) -> dict of floats` (it computes the loss and calls backward) for each
        remaining step; this loop sets the LR, clips the gradient norm at 1.0 and steps."""
        from tqdm import tqdm

        bar = tqdm(total=self.total, initial=self.step, desc=self.desc, disable=quiet, file=sys.stderr,
                   dynamic_ncols=True)
        # OUT/metrics.jsonl, one record per step (what `herd plot OUT` draws); a resumed run keeps the
        # records up to its step and appends.
        self.out.mkdir(parents=True, exist_ok=True)
        mpath = self.out / "metrics.jsonl"
        keep = []
        if self.step and mpath.is_file():
            for line in mpath.read_text().splitlines():
                try:
                    if json.loads(line).get("step", 0) <= self.step:
                        keep.append(line + "\n")
                except ValueError:
                    pass
        mpath.write_text("".join(keep))
        mfile = open(mpath, "a")  # noqa: SIM115 (closed on every way out of the loop)
        params = [p for g in self.opt.param_groups for p in g["params"]]
        t0 = time.time()
        try:
            while self.step < self.total:
                lr = lr_at(self.step, self.total, self.lr, self.warmup)
                for g in self.opt.param_groups:
                    g["lr"] = lr
                self.opt.zero_grad(set_to_none=True)
                metrics = step_fn(self.step)
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                self.opt.step()
                self.step += 1
                metrics = {k: float(v) for k, v in metrics.items()}
                metrics.update(step=self.step, lr=lr)
                self.history.append(metrics)
                mfile.write(json.dumps({"kind": "train", "stage": self.desc, **metrics}) + "\n")
                mfile.flush()
                bar.update(1)
                if self.step % log_every == 0 or self.step == self.total:
                    bar.set_postfix({k: f"{v:.4g}" for k, v in metrics.items() if k not in ("step", "lr")})
                if self.save_every and self.step % self.save_every == 0 and self.step < self.total:
                    self.save()
        except KeyboardInterrupt:
            mfile.close()
            self.save()
            bar.close()
            print(f"herd: interrupted at step {self.step}; state saved to {self.path}; run again to resume",
                  file=sys.stderr)
            raise
        bar.close()
        mfile.close()
        self.seconds = time.time() - t0
        return self.history

    def finish(self):
        """After the model is saved in OUT (which replaces the folder): drop the training state, write
        OUT/metrics.jsonl from the whole history (`herd plot OUT`)."""
        if self.path.is_file():
            self.path.unlink()
        if self.out.is_dir():
            from herd.fileio import atomic_write

            atomic_write(self.out / "metrics.jsonl",
                         "".join(json.dumps({"kind": "train", "stage": self.desc, **h}) + "\n"
                                 for h in self.history))


def mean_of(history: list[dict], key: str, last: int = 10) -> float | None:
    vals = [h[key] for h in history[-last:] if key in h]
    return sum(vals) / len(vals) if vals else None


__all__ = ["IGNORE", "resolve_device", "cfg_device", "model_shapes", "autocast", "load_policy", "lr_at",
           "FINAL_LR_RATIO", "make_optimizer", "pad_right", "sequence_logps", "masked_labels",
           "cross_entropy", "StepLoop", "check_positive", "mean_of"]
