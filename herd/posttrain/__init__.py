"""Post-training (paper §4): SFT, reward model, rejection sampling, DPO, model averaging, LoRA.

The paper runs rounds of reward modelling -> rejection sampling -> SFT -> DPO (§4.1). Each stage is
one plain function taking one dataclass config; the CLI (`herd sft`, `herd rm`,
`herd rejection-sample`, `herd dpo`, `herd average`, `herd posttrain make-task`) only fills the
config from flags.

Python API (what the speedrun calls):

    from herd.posttrain import (SFTConfig, sft, RMConfig, train_reward_model, RSConfig, rejection_sample,
                                DPOConfig, dpo, average_checkpoints, arithmetic_task, write_task,
                                task_accuracy, load_gsm8k, run_demo)

    sft(SFTConfig(model="ckpt/base", data="sft.jsonl", out="ckpt/sft", lr=1e-5, epochs=1,
                  lora_rank=0))                          -> dict of metrics; writes a herd checkpoint
    train_reward_model(RMConfig(model=..., data="prefs.jsonl", out="ckpt/rm", eval_data=...))
                                                         -> {"pairwise_accuracy": ..., ...}; writes the
                                                            backbone + reward_head.safetensors
    rejection_sample(RSConfig(model="ckpt/sft", prompts="prompts.jsonl", out="rs/", k=8,
                              scorer="math" | "code" | "ckpt/rm"))
                                                         -> {"mean_score", "best_of_k", "gain", ...};
                                                            writes rs/sft.jsonl (best sample per
                                                            prompt), rs/pairs.jsonl, rs/samples.jsonl
    dpo(DPOConfig(model="ckpt/sft", data="pairs.jsonl", out="ckpt/dpo", beta=0.1, nll_coef=0.2))
                                                         -> {"reward_accuracy", "margin", ...}
    average_checkpoints(["a", "b"], out="avg", weights=None)   # uniform unless weights given
    arithmetic_task(n, seed)              -> list[Problem] (question, answer: int, solution text)
    write_task(out_dir, train=N, test=M, seed=S)         # train.jsonl / test.jsonl / prompts files
    load_gsm8k(path)                      -> list[Problem] from GSM8K's JSONL
    task_accuracy(model, tokenizer, problems, max_new_tokens=32) -> float (greedy, exact "#### N")
    load_problems(path)                   -> list[Problem] from a prompts/chat JSONL with "answer"
    run_demo(out_dir, DemoConfig(...))    -> dict: held-out accuracy after pretrain, SFT, RS, DPO
                                             (OUT/results.json; `herd posttrain demo OUT`)

Data formats (JSONL, one record a line; a bad line is reported as FILE:LINE: reason and skipped or
stops the run, `on_bad_line="skip"|"stop"`):
    chat (SFT):        {"messages": [{"role": "system|user|assistant|ipython", "content": "..."}, ...]}
    preference (RM/DPO): {"prompt": "..."} or {"messages": [...]}, plus "chosen", "rejected" and
                       optionally "edited" (each a string or an assistant message)
    prompts (RS):      {"prompt": "..."} or {"messages": [...]}, plus "answer" (math verifier) or
                       "tests" (code verifier)
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "SFTConfig": "herd.posttrain.sft",
    "sft": "herd.posttrain.sft",
    "RMConfig": "herd.posttrain.reward",
    "RewardModel": "herd.posttrain.reward",
    "train_reward_model": "herd.posttrain.reward",
    "load_reward_model": "herd.posttrain.reward",
    "RSConfig": "herd.posttrain.rejection",
    "rejection_sample": "herd.posttrain.rejection",
    "DPOConfig": "herd.posttrain.dpo",
    "dpo": "herd.posttrain.dpo",
    "dpo_loss": "herd.posttrain.dpo",
    "ranking_loss": "herd.posttrain.reward",
    "average_checkpoints": "herd.posttrain.average",
    "apply_lora": "herd.posttrain.lora",
    "merge_lora": "herd.posttrain.lora",
    "Problem": "herd.posttrain.tasks",
    "arithmetic_task": "herd.posttrain.tasks",
    "write_task": "herd.posttrain.tasks",
    "load_gsm8k": "herd.posttrain.tasks",
    "task_accuracy": "herd.posttrain.tasks",
    "extract_answer": "herd.posttrain.tasks",
    "run_demo": "herd.posttrain.demo",
    "DemoConfig": "herd.posttrain.demo",
    "load_problems": "herd.posttrain.tasks",
}


def __getattr__(name):
    # Lazy: `import herd.posttrain` stays cheap for the CLI; torch loads on first use.
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'herd.posttrain' has no attribute {name!r}")


__all__ = list(_EXPORTS)
