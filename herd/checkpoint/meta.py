"""Meta's checkpoint format for the Llama 3 herd (paper §3.2): `params.json` plus
`consolidated.00.pth ... consolidated.NN.pth`, one file per model-parallel rank, and the tiktoken
`tokenizer.model` beside them.

Meta's reference model (llama-models `llama3/model.py`) is built from fairscale parallel layers, so
a checkpoint written with model parallelism N holds each rank's slice:
  column-parallel (cat along dim 0): wq, wk, wv, w1, w3, output, and tok_embeddings
      (a VocabParallelEmbedding in Llama 3, split along the vocabulary; Llama 2 split it along dim 1);
  row-parallel (cat along dim 1): wo, w2;
  replicated: attention_norm, ffn_norm, norm.
Merging infers the axis from the shapes (the one along which the slices add up to the full
shape), which covers both embedding layouts. When a model has fewer KV heads than ranks
(405B at MP16), every rank holds a copy of its group's KV head; the copies are checked and
de-duplicated.

Tensor names are the same as herd's, so the merged dict loads as-is. The tensors keep the dtype
they were stored in (bf16 for Meta's releases) until a model is built from them.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import torch

from herd.checkpoint.common import (check_tokenizer_fits, materialize, read_json, torch_load_tensors,
                                    weights_source)
from herd.checkpoint.tokenizer_files import load_tokenizer_beside
from herd.errors import HerdError
from herd.fileio import atomic_dir
from herd.model.args import ModelArgs

# Llama 3.1 RoPE scaling as llama-models applies it (factor 8); Llama 3.2's tied 1B/3B use 32.
_META_ROPE_FACTOR = 8.0
_L32_ROPE_FACTOR = 32.0
_IGNORED_PARAMS = {"max_batch_size"}
_UNSUPPORTED_PARAMS = {"vision_chunk_size": "a vision model", "vision_max_num_chunks": "a vision model",
                       "vision_num_cross_attention_layers": "a vision model",
                       "vision_model": "a vision model",
                       "quantization_args": "a quantized checkpoint", "lora_args": "a LoRA checkpoint",
                       "moe_args": "a mixture-of-experts model (Llama 4)"}
_ROPE_FACTOR_KEYS = ("rope_scaling_factor", "rope_scale_factor")

# How fairscale splits each tensor over model-parallel ranks (dim to cat along; None = replicated).
_SPLIT_DIM = [
    (re.compile(r"attention\.(wq|wk|wv)\.weight$"), 0),
    (re.compile(r"feed_forward\.(w1|w3)\.weight$"), 0),
    (re.compile(r"^output\.weight$"), 0),
    (re.compile(r"^tok_embeddings\.weight$"), 0),
    (re.compile(r"attention\.wo\.weight$"), 1),
    (re.compile(r"feed_forward\.w2\.weight$"), 1),
]


def split_dim(key: str) -> int | None:
    for pat, dim in _SPLIT_DIM:
        if pat.search(key):
            return dim
    return None


def shard_paths(path: str | os.PathLike) -> list[Path]:
    """consolidated.NN.pth files in rank order; checks that the ranks run 0..N-1."""
    p = Path(path)
    files = sorted(p.glob("consolidated.*.pth"))
    if not files:
        raise HerdError(f"{p}: no consolidated.NN.pth file beside params.json (an incomplete Meta "
                        "checkpoint)")
    ranks = []
    for f in files:
        m = re.fullmatch(r"consolidated\.(\d+)\.pth", f.name)
        if not m:
            raise HerdError(f"{f}: unexpected file name; Meta shards are named consolidated.00.pth, "
                            f"consolidated.01.pth, ...")
        ranks.append(int(m.group(1)))
    files = [f for _, f in sorted(zip(ranks, files))]
    if sorted(ranks) != list(range(len(ranks))):
        raise HerdError(f"{p}: model-parallel shards {sorted(ranks)} are not numbered 0..{len(ranks) - 1}; "
                        f"a shard is missing")
    return files


def params_to_args(params: dict, source: str = "params.json") -> ModelArgs:
    """Meta's params.json -> ModelArgs (tie_embeddings is decided later, from the weights)."""
    for k, what in _UNSUPPORTED_PARAMS.items():
        if params.get(k) not in (None, -1, {}):
            raise HerdError(f"{source}: this is {what} ({k} is set); herd loads Llama 3 text models")
    d = {k: v for k, v in params.items() if k not in _IGNORED_PARAMS and k not in _UNSUPPORTED_PARAMS}
    factor = None
    for k in _ROPE_FACTOR_KEYS:
        if k in d:
            factor = d.pop(k)
    if isinstance(d.get("rope_scaling"), dict):  # a llama-models style nested block
        rs = d.pop("rope_scaling")
        factor = rs.get("factor", factor)
        for src, dst in (("low_freq_factor", "rope_low_freq_factor"),
                         ("high_freq_factor", "rope_high_freq_factor"),
                         ("original_max_position_embeddings", "rope_old_context_len")):
            if src in rs:
                d[dst] = rs[src]
    if factor is not None:
        d["rope_scale_factor"] = float(factor)
    if d.get("vocab_size", 0) in (-1, None):
        d.pop("vocab_size")  # filled in from the embedding's shape
    if "max_seq_len" not in d:
        d["max_seq_len"] = 131072 if d.get("use_scaled_rope") else 8192
    if "rope_theta" in d:
        d["rope_theta"] = float(d["rope_theta"])
    try:
        return ModelArgs.from_dict(d)
    except HerdError as e:
        raise HerdError(f"{source}: {e}") from None
    except TypeError as e:
        raise HerdError(f"{source}: bad model parameters ({e})") from None


