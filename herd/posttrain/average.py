"""Model averaging (paper §4.1.5): "we average models obtained from experiments using various
versions of data or hyperparameters at each RM, SFT, or DPO stage".

Checkpoints are compatible when they have the same model config and the same tensors with the
same shapes; anything else is refused with the first difference named. The average is uniform
unless weights are given (they are normalised to sum to 1), accumulated in float64 (by
herd.train.average, which pretraining's Polyak average shares) and written in fp32 (the dtype
herd.checkpoint.load_model gives). A reward head (reward_head.safetensors) is averaged too when every
checkpoint has one. The tokenizer of the first checkpoint goes with the result.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from herd.errors import HerdError


def average_checkpoints(paths, out, weights=None) -> dict:
    """Average the checkpoints `paths` (any format herd loads) into a herd checkpoint at `out`;
    the tensors are averaged by herd.train.average.average_state_dicts, the one implementation
    pretraining's Polyak average uses too."""
    from herd.checkpoint import load_model, save_herd
    from herd.train.average import average_state_dicts, check_weights

    paths = [str(p) for p in paths]
    if len(paths) < 2:
        raise HerdError("average: give at least two checkpoints")
    weights = check_weights(weights, len(paths))
    total = sum(weights)
    norm = [w / total for w in weights]

    first, tok = load_model(paths[0])
    cfg0 = first.args.to_dict()

    def state_dicts():
        # one checkpoint in memory at a time (besides the first, whose model receives the average)
        yield first.state_dict()
        for p in paths[1:]:
            m, _ = load_model(p)
            cfg = m.args.to_dict()
            diff = [k for k in cfg0 if cfg0[k] != cfg.get(k)]
            if diff:
                k = diff[0]
                raise HerdError(f"average: {p} is not compatible with {paths[0]}: model config field {k} is "
                                f"{cfg.get(k)!r} vs {cfg0[k]!r}")
            yield m.state_dict()
            del m

    avg = average_state_dicts(state_dicts(), weights, names=paths)
    heads = [_head(p) for p in paths]
    with torch.no_grad():
        for name, t in list(first.named_parameters()) + list(first.named_buffers()):
            if name in avg:
                t.copy_(avg[name].to(t.dtype))
    extra = {"posttrain": {"stage": "average", "sources": paths, "weights": norm}}
    save_herd(first, out, tokenizer=tok, extra=extra)
    if all(h is not None for h in heads):
        from safetensors.torch import save_file

        from herd.posttrain.reward import HEAD_FILE

        if len({tuple(h.shape) for h in heads}) != 1:
            raise HerdError("average: the reward heads have different shapes")
        head = average_state_dicts(({"weight": h} for h in heads), weights)["weight"]
        save_file({"weight": head.contiguous()}, str(Path(out) / HEAD_FILE))

        cfg_path = Path(out) / "config.json"
        c = json.loads(cfg_path.read_text())
        c["reward_head"] = HEAD_FILE
        cfg_path.write_text(json.dumps(c, indent=2) + "\n")
    return {"out": str(out), "weights": norm, "sources": paths}


def _head(path):
    from herd.posttrain.reward import HEAD_FILE

    f = Path(path) / HEAD_FILE
    if not f.is_file():
        return None
    from safetensors.torch import load_file

    return load_file(str(f))["weight"]


__all__ = ["average_checkpoints"]
