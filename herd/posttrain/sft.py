"""Supervised fine-tuning (paper §4.1.3): cross-entropy on the assistant's tokens only.

Dialogs are packed into rows of `seq_len` tokens with the document mask (each dialog attends only
to itself and its positions restart at 0, paper §3.2 / herd.model `doc_ids`), so no compute is
spent on padding and no dialog sees another. The loss is the mean over all target tokens of the
batch (system, user and ipython tokens and all headers carry none; see herd.posttrain.data).
Full fine-tuning or LoRA (`lora_rank > 0`; the adapters are merged into the weights on export).
The paper's 405B used LR 1e-5 for 8.5K-9K steps; a small model wants a larger LR.
"""

from __future__ import annotations

import random
import sys
from dataclasses import asdict

import torch

from herd.errors import HerdError
from herd.posttrain.config import SFTConfig
from herd.posttrain.common import (IGNORE, StepLoop, autocast, cfg_device, check_positive, cross_entropy,
                                   load_policy, make_optimizer, masked_labels, mean_of)
from herd.posttrain.data import encode_dialog, parse_chat, read_jsonl


def load_chat_examples(paths: str, tokenizer, seq_len: int, on_bad_line: str = "skip"):
    """Encoded dialogs [(tokens, sft_mask)] from comma-separated chat JSONL files."""
    examples, cut = [], 0
    for path in [p for p in str(paths).split(",") if p]:
        for msgs in read_jsonl(path, parse_chat, on_bad_line, what="chat record"):
            enc = encode_dialog(tokenizer, msgs)
            toks, mask = enc.tokens, enc.sft_mask
            if len(toks) > seq_len:
                toks, mask, cut = toks[:seq_len], mask[:seq_len], cut + 1
            if any(mask[1:]):
                examples.append((toks, mask))
    if cut:
        print(f"herd: warning: {cut} dialog(s) longer than seq_len={seq_len} were cut", file=sys.stderr)
    if not examples:
        raise HerdError(f"{paths}: no dialog has assistant tokens to train on")
    return examples


def pack_rows(examples, seq_len: int, order: list[int]):
    """Greedy packing in the given order: rows of [(tokens, mask), ...] whose total is <= seq_len."""
    rows, cur, used = [], [], 0
    for i in order:
        n = len(examples[i][0])
        if cur and used + n > seq_len:
            rows.append(cur)
            cur, used = [], 0
        cur.append(examples[i])
        used += n
    if cur:
        rows.append(cur)
    return rows


def collate(rows, pad_id: int, packed: bool):
    """Batch tensors (tokens, labels, doc_ids or None) for rows of dialogs. Labels never cross a
    dialog boundary; padding sits in a document of its own and carries no loss."""
    T = max(sum(len(t) for t, _ in r) for r in rows)
    B = len(rows)
    tokens = torch.full((B, T), pad_id, dtype=torch.long)
    labels = torch.full((B, T), IGNORE, dtype=torch.long)
    doc_ids = torch.full((B, T), -1, dtype=torch.long)
    for b, r in enumerate(rows):
        at = 0
        for d, (toks, mask) in enumerate(r):
            n = len(toks)
            tokens[b, at:at + n] = torch.tensor(toks)
            labels[b, at:at + n] = torch.tensor(masked_labels(toks, mask))
            doc_ids[b, at:at + n] = d
            at += n
    multi = packed and any(len(r) > 1 for r in rows)
    return tokens, labels, (doc_ids if multi else None)


