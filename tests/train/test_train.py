"""pretrain() end to end on a tiny model (paper §3.4): a real run, exact resume, corrupt-checkpoint
fallback, guards, Polyak averaging of the annealing snapshots, one-line errors."""

import json

import pytest
import torch
from train_helpers import tiny_config
from safetensors.torch import load_file

from herd.errors import HerdError
from herd.train import LongContextStage, pretrain
from herd.train import trainer as trainer_mod


def _weights(out):
    return load_file(str(out / "model" / "model.safetensors"))


def _records(out, kind="train"):
    return [r for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if r["kind"] == kind]


def test_run_anneal_polyak_and_export(para_tok_dir, tmp_path):
    out = tmp_path / "run"
    cfg = tiny_config(para_tok_dir, out, "--run.steps", "14", "--eval.interval", "8", "--checkpoint.interval",
                      "8", "--anneal.tokens", "768", "--anneal.checkpoints", "3")
    cfg.long_context = [LongContextStage(seq_len=128, tokens=512)]  # 2 steps of 2 x 128
    res = pretrain(cfg)
    assert res["steps"] == 19 and res["tokens"] == 19 * 256 and res["skipped_steps"] == 0
    train = _records(out)
    assert [r["step"] for r in train] == list(range(1, 20))
    assert [(r["phase"], r["batch_size"], r["seq_len"]) for r in train][13:16] == [
        ("stage0", 4, 64), ("long_context0", 2, 128), ("long_context0", 2, 128)]
    assert train[-1]["loss"] < train[0]["loss"] - 1.0  # it learns
    for k in ("tokens", "loss", "lr", "tokens_per_s", "mfu", "mem_gib", "grad_norm"):
        assert all(k in r for r in train)
    assert [r["phase"] for r in train][-3:] == ["anneal"] * 3
    assert train[-1]["lr"] == pytest.approx(3e-4 / 3, rel=0.3)
    assert [r["step"] for r in _records(out, "val")] == [8, 16]
    assert res["val_loss"] < train[0]["loss"]
    # final model = mean of the three annealing snapshots (Polyak)
    snaps = [load_file(str(out / "anneal" / f"step-{s:08d}" / "model.safetensors")) for s in (17, 18, 19)]
    final = _weights(out)
    assert res["polyak_averaged"] and len(res["anneal_snapshots"]) == 3
    for k, v in final.items():
        want = sum(s[k].double() for s in snaps) / 3
        assert torch.equal(v, want.float()), k
    assert not torch.equal(final["layers.0.attention.wq.weight"], snaps[-1]["layers.0.attention.wq.weight"])
    # the export loads with the tokenizer and gives the reported validation loss's ballpark
    from herd.checkpoint import load_model

    model, tok = load_model(res["model_dir"])
    assert tok is not None and tok.n_words == 512 and model.args.dim == 64
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-00000008", "step-00000016",
                                                                     "step-00000019"]


def _interrupt_at(monkeypatch, call: int):
    orig = trainer_mod.Trainer.train_step
    n = {"calls": 0}

    def step(self, phase, loader):
        n["calls"] += 1
        if n["calls"] == call:
            raise KeyboardInterrupt
        return orig(self, phase, loader)

    monkeypatch.setattr(trainer_mod.Trainer, "train_step", step)


def test_interrupt_and_resume_is_bit_identical(para_tok_dir, tmp_path, monkeypatch):
    extra = ["--run.steps", "12", "--checkpoint.interval", "4", "--eval.interval", "5"]
    ref = pretrain(tiny_config(para_tok_dir, tmp_path / "a", *extra))
    _interrupt_at(monkeypatch, 7)  # dies in step 7: steps 5-6 since the checkpoint at 4 are lost
    with pytest.raises(KeyboardInterrupt):
        pretrain(tiny_config(para_tok_dir, tmp_path / "b", *extra))
    monkeypatch.undo()
    res = pretrain(tiny_config(para_tok_dir, tmp_path / "b", *extra, "--run.resume", "true"))
    a, b = _weights(tmp_path / "a"), _weights(tmp_path / "b")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert res["train_loss"] == ref["train_loss"] and res["val_loss"] == ref["val_loss"]
    la = [r["loss"] for r in _records(tmp_path / "a")]
    lb = [r["loss"] for r in _records(tmp_path / "b")]
    assert la == lb  # the log was rewound to the checkpoint: one record per step
    again = pretrain(tiny_config(para_tok_dir, tmp_path / "b", *extra, "--run.resume", "true"))
    assert again["steps"] == 12 and again["train_loss"] == ref["train_loss"]  # a finished run: nothing to do
    assert [r["loss"] for r in _records(tmp_path / "b")] == la


