"""Reward model (paper §4.1.2): the language model's backbone plus a scalar head on the last token.

Trained from a checkpoint on preference pairs with the paper's loss -log sigmoid(r_chosen -
r_rejected), without Llama 2's margin term. When an `edited` response exists the ranking is
edited > chosen > rejected and every ordered pair among the three enters the loss (three pairs);
the loss is the mean over all pairs in the batch. Held-out pairwise accuracy is the fraction of
ordered pairs the model ranks in the right order.

Saved as a herd checkpoint of the backbone (its LM output layer is kept as it was, so the file
loads anywhere a herd model does) plus `reward_head.safetensors`.
"""

from __future__ import annotations

import random
from dataclasses import asdict
from pathlib import Path
import sys

import torch
import torch.nn.functional as F
from torch import nn

from herd.errors import HerdError
from herd.fileio import AtomicFile
from herd.posttrain.config import RMConfig
from herd.posttrain.common import (StepLoop, autocast, cfg_device, check_positive, load_policy,
                                   make_optimizer, mean_of,
                                   pad_right)
from herd.posttrain.data import Preference, encode_pair, parse_preference, read_jsonl

HEAD_FILE = "reward_head.safetensors"


class RewardModel(nn.Module):
    def __init__(self, backbone):
        super().__init__()
        self.backbone = backbone
        self.args = backbone.args
        dim = backbone.args.dim
        p = next(backbone.parameters())
        self.head = nn.Linear(dim, 1, bias=False, device=p.device, dtype=p.dtype)
        nn.init.normal_(self.head.weight, std=dim ** -0.5)  # [unconfirmed] the paper does not say

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Rewards [B] for right-padded `tokens` [B, T] whose real lengths are `lengths` [B]:
        the head reads the final hidden state of each sequence's last real token (causal attention,
        so the padding after it changes nothing)."""
        h = self.backbone.forward_hidden(tokens)
        last = h[torch.arange(tokens.shape[0], device=tokens.device), lengths - 1]
        return self.head(last).squeeze(-1).float()


def ranking_loss(rewards: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Mean of -log sigmoid(r_better - r_worse) over every ordered pair of each example's
    responses. rewards: one tensor per example, best first (edited, chosen, rejected).
    Returns (loss, number of correctly ordered pairs, number of pairs)."""
    diffs = []
    for r in rewards:
        n = r.shape[0]
        for i in range(n):
            for j in range(i + 1, n):
                diffs.append(r[i] - r[j])
    d = torch.stack(diffs)
    return -F.logsigmoid(d).mean(), (d > 0).sum(), d.numel()


def _encode(tokenizer, pref: Preference, max_len: int) -> list[list[int]] | None:
    seqs = [encode_pair(tokenizer, pref.prompt, r).tokens for r in pref.ranked()]
    if any(len(s) > max_len for s in seqs):
        return None  # the last token is what the RM scores: never cut it off
    return seqs


def _rm_device(rm: RewardModel) -> torch.device:
    return rm.head.weight.device


def rewards_for(rm: RewardModel, batch: list[list[list[int]]], pad_id: int,
                dtype=torch.float32) -> list[torch.Tensor]:
    """One reward tensor per example (its responses in order) from one forward of all sequences
    (on the reward model's device, in `dtype`)."""
    device = _rm_device(rm)
    flat = [s for ex in batch for s in ex]
    lengths = torch.tensor([len(s) for s in flat], device=device)
    with autocast(device, dtype):
        r = rm(pad_right(flat, pad_id).to(device), lengths)
    out, at = [], 0
    for ex in batch:
        out.append(r[at:at + len(ex)])
        at += len(ex)
    return out


@torch.no_grad()
def pairwise_accuracy(rm: RewardModel, examples, pad_id: int, batch_size: int = 8,
                      dtype=torch.float32) -> dict:
    rm.eval()
    ok = n = 0
    cr_ok = cr_n = 0
    for i in range(0, len(examples), batch_size):
        rs = rewards_for(rm, examples[i:i + batch_size], pad_id, dtype)
        _, k, m = ranking_loss(rs)
        ok, n = ok + int(k), n + m
        for r in rs:  # chosen vs rejected alone: the last two responses
            cr_ok += int(r[-2] > r[-1])
            cr_n += 1
    return {"pairwise_accuracy": ok / max(n, 1),
            "chosen_vs_rejected_accuracy": cr_ok / max(cr_n, 1), "pairs": n}


def load_preferences(path, tokenizer, max_len: int, on_bad_line: str = "skip"):
    prefs = read_jsonl(path, parse_preference, on_bad_line, what="preference record")
    enc = [_encode(tokenizer, p, max_len) for p in prefs]
    dropped = sum(e is None for e in enc)
    if dropped:
        print(f"herd: warning: {path}: {dropped} record(s) longer than max_len={max_len} tokens were skipped",
              file=sys.stderr)
    enc = [e for e in enc if e is not None]
    if not enc:
        raise HerdError(f"{path}: no preference record fits in max_len={max_len}")
    return enc


