"""Checkpoints (paper §3.2 model, any source): one call loads Meta's format
(`consolidated.NN.pth` + `params.json`, model-parallel shards merged), Hugging Face
`LlamaForCausalLM` safetensors, or herd's own directory format; save to herd, HF and Meta formats;
convert between them without building a model (tensors keep their dtype, bit for bit). Never
unpickles arbitrary objects (`torch.load(weights_only=True)` or safetensors)."""

from __future__ import annotations

import os
import types
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
    if (p / "metrics.jsonl").is_file() or (p / "checkpoints").is_dir():  # a `herd pretrain` run folder
        if (p / "model").is_dir():
            raise HerdError(f"{p} is a training run, not a model; its model is {p / 'model'}")
        raise HerdError(f"{p} is a training run that has not finished (no {p / 'model'} yet); continue it "
                        f"with herd pretrain --resume --run.out {p}")
    if (p / "params.json").is_file():
        return "meta"
    if (p / "config.json").is_file():
        return "hf"
    raise HerdError(f"{p}: no config.json or params.json; not a herd, Meta or Hugging Face checkpoint")


def load_model(path: str | os.PathLike, device="cpu", dtype=None, tokenizer=None):
    """Load any supported checkpoint -> (Transformer, Tokenizer or None). `tokenizer` ('llama3', a
    tiktoken file or a checkpoint directory) overrides the tokenizer found beside the weights.
    A Llama 3.2 Vision checkpoint (any format) gives a herd.vision VisionLlama."""
    fmt = detect_format(path)
    from herd.vision.checkpoint import vision_format

    if vision_format(path):
        from herd.vision.checkpoint import load_vision

        model, tok = load_vision(path, device=device, dtype=dtype)
    elif fmt == "herd":
        model, tok = load_herd(path, device=device, dtype=dtype)
    elif fmt == "meta":
        from herd.checkpoint.meta import load_meta

        model, tok = load_meta(path, device=device, dtype=dtype)
    else:
        from herd.checkpoint.hf import load_hf

        model, tok = load_hf(path, device=device, dtype=dtype)
    if tokenizer is not None:
        from herd.checkpoint.tokenizer_files import tokenizer_from_spec

        tok = tokenizer_from_spec(tokenizer)
    return model, tok


def read_args(path: str | os.PathLike):
    """The ModelArgs of a checkpoint of any format, without reading the weights (Meta: rank 0 is
    memory-mapped to see whether the embeddings are tied)."""
    fmt = detect_format(path)
    if fmt == "herd":
        from herd.checkpoint.herd_format import load_herd_args

        return load_herd_args(path)
    if fmt == "meta":
        from herd.checkpoint.meta import read_meta_args

        return read_meta_args(path)
    from herd.checkpoint.hf import read_hf_args

    return read_hf_args(path)


def load_state_dict_any(path: str | os.PathLike):
    """(ModelArgs, state dict in herd's names, tokenizer or None) of any checkpoint, tensors in
    their stored dtype. A tied model's dict has no output.weight."""
    from herd.checkpoint.tokenizer_files import load_tokenizer_beside, load_tokenizer_in

    p = Path(path)
    fmt = detect_format(p)
    if fmt == "herd":
        from herd.checkpoint.herd_format import load_herd_state_dict, read_herd_config
        from herd.model.args import ModelArgs

        cfg = read_herd_config(p)
        args = ModelArgs.from_dict(cfg["model"])
        sd = load_herd_state_dict(p)
        tok = None
        if cfg.get("tokenizer"):
            from herd.tokenizer import Tokenizer

            tok = Tokenizer.load(p / cfg["tokenizer"])
    elif fmt == "meta":
        from herd.checkpoint.meta import load_meta_state_dict

        args, sd = load_meta_state_dict(p)
        tok = load_tokenizer_beside(p)
    else:
        from herd.checkpoint.hf import load_hf_state_dict

        args, sd = load_hf_state_dict(p)
        tok = load_tokenizer_in(p)
    if args.tie_embeddings:
        sd.pop("output.weight", None)
    return args, sd, tok


