"""Pretraining with the Llama 3 recipe (paper §3.4; infrastructure §3.3): `herd pretrain`.

Python API (stable; used by herd.scaling and herd.speedrun):

    from herd.train import TrainConfig, load_config, pretrain

    cfg = load_config("recipes/herd-5m.toml", ["--run.out", "runs/x", "--optim.lr", "1e-3"])
    cfg.data.sources = [Source(path="data/tok", weight=1.0)]     # or edit any field directly
    result = pretrain(cfg)

`TrainConfig` (herd/train/config.py) is a plain dataclass with nested plain dataclasses:
  model        preset (herd-5m, llama3.1-405b, ...), overrides {ModelArgs field: value} (in TOML written
               directly in [model], e.g. `n_layers = 2`), init_from (a herd checkpoint to start from)
  data         sources [Source(path, weight)] (dirs from `herd tokenize`), val (dir; default: the
               sources' val split), tokenizer (default: the data's), doc_mask (document mask), seed
  optim        lr (peak), betas (0.9, 0.95), eps, weight_decay 0.1, grad_clip 1.0, impl (auto/fused/foreach)
  schedule     warmup_steps, decay_steps (0 = until annealing), final_lr, decay (cosine/linear/constant)
  stages       [Stage(after_tokens, batch_size, seq_len)]: the batch / sequence-length ramp
  long_context [LongContextStage(seq_len, tokens, batch_size)]
  anneal       tokens, sources (the high-quality mix; empty = main mix), checkpoints (snapshots averaged)
  eval         interval (steps), batches, batch_size, seq_len
  checkpoint   interval (steps), keep
  guard        max_bad_steps (rollback after that many non-finite steps in a row), spike_factor
  run          out (the output directory; `out_dir` is its old name), tokens or steps (main-phase
               length), device, dtype, compile, activation_checkpointing,
               micro_batch_tokens (gradient accumulation), seed, log_interval, tensorboard, progress,
               peak_flops, threads, resume

`load_config(toml_path_or_name_or_None, overrides: list[str]) -> TrainConfig`: `--section.field value`
overrides (list items as `--stages.0.batch_size 4`), through the loader every command shares
(herd.config, docs/config.md); an unknown field or a wrong type raises HerdError with one line.

`pretrain(cfg) -> dict` with keys: train_loss, val_loss (of the final model), tokens, steps, wall_time,
train_time, skipped_steps, rollbacks, loss_spikes, params, polyak_averaged, anneal_snapshots, out_dir,
model_dir (herd-format final model with the tokenizer: loads with herd.checkpoint.load_model),
metrics (metrics.jsonl path), checkpoint_dir. Under `torchrun --nproc_per_node N` it runs data-parallel
(FSDP2); every rank returns the same dict.

Files in run.out: config.json, metrics.jsonl (kind = start/train/val/checkpoint/skip/rollback/final),
checkpoints/step-NNNNNNNN/ (last `keep`), anneal/step-NNNNNNNN/ (herd-format snapshots), model/ (final).
"""

from herd.train.config import (AnnealConfig, CheckpointConfig, DataConfig, EvalConfig, GuardConfig,
                               LongContextStage, ModelConfig, OptimConfig, RunConfig, ScheduleConfig, Source,
                               Stage, TrainConfig, load_config)


def pretrain(cfg, log=None) -> dict:
    from herd.train.trainer import pretrain as _pretrain

    return _pretrain(cfg, log=log)


__all__ = ["TrainConfig", "ModelConfig", "DataConfig", "Source", "OptimConfig", "ScheduleConfig", "Stage",
           "LongContextStage", "AnnealConfig", "EvalConfig", "CheckpointConfig", "GuardConfig", "RunConfig",
           "load_config", "pretrain"]