def args_to_params(args: ModelArgs) -> dict:
    """ModelArgs -> Meta's params.json (llama-models names and order); herd's extra fields only
    where they differ from what a reader would assume."""
    p = {"dim": args.dim, "n_layers": args.n_layers, "n_heads": args.n_heads, "n_kv_heads": args.n_kv_heads,
         "vocab_size": args.vocab_size, "multiple_of": args.multiple_of,
         "ffn_dim_multiplier": args.ffn_dim_multiplier, "norm_eps": args.norm_eps,
         "rope_theta": args.rope_theta, "use_scaled_rope": args.use_scaled_rope}
    if args.ffn_dim_multiplier is None:
        del p["ffn_dim_multiplier"]
    if args.max_seq_len != (131072 if args.use_scaled_rope else 8192):
        p["max_seq_len"] = args.max_seq_len
    if args.use_scaled_rope:
        # explicit when not Meta's 8, and always for a tied model (a reader would assume 3.2's 32)
        if args.rope_scale_factor != _META_ROPE_FACTOR or args.tie_embeddings:
            p["rope_scaling_factor"] = args.rope_scale_factor
        defaults = ModelArgs.__dataclass_fields__
        for f in ("rope_low_freq_factor", "rope_high_freq_factor", "rope_old_context_len"):
            if getattr(args, f) != defaults[f].default:
                p[f] = getattr(args, f)
    return p


def _merge(key: str, parts: list[torch.Tensor], full: tuple[int, ...] | None, n_kv_heads: int, head_dim: int,
           source: str) -> torch.Tensor:
    if len(parts) == 1:
        return parts[0]
    shapes = {tuple(t.shape) for t in parts}
    if len(shapes) != 1:
        raise HerdError(f"{source}: shards disagree on the shape of {key} ({sorted(shapes)})")
    shape = parts[0].shape
    if full is None or len(shape) == 1 or tuple(shape) == tuple(full):
        return parts[0]  # replicated (norms)
    n = len(parts)
    if shape[0] * n == full[0] and shape[1] == full[1]:
        return torch.cat(parts, 0)
    if shape[1] * n == full[1] and shape[0] == full[0]:
        return torch.cat(parts, 1)
    if re.search(r"attention\.(wk|wv)\.weight$", key) and n % n_kv_heads == 0 and shape[0] == head_dim \
            and shape[1] == full[1]:
        # more ranks than KV heads: rank i holds (a copy of) KV head i // r
        r = n // n_kv_heads
        for g in range(n_kv_heads):
            for j in range(1, r):
                if not torch.equal(parts[g * r], parts[g * r + j]):
                    raise HerdError(f"{source}: {key} differs between shards {g * r} and {g * r + j}, which "
                                    f"should hold the same KV head")
        return torch.cat(parts[::r], 0)
    raise HerdError(f"{source}: cannot merge {n} shards of {key} with shape {tuple(shape)} into "
                    f"{tuple(full)}; params.json and the weights do not match")


