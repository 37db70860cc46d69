"""Parallelism applied from outside the model (paper §3.3.2), torchtitan-style.

The model file holds no distributed code; these functions are applied to the module tree in a
fixed order: activation checkpointing -> torch.compile per block -> FSDP2 `fully_shard` (data
parallel: parameters, gradients and optimizer state sharded over ranks; gloo on CPU, NCCL on
GPU). Tensor, context and pipeline parallelism slot in the same way (a later issue builds 4D).
Module names, and so state-dict keys, are unchanged by all of them.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    mesh: object = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def all_reduce_sum(self, x: torch.Tensor) -> torch.Tensor:
        if self.world > 1:
            dist.all_reduce(x, op=dist.ReduceOp.SUM)
        return x

    def barrier(self):
        if self.world > 1:
            dist.barrier()


def init_distributed(device_type: str) -> Dist:
    """Join the process group started by torchrun (RANK/WORLD_SIZE in the environment); a plain
    one-process run needs none."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        backend = "nccl" if device_type == "cuda" else "gloo"
        if device_type == "cuda":
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend=backend)
    from torch.distributed.device_mesh import init_device_mesh

    mesh = init_device_mesh(device_type, (world,), mesh_dim_names=("dp",))
    return Dist(rank, world, local_rank, mesh)


def apply_activation_checkpointing(model: nn.Module):
    """Recompute each transformer block in the backward pass instead of storing its activations.
    The block's forward is wrapped in place, so parameter names do not change."""
    from torch.utils.checkpoint import checkpoint

    for block in model.layers:
        fwd = block.forward
        block.forward = functools.partial(checkpoint, fwd, use_reentrant=False)


def apply_compile(model: nn.Module, doc_mask: bool):
    """torch.compile each block in place. With the document mask the attention cuts sequences at
    document boundaries (shapes change per batch), so only the feed-forward part is compiled."""
    for block in model.layers:
        if doc_mask:
            block.feed_forward.compile()
        else:
            block.compile()


def apply_fsdp(model: nn.Module, mesh, param_dtype: torch.dtype = torch.float32):
    """FSDP2: shard every block, then the root (embedding, final norm, output). Parameters are
    kept in fp32; compute in `param_dtype`; gradients reduced in fp32 (§3.3.2 numerics)."""
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    mp = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=torch.float32)
    for i, block in enumerate(model.layers):
        # The last block's parameters are needed again right away in backward: keep them gathered.
        fully_shard(block, mesh=mesh, mp_policy=mp, reshard_after_forward=i < len(model.layers) - 1)
    fully_shard(model, mesh=mesh, mp_policy=mp)
    return model


def full_state_dict(model: nn.Module, optim=None, world: int = 1) -> tuple[dict, dict | None]:
    """Unsharded, CPU, FQN-keyed model (and optimizer) state: the same on any number of ranks."""
    from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict,
                                                         get_optimizer_state_dict)

    opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
    msd = get_model_state_dict(model, options=opts)
    osd = get_optimizer_state_dict(model, optim, options=opts) if optim is not None else None
    return msd, osd


def load_full_state_dict(model: nn.Module, msd: dict, optim=None, osd: dict | None = None):
    from torch.distributed.checkpoint.state_dict import (StateDictOptions, set_model_state_dict,
                                                         set_optimizer_state_dict)

    opts = StateDictOptions(full_state_dict=True)
    set_model_state_dict(model, msd, options=opts)
    if optim is not None and osd is not None:
        set_optimizer_state_dict(model, optim, osd, options=opts)


__all__ = ["Dist", "init_distributed", "apply_activation_checkpointing", "apply_compile", "apply_fsdp",
           "full_state_dict", "load_full_state_dict"]
