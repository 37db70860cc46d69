"""Llama 3.2 Vision checkpoints (paper §7) in the three layouts herd reads and writes.

- **Meta** (`params.json` + `consolidated.NN.pth`, as Meta's Llama3.2-11B-Vision/original): the
  text fields plus `vision_chunk_size`, `vision_max_num_chunks`, `vision_num_cross_attention_layers`.
  Tensor names are herd's (`vision_model.vision_encoder.*`, `text_model.*`). Model-parallel shards
  (the 90B release has 8) are merged by the text loader's shape-inferring rule. The encoder sizes
  that Meta's code hard-codes (width 1280, ...) are written as `herd_vision` only when they differ.
- **Hugging Face** (`MllamaForConditionalGeneration`, config.json with model_type "mllama" +
  safetensors). HF merges self- and cross-attention layers into one list (`cross_attention_layers`
  = the fusion-schedule positions in the merged list: 3, 8, 13, ... for 11B), concatenates the frozen
  embedding and the 8 learnable rows into `embed_tokens` [vocab+8, dim], permutes only the
  self-attention q/k rows (RoPE layout; cross-attention has no RoPE), stores the patch linear as a
  conv weight [width, 3, p, p] and lays the tile and per-tile positional embeddings out per
  aspect-ratio id ([1 + #ratios, tiles * ...], row 0 = the padding id). Written with the key names
  of Meta's published HF repos (`language_model.model.*`, `vision_model.*`,
  `multi_modal_projector.*`, `language_model.lm_head.weight`, which transformers 5 maps to its own);
  both those and transformers 5's `model.*` names are read.
  HF's `intermediate_layers_indices` are Meta's `return_intermediate` numbers (HF's converter copies
  them); herd gives them Meta's meaning (the hidden state entering that layer) whatever the
  installed transformers does with them (5.25 collects states after each layer: one later).
  The tile grid cells that no aspect ratio uses (e.g. row 3, column 3 of a 4x4 grid) have no place
  in HF's layout: Meta -> HF -> Meta restores every cell a forward pass can read and zeros those.
- **herd** (config.json with format "herd" and a "vision" section + model.safetensors, Meta names).

`herd convert` and `load_model` call `vision_format` first and hand vision checkpoints here.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import torch

from herd.errors import HerdError
from herd.fileio import atomic_dir
from herd.model.args import ModelArgs
from herd.vision.args import VisionArgs

_VISION_PARAMS = ("vision_chunk_size", "vision_max_num_chunks", "vision_num_cross_attention_layers")
_META_CONSTANTS = {"patch_size": 14, "width": 1280, "layers": 32, "heads": 16, "n_global_layers": 8,
                   "mlp_ratio": 4.0,
                       "return_intermediate": [3, 7, 15, 23, 30], "n_learnable_embeddings": 8}


# ---- detection ----------------------------------------------------------------------------------
def _json(p: Path) -> dict | None:
    try:
        d = json.loads(p.read_text())
        return d if isinstance(d, dict) else None
    except (OSError, ValueError):
        return None


def vision_format(path: str | os.PathLike) -> str | None:
    """'herd', 'meta' or 'hf' for a vision checkpoint directory; None for anything else."""
    p = Path(path)
    if not p.is_dir():
        return None
    cfg = _json(p / "config.json") if (p / "config.json").is_file() else None
    if cfg is not None and cfg.get("format") == "herd":
        return "herd" if "vision" in cfg else None
    if (p / "params.json").is_file():
        params = _json(p / "params.json") or {}
        return "meta" if params.get("vision_chunk_size", -1) not in (-1, None) else None
    if cfg is not None and cfg.get("model_type") == "mllama":
        return "hf"
    return None


# ---- configs ------------------------------------------------------------------------------------
def params_to_vision_args(params: dict, source: str = "params.json") -> VisionArgs:
    from herd.checkpoint.meta import params_to_args

    text = params_to_args({k: v for k, v in params.items() if k not in _VISION_PARAMS + ("herd_vision",)},
                          source=source)
    extra = dict(_META_CONSTANTS, **(params.get("herd_vision") or {}))
    try:
        return VisionArgs(text=text, n_cross_layers=int(params["vision_num_cross_attention_layers"]),
                          image_size=int(params["vision_chunk_size"]),
                          max_num_tiles=int(params.get("vision_max_num_chunks", 4)), **extra)
    except KeyError as e:
        raise HerdError(f"{source}: missing {e.args[0]} for a vision model") from None
    except TypeError as e:
        raise HerdError(f"{source}: bad vision parameters ({e})") from None


def vision_args_to_params(a: VisionArgs) -> dict:
    from herd.checkpoint.meta import args_to_params

    p = args_to_params(a.text)
    p.update(vision_chunk_size=a.image_size, vision_max_num_chunks=a.max_num_tiles,
             vision_num_cross_attention_layers=a.n_cross_layers)
    d = a.to_dict()
    own = {k: d[k] for k in _META_CONSTANTS if d[k] != _META_CONSTANTS[k]}
    if own:
        p["herd_vision"] = own
    return p


def hf_cross_layers(a: VisionArgs) -> list[int]:
    """Positions of the cross-attention layers in HF's merged layer list."""
    return [s + i for i, s in enumerate(a.fusion_schedule)]


