"""The IsoFLOP sweep's configuration (paper §3.2.1): a flat dataclass read by the one config loader
(herd.config): `herd scaling isoflop --config FILE --field value` (or `--isoflop.field value`;
a TOML file holds an [isoflop] table or a flat one). No torch here."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from herd.errors import HerdError


@dataclass
class IsoFLOPConfig:
    data: list[str] = field(default_factory=list)  # tokenized data directories (herd tokenize), mixed equally
    budgets: list[float] = field(default_factory=list)  # compute budgets C in FLOPs, 2 or more
    val_data: str = ""  # a tokenized directory held out whole; empty = the 'val' split of `data`
    sizes: list[float] = field(default_factory=list)  # N values to try at every budget; empty = automatic
    n_sizes: int = 5
    spread: float = 4.0  # automatic sizes span guess/spread .. guess*spread
    tokens_per_param: float = 20.0  # Chinchilla's ratio, the centre of the automatic sizes
    seq_len: int = 256
    lr: float = 2e-3  # peak; the cosine decays to 0.1x
    warmup_frac: float = 0.1
    min_steps: int = 40
    max_batch: int = 32  # sequences per step at most
    val_batches: int = 16
    val_batch_size: int = 8
    out: str = "runs/isoflop"  # the output directory (every command calls it `out`)
    device: str = "auto"  # auto = cuda if available else cpu
    dtype: str = "auto"  # auto = bfloat16 on GPU, float32 on CPU
    seed: int = 0
    vocab_size: int = 0  # 0 = from the tokenized data
    progress: bool = True
    peak_flops: float = 0.0  # for MFU in the logs; 0 = the trainer probes it (a few seconds on CPU)
    threads: int = 0  # torch CPU threads per run (0 = torch's default)
    doc_mask: bool = True  # the document mask of §3.2 (on CPU it costs about 2x: attention per document)

    def validate(self) -> "IsoFLOPConfig":
        """Check values types alone do not catch; returns self."""
        if not self.data:
            raise HerdError("isoflop: data is required: tokenized directories (--data DIR, repeat for a mix)")
        if len(self.budgets) < 2 or min(self.budgets) <= 0:
            raise HerdError("isoflop: budgets must be 2 or more positive FLOP counts (e.g. --budgets "
                            f"3e13,1e14), got {self.budgets}")
        if self.sizes and min(self.sizes) <= 0:
            raise HerdError(f"isoflop: sizes must be positive parameter counts, got {self.sizes}")
        for name in ("n_sizes", "seq_len", "min_steps", "max_batch", "val_batches", "val_batch_size"):
            if getattr(self, name) <= 0:
                raise HerdError(f"isoflop: {name} must be positive, got {getattr(self, name)}")
        if self.lr <= 0 or self.spread < 1 or self.tokens_per_param <= 0 or not 0 <= self.warmup_frac < 1:
            raise HerdError("isoflop: lr and tokens_per_param must be > 0, spread >= 1, "
                            "warmup_frac in [0, 1)")
        if self.dtype not in ("auto", "float32", "bfloat16", "float16"):
            raise HerdError(f"isoflop: dtype must be auto, float32, bfloat16 or float16, got {self.dtype!r}")
        if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", self.device):
            raise HerdError(f"isoflop: device must be auto, cpu, cuda, cuda:N or mps, got {self.device!r}")
        return self


__all__ = ["IsoFLOPConfig"]
