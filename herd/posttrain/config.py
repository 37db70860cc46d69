"""The configuration of each post-training command (paper §4): plain flat dataclasses read by the one
config loader (herd.config) from a TOML file (`[sft]`, `[rm]`, `[rejection-sample]`, `[dpo]` tables, or
a flat file) and `--field value` / `--sft.field value` flags. Kept free of torch so `herd --help`
stays fast. Defaults are the paper's where it gives them (LR 1e-5, DPO beta 0.1, NLL coefficient 0.2).

    PostTrainConfig            model, out, tokenizer, seed, device, dtype, on_bad_line, resume, quiet
      RSConfig                 + prompts, scorer, k, sampling, chunking
      TrainLoopConfig          + data, lr, warmup, weight_decay, epochs, steps, batch_size, save_every,
                               log_every
        SFTConfig, RMConfig, DPOConfig

`device` and `dtype` mean what pretrain's run.device / run.dtype mean: auto = cuda if available else
cpu; auto = bfloat16 on a GPU, float32 on a CPU. `validate()` (one method, in the base) checks every
field a config has.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass

from herd.errors import HerdError

LORA_TARGETS = ("wq", "wk", "wv", "wo", "w1", "w2", "w3", "output")
DTYPES = ("auto", "float32", "bfloat16", "float16")

# Range checks by field name, applied to whichever of these fields a config has:
# name -> (integer?, lowest allowed, lowest excluded?)
_RANGES = {
    "lr": (False, 0, True), "epochs": (False, 0, True), "beta": (False, 0, True),
    "lora_alpha": (False, 0, True), "code_timeout": (False, 0, True),
    "nll_coef": (False, 0, False), "weight_decay": (False, 0, False), "temperature": (False, 0, False),
    "batch_size": (True, 0, True), "seq_len": (True, 0, True), "max_len": (True, 0, True),
    "k": (True, 0, True), "max_new_tokens": (True, 0, True), "chunk": (True, 0, True),
    "max_batch": (True, 0, True), "log_every": (True, 0, True),
    "warmup": (True, 0, False), "steps": (True, 0, False), "save_every": (True, 0, False),
    "lora_rank": (True, 0, False), "top_k": (True, 0, False),
}


@dataclass
class PostTrainConfig:
    """The fields every post-training command shares."""

    _command = "posttrain"  # the command, the TOML table and the --SECTION.field prefix
    _required = ("model", "out")

    model: str = ""  # checkpoint to start from (herd, Meta or HF format)
    out: str = ""  # output directory; an interrupted run resumes from it
    tokenizer: str | None = None  # override the checkpoint's tokenizer (a path or 'llama3')
    seed: int = 0
    device: str = "auto"  # auto = cuda if available else cpu
    dtype: str = "auto"  # auto = bfloat16 on a GPU, float32 on a CPU
    on_bad_line: str = "skip"  # a malformed JSONL line: skip (with a warning) or stop
    resume: bool = True
    quiet: bool = False

    def validate(self):
        """Check the values types alone do not catch; returns self. One line per mistake."""
        cmd = self._command
        for name in self._required:
            if not getattr(self, name):
                raise HerdError(f"{cmd}: '{name}' is required (--{name.replace('_', '-')} ...)")
        for f in dataclasses.fields(self):
            if f.name not in _RANGES:
                continue
            v, (integer, low, strict) = getattr(self, f.name), _RANGES[f.name]
            if (v <= low) if strict else (v < low):
                kind = "integer" if integer else "number"
                raise HerdError(f"{cmd}: {f.name} must be a {'positive' if strict else 'non-negative'} "
                                f"{kind}, got {v!r}")
        if self.on_bad_line not in ("skip", "stop"):
            raise HerdError(f"{cmd}: on_bad_line must be skip or stop, got {self.on_bad_line!r}")
        if self.dtype not in DTYPES:
            raise HerdError(f"{cmd}: dtype must be {', '.join(DTYPES[:-1])} or {DTYPES[-1]}, got "
                            f"{self.dtype!r}")
        if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", self.device):
            raise HerdError(f"{cmd}: device must be auto, cpu, cuda, cuda:N or mps, got {self.device!r}")
        if not 0 < getattr(self, "top_p", 1.0) <= 1:
            raise HerdError(f"{cmd}: top_p must be in (0, 1], got {self.top_p}")
        if not 0 <= getattr(self, "eval_fraction", 0.0) < 1:
            raise HerdError(f"{cmd}: eval_fraction must be in [0, 1), got {self.eval_fraction}")
        targets = getattr(self, "lora_targets", None)
        if targets is not None:
            bad = [t for t in targets.split(",") if t.strip() not in LORA_TARGETS]
            if bad or not targets.strip():
                raise HerdError(f"{cmd}: lora_targets must be comma-separated names from "
                                f"{','.join(LORA_TARGETS)}, got {targets!r}")
        return self


@dataclass
class TrainLoopConfig(PostTrainConfig):
    """The optimizer loop of SFT, RM and DPO (AdamW, linear warmup, cosine decay)."""

    _required = ("model", "data", "out")

    data: str = ""  # training JSONL; several files separated by commas
    lr: float = 1e-5
    warmup: int = 10
    weight_decay: float = 0.0
    epochs: float = 1.0
    steps: int = 0  # if > 0, overrides epochs
    batch_size: int = 8
    save_every: int = 200  # save the training state every N steps (0: only on Ctrl-C)
    log_every: int = 10


@dataclass
class SFTConfig(TrainLoopConfig):
    _command = "sft"

    eval_data: str | None = None  # held-out chat JSONL: its loss is reported at the end
    seq_len: int = 2048  # row length; a longer dialog is cut (with a warning)
    pack: bool = True  # pack dialogs with the document mask (False: one dialog per row, right-padded)
    lora_rank: int = 0  # 0 = full fine-tuning
    lora_alpha: float = 16.0
    lora_targets: str = "wq,wk,wv,wo,w1,w2,w3"


@dataclass
class RMConfig(TrainLoopConfig):
    _command = "rm"

    eval_data: str | None = None  # held-out preference JSONL; else `eval_fraction` of data is held out
    eval_fraction: float = 0.05
    max_len: int = 2048


@dataclass
class DPOConfig(TrainLoopConfig):
    _command = "dpo"

    ref_model: str | None = None  # default: the starting model
    beta: float = 0.1
    nll_coef: float = 0.2
    max_len: int = 2048
    lora_rank: int = 0
    lora_alpha: float = 16.0
    lora_targets: str = "wq,wk,wv,wo,w1,w2,w3"


@dataclass
class RSConfig(PostTrainConfig):
    _command = "rejection-sample"
    _required = ("model", "prompts", "out")

    prompts: str = ""  # JSONL: {"prompt"| "messages", "answer"? , "tests"?}
    scorer: str = "math"  # "math", "code", or a reward-model directory
    k: int = 8
    max_new_tokens: int = 256
    temperature: float = 1.0  # [unconfirmed] the paper does not give its sampling temperature
    top_p: float = 1.0
    top_k: int = 0
    chunk: int = 64  # prompts per chunk (the unit of progress and resumption)
    max_batch: int = 256  # rows decoded together
    code_timeout: float = 10.0


__all__ = ["PostTrainConfig", "TrainLoopConfig", "SFTConfig", "RMConfig", "RSConfig", "DPOConfig"]