def vision_args_to_hf_config(a: VisionArgs, dtype: torch.dtype = torch.float32) -> dict:
    from herd.checkpoint.hf import args_to_hf_config

    t = args_to_hf_config(a.text, dtype)
    for k in ("architectures", "tie_word_embeddings", "attention_bias", "mlp_bias", "pretraining_tp",
              "head_dim",
              "torch_dtype", "dtype"):
        t.pop(k, None)
    t.update(model_type="mllama_text_model", num_hidden_layers=a.text.n_layers + a.n_cross_layers,
             cross_attention_layers=hf_cross_layers(a), dropout=0.0)
    for k in ("bos_token_id", "eos_token_id"):  # Llama 3's ids, or none (transformers wants ints if given)
        if t.get(k) is None:
            t.pop(k, None)
    t["pad_token_id"] = 128004 if a.text.vocab_size == 128256 else None  # Llama 3's <|finetune_right_pad_id|>
    v = {"model_type": "mllama_vision_model", "hidden_size": a.width, "hidden_act": "gelu",
         "num_hidden_layers": a.layers, "num_global_layers": a.n_global_layers, "attention_heads": a.heads,
         "num_channels": 3, "intermediate_size": int(a.mlp_ratio * a.width),
         "vision_output_dim": a.vision_output_dim,
         "image_size": a.image_size, "patch_size": a.patch_size, "norm_eps": 1e-5,
         "max_num_tiles": a.max_num_tiles,
         "intermediate_layers_indices": list(a.return_intermediate),
         "supported_aspect_ratios": [list(r) for r in a.supported_aspect_ratios()], "initializer_range": 0.02}
    dt = str(dtype).replace("torch.", "")
    return {"architectures": ["MllamaForConditionalGeneration"], "model_type": "mllama",
            "image_token_index": a.image_token_id, "text_config": t, "vision_config": v, "torch_dtype": dt,
            "dtype": dt, "herd": {"n_learnable_embeddings": a.n_learnable_embeddings}}


def hf_config_to_vision_args(cfg: dict, source: str = "config.json") -> VisionArgs:
    from herd.checkpoint.hf import hf_config_to_args

    t, v = dict(cfg.get("text_config") or {}), dict(cfg.get("vision_config") or {})
    if not t or not v:
        raise HerdError(f"{source}: an mllama config needs text_config and vision_config")
    cross = list(t.get("cross_attention_layers") or [])
    t.update(model_type="llama", num_hidden_layers=int(t.get("num_hidden_layers", 0)) - len(cross))
    t.pop("architectures", None)
    text = hf_config_to_args(t, source=f"{source} (text_config)")
    width = int(v.get("hidden_size", 1280))
    try:
        a = VisionArgs(text=text, n_cross_layers=len(cross), image_size=int(v.get("image_size", 448)),
                       max_num_tiles=int(v.get("max_num_tiles", 4)), patch_size=int(v.get("patch_size", 14)),
                       width=width, layers=int(v.get("num_hidden_layers", 32)),
                       heads=int(v.get("attention_heads", v.get("num_attention_heads", 16))),
                       n_global_layers=int(v.get("num_global_layers", 8)),
                       mlp_ratio=int(v.get("intermediate_size", 4 * width)) / width,
                       return_intermediate=tuple(v.get("intermediate_layers_indices") or (3, 7, 15, 23, 30)),
                       n_learnable_embeddings=int((cfg.get("herd") or {}).get("n_learnable_embeddings", 8)))
    except HerdError as e:
        raise HerdError(f"{source}: {e}") from None
    if cross != hf_cross_layers(a):
        raise HerdError(f"{source}: cross_attention_layers {cross} are not Meta's fusion schedule for "
                        f"{a.text.n_layers} text layers ({hf_cross_layers(a)}); herd builds Meta's layout")
    ratios = v.get("supported_aspect_ratios")
    if ratios is not None and [tuple(r) for r in ratios] != a.supported_aspect_ratios():
        raise HerdError(f"{source}: supported_aspect_ratios {ratios} differ from Meta's order for "
                        f"{a.max_num_tiles} tiles")
    if v.get("hidden_act", "gelu") != "gelu":
        raise HerdError(f"{source}: vision hidden_act {v['hidden_act']!r}; Llama 3.2 Vision uses gelu")
    return a


