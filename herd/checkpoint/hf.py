"""Hugging Face `LlamaForCausalLM` checkpoints for the Llama 3 herd (paper §3.2): config.json plus
model.safetensors, or shards listed in model.safetensors.index.json (pytorch_model*.bin is read
too, with weights_only).

Two things differ from Meta's layout besides the names:
- RoPE. Meta rotates interleaved pairs (x0,x1), (x2,x3), ... of each head; HF's `rotate_half`
  rotates (x_i, x_{i+d/2}). HF's conversion script therefore permutes the rows of wq and wk within
  each head: Meta row 2i -> HF row i, Meta row 2i+1 -> HF row d/2+i. The permutation is pure data
  movement, so herd -> HF -> herd is bit-exact.
- Config. HF gives intermediate_size instead of Meta's (multiple_of, ffn_dim_multiplier); herd
  writes its own pair under a "herd" key and otherwise picks the Llama 3 pair that reproduces the
  width. RoPE scaling is `rope_scaling` (transformers 4) or `rope_parameters` (transformers 5)
  with rope_type "llama3"; both are written and both are read.

The export is laid out as Meta's own Hugging Face repos (meta-llama/Llama-3.1-8B-Instruct): at the
root config.json, generation_config.json, model*.safetensors (+ index), and with a tokenizer
tokenizer.json, tokenizer_config.json (with a chat template) and special_tokens_map.json; the tiktoken
tokenizer.model goes under original/, never at the root, where llama.cpp's convert_hf_to_gguf.py
takes a tokenizer.model for a SentencePiece model. `original_weights=True` also writes Meta's
consolidated.00.pth + params.json there (doubling the size; off by default). herd reads back both
this layout and its older one (tokenizer.model at the root).

Writing needs only safetensors (no transformers); the result loads with
`transformers.LlamaForCausalLM.from_pretrained(dir)`, and with a tokenizer
`AutoTokenizer.from_pretrained(dir)` (tokenizer.json, see hf_tokenizer.py).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import torch

from herd.checkpoint.common import (check_tokenizer_fits, iter_safetensors, materialize, read_json,
                                    torch_load_tensors, weights_source)
from herd.checkpoint.tokenizer_files import load_tokenizer_in
from herd.errors import HerdError
from herd.fileio import atomic_dir
from herd.model.args import ModelArgs

DEFAULT_MAX_SHARD_BYTES = 5 * 1024**3  # as transformers' save_pretrained

_LAYER_MAP = {
    "self_attn.q_proj.weight": "attention.wq.weight",
    "self_attn.k_proj.weight": "attention.wk.weight",
    "self_attn.v_proj.weight": "attention.wv.weight",
    "self_attn.o_proj.weight": "attention.wo.weight",
    "mlp.gate_proj.weight": "feed_forward.w1.weight",
    "mlp.up_proj.weight": "feed_forward.w3.weight",
    "mlp.down_proj.weight": "feed_forward.w2.weight",
    "input_layernorm.weight": "attention_norm.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
}
_LAYER_MAP_INV = {v: k for k, v in _LAYER_MAP.items()}
_TOP_MAP = {"model.embed_tokens.weight": "tok_embeddings.weight", "model.norm.weight": "norm.weight",
            "lm_head.weight": "output.weight"}
_TOP_MAP_INV = {v: k for k, v in _TOP_MAP.items()}
_LAYER_RE = re.compile(r"^model\.layers\.(\d+)\.(.+)$")
_HERD_LAYER_RE = re.compile(r"^layers\.(\d+)\.(.+)$")

# (multiple_of, ffn_dim_multiplier) of the Llama 3 releases, tried in order to recover Meta's FFN formula
_FFN_CANDIDATES = [(1024, 1.3), (4096, 1.3), (4096, 1.2), (256, 1.5), (256, 1.0), (256, None), (1024, None),
                   (4096, None), (64, None), (128, None), (32, None), (16, None), (8, None), (1, None)]


# ---- RoPE layout --------------------------------------------------------------------------------
def meta_to_hf_rows(w: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Interleaved-pair rows (Meta) -> half-split rows (HF rotate_half), per head."""
    out, dim = w.shape
    return w.view(n_heads, out // n_heads // 2, 2, dim).transpose(1, 2).reshape(out, dim)


def hf_to_meta_rows(w: torch.Tensor, n_heads: int) -> torch.Tensor:
    out, dim = w.shape
    return w.view(n_heads, 2, out // n_heads // 2, dim).transpose(1, 2).reshape(out, dim)


# ---- config -------------------------------------------------------------------------------------
def _ffn_pair(dim: int, intermediate: int, hint: dict | None) -> tuple[int, float | None]:
    def width(m, f):
        return ModelArgs(dim=dim, n_layers=1, n_heads=1, multiple_of=m, ffn_dim_multiplier=f,
                         max_seq_len=1).ffn_hidden_dim

    if hint and "multiple_of" in hint:
        m, f = hint["multiple_of"], hint.get("ffn_dim_multiplier")
        if width(m, f) == intermediate:
            return m, f
    for m, f in _FFN_CANDIDATES:
        if width(m, f) == intermediate:
            return m, f
    h = int(2 * 4 * dim / 3)
    # the multiplier rounds up to exactly `intermediate`
    return intermediate, (intermediate / h if h > intermediate else None)


def hf_config_to_args(cfg: dict, source: str = "config.json") -> ModelArgs:
    mt = cfg.get("model_type")
    archs = cfg.get("architectures") or []
    if mt not in (None, "llama") or (archs and not any(a.startswith("Llama") for a in archs)):
        raise HerdError(f"{source}: model_type {mt!r} / architectures {archs} is not a Llama model; "
                        f"herd loads LlamaForCausalLM checkpoints")
    for k in ("attention_bias", "mlp_bias"):
        if cfg.get(k):
            raise HerdError(f"{source}: {k}=true, but Llama 3 has no biases")
    if cfg.get("hidden_act", "silu") != "silu":
        raise HerdError(f"{source}: hidden_act {cfg['hidden_act']!r}; Llama 3 uses silu (SwiGLU)")
    try:
        dim, heads = int(cfg["hidden_size"]), int(cfg["num_attention_heads"])
        n_layers, inter = int(cfg["num_hidden_layers"]), int(cfg["intermediate_size"])
        vocab = int(cfg["vocab_size"])
    except KeyError as e:
        raise HerdError(f"{source}: missing field {e.args[0]}") from None
    except (TypeError, ValueError) as e:
        raise HerdError(f"{source}: bad value ({e})") from None
    if cfg.get("head_dim") not in (None, dim // heads):
        raise HerdError(f"{source}: head_dim {cfg['head_dim']} != hidden_size/num_attention_heads "
                        f"({dim // heads}); herd's Llama has head_dim = dim/n_heads")
    rope = cfg.get("rope_parameters") or {}
    scaling = cfg.get("rope_scaling") or {}
    if not rope and scaling:
        rope = scaling
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    theta = rope.get("rope_theta", cfg.get("rope_theta", 10000.0))
    kw = {}
    if rope_type == "llama3":
        kw = dict(use_scaled_rope=True, rope_scale_factor=float(rope.get("factor", 8.0)),
                  rope_low_freq_factor=float(rope.get("low_freq_factor", 1.0)),
                  rope_high_freq_factor=float(rope.get("high_freq_factor", 4.0)),
                  rope_old_context_len=int(rope.get("original_max_position_embeddings", 8192)))
    elif rope_type not in ("default", None):
        raise HerdError(f"{source}: RoPE type {rope_type!r} is not Llama 3's; herd supports default and "
                        "llama3")
    multiple_of, mult = _ffn_pair(dim, inter, cfg.get("herd"))
    try:
        return ModelArgs(dim=dim, n_layers=n_layers, n_heads=heads,
                         n_kv_heads=int(cfg.get("num_key_value_heads") or heads), vocab_size=vocab,
                         multiple_of=multiple_of, ffn_dim_multiplier=mult,
                         norm_eps=float(cfg.get("rms_norm_eps", 1e-6)), rope_theta=float(theta),
                         max_seq_len=int(cfg.get("max_position_embeddings", 8192)),
                         tie_embeddings=bool(cfg.get("tie_word_embeddings", False)), **kw)
    except HerdError as e:
        raise HerdError(f"{source}: {e}") from None


def args_to_hf_config(args: ModelArgs, dtype: torch.dtype = torch.float32, tokenizer=None) -> dict:
    rope = {"rope_type": "default", "rope_theta": args.rope_theta}
    scaling = None
    if args.use_scaled_rope:
        scaling = {"rope_type": "llama3", "factor": args.rope_scale_factor,
                   "low_freq_factor": args.rope_low_freq_factor,
                   "high_freq_factor": args.rope_high_freq_factor,
                   "original_max_position_embeddings": args.rope_old_context_len}
        rope = dict(scaling, rope_theta=args.rope_theta)
    if tokenizer is not None:
        bos, eos = tokenizer.bos_id, [tokenizer.eos_id, tokenizer.eom_id, tokenizer.eot_id]
    elif args.vocab_size == 128256:  # the Llama 3 tokenizer's special ids
        bos, eos = 128000, [128001, 128008, 128009]
    else:
        bos, eos = None, None
    dt = str(dtype).replace("torch.", "")
    return {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "hidden_size": args.dim, "intermediate_size": args.ffn_hidden_dim,
        "num_hidden_layers": args.n_layers, "num_attention_heads": args.n_heads,
        "num_key_value_heads": args.n_kv_heads, "head_dim": args.head_dim, "vocab_size": args.vocab_size,
        "hidden_act": "silu", "rms_norm_eps": args.norm_eps, "max_position_embeddings": args.max_seq_len,
        "rope_theta": args.rope_theta, "rope_scaling": scaling, "rope_parameters": rope,
        "tie_word_embeddings": args.tie_embeddings, "attention_bias": False, "mlp_bias": False,
        "attention_dropout": 0.0, "initializer_range": 0.02, "pretraining_tp": 1, "use_cache": True,
        "bos_token_id": bos, "eos_token_id": eos, "torch_dtype": dt, "dtype": dt,
        "herd": {"multiple_of": args.multiple_of, "ffn_dim_multiplier": args.ffn_dim_multiplier},
    }


# ---- weights ------------------------------------------------------------------------------------
def hf_item(k: str, v: torch.Tensor, args: ModelArgs, source: str) -> tuple[str, torch.Tensor] | None:
    """One HF tensor -> (herd name, tensor in Meta's RoPE layout), or None for a tensor herd drops."""
    if k.endswith("rotary_emb.inv_freq"):  # a buffer some old exports saved; herd recomputes it
        return None
    if k in _TOP_MAP:
        if k == "lm_head.weight" and args.tie_embeddings:
            return None  # some tied exports store lm_head too; the embedding is the weight
        return _TOP_MAP[k], v
    m = _LAYER_RE.match(k)
    if not m or m.group(2) not in _LAYER_MAP:
        raise HerdError(f"{source}: unexpected tensor {k}; not a LlamaForCausalLM checkpoint")
    name = _LAYER_MAP[m.group(2)]
    if name == "attention.wq.weight":
        v = hf_to_meta_rows(v, args.n_heads)
    elif name == "attention.wk.weight":
        v = hf_to_meta_rows(v, args.n_kv_heads)
    return f"layers.{m.group(1)}.{name}", v


def herd_to_hf_state_dict(sd: dict[str, torch.Tensor], args: ModelArgs) -> dict[str, torch.Tensor]:
    hf = {}
    for k, v in sd.items():
        v = v.detach().cpu()
        if k in _TOP_MAP_INV:
            if k == "output.weight" and args.tie_embeddings:
                continue
            hf[_TOP_MAP_INV[k]] = v.contiguous()
            continue
        m = _HERD_LAYER_RE.match(k)
        if not m or m.group(2) not in _LAYER_MAP_INV:
            raise HerdError(f"cannot export tensor {k} to Hugging Face format: not part of a Llama 3 model")
        name = m.group(2)
        if name == "attention.wq.weight":
            v = meta_to_hf_rows(v, args.n_heads)
        elif name == "attention.wk.weight":
            v = meta_to_hf_rows(v, args.n_kv_heads)
        hf[f"model.layers.{m.group(1)}.{_LAYER_MAP_INV[name]}"] = v.contiguous()
    return hf


def _hf_weight_files(p: Path) -> list[Path]:
    for index_name, single in (("model.safetensors.index.json", "model.safetensors"),
                               ("pytorch_model.bin.index.json", "pytorch_model.bin")):
        index = p / index_name
        if index.is_file():
            wm = read_json(index, "weight index").get("weight_map")
            if not isinstance(wm, dict) or not wm:
                raise HerdError(f"{index}: no weight_map; the index file is corrupt")
            files = sorted(set(wm.values()))
            for f in files:
                if not (p / f).is_file():
                    raise HerdError(f"{p / f}: shard listed in {index_name} is missing")
            return [p / f for f in files]
        if (p / single).is_file():
            return [p / single]
    raise HerdError(f"{p}: no model.safetensors, model.safetensors.index.json or pytorch_model.bin beside "
                    f"config.json")


def iter_hf_tensors(path: str | os.PathLike, args: ModelArgs):
    """Yield (herd name, tensor) one file and one tensor at a time (safetensors are memory-mapped)."""
    p = Path(path)
    source = weights_source(p, "hf")
    for f in _hf_weight_files(p):
        if f.suffix != ".safetensors":
            for k, v in torch_load_tensors(f).items():
                if (item := hf_item(k, v, args, str(f))) is not None:
                    yield item
            continue
        for k, v in iter_safetensors(f):
            if (item := hf_item(k, v, args, source)) is not None:
                yield item


def load_hf_state_dict(path: str | os.PathLike) -> tuple[ModelArgs, dict[str, torch.Tensor]]:
    """Read config.json and the weights -> (ModelArgs, state dict in herd's names and layout)."""
    args = read_hf_args(path)
    return args, dict(iter_hf_tensors(path, args))


def read_hf_args(path: str | os.PathLike) -> ModelArgs:
    p = Path(path)
    return hf_config_to_args(read_json(p / "config.json", "config.json"), source=str(p / "config.json"))


def load_hf(path: str | os.PathLike, device="cpu", dtype: torch.dtype | None = None):
    """Load a Hugging Face LlamaForCausalLM directory -> (Transformer, Tokenizer or None). fp32
    unless `dtype` says otherwise; the file's tensors become its parameters (no copy). The tokenizer is the
    tiktoken original/tokenizer.model (Meta's HF repos, herd's export), else a tokenizer.model beside the
    weights (herd's older exports), else a Llama 3 style tokenizer.json, if any."""
    p = Path(path)
    args = read_hf_args(p)
    model = materialize(args, iter_hf_tensors(p, args), weights_source(p, "hf"), device,
                        dtype or torch.float32)
    return model, load_tokenizer_in(p)


def save_hf_state_dict(args: ModelArgs, sd: dict[str, torch.Tensor], path: str | os.PathLike, tokenizer=None,
                       max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES, hf_tokenizer: bool = True,
                       original_weights: bool = False) -> Path:
    """Write config.json + generation_config.json + model.safetensors (or model-0000i-of-0000n.safetensors
    and the index above `max_shard_bytes`) atomically; with a tokenizer also original/tokenizer.model and
    (hf_tokenizer) tokenizer.json + tokenizer_config.json + special_tokens_map.json (~10 s for Llama 3's
    128K vocabulary). `original_weights`: Meta's consolidated.00.pth + params.json under original/ too."""
    from safetensors.torch import save_file

    check_tokenizer_fits(tokenizer, args)
    hf = herd_to_hf_state_dict(sd, args)
    dtype = next(iter(hf.values())).dtype
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for k, v in hf.items():
        nbytes = v.numel() * v.element_size()
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][k] = v
        size += nbytes
    with atomic_dir(path) as tmp:
        cfg = args_to_hf_config(args, dtype=dtype, tokenizer=tokenizer)
        (tmp / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
        if len(shards) == 1:
            save_file(shards[0], str(tmp / "model.safetensors"), metadata={"format": "pt"})
        else:
            n = len(shards)
            weight_map = {}
            for i, part in enumerate(shards, 1):
                name = f"model-{i:05d}-of-{n:05d}.safetensors"
                save_file(part, str(tmp / name), metadata={"format": "pt"})
                weight_map.update({k: name for k in part})
            total = sum(v.numel() * v.element_size() for v in hf.values())
            (tmp / "model.safetensors.index.json").write_text(
                json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2) + "\n")
        gen = {k: cfg[k] for k in ("bos_token_id", "eos_token_id") if cfg[k] is not None}
        if gen:
            (tmp / "generation_config.json").write_text(json.dumps(gen, indent=2) + "\n")
        if original_weights:  # a complete Meta checkpoint, as in Meta's HF repos
            from herd.checkpoint.meta import save_meta_state_dict

            save_meta_state_dict(args, sd, tmp / "original", tokenizer=tokenizer)
        if tokenizer is not None:
            if not original_weights:
                (tmp / "original").mkdir()
                tokenizer.save(tmp / "original" / "tokenizer.model")  # herd's and Meta's (tiktoken) file
            if hf_tokenizer:  # tokenizer.json for transformers' AutoTokenizer
                from herd.checkpoint.hf_tokenizer import save_hf_tokenizer

                save_hf_tokenizer(tokenizer, tmp, model_max_length=args.max_seq_len)
    return Path(path)


def save_hf(model, path: str | os.PathLike, tokenizer=None, max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
            hf_tokenizer: bool = True, original_weights: bool = False) -> Path:
    """Save a herd Transformer as a Hugging Face LlamaForCausalLM directory (Meta's HF repo layout)."""
    return save_hf_state_dict(model.args, model.state_dict(), path, tokenizer=tokenizer,
                              max_shard_bytes=max_shard_bytes, hf_tokenizer=hf_tokenizer,
                              original_weights=original_weights)


__all__ = ["load_hf", "load_hf_state_dict", "read_hf_args", "save_hf", "save_hf_state_dict",
           "hf_config_to_args", "args_to_hf_config", "meta_to_hf_rows", "hf_to_meta_rows"]
