"""Training the speech encoder + adapter on a frozen LM (paper §8), and a small text LM to put under it.

`train_speech(cfg)`: the LM is loaded, frozen (no parameter takes a gradient or changes, so its
text-only logits stay bit-identical), and the encoder + adapter learn, by the LM's next-token loss
on the answer, to put speech into the LM's input space. Training utterances are synthesised with
espeak-ng in the training voices; the evaluation uses the held-out voices (herd.speech.data).

`train_text_lm(...)`: the paper starts from Llama 3, which already transcribes (repeats) and
answers text. On a CPU, herd trains a small LM on the *text* form of the same tasks (the words
between the speech tokens) and freezes it; the speech adapter must then make speech look like
those words to it. Any herd/Meta/HF checkpoint with the Llama 3 tokenizer can be used instead.
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from herd.errors import HerdError
from herd.speech.data import ANSWER, TRANSCRIBE, Layout, batch_rows, draw_task, draw_utterance
from herd.speech.model import SPEECH_END, SPEECH_START, SpeechArgs, SpeechModel, lm_inputs

ADAPTER_FILE = "speech.safetensors"
CONFIG_FILE = "speech.json"


def answer_loss(lm, tokens, targets, embeds=None):
    """Mean next-token cross-entropy over the answer positions (targets != -100); the output
    layer runs on those rows only (a 128K vocabulary on every prompt position would dominate)."""
    from herd.model.loss import cross_entropy_sum

    h = lm(tokens, embeds=embeds, hidden=True)
    rows = targets != -100
    n = int(rows.sum())
    return cross_entropy_sum(h[rows], lm.output.weight, targets[rows]) / max(n, 1)


def _schedule(opt, lr, warmup, steps):
    def f(s):
        if s < warmup:
            return (s + 1) / warmup
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, (s - warmup) / max(1, steps - warmup))))
    return torch.optim.lr_scheduler.LambdaLR(opt, f)


# ---- the text LM ----------------------------------------------------------------------------------
def text_lm_args(**kw):
    from herd.model.args import ModelArgs

    base = {"dim": 128, "n_layers": 4, "n_heads": 4, "n_kv_heads": 2, "vocab_size": 768, "multiple_of": 64,
            "max_seq_len": 512, "tie_embeddings": True, "rope_theta": 10000.0}
    base.update(kw)
    return ModelArgs(**base)


def train_text_lm(tok, steps: int = 500, batch_size: int = 32, lr: float = 3e-3, seed: int = 0,
                  args=None, log=None, progress: bool | None = None):
    """A small herd Transformer trained from scratch on the text form of the speech tasks."""
    from tqdm import tqdm

    from herd.model.transformer import Transformer

    torch.manual_seed(seed)
    rng = random.Random(seed)
    lm = Transformer.build(args or text_lm_args(vocab_size=tok.n_words), seed=seed)
    lay = Layout(tok)
    opt = torch.optim.AdamW(lm.parameters(), lr=lr, weight_decay=0.0, betas=(0.9, 0.95))
    sched = _schedule(opt, lr, min(50, steps // 10), steps)
    losses = []
    bar = tqdm(range(steps), desc="text LM", unit="step", disable=progress is False or None, file=sys.stderr)
    for step in bar:
        rows = []
        for _ in range(batch_size):
            u = draw_utterance(rng)
            instr, ans = draw_task(rng, u)
            p = lay.text_prompt(u.text, instr)
            rows.append((p, [], lay.answer(ans)))
        tokens, _, targets = batch_rows(rows, lay.eot)
        loss = answer_loss(lm, tokens, targets)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(lm.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(loss.item())
        if step % 20 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}")
            if log:
                log(f"text-lm step {step} loss {loss.item():.4f}")
    lm.eval()
    return lm, losses


@torch.no_grad()
def evaluate_text(lm, tok, n: int = 100, seed: int = 12345) -> dict:
    """Greedy exact-match rates of the LM on the text form of the tasks (the words between the
    speech tokens): the ceiling the speech adapter can reach on this LM."""
    from herd.speech.data import ONES, Utterance

    lay = Layout(tok)
    rng = random.Random(seed)
    hits: dict[str, list[int]] = {}
    items = [draw_utterance(rng) for _ in range(n)] + [Utterance("digit", ONES[d], str(d)) for d in range(10)]
    for u in items:
        for name, instr, want in [("transcribe", TRANSCRIBE, u.text)] + (
                [("answer", ANSWER, u.answer)] if u.answer is not None else []):
            ids, out = lay.text_prompt(u.text, instr), []
            for _ in range(16):
                t = int(lm(torch.tensor([ids + out]), last_only=True)[0, -1].argmax())
                if t == lay.eot:
                    break
                out.append(t)
            hits.setdefault(f"{u.kind}/{name}", []).append(int(tok.decode(out).strip() == want))
    return {k: sum(v) / len(v) for k, v in sorted(hits.items())}


# ---- config -------------------------------------------------------------------------------------
@dataclass
class SpeechTrainConfig:
    model: str = ""  # the frozen LM's checkpoint
    out: str = ""
    tokenizer: str = ""  # override of the checkpoint's tokenizer ('llama3' or a file)
    kinds: list[str] = dataclasses.field(default_factory=list)  # utterance kinds to train/evaluate ([]: all)
    train_utts: int = 1500
    eval_utts: int = 120
    steps: int = 600
    batch_size: int = 16
    lr: float = 2e-3
    warmup: int = 100
    weight_decay: float = 0.01
    seed: int = 0
    eval_every: int = 0  # 0: only at the end
    dim: int = 96
    n_layers: int = 3
    n_heads: int = 4
    conv_kernel: int = 15
    adapter_dim: int = 128
    threads: int = 0
    device: str = "cpu"
    quiet: bool = False

    def validate(self) -> SpeechTrainConfig:
        if not self.model:
            raise HerdError("no LM to put the adapter on: give --model CKPT (a herd, Meta or HF checkpoint; "
                            "`herd speech text-lm --out DIR` trains a small one)")
        if not self.out:
            raise HerdError("no output directory: give --out DIR")
        for name in ("train_utts", "eval_utts", "steps", "batch_size"):
            if getattr(self, name) < 1:
                raise HerdError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        from herd.speech.data import MIX

        bad = [k for k in self.kinds if k not in MIX]
        if bad:
            raise HerdError(f"unknown utterance kind(s) {bad} in --kinds; choose from {', '.join(MIX)}")
        if self.lr <= 0:
            raise HerdError(f"--lr must be positive, got {self.lr}")
        if self.dim % self.n_heads or self.dim // self.n_heads % 2:
            raise HerdError(f"--dim {self.dim} must split into --n-heads {self.n_heads} heads of "
                            "an even size")
        return self


# ---- batches ----------------------------------------------------------------------------------
def speech_batch(samples, tasks, lay: Layout, speech: SpeechModel):
    """(feats [B, T, 80], lengths [B], tokens, slots, targets) for samples with (instruction, answer)."""
    frames = [s.feats.shape[0] for s in samples]
    T = max(frames)
    feats = torch.zeros(len(samples), T, samples[0].feats.shape[1])
    for b, s in enumerate(samples):
        feats[b, :frames[b]] = s.feats
    rows = []
    for s, (instr, ans), n in zip(samples, tasks, frames):
        p, sl = lay.prompt(speech.n_embeddings(n), instr)
        rows.append((p, sl, lay.answer(ans) if ans is not None else []))
    tokens, slots, targets = batch_rows(rows, lay.eot)
    return feats, torch.tensor(frames), tokens, slots, targets


def speech_loss(lm, speech, lay, samples, tasks):
    feats, lengths, tokens, slots, targets = speech_batch(samples, tasks, lay, speech)
    dev = lm.tok_embeddings.weight.device
    emb, elen = speech(feats.to(dev), lengths.to(dev))
    embeds = lm_inputs(lm, tokens.to(dev), slots.to(dev), emb, elen)
    return answer_loss(lm, tokens.to(dev), targets.to(dev), embeds)


# ---- generation -------------------------------------------------------------------------------
@torch.no_grad()
def generate_from_speech(lm, speech, lay: Layout, feats, instruction: str = TRANSCRIBE,
                         max_new_tokens: int = 32,
                         temperature: float = 0.0, top_p: float = 1.0, top_k: int = 0,
                         seed: int | None = None,
                         on_token=None) -> list[int]:
    """The LM's answer (token ids, without the final <|eot_id|>) to the speech of `feats` [frames, 80]
    and a text instruction: one prefill with the spliced embeddings, then token-by-token decoding
    with a static KV cache (the LM's own forward)."""
    from herd.inference.sampling import sample
    from herd.model.transformer import KVCache

    dev = lm.tok_embeddings.weight.device
    n = speech.n_embeddings(feats.shape[0])
    ids, sl = lay.prompt(n, instruction)
    tokens = torch.tensor([ids], device=dev)
    emb, elen = speech(feats[None].to(dev), torch.tensor([feats.shape[0]], device=dev))
    embeds = lm_inputs(lm, tokens, torch.tensor([sl], device=dev),
                       emb.to(lm.tok_embeddings.weight.dtype), elen)
    total = min(lm.args.max_seq_len, len(ids) + max_new_tokens)
    if len(ids) >= total:
        raise HerdError(f"the speech prompt ({len(ids)} positions) does not fit the LM's context "
                        f"({lm.args.max_seq_len}); use a shorter recording")
    cache = KVCache(lm.args, 1, total, dtype=lm.tok_embeddings.weight.dtype, device=dev)
    gen = None
    if seed is not None:
        gen = torch.Generator(device=dev).manual_seed(seed)
    logits = lm(tokens, embeds=embeds, cache=cache, cache_pos=0, last_only=True)[:, -1]
    out, pos = [], len(ids)
    stops = {lay.eot, lay.tok.special_tokens["<|end_of_text|>"], lay.tok.special_tokens["<|eom_id|>"]}
    while True:
        t = int(sample(logits.float(), temperature, top_p, top_k, gen)[0])
        if t in stops:
            break
        out.append(t)
        if on_token:
            on_token(t)
        if len(out) >= max_new_tokens or pos >= total:
            break
        logits = lm(torch.tensor([[t]], device=dev), cache=cache, cache_pos=pos)[:, -1]
        pos += 1
    return out


def evaluate(lm, speech, lay, samples, seed: int = 0) -> dict:
    """Greedy answers on held-out samples: digit accuracy (answer task on spoken digits, the
    answer must be exactly the digit) and exact-match rates of each kind and task."""
    was = speech.training
    speech.eval()
    hits: dict[str, list[int]] = {}
    examples = []
    for s in samples:
        tasks = [("transcribe", TRANSCRIBE, s.utterance.text)]
        if s.utterance.answer is not None:
            tasks.append(("answer", ANSWER, s.utterance.answer))
        for name, instr, want in tasks:
            got = lay.tok.decode(generate_from_speech(lm, speech, lay, s.feats, instr, max_new_tokens=16))
            ok = int(got.strip() == want)
            hits.setdefault(f"{s.utterance.kind}/{name}", []).append(ok)
            if len(examples) < 12:
                examples.append({"voice": str(s.voice), "said": s.utterance.text, "task": name,
                                 "answer": got})
    speech.train(was)
    res = {k: sum(v) / len(v) for k, v in sorted(hits.items())}
    res["n"] = {k: len(v) for k, v in sorted(hits.items())}
    res["examples"] = examples
    return res


# ---- save / load ------------------------------------------------------------------------------
def save_adapter(speech: SpeechModel, out, lm_path: str, extra: dict | None = None) -> Path:
    from safetensors.torch import save

    from herd.fileio import atomic_write, atomic_write_json

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous().cpu() for k, v in speech.state_dict().items()}
    atomic_write(out / ADAPTER_FILE, save(tensors, metadata={"format": "pt"}))
    cfg = {"format": "herd-speech-adapter", "args": speech.args.to_dict(), "lm": str(lm_path),
           "speech_start": SPEECH_START, "speech_end": SPEECH_END,
           "instructions": {"transcribe": TRANSCRIBE, "answer": ANSWER}}
    cfg.update(extra or {})
    atomic_write_json(out / CONFIG_FILE, cfg)
    return out