def _tied_in_shards(shards: list[dict[str, torch.Tensor]]) -> bool:
    """Meta's format has no tying: a tied model (Llama 3.2 1B/3B) stores output = tok_embeddings.
    Both are split along dim 0, so the shards' slices are equal exactly when the wholes are."""
    if "output.weight" not in shards[0]:
        return True
    for s in shards:
        out, emb = s["output.weight"], s.get("tok_embeddings.weight")
        if emb is None or out.shape != emb.shape or not torch.equal(out, emb):
            return False
    return True


def open_meta(path: str | os.PathLike, all_shards: bool = True):
    """params.json + memory-mapped shards -> (ModelArgs, shards, shard files). Tying is read from
    the weights; only rank 0 is opened when `all_shards` is False (enough for the config)."""
    p = Path(path)
    params_file = p / "params.json"
    params = read_json(params_file, "params.json")
    files = shard_paths(p)
    shards = [torch_load_tensors(f) for f in (files if all_shards else files[:1])]
    keys = set(shards[0])
    for f, sd in zip(files[1:], shards[1:]):
        if set(sd) != keys:
            diff = sorted(set(sd) ^ keys)[:3]
            raise HerdError(f"{f}: holds different tensor names than {files[0].name} (e.g. "
                            f"{', '.join(diff)})")
    if params.get("vocab_size") in (-1, None):
        emb = shards[0].get("tok_embeddings.weight")
        if emb is None:
            raise HerdError(f"{files[0]}: no tok_embeddings.weight and params.json gives no vocab_size")
        params = dict(params,
                      vocab_size=emb.shape[0] * (len(files) if emb.shape[1] == params.get("dim") else 1))
    args = params_to_args(params, source=str(params_file))
    if _tied_in_shards(shards):
        factor = args.rope_scale_factor
        if args.use_scaled_rope and not any(k in params for k in _ROPE_FACTOR_KEYS + ("rope_scaling",)):
            factor = _L32_ROPE_FACTOR  # params.json does not record it; 3.2 (the tied models) use 32
        args = args.replace(tie_embeddings=True, rope_scale_factor=factor)
    return args, shards, files


def iter_meta_tensors(args: ModelArgs, shards: list[dict[str, torch.Tensor]], files: list[Path]):
    """Yield (name, merged tensor) one at a time, so that loading never holds a second copy of
    the model. A tied model's output.weight is skipped (it is the embedding)."""
    from herd.model.transformer import Transformer

    source = str(files[0]) if len(files) == 1 else f"{files[0].parent}/consolidated.*.pth"
    full = {k: tuple(v.shape) for k, v in Transformer.build(args, device="meta").state_dict().items()}
    for k in shards[0]:
        if k == "rope.freqs" or (k == "output.weight" and args.tie_embeddings):
            continue  # Llama 2 stored its RoPE table; herd recomputes it
        yield k, _merge(k, [s[k] for s in shards], full.get(k), args.n_kv_heads, args.head_dim, source)


def load_meta_state_dict(path: str | os.PathLike) -> tuple[ModelArgs, dict[str, torch.Tensor]]:
    """Read params.json and every consolidated.NN.pth, merge the model-parallel shards.
    -> (ModelArgs, state dict in herd's names, in the stored dtype)."""
    args, shards, files = open_meta(path)
    return args, dict(iter_meta_tensors(args, shards, files))


