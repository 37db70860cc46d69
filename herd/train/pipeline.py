"""Pipeline parallelism (paper §3.3.2) with torch.distributed.pipelining.

The meta-device Transformer is cut by hand into pp * V stages (V = parallel.pp_stages_per_rank, the
paper's interleaving): the embedding and the output count as one layer each, so the first and the last
stage hold one transformer layer fewer (herd.train.layout.stage_layers). Pipeline rank r holds stages
r, r + pp, r + 2pp, ... (the looped placement of interleaved 1F1B). A stage is a `StageModule` that
holds the Transformer's own modules under their own names (`layers` is a ModuleDict keyed by the
original layer index), so parameter names, state-dict keys and DCP checkpoints are those of the whole
model and load on any other layout. The rank's modules together form a `PipelineParts` (what the
optimizer and checkpoints see); each stage is FSDP-sharded on its own, as torchtitan does.

Each micro-batch carries its document ids (the full sequence's, so context parallelism can place its
chunks) and its targets as call arguments; the loss (summed cross-entropy) is computed inside the last
stage, so only a scalar leaves the pipeline. Schedules: interleaved_1f1b (ScheduleInterleaved1F1B, any
V), 1f1b (Schedule1F1B; with V > 1 the interleaved form, which is 1F1B over V looped stages) and gpipe
(ScheduleGPipe; with V > 1 ScheduleLoopedBFS, GPipe over looped stages). Gradients of a step's
micro-batches accumulate in fp32 and are reduced once, on the last backward (the schedule tells FSDP).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from herd.model.transformer import Transformer, document_segments, positions_from_segments
from herd.train.layout import stage_layers


class StageModule(nn.Module):
    """One pipeline stage: [embedding] -> its layers -> [final norm -> output -> summed loss]."""

    def __init__(self, model: Transformer, layer_ids: list[int], first: bool, last: bool, cp=None):
        super().__init__()
        self.args = model.args
        self.first, self.last = first, last
        self.cp = cp  # (group, cp, rank) under context parallelism
        if first:
            self.tok_embeddings = model.tok_embeddings
        self.layers = nn.ModuleDict({str(i): model.layers[i] for i in layer_ids})
        if last:
            self.norm = model.norm
            self.output = model.output
        self.rope_cos, self.rope_sin = (
            model.rope_cos,
            model.rope_sin,
        )  # plain attributes, rebuilt on the device

    def reset_rope(self):
        from herd.model.transformer import rope_table

        dev = next(self.parameters()).device
        self.rope_cos, self.rope_sin = rope_table(self.args, self.args.max_seq_len, device=dev)

    def forward(self, x: torch.Tensor, doc_ids: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """x: token ids [B, T'] (first stage) or the previous stage's hidden states; doc_ids [B, T] of the
        full sequence; targets [B, T'] (read by the last stage). -> hidden states, or the summed loss."""
        B, T = doc_ids.shape
        if self.cp is not None:
            from herd.train.context_parallel import shard_sequence

            group, cp, rank = self.cp
            _, pos, segments = shard_sequence(doc_ids, B, T, doc_ids.device, group, cp, rank)
        else:
            segments = document_segments(doc_ids)
            pos = positions_from_segments(segments, T, doc_ids.device)
        freqs = Transformer.rope_factors(self, pos, pos.shape[1])
        h = self.tok_embeddings(x) if self.first else x
        for layer in self.layers.values():
            h = layer(h, freqs, segments=segments)
        if not self.last:
            return h.clone() if h._is_view() else h  # e.g. an embedding-only stage's output (FSDP hooks it)
        from herd.model.loss import output_loss

        return output_loss(self.norm(h), self.output, targets)


class PipelineParts(nn.Module):
    """The modules one pipeline rank holds, under the whole model's names (for the optimizer, state dicts
    and checkpoints), its `stages` (StageModules over these same modules) and the schedule that runs them."""

    def __init__(self, model: Transformer, dist_):
        super().__init__()
        L = dist_.layout
        self.args = model.args
        self.dist = dist_
        S, pp, r = L.n_stages, L.pp, dist_.dim("pp")
        split = stage_layers(model.args.n_layers, S)
        self.stage_ids = [r + k * pp for k in range(L.stages_per_rank)]
        self.full_shapes = {n: tuple(p.shape) for n, p in model.named_parameters()}
        self._plan = model.init_plan()
        cp = (dist_.group("cp"), L.cp, dist_.dim("cp")) if L.cp > 1 else None
        if 0 in self.stage_ids:
            self.tok_embeddings = model.tok_embeddings
        self.layers = nn.ModuleDict({str(i): model.layers[i] for s in self.stage_ids for i in split[s]})
        if S - 1 in self.stage_ids:
            self.norm, self.output = model.norm, model.output
        # plain list: the stages' modules are registered once, here, under their original names
        self.stages = [StageModule(model, split[s], s == 0, s == S - 1, cp) for s in self.stage_ids]
        self.schedule = None
        self.has_first, self.has_last = 0 in self.stage_ids, S - 1 in self.stage_ids
        self._losses: list[torch.Tensor] = []
        self._scale = 1.0

    # ---- construction ----
    def init_plan(self):
        return self._plan  # the whole model's, so every rank draws the one process's random stream

    def to_empty(self, *, device, recurse: bool = True):
        for st in self.stages:  # each stage is an FSDP root: its own to_empty resets FSDP's shards
            st.to_empty(device=device, recurse=recurse)
        return self

    def reset_rope(self):
        for st in self.stages:
            st.reset_rope()

    def num_params(self) -> int:
        """Parameters of the whole model (all stages, all ranks)."""
        return sum(math.prod(s) for s in self.full_shapes.values())

    def _loss_fn(self, out: torch.Tensor, _target) -> torch.Tensor:
        self._losses.append(out.detach())
        return out * self._scale

    def build_schedule(self, device):
        """The schedule over this rank's stages. A PipelineStage fixes its buffers' shapes on its first step,
        so each micro-batch shape (a batch or sequence-length ramp, a long-context stage, evaluation) gets
        its own schedule over the same modules (`_schedule_for`)."""
        self.device = device
        self._schedules = {}
        self.schedule = self._make_schedule()
        return self.schedule

    def _make_schedule(self):
        from torch.distributed.pipelining import PipelineStage
        from torch.distributed.pipelining import schedules as sch

        L = self.dist.layout
        group = self.dist.group("pp")
        stages = [
            PipelineStage(st, s, L.n_stages, self.device, group=group)
            for st, s in zip(self.stages, self.stage_ids)
        ]
        V, M = L.stages_per_rank, L.microbatches
        kw = {"n_microbatches": M, "loss_fn": self._loss_fn, "scale_grads": False}
        if L.schedule == "gpipe":
            return sch.ScheduleGPipe(stages[0], **kw) if V == 1 else sch.ScheduleLoopedBFS(stages, **kw)
        if L.schedule == "1f1b" and V == 1:
            return sch.Schedule1F1B(stages[0], **kw)
        return sch.ScheduleInterleaved1F1B(stages, **kw)

    def _schedule_for(self, shape) -> object:
        if shape not in self._schedules:
            self._schedules[shape] = self._make_schedule() if self._schedules else self.schedule
        return self._schedules[shape]

    # ---- running ----
    def run(
        self,
        tokens: torch.Tensor,
        doc_ids: torch.Tensor,
        targets: torch.Tensor,
        scale: float = 1.0,
        train: bool = True,
    ) -> torch.Tensor:
        """One pass of the schedule over this rank's batch (split into the layout's micro-batches):
        forward (and with `train`, backward with the loss scaled by `scale`) -> the summed loss of the
        batch on the rank holding the last stage, 0 elsewhere."""
        self._losses, self._scale = [], scale
        args = (tokens,) if self.has_first else ()
        kw = {"doc_ids": doc_ids, "targets": targets}
        schedule = self._schedule_for((tuple(doc_ids.shape), train))
        if train:
            schedule.step(*args, target=targets, return_outputs=False, **kw)
        else:
            schedule.eval(*args, target=targets, return_outputs=False, **kw)
        if not self._losses:
            return torch.zeros((), device=doc_ids.device)
        # the last M: on its first step a stage may run one more forward to infer its shapes
        return torch.stack(self._losses[-self.dist.layout.microbatches :]).sum()


def split_pipeline(model: Transformer, dist_) -> PipelineParts:
    """This rank's stages of a (meta-device) model."""
    return PipelineParts(model, dist_)


__all__ = ["PipelineParts", "StageModule", "split_pipeline"]
