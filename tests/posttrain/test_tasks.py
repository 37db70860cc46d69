"""The arithmetic task (exact answers, seeded disjoint splits), the verifier, GSM8K loading, and
shared-prefix sampling (K samples from one prefill equal independent decoding)."""

import json
import os

import pytest
import torch

from herd.errors import HerdError
from herd.posttrain.sampling import sample_completions, strip_stop
from herd.posttrain.tasks import (arithmetic_task, extract_answer, is_correct, load_gsm8k, load_problems,
                                  split_task, write_task)

SHARED = os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared")


def test_problems_have_exact_answers():
    probs = arithmetic_task(200, seed=3)
    assert len({p.question for p in probs}) == 200
    for p in probs:
        eq, final = p.solution.split("\n")
        lhs, rhs = eq.split(" = ")
        assert eval(lhs) == int(rhs) == p.answer >= 0  # noqa: S307 (our own generated digits)
        assert final == f"#### {p.answer}" and is_correct(p.solution, p.answer)
        nums = [int(w) for w in p.question.replace(".", " ").replace("?", " ").split() if w.isdigit()]
        assert sorted(nums) == sorted(int(x) for x in lhs.split() if x.isdigit())
    assert [p.question for p in arithmetic_task(20, seed=3)] == [p.question for p in probs[:20]]
    assert [p.question for p in arithmetic_task(20, seed=4)] != [p.question for p in probs[:20]]


def test_split_is_disjoint_and_written(tmp_path):
    tr, te = split_task(300, 100, seed=0, max_value=20)
    assert not {p.question for p in tr} & {p.question for p in te}
    files = write_task(tmp_path, 30, 10, seed=0)
    lines = (tmp_path / "train.jsonl").read_text().splitlines()
    rec = json.loads(lines[0])
    assert len(lines) == 30 and rec["messages"][1]["role"] == "assistant" and "answer" in rec
    probs = load_problems(files["test_prompts"])
    assert len(probs) == 10 and all(is_correct(f"#### {p.answer}", p.answer) for p in probs)
    with pytest.raises(HerdError):
        arithmetic_task(-1, 0)


def test_extract_answer():
    assert extract_answer("3 + 4 = 7\n#### 7") == 7
    assert extract_answer("#### 1,234") == 1234
    assert extract_answer("#### 2 then #### -5") == -5
    assert extract_answer("#### 2.50") == 2.5
    assert extract_answer("the answer is 7") is None
    assert is_correct("#### 7", "7") and not is_correct("#### 8", 7) and not is_correct("7", 7)


@pytest.mark.skipif(not os.path.isdir(os.path.join(SHARED, "data", "gsm8k")), reason="no shared GSM8K")
def test_gsm8k_loader():
    probs = load_gsm8k(os.path.join(SHARED, "data", "gsm8k", "test.jsonl"))
    assert len(probs) == 1319
    assert probs[0].answer == 18 and "<<" not in probs[0].solution and probs[0].question.startswith("Janet")
    assert all(is_correct(p.solution, p.answer) for p in probs)


def _naive_decode(model, prompt, n, stop):
    ids = list(prompt)
    for _ in range(n):
        nxt = int(model(torch.tensor([ids]))[0, -1].argmax())
        ids.append(nxt)
        if nxt in stop:
            break
    return ids[len(prompt):]


def test_k_samples_per_prompt_match_naive_decoding(tok, tiny_model):
    prompts = [tok.encode("Tom has 3", bos=True), tok.encode("Mia had 12 pens", bos=True),
               tok.encode("Leo has 4", bos=True)]
    stop = set(tok.stop_tokens)
    out = sample_completions(tiny_model, tok, prompts, k=3, max_new_tokens=6, temperature=0.0)
    for p, samples in zip(prompts, out):
        want = _naive_decode(tiny_model, p, 6, stop)
        assert len(samples) == 3 and all(s == want for s in samples)  # greedy: K identical copies
    sampled = sample_completions(tiny_model, tok, prompts[:1], k=8, max_new_tokens=6, temperature=1.0,
                                 seed=3)[0]
    assert len(sampled) == 8 and len({tuple(s) for s in sampled}) > 1  # K samples of one prompt differ
    again = sample_completions(tiny_model, tok, prompts[:1], k=8, max_new_tokens=6, temperature=1.0,
                               seed=3)[0]
    assert again == sampled  # seeded


def test_strip_stop(tok):
    assert strip_stop([5, 6, tok.eot_id], tok) == ([5, 6], True)
    assert strip_stop([5, 6], tok) == ([5, 6], False)
