"""Rejection sampling: K samples per prompt, scored by the verifier or a reward model; the best
becomes SFT data; the score distribution and best-of-K gain are reported. Also the reward-model
and DPO commands on tiny data."""

import json

import pytest

from herd.checkpoint import load_model
from herd.errors import HerdError
from herd.posttrain.config import DPOConfig, RMConfig, RSConfig
from herd.posttrain.dpo import dpo
from herd.posttrain.rejection import build_outputs, extract_code, rejection_sample, summarize
from herd.posttrain.reward import load_reward_model, train_reward_model
from herd.posttrain.tasks import arithmetic_task


def test_best_of_k_selection_and_stats():
    msgs = [{"role": "user", "content": "q"}]
    recs = [{"messages": msgs, "answer": 7, "samples": ["#### 5", "#### 7", "#### 7", "x"],
             "scores": [0, 1, 1, 0]},
            {"messages": msgs, "answer": 3, "samples": ["#### 1", "#### 2"], "scores": [0, 0]}]
    sft_rows, pairs = build_outputs(recs, verifier=True)
    assert len(sft_rows) == 1 and sft_rows[0]["messages"][-1] == {"role": "assistant", "content": "#### 7"}
    assert pairs == [{"messages": msgs, "chosen": "#### 7", "rejected": "#### 5", "answer": 7}]
    st = summarize(recs, verifier=True)
    assert st["mean_score"] == pytest.approx(2 / 6) and st["best_of_k"] == 0.5
    assert st["gain"] == pytest.approx(0.5 - 2 / 6) and st["pass@k"] == 0.5
    assert st["correct_per_prompt"] == {"0": 1, "2": 1}
    # with a reward model every prompt keeps its best sample
    sft_rows, _ = build_outputs([{"messages": msgs, "samples": ["a", "b"], "scores": [-1.0, 2.0]}],
                                verifier=False)
    assert sft_rows[0]["messages"][-1]["content"] == "b" and sft_rows[0]["score"] == 2.0


def _prompts(path, n=6):
    with open(path, "w") as f:
        for p in arithmetic_task(n, seed=5):
            f.write(json.dumps(p.prompt_record()) + "\n")
        f.write('{"prompt": "no answer here"}\n')  # bad for the math verifier: skipped, reported
    return str(path)


def test_rejection_sample_with_verifier(tmp_path, tiny_ckpt, capsys):
    prompts = _prompts(tmp_path / "p.jsonl")
    st = rejection_sample(RSConfig(model=str(tiny_ckpt), prompts=prompts, out=str(tmp_path / "rs"), k=4,
                                   max_new_tokens=8, quiet=True, chunk=4))
    assert "p.jsonl:7: bad prompt record: the math verifier needs 'answer'" in capsys.readouterr().err
    assert st["prompts"] == 6 and st["samples"] == 24 and st["k"] == 4
    assert {"mean_score", "best_of_k", "gain", "pass@1", "pass@k", "quartiles"} <= set(st)
    samples = [json.loads(x) for x in (tmp_path / "rs" / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 6 and all(len(s["samples"]) == 4 and len(s["scores"]) == 4 for s in samples)
    assert json.loads((tmp_path / "rs" / "stats.json").read_text())["stats"]["prompts"] == 6
    assert not (tmp_path / "rs" / "samples.partial.jsonl").exists()


def test_rejection_sample_resumes(tmp_path, tiny_ckpt):
    prompts = _prompts(tmp_path / "p.jsonl", n=4)
    out = tmp_path / "rs"
    out.mkdir()
    done = {"index": 0, "messages": [{"role": "user", "content": "q"}], "answer": 1,
            "samples": ["#### 1"], "scores": [1.0]}
    (out / "samples.partial.jsonl").write_text(json.dumps(done) + "\n{cut")
    st = rejection_sample(RSConfig(model=str(tiny_ckpt), prompts=prompts, out=str(out), k=1, max_new_tokens=4,
                                   quiet=True))
    assert st["prompts"] == 4
    first = json.loads((out / "samples.jsonl").read_text().splitlines()[0])
    assert first["samples"] == ["#### 1"]  # taken from the interrupted run, not sampled again


def _prefs(path, n=8, edited=True):
    with open(path, "w") as f:
        for p in arithmetic_task(n, seed=9):
            r = {"prompt": p.question, "chosen": p.solution, "rejected": f"#### {p.answer + 1}"}
            if edited:
                r["edited"] = p.solution + " (checked)"
            f.write(json.dumps(r) + "\n")
    return str(path)


def test_reward_model_train_and_score(tmp_path, tiny_ckpt):
    data = _prefs(tmp_path / "prefs.jsonl")
    m = train_reward_model(RMConfig(model=str(tiny_ckpt), data=data, eval_data=data, out=str(tmp_path / "rm"),
                                    lr=1e-3, steps=3, batch_size=4, quiet=True, warmup=0))
    assert m["heldout_pairs"] == 8 * 3  # edited > chosen > rejected: three ordered pairs each
    assert 0 <= m["heldout_pairwise_accuracy"] <= 1
    rm, tok = load_reward_model(tmp_path / "rm")
    backbone, _ = load_model(tmp_path / "rm")  # the backbone loads as a plain herd model
    assert backbone.args == rm.args
    prompts = _prompts(tmp_path / "p.jsonl", n=2)
    st = rejection_sample(RSConfig(model=str(tiny_ckpt), prompts=prompts, out=str(tmp_path / "rs"),
                                   scorer=str(tmp_path / "rm"), k=3, max_new_tokens=6, quiet=True))
    assert st["prompts"] == 3 and st["kept_for_sft"] == 3 and "pass@k" not in st
    with pytest.raises(HerdError, match="not a reward model"):
        load_reward_model(tiny_ckpt)


def test_dpo_run(tmp_path, tiny_ckpt):
    data = _prefs(tmp_path / "prefs.jsonl", edited=False)
    m = dpo(DPOConfig(model=str(tiny_ckpt), data=data, out=str(tmp_path / "dpo"), lr=1e-3, steps=4,
                      batch_size=4, quiet=True, warmup=0, lora_rank=2))
    assert m["pairs"] == 8 and m["steps"] == 4
    assert {"reward_accuracy", "margin", "chosen_reward", "rejected_reward"} <= set(m)
    model, _ = load_model(tmp_path / "dpo")
    assert not any("lora" in k for k in model.state_dict())
    # the first step's rewards are 0: the policy equals the reference whose log-probs were cached
    assert m["margin"] is not None


def test_code_verifier_uses_sandbox():
    pytest.importorskip("herd.eval.sandbox")
    from herd.posttrain.rejection import make_scorer

    score = make_scorer(RSConfig(scorer="code", code_timeout=20))
    rec = {"tests": "assert add(2, 3) == 5"}
    good = "Here:\n```python\ndef add(a, b):\n    return a + b\n```"
    bad = "```python\ndef add(a, b):\n    return a - b\n```"
    assert score(rec, [good, bad]) == [1.0, 0.0]
    assert extract_code("plain") == "plain"
