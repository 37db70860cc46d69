"""Parallelism applied from outside the model (paper §3.3.2), torchtitan-style.

The model file holds no distributed code. `parallelize(model, dist, ...)` applies, in a fixed
order, what the run asks for: activation checkpointing -> torch.compile per block -> FSDP2
`fully_shard` (data parallel: parameters, gradients and optimizer state sharded over ranks; gloo
on CPU, NCCL on GPU) -> memory for this rank's shards, initialised as one process would. FSDP2 is
applied on one process too (degree 1, as torchtitan does), so the trainer has a single code path
for any world size. Tensor, context and pipeline parallelism go into the same function (4D, paper
§3.3.2; docs/parallelism.md): one DeviceMesh [dp, pp, cp, tp] (TP innermost), tensor parallel with
`torch.distributed.tensor.parallel` (sequence-parallel norms, loss-parallel output), context parallel as
the paper's all-gather of K/V over 2*cp load-balanced chunks (herd.train.context_parallel), pipeline
parallel with `torch.distributed.pipelining` (herd.train.pipeline), FSDP2 over dp x cp.
Module names, and so state-dict keys, are unchanged by all of them.
"""

from __future__ import annotations

import contextlib
import functools
import logging
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
    mesh: object = None  # the mesh FSDP2 shards over (dp x cp flattened)
    layout: object = None  # herd.train.layout.Layout
    world_mesh: object = None  # [dp, pp, cp, tp]

    def dim(self, name: str) -> int:
        """This rank's index along dimension `name` (dp, pp, cp or tp) of the layout."""
        return self.layout.coords(self.rank)[name] if self.layout is not None else 0

    def group(self, name: str):
        """The process group of dimension `name` that holds this rank."""
        return self.world_mesh.get_group(name)

    @property
    def dp(self) -> int:
        return self.layout.dp if self.layout is not None else self.world

    @property
    def dp_rank(self) -> int:
        return self.dim("dp") if self.layout is not None else self.rank

    @property
    def grad_world(self) -> int:
        """Ranks whose gradients FSDP averages (dp x cp): each sees different tokens."""
        return self.layout.dp * self.layout.cp if self.layout is not None else self.world

    @property
    def counts_tokens(self) -> bool:
        """The one rank per data-parallel slice that counts its targets (sums over ranks are global)."""
        return self.layout is None or (self.dim("cp") == 0 and self.dim("tp") == 0 and self.dim("pp") == 0)

    @property
    def owns_loss(self) -> bool:
        """Whether this rank's loss enters the global sum: one tensor-parallel rank of the last
        pipeline rank (every cp rank holds different tokens)."""
        L = self.layout
        return L is None or (self.dim("tp") == 0 and self.dim("pp") == L.pp - 1)

    def all_gather_floats(self, x: float) -> list[float]:
        """`x` of every rank, in rank order."""
        if self.world == 1:
            return [x]
        dev = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else "cpu"
        t = torch.tensor([x], dtype=torch.float64, device=dev)  # NCCL gathers device tensors only
        out = [torch.zeros_like(t) for _ in range(self.world)]
        dist.all_gather(out, t)
        return [float(o) for o in out]

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



