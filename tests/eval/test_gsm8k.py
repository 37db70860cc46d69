"""GSM8K: final-answer extraction is exact on every gold answer; the 8-shot CoT prompt and the
end-to-end run on a model."""

import json

import pytest

from herd.errors import HerdError
from herd.eval.gsm8k import (
    WEI_SHOTS,
    build_prompt,
    cot_from_solution,
    extract_answer,
    gold_answer,
    gsm8k,
    load_gsm8k,
    make_shots,
    normalize_number,
)

DATA = "/work/shared/data/gsm8k"


@pytest.fixture(scope="module")
def test_set():
    import os

    if not os.path.isfile(f"{DATA}/test.jsonl"):
        pytest.skip("GSM8K data not present")
    return load_gsm8k(f"{DATA}/test.jsonl")


def test_extraction_is_exact_on_gold(test_set):
    assert len(test_set) == 1319
    # the reference solutions themselves, and the same solutions written as the prompt's chains of thought
    assert all(extract_answer(r["answer"]) == gold_answer(r["answer"]) for r in test_set)
    assert all(extract_answer(cot_from_solution(r["answer"])) == gold_answer(r["answer"]) for r in test_set)
    assert [extract_answer(a) for _, a in WEI_SHOTS] == ["6", "5", "39", "8", "9", "29", "33", "8"]


def test_extraction_cases():
    assert extract_answer("5 x 3 = 15. The answer is $1,234.") == "1234"
    assert extract_answer("So she has 18.00 dollars left. The answer is 18.00.") == "18"
    assert extract_answer("Half is 2.5 The answer is 2.5") == "2.5"
    assert extract_answer("it drops by 7 so the result is -3") == "-3"
    assert extract_answer("I don't know") is None
    assert normalize_number("1,000") == "1000" and normalize_number("abc") is None


def test_prompt_is_8_shot(test_set):
    shots = make_shots()
    p = build_prompt(test_set[0]["question"], shots)
    assert p.count("Q: ") == 9 and p.endswith("\nA:") and len(shots) == 8
    from_train = make_shots(f"{DATA}/train.jsonl", 8)
    assert len(from_train) == 8 and all("<<" not in a and a.endswith(".") for _, a in from_train)


def test_bad_file(tmp_path):
    f = tmp_path / "g.jsonl"
    f.write_text(json.dumps({"question": "q", "answer": "no final"}) + "\n")
    with pytest.raises(HerdError):
        load_gsm8k(f)
    with pytest.raises(HerdError):
        load_gsm8k(tmp_path / "missing.jsonl")


def test_gsm8k_run(tiny, test_set):
    model, tok = tiny
    res = gsm8k(model, tok, f"{DATA}/test.jsonl", limit=2, max_new_tokens=8)
    assert res["n"] == 2 and 0.0 <= res["accuracy"] <= 1.0
    assert [e["gold"] for e in res["examples"]] == [gold_answer(r["answer"]) for r in test_set[:2]]
