"""The run plan and the learning-rate schedule (paper §3.4.1-§3.4.3).

A config is compiled into a list of phases, each a range of optimizer steps with a fixed batch
size, sequence length and data mix:

  main         the batch/sequence-length ramp stages (405B: 4M tokens of 4,096-token sequences,
               8M of 8,192 after 252M tokens, 16M after 2.87T), until run.tokens or run.steps;
  long_context one phase per (seq_len, tokens) stage, growing the context (§3.4.2);
  anneal       the last anneal.tokens tokens on the anneal mix (§3.4.3).

LR: linear warmup to the peak over warmup_steps, then cosine (or linear) decay to final_lr at
decay_steps (0 = at the start of annealing), final_lr after that; during annealing the LR goes
linearly from its value at the start of annealing to 0 (0 is reached right after the last step).
Everything is a pure function of the step, so a resumed run needs no scheduler state.

Shared with post-training (herd.posttrain): `warmup_decay_lr` (the warmup + cosine/linear decay that
`LRSchedule` applies before annealing; SFT, RM and DPO use it with final_lr = 10% of the peak) and
`param_groups` (AdamW's weight-decay and no-decay groups).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from herd.train.config import TrainConfig


@dataclass
class Phase:
    name: str
    start_step: int
    end_step: int  # exclusive
    batch_size: int
    seq_len: int
    mix: str  # "main" or "anneal"
    start_tokens: int = 0

    @property
    def steps(self) -> int:
        return self.end_step - self.start_step

    @property
    def batch_tokens(self) -> int:
        return self.batch_size * self.seq_len


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def build_plan(cfg: TrainConfig) -> list[Phase]:
    phases: list[Phase] = []
    step, tokens = 0, 0
    stages = cfg.stages
    total_tokens, total_steps = cfg.run.tokens, cfg.run.steps

    def done() -> bool:
        return tokens >= total_tokens if total_tokens else step >= total_steps

    for i, st in enumerate(stages):
        if done():
            break
        bt = st.batch_size * st.seq_len
        n = None
        if i + 1 < len(stages):
            n = max(0, _ceil_div(stages[i + 1].after_tokens - tokens, bt))
        if total_tokens:
            m = _ceil_div(total_tokens - tokens, bt)
        else:
            m = total_steps - step
        n = m if n is None else min(n, m)
        if n <= 0:
            continue
        phases.append(Phase(f"stage{i}", step, step + n, st.batch_size, st.seq_len, "main", tokens))
        step += n
        tokens += n * bt
    last = phases[-1] if phases else Phase("stage0", 0, 0, stages[0].batch_size, stages[0].seq_len, "main")
    for i, lc in enumerate(cfg.long_context):
        bs = lc.batch_size or max(1, last.batch_tokens // lc.seq_len)
        n = _ceil_div(lc.tokens, bs * lc.seq_len)
        last = Phase(f"long_context{i}", step, step + n, bs, lc.seq_len, "main", tokens)
        phases.append(last)
        step += n
        tokens += n * bs * lc.seq_len
    if cfg.anneal.tokens:
        n = _ceil_div(cfg.anneal.tokens, last.batch_tokens)
        phases.append(Phase("anneal", step, step + n, last.batch_size, last.seq_len, "anneal", tokens))
    if cfg.run.max_steps:
        phases = cap_plan(phases, cfg.run.max_steps)
    return phases


def cap_plan(phases: list[Phase], cap: int) -> list[Phase]:
    """The plan shortened to at most `cap` steps (run.max_steps): each phase keeps its share of the
    steps, at least one; the phases' order, batch sizes and sequence lengths are unchanged."""
    total = sum(p.steps for p in phases)
    if total <= cap:
        return phases
    if cap < len(phases):
        from herd.errors import HerdError

        raise HerdError(f"config: run.max_steps {cap} is fewer than the run's {len(phases)} phases "
                        f"({', '.join(p.name for p in phases)}); give at least {len(phases)} steps")
    n = [max(1, p.steps * cap // total) for p in phases]
    while sum(n) > cap:  # the "at least one" may overshoot: take back from the longest
        n[n.index(max(n))] -= 1
    by_rest = sorted(range(len(phases)), key=lambda i: -(phases[i].steps * cap % total))
    for i in by_rest[: cap - sum(n)]:  # the rounding's leftover steps, largest remainders first
        n[i] += 1
    out, step, tokens = [], 0, 0
    for p, k in zip(phases, n):
        out.append(Phase(p.name, step, step + k, p.batch_size, p.seq_len, p.mix, tokens))
        step += k
        tokens += k * p.batch_tokens
    return out


def effective_warmup(cfg: TrainConfig) -> int:
    """schedule.warmup_steps, or with run.max_steps at most a tenth of the capped run (at least 1)."""
    w = cfg.schedule.warmup_steps
    return min(w, max(1, cfg.run.max_steps // 10)) if cfg.run.max_steps and w else w


def total_steps(plan: list[Phase]) -> int:
    return plan[-1].end_step if plan else 0


def phase_at(plan: list[Phase], step: int) -> Phase:
    for p in plan:
        if p.start_step <= step < p.end_step:
            return p
    return plan[-1]


def anneal_snapshot_steps(plan: list[Phase], n: int) -> list[int]:
    """Steps after which an anneal snapshot is saved: `n` spread evenly, the last at the end."""
    a = [p for p in plan if p.name == "anneal"]
    if not a:
        return []
    a = a[0]
    return sorted({a.start_step + max(1, round(k * a.steps / n)) - 1 for k in range(1, n + 1)})


def warmup_decay_lr(step: int, *, peak: float, final: float, warmup: int, decay_steps: int,
                    kind: str = "cosine") -> float:
    """Linear warmup to `peak` over `warmup` steps (step 0 already at peak/warmup), then `kind`
    ("cosine", "linear" or "constant") decay from `peak` to `final`, reached at `decay_steps`; `final`
    after that."""
    if warmup and step < warmup:
        return peak * (step + 1) / warmup
    if kind == "constant":
        return peak
    span = max(1, decay_steps - warmup)
    p = min(1.0, max(0.0, (step - warmup) / span))
    if kind == "linear":
        return peak + (final - peak) * p
    return final + (peak - final) * 0.5 * (1 + math.cos(math.pi * p))


def param_groups(params, weight_decay: float) -> list[dict]:
    """AdamW parameter groups: weight decay on matrices (and embeddings), none on vectors (the
    RMSNorm gains) [unconfirmed: the paper gives no detail; this is the common choice]. `params`: a
    module or an iterable of parameters; frozen ones (requires_grad False) are left out, in order."""
    if hasattr(params, "parameters"):
        params = params.parameters()
    decay, no_decay = [], []
    for p in params:
        if p.requires_grad:
            (decay if p.dim() >= 2 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


class LRSchedule:
    """lr(step), a pure function: warmup, cosine/linear decay to final_lr, linear anneal to 0."""

    def __init__(self, cfg: TrainConfig, plan: list[Phase]):
        s = cfg.schedule
        self.peak, self.final, self.warmup, self.kind = (cfg.optim.lr, s.final_lr, effective_warmup(cfg),
                                                         s.decay)
        anneal = [p for p in plan if p.name == "anneal"]
        self.anneal = (anneal[0].start_step, anneal[0].end_step) if anneal else None
        end = self.anneal[0] if self.anneal else total_steps(plan)
        self.decay_steps = s.decay_steps or end

    def base(self, step: int) -> float:
        return warmup_decay_lr(step, peak=self.peak, final=self.final, warmup=self.warmup,
                               decay_steps=self.decay_steps, kind=self.kind)

    def __call__(self, step: int) -> float:
        if self.anneal and step >= self.anneal[0]:
            a0, a1 = self.anneal
            return self.base(a0) * max(0.0, (a1 - step) / (a1 - a0))
        return self.base(step)


__all__ = ["Phase", "build_plan", "cap_plan", "effective_warmup", "total_steps", "phase_at",
           "anneal_snapshot_steps", "LRSchedule", "warmup_decay_lr",
           "param_groups"]