# ---- HF tensor layout ---------------------------------------------------------------------------
_TEXT_SELF = {
    "self_attn.q_proj.weight": "attention.wq.weight", "self_attn.k_proj.weight": "attention.wk.weight",
    "self_attn.v_proj.weight": "attention.wv.weight", "self_attn.o_proj.weight": "attention.wo.weight",
    "mlp.gate_proj.weight": "feed_forward.w1.weight", "mlp.up_proj.weight": "feed_forward.w3.weight",
    "mlp.down_proj.weight": "feed_forward.w2.weight", "input_layernorm.weight": "attention_norm.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
}
_TEXT_CROSS = {
    "cross_attn.q_proj.weight": "attention.wq.weight", "cross_attn.k_proj.weight": "attention.wk.weight",
    "cross_attn.v_proj.weight": "attention.wv.weight", "cross_attn.o_proj.weight": "attention.wo.weight",
    "cross_attn.q_norm.weight": "attention.q_norm.weight",
    "cross_attn.k_norm.weight": "attention.k_norm.weight",
    "cross_attn_attn_gate": "gate_attn", "cross_attn_mlp_gate": "gate_ffwd",
    "mlp.gate_proj.weight": "feed_forward.w1.weight", "mlp.up_proj.weight": "feed_forward.w3.weight",
    "mlp.down_proj.weight": "feed_forward.w2.weight", "input_layernorm.weight": "attention_norm.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
}
_VIS_LAYER = {
    "self_attn.q_proj.weight": "attn.wq.weight", "self_attn.k_proj.weight": "attn.wk.weight",
    "self_attn.v_proj.weight": "attn.wv.weight", "self_attn.o_proj.weight": "attn.wo.weight",
    "mlp.fc1.weight": "mlp.c_fc.weight", "mlp.fc1.bias": "mlp.c_fc.bias",
    "mlp.fc2.weight": "mlp.c_proj.weight",
    "mlp.fc2.bias": "mlp.c_proj.bias", "input_layernorm.weight": "ln_1.weight",
    "input_layernorm.bias": "ln_1.bias",
    "post_attention_layernorm.weight": "ln_2.weight", "post_attention_layernorm.bias": "ln_2.bias",
    "gate_attn": "gate_attn", "gate_ffn": "gate_ffn",
}
_VIS_TOP = {
    "class_embedding": "class_embedding", "gated_positional_embedding.embedding": "positional_embedding",
    "gated_positional_embedding.gate": "gated_positional_embedding_gate",
    "pre_tile_positional_embedding.gate": "pre_tile_pos_embed.gate",
    "post_tile_positional_embedding.gate": "post_tile_pos_embed.gate",
    "layernorm_pre.weight": "ln_pre.weight", "layernorm_pre.bias": "ln_pre.bias",
    "layernorm_post.weight": "ln_post.weight", "layernorm_post.bias": "ln_post.bias",
}
VE = "vision_model.vision_encoder."
# (HF prefix of the text model, of the vision model, of the projector, lm_head) in the two layouts
_HF_LAYOUTS = {
    "hub": ("language_model.model.", "vision_model.", "multi_modal_projector.",
            "language_model.lm_head.weight"),
    "transformers5": ("model.language_model.", "model.vision_model.", "model.multi_modal_projector.",
                      "lm_head.weight"),
}