def is_adapter(path) -> bool:
    return (Path(path) / CONFIG_FILE).is_file()


def load_adapter(path, device="cpu") -> tuple[SpeechModel, dict]:
    from herd.checkpoint.common import safetensors_load

    p = Path(path)
    if not is_adapter(p):
        raise HerdError(f"{p}: not a speech adapter directory (no {CONFIG_FILE}); train one with "
                        "`herd speech train --model CKPT --out DIR`")
    try:
        cfg = json.loads((p / CONFIG_FILE).read_text())
        args = SpeechArgs.from_dict(cfg["args"])
    except (ValueError, KeyError, TypeError) as e:
        raise HerdError(f"{p / CONFIG_FILE}: not a valid speech adapter config ({e})") from None
    speech = SpeechModel(args)
    sd = safetensors_load(p / ADAPTER_FILE)
    missing, unexpected = speech.load_state_dict(sd, strict=False)
    if missing or unexpected:
        raise HerdError(f"{p / ADAPTER_FILE}: does not match its config (missing {missing[:3]}, "
                        f"unexpected {unexpected[:3]})")
    return speech.to(device).eval(), cfg


# ---- the training run -------------------------------------------------------------------------
def freeze(lm):
    for p in lm.parameters():
        p.requires_grad_(False)
    return lm.eval()


