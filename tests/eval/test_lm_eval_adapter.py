"""The lm-eval-harness adapter: its log-likelihoods are herd's own, and lm-eval runs a local task."""

import json

import pytest
import torch
import torch.nn.functional as F

lm_eval = pytest.importorskip("lm_eval")

from herd.eval.scoring import encode_pair, loglikelihood, token_logprobs  # noqa: E402


def inst(kind, args):
    from lm_eval.api.instance import Instance

    return Instance(request_type=kind, doc={}, arguments=args, idx=0)


@pytest.fixture(scope="module")
def adapter(tiny):
    from herd.eval.lm_eval_adapter import HerdLM

    model, tok = tiny
    return HerdLM(model=model, tokenizer=tok, batch_size=4)


def test_registered():
    import herd.eval.lm_eval_adapter  # noqa: F401
    from lm_eval.api.registry import get_model

    assert get_model("herd").__name__ == "HerdLM"


def test_loglikelihood_equals_herd(adapter, tiny):
    model, tok = tiny
    reqs = [
        ("Question: what is the capital of France?\nAnswer:", " Paris"),
        ("2 + 2 =", " 4"),
        ("Trailing space ", "moves"),
        ("", "An empty context is BOS alone"),
    ]
    got = adapter.loglikelihood([inst("loglikelihood", r) for r in reqs])
    ours = loglikelihood(model, tok, reqs[:3])
    for (a, ga), (b, gb) in zip(got[:3], ours):
        assert a == pytest.approx(b, abs=1e-5) and ga == gb
    # and both equal the log-softmax of the model's logits
    for (c, x), (ll, _) in zip(reqs, got):
        ctx, cont = encode_pair(tok, c, x) if c else ([tok.bos_id], tok.encode(x))
        full = torch.tensor([ctx + cont])
        with torch.no_grad():
            lp = F.log_softmax(model(full[:, :-1]), -1)[0]
        ref = sum(float(lp[len(ctx) - 1 + i, t]) for i, t in enumerate(cont))
        assert ll == pytest.approx(ref, abs=1e-4)


def test_rolling_and_generate(adapter, tiny):
    model, tok = tiny
    text = "A held-out paragraph for perplexity. It has two sentences."
    (r,) = adapter.loglikelihood_rolling([inst("loglikelihood_rolling", (text,))])
    assert r == pytest.approx(float(token_logprobs(model, tok.encode(text, bos=True)).sum()), abs=1e-4)
    (g,) = adapter.generate_until(
        [inst("generate_until", ("Once upon a time", {"until": ["\n"], "max_gen_toks": 6}))]
    )
    from herd.eval.scoring import generate

    assert g == generate(model, tok, ["Once upon a time"], max_new_tokens=6, stop=["\n"])[0][0]


@pytest.mark.slow  # lm-eval's evaluator imports datasets and indexes tasks: ~1 min on 2 busy cores
def test_simple_evaluate_local_task(adapter, tmp_path):
    """lm-eval's own evaluator on a local multiple-choice task file, with herd as the model."""
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    data = tmp_path / "qa.jsonl"
    rows = [
        {"q": "What is 2 + 2?", "choices": ["3", "4", "5"], "gold": 1},
        {"q": "Capital of France?", "choices": ["Paris", "Rome", "Oslo"], "gold": 0},
        {"q": "Color of the sky?", "choices": ["green", "blue", "red"], "gold": 1},
    ]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "herd_local_qa.yaml").write_text(
        "task: herd_local_qa\n"
        "dataset_path: json\n"
        f"dataset_kwargs:\n  data_files:\n    test: {data}\n"
        "test_split: test\n"
        "output_type: multiple_choice\n"
        'doc_to_text: "Question: {{q}}\\nAnswer:"\n'
        'doc_to_choice: "{{choices}}"\n'
        "doc_to_target: gold\n"
        "metric_list:\n  - metric: acc\n"
    )
    out = simple_evaluate(
        model=adapter,
        tasks=["herd_local_qa"],
        task_manager=TaskManager(include_path=str(tmp_path), include_defaults=False),
        log_samples=True,
    )
    res = out["results"]["herd_local_qa"]
    # recompute the accuracy from herd's own scores
    from herd.eval.scoring import loglikelihood as ll

    correct = 0
    for r in rows:
        scores = [
            s
            for s, _ in ll(
                adapter.model,
                adapter.tokenizer,
                [(f"Question: {r['q']}\nAnswer:", " " + c) for c in r["choices"]],
            )
        ]
        correct += max(range(3), key=scores.__getitem__) == r["gold"]
    assert res["acc,none"] == pytest.approx(correct / 3)