def _per_ratio(t: torch.Tensor, a: VisionArgs) -> torch.Tensor:
    """Meta's grid [T, T, n, w] -> HF's per-aspect-ratio rows [1 + #ratios, T*n*w] (row 0 zeros)."""
    T = a.max_num_tiles
    ratios = a.supported_aspect_ratios()
    out = torch.zeros(len(ratios) + 1, T, *t.shape[2:], dtype=t.dtype)
    for i, (h, w) in enumerate(ratios):
        out[i + 1, : h * w] = t[:h, :w].reshape(h * w, *t.shape[2:])
    return out.reshape(len(ratios) + 1, -1)


def _grid(rows: torch.Tensor, a: VisionArgs, shape: tuple[int, ...]) -> torch.Tensor:
    """HF's per-aspect-ratio rows -> Meta's grid; a cell shared by several ratios is taken from the
    largest one (they are equal in any converted checkpoint); unused cells are zero."""
    T = a.max_num_tiles
    rows = rows.reshape(rows.shape[0], T, *shape)
    out = torch.zeros(T, T, *shape, dtype=rows.dtype)
    for i, (h, w) in enumerate(a.supported_aspect_ratios()):
        out[:h, :w] = rows[i + 1, : h * w].reshape(h, w, *shape)
    return out


def herd_to_hf(sd: dict[str, torch.Tensor], a: VisionArgs, layout: str = "hub") -> dict[str, torch.Tensor]:
    from herd.checkpoint.hf import meta_to_hf_rows

    tp, vp, pp, head = _HF_LAYOUTS[layout]
    t = a.text
    sched = a.fusion_schedule
    self_pos = {}  # Meta self layer -> HF merged index
    k = 0
    for i in range(t.n_layers):
        if i in sched:
            k += 1
        self_pos[i] = k
        k += 1
    cross_pos = hf_cross_layers(a)
    inv_self = {v: k for k, v in _TEXT_SELF.items()}
    inv_cross = {v: k for k, v in _TEXT_CROSS.items()}
    inv_vis = {v: k for k, v in _VIS_LAYER.items()}
    inv_top = {v: k for k, v in _VIS_TOP.items()}
    out = {}
    for name, v in sd.items():
        v = v.detach().cpu()
        if name == "text_model.tok_embeddings.weight":
            out[tp + "embed_tokens.weight"] = torch.cat([v,
                                                         sd["text_model.learnable_embedding.weight"].to(v.dtype)])
        elif name == "text_model.learnable_embedding.weight":
            continue
        elif name == "text_model.norm.weight":
            out[tp + "norm.weight"] = v
        elif name == "text_model.output.weight":
            out[head] = v
        elif m := re.fullmatch(r"text_model\.layers\.(\d+)\.(.+)", name):
            key = inv_self[m.group(2)]
            if key == "self_attn.q_proj.weight":
                v = meta_to_hf_rows(v, t.n_heads)
            elif key == "self_attn.k_proj.weight":
                v = meta_to_hf_rows(v, t.n_kv_heads)
            out[f"{tp}layers.{self_pos[int(m.group(1))]}.{key}"] = v
        elif m := re.fullmatch(r"text_model\.cross_attention_layers\.(\d+)\.(.+)", name):
            out[f"{tp}layers.{cross_pos[int(m.group(1))]}.{inv_cross[m.group(2)]}"] = v
        elif name == "vision_model.vision_projection.weight":
            out[pp + "weight"] = v
        elif name == "vision_model.vision_projection.bias":
            out[pp + "bias"] = v
        elif name == VE + "conv1._linear.weight":
            out[vp + "patch_embedding.weight"] = v.reshape(a.width, 3, a.patch_size, a.patch_size)
        elif name == VE + "gated_positional_embedding":
            out[vp + "gated_positional_embedding.tile_embedding.weight"] = _per_ratio(v, a)
        elif name in (VE + "pre_tile_pos_embed.embedding", VE + "post_tile_pos_embed.embedding"):
            which = "pre" if ".pre_" in name else "post"
            out[f"{vp}{which}_tile_positional_embedding.embedding.weight"] = _per_ratio(v, a)
        elif m := re.fullmatch(re.escape(VE) + r"(transformer|global_transformer)\.resblocks\.(\d+)\.(.+)",
                               name):
            out[f"{vp}{m.group(1)}.layers.{m.group(2)}.{inv_vis[m.group(3)]}"] = v
        elif name.startswith(VE) and name[len(VE):] in inv_top:
            out[vp + inv_top[name[len(VE):]]] = v
        else:
            raise HerdError(f"unexpected tensor {name} in a vision model's state dict")
    return out


