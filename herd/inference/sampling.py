"""Choosing the next token from logits (paper §6 inference; the sampling used for rejection sampling
in §4.2.2 and for evaluation): greedy, temperature, top-k and top-p (nucleus).

Top-p keeps the smallest set of most likely tokens whose probability mass is >= p (Holtzman et
al.; the token that crosses p is kept), as Meta's `sample_top_p` and HF's `TopPLogitsWarper` do.
Sampling draws through the exponential race (argmax of p_i / E_i, E_i ~ Exp(1)), which gives
exactly the categorical distribution p and needs no CPU/GPU synchronisation.
"""

from __future__ import annotations

import math

import torch

from herd.errors import HerdError


def check_sampling(temperature: float, top_p: float, top_k: int) -> None:
    """One clear line for a sampling value that makes no sense."""
    if not isinstance(temperature, (int, float)) or isinstance(temperature, bool) \
            or not math.isfinite(temperature) or temperature < 0:
        raise HerdError(f"temperature must be a number >= 0 (0 = greedy), got {temperature!r}")
    if not isinstance(top_p, (int, float)) or isinstance(top_p, bool) or not (0 < top_p <= 1):
        raise HerdError(f"top_p must be in (0, 1], got {top_p!r}")
    if not isinstance(top_k, int) or isinstance(top_k, bool) or top_k < 0:
        raise HerdError(f"top_k must be an integer >= 0 (0 = off), got {top_k!r}")


def filter_probs(logits: torch.Tensor, temperature: float, top_p: float = 1.0,
                 top_k: int = 0) -> torch.Tensor:
    """The distribution sampling draws from: softmax(logits / T) restricted to the top-k tokens
    and to the top-p nucleus, renormalised. logits: [..., V] -> probs [..., V] (fp32)."""
    logits = logits.float() / max(temperature, 1e-5)
    if top_k and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    if top_p < 1.0:
        sorted_p, idx = torch.sort(probs, dim=-1, descending=True)
        mass_before = torch.cumsum(sorted_p, dim=-1) - sorted_p
        sorted_p = sorted_p.masked_fill(mass_before >= top_p, 0.0)  # the token crossing p stays
        probs = torch.zeros_like(probs).scatter_(-1, idx, sorted_p)
        probs = probs / probs.sum(-1, keepdim=True)
    return probs


def sample_from(probs: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """One draw per row of `probs` [..., V] -> ids [...] (long)."""
    # clamp: a draw of exactly 0 would give 0/0 = NaN for a filtered token, and argmax picks NaN
    e = torch.empty_like(probs).exponential_(1.0, generator=generator).clamp_min_(1e-30)
    return torch.argmax(probs / e, dim=-1)


def sample(logits: torch.Tensor, temperature: float = 0.0, top_p: float = 1.0, top_k: int = 0,
           generator: torch.Generator | None = None) -> torch.Tensor:
    """Next ids [B] from logits [B, V]; temperature 0 is greedy (argmax, first index on ties)."""
    if temperature == 0:
        return torch.argmax(logits, dim=-1)
    return sample_from(filter_probs(logits, temperature, top_p, top_k), generator)


__all__ = ["check_sampling", "filter_probs", "sample_from", "sample"]
