"""LoRA (low-rank adapters) for SFT and DPO, an option beside full fine-tuning (paper §4.1 fine-tunes
fully; LoRA is the usual way to post-train on one small machine).

A target linear layer W keeps its weight frozen and gains y = W x + (alpha / rank) * B A x with
A [rank, in] (Kaiming-uniform, as in the LoRA paper and peft) and B [out, rank] (zeros), so a fresh
adapter changes nothing. Dropout is 0. Only A and B receive gradients. `merge_lora` folds
W + (alpha / rank) B A back into a plain `nn.Linear`, so the exported checkpoint has Meta's tensor
names and no adapter code is needed to run it.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from herd.errors import HerdError

TARGETS = ("wq", "wk", "wv", "wo", "w1", "w2", "w3", "output")
DEFAULT_TARGETS = ("wq", "wk", "wv", "wo", "w1", "w2", "w3")


class LoRALinear(nn.Linear):
    """An nn.Linear with a low-rank adapter. Its `weight` keeps the base name, so a state dict of
    the wrapped model still loads base weights by Meta's names."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float):
        nn.Module.__init__(self)
        self.in_features, self.out_features = base.in_features, base.out_features
        self.weight = base.weight
        self.bias = base.bias
        self.weight.requires_grad_(False)
        self.rank, self.alpha, self.scale = rank, alpha, alpha / rank
        dev, dt = base.weight.device, base.weight.dtype
        self.lora_A = nn.Parameter(torch.empty(rank, self.in_features, device=dev, dtype=dt))
        self.lora_B = nn.Parameter(torch.zeros(self.out_features, rank, device=dev, dtype=dt))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (F.linear(x, self.weight, self.bias)
                + F.linear(F.linear(x, self.lora_A), self.lora_B) * self.scale)

    def merged(self) -> nn.Linear:
        lin = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None,
                        device=self.weight.device, dtype=self.weight.dtype)
        with torch.no_grad():
            delta = (self.lora_B.float() @ self.lora_A.float()) * self.scale
            lin.weight.copy_((self.weight.float() + delta).to(self.weight.dtype))
            if self.bias is not None:
                lin.bias.copy_(self.bias)
        return lin


def parse_targets(targets) -> tuple[str, ...]:
    if isinstance(targets, str):
        targets = [t.strip() for t in targets.split(",") if t.strip()]
    targets = tuple(targets)
    bad = [t for t in targets if t not in TARGETS]
    if bad or not targets:
        raise HerdError(f"LoRA target module(s) {', '.join(bad) or '(none)'} unknown; choose from "
                        f"{', '.join(TARGETS)}")
    return targets


def apply_lora(model: nn.Module, rank: int, alpha: float = 16.0, targets=DEFAULT_TARGETS) -> list[str]:
    """Freeze every parameter of `model` and put adapters on the named linear layers. Returns the
    names of the wrapped modules."""
    if not isinstance(rank, int) or rank <= 0:
        raise HerdError(f"LoRA rank must be a positive integer, got {rank!r}")
    if alpha <= 0:
        raise HerdError(f"LoRA alpha must be positive, got {alpha!r}")
    targets = parse_targets(targets)
    if "output" in targets and getattr(getattr(model, "args", None), "tie_embeddings", False):
        raise HerdError("LoRA on 'output' is not supported for a model with tied embeddings; drop it from "
                        "targets")
    for p in model.parameters():
        p.requires_grad_(False)
    wrapped = []
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            if child_name in targets and type(child) is nn.Linear:
                setattr(module, child_name, LoRALinear(child, rank, alpha))
                wrapped.append(f"{name}.{child_name}" if name else child_name)
    if not wrapped:
        raise HerdError(f"no linear layer named {', '.join(targets)} in the model; nothing to adapt")
    return wrapped


def lora_parameters(model: nn.Module) -> list[nn.Parameter]:
    return [p for n, p in model.named_parameters() if n.endswith(("lora_A", "lora_B"))]


def has_lora(model: nn.Module) -> bool:
    return any(isinstance(m, LoRALinear) for m in model.modules())


def merge_lora(model: nn.Module) -> nn.Module:
    """Fold every adapter into its weight (in place) and make all parameters trainable again."""
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, LoRALinear):
                setattr(module, child_name, child.merged())
    for p in model.parameters():
        p.requires_grad_(True)
    return model


__all__ = ["LoRALinear", "apply_lora", "merge_lora", "lora_parameters", "has_lora", "parse_targets",
           "TARGETS", "DEFAULT_TARGETS"]
