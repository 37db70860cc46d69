"""One post-training round (paper §4.1) on a verifiable task, the code `herd posttrain demo`
(herd.posttrain.demo) and the speedrun's post-training stages (herd.speedrun.run) both run:

  sft  held-out accuracy of the base model; SFT on the task's chat data; accuracy
  rs   K samples per prompt from the SFT model on `rs_prompts`, scored by the exact-answer verifier;
       the best correct sample of each prompt becomes SFT data, mixed with the original SFT data
       (the paper mixes RS data with its other sources, §4.2.2; fine-tuning on the few hundred RS
       samples alone overfits them), for a second SFT from the SFT model; accuracy
  dpo  (correct, wrong) pairs sampled from the RS model itself on `dpo_prompts`, other train prompts
       (on-policy: the paper collects preference data with the latest, best model, §4.2.1); DPO from
       the RS model; accuracy

`post_train_round(base, task, cfg)` runs the three steps in order and returns their outputs
({"sft": ..., "rs": ..., "dpo": ...}, JSON-able dicts). `run_step(name, fn)` lets a caller wrap each
step (the speedrun gives every step its own resumable stage marker); a step that cannot go on
(no correct sample, no pair) raises RoundStopped, a HerdError, with the reason.

Every stage runs on `cfg.device` in `cfg.dtype` (herd.posttrain.common.resolve_device: "auto" =
cuda when available, bfloat16 there, float32 on a CPU).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from herd.errors import HerdError


class RoundStopped(HerdError):
    """A step of the round found nothing to train on; the message says why."""


@dataclass
class RoundConfig:
    out: str = "posttrain"  # the steps' directories: sft/, rs/, rs_sft/, dpo_samples/, dpo/
    sft_steps: int = 80
    sft_lr: float = 0.002
    batch_size: int = 32  # SFT rows per step (one dialog a row)
    seq_len: int = 128
    k: int = 8  # samples per prompt, for rejection sampling and for the DPO pairs
    temperature: float = 1.0
    max_new_tokens: int = 24  # of every sample and of the greedy answers scored for accuracy
    rs_chunk: int = 64  # prompts per sampling chunk (it also seeds the chunk's samples)
    rs_sft_steps: int = 60
    rs_sft_lr: float = 0.001
    dpo_steps: int = 40
    dpo_lr: float = 1e-05
    dpo_batch: int = 16
    dpo_lora_rank: int = 0
    warmup: int = 5
    seed: int = 0
    quiet: bool = True
    device: str = "auto"
    dtype: str = "auto"


@dataclass
class RoundTask:
    """A verifiable task on disk: chat data for SFT, prompt files (with "answer") for rejection
    sampling and for the DPO pairs, and the held-out problems accuracy is measured on."""
    sft_data: str
    rs_prompts: str
    dpo_prompts: str
    test: list
    train: list = field(default_factory=list)
    files: dict = field(default_factory=dict)


def arithmetic_round_task(out, n_train: int, n_test: int, seed: int, max_value: int, rs_prompts: int,
                          dpo_prompts: int) -> RoundTask:
    """The arithmetic task (herd.posttrain.tasks) written to `out`: train/test files, the first
    `rs_prompts` train problems as RS prompts and the next `dpo_prompts` as DPO prompts."""
    from herd.posttrain.data import write_jsonl
    from herd.posttrain.tasks import split_task, write_task

    d = Path(out)
    files = write_task(d, n_train, n_test, seed, max_value)
    train, test = split_task(n_train, n_test, seed, max_value)
    files["rs_prompts"] = str(d / "rs_prompts.jsonl")
    files["dpo_prompts"] = str(d / "dpo_prompts.jsonl")
    write_jsonl(files["rs_prompts"], (p.prompt_record() for p in train[:rs_prompts]))
    write_jsonl(files["dpo_prompts"], (p.prompt_record() for p in train[rs_prompts:rs_prompts + dpo_prompts]))
    return RoundTask(sft_data=files["train"], rs_prompts=files["rs_prompts"],
                     dpo_prompts=files["dpo_prompts"], test=test, train=train, files=files)


def _on(stage_cfg, device: str, dtype: str):
    """A stage's config set to run on `device` in `dtype` (set as attributes, so this works
    whether or not the config class declares the fields)."""
    stage_cfg.device = device
    stage_cfg.dtype = dtype
    return stage_cfg


def post_train_round(base: str, task: RoundTask, cfg: RoundConfig, *, log=print, prefix: str = "posttrain",
                     run_step=None) -> dict:
    """SFT -> rejection sampling (+SFT) -> DPO from the checkpoint `base` (module docstring);
    returns {"sft": ..., "rs": ..., "dpo": ...}. `run_step(name, fn)` -> fn()'s outputs (default:
    calls fn); `log` gets one line per result, starting with `prefix`."""
    import torch

    from herd.checkpoint import load_model
    from herd.posttrain.common import resolve_device
    from herd.posttrain.dpo import DPOConfig, dpo
    from herd.posttrain.rejection import RSConfig, rejection_sample
    from herd.posttrain.sft import SFTConfig, sft
    from herd.posttrain.tasks import task_accuracy

    from herd.posttrain.common import model_shapes

    # a bad device or dtype stops here, before any work; "auto" probes the base model's own shapes
    dev, dt = resolve_device(cfg.device, cfg.dtype, shapes=model_shapes(base))
    device, dtype = str(dev), str(dt).replace("torch.", "")
    run = run_step or (lambda name, fn: fn())
    o = Path(cfg.out)

    def accuracy(path) -> float:
        model, tok = load_model(path, device=dev, dtype=dt)
        acc = float(task_accuracy(model, tok, task.test, max_new_tokens=cfg.max_new_tokens))
        del model
        if dev.type == "cuda":
            torch.cuda.empty_cache()
        return acc

    def sft_cfg(model, data, out, lr, steps):
        # One dialog per row (pack=False): the task's dialogs are ~50 tokens, and on a CPU the
        # document-mask path (attention per document slice) costs more than the padding it saves.
        return _on(SFTConfig(model=str(model), data=data, out=str(out), lr=lr, steps=steps,
                             batch_size=cfg.batch_size, seq_len=cfg.seq_len, seed=cfg.seed, quiet=cfg.quiet,
                             warmup=cfg.warmup, save_every=0, pack=False), device, dtype)

    def sample(model, prompts, out) -> dict:
        """K samples per prompt scored by the exact-answer verifier (herd.posttrain.rejection:
        the best correct sample per prompt as SFT data, (correct, wrong) pairs)."""
        return rejection_sample(_on(RSConfig(model=str(model), prompts=prompts, out=str(out), scorer="math",
                                             k=cfg.k, max_new_tokens=cfg.max_new_tokens,
                                             temperature=cfg.temperature, seed=cfg.seed, quiet=cfg.quiet,
                                             chunk=cfg.rs_chunk), device, dtype))

    def step_sft() -> dict:
        acc_base = accuracy(base)
        log(f"{prefix}: {'base':9s} held-out accuracy {acc_base:.3f}")
        t = time.time()
        m = sft(sft_cfg(base, task.sft_data, o / "sft", cfg.sft_lr, cfg.sft_steps))
        seconds = time.time() - t
        acc = accuracy(o / "sft")
        log(f"{prefix}: {'sft':9s} held-out accuracy {acc:.3f}")
        return {"model_dir": str(o / "sft"), "accuracy_base": acc_base, "accuracy": acc, "metrics": m,
                "seconds": seconds, "device": device, "dtype": dtype}

    def step_rs(prev: dict) -> dict:
        t = time.time()
        rs = sample(prev["model_dir"], task.rs_prompts, o / "rs")
        log(f"{prefix}: rejection sampling pass@1 {rs['pass@1']:.3f}, pass@{cfg.k} {rs['pass@k']:.3f}, "
            f"kept {rs['kept_for_sft']}, pairs {rs['pairs']}")
        if rs["kept_for_sft"] == 0:
            raise RoundStopped("rejection sampling found no correct sample to fine-tune on (the SFT model is "
                               "too weak)")
        mix = f"{o / 'rs' / 'sft.jsonl'},{task.sft_data}"  # the RS samples mixed with the SFT data
        m = sft(sft_cfg(prev["model_dir"], mix, o / "rs_sft", cfg.rs_sft_lr, cfg.rs_sft_steps))
        seconds = time.time() - t
        acc = accuracy(o / "rs_sft")
        log(f"{prefix}: {'rs':9s} held-out accuracy {acc:.3f}")
        return {"model_dir": str(o / "rs_sft"), "accuracy": acc, "rejection_sampling": rs, "metrics": m,
                "pairs": str(o / "rs" / "pairs.jsonl"), "seconds": seconds}

    def step_dpo(prev: dict) -> dict:
        t = time.time()
        samp = sample(prev["model_dir"], task.dpo_prompts, o / "dpo_samples")
        log(f"{prefix}: preference pairs from the RS model: {samp['pairs']} (pass@1 {samp['pass@1']:.3f})")
        if not samp.get("pairs"):
            raise RoundStopped("sampling from the RS model produced no (correct, wrong) pair for DPO")
        m = dpo(_on(DPOConfig(model=prev["model_dir"], data=str(o / "dpo_samples" / "pairs.jsonl"),
                              out=str(o / "dpo"), lr=cfg.dpo_lr, steps=cfg.dpo_steps,
                              batch_size=cfg.dpo_batch, max_len=cfg.seq_len, lora_rank=cfg.dpo_lora_rank,
                              seed=cfg.seed, quiet=cfg.quiet, warmup=cfg.warmup, save_every=0),
                    device, dtype))
        seconds = time.time() - t
        acc = accuracy(o / "dpo")
        log(f"{prefix}: {'dpo':9s} held-out accuracy {acc:.3f}")
        return {"model_dir": str(o / "dpo"), "accuracy": acc, "metrics": m, "sampling": samp,
                "seconds": seconds}

    res = {"sft": run("sft", step_sft)}
    res["rs"] = run("rs", lambda: step_rs(res["sft"]))
    res["dpo"] = run("dpo", lambda: step_dpo(res["rs"]))
    return res


__all__ = ["RoundConfig", "RoundTask", "RoundStopped", "arithmetic_round_task", "post_train_round"]
