"""The configuration of each post-training command (paper §4): plain dataclasses, filled from a
TOML recipe and CLI flags by herd.posttrain.cli. Kept free of torch so `herd --help` stays fast.
Defaults are the paper's where it gives them (LR 1e-5, DPO beta 0.1, NLL coefficient 0.2)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class SFTConfig:
    model: str = ""  # checkpoint to start from (herd, Meta or HF format)
    data: str = ""  # chat JSONL; several files separated by commas
    out: str = ""  # where the fine-tuned herd checkpoint goes
    tokenizer: str | None = None  # override the checkpoint's tokenizer (a path or 'llama3')
    eval_data: str | None = None  # held-out chat JSONL: its loss is reported at the end
    lr: float = 1e-5
    warmup: int = 10
    weight_decay: float = 0.0
    epochs: float = 1.0
    steps: int = 0  # if > 0, overrides epochs
    batch_size: int = 8  # rows per step
    seq_len: int = 2048  # row length; a longer dialog is cut (with a warning)
    pack: bool = True  # pack dialogs with the document mask (False: one dialog per row, right-padded)
    lora_rank: int = 0  # 0 = full fine-tuning
    lora_alpha: float = 16.0
    lora_targets: str = "wq,wk,wv,wo,w1,w2,w3"
    seed: int = 0
    on_bad_line: str = "skip"
    save_every: int = 200
    resume: bool = True
    log_every: int = 10
    quiet: bool = False


@dataclass
class RMConfig:
    model: str = ""
    data: str = ""  # preference JSONL
    out: str = ""
    tokenizer: str | None = None
    eval_data: str | None = None  # held-out preference JSONL; else `eval_fraction` of data is held out
    eval_fraction: float = 0.05
    lr: float = 1e-5
    warmup: int = 10
    weight_decay: float = 0.0
    epochs: float = 1.0
    steps: int = 0
    batch_size: int = 8  # preference records per step
    max_len: int = 2048
    seed: int = 0
    on_bad_line: str = "skip"
    save_every: int = 200
    resume: bool = True
    log_every: int = 10
    quiet: bool = False


@dataclass
class RSConfig:
    model: str = ""
    prompts: str = ""  # JSONL: {"prompt"| "messages", "answer"? , "tests"?}
    out: str = ""
    scorer: str = "math"  # "math", "code", or a reward-model directory
    k: int = 8
    max_new_tokens: int = 256
    temperature: float = 1.0  # [unconfirmed] the paper does not give its sampling temperature
    top_p: float = 1.0
    top_k: int = 0
    seed: int = 0
    tokenizer: str | None = None
    chunk: int = 64  # prompts per chunk (the unit of progress and resumption)
    max_batch: int = 256  # rows decoded together
    code_timeout: float = 10.0
    on_bad_line: str = "skip"
    resume: bool = True
    quiet: bool = False


@dataclass
class DPOConfig:
    model: str = ""
    data: str = ""  # preference JSONL
    out: str = ""
    ref_model: str | None = None  # default: the starting model
    tokenizer: str | None = None
    beta: float = 0.1
    nll_coef: float = 0.2
    lr: float = 1e-5
    warmup: int = 10
    weight_decay: float = 0.0
    epochs: float = 1.0
    steps: int = 0
    batch_size: int = 8  # pairs per step
    max_len: int = 2048
    lora_rank: int = 0
    lora_alpha: float = 16.0
    lora_targets: str = "wq,wk,wv,wo,w1,w2,w3"
    seed: int = 0
    on_bad_line: str = "skip"
    save_every: int = 200
    resume: bool = True
    log_every: int = 10
    quiet: bool = False


__all__ = ["SFTConfig", "RMConfig", "RSConfig", "DPOConfig"]