def world_size() -> int:
    """The world size of this run (the caller's process group, or torchrun's WORLD_SIZE, or 1)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return int(os.environ.get("WORLD_SIZE", "1"))


def init_distributed(device_type: str, parallel=None) -> Dist:
    """Join the process group started by torchrun (RANK/WORLD_SIZE in the environment), or the
    caller's; a plain one-process run gets a process group of one (an in-memory store, no port),
    so FSDP2 and the device mesh are the same code at any world size. `parallel` (a ParallelConfig)
    gives the 4D layout (default: all data parallel); collectives that wait longer than its
    timeout_s fail instead of hanging."""
    import datetime

    from herd.train import layout as lay

    if parallel is None:
        from herd.train.config import ParallelConfig

        parallel = ParallelConfig()
    layout = lay.resolve(parallel, world_size())  # refused before any process-group work
    timeout = datetime.timedelta(seconds=parallel.timeout_s)
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
            dist.init_process_group(backend=backend, timeout=timeout)
        else:
            dist.init_process_group(backend=backend, store=dist.HashStore(), rank=0, world_size=1,
                                    timeout=timeout)
    world_mesh, fsdp_mesh = build_mesh(device_type, layout)
    return Dist(rank, world, local_rank, fsdp_mesh, layout, world_mesh)


def build_mesh(device_type: str, layout):
    """One DeviceMesh [dp, pp, cp, tp] (the paper's group order [TP, CP, PP, DP], TP innermost) and the
    mesh FSDP2 shards over: dp x cp flattened (context-parallel ranks hold the same weights and see
    different tokens, so their gradients are averaged and their optimizer state sharded like DP's)."""
    from torch.distributed.device_mesh import init_device_mesh

    L = layout
    mesh = init_device_mesh(device_type, (L.dp, L.pp, L.cp, L.tp), mesh_dim_names=("dp", "pp", "cp", "tp"))
    if L.cp == 1:
        return mesh, mesh["dp"]
    sub = mesh["dp", "cp"]
    flatten = getattr(sub, "flatten", None) or sub._flatten  # public name in newer torch
    return mesh, flatten("dp_cp")


def _blocks(model: nn.Module):
    """The transformer blocks of a model or a pipeline stage (ModuleList or ModuleDict)."""
    layers = model.layers
    return list(layers.values()) if isinstance(layers, nn.ModuleDict) else list(layers)


def apply_activation_checkpointing(model: nn.Module):
    """Recompute each transformer block in the backward pass instead of storing its activations.
    The block's forward is wrapped in place, so parameter names do not change. Every per-batch input
    (document segments, RoPE factors) reaches the block as a call argument, so recomputation is exact
    under pipeline parallelism too (micro-batches interleave)."""
    from torch.utils.checkpoint import checkpoint

    for block in _blocks(model):
        fwd = block.forward
        block.forward = functools.partial(checkpoint, fwd, use_reentrant=False)


def apply_compile(model: nn.Module, doc_mask: bool, tp: int = 1):
    """torch.compile each block in place. With the document mask the attention cuts sequences at
    document boundaries (shapes change per batch), so only the feed-forward part is compiled; under
    tensor parallelism too (a compiled tensor-parallel attention fails in backward in torch 2.13)."""
    for block in _blocks(model):
        if doc_mask or tp > 1:
            block.feed_forward.compile()
        else:
            block.compile()


def apply_tp(model: nn.Module, tp_mesh):
    """Tensor parallelism (Megatron-style, paper §3.3.2) with torch.distributed.tensor.parallel, over the
    module tree of a model or a pipeline stage: wq/wk/wv and w1/w3 split by output columns (heads,
    FFN units), wo and w2 by input rows, so each block needs one all-gather and one reduce-scatter
    per sub-layer; the residual stream and the norms are sequence-parallel (each rank holds T/tp
    positions); the embedding is split by vocabulary rows. The output is loss-parallel: split by
    vocabulary rows, its logits stay sharded over the vocabulary and the cross-entropy runs on the
    shards (torch's loss_parallel). With tied embeddings the shared weight is kept whole over tp and
    the final norm and output run replicated on the gathered sequence (the plain, fused loss); the
    weight is still sharded by FSDP."""
    from torch.distributed.tensor import Replicate, Shard
    from torch.distributed.tensor.parallel import (
        ColwiseParallel,
        PrepareModuleInput,
        PrepareModuleOutput,
        RowwiseParallel,
        SequenceParallel,
        parallelize_module,
    )

    # 2-D (FSDP x TP) gradients and weights are gathered once per step for the norm and the export, in
    # two collectives; torch logs that as "suboptimal" on every rank: not news to the user
    logging.getLogger("torch.distributed.tensor._redistribute").setLevel(logging.ERROR)
    if getattr(model, "tok_embeddings", None) is not None:
        if model.args.tie_embeddings:  # the output reads the same weight whole: keep it replicated over tp
            parallelize_module(model.tok_embeddings, tp_mesh, PrepareModuleOutput(
                output_layouts=Replicate(), desired_output_layouts=Shard(1)))
        else:
            parallelize_module(model.tok_embeddings, tp_mesh,
                               RowwiseParallel(input_layouts=Replicate(), output_layouts=Shard(1)))
    if getattr(model, "norm", None) is not None and model.args.tie_embeddings:
        # tied: the output reads the whole embedding weight, so it runs replicated on the gathered sequence
        parallelize_module(model.norm, tp_mesh, PrepareModuleInput(
            input_layouts=(Shard(1),), desired_input_layouts=(Replicate(),), use_local_output=True))
    elif getattr(model, "norm", None) is not None:
        # loss parallel: a sequence-parallel final norm, the output split by vocabulary rows; each rank
        # makes the logits of its vocabulary slice for all tokens (Shard(-1)) and the loss is computed on
        # them where they lie (herd.model.loss.vocab_parallel_cross_entropy_sum): no [tokens, vocab] gather
        parallelize_module(model, tp_mesh, {
            "norm": SequenceParallel(),
            "output": ColwiseParallel(input_layouts=Shard(1), output_layouts=Shard(-1),
                                      use_local_output=False),
        })
        model.output.vocab_parallel = True
    for block in _blocks(model):
        parallelize_module(block, tp_mesh, {
            "attention_norm": SequenceParallel(),
            "attention": PrepareModuleInput(input_layouts=(Shard(1), None),
                                            desired_input_layouts=(Replicate(), None)),
            "attention.wq": ColwiseParallel(),
            "attention.wk": ColwiseParallel(),
            "attention.wv": ColwiseParallel(),
            "attention.wo": RowwiseParallel(output_layouts=Shard(1)),
            "ffn_norm": SequenceParallel(),
            "feed_forward": PrepareModuleInput(input_layouts=(Shard(1),),
                                               desired_input_layouts=(Replicate(),)),
            "feed_forward.w1": ColwiseParallel(),
            "feed_forward.w3": ColwiseParallel(),
            "feed_forward.w2": RowwiseParallel(output_layouts=Shard(1)),
        })
    return model


def apply_cp(model: nn.Module):
    """Context parallelism: every block's attention core becomes the paper's all-gather-K/V attention
    (herd.train.context_parallel); the per-batch chunk and document layout reaches it as the
    `segments` argument (a CPSegments)."""
    from herd.train.context_parallel import context_parallel_attention

    for block in _blocks(model):
        block.attention.core = context_parallel_attention
    return model


def apply_fsdp(model: nn.Module, mesh, param_dtype: torch.dtype = torch.float32, fp32_reduce: bool = True,
               root: bool = True):
    """FSDP2: shard every block, then the root (embedding, final norm, output). Parameters are
    kept in fp32; compute in `param_dtype`; gradients reduced in fp32 (§3.3.2 numerics) unless
    `fp32_reduce` is off."""
    try:
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
    except ImportError:  # torch 2.5
        from torch.distributed._composable.fsdp import MixedPrecisionPolicy, fully_shard

    reduce_dtype = torch.float32 if fp32_reduce else param_dtype
    mp = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=reduce_dtype)
    blocks = _blocks(model)
    for i, block in enumerate(blocks):
        # The last block's parameters are needed again right away in backward: keep them gathered.
        fully_shard(block, mesh=mesh, mp_policy=mp, reshard_after_forward=i < len(blocks) - 1)
    if root:
        fully_shard(model, mesh=mesh, mp_policy=mp)
    return model


def parallelize(model: nn.Module, dist_: Dist, device: torch.device, *,
                param_dtype: torch.dtype = torch.float32,
                activation_checkpointing: bool = False, compile: bool = False, doc_mask: bool = True,
                seed: int | None = None, fp32_reduce: bool = True) -> nn.Module:
    """Everything the run asks for, in the fixed order: tensor parallel -> context parallel ->
    activation checkpointing -> compile -> FSDP2 over the dp x cp mesh (any size, 1 included) -> each
    rank's shards allocated on `device` and initialised to the weights one process would draw with
    `seed` (for a model built on the meta device; a materialised model keeps its weights).

    With pipeline parallelism (dist_.layout.pp > 1) the meta model is first cut into this rank's
    stages: the result is a herd.train.pipeline.PipelineParts (the rank's modules under their
    original names, its stages and schedule), else the model itself."""
    L = dist_.layout
    on_meta = any(p.is_meta for p in model.parameters())
    if L is not None and L.pp > 1:
        from herd.train.pipeline import split_pipeline

        parts = split_pipeline(model, dist_)
        units = parts.stages
    else:
        parts, units = model, [model]
    for unit in units:
        if L is not None and L.tp > 1:
            apply_tp(unit, dist_.world_mesh["tp"])
        if L is not None and L.cp > 1:
            apply_cp(unit)
        if activation_checkpointing:
            apply_activation_checkpointing(unit)
        if compile:
            apply_compile(unit, doc_mask, L.tp if L is not None else 1)
        apply_fsdp(unit, dist_.mesh, param_dtype=param_dtype, fp32_reduce=fp32_reduce)
    if on_meta:
        materialize_sharded(parts, device, seed)
    if parts is not model:
        parts.build_schedule(device)
    return parts


def batch_inputs(batch, dist_: Dist, doc_mask: bool) -> dict:
    """The model's keyword arguments for this rank's part of `batch` (on the device): under context
    parallelism its two chunks of each row, their RoPE positions and the chunk/document layout for the
    attention; else the rows as they are."""
    doc_ids = batch.doc_ids if doc_mask else None
    L = dist_.layout
    if L is None or L.cp == 1:
        return {"tokens": batch.inputs, "targets": batch.targets, "doc_ids": doc_ids}
    from herd.train.context_parallel import shard_sequence

    B, T = batch.inputs.shape
    idx, pos, seg = shard_sequence(doc_ids, B, T, batch.inputs.device, dist_.group("cp"), L.cp,
                                   dist_.dim("cp"))
    return {"tokens": batch.inputs[:, idx], "targets": batch.targets[:, idx], "pos": pos,
            "attn_segments": seg}


def pipeline_inputs(batch, dist_: Dist, doc_mask: bool) -> tuple:
    """(tokens, doc_ids, targets) for a pipeline step: this cp rank's chunks of the tokens and targets,
    the full rows' document ids (zeros without the document mask: one document per row)."""
    from herd.train.context_parallel import local_positions

    doc_ids = batch.doc_ids if doc_mask else torch.zeros_like(batch.inputs)
    tokens, targets = batch.inputs, batch.targets
    L = dist_.layout
    if L.cp > 1:
        idx = local_positions(tokens.shape[1], L.cp, dist_.dim("cp")).to(tokens.device)
        tokens, targets = tokens[:, idx], targets[:, idx]
    return tokens, doc_ids, targets


@contextlib.contextmanager
def collective_guard(dist_: Dist, what: str = "training step"):
    """Turn a collective that fails or times out (a peer rank died or hangs: gloo reports a closed
    connection, NCCL/gloo a timeout after parallel.timeout_s) into one line naming this rank, instead of
    a traceback or a silent hang; `torchrun --max-restarts N ... --resume` then continues from the last
    checkpoint."""
    try:
        yield
    except (RuntimeError, dist.DistError) as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        words = ("timed out", "timeout", "connection", "closed by peer", "broken pipe", "nccl", "gloo",
                 "abort")
        if dist_.world == 1 or not any(w in msg.lower() for w in words):
            raise
        where = ""
        if dist_.layout is not None:
            c = dist_.layout.coords(dist_.rank)
            where = f" ({dist_.layout.describe()}; dp {c['dp']} pp {c['pp']} cp {c['cp']} tp {c['tp']})"
        raise HerdError(f"rank {dist_.rank}{where}: a collective in the {what} failed: {msg[:300]}; another "
                        "rank died or hangs (restart with torchrun --max-restarts and --resume)") from None


def stragglers(times: list[float], factor: float) -> list[tuple[int, float, float]]:
    """(rank, its time, the median) for each rank whose step took more than `factor` x the median."""
    med = sorted(times)[len(times) // 2]
    return [(r, t, med) for r, t in enumerate(times) if len(times) > 1 and med > 0 and t > factor * med]


def clip_grad_norm_(model: nn.Module, max_norm: float, dist_: Dist) -> torch.Tensor:
    """Clip the gradients of `model` to a total L2 norm of `max_norm` (inf: only measure) -> the total
    norm (a plain tensor). Gradients may be DTensors on different meshes (FSDP's, FSDP x TP's): each
    mesh's part is reduced on its own; pipeline ranks add up their stages' parts."""
    from torch.distributed.tensor import DTensor

    grads = [p.grad for p in model.parameters() if p.grad is not None]
    groups: dict = {}
    for g in grads:
        key = id(g.device_mesh) if isinstance(g, DTensor) else None
        groups.setdefault(key, []).append(g)
    sq = torch.zeros((), dtype=torch.float64, device=grads[0].device if grads else "cpu")
    for gs in groups.values():
        n = torch.nn.utils.get_total_norm(gs, 2.0)
        if isinstance(n, DTensor):
            n = n.full_tensor()
        sq = sq + n.double() ** 2
    if dist_.layout is not None and dist_.layout.pp > 1:
        dist.all_reduce(sq, group=dist_.group("pp"))
    total = sq.sqrt().float()
    if max_norm != float("inf"):
        coef = float(max_norm / (total + 1e-6))
        if coef < 1.0:
            for gs in groups.values():
                torch._foreach_mul_(gs, coef)
    return total


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
    shapes = getattr(model, "full_shapes", {})  # a pipeline rank: the parameters it does not hold
    with torch.no_grad():
        for name, fn in model.init_plan():
            p = params.get(name)
            if p is None:  # another pipeline rank's: drawn all the same, to keep the one random stream
                scratch = torch.empty(shapes[name], dtype=torch.float32, device=device)
                fn(scratch)
                del scratch
                continue
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


__all__ = ["Dist", "init_distributed", "build_mesh", "world_size", "parallelize", "batch_inputs",
           "pipeline_inputs",
           "clip_grad_norm_", "collective_guard", "stragglers", "apply_activation_checkpointing",
           "apply_compile", "apply_tp", "apply_cp", "apply_fsdp", "materialize_sharded"]
