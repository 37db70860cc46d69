"""Multiple choice by log-likelihood and its robustness variants."""

import json

import pytest

from herd.errors import HerdError
from herd.eval.multiple_choice import (
    LABEL_SETS,
    build_prompt,
    format_question,
    load_mc,
    move_answer_to,
    multiple_choice,
    permute,
    robustness,
)
from herd.eval.scoring import loglikelihood

EXAMPLES = [
    {"question": "What is 2 + 2?", "choices": ["3", "4", "5", "22"], "answer": 1},
    {"question": "The capital of France is", "choices": ["Berlin", "Madrid", "Paris", "Rome"], "answer": "C"},
    {"question": "Water boils at sea level at", "choices": ["100 C", "50 C", "0 C", "10 C"], "answer": 0},
    {"question": "Which is a mammal?", "choices": ["shark", "trout", "eel", "whale"], "answer": "3"},
]


def test_format_and_load(tmp_path):
    q = format_question(EXAMPLES[0])
    assert q == "What is 2 + 2?\nA. 3\nB. 4\nC. 5\nD. 22\nAnswer:"
    assert format_question(EXAMPLES[0], "A)").splitlines()[1] == "A) 3"
    assert format_question(EXAMPLES[0], "1.").splitlines()[4] == "4. 22"
    assert format_question(EXAMPLES[0], "symbols").splitlines()[2] == "& 4"
    f = tmp_path / "mc.jsonl"
    f.write_text("\n".join(json.dumps(e) for e in EXAMPLES) + "\n")
    assert [e["answer"] for e in load_mc(f)] == [1, 2, 0, 3]
    f.write_text(json.dumps({"question": "q", "choices": ["a", "b"], "answer": 5}) + "\n")
    with pytest.raises(HerdError):
        load_mc(f)
    with pytest.raises(HerdError):
        format_question(EXAMPLES[0], "greek")


def test_permutation_and_bias_move_the_answer():
    e = {**EXAMPLES[0], "answer": 1}
    p = permute(e, [3, 2, 1, 0])
    assert p["choices"] == ["22", "5", "4", "3"] and p["choices"][p["answer"]] == "4"
    for pos in range(4):
        m = move_answer_to(e, pos)
        assert (
            m["answer"] == pos and m["choices"][pos] == "4" and sorted(m["choices"]) == sorted(e["choices"])
        )
    shots = [
        move_answer_to({**x, "answer": int(x["answer"]) if str(x["answer"]).isdigit() else 2}, 0)
        for x in EXAMPLES[2:]
    ]
    prompt = build_prompt(EXAMPLES[0], shots)
    assert prompt.count("Answer: A\n\n") == 2


@pytest.mark.parametrize("labels", list(LABEL_SETS))
def test_scores_equal_general_loglikelihood(tiny, labels):
    """The one-pass scoring of all labels equals scoring each " label" continuation separately."""
    model, tok = tiny
    res = multiple_choice(model, tok, EXAMPLES, labels=labels, n_shot=1, shots=EXAMPLES[2:])
    labs = LABEL_SETS[labels][0]
    for ex, r in zip(EXAMPLES, res["examples"]):
        prompt = build_prompt({**ex, "answer": r["answer"]}, [{**EXAMPLES[2], "answer": 0}], labels)
        ref = [x[0] for x in loglikelihood(model, tok, [(prompt, " " + labs[j]) for j in range(4)])]
        assert r["logprobs"] == pytest.approx(ref, abs=1e-4)
        assert r["pred"] == max(range(4), key=ref.__getitem__)
    assert res["accuracy"] == sum(r["correct"] for r in res["examples"]) / 4


def test_robustness_report(tiny):
    model, tok = tiny
    r = robustness(model, tok, EXAMPLES, shots=EXAMPLES, n_shot=2, label_sets=("A.", "1."))
    assert set(r["label_sets"]) == {"A.", "1."} and len(r["permutations"]) == 4
    assert set(r["label_bias"]) == {"A", "B", "C", "D"}
    for v in r["label_bias"].values():
        assert 0 <= v["accuracy"] <= 1 and 0 <= v["bias_rate"] <= 1
    assert r["permutations_spread"] == max(r["permutations"].values()) - min(r["permutations"].values())
    with pytest.raises(HerdError):
        multiple_choice(model, tok, EXAMPLES, n_shot=3, shots=EXAMPLES[:1])