def hf_to_herd(items, a: VisionArgs, source: str) -> dict[str, torch.Tensor]:
    """(HF name, tensor) pairs in either layout -> herd's state dict."""
    from herd.checkpoint.hf import hf_to_meta_rows

    t = a.text
    cross_pos = hf_cross_layers(a)
    meta_self = {}
    k = 0
    for i in range(t.n_layers):
        if i in a.fusion_schedule:
            k += 1
        meta_self[k] = i
        k += 1
    out = {}
    for name, v in items:
        tp = vp = pp = head = None
        for lay in _HF_LAYOUTS.values():
            if name.startswith((lay[0], lay[1], lay[2])) or name == lay[3]:
                tp, vp, pp, head = lay
                break
        if tp is None:
            raise HerdError(f"{source}: unexpected tensor {name}; not an MllamaForConditionalGeneration "
                            "checkpoint")
        if name == head:
            out["text_model.output.weight"] = v
        elif name == tp + "embed_tokens.weight":
            V = t.vocab_size
            if v.shape[0] != V + a.n_learnable_embeddings:
                raise HerdError(f"{source}: {name} has {v.shape[0]} rows; expected vocab_size + "
                                f"{a.n_learnable_embeddings} = {V + a.n_learnable_embeddings}")
            out["text_model.tok_embeddings.weight"] = v[:V].clone()
            out["text_model.learnable_embedding.weight"] = v[V:].clone()
        elif name == tp + "norm.weight":
            out["text_model.norm.weight"] = v
        elif name.endswith("rotary_emb.inv_freq"):
            continue
        elif m := re.fullmatch(re.escape(tp) + r"layers\.(\d+)\.(.+)", name):
            i, rest = int(m.group(1)), m.group(2)
            if i in cross_pos:
                if rest not in _TEXT_CROSS:
                    raise HerdError(f"{source}: unexpected tensor {name} in a cross-attention layer")
                out[f"text_model.cross_attention_layers.{cross_pos.index(i)}.{_TEXT_CROSS[rest]}"] = v
            else:
                if rest not in _TEXT_SELF or i not in meta_self:
                    raise HerdError(f"{source}: unexpected tensor {name}")
                if rest == "self_attn.q_proj.weight":
                    v = hf_to_meta_rows(v, t.n_heads)
                elif rest == "self_attn.k_proj.weight":
                    v = hf_to_meta_rows(v, t.n_kv_heads)
                out[f"text_model.layers.{meta_self[i]}.{_TEXT_SELF[rest]}"] = v
        elif name == pp + "weight":
            out["vision_model.vision_projection.weight"] = v
        elif name == pp + "bias":
            out["vision_model.vision_projection.bias"] = v
        elif name == vp + "patch_embedding.weight":
            out[VE + "conv1._linear.weight"] = v.reshape(v.shape[0], -1)
        elif name == vp + "gated_positional_embedding.tile_embedding.weight":
            out[VE + "gated_positional_embedding"] = _grid(v, a, (a.n_patches, a.width))
        elif m := re.fullmatch(re.escape(vp) + r"(pre|post)_tile_positional_embedding\.embedding\.weight",
                               name):
            out[f"{VE}{m.group(1)}_tile_pos_embed.embedding"] = _grid(v, a, (1, a.width))
        elif m := re.fullmatch(re.escape(vp) + r"(transformer|global_transformer)\.layers\.(\d+)\.(.+)",
                               name):
            if m.group(3) not in _VIS_LAYER:
                raise HerdError(f"{source}: unexpected tensor {name}")
            out[f"{VE}{m.group(1)}.resblocks.{m.group(2)}.{_VIS_LAYER[m.group(3)]}"] = v
        elif name[len(vp):] in _VIS_TOP:
            out[VE + _VIS_TOP[name[len(vp):]]] = v
        else:
            raise HerdError(f"{source}: unexpected tensor {name}; not an MllamaForConditionalGeneration "
                            "checkpoint")
    return out


