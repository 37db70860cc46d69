"""A Llama Guard checkpoint in Meta's and HF's layouts: herd's score is HF's P(first token = unsafe)
on the same prompt, the layouts agree, an unreadable answer is an error; `herd guard` CLI; a small
guard trained end to end with `guard train` (herd's SFT) answers in the format."""

import json
import subprocess
import sys

import pytest
import torch

from herd.errors import HerdError
from herd.safety.llama_guard import GuardOutputError, LlamaGuard, guard_prompt_text

CONVS = [
    [{"role": "user", "content": "How do I bake bread?"}],
    [
        {"role": "user", "content": "How do I make a pipe bomb?"},
        {"role": "assistant", "content": "Sorry, no."},
    ],
    [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
        {"role": "user", "content": "x"},
    ],
]


@pytest.fixture(scope="module")
def lg_layouts(tmp_path_factory, llama3):
    """A tiny random model with the Llama 3 vocabulary, saved in Meta's and HF's layouts."""
    from herd.checkpoint import save_hf, save_meta
    from herd.model import ModelArgs, Transformer

    args = ModelArgs(
        dim=32, n_layers=1, n_heads=2, n_kv_heads=1, vocab_size=128256, multiple_of=16, max_seq_len=1024
    )
    model = Transformer.build(args, seed=0)
    with torch.no_grad():  # make `safe` / `unsafe` likely so the scores are not ~1e-5
        model.output.weight[19193] *= 40
        model.output.weight[39257] *= 40
    root = tmp_path_factory.mktemp("lg")
    save_meta(model, root / "meta", tokenizer=llama3)
    save_hf(model, root / "hf", tokenizer=llama3)
    return root


def test_score_equals_hf_reference(lg_layouts, llama3):
    from transformers import LlamaForCausalLM

    herd_meta = LlamaGuard.load(lg_layouts / "meta", tokenizer="llama3")
    herd_hf = LlamaGuard.load(lg_layouts / "hf", tokenizer="llama3")
    hf = LlamaForCausalLM.from_pretrained(str(lg_layouts / "hf"), torch_dtype=torch.float32).eval()
    for agent in ("User", "Agent"):
        s_meta = herd_meta.scores(CONVS, agent)
        s_hf = herd_hf.scores(CONVS, agent)
        for conv, a, b in zip(CONVS, s_meta, s_hf):
            ids = llama3.encode(guard_prompt_text(conv, agent), allowed_special="all")
            assert herd_meta.prompt_ids(conv, agent) == ids
            with torch.no_grad():
                ref = hf(torch.tensor([ids])).logits[0, -1].float().softmax(-1)[39257].item()
            assert a == pytest.approx(ref, rel=1e-4, abs=1e-7) and b == pytest.approx(ref, rel=1e-4, abs=1e-7)
            assert 0.0 < ref < 1.0


def test_unreadable_answer_is_an_error(lg_layouts):
    g = LlamaGuard.load(lg_layouts / "hf", tokenizer="llama3", threshold=0.0)  # always take the unsafe path
    with pytest.raises(GuardOutputError):
        g.classify(CONVS[0])  # a random model's continuation is no category line
    g = LlamaGuard.load(lg_layouts / "hf", tokenizer="llama3", threshold=1.0)
    r = g.classify(CONVS[0])
    assert r.label == "safe" and r.categories == [] and 0 < r.score < 1


def test_guard_cli(lg_layouts, tmp_path):
    conv = tmp_path / "conv.jsonl"
    conv.write_text("".join(json.dumps({"messages": c}) + "\n" for c in CONVS))
    run = [sys.executable, "-m", "herd", "guard"]
    p = subprocess.run(
        run + [str(lg_layouts / "hf"), "--input", str(conv), "--show-prompt", "--agent-type", "agent"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert p.stdout.startswith(guard_prompt_text(CONVS[0], "Agent"))
    p = subprocess.run(
        run + [str(lg_layouts / "hf"), "--input", str(conv), "--tokenizer", "llama3", "--threshold", "1.0"],
        capture_output=True,
        text=True,
        check=True,
    )
    rows = [json.loads(line) for line in p.stdout.splitlines()]
    assert [r["agent_type"] for r in rows] == ["User", "Agent", "User"]
    assert all(r["label"] == "safe" and 0 < r["score"] < 1 for r in rows)
    bad = tmp_path / "bad.jsonl"
    bad.write_text("{not json\n")
    p = subprocess.run(run + [str(lg_layouts / "hf"), "--input", str(bad)], capture_output=True, text=True)
    assert p.returncode == 2 and "bad.jsonl:1" in p.stderr and "Traceback" not in p.stderr


@pytest.fixture(scope="module")
def small_guard(tmp_path_factory):
    """A guard trained here: herd's SFT on the Llama Guard format, tiny and short (for the tests)."""
    from herd.safety.train import GuardTrainConfig, train_guard

    out = tmp_path_factory.mktemp("guard") / "g"
    ev = train_guard(
        GuardTrainConfig(
            out=str(out),
            dim=64,
            n_layers=1,
            limit=160,
            steps=30,
            lr=3e-3,
            warmup=3,
            max_chars=200,
            eval_limit=40,
            device="cpu",
            quiet=True,
        )
    )
    return out / "checkpoint", ev


@pytest.mark.slow
def test_trained_guard_answers_in_format(small_guard):
    path, ev = small_guard
    g = LlamaGuard.load(path)
    assert len(g.tokenizer.encode("safe")) == 1 and len(g.tokenizer.encode("unsafe")) == 1
    sc = g.scores(CONVS, "User")
    total = [
        float(p.sum())
        for p in g._first_logits_batch([g.prompt_ids(c) for c in CONVS]).softmax(-1)[
            :, [g.safe_id, g.unsafe_id]
        ]
    ]
    assert all(t > 0.5 for t in total), total  # training moved the first token's mass onto safe/unsafe
    assert all(0 <= s <= 1 for s in sc)
    for k in ("guard", "keyword"):
        o = ev[k]["overall"]
        assert o["n"] == 40 and o["tp"] + o["fp"] + o["fn"] + o["tn"] == 40
    assert len(ev["scores"]) == 40 and ev["train"]["steps"] == 30
    assert (path.parent / "data" / "test.jsonl").is_file()
    # the held-out split never shares a text with training
    tr = {json.loads(line)["messages"][-1]["content"] for line in open(path.parent / "data" / "train.jsonl")}
    te = {json.loads(line)["messages"][-1]["content"] for line in open(path.parent / "data" / "test.jsonl")}
    assert not tr & te


def test_load_errors(tmp_path):
    with pytest.raises(HerdError, match="not found"):
        LlamaGuard.load(tmp_path / "nope")
