"""herd's own checkpoint format: a directory with config.json, model.safetensors and the
tokenizer file (tokenizer.model, tiktoken format).

Tensor names are Meta's (`tok_embeddings.weight`, `layers.N.attention.wq.weight`, ...); a tied
output weight is stored once (as the embedding). Written atomically: into a temporary sibling
directory that is renamed into place, so a crash never leaves a half-written checkpoint.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported lazily, so that `herd --help` stays fast
    import torch

from herd.errors import HerdError
from herd.fileio import atomic_dir
from herd.model.args import ModelArgs

FORMAT_VERSION = 1


def is_herd_checkpoint(path: str | os.PathLike) -> bool:
    p = Path(path)
    if not (p / "config.json").is_file():
        return False
    try:
        cfg = json.loads((p / "config.json").read_text())
        return isinstance(cfg, dict) and cfg.get("format") == "herd"
    except (OSError, ValueError):
        return False


def read_herd_config(path: str | os.PathLike) -> dict:
    p = Path(path) / "config.json"
    try:
        cfg = json.loads(p.read_text())
    except FileNotFoundError:
        raise HerdError(f"{p}: not found; a herd checkpoint is a directory with config.json") from None
    except ValueError as e:
        raise HerdError(f"{p}: not valid JSON ({e})") from None
    if not isinstance(cfg, dict) or cfg.get("format") != "herd" or "model" not in cfg:
        raise HerdError(f"{p}: not a herd checkpoint config (no format='herd' and model section)")
    return cfg


def load_herd_args(path: str | os.PathLike) -> ModelArgs:
    return ModelArgs.from_dict(read_herd_config(path)["model"])


def save_herd(model, path: str | os.PathLike, tokenizer=None, extra: dict | None = None,
              state_dict: dict | None = None) -> Path:
    """Save `model` (a herd Transformer) to directory `path`. `tokenizer` (a herd Tokenizer) is
    saved beside it so the checkpoint is self-contained. `extra` goes into config.json."""
    from safetensors.torch import save_file

    out = Path(path)
    sd = state_dict if state_dict is not None else model.state_dict()
    args: ModelArgs = model.args
    tensors = {k: v.detach().contiguous().cpu() for k, v in sd.items()}
    if args.tie_embeddings:
        tensors.pop("output.weight", None)
    cfg = {"format": "herd", "version": FORMAT_VERSION, "model": args.to_dict(),
           "dtype": str(next(iter(tensors.values())).dtype).replace("torch.", ""),
           "tokenizer": None}
    with atomic_dir(out) as tmp:
        save_file(tensors, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        if tokenizer is not None:
            tokenizer.save(tmp / "tokenizer.model")
            cfg["tokenizer"] = "tokenizer.model"
        if extra:
            cfg.update(extra)
        (tmp / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    return out


def load_herd_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    from herd.checkpoint.common import safetensors_load

    f = Path(path) / "model.safetensors"
    if not f.is_file():
        raise HerdError(f"{f}: not found (the herd checkpoint is incomplete)")
    return safetensors_load(f)


def load_herd(path: str | os.PathLike, device="cpu", dtype: torch.dtype | None = None):
    """Load a herd checkpoint -> (Transformer, Tokenizer or None); fp32 unless `dtype` says
    otherwise. The memory-mapped tensors become the parameters (no copy)."""
    import torch

    from herd.checkpoint.common import iter_safetensors, materialize

    p = Path(path)
    cfg = read_herd_config(p)
    args = ModelArgs.from_dict(cfg["model"])
    f = p / "model.safetensors"
    if not f.is_file():
        raise HerdError(f"{f}: not found (the herd checkpoint is incomplete)")
    model = materialize(args, iter_safetensors(f), str(f), device, dtype or torch.float32)
    tok = None
    if cfg.get("tokenizer"):
        from herd.tokenizer import Tokenizer

        tok = Tokenizer.load(p / cfg["tokenizer"])
    return model, tok
