"""Results of an evaluation run (paper §5): scores with 95% confidence intervals, a printed table
and a JSON file.

The paper reports CI = 1.96 * sqrt(S (1 - S) / N) for a score S in [0, 1] over N examples (it
treats examples as independent draws; it is not defined for unbounded metrics such as perplexity,
which get no interval here).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from herd.fileio import atomic_write_json


def ci95(score: float, n: int) -> float:
    """Half-width of the 95% confidence interval of a proportion `score` over `n` examples."""
    if n <= 0 or not 0.0 <= score <= 1.0:
        return float("nan")
    return 1.96 * math.sqrt(score * (1.0 - score) / n)


def entry(task: str, metric: str, score: float, n: int, bounded: bool = True, **extra) -> dict:
    """One row of results: task, metric, score, n and (for a proportion) its ci95."""
    row = {"task": task, "metric": metric, "score": float(score), "n": int(n)}
    if bounded:
        row["ci95"] = ci95(float(score), int(n))
    row.update(extra)
    return row


def format_table(rows: list[dict]) -> str:
    """Fixed-width table: task, metric, score ± ci95, N."""
    head = ("task", "metric", "score", "95% CI", "N")
    lines = []
    for r in rows:
        ci = r.get("ci95")
        lines.append(
            (
                r["task"],
                r["metric"],
                f"{r['score']:.4f}",
                f"± {ci:.4f}" if ci is not None and not math.isnan(ci) else "-",
                str(r["n"]),
            )
        )
    w = [max(len(h), *(len(row[i]) for row in lines)) if lines else len(h) for i, h in enumerate(head)]
    fmt = lambda cols: "  ".join(c.ljust(w[i]) if i < 2 else c.rjust(w[i]) for i, c in enumerate(cols))  # noqa
    return "\n".join([fmt(head), fmt(["-" * x for x in w])] + [fmt(row) for row in lines])


def write_results(results: dict, path: str | os.PathLike) -> Path:
    """Write the results JSON atomically (a crash never leaves half a file)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write_json(p, results, indent=2, default=float)


__all__ = ["ci95", "entry", "format_table", "write_results"]


def iter_jsonl(path):
    """(line number, record) for each non-blank line of a JSONL file; a line that is not JSON is a
    HerdError naming FILE:LINE. Shared by the eval data loaders."""
    from herd.errors import HerdError

    with open(path, encoding="utf-8") as f:
        for ln, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                yield ln, json.loads(line)
            except ValueError as e:
                raise HerdError(f"{path}:{ln}: not valid JSON ({e})") from None
