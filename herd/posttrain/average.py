"""Model averaging (paper §4.1.5): "we average models obtained from experiments using various
versions of data or hyperparameters at each RM, SFT, or DPO stage".

Checkpoints are compatible when they have the same model config and the same tensors with the
same shapes; anything else is refused with the first difference named. The average is uniform
unless weights are given (they are normalised to sum to 1), accumulated in fp32 and written in the
first checkpoint's dtype. A reward head (reward_head.safetensors) is averaged too when every
checkpoint has one. The tokenizer of the first checkpoint goes with the result.
"""

from __future__ import annotations

from pathlib import Path

import torch

from herd.errors import HerdError


def _load(path):
    from herd.checkpoint import load_model

    model, tok = load_model(path)
    return model, tok


def average_checkpoints(paths, out, weights=None) -> dict:
    from herd.checkpoint import save_herd

    paths = [str(p) for p in paths]
    if len(paths) < 2:
        raise HerdError("average: give at least two checkpoints")
    if weights is None:
        weights = [1.0] * len(paths)
    weights = [float(w) for w in weights]
    if len(weights) != len(paths):
        raise HerdError(f"average: {len(weights)} weight(s) for {len(paths)} checkpoints; give one per checkpoint")
    if any(w < 0 for w in weights) or sum(weights) <= 0:
        raise HerdError(f"average: weights must be >= 0 with a positive sum, got {weights}")
    total = sum(weights)
    weights = [w / total for w in weights]

    first, tok = _load(paths[0])
    cfg0 = first.args.to_dict()
    sd0 = first.state_dict()
    acc = {k: v.float() * weights[0] for k, v in sd0.items()}
    heads = [_head(paths[0])]
    for p, w in zip(paths[1:], weights[1:]):
        m, _ = _load(p)
        cfg = m.args.to_dict()
        diff = [k for k in cfg0 if cfg0[k] != cfg.get(k)]
        if diff:
            k = diff[0]
            raise HerdError(f"average: {p} is not compatible with {paths[0]}: model config field {k} is "
                            f"{cfg.get(k)!r} vs {cfg0[k]!r}")
        sd = m.state_dict()
        if set(sd) != set(sd0):
            odd = sorted(set(sd) ^ set(sd0))[0]
            raise HerdError(f"average: {p} is not compatible with {paths[0]}: tensor {odd} is in one only")
        for k, v in sd.items():
            if v.shape != sd0[k].shape:
                raise HerdError(f"average: {p} is not compatible with {paths[0]}: tensor {k} has shape "
                                f"{tuple(v.shape)} vs {tuple(sd0[k].shape)}")
            acc[k] += v.float() * w
        heads.append(_head(p))
        del m, sd
    with torch.no_grad():
        for name, t in list(first.named_parameters()) + list(first.named_buffers()):
            if name in acc:
                t.copy_(acc[name].to(t.dtype))
    extra = {"posttrain": {"stage": "average", "sources": paths, "weights": weights}}
    save_herd(first, out, tokenizer=tok, extra=extra)
    if all(h is not None for h in heads):
        from safetensors.torch import save_file

        from herd.posttrain.reward import HEAD_FILE

        if len({tuple(h.shape) for h in heads}) != 1:
            raise HerdError("average: the reward heads have different shapes")
        head = sum(h.float() * w for h, w in zip(heads, weights))
        save_file({"weight": head.contiguous()}, str(Path(out) / HEAD_FILE))
        import json

        cfg_path = Path(out) / "config.json"
        c = json.loads(cfg_path.read_text())
        c["reward_head"] = HEAD_FILE
        cfg_path.write_text(json.dumps(c, indent=2) + "\n")
    return {"out": str(out), "weights": weights, "sources": paths}


def _head(path):
    from herd.posttrain.reward import HEAD_FILE

    f = Path(path) / HEAD_FILE
    if not f.is_file():
        return None
    from safetensors.torch import load_file

    return load_file(str(f))["weight"]


__all__ = ["average_checkpoints"]