def check_state_dict(args, sd: dict, source: str) -> None:
    """Key and shape check against the model `args` describes, without building it."""
    from herd.model.transformer import Transformer

    own = Transformer.build(args, device="meta").state_dict()
    tied = args.tie_embeddings
    missing = [k for k in own if k not in sd and not (tied and k == "output.weight")]
    unexpected = [k for k in sd if k not in own]
    if missing:
        raise HerdError(f"{source}: missing tensor(s) {', '.join(missing[:3])}"
                        f"{' ...' if len(missing) > 3 else ''} for this model config")
    if unexpected:
        raise HerdError(f"{source}: unexpected tensor(s) {', '.join(unexpected[:3])}"
                        f"{' ...' if len(unexpected) > 3 else ''}: checkpoint and config do not match")
    for k, v in sd.items():
        if tuple(v.shape) != tuple(own[k].shape):
            raise HerdError(f"{source}: tensor {k} has shape {tuple(v.shape)}, the model config expects "
                            f"{tuple(own[k].shape)}")


def convert_checkpoint(src: str | os.PathLike, dst: str | os.PathLike, to: str, *, dtype=None,
                       shards: int = 1,
                       tokenizer=None, max_shard_bytes: int | None = None, original_weights: bool = False,
                       log=print) -> Path:
    """Convert a checkpoint of any format to `to` ('herd', 'hf' or 'meta') without building a
    model: tensors are renamed, permuted or (un)sharded and keep their bits unless `dtype` is
    given. `tokenizer` (a path or 'llama3') replaces the one found beside the weights. `original_weights`
    (to='hf'): also write Meta's consolidated.00.pth + params.json under original/, as Meta's HF repos."""
    from herd.checkpoint.common import parse_dtype, weights_source

    if to not in ("herd", "hf", "meta"):
        raise HerdError(f"unknown target format {to!r}; choose herd, hf or meta")
    if original_weights and to != "hf":
        raise HerdError(f"--original-weights writes Meta's weights under a Hugging Face export's original/; "
                        f"it goes with --to hf, not --to {to}")
    src, dst = Path(src), Path(dst)
    if src.resolve() == dst.resolve():
        raise HerdError(f"{dst}: the output must differ from the input checkpoint")
    fmt = detect_format(src)
    from herd.vision.checkpoint import convert_vision, vision_format

    if vision_format(src):  # Llama 3.2 Vision: its own layouts (herd.vision.checkpoint)
        if original_weights:
            raise HerdError("--original-weights is for text models; a vision checkpoint converts on its own")
        return convert_vision(src, dst, to, dtype=dtype, shards=shards, tokenizer=tokenizer, log=log)
    log(f"reading {fmt} checkpoint {src}")
    args, sd, tok = load_state_dict_any(src)
    check_state_dict(args, sd, weights_source(src, fmt))
    if tokenizer is not None:
        from herd.checkpoint.tokenizer_files import tokenizer_from_spec

        tok = tokenizer_from_spec(tokenizer)
    if tok is not None and tok.n_words != args.vocab_size:
        raise HerdError(f"tokenizer has {tok.n_words} tokens but the model's vocab_size is "
                        f"{args.vocab_size}; pass the model's own tokenizer with --tokenizer")
    dt = parse_dtype(dtype)
    if dt is not None:
        sd = {k: v.to(dt) for k, v in sd.items()}
    log(f"writing {to} checkpoint {dst} ({len(sd)} tensors, {args.num_params() / 1e6:,.1f}M parameters)")
    if to == "herd":
        save_herd(types.SimpleNamespace(args=args), dst, tokenizer=tok, state_dict=sd)
    elif to == "hf":
        from herd.checkpoint.hf import DEFAULT_MAX_SHARD_BYTES, save_hf_state_dict

        save_hf_state_dict(args, sd, dst, tokenizer=tok,
                           max_shard_bytes=max_shard_bytes or DEFAULT_MAX_SHARD_BYTES,
                           original_weights=original_weights)
    else:
        from herd.checkpoint.meta import save_meta_state_dict

        save_meta_state_dict(args, sd, dst, shards=shards, tokenizer=tok)
    return dst


def save_hf(model, path, tokenizer=None, **kw):
    from herd.checkpoint.hf import save_hf as _save

    return _save(model, path, tokenizer=tokenizer, **kw)


def save_meta(model, path, shards: int = 1, tokenizer=None):
    from herd.checkpoint.meta import save_meta as _save

    return _save(model, path, shards=shards, tokenizer=tokenizer)


__all__ = ["detect_format", "load_model", "load_herd", "save_herd", "save_hf", "save_meta", "read_args",
           "load_state_dict_any", "convert_checkpoint"]
