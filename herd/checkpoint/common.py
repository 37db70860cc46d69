"""Safe readers and an atomic writer shared by the checkpoint formats (paper §3.2 models).

Every reader turns a bad file into one `HerdError` line naming the file and the problem: a
missing file, JSON that does not parse, a truncated or corrupt `.pth` or `.safetensors`, and a
`.pth` that holds pickled Python objects other than tensors. PyTorch files are read only with
`torch.load(weights_only=True, mmap=True)`: unpickling arbitrary objects can run arbitrary code,
and mmap keeps a 16 GB shard out of memory until its tensors are used.
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import re
import shutil
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
            raise HerdError(f"{p}: holds a pickled Python object ({m.group(1) or m.group(2)}), not only tensors; "
                            f"herd refuses to unpickle arbitrary objects (they can run code). Re-save it as a "
                            f"plain state dict of tensors") from None
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


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike):
    """Yield a temporary sibling directory; on success it replaces `path` (rename), so a crash never
    leaves a half-written checkpoint and an existing one is only replaced by a complete one."""
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise HerdError(f"{out}: exists and is not a directory; choose another output path")
    tmp = out.with_name(out.name + ".tmp-save")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        yield tmp
        for f in sorted(tmp.rglob("*")):  # files in subfolders too (an HF export's original/)
            if f.is_file():
                with open(f, "rb") as fh:
                    os.fsync(fh.fileno())
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if out.exists():
        old = out.with_name(out.name + ".old")
        if old.exists():
            shutil.rmtree(old)
        os.replace(out, old)
        os.replace(tmp, out)
        shutil.rmtree(old)
    else:
        os.replace(tmp, out)


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
    table = {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp16": torch.float16, "float16": torch.float16,
             "half": torch.float16, "fp32": torch.float32, "float32": torch.float32, "float": torch.float32}
    if str(name).lower() not in table:
        raise HerdError(f"unknown dtype {name!r}; choose bf16, fp16 or fp32")
    return table[str(name).lower()]


def load_tokenizer_beside(path: Path):
    """The herd/tiktoken tokenizer.model found beside the weights (else a Llama 3 style HF
    tokenizer.json), or None."""
    f = Path(path) / "tokenizer.model"
    if not f.is_file():
        if (Path(path) / "tokenizer.json").is_file():
            from herd.checkpoint.hf_tokenizer import load_hf_tokenizer_json

            return load_hf_tokenizer_json(Path(path) / "tokenizer.json")
        return None
    from herd.tokenizer import Tokenizer

    try:
        return Tokenizer.load(f)
    except HerdError:
        raise
    except Exception as e:  # a SentencePiece model (Llama 2) or a damaged file
        raise HerdError(f"{f}: not a tiktoken BPE file ({_first_line(e)}); pass --tokenizer PATH "
                        f"to use another tokenizer") from None


def load_tokenizer_in(path: Path):
    """The tokenizer of a checkpoint directory laid out as Meta's Hugging Face repos (and herd's HF
    export) are: the tiktoken original/tokenizer.model; else what `load_tokenizer_beside` finds
    (tokenizer.model beside the weights, as herd's HF exports before the original/ layout, or
    tokenizer.json), or None."""
    p = Path(path)
    if (p / "original" / "tokenizer.model").is_file():
        return load_tokenizer_beside(p / "original")
    return load_tokenizer_beside(p)


def tokenizer_from_spec(spec):
    """A tokenizer named on the command line or in load_model/convert_checkpoint: 'llama3' (the real
    Llama 3 tokenizer), a tiktoken file, or a checkpoint directory holding one (tokenizer.model, a
    Hugging Face export's original/tokenizer.model, or a Llama 3 style tokenizer.json)."""
    from herd.tokenizer import Tokenizer

    if str(spec) == "llama3":
        return Tokenizer.llama3()
    p = Path(spec)
    if p.is_dir():
        tok = load_tokenizer_in(p)
        if tok is None:
            raise HerdError(f"{p}: no tokenizer.model, original/tokenizer.model or tokenizer.json in this directory")
        return tok
    return Tokenizer.load(p)


def check_tokenizer_fits(tokenizer, args) -> None:
    """A tokenizer saved beside weights must cover exactly the model's vocabulary."""
    if tokenizer is not None and tokenizer.n_words != args.vocab_size:
        raise HerdError(f"tokenizer has {tokenizer.n_words} tokens but the model's vocab_size is "
                        f"{args.vocab_size}; save the model with its own tokenizer")
