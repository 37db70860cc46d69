"""Speedrun presets: one plain flat dataclass that sizes every stage of the miniature Llama 3 recipe,
read by the one config loader (herd.config): `herd speedrun --config quick|cpu|gpu|FILE.toml` with
`--field value` (or `--speedrun.field value`) overrides; `--print-config` prints it as TOML.

Three presets share one code path and differ only in sizes:
  quick  a CI smoke test: a few hundred KB of text, models of ~0.1M parameters, tens of steps
  cpu    the default without a GPU: ~20 minutes on 2 cores [target; see docs/speedrun.md]
  gpu    the same plan scaled to about an hour on one H100 (bf16, bigger models, more data)
The config hash (of every field but `out` and `device`) goes in OUT/manifest.json: a rerun with the
same config resumes; a different config in the same directory is refused.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from dataclasses import dataclass, field

from herd.errors import HerdError


@dataclass
class SpeedrunConfig:
    preset: str = "cpu"  # the preset's name, shown in the report (choose a preset with --config NAME)
    out: str = "speedrun-cpu"  # the output directory (every command calls it `out`)
    seed: int = 0
    device: str = "auto"  # auto = cuda if available else cpu
    dtype: str = "auto"  # auto = bf16 on GPU, fp32 on CPU
    # CPU threads for torch (0 = torch's default, one per core). On a machine shared with other jobs,
    # 1 thread avoids OpenMP oversubscription, which can make tiny models several times slower.
    threads: int = 0
    # 1. corpus: characters per source (0 = leave the source out)
    caps: dict[str, int] = field(
        default_factory=lambda: {
            "wiki-en": 2_100_000,
            "sotu": 1_500_000,
            "shakespeare": 1_500_000,
            "python-stdlib": 1_200_000,
            "arithmetic": 1_050_000,
            "wiki-fr-es": 240_000,
        }
    )
    math_problems: int = 24_000
    curate_workers: int = 0  # 0 = all cores
    # 2. tokenizer
    vocab_size: int = 1024
    val_fraction: float = 0.03  # held-out share of the text pieces (bits per byte, validation loss)
    min_heldout: int = 8
    chunk_chars: int = 6000  # long documents are cut at paragraph breaks into pieces of about this size
    # 3. IsoFLOP sweep (C = D * ModelArgs.flops_per_token(seq_len); N = non-embedding params)
    seq_len: int = 256
    budgets: list[float] = field(default_factory=lambda: [4e11, 1.2e12, 3e12])
    n_sizes: int = 4
    spread: float = 3.0
    iso_lr: float = 3e-3
    min_steps: int = 30
    # sequences per step at most: 8 x 256 tokens gives the short runs of the sweep more steps (the
    # larger sizes of a budget see ~0.1-0.5M tokens; at 16 they took ~40 steps and lost to the smallest)
    max_batch: int = 8
    val_batches: int = 8
    val_batch_size: int = 8
    doc_mask: bool = True
    # 4. the herd: the flagship at `flagship_flops`, sized by the fit; small and medium are
    # N*/small_div and N*/medium_div on the flagship's token count (like 8B/70B/405B on 15T tokens).
    flagship_flops: float = 6e12
    # budgets and flagship_flops are multiplied by this factor; 0 = measured (herd.speedrun.machine): the
    # training speed-up bf16 gives on this CPU at the flagship's shapes (1 on AVX2-only CPUs)
    compute_scale: float = 0.0
    small_div: float = 8.0
    medium_div: float = 2.8
    lr: float = 3e-3
    warmup_frac: float = 0.05
    anneal_frac: float = 0.1  # last 10% of tokens: LR linearly to 0 on the high-quality mix
    anneal_checkpoints: int = 3  # snapshots averaged (Polyak)
    anneal_hq_weight: float = 0.3  # paper's data-value probe: 30% new data, 70% the default mix
    batch_size: int = 16
    # 5. post-training on the arithmetic task
    task_train: int = 3000
    task_test: int = 200
    # Post-training: the recipe of herd.posttrain.demo (docs/posttraining.md), where held-out accuracy
    # rises after SFT, RS and DPO on a CPU in minutes: operands 1..9, RS on 400 prompts with K=8 then
    # 60 SFT steps at 1e-3 on the RS samples mixed with the SFT data, DPO 40 steps x 16 at 1e-5 (the
    # paper's DPO learning rate) on pairs sampled from the RS model itself on 400 other train prompts;
    # SFT runs longer than the demo's 80 steps at 2e-3 (see sft_steps).
    task_max_value: int = 9
    sft_steps: int = 300  # the speedrun's flagship is smaller than the demo's model: 80 steps left it at ~9%
    sft_lr: float = 3e-3
    sft_batch: int = 32
    rs_prompts: int = 400
    rs_k: int = 8
    rs_sft_steps: int = 60
    rs_sft_lr: float = 1e-3
    dpo_prompts: int = 400  # other train prompts, sampled with the RS model for on-policy pairs
    dpo_steps: int = 40
    dpo_lr: float = 1e-5
    dpo_batch: int = 16
    task_max_new_tokens: int = 24
    # 6. evaluation
    bpb_docs: int = 40
    bpb_max_chars: int = 4000  # per held-out document
    sample_tokens: int = 48
    humaneval_limit: int = 0  # HumanEval problems to run (0 = none; the gpu preset runs all 164)
    sample_prompts: list[str] = field(
        default_factory=lambda: [
            "The President of the United States",
            "ROMEO:",
            "def read_file(path):",
            "The capital of France is",
            "Question: Mia has 12 apples. She buys 7 more. How many apples does Mia have now?\nAnswer:",
        ]
    )

    def hash(self) -> str:
        d = dataclasses.asdict(self)
        for k in ("out", "device", "curate_workers", "threads"):
            d.pop(k)
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def validate(self) -> "SpeedrunConfig":
        """Check values types alone do not catch; returns self."""
        if self.dtype not in ("auto", "float32", "bfloat16", "float16"):
            raise HerdError(f"speedrun: dtype must be auto, float32, bfloat16 or float16, got {self.dtype!r}")
        if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", self.device):
            raise HerdError(f"speedrun: device must be auto, cpu, cuda, cuda:N or mps, got {self.device!r}")
        if not self.out:
            raise HerdError("speedrun: out (the output directory) is required")
        if not self.budgets or min(self.budgets) <= 0:
            raise HerdError(f"speedrun: budgets must be positive FLOP counts, got {self.budgets}")
        if self.flagship_flops <= max(self.budgets):
            raise HerdError(f"speedrun: flagship_flops ({self.flagship_flops:g}) must be above the largest "
                            f"IsoFLOP budget ({max(self.budgets):g})")
        for name in ("vocab_size", "seq_len", "n_sizes", "batch_size", "max_batch", "min_steps"):
            if getattr(self, name) <= 0:
                raise HerdError(f"speedrun: {name} must be positive, got {getattr(self, name)}")
        if any(v < 0 for v in self.caps.values()):
            raise HerdError(f"speedrun: caps must be >= 0 characters per source, got {self.caps}")
        return self


# The presets: `--config NAME` (or preset(NAME)); each is the defaults above with these changes.
PRESETS: dict[str, dict] = {
    "cpu": {"preset": "cpu", "out": "speedrun-cpu"},
    "quick": {
        "out": "speedrun-quick",
        "preset": "quick",
        "caps": {
            "wiki-en": 60_000,
            "sotu": 50_000,
            "shakespeare": 60_000,
            "python-stdlib": 40_000,
            "arithmetic": 40_000,
            "wiki-fr-es": 10_000,
        },
        "math_problems": 1200,
        "vocab_size": 768,
        "seq_len": 128,
        "budgets": [3e10, 1e11],
        "n_sizes": 3,
        "spread": 2.0,
        "min_steps": 10,
        "max_batch": 8,
        "val_batches": 2,
        "val_batch_size": 8,
        "flagship_flops": 3e11,
        "compute_scale": 1.0,
        "batch_size": 8,
        "anneal_checkpoints": 2,
        "task_train": 300,
        "task_test": 24,
        "sft_steps": 30,
        "sft_batch": 16,
        "rs_prompts": 24,
        "rs_k": 4,
        "rs_sft_steps": 8,
        "dpo_prompts": 24,
        "dpo_steps": 8,
        "dpo_batch": 8,
        "task_max_new_tokens": 16,
        "bpb_docs": 6,
        "bpb_max_chars": 1500,
        "sample_tokens": 16,
        "sample_prompts": ["The President", "ROMEO:"],
    },
    "gpu": {
        "out": "speedrun-gpu",
        "preset": "gpu",
        "dtype": "auto",
        "caps": {
            "wiki-en": 20_000_000,
            "sotu": 14_000_000,
            "shakespeare": 12_000_000,
            "python-stdlib": 15_000_000,
            "arithmetic": 6_000_000,
            "wiki-fr-es": 3_000_000,
        },
        "math_problems": 120_000,
        "vocab_size": 16384,
        "seq_len": 1024,
        "budgets": [1e16, 3e16, 1e17],
        "n_sizes": 5,
        "spread": 3.0,
        "iso_lr": 1e-3,
        "min_steps": 100,
        "max_batch": 64,
        "val_batches": 32,
        "val_batch_size": 16,
        "flagship_flops": 1e18,
        "compute_scale": 1.0,
        "lr": 1e-3,
        "batch_size": 64,
        "task_train": 20_000,
        "task_test": 500,
        "sft_steps": 600,
        "sft_lr": 2e-4,
        "sft_batch": 64,
        "rs_prompts": 2000,
        "rs_k": 16,
        "rs_sft_steps": 300,
        "rs_sft_lr": 1e-4,
        "dpo_steps": 300,
        "dpo_lr": 1e-5,
        "dpo_batch": 32,
        "humaneval_limit": 164,
        "bpb_docs": 200,
        "sample_tokens": 96,
    },
}


def preset(name: str, **overrides) -> SpeedrunConfig:
    """The named preset with `overrides` (field=value) applied, through the one config loader
    (herd.config); an unknown name or field is a HerdError."""
    from herd.config import load

    if name not in PRESETS:
        raise HerdError(f"unknown speedrun preset {name!r} (known: {', '.join(PRESETS)})")
    return load(SpeedrunConfig, name, names=PRESETS, section="speedrun", values=overrides)