def sft(cfg: SFTConfig) -> dict:
    """Fine-tune `cfg.model` on `cfg.data`; write a herd checkpoint to `cfg.out`. Returns metrics."""
    from herd.checkpoint import save_herd
    from herd.posttrain.lora import apply_lora, merge_lora

    for name in ("model", "data", "out"):
        if not getattr(cfg, name):
            raise HerdError(f"sft: '{name}' is required")
    check_positive("lr", cfg.lr)
    check_positive("batch_size", cfg.batch_size, integer=True)
    check_positive("seq_len", cfg.seq_len, integer=True)
    check_positive("epochs", cfg.epochs)
    device, dtype = cfg_device(cfg)
    torch.manual_seed(cfg.seed)
    model, tok = load_policy(cfg.model, cfg.tokenizer, device=device)
    seq_len = min(cfg.seq_len, model.args.max_seq_len)
    examples = load_chat_examples(cfg.data, tok, seq_len, cfg.on_bad_line)
    eval_examples = (load_chat_examples(cfg.eval_data, tok, seq_len, cfg.on_bad_line) if cfg.eval_data
                     else None)
    if cfg.lora_rank:
        apply_lora(model, cfg.lora_rank, cfg.lora_alpha, cfg.lora_targets)

    # Rows are rebuilt each epoch from a seeded shuffle, so a resumed run sees the same batches.
    def epoch_batches(epoch: int):
        order = list(range(len(examples)))
        random.Random(cfg.seed * 1000 + epoch).shuffle(order)
        rows = pack_rows(examples, seq_len, order) if cfg.pack else [[examples[i]] for i in order]
        return [rows[i:i + cfg.batch_size] for i in range(0, len(rows), cfg.batch_size)]

    per_epoch = len(epoch_batches(0))
    total = cfg.steps if cfg.steps > 0 else max(1, round(per_epoch * cfg.epochs))
    opt = make_optimizer(model.parameters(), cfg.lr, cfg.weight_decay)
    fp = {"stage": "sft", "data": cfg.data, "lr": cfg.lr, "total": total, "batch_size": cfg.batch_size,
          "seq_len": seq_len, "lora_rank": cfg.lora_rank, "seed": cfg.seed}
    loop = StepLoop(cfg.out, model, opt, total, lr=cfg.lr, warmup=cfg.warmup, save_every=cfg.save_every,
                    resume=cfg.resume, desc="sft", fingerprint=fp)
    cache: dict[int, list] = {}

    def step_fn(step: int):
        epoch, i = divmod(step, per_epoch)
        if epoch not in cache:
            cache.clear()
            cache[epoch] = epoch_batches(epoch)
        tokens, labels, doc_ids = to_device(collate(cache[epoch][i], tok.pad_id, cfg.pack), device)
        model.train()
        with autocast(device, dtype):
            logits = model(tokens, doc_ids=doc_ids)
        loss, n = cross_entropy(logits, labels)
        loss.backward()
        return {"loss": loss.detach(), "tokens": n}

    history = loop.run(step_fn, cfg.log_every, cfg.quiet)
    metrics = {"steps": total, "examples": len(examples), "train_loss": mean_of(history, "loss"),
               "seconds": getattr(loop, "seconds", 0.0)}
    if eval_examples:
        metrics["eval_loss"] = eval_loss(model, eval_examples, tok.pad_id, cfg.batch_size, dtype=dtype)
    if cfg.lora_rank:
        merge_lora(model)
    save_herd(model, cfg.out, tokenizer=tok, extra={"posttrain": {"stage": "sft", "config": asdict(cfg),
                                                                  "metrics": metrics}})
    loop.finish()
    return metrics


def to_device(batch, device):
    """collate's (tokens, labels, doc_ids or None) on `device`."""
    return tuple(None if t is None else t.to(device) for t in batch)


@torch.no_grad()
def eval_loss(model, examples, pad_id: int, batch_size: int = 8, dtype=torch.float32) -> float:
    """Mean per-token CE on the assistant tokens of `examples` (one dialog a row), on the model's
    device, the forward in `dtype`."""
    device = next(model.parameters()).device
    model.eval()
    tot, n = 0.0, 0
    for i in range(0, len(examples), batch_size):
        tokens, labels, _ = to_device(collate([[e] for e in examples[i:i + batch_size]], pad_id, False),
                                      device)
        with autocast(device, dtype):
            logits = model(tokens)
        loss, k = cross_entropy(logits, labels)
        tot += float(loss) * k
        n += k
    return tot / max(n, 1)


__all__ = ["SFTConfig", "sft", "load_chat_examples", "pack_rows", "collate", "to_device", "eval_loss"]
