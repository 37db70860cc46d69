"""Parallelism applied from outside the model (paper §3.3.2), torchtitan-style.

The model file holds no distributed code. `parallelize(model, dist, ...)` applies, in a fixed
order, what the run asks for: activation checkpointing -> torch.compile per block -> FSDP2
`fully_shard` (data parallel: parameters, gradients and optimizer state sharded over ranks; gloo
on CPU, NCCL on GPU) -> memory for this rank's shards, initialised as one process would. FSDP2 is
applied on one process too (degree 1, as torchtitan does), so the trainer has a single code path
for any world size. Tensor, context and pipeline parallelism go into the same function (4D).
Module names, and so state-dict keys, are unchanged by all of them.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from herd.errors import HerdError


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


def resolve_device(device="auto", dtype="auto", shapes=None, info: dict | None = None,
                   kind: str = "train") -> tuple[torch.device, torch.dtype]:
    """(torch.device, compute dtype) from the configs' strings: device "auto" | "cpu" | "cuda" |
    "cuda:N", dtype (the precision) "auto" | "float32"/"fp32" | "bfloat16"/"bf16" | "float16"/"fp16"
    (or a torch.dtype). "auto" is bf16 on a GPU and, on a CPU, what herd.precision's probe of the
    matmul `shapes` (dim, hidden, tokens; default a ~35M-param model's) picks: bf16 where the CPU's
    matrix engine makes it faster, else fp32. `info` (a dict) receives precision, reason and peak.
    Anything else, or a GPU that is not there, is a HerdError."""
    from herd.checkpoint.common import parse_dtype  # torch-free, light
    from herd.precision import parse_precision, resolve_precision

    dev = str(device or "auto").strip().lower()
    if dev == "auto":
        dev = "cuda" if torch.cuda.is_available() else "cpu"
    if dev != "cpu" and not (dev == "cuda" or (dev.startswith("cuda:") and dev[5:].isdigit())):
        raise HerdError(f"device {device!r}: use auto, cpu, cuda or cuda:N")
    if dev.startswith("cuda"):
        if not torch.cuda.is_available():
            raise HerdError(f"device {device!r} but no CUDA GPU is available; use device cpu (or auto)")
        idx = int(dev[5:]) if ":" in dev else 0
        if idx >= torch.cuda.device_count():
            raise HerdError(f"device {device!r} but only {torch.cuda.device_count()} CUDA GPU(s) are visible")
    d = torch.device(dev)
    if isinstance(dtype, torch.dtype):
        dt = dtype
    elif str(dtype or "auto").lower() == "auto":
        dt, reason, peak = resolve_precision("auto", d, shapes=shapes, kind=kind)
        if info is not None:
            info.update(precision=parse_precision(dt), reason=reason, peak=peak)
    else:
        dt = parse_dtype(dtype)
    if dt not in (torch.float32, torch.bfloat16, torch.float16):
        raise HerdError(f"dtype {dtype!r}: use auto, float32, bfloat16 or float16")
    if info is not None and "precision" not in info:
        info.update(precision=parse_precision(dt), reason="requested")
    return d, dt



def init_distributed(device_type: str) -> Dist:
    """Join the process group started by torchrun (RANK/WORLD_SIZE in the environment), or the
    caller's; a plain one-process run gets a process group of one (an in-memory store, no port),
    so FSDP2 and the device mesh are the same code at any world size."""
    if dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
    else:
        rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0")) if world > 1 else 0
    if device_type == "cuda":  # also when the caller made the process group: FSDP2 uses the current device
        torch.cuda.set_device(local_rank)
    backend = "nccl" if device_type == "cuda" else "gloo"
    if not dist.is_initialized():
        if world > 1:
            dist.init_process_group(backend=backend)
        else:
            dist.init_process_group(backend=backend, store=dist.HashStore(), rank=0, world_size=1)
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


def parallelize(model: nn.Module, dist_: Dist, device: torch.device, *, param_dtype: torch.dtype = torch.float32,
                activation_checkpointing: bool = False, compile: bool = False, doc_mask: bool = True,
                seed: int | None = None) -> nn.Module:
    """Everything the run asks for, in the fixed order: activation checkpointing -> compile ->
    FSDP2 over the data-parallel mesh (any size, 1 included) -> each rank's shards allocated on
    `device` and initialised to the weights one process would draw with `seed` (for a model
    built on the meta device; a materialised model keeps its weights)."""
    on_meta = any(p.is_meta for p in model.parameters())
    if activation_checkpointing:
        apply_activation_checkpointing(model)
    if compile:
        apply_compile(model, doc_mask)
    apply_fsdp(model, dist_.mesh, param_dtype=param_dtype)
    if on_meta:
        materialize_sharded(model, device, seed)
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


__all__ = ["Dist", "init_distributed", "parallelize", "apply_activation_checkpointing", "apply_compile", "apply_fsdp",
           "materialize_sharded"]
