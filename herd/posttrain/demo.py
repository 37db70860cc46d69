"""One post-training round end to end on a CPU in minutes (paper §4.1: SFT -> rejection sampling
-> DPO), on the verifiable arithmetic task, measuring held-out accuracy after every stage.

1. Base model: a tiny Llama 3 (a small BPE tokenizer whose digits are single bytes) pretrained
   on plain-text arithmetic word problems with worked answers, with no chat format: a miniature of
   "web text with some math".
2. SFT on chat-formatted train problems (loss on the assistant's answer only).
3. Rejection sampling: K samples per train prompt, scored by the exact-answer verifier; the best
   correct sample of each prompt becomes SFT data, mixed with the original SFT data as the paper
   mixes RS data with its other sources (§4.2.2), for a second SFT from the SFT model (RS -> SFT).
   Fine-tuning on the few hundred RS samples alone overfits them (60 steps x 32 rows = 6 epochs)
   and cost held-out accuracy in some runs.
4. DPO from the RS model on (correct, wrong) pairs sampled from the RS model itself on other train
   prompts (the paper collects preference data with the latest, best model).

Steps 2-4 are herd.posttrain.round.post_train_round, the round the speedrun runs too; this module
keeps only the demo's own part: its tokenizer, its base model and its pretraining text.

Held-out accuracy (greedy, exact "#### N") is measured on test problems that never appear in
training. `herd posttrain demo OUT` and `run_demo(out)` run it; the slow test asserts that the
accuracy rises after each stage.
"""

from __future__ import annotations

import json
import random
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from herd.posttrain.round import RoundConfig


@dataclass
class DemoConfig(RoundConfig):
    """The round's settings (herd.posttrain.round.RoundConfig: steps, LRs, sampling, device/dtype;
    the documented run: cpu, float32) plus the demo's task and base model."""
    out: str = "posttrain-demo"
    rs_chunk: int = 200
    max_value: int = 9  # operands 1..max_value
    n_train: int = 3000
    n_test: int = 300
    dim: int = 96
    n_layers: int = 3
    n_heads: int = 4
    n_kv_heads: int = 2
    pretrain_steps: int = 500
    pretrain_lr: float = 3e-3
    rs_prompts: int = 400
    dpo_prompts: int = 400


def demo_tokenizer():
    """A small BPE tokenizer in herd's (tiktoken) format: the 256 bytes, plus one token for each
    word of the task's templates and of the chat headers, and one for each number below 200 (built
    from prefixes, so BPE reaches them by merges). With a number as one token, a sum is one
    prediction from two operand tokens, which a tiny model learns in minutes; vocab = ranks + 256
    specials."""
    from herd.posttrain import tasks
    from herd.tokenizer import Tokenizer

    words = set()
    for text in ([q for q, _ in tasks.ADD + tasks.SUB] + tasks.NAMES + tasks.ITEMS
                 + list(tasks.PRONOUN.values())):
        for w in re.findall(r"[A-Za-z]+", text.replace("{x}", "").replace("{n}", "").replace("{p}", "")):
            words.add(" " + w)
            words.add(w)
    words |= {"He", " He", "user", "assistant", "system", "ipython", "\n\n", "####", " ####"}
    words |= {str(n) for n in range(10, 200)}  # each number below 200 is one token
    ranks = {bytes([i]): i for i in range(256)}
    for w in sorted(words, key=lambda w: (len(w), w)):
        b = w.encode()
        for j in range(2, len(b) + 1):
            if b[:j] not in ranks:
                ranks[b[:j]] = len(ranks)
    return Tokenizer(ranks, name="demo")


def pretrain_text(cfg: DemoConfig, problems) -> list[str]:
    """The base model's corpus, plain text without the chat format: documents of arithmetic facts
    ("7 + 5 = 12", one per line) and the train problems with their worked answers."""
    rng = random.Random(cfg.seed + 17)
    docs = [f"{p.question} {p.solution}" for p in problems]
    for _ in range(len(problems)):
        lines = []
        for _ in range(6):
            a, b = rng.randint(1, cfg.max_value), rng.randint(1, cfg.max_value)
            lines.append(f"{a} + {b} = {a + b}" if rng.random() < 0.5
                         else f"{max(a, b)} - {min(a, b)} = {abs(a - b)}")
        docs.append("\n".join(lines))
    rng.shuffle(docs)
    return docs