def train_reward_model(cfg: RMConfig) -> dict:
    for name in ("model", "data", "out"):
        if not getattr(cfg, name):
            raise HerdError(f"rm: '{name}' is required")
    check_positive("lr", cfg.lr)
    check_positive("batch_size", cfg.batch_size, integer=True)
    if not 0 <= cfg.eval_fraction < 1:
        raise HerdError(f"eval_fraction must be in [0, 1), got {cfg.eval_fraction}")
    device, dtype = cfg_device(cfg)
    torch.manual_seed(cfg.seed)
    backbone, tok = load_policy(cfg.model, cfg.tokenizer, device=device)
    max_len = min(cfg.max_len, backbone.args.max_seq_len)
    train = load_preferences(cfg.data, tok, max_len, cfg.on_bad_line)
    if cfg.eval_data:
        held = load_preferences(cfg.eval_data, tok, max_len, cfg.on_bad_line)
    else:
        random.Random(cfg.seed).shuffle(train)
        k = int(len(train) * cfg.eval_fraction)
        held, train = train[:k], train[k:]
    rm = RewardModel(backbone)
    per_epoch = -(-len(train) // cfg.batch_size)
    total = cfg.steps if cfg.steps > 0 else max(1, round(per_epoch * cfg.epochs))
    opt = make_optimizer(rm.parameters(), cfg.lr, cfg.weight_decay)
    fp = {"stage": "rm", "data": cfg.data, "lr": cfg.lr, "total": total, "batch_size": cfg.batch_size,
          "seed": cfg.seed}
    loop = StepLoop(cfg.out, rm, opt, total, lr=cfg.lr, warmup=cfg.warmup, save_every=cfg.save_every,
                    resume=cfg.resume, desc="rm", fingerprint=fp)

    def step_fn(step):
        epoch, i = divmod(step, per_epoch)
        order = list(range(len(train)))
        random.Random(cfg.seed * 1000 + epoch).shuffle(order)
        batch = [train[j] for j in order[i * cfg.batch_size:(i + 1) * cfg.batch_size]]
        rm.train()
        loss, k, n = ranking_loss(rewards_for(rm, batch, tok.pad_id, dtype))
        loss.backward()
        return {"loss": loss.detach(), "acc": int(k) / n}

    history = loop.run(step_fn, cfg.log_every, cfg.quiet)
    metrics = {"steps": total, "train_records": len(train), "train_loss": mean_of(history, "loss"),
               "train_accuracy": mean_of(history, "acc")}
    if held:
        metrics.update({f"heldout_{k}": v for k, v in pairwise_accuracy(rm, held, tok.pad_id, cfg.batch_size,
                                                                             dtype).items()})
    save_reward_model(rm, cfg.out, tok, extra={"posttrain": {"stage": "rm", "config": asdict(cfg),
                                                             "metrics": metrics}})
    loop.finish()
    return metrics


def save_reward_model(rm: RewardModel, out, tokenizer, extra: dict | None = None):
    from safetensors.torch import save_file

    from herd.checkpoint import save_herd

    extra = dict(extra or {})
    extra["reward_head"] = HEAD_FILE
    save_herd(rm.backbone, out, tokenizer=tokenizer, extra=extra)
    with AtomicFile(Path(out) / HEAD_FILE) as a:
        save_file({"weight": rm.head.weight.detach().contiguous().cpu()}, str(a.tmp))


def load_reward_model(path, device="cpu", dtype=torch.float32):
    """(RewardModel, tokenizer) from a directory written by `train_reward_model`, on `device` with
    its weights in `dtype`."""
    from safetensors.torch import load_file

    head = Path(path) / HEAD_FILE
    if not head.is_file():
        raise HerdError(f"{path}: no {HEAD_FILE}; not a reward model (train one with `herd rm`)")
    backbone, tok = load_policy(path, device=device, dtype=dtype)
    rm = RewardModel(backbone)
    w = load_file(str(head))["weight"]
    if tuple(w.shape) != tuple(rm.head.weight.shape):
        raise HerdError(f"{head}: head of shape {tuple(w.shape)} does not fit a backbone of dim "
                        f"{rm.args.dim}")
    with torch.no_grad():
        rm.head.weight.copy_(w)
    rm.eval()
    return rm, tok


@torch.no_grad()
def score_responses(rm: RewardModel, tokenizer, prompt: list[dict], responses: list[str],
                    batch_size: int = 16) -> list[float]:
    device = _rm_device(rm)
    seqs = [encode_pair(tokenizer, prompt, {"role": "assistant", "content": r}).tokens for r in responses]
    out = []
    for i in range(0, len(seqs), batch_size):
        chunk = seqs[i:i + batch_size]
        out += rm(pad_right(chunk, tokenizer.pad_id).to(device),
                  torch.tensor([len(s) for s in chunk], device=device)).tolist()
    return out


__all__ = ["RewardModel", "RMConfig", "ranking_loss", "train_reward_model", "save_reward_model",
           "load_reward_model", "score_responses", "pairwise_accuracy", "rewards_for", "load_preferences"]