# ---- reading ------------------------------------------------------------------------------------
def check_vision_state_dict(a: VisionArgs, sd: dict, source: str) -> None:
    from herd.vision.model import VisionLlama

    own = VisionLlama.build(a, device="meta").state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    if missing:
        raise HerdError(f"{source}: missing tensor(s) "
                        f"{', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''} for this vision "
                        "model config")
    if unexpected:
        raise HerdError(f"{source}: unexpected tensor(s) {', '.join(unexpected[:3])}: checkpoint and config "
                        "do not match")
    for k, v in sd.items():
        if tuple(v.shape) != tuple(own[k].shape):
            raise HerdError(f"{source}: tensor {k} has shape {tuple(v.shape)}, the model config expects "
                            f"{tuple(own[k].shape)}")


def read_vision_args(path: str | os.PathLike) -> VisionArgs:
    p = Path(path)
    fmt = vision_format(p)
    if fmt == "herd":
        cfg = _json(p / "config.json")
        return VisionArgs.from_dict({**cfg["vision"], "text": ModelArgs.from_dict(cfg["model"])})
    if fmt == "meta":
        from herd.checkpoint.common import read_json

        params = read_json(p / "params.json", "params.json")
        if params.get("vocab_size") in (-1, None):
            from herd.checkpoint.common import torch_load_tensors
            from herd.checkpoint.meta import shard_paths

            files = shard_paths(p)
            emb = torch_load_tensors(files[0])["text_model.tok_embeddings.weight"]
            params = dict(params, vocab_size=emb.shape[0] * len(files))
        return params_to_vision_args(params, str(p / "params.json"))
    if fmt == "hf":
        from herd.checkpoint.common import read_json

        return hf_config_to_vision_args(read_json(p / "config.json"), str(p / "config.json"))
    raise HerdError(f"{p}: not a vision checkpoint")


def load_vision_state_dict(path: str | os.PathLike) -> tuple[VisionArgs, dict[str, torch.Tensor]]:
    """(VisionArgs, state dict in herd's names, tensors in their stored dtype) of any layout."""
    from herd.checkpoint.common import safetensors_load, weights_source

    p = Path(path)
    fmt = vision_format(p)
    a = read_vision_args(p)
    if fmt == "herd":
        f = p / "model.safetensors"
        if not f.is_file():
            raise HerdError(f"{f}: not found (the herd checkpoint is incomplete)")
        sd = safetensors_load(f)
    elif fmt == "meta":
        from herd.checkpoint.common import torch_load_tensors
        from herd.checkpoint.meta import _merge, shard_paths

        files = shard_paths(p)
        shards = [torch_load_tensors(f) for f in files]
        from herd.vision.model import VisionLlama

        full = {k: tuple(v.shape) for k, v in VisionLlama.build(a, device="meta").state_dict().items()}
        source = weights_source(p, "meta")
        sd = {k: _merge(k, [s[k] for s in shards], full.get(k), a.text.n_kv_heads, a.text.head_dim, source)
              for k in shards[0] if k != "rope.freqs"}
    else:
        from herd.checkpoint.common import iter_safetensors
        from herd.checkpoint.hf import _hf_weight_files

        items = []
        for f in _hf_weight_files(p):
            items.extend(iter_safetensors(f))
        sd = hf_to_herd(items, a, weights_source(p, "hf"))
    check_vision_state_dict(a, sd, weights_source(p, fmt))
    return a, sd


def load_vision(path: str | os.PathLike, device="cpu", dtype: torch.dtype | None = None):
    """Load a vision checkpoint of any layout -> (VisionLlama, Tokenizer or None)."""
    from herd.vision.model import VisionLlama

    p = Path(path)
    a, sd = load_vision_state_dict(p)
    model = VisionLlama.build(a, device="meta")
    dt = dtype or torch.float32
    model.load_state_dict({k: v.to(device=device, dtype=dt) for k, v in sd.items()}, strict=True, assign=True)
    model.text_model.reset_rope()
    return model, _tokenizer_of(p)


# ---- writing ------------------------------------------------------------------------------------
def _order(a: VisionArgs, sd: dict) -> dict:
    from herd.vision.model import VisionLlama

    order = list(VisionLlama.build(a, device="meta").state_dict())
    return {k: sd[k] for k in order if k in sd} | {k: v for k, v in sd.items() if k not in order}