def train_speech(cfg: SpeechTrainConfig, log=print, lm=None, tok=None) -> dict:
    """Train and save the adapter; returns the held-out evaluation. `lm`/`tok`: the LM already
    loaded from `cfg.model` (it is frozen in place and never changed)."""
    from tqdm import tqdm

    from herd.checkpoint import load_model
    from herd.speech.data import synthesize_set

    cfg.validate()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    quiet = cfg.quiet or None
    if lm is None:
        lm, tok = load_model(cfg.model, device=cfg.device, tokenizer=cfg.tokenizer or None)
    if tok is None:
        raise HerdError(f"{cfg.model} has no tokenizer; pass --tokenizer llama3 (or a tokenizer file)")
    if SPEECH_START not in tok.special_tokens:
        raise HerdError(f"the tokenizer has no {SPEECH_START}; the speech adapter needs the Llama 3 "
                        "special tokens")
    freeze(lm)
    lay = Layout(tok)
    torch.manual_seed(cfg.seed)
    sargs = SpeechArgs(dim=cfg.dim, n_layers=cfg.n_layers, n_heads=cfg.n_heads, conv_kernel=cfg.conv_kernel,
                       adapter_dim=cfg.adapter_dim, lm_dim=lm.args.dim)
    speech = SpeechModel(sargs).to(cfg.device)
    n_params = sum(p.numel() for p in speech.parameters())
    log(f"speech encoder+adapter: {n_params / 1e6:.2f}M trainable parameters; LM "
        f"{lm.num_params() / 1e6:.1f}M frozen; speech between {SPEECH_START} and {SPEECH_END}")
    t0 = time.perf_counter()
    train = synthesize_set(cfg.train_utts, cfg.seed, held_out=False, kinds=cfg.kinds or None,
                           progress=not cfg.quiet)
    held = synthesize_set(cfg.eval_utts, cfg.seed + 1_000_003, held_out=True,
                          kinds=cfg.kinds or ["digit", "digit", "number", "question", "sentence"],
                          progress=not cfg.quiet)
    log(f"synthesised {len(train)} training and {len(held)} held-out utterances in "
        f"{time.perf_counter() - t0:.1f}s (held-out voice variants never trained on)")
    opt = torch.optim.AdamW(speech.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.98))
    sched = _schedule(opt, cfg.lr, cfg.warmup, cfg.steps)
    rng = random.Random(cfg.seed)
    losses = []
    speech.train()
    bar = tqdm(range(cfg.steps), desc="speech adapter", unit="step", disable=quiet, file=sys.stderr)
    t0 = time.perf_counter()
    for step in bar:
        batch = rng.sample(train, min(cfg.batch_size, len(train)))
        tasks = [draw_task(rng, s.utterance) for s in batch]
        loss = speech_loss(lm, speech, lay, batch, tasks)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(speech.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(loss.item())
        if step % 10 == 0:
            bar.set_postfix(loss=f"{sum(losses[-10:]) / len(losses[-10:]):.3f}")
        if cfg.eval_every and (step + 1) % cfg.eval_every == 0 and step + 1 < cfg.steps:
            r = evaluate(lm, speech, lay, held[:50])
            log(f"step {step + 1}: held-out digit accuracy {r.get('digit/answer', 0):.2%}")
    train_s = time.perf_counter() - t0
    res = evaluate(lm, speech, lay, held)
    res.update(steps=cfg.steps, train_seconds=round(train_s, 1), first_loss=losses[0],
               last_loss=sum(losses[-20:]) / len(losses[-20:]))
    save_adapter(speech, cfg.out, str(Path(cfg.model).resolve()),
                 {"tokenizer": cfg.tokenizer or None, "config": dataclasses.asdict(cfg), "eval": res,
                  "losses": losses})
    log(f"loss {losses[0]:.3f} -> {res['last_loss']:.3f} in {cfg.steps} steps ({train_s:.0f}s); "
        "held-out voices: "
        + ", ".join(f"{k} {v:.1%}" for k, v in res.items() if "/" in k))
    log(f"adapter -> {cfg.out}")
    return res
