"""End to end on a CPU: a tiny pretrained herd model -> SFT -> rejection sampling with the
verifier (-> SFT on the best samples) -> DPO; held-out arithmetic accuracy rises after each stage.
Slow (minutes): run with `pytest -m slow tests/posttrain/test_e2e.py`."""

import json

import pytest
import torch


@pytest.mark.slow
def test_posttraining_round_raises_heldout_accuracy(tmp_path):
    from herd.posttrain.demo import run_demo

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the run documented in docs/posttraining.md; one thread is deterministic
    try:
        res = run_demo(tmp_path / "demo")
    finally:
        torch.set_num_threads(threads)
    acc = res["accuracy"]
    assert acc["sft"] > acc["base"]
    assert acc["rs"] > acc["sft"]
    assert acc["dpo"] > acc["rs"]
    assert 0.1 < acc["sft"] < 0.9  # SFT leaves room for the later stages
    rs = res["rejection_sampling"]
    assert rs["pass@k"] > rs["pass@1"] and rs["gain"] > 0  # best-of-K beats one sample
    assert res["dpo"]["reward_accuracy"] > 0.5 and res["dpo"]["margin"] > 0
    assert json.loads((tmp_path / "demo" / "results.json").read_text())["accuracy"] == acc
