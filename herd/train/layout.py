"""The 4D layout of a run (paper §3.3.2): degrees, checks and the pipeline's layer split. No torch here,
so `herd plan` and config validation can use it before any process group exists.

Ranks are laid out as a [dp, pp, cp, tp] grid, TP innermost (the paper's group order [TP, CP, PP, DP]:
tensor-parallel ranks are neighbours, on one server of 8 GPUs). A layout that cannot run is refused here,
in one line naming the problem and the fix, before any process-group work.
"""

from __future__ import annotations

from dataclasses import dataclass

from herd.errors import HerdError

SCHEDULES = ("interleaved_1f1b", "1f1b", "gpipe")


@dataclass(frozen=True)
class Layout:
    tp: int = 1
    cp: int = 1
    pp: int = 1
    dp: int = 1
    stages_per_rank: int = 1  # V
    schedule: str = "interleaved_1f1b"
    microbatches: int = 1  # M (pipeline micro-batches per step; 1 without PP)

    @property
    def world(self) -> int:
        return self.tp * self.cp * self.pp * self.dp

    @property
    def n_stages(self) -> int:
        return self.pp * self.stages_per_rank

    @property
    def bubble(self) -> float:
        """Fraction of a step lost to the pipeline bubble: (PP-1)/(V*M) of the ideal time (paper §3.3.2)."""
        return (self.pp - 1) / (self.stages_per_rank * self.microbatches) if self.pp > 1 else 0.0

    def coords(self, rank: int) -> dict[str, int]:
        """This rank's index along each dimension of the [dp, pp, cp, tp] grid."""
        tp, rest = rank % self.tp, rank // self.tp
        cp, rest = rest % self.cp, rest // self.cp
        pp, dp = rest % self.pp, rest // self.pp
        return {"dp": dp, "pp": pp, "cp": cp, "tp": tp}

    def describe(self) -> str:
        s = f"TP{self.tp} CP{self.cp} PP{self.pp} DP{self.dp}"
        if self.pp > 1:
            s += f" (V={self.stages_per_rank}, {self.microbatches} micro-batches, {self.schedule})"
        return s


def resolve(parallel, world: int) -> Layout:
    """Layout from a ParallelConfig (or any object with its fields) and the world size: dp 0 takes the
    rest of the world; the degrees must multiply to the world size."""
    tp, cp, pp, dp = parallel.tp, parallel.cp, parallel.pp, parallel.dp
    for name, v in (("tp", tp), ("cp", cp), ("pp", pp)):
        if v < 1:
            raise HerdError(f"parallel.{name} is {v}: use a positive degree (1 = off)")
    if dp < 0:
        raise HerdError(f"parallel.dp is {dp}: use a positive degree, or 0 for the rest of the world")
    inner = tp * cp * pp
    if dp == 0:
        if world % inner:
            raise HerdError(
                f"tp*cp*pp = {inner} does not divide the world size {world}; launch a multiple of "
                f"{inner} processes or change --parallel.tp/cp/pp"
            )
        dp = world // inner
    if inner * dp != world:
        raise HerdError(
            f"tp*cp*pp*dp = {tp}*{cp}*{pp}*{dp} = {inner * dp} but the world size is {world}; "
            f"launch {inner * dp} processes or set --parallel.dp 0"
        )
    if parallel.pp_schedule not in SCHEDULES:
        raise HerdError(f"parallel.pp_schedule {parallel.pp_schedule!r}: use one of {', '.join(SCHEDULES)}")
    V = parallel.pp_stages_per_rank
    if V < 1:
        raise HerdError(f"parallel.pp_stages_per_rank is {V}: use 1 or more")
    if pp == 1 and V > 1:
        raise HerdError("parallel.pp_stages_per_rank > 1 needs pipeline parallelism; set --parallel.pp")
    M = parallel.pp_microbatches or pp
    if M < 1:
        raise HerdError(f"parallel.pp_microbatches is {M}: use 1 or more (0 = pp)")
    return Layout(tp, cp, pp, dp, V, parallel.pp_schedule, M if pp > 1 else 1)


def stage_layers(n_layers: int, n_stages: int) -> list[list[int]]:
    """The layers of each pipeline stage: the embedding and the output (+ loss) count as one layer each, so
    the first and the last stage hold one layer fewer (paper §3.3.2); the n_layers + 2 units are spread as
    evenly as they go, any remainder on the middle stages."""
    if n_stages == 1:
        return [list(range(n_layers))]
    units = n_layers + 2
    base, extra = divmod(units, n_stages)
    sizes = [base] * n_stages
    middle = list(range(1, n_stages - 1)) or list(range(n_stages))
    for k in range(extra):  # the middle stages first (the ends already carry the embedding/output)
        sizes[middle[k % len(middle)]] += 1
    sizes[0] -= 1
    sizes[-1] -= 1
    out, i = [], 0
    for n in sizes:
        out.append(list(range(i, i + n)))
        i += n
    return out


def check(args, layout: Layout, shapes: list[tuple[int, int]] = ()) -> None:
    """Refuse, in one line, a layout that does not fit the model or the batches: heads and KV heads by tp,
    layers by stages, each (batch rows, sequence length) of `shapes` by dp / micro-batches and by 2*cp*tp."""
    L = layout
    if args.n_heads % L.tp or args.n_kv_heads % L.tp:
        raise HerdError(
            f"tp {L.tp} does not divide the model's heads ({args.n_heads} query, {args.n_kv_heads} KV); "
            "choose a tp that divides both"
        )
    if args.ffn_hidden_dim % L.tp or args.vocab_size % L.tp:
        raise HerdError(
            f"tp {L.tp} does not divide the FFN width {args.ffn_hidden_dim} or the vocabulary "
            f"{args.vocab_size}; choose a smaller tp"
        )
    if L.pp > 1:
        if L.n_stages > args.n_layers + 2:
            raise HerdError(
                f"{L.n_stages} pipeline stages (pp {L.pp} x V {L.stages_per_rank}) for {args.n_layers} "
                f"layers: at most n_layers + 2 = {args.n_layers + 2} stages; lower pp or V"
            )
        if args.tie_embeddings:
            raise HerdError(
                "pipeline parallelism needs untied embeddings (the first and last stages hold them "
                "apart); use pp 1 for this model (tie_embeddings)"
            )
        if L.schedule == "interleaved_1f1b" and L.stages_per_rank > 1 and L.microbatches % L.pp:
            raise HerdError(
                f"interleaved 1F1B needs micro-batches ({L.microbatches}) to be a multiple of pp "
                f"({L.pp}); set --parallel.pp_microbatches"
            )
    for rows, seq in shapes:
        if rows % L.dp:
            raise HerdError(
                f"batch of {rows} sequences does not divide over dp {L.dp}; use a multiple of {L.dp}"
            )
        if L.pp > 1 and (rows // L.dp) % L.microbatches:
            raise HerdError(
                f"{rows // L.dp} sequences per data-parallel rank do not split into "
                f"{L.microbatches} pipeline micro-batches; change the batch or --parallel.pp_microbatches"
            )
        parts = (2 * L.cp if L.cp > 1 else 1) * L.tp
        if seq % parts:
            raise HerdError(
                f"sequence length {seq} does not divide into 2*cp*tp = {parts} pieces "
                "(context-parallel chunks x sequence-parallel shards); change seq_len, cp or tp"
            )


__all__ = ["SCHEDULES", "Layout", "check", "resolve", "stage_layers"]
