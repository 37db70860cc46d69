"""Pretraining configuration (paper §3.4): plain dataclasses, TOML recipes, `--section.field value`
overrides, read by the one loader of every command (herd.config).

A recipe is a TOML file whose tables mirror the dataclasses below ([model], [data], [optim],
[schedule], [[stages]], [[long_context]], [anneal], [eval], [checkpoint], [guard], [run]), or the name
of one in recipes/. Every field can be overridden on the command line as `--section.field value`
(`--optim.lr 3e-4`, `--run.compile true`, `--optim.betas 0.9,0.95`, `--stages.1.seq_len 512`). An
unknown field or a value of the wrong type is a HerdError naming it. No torch here.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from herd.errors import HerdError
from herd.model.args import ModelArgs, get_preset


@dataclass
class Source:
    """A tokenized data directory (written by `herd tokenize`) and its weight in the mix."""
    path: str = ""
    weight: float = 1.0


@dataclass
class ModelConfig:
    # [model] may also hold any ModelArgs field directly (`n_layers = 2`): it goes into `overrides`.
    _config_extra = ("overrides", ModelArgs)

    preset: str = "herd-5m"
    # Any ModelArgs field, e.g. {"n_layers": 2, "vocab_size": 512}; in TOML written inline in [model].
    overrides: dict = field(default_factory=dict)
    # Start from the weights of a herd checkpoint instead of a fresh init (e.g. an anneal-only run).
    init_from: str = ""

    def args(self) -> ModelArgs:
        return get_preset(self.preset, **self.overrides)


@dataclass
class DataConfig:
    sources: list[Source] = field(default_factory=list)
    # Held-out data: a tokenized directory; empty = the 'val' split of the sources.
    val: str = ""
    # Tokenizer file (tiktoken format); empty = the one recorded by `herd tokenize` in the data.
    tokenizer: str = ""
    # Pass document boundaries to the model (the paper's document mask, §3.2).
    doc_mask: bool = True
    seed: int = 0


@dataclass
class OptimConfig:
    lr: float = 3e-4
    betas: list[float] = field(default_factory=lambda: [0.9, 0.95])
    eps: float = 1e-8
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    # "auto" = fused on GPU and CPU where supported, else foreach.
    impl: str = "auto"


@dataclass
class ScheduleConfig:
    warmup_steps: int = 100
    # Length of the cosine decay (warmup included); 0 = all steps before annealing.
    decay_steps: int = 0
    final_lr: float = 3e-5
    # "cosine", "linear" or "constant" after warmup.
    decay: str = "cosine"


@dataclass
class Stage:
    """From `after_tokens` tokens seen on: batches of `batch_size` sequences of `seq_len` tokens."""
    after_tokens: int = 0
    batch_size: int = 8
    seq_len: int = 256


@dataclass
class LongContextStage:
    """A long-context stage (§3.4.2): `tokens` tokens at `seq_len`; batch_size 0 keeps the tokens
    per batch of the last stage."""
    seq_len: int = 1024
    tokens: int = 0
    batch_size: int = 0


@dataclass
class AnnealConfig:
    """The last `tokens` tokens (§3.4.3): LR linearly to 0, data from `sources` (empty = the main
    mix), `checkpoints` snapshots spread evenly; the final model is their average (Polyak)."""
    tokens: int = 0
    sources: list[Source] = field(default_factory=list)
    checkpoints: int = 4


@dataclass
class EvalConfig:
    interval: int = 100  # steps; 0 = only at the end
    batches: int = 8
    batch_size: int = 8
    seq_len: int = 0  # 0 = the seq_len of the first stage


@dataclass
class CheckpointConfig:
    interval: int = 100  # steps; 0 = only at the end
    keep: int = 3
    # "full": one state.pt, gathered on rank 0; "sharded": each rank writes its own shards
    # (torch.distributed.checkpoint), nothing gathered; "auto": sharded when there is more than one rank
    format: str = "auto"


@dataclass
class GuardConfig:
    # After this many non-finite steps in a row, roll back to the last checkpoint.
    max_bad_steps: int = 5
    # A loss above spike_factor x its running mean is logged as a spike.
    spike_factor: float = 2.0


@dataclass
class RunConfig:
    _config_aliases = {"out_dir": "out", "dtype": "precision"}  # old names, accepted with a warning

    out: str = "runs/pretrain"  # the output directory (every command calls it `out`)
    # Main-phase length (before long-context stages and annealing), in tokens or steps (one of them).
    tokens: int = 0
    steps: int = 0
    # A cap on the whole run, long-context and annealing included: every phase is shortened in
    # proportion (each keeps at least one step) and warmup to at most a tenth of the cap; 0 = none.
    # For a quick try of a recipe: --run.max_steps 40.
    max_steps: int = 0
    device: str = "auto"  # auto = cuda if available else cpu
    # auto | fp32 | bf16 (| fp16 on GPU): bf16 autocast with fp32 master weights, or fp32. auto = bf16 on a
    # GPU; on a CPU a quick matmul probe of the model's shapes (herd.precision, cached per machine) picks
    # bf16 where the CPU's matrix engine (AMX, AVX512-BF16) makes it faster, fp32 elsewhere (AVX2-only).
    precision: str = "auto"
    compile: bool = False
    activation_checkpointing: bool = False
    # Tokens per forward/backward on each rank (gradient accumulation above it); 0 = whole batch.
    micro_batch_tokens: int = 0
    seed: int = 0
    log_interval: int = 10
    tensorboard: bool = False
    progress: bool = True
    # Peak FLOP/s for MFU; 0 = a matmul probe of the precision used on CPU, the datasheet peak on GPU.
    peak_flops: float = 0.0
    threads: int = 0  # torch threads on CPU; 0 = torch's default
    # Continue from the newest valid checkpoint in out/checkpoints (the CLI's --resume).
    resume: bool = False


@dataclass
class ParallelConfig:
    """4D parallelism (paper §3.3.2), used under torchrun: the degrees multiply to the world size.
    Group order [TP, CP, PP, DP], TP innermost (neighbouring ranks). 0 for dp = the rest of the world."""
    tp: int = 1  # tensor parallel: heads and FFN columns split over tp ranks, sequence-parallel norms
    cp: int = 1  # context parallel: the sequence in 2*cp chunks, rank i holds chunks i and 2*cp-1-i
    pp: int = 1  # pipeline parallel: layers split into pp * pp_stages_per_rank stages
    dp: int = 0  # data parallel (FSDP2 shards over dp x cp); 0 = world / (tp * cp * pp)
    # interleaved_1f1b (the paper's), 1f1b or gpipe (with pp_stages_per_rank > 1: looped BFS)
    pp_schedule: str = "interleaved_1f1b"
    pp_microbatches: int = 0  # micro-batches per step in the pipeline; 0 = pp
    pp_stages_per_rank: int = 1  # the paper's V (interleaved stages per pipeline rank)
    fp32_reduce: bool = True  # gradients reduce-scattered in fp32 (§3.3.2 numerics); false = in run.dtype
    timeout_s: float = 600.0  # a collective that waits longer fails, naming the rank, instead of hanging
    straggler_factor: float = 2.0  # a rank whose step time is this x the median is reported in the log


@dataclass
class TrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    stages: list[Stage] = field(default_factory=lambda: [Stage()])
    long_context: list[LongContextStage] = field(default_factory=list)
    anneal: AnnealConfig = field(default_factory=AnnealConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    guard: GuardConfig = field(default_factory=GuardConfig)
    run: RunConfig = field(default_factory=RunConfig)
    parallel: ParallelConfig = field(default_factory=ParallelConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        from herd.config import from_dict

        return from_dict(cls, d)

    def validate(self) -> "TrainConfig":
        """Check values that types alone do not catch; returns self."""
        self.model.args()  # unknown preset / bad model field -> HerdError
        if not self.stages:
            raise HerdError("config: [[stages]] needs at least one stage (batch_size, seq_len)")
        for i, s in enumerate(self.stages):
            if s.batch_size <= 0 or s.seq_len <= 0:
                raise HerdError(f"config: stages[{i}] needs positive batch_size and seq_len")
            if i and s.after_tokens <= self.stages[i - 1].after_tokens:
                raise HerdError(f"config: stages[{i}].after_tokens must increase from stage to stage")
        if self.stages[0].after_tokens != 0:
            raise HerdError("config: the first stage must start at after_tokens = 0")
        for name in ("tokens", "steps", "max_steps"):
            if getattr(self.run, name) < 0:
                raise HerdError(f"config: run.{name} must be >= 0, got {getattr(self.run, name)}")
        if self.run.tokens > 0 and self.run.steps > 0:
            raise HerdError("config: set exactly one of run.tokens and run.steps, the main-phase length "
                            f"(got tokens {self.run.tokens:,} and steps {self.run.steps}): --run.tokens 0 "
                            "--run.steps N; to cap the whole run use --run.max_steps N")
        if self.run.tokens == 0 and self.run.steps == 0:
            raise HerdError("config: set exactly one of run.tokens and run.steps (the main-phase length), "
                            "e.g. --run.steps 100")
        for name in ("warmup_steps", "decay_steps"):
            if getattr(self.schedule, name) < 0:
                raise HerdError(f"config: schedule.{name} must be >= 0, got {getattr(self.schedule, name)}")
        if self.optim.lr <= 0 or self.schedule.final_lr < 0:
            raise HerdError("config: optim.lr must be > 0 and schedule.final_lr >= 0")
        if self.schedule.decay not in ("cosine", "linear", "constant"):
            raise HerdError("config: schedule.decay must be cosine, linear or constant, got "
                            f"{self.schedule.decay!r}")
        if len(self.optim.betas) != 2:
            raise HerdError("config: optim.betas must be a list of two numbers")
        if self.optim.impl not in ("auto", "fused", "foreach", "for"):
            raise HerdError("config: optim.impl must be auto, fused, foreach or for, got "
                            f"{self.optim.impl!r}")
        if self.checkpoint.format not in ("auto", "full", "sharded"):
            raise HerdError("config: checkpoint.format must be auto, full or sharded, got "
                            f"{self.checkpoint.format!r}")
        from herd.precision import parse_precision

        try:
            parse_precision(self.run.precision)
        except HerdError:
            raise HerdError("config: run.precision must be auto, fp32, bf16 or fp16, got "
                            f"{self.run.precision!r}") \
                from None
        for i, s in enumerate(self.long_context):
            if s.seq_len <= 0 or s.tokens <= 0:
                raise HerdError(f"config: long_context[{i}] needs positive seq_len and tokens")
        if self.anneal.tokens < 0 or (self.anneal.tokens and self.anneal.checkpoints < 1):
            raise HerdError("config: anneal.tokens must be >= 0 and anneal.checkpoints >= 1")
        for s in self.data.sources + self.anneal.sources:
            if not s.path or s.weight <= 0:
                raise HerdError("config: every data source needs a path and a positive weight")
        if self.checkpoint.keep < 1:
            raise HerdError("config: checkpoint.keep must be >= 1")
        from herd.train.layout import SCHEDULES

        par = self.parallel
        if min(par.tp, par.cp, par.pp, par.pp_stages_per_rank) < 1 or par.dp < 0 or par.pp_microbatches < 0:
            raise HerdError("config: parallel.tp/cp/pp/pp_stages_per_rank must be >= 1, "
                            "dp and pp_microbatches >= 0")
        if par.pp_schedule not in SCHEDULES:
            raise HerdError(f"config: parallel.pp_schedule must be one of {', '.join(SCHEDULES)}, "
                            f"got {par.pp_schedule!r}")
        if par.pp > 1 and self.run.micro_batch_tokens:
            raise HerdError("config: under pipeline parallelism the micro-batches are "
                            "parallel.pp_microbatches; set run.micro_batch_tokens 0")
        if par.timeout_s <= 0 or par.straggler_factor <= 1:
            raise HerdError("config: parallel.timeout_s must be > 0 and parallel.straggler_factor > 1")
        return self


# ---- loading (the one loader: herd.config) -------------------------------------------------------
RECIPES = Path(__file__).resolve().parents[2] / "recipes"


def recipe_names() -> dict[str, Path]:
    """The recipes a bare name finds: recipes/NAME.toml."""
    return {p.stem: p for p in sorted(RECIPES.glob("*.toml"))}


def load_config(config: str | Path | None = None, overrides: list[str] | None = None) -> TrainConfig:
    """A TOML recipe (a file, a name in recipes/, or None for the defaults) with `--section.field value`
    overrides, names and types checked -> TrainConfig (not yet validated: call `.validate()`)."""
    from herd.config import load

    return load(TrainConfig, config, overrides, names=recipe_names())


__all__ = ["TrainConfig", "ModelConfig", "DataConfig", "Source", "OptimConfig", "ScheduleConfig", "Stage",
           "LongContextStage", "AnnealConfig", "ParallelConfig", "EvalConfig", "CheckpointConfig",
           "GuardConfig", "RunConfig",
           "load_config", "recipe_names"]