def save_vision_state_dict(a: VisionArgs, sd: dict[str, torch.Tensor], path: str | os.PathLike, to: str,
                           tokenizer=None, extra: dict | None = None) -> Path:
    """Write a vision model as 'herd', 'meta' or 'hf', atomically (one shard; tensors keep their
    dtype and bits)."""
    from herd.checkpoint.common import check_tokenizer_fits

    check_tokenizer_fits(tokenizer, a.text)
    check_vision_state_dict(a, sd, "state dict")
    sd = _order(a, {k: v.detach().cpu().contiguous() for k, v in sd.items()})
    with atomic_dir(path) as tmp:
        if to == "herd":
            from safetensors.torch import save_file

            save_file(sd, str(tmp / "model.safetensors"), metadata={"format": "pt"})
            vis = a.to_dict()
            vis.pop("text")
            cfg = {"format": "herd", "version": 1, "model": a.text.to_dict(), "vision": vis,
                   "dtype": str(next(iter(sd.values())).dtype).replace("torch.", ""), "tokenizer": None}
            if tokenizer is not None:
                tokenizer.save(tmp / "tokenizer.model")
                cfg["tokenizer"] = "tokenizer.model"
            if extra:
                cfg.update(extra)
            (tmp / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
        elif to == "meta":
            (tmp / "params.json").write_text(json.dumps(vision_args_to_params(a)))
            torch.save(sd, tmp / "consolidated.00.pth")
            if tokenizer is not None:
                tokenizer.save(tmp / "tokenizer.model")
        elif to == "hf":
            from safetensors.torch import save_file

            hf = herd_to_hf(sd, a)
            dt = next(iter(hf.values())).dtype
            save_file(hf, str(tmp / "model.safetensors"), metadata={"format": "pt"})
            (tmp / "config.json").write_text(json.dumps(vision_args_to_hf_config(a, dt), indent=2) + "\n")
            if tokenizer is not None:
                from herd.checkpoint.hf_tokenizer import save_hf_tokenizer

                save_hf_tokenizer(tokenizer, tmp, model_max_length=a.text.max_seq_len)
                (tmp / "original").mkdir(exist_ok=True)
                tokenizer.save(tmp / "original" / "tokenizer.model")
        else:
            raise HerdError(f"unknown target format {to!r}; choose herd, hf or meta")
    return Path(path)


def save_vision(model, path, to: str = "herd", tokenizer=None, extra: dict | None = None) -> Path:
    return save_vision_state_dict(model.args, model.state_dict(), path, to, tokenizer=tokenizer, extra=extra)


def convert_vision(src: Path, dst: Path, to: str, *, dtype=None, shards: int = 1, tokenizer=None,
                   log=print) -> Path:
    """`herd convert` for a vision checkpoint: renamed/re-laid-out tensors, bits kept unless `dtype`."""
    from herd.checkpoint.common import parse_dtype

    if shards != 1:
        raise HerdError("vision checkpoints are written as one model-parallel shard; drop --shards")
    log(f"reading {vision_format(src)} vision checkpoint {src}")
    a, sd = load_vision_state_dict(src)
    if tokenizer is not None:
        from herd.checkpoint.tokenizer_files import tokenizer_from_spec

        tok = tokenizer_from_spec(tokenizer)
    else:
        tok = _tokenizer_of(src)
    dt = parse_dtype(dtype)
    if dt is not None:
        sd = {k: v.to(dt) for k, v in sd.items()}
    log(f"writing {to} vision checkpoint {dst} ({len(sd)} tensors)")
    return save_vision_state_dict(a, sd, dst, to, tokenizer=tok)


def _tokenizer_of(p: Path):
    from herd.checkpoint.tokenizer_files import load_tokenizer_beside, load_tokenizer_in

    fmt = vision_format(p)
    if fmt == "herd":
        cfg = _json(p / "config.json")
        if cfg.get("tokenizer"):
            from herd.tokenizer import Tokenizer

            return Tokenizer.load(p / cfg["tokenizer"])
        return None
    return load_tokenizer_beside(p) if fmt == "meta" else load_tokenizer_in(p)


__all__ = [
    "convert_vision",
    "herd_to_hf",
    "hf_config_to_vision_args",
    "hf_to_herd",
    "load_vision",
    "load_vision_state_dict",
    "params_to_vision_args",
    "read_vision_args",
    "save_vision",
    "save_vision_state_dict",
    "vision_args_to_hf_config",
    "vision_args_to_params",
    "vision_format",
]
