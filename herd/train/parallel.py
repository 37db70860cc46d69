"""Parallelism applied from outside the model (paper §3.3.2), torchtitan-style.

The model file holds no distributed code; these functions are applied to the module tree in a
fixed order: activation checkpointing -> torch.compile per block -> FSDP2 `fully_shard` (data
parallel: parameters, gradients and optimizer state sharded over ranks; gloo on CPU, NCCL on
GPU). Tensor, context and pipeline parallelism slot in the same way (a later issue builds 4D).
Module names, and so state-dict keys, are unchanged by all of them.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import warnings
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

    def broadcast_object(self, obj):
        """Rank 0's `obj` (any picklable value) on every rank."""
        if self.world > 1:
            box = [obj]
            dist.broadcast_object_list(box, src=0)
            obj = box[0]
        return obj


def init_distributed(device_type: str) -> Dist:
    """Join the process group started by torchrun (RANK/WORLD_SIZE in the environment); a plain
    one-process run needs none."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if device_type == "cuda":  # also when the caller made the process group: FSDP2 uses the current device
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo")
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
    try:
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
    except ImportError:  # torch 2.5
        from torch.distributed._composable.fsdp import MixedPrecisionPolicy, fully_shard

    mp = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=torch.float32)
    for i, block in enumerate(model.layers):
        # The last block's parameters are needed again right away in backward: keep them gathered.
        fully_shard(block, mesh=mesh, mp_policy=mp, reshard_after_forward=i < len(model.layers) - 1)
    fully_shard(model, mesh=mesh, mp_policy=mp)
    return model


def materialize_sharded(model: nn.Module, device, seed: int | None) -> nn.Module:
    """For a model built on the meta device and sharded with `apply_fsdp`: allocate this rank's
    shards on `device` (no rank ever holds the whole model) and fill them with exactly the weights
    `Transformer.build(args, device, seed=seed)` gives the whole model. Each parameter is drawn
    whole on every rank, one at a time in `init_plan` order (the same random stream as one
    process), and each rank keeps its shard: memory is one full parameter at a time."""
    from torch.distributed.tensor import DTensor, distribute_tensor

    model.to_empty(device=device)
    model.reset_rope()
    if seed is not None:
        torch.manual_seed(seed)
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, fn in model.init_plan():
            p = params[name]
            full = torch.empty(p.shape, dtype=p.dtype, device=p.device)
            fn(full)
            if isinstance(p, DTensor):
                try:  # every rank holds the same full tensor: each takes its shard, no communication
                    shard = distribute_tensor(full, p.device_mesh, p.placements, src_data_rank=None)
                except TypeError:  # torch < 2.7: scattered from rank 0 (the same values)
                    shard = distribute_tensor(full, p.device_mesh, p.placements)
                p.to_local().copy_(shard.to_local())
            else:
                p.copy_(full)
            del full
    return model


@contextlib.contextmanager
def _one_process_quiet():
    """torch.distributed.checkpoint warns that it assumes one process when no process group is up:
    that is what a one-process run means, so the warning is silenced there."""
    with warnings.catch_warnings():
        if not (dist.is_available() and dist.is_initialized()):
            warnings.filterwarnings("ignore", message=r"torch\.distributed is (disabled, )?unavailable")
        yield


def save_sharded(model: nn.Module, optim, path, dist_: "Dist") -> dict[str, str]:
    """Model and optimizer state with torch.distributed.checkpoint: each rank writes its own shards
    into directory `path` (no rank gathers the whole model: how a 405B run checkpoints). Each rank
    then hashes the shard files it wrote (rank 0 also the metadata); returns {file name: sha256}
    (complete on rank 0)."""
    from pathlib import Path

    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_optimizer_state_dict

    from herd.train.checkpoint import sha256_file

    path = Path(path)
    state = {"model": get_model_state_dict(model), "optim": get_optimizer_state_dict(model, optim)}
    with _one_process_quiet():
        dcp.save(state, checkpoint_id=str(path))
    dist_.barrier()
    own = re.compile(rf"^__{dist_.rank}_\d+\.distcp$")
    names = sorted(f.name for f in path.iterdir() if f.is_file())
    mine = {n: sha256_file(path / n) for n in names
            if own.match(n) or (dist_.is_main and not re.match(r"^__\d+_\d+\.distcp$", n))}
    if dist_.world > 1:
        parts = [None] * dist_.world
        dist.all_gather_object(parts, mine)
        mine = {k: v for part in parts for k, v in part.items()}
    return mine


def load_sharded(model: nn.Module, optim, path):
    """Load a `save_sharded` checkpoint into this run's model and optimizer, whatever its number of
    ranks (torch.distributed.checkpoint reshards; a one-process run reads it too)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import (get_model_state_dict, get_optimizer_state_dict,
                                                         set_model_state_dict, set_optimizer_state_dict)

    state = {"model": get_model_state_dict(model)}
    if optim is not None:
        state["optim"] = get_optimizer_state_dict(model, optim)
    with _one_process_quiet():
        dcp.load(state, checkpoint_id=str(path))
    set_model_state_dict(model, state["model"])
    if optim is not None:
        set_optimizer_state_dict(model, optim, state["optim"])


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
           "materialize_sharded", "save_sharded", "load_sharded", "full_state_dict", "load_full_state_dict"]
