"""Train a small Llama Guard of the real format with herd's own SFT (paper §5.4.7), and score it.

Meta's Llama Guard 3 weights cannot be downloaded here, so `herd guard train` makes a guard of the
same format from offline data (herd.safety.data): each labelled conversation becomes one SFT
dialog, the exact Llama Guard 3 prompt (herd.safety.llama_guard) as the user message and
`safe` / `unsafe\\nS2` as the assistant's answer. herd's SFT (herd.posttrain.sft) trains on the
answer tokens only. The model is a herd preset (herd-5m by default) started from random weights;
the tokenizer is a BPE trained on the training split (the preset's vocabulary size), so `safe` and
`unsafe` are one token each and the guard scores P(first token = unsafe) like Meta's; or the real
Llama 3 tokenizer with `--tokenizer llama3` (vocabulary 128,256, much slower on a CPU).

The split is by a hash of each text (herd.safety.data.split_of): the held-out examples are never
trained on. `evaluate_guard` reports precision / recall / F1 per source against a keyword baseline
(better-profanity's word list, which is what a keyword filter is), written to OUT/eval.json.
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from herd.errors import HerdError
from herd.safety.data import Example, guard_examples, read_examples, split, write_examples
from herd.safety.llama_guard import guard_target, llama_guard_prompt


@dataclass
class GuardTrainConfig:
    out: str = ""
    preset: str = "herd-5m"
    dim: int = 0  # override the preset's width (0 = the preset's)
    n_layers: int = 0  # override the preset's depth (0 = the preset's)
    tokenizer: str | None = None  # None: train a BPE of the preset's size; 'llama3' or a path
    n_benign: int = 1600
    max_chars: int = 600
    epochs: float = 3.0
    steps: int = 0
    lr: float = 2e-3
    warmup: int = 20
    batch_size: int = 16
    seq_len: int = 1024
    pack: bool = False  # one conversation a row: CPU attention backward is slow on packed document masks
    seed: int = 0
    device: str = "auto"
    dtype: str = "auto"
    limit: int = 0  # use only this many training examples (tests, quick runs); 0 = all
    eval_limit: int = 0  # evaluate on this many held-out examples (a seeded sample); 0 = all
    quiet: bool = False


def sft_record(e: Example) -> dict:
    """One labelled conversation as an SFT dialog in the Llama Guard format."""
    return {
        "messages": [
            {"role": "user", "content": llama_guard_prompt(e.messages, e.agent_type)},
            {"role": "assistant", "content": guard_target("unsafe" if e.unsafe else "safe", e.categories)},
        ]
    }


def _tokenizer(cfg: GuardTrainConfig, records: list[dict], vocab_size: int):
    from herd.safety.llama_guard import LlamaGuard
    from herd.tokenizer import Tokenizer, train_bpe

    if cfg.tokenizer:
        tok = Tokenizer.from_spec(cfg.tokenizer)
    else:
        texts = (m["content"] for r in records for m in r["messages"])
        tok = train_bpe(texts, vocab_size=vocab_size, show_progress=not cfg.quiet, allow_smaller=True)
    LlamaGuard.answer_ids(tok)  # `safe` and `unsafe` must be single tokens
    return tok


def train_guard(cfg: GuardTrainConfig) -> dict:
    """Build the data (OUT/data), the tokenizer and the model (OUT/init); SFT into OUT/checkpoint (the
    guard); evaluate it on the held-out split (OUT/eval.json)."""
    import torch

    from herd.checkpoint import save_herd
    from herd.model import Transformer
    from herd.model.args import get_preset
    from herd.posttrain.config import SFTConfig
    from herd.posttrain.data import write_jsonl
    from herd.posttrain.sft import sft

    if not cfg.out:
        raise HerdError("guard train: --out DIR is required")
    out = Path(cfg.out)
    data_dir = out / "data"
    examples = guard_examples(cfg.n_benign, cfg.seed, cfg.max_chars)
    train, test = split(examples)
    if cfg.limit:
        import random

        random.Random(cfg.seed).shuffle(train)
        train = train[: cfg.limit]
    write_examples(data_dir / "train.jsonl", train)
    write_examples(data_dir / "test.jsonl", test)
    records = [sft_record(e) for e in train]
    write_jsonl(data_dir / "sft_train.jsonl", records)
    args = get_preset(cfg.preset)
    tok = _tokenizer(cfg, records, args.vocab_size)
    shape = {k: v for k, v in (("dim", cfg.dim), ("n_layers", cfg.n_layers)) if v}
    if cfg.dim:
        shape["n_heads"], shape["n_kv_heads"] = max(1, cfg.dim // 64), max(1, cfg.dim // 128)
    args = args.replace(vocab_size=tok.n_words, max_seq_len=max(args.max_seq_len, cfg.seq_len), **shape)
    torch.manual_seed(cfg.seed)
    init = out / "init"
    ckpt = out / "checkpoint"
    if not (ckpt / "train_state.pt").is_file() or not init.is_dir():
        save_herd(Transformer.build(args, seed=cfg.seed), init, tokenizer=tok)
    sft_cfg = SFTConfig(
        model=str(init),
        data=str(data_dir / "sft_train.jsonl"),
        out=str(ckpt),
        lr=cfg.lr,
        warmup=cfg.warmup,
        epochs=cfg.epochs,
        steps=cfg.steps,
        batch_size=cfg.batch_size,
        seq_len=cfg.seq_len,
        seed=cfg.seed,
        pack=cfg.pack,
        device=cfg.device,
        dtype=cfg.dtype,
        quiet=cfg.quiet,
        save_every=100,
        log_every=5,
    ).validate()
    metrics = sft(sft_cfg)
    if cfg.eval_limit and len(test) > cfg.eval_limit:
        import random

        test = random.Random(cfg.seed + 1).sample(test, cfg.eval_limit)
    ev = evaluate_guard(ckpt, test, quiet=cfg.quiet)
    ev["train"] = {**metrics, "examples": len(train), "preset": cfg.preset, "vocab_size": tok.n_words}
    (out / "eval.json").write_text(json.dumps(ev, indent=1))
    return ev


# ---- evaluation ----
def prf(pred: list[bool], gold: list[bool]) -> dict:
    tp = sum(p and g for p, g in zip(pred, gold))
    fp = sum(p and not g for p, g in zip(pred, gold))
    fn = sum(g and not p for p, g in zip(pred, gold))
    tn = len(gold) - tp - fp - fn
    prec = tp / (tp + fp) if tp + fp else 0.0
    rec = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * prec * rec / (prec + rec) if prec + rec else 0.0
    acc = (tp + tn) / len(gold) if gold else 0.0
    return {
        "n": len(gold),
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "tn": tn,
        "precision": round(prec, 4),
        "recall": round(rec, 4),
        "f1": round(f1, 4),
        "accuracy": round(acc, 4),
    }


class KeywordBaseline:
    """A keyword filter, the usual blocklist moderation: flags a text holding a word of
    better-profanity's word list (its package data), matched as whole words, case-insensitive.
    (better-profanity's own matcher, which also tries character substitutions, takes ~2 s per
    100-word text on this machine; the list is the same.)"""

    name = "better-profanity word list"

    def __init__(self):
        import importlib.util

        spec = importlib.util.find_spec("better_profanity")
        if spec is None:
            raise HerdError("the keyword baseline needs better-profanity: pip install better-profanity")
        f = Path(next(iter(spec.submodule_search_locations))) / "profanity_wordlist.txt"
        words = sorted(
            {w.strip().lower() for w in f.read_text().splitlines() if w.strip()}, key=len, reverse=True
        )
        self.pattern = re.compile(r"\b(?:" + "|".join(re.escape(w) for w in words) + r")\b", re.IGNORECASE)
        self.n_words = len(words)

    def flags(self, text: str) -> bool:
        return self.pattern.search(text) is not None


def per_source(examples: list[Example], pred: list[bool]) -> dict:
    """P/R/F1 per source. A source is one-sided (all unsafe or all benign), so its unsafe examples
    are scored against the whole benign pool of the same side (agent type): precision there is
    what a user of that source would see."""
    out = {}
    for side in ("User", "Agent"):
        idx = [i for i, e in enumerate(examples) if e.agent_type == side]
        if not idx:
            continue
        out[f"all-{side.lower()}"] = prf([pred[i] for i in idx], [examples[i].unsafe for i in idx])
        benign = [i for i in idx if not examples[i].unsafe]
        for src in sorted({examples[i].source for i in idx if examples[i].unsafe}):
            pos = [i for i in idx if examples[i].unsafe and examples[i].source == src]
            sel = pos + benign
            out[src] = prf([pred[i] for i in sel], [examples[i].unsafe for i in sel])
        for src in sorted({examples[i].source for i in benign}):
            sel = [i for i in benign if examples[i].source == src]
            out[f"{src} (benign; FPR)"] = {
                "n": len(sel),
                "fpr": round(sum(pred[i] for i in sel) / len(sel), 4),
            }
    return out


def evaluate_guard(path, test: list[Example] | str, threshold: float = 0.5, quiet: bool = False) -> dict:
    """Held-out P/R/F1 of the guard at `path` (and of the keyword baseline), overall and per source;
    also the guard's scores, for curves."""
    from herd.safety.llama_guard import LlamaGuard

    if isinstance(test, (str, Path)):
        test = read_examples(test)
    guard = LlamaGuard.load(path, threshold=threshold)
    scores = []
    from tqdm import tqdm

    bar = tqdm(total=len(test), desc="guard eval", disable=quiet, file=sys.stderr)
    for side in ("User", "Agent"):
        idx = [i for i, e in enumerate(test) if e.agent_type == side]
        for j in range(0, len(idx), 16):
            chunk = idx[j : j + 16]
            for i, s in zip(chunk, guard.scores([test[i].messages for i in chunk], side)):
                scores.append((i, s))
            bar.update(len(chunk))
    bar.close()
    scores = [s for _, s in sorted(scores)]
    guard_pred = [s >= threshold for s in scores]
    kw = KeywordBaseline()
    kw_pred = [kw.flags(" ".join(m["content"] for m in e.messages if m["role"] != "system")) for e in test]
    gold = [e.unsafe for e in test]
    return {
        "threshold": threshold,
        "guard": {"overall": prf(guard_pred, gold), "per_source": per_source(test, guard_pred)},
        "keyword": {"name": kw.name, "overall": prf(kw_pred, gold), "per_source": per_source(test, kw_pred)},
        "auc": roc_auc(scores, gold),
        "scores": [round(s, 5) for s in scores],
    }


def roc_auc(scores: list[float], gold: list[bool]) -> float | None:
    """Area under the ROC curve (the probability a random positive outranks a random negative)."""
    pos = [s for s, g in zip(scores, gold) if g]
    neg = [s for s, g in zip(scores, gold) if not g]
    if not pos or not neg:
        return None
    ranked = sorted([(s, 1) for s in pos] + [(s, 0) for s in neg])
    # average ranks for ties
    rank_sum, i = 0.0, 0
    while i < len(ranked):
        j = i
        while j < len(ranked) and ranked[j][0] == ranked[i][0]:
            j += 1
        avg = (i + j + 1) / 2
        rank_sum += avg * sum(r[1] for r in ranked[i:j])
        i = j
    return round((rank_sum - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)), 4)


__all__ = [
    "GuardTrainConfig",
    "train_guard",
    "evaluate_guard",
    "sft_record",
    "prf",
    "per_source",
    "KeywordBaseline",
    "roc_auc",
]