def _pretrain(model, tok, texts, cfg: DemoConfig, out: Path):
    """Plain next-token training on packed documents (every token a target), on the model's
    device, the forward in cfg.dtype."""
    from herd.posttrain.common import StepLoop, autocast, cross_entropy, make_optimizer, resolve_device
    from herd.posttrain.sft import collate, to_device

    from herd.precision import shapes_of

    device, dtype = resolve_device(cfg.device, cfg.dtype, shapes=shapes_of(model.args, 512))
    examples = []
    for t in texts:
        ids = tok.encode(t, bos=True, eos=True)
        examples.append((ids, [True] * len(ids)))
    opt = make_optimizer(model.parameters(), cfg.pretrain_lr, 0.0)
    loop = StepLoop(out, model, opt, cfg.pretrain_steps, lr=cfg.pretrain_lr, warmup=20, save_every=0,
                    resume=False, desc="pretrain")
    rng = random.Random(cfg.seed)

    def step_fn(step):
        order = rng.sample(range(len(examples)), len(examples))
        rows = [[examples[i]] for i in order[: cfg.batch_size]]
        tokens, labels, doc_ids = to_device(collate(rows, tok.pad_id, False), device)
        model.train()
        with autocast(device, dtype):
            logits = model(tokens, doc_ids=doc_ids)
        loss, _ = cross_entropy(logits, labels)
        loss.backward()
        return {"loss": loss.detach()}

    hist = loop.run(step_fn, quiet=cfg.quiet)
    return hist[-1]["loss"]


def run_demo(out: str | Path | None = None, cfg: DemoConfig | None = None, log=print) -> dict:
    """Pretrain the base model, then run the round (herd.posttrain.round.post_train_round); returns
    {"accuracy": {stage: acc}, ...} and writes OUT/results.json."""
    from herd.checkpoint import save_herd
    from herd.model import ModelArgs, Transformer
    from herd.posttrain.common import resolve_device
    from herd.posttrain.round import arithmetic_round_task, post_train_round

    cfg = cfg or DemoConfig()
    if out is not None:
        cfg.out = str(out)
    device, _ = resolve_device(cfg.device, cfg.dtype)  # a bad device or dtype stops here, before any work
    o = Path(cfg.out)
    o.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    torch.manual_seed(cfg.seed)
    # RS prompts: a slice of the train problems (the policy has seen their answers in SFT only once);
    # DPO prompts: the next slice, not used above
    task = arithmetic_round_task(o / "task", cfg.n_train, cfg.n_test, cfg.seed, cfg.max_value, cfg.rs_prompts,
                                 cfg.dpo_prompts)

    tok = demo_tokenizer()
    args = ModelArgs(dim=cfg.dim, n_layers=cfg.n_layers, n_heads=cfg.n_heads, n_kv_heads=cfg.n_kv_heads,
                     vocab_size=tok.n_words, multiple_of=32, max_seq_len=cfg.seq_len)
    model = Transformer.build(args, seed=cfg.seed).to(device)
    t = time.time()
    loss = _pretrain(model, tok, pretrain_text(cfg, task.train), cfg, o / "base")
    save_herd(model, o / "base", tokenizer=tok, extra={"posttrain": {"stage": "pretrain-demo", "loss": loss}})
    timings = {"pretrain": time.time() - t}
    del model

    r = post_train_round(str(o / "base"), task, cfg, log=log, prefix="posttrain demo")
    acc = {"base": r["sft"]["accuracy_base"], "sft": r["sft"]["accuracy"], "rs": r["rs"]["accuracy"],
           "dpo": r["dpo"]["accuracy"]}
    timings.update(sft=r["sft"]["seconds"], rejection_sampling=r["rs"]["seconds"], dpo=r["dpo"]["seconds"])
    res = {"accuracy": acc, "rejection_sampling": r["rs"]["rejection_sampling"],
           "dpo_sampling": r["dpo"]["sampling"],
           "sft": r["sft"]["metrics"], "rs_sft": r["rs"]["metrics"], "dpo": r["dpo"]["metrics"],
           "seconds": timings, "total_seconds": time.time() - t0, "params": args.num_params(),
           "device": r["sft"]["device"], "dtype": r["sft"]["dtype"], "config": asdict(cfg)}
    (o / "results.json").write_text(json.dumps(res, indent=2, default=float) + "\n")
    return res


__all__ = ["DemoConfig", "run_demo", "demo_tokenizer"]