def test_corrupt_latest_checkpoint_falls_back(para_tok_dir, tmp_path):
    out = tmp_path / "run"
    extra = ["--run.steps", "12", "--checkpoint.interval", "4"]
    pretrain(tiny_config(para_tok_dir, out, *extra))
    ref = _weights(out)
    last = out / "checkpoints" / "step-00000012"
    data = bytearray((last / "state.pt").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (last / "state.pt").write_bytes(bytes(data))
    (out / "checkpoints" / "step-00000008" / "checksums.json").unlink()  # and a partial one before it
    msgs = []
    res = pretrain(tiny_config(para_tok_dir, out, *extra, "--run.resume", "true"), log=msgs.append)
    warn = [m for m in msgs if "unusable" in m]
    assert len(warn) == 2 and "checksum mismatch in state.pt" in warn[0] and "partial write" in warn[1]
    assert all("\n" not in m for m in warn)
    assert any("resuming from" in m and "step-00000004" in m for m in msgs)
    assert res["steps"] == 12
    new = _weights(out)
    assert all(torch.equal(ref[k], new[k]) for k in ref)  # redone from step 4: the same weights


def test_guard_skips_non_finite_steps_and_rolls_back(para_tok_dir, tmp_path, monkeypatch):
    orig = trainer_mod.loss_sum
    n = {"calls": 0}

    def loss(model, batch, doc_mask):
        n["calls"] += 1
        s = orig(model, batch, doc_mask)
        return s * float("nan") if n["calls"] in (3, 7, 8) else s

    monkeypatch.setattr(trainer_mod, "loss_sum", loss)
    out = tmp_path / "run"
    msgs = []
    res = pretrain(tiny_config(para_tok_dir, out, "--run.steps", "10", "--checkpoint.interval", "5",
                               "--guard.max_bad_steps", "2", "--eval.batches", "0"), log=msgs.append)
    # step 3 skipped; steps 7-8 bad in a row -> rollback to the checkpoint at step 5, data goes on
    assert res["skipped_steps"] == 3 and res["rollbacks"] == 1 and res["steps"] == 10
    assert any("rolled back to step-00000005" in m for m in msgs)
    kinds = [json.loads(x)["kind"] for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert kinds.count("skip") == 3 and kinds.count("rollback") == 1
    assert all(torch.isfinite(v).all() for v in _weights(out).values())


def test_bad_inputs_one_line(para_tok_dir, tmp_path):
    out = tmp_path / "run"
    pretrain(tiny_config(para_tok_dir, out, "--run.steps", "2", "--checkpoint.interval", "1"))
    with pytest.raises(HerdError, match="already holds checkpoints; pass --resume"):
        pretrain(tiny_config(para_tok_dir, out, "--run.steps", "2"))
    with pytest.raises(HerdError, match=r"another model shape \(dim 64 vs 32") as e:
        pretrain(tiny_config(para_tok_dir, out, "--run.steps", "4", "--model.dim", "32", "--run.resume",
                             "true"))
    assert "\n" not in str(e.value)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(HerdError, match="empty data directory"):
        pretrain(tiny_config(empty, tmp_path / "x", "--run.steps", "2"))
    with pytest.raises(HerdError, match="set --model.vocab_size 512"):
        pretrain(tiny_config(para_tok_dir, tmp_path / "y", "--run.steps", "2", "--model.vocab_size", "300"))
    with pytest.raises(HerdError, match="exceeds the model's max_seq_len"):
        pretrain(tiny_config(para_tok_dir, tmp_path / "z", "--run.steps", "2", "--stages.0.seq_len", "4096"))


def test_activation_checkpointing_and_micro_batches_change_nothing(para_tok_dir, tmp_path):
    base = ["--run.steps", "4", "--eval.batches", "0"]
    a = pretrain(tiny_config(para_tok_dir, tmp_path / "a", *base))
    b = pretrain(tiny_config(para_tok_dir, tmp_path / "b", *base, "--run.activation_checkpointing", "true",
                             "--run.micro_batch_tokens", "128"))
    la, lb = [r["loss"] for r in _records(tmp_path / "a")], [r["loss"] for r in _records(tmp_path / "b")]
    assert max(abs(x - y) for x, y in zip(la, lb)) < 1e-5  # only the order of the sums differs
    assert a["steps"] == b["steps"] == 4


def test_tensorboard_option(para_tok_dir, tmp_path):
    import importlib.util

    cfg = tiny_config(para_tok_dir, tmp_path / "tb", "--run.steps", "2", "--eval.batches", "0",
                      "--run.tensorboard", "true")
    if importlib.util.find_spec("tensorboard") is None:
        with pytest.raises(HerdError, match="needs the tensorboard package: pip install tensorboard"):
            pretrain(cfg)
    else:
        pretrain(cfg)
        assert any((tmp_path / "tb" / "tensorboard").iterdir())


@pytest.mark.slow
def test_export_converts_to_transformers(para_tok_dir, tmp_path):
    """The final model goes through herd's HF export (what `herd convert` writes) into transformers."""
    from transformers import LlamaForCausalLM

    from herd.checkpoint import load_model
    from herd.checkpoint.hf import save_hf

    res = pretrain(tiny_config(para_tok_dir, tmp_path / "run", "--run.steps", "3", "--eval.batches", "0"))
    model, tok = load_model(res["model_dir"])
    save_hf(model, tmp_path / "hf", tok, hf_tokenizer=False)
    hf = LlamaForCausalLM.from_pretrained(tmp_path / "hf")
    x = torch.randint(0, 512, (1, 50))
    with torch.no_grad():
        assert torch.allclose(hf(x).logits, model(x), atol=1e-4)