def read_meta_args(path: str | os.PathLike) -> ModelArgs:
    """Just the config of a Meta checkpoint (for `herd info`); rank 0 is memory-mapped to see
    whether the embeddings are tied."""
    return open_meta(path, all_shards=False)[0]


def load_meta(path: str | os.PathLike, device="cpu", dtype: torch.dtype | None = None):
    """Load a Meta checkpoint directory -> (Transformer, Tokenizer or None). The model is fp32
    unless `dtype` says otherwise; the merged tensors become its parameters (no second copy)."""
    p = Path(path)
    args, shards, files = open_meta(p)
    model = materialize(args, iter_meta_tensors(args, shards, files), weights_source(p, "meta"), device,
                        dtype or torch.float32)
    return model, load_tokenizer_beside(p)


def split_state_dict(sd: dict[str, torch.Tensor], shards: int,
                     n_kv_heads: int) -> list[dict[str, torch.Tensor]]:
    """Cut a full state dict into `shards` model-parallel ranks as fairscale lays them out."""
    if shards > n_kv_heads:
        raise HerdError(f"cannot split a model with {n_kv_heads} KV heads into {shards} model-parallel "
                        f"shards; use at most {n_kv_heads}")
    out: list[dict[str, torch.Tensor]] = [{} for _ in range(shards)]
    for k, v in sd.items():
        d = split_dim(k)
        if d is None:
            for o in out:
                o[k] = v.clone()
            continue
        if v.shape[d] % shards:
            raise HerdError(f"cannot split {k} of shape {tuple(v.shape)} into {shards} equal shards along "
                            f"dim {d}")
        for o, piece in zip(out, v.chunk(shards, dim=d)):
            o[k] = piece.contiguous().clone()  # own storage: torch.save would write a view's whole storage
    return out


def save_meta_state_dict(args: ModelArgs, sd: dict[str, torch.Tensor], path: str | os.PathLike,
                         shards: int = 1, tokenizer=None) -> Path:
    """Write params.json + consolidated.NN.pth (+ tokenizer.model) atomically. A tied model gets an
    explicit output.weight (Meta's reference model has no tying)."""
    check_tokenizer_fits(tokenizer, args)
    if shards < 1:
        raise HerdError(f"shards must be >= 1, got {shards}")
    sd = {k: v.detach().cpu() for k, v in sd.items()}
    if args.tie_embeddings and "output.weight" not in sd:
        sd["output.weight"] = sd["tok_embeddings.weight"]
    # Meta's key order (its modules' order, which herd's model shares)
    from herd.model.transformer import Transformer

    order = list(Transformer.build(args, device="meta").state_dict())
    sd = {k: sd[k] for k in order if k in sd} | {k: v for k, v in sd.items() if k not in order}
    with atomic_dir(path) as tmp:
        (tmp / "params.json").write_text(json.dumps(args_to_params(args)))
        parts = [sd] if shards == 1 else split_state_dict(sd, shards, args.n_kv_heads)
        for i, part in enumerate(parts):
            if shards == 1:  # tied: output and embeddings must be two tensors in the file, like Meta's
                part = {k: (v.clone() if k == "output.weight" and args.tie_embeddings else v.contiguous())
                        for k, v in part.items()}
            torch.save(part, tmp / f"consolidated.{i:02d}.pth")
        if tokenizer is not None:
            tokenizer.save(tmp / "tokenizer.model")
    return Path(path)


def save_meta(model, path: str | os.PathLike, shards: int = 1, tokenizer=None) -> Path:
    """Save a herd Transformer in Meta's format with `shards` model-parallel files."""
    return save_meta_state_dict(model.args, model.state_dict(), path, shards=shards, tokenizer=tokenizer)


__all__ = ["load_meta", "load_meta_state_dict", "read_meta_args", "save_meta", "save_meta_state_dict",
           "params_to_args", "args_to_params", "split_state_dict", "shard_paths"]
