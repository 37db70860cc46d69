"""Checkpoints (paper §3.2 model, any source): one call loads Meta's format
(`consolidated.NN.pth` + `params.json`), Hugging Face `LlamaForCausalLM` safetensors, or herd's own
directory format; save to herd and HF formats. Never unpickles arbitrary objects."""

from __future__ import annotations

import os
from pathlib import Path

from herd.errors import HerdError
from herd.checkpoint.herd_format import is_herd_checkpoint, load_herd, save_herd


def detect_format(path: str | os.PathLike) -> str:
    """'herd', 'meta' or 'hf' for a checkpoint directory; HerdError otherwise."""
    p = Path(path)
    if not p.exists():
        raise HerdError(f"checkpoint not found: {p}")
    if not p.is_dir():
        raise HerdError(f"{p}: a checkpoint is a directory (herd, Meta or Hugging Face format)")
    if is_herd_checkpoint(p):
        return "herd"
    if (p / "params.json").is_file():
        return "meta"
    if (p / "config.json").is_file():
        return "hf"
    raise HerdError(f"{p}: no config.json or params.json; not a herd, Meta or Hugging Face checkpoint")


def load_model(path: str | os.PathLike, device="cpu", dtype=None, tokenizer=None):
    """Load any supported checkpoint -> (Transformer, Tokenizer or None). `tokenizer` (a path)
    overrides the tokenizer found beside the weights."""
    fmt = detect_format(path)
    if fmt == "herd":
        model, tok = load_herd(path, device=device, dtype=dtype)
    elif fmt == "meta":
        from herd.checkpoint.meta import load_meta

        model, tok = load_meta(path, device=device, dtype=dtype)
    else:
        from herd.checkpoint.hf import load_hf

        model, tok = load_hf(path, device=device, dtype=dtype)
    if tokenizer is not None:
        from herd.tokenizer import Tokenizer

        tok = Tokenizer.llama3() if str(tokenizer) == "llama3" else Tokenizer.load(tokenizer)
    return model, tok


__all__ = ["detect_format", "load_model", "load_herd", "save_herd"]
