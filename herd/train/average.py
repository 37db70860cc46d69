"""Model averaging, the one implementation behind both of the paper's uses:

* pretraining (§3.4.3): the final model is the (Polyak) average of the checkpoints taken during
  annealing (herd.train.trainer);
* post-training (§4.1.5): "we average models obtained from experiments using various versions of
  data or hyperparameters at each RM, SFT, or DPO stage" (herd.posttrain.average, `herd average`).

`average_state_dicts` takes the state dicts as an iterable, so a caller that loads them one at a
time (a generator) holds only the running sum and one checkpoint in memory. The sum is accumulated
in float64: sum_i w_i * sd_i / sum_i w_i, uniform unless weights are given.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from herd.errors import HerdError


def check_weights(weights, n: int, what: str = "average") -> list[float]:
    """`weights` (None = uniform) as floats, one per item, >= 0 with a positive sum."""
    if weights is None:
        return [1.0] * n
    weights = [float(w) for w in weights]
    if len(weights) != n:
        raise HerdError(f"{what}: {len(weights)} weight(s) for {n} checkpoints; give one per checkpoint")
    if any(w < 0 for w in weights) or sum(weights) <= 0:
        raise HerdError(f"{what}: weights must be >= 0 with a positive sum, got {weights}")
    return weights


def average_state_dicts(state_dicts: Iterable[dict], weights=None, *, names=None,
                        dtype: torch.dtype | None = None, what: str = "average") -> dict[str, torch.Tensor]:
    """The weighted mean of `state_dicts` (an iterable; read once, in order).

    weights: one per state dict (None = uniform), normalised by their sum. Every state dict must
    have the same tensor names and shapes as the first; `names` (one per state dict, e.g. paths)
    name the offending one in the error. The result is in `dtype`, or in each tensor's dtype in the
    first state dict when None."""
    sds = iter(state_dicts)
    names = list(names) if names is not None else None
    acc: dict[str, torch.Tensor] = {}
    dtypes: dict[str, torch.dtype] = {}
    shapes: dict[str, tuple] = {}
    weights = None if weights is None else [float(w) for w in weights]
    n = 0
    for n, sd in enumerate(sds, 1):
        if weights is not None and n > len(weights):
            raise HerdError(f"{what}: {len(weights)} weight(s) for more checkpoints; give one per checkpoint")
        w = 1.0 if weights is None else weights[n - 1]
        if n == 1:
            for k, v in sd.items():
                acc[k] = v.detach().double() * w
                dtypes[k], shapes[k] = v.dtype, tuple(v.shape)
            continue
        this = names[n - 1] if names else f"state dict {n}"
        first = names[0] if names else "state dict 1"
        if set(sd) != set(acc):
            odd = min(set(sd) ^ set(acc))
            raise HerdError(f"{what}: {this} is not compatible with {first}: tensor {odd} is in one only")
        for k, v in sd.items():
            if tuple(v.shape) != shapes[k]:
                raise HerdError(f"{what}: {this} is not compatible with {first}: tensor {k} has shape "
                                f"{tuple(v.shape)} vs {shapes[k]}")
            acc[k] += v.detach().double() * w
        del sd
    if n == 0:
        raise HerdError(f"{what}: nothing to average")
    total = sum(check_weights(weights, n, what))
    return {k: (v / total).to(dtype or dtypes[k]) for k, v in acc.items()}


__all__ = ["average_state_dicts", "check_weights"]
