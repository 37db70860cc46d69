"""Safe readers shared by the checkpoint formats (paper §3.2 models).

Every reader turns a bad file into one `HerdError` line naming the file and the problem: a
missing file, JSON that does not parse, a truncated or corrupt `.pth` or `.safetensors`, and a
`.pth` that holds pickled Python objects other than tensors. PyTorch files are read only with
`torch.load(weights_only=True, mmap=True)`: unpickling arbitrary objects can run arbitrary code,
and mmap keeps a 16 GB shard out of memory until its tensors are used.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import zipfile
from pathlib import Path

import torch

from herd.errors import HerdError


def read_json(path: str | os.PathLike, what: str = "config") -> dict:
    p = Path(path)
    try:
        text = p.read_text()
    except FileNotFoundError:
        raise HerdError(f"{p}: {what} file not found (check the checkpoint directory)") from None
    except (OSError, UnicodeDecodeError) as e:
        raise HerdError(f"{p}: cannot read {what} file ({e})") from None
    try:
        d = json.loads(text)
    except ValueError as e:
        raise HerdError(f"{p}: not valid JSON ({e}); the {what} file is corrupt or truncated") from None
    if not isinstance(d, dict):
        raise HerdError(f"{p}: expected a JSON object in the {what} file, got {type(d).__name__}")
    return d


def _first_line(e: BaseException) -> str:
    s = str(e).strip().splitlines()
    return s[0] if s else type(e).__name__


def torch_load_tensors(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Load a state dict saved with torch.save, refusing anything but tensors (weights_only)."""
    p = Path(path)
    if not p.is_file():
        raise HerdError(f"{p}: checkpoint file not found")
    try:
        try:
            sd = torch.load(p, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as e:
            if "mmap can only be used" not in str(e):
                raise
            # a legacy (pre-zip) torch.save file: it cannot be memory-mapped, read it whole
            sd = torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        m = re.search(r"GLOBAL ([\w.]+)|Unsupported class ([\w.]+)", str(e))
        if m:
            raise HerdError(f"{p}: holds a pickled Python object ({m.group(1) or m.group(2)}), not only "
                            "tensors; herd refuses to unpickle arbitrary objects (they can run code). "
                            f"Re-save it as a plain state dict of tensors") from None
        raise HerdError(f"{p}: corrupt or truncated PyTorch checkpoint (not a valid torch.save file); "
                        f"download or copy it again") from None
    except (RuntimeError, EOFError, OSError, ValueError, KeyError, zipfile.BadZipFile) as e:
        raise HerdError(f"{p}: corrupt or truncated PyTorch checkpoint ({_first_line(e)}); "
                        f"download or copy it again") from None
    if isinstance(sd, dict) and "model" in sd and isinstance(sd["model"], dict):
        sd = sd["model"]  # a training checkpoint that wraps the weights
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise HerdError(f"{p}: not a state dict (a dict of name -> tensor)")
    return sd


def iter_safetensors(path: str | os.PathLike, source: str | None = None):
    """Yield (name, tensor) from a .safetensors file one at a time (memory-mapped until read)."""
    from safetensors import SafetensorError, safe_open

    p = Path(path)
    if not p.is_file():
        raise HerdError(f"{p}: safetensors file not found (the checkpoint is incomplete)")
    try:
        with safe_open(str(p), framework="pt") as f:
            for k in f.keys():
                yield k, f.get_tensor(k)
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise HerdError(f"{p}: corrupt or truncated safetensors file ({_first_line(e)})") from None


def safetensors_load(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Every tensor of a .safetensors file."""
    return dict(iter_safetensors(path))


def weights_source(path: str | os.PathLike, fmt: str) -> str:
    """The weight file(s) of a checkpoint, for error messages."""
    p = Path(path)
    if fmt == "meta":
        files = sorted(p.glob("consolidated.*.pth"))
        return str(files[0]) if len(files) == 1 else f"{p}/consolidated.*.pth"
    if fmt == "hf" and not (p / "model.safetensors").is_file():
        return f"{p}/model-*.safetensors"
    return str(p / "model.safetensors")


def materialize(args, items, source: str, device="cpu", dtype: torch.dtype = torch.float32):
    """Build the Transformer `args` describes from (name, tensor) pairs, checking each name and
    shape (one clear line for an unexpected, misshapen or missing tensor).

    The model is built on the meta device and the checkpoint's tensors become its parameters
    (`load_state_dict(assign=True)`): no fp32 copy is made first, and on CPU a tensor already in
    `dtype` is used as it lies in the memory-mapped file (private, copy-on-write), so loading costs
    no copy at all. Weights, tying and RoPE tables are those of `Transformer.build(args, device,
    init=False)` with the weights loaded and the parameters in `dtype`; the RoPE tables stay fp32."""
    from herd.model.transformer import Transformer

    model = Transformer.build(args, device="meta")
    own = model.state_dict()
    tied = args.tie_embeddings
    sd = {}
    for k, v in items:
        if k not in own or (tied and k == "output.weight"):
            raise HerdError(f"{source}: unexpected tensor {k}: checkpoint and config do not match")
        if tuple(v.shape) != tuple(own[k].shape):
            raise HerdError(f"{source}: tensor {k} has shape {tuple(v.shape)}, the model config expects "
                            f"{tuple(own[k].shape)}")
        sd[k] = v.to(device=device, dtype=dtype)
    missing = [k for k in own if k not in sd and not (tied and k == "output.weight")]
    if missing:
        raise HerdError(f"{source}: missing tensor(s) {', '.join(missing[:3])}"
                        f"{' ...' if len(missing) > 3 else ''} for this model config")
    if tied:
        sd["output.weight"] = sd["tok_embeddings.weight"]
    model.load_state_dict(sd, strict=True, assign=True)
    if tied:
        model.output.weight = model.tok_embeddings.weight
    model.reset_rope()  # fp32 tables whatever `dtype` is, as Meta's reference keeps freqs_cis in complex64
    return model


def parse_dtype(name: str | torch.dtype | None) -> torch.dtype | None:
    """'bf16'/'bfloat16', 'fp16'/'float16', 'fp32'/'float32' -> torch dtype; None stays None."""
    if name is None or isinstance(name, torch.dtype):
        return name
    table = {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp16": torch.float16,
             "float16": torch.float16, "half": torch.float16, "fp32": torch.float32, "float32": torch.float32,
             "float": torch.float32}
    if str(name).lower() not in table:
        raise HerdError(f"unknown dtype {name!r}; choose bf16, fp16 or fp32")
    return table[str(name).lower()]


def check_tokenizer_fits(tokenizer, args) -> None:
    """A tokenizer saved beside weights must cover exactly the model's vocabulary."""
    if tokenizer is not None and tokenizer.n_words != args.vocab_size:
        raise HerdError(f"tokenizer has {tokenizer.n_words} tokens but the model's vocab_size is "
                        f"{args.vocab_size}; save the model with its own tokenizer")
