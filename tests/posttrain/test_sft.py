"""SFT: packing with the document mask gives each dialog the loss it has alone; a run writes a
loadable checkpoint (full and LoRA, merged), resumes after an interruption."""

import json

import pytest
import torch

from herd.checkpoint import load_model
from herd.errors import HerdError
from herd.posttrain.common import StepLoop, cross_entropy, make_optimizer
from herd.posttrain.config import SFTConfig
from herd.posttrain.data import encode_dialog
from herd.posttrain.sft import collate, pack_rows, sft
from herd.posttrain.tasks import arithmetic_task


def _examples(tok, n=5):
    out = []
    for p in arithmetic_task(n, seed=1):
        enc = encode_dialog(tok, p.messages())
        out.append((enc.tokens, enc.sft_mask))
    return out


def test_packing_rows_and_labels(tok):
    ex = _examples(tok, 5)
    rows = pack_rows(ex, 120, list(range(5)))
    assert all(sum(len(t) for t, _ in r) <= 120 for r in rows)
    assert sum(len(r) for r in rows) == 5
    tokens, labels, doc_ids = collate(rows, tok.pad_id, packed=True)
    assert doc_ids is not None
    # labels never point across a dialog boundary and cover exactly the assistant tokens
    for b, r in enumerate(rows):
        at = 0
        for toks, mask in r:
            n = len(toks)
            assert labels[b, at + n - 1] == -100  # the last token of a dialog predicts nothing
            got = [int(labels[b, i]) for i in range(at, at + n) if labels[b, i] != -100]
            assert got == [t for t, m in zip(toks, mask) if m]
            at += n
        assert (labels[b, at:] == -100).all() and (doc_ids[b, at:] == -1).all()


def test_packed_loss_equals_per_dialog_loss(tok, tiny_model):
    ex = _examples(tok, 4)
    rows = pack_rows(ex, 256, list(range(4)))
    assert len(rows) == 1 and len(rows[0]) == 4
    tokens, labels, doc_ids = collate(rows, tok.pad_id, packed=True)
    with torch.no_grad():
        packed, n = cross_entropy(tiny_model(tokens, doc_ids=doc_ids), labels)
        total, count = 0.0, 0
        for e in ex:
            t, lab, _ = collate([[e]], tok.pad_id, packed=True)
            loss, k = cross_entropy(tiny_model(t), lab)
            total, count = total + loss.item() * k, count + k
    assert n == count
    assert packed.item() == pytest.approx(total / count, rel=1e-5)


def _chat_file(path, n=24, seed=0):
    with open(path, "w") as f:
        for p in arithmetic_task(n, seed):
            f.write(json.dumps(p.chat_record()) + "\n")
    return str(path)


@pytest.mark.parametrize("lora", [0, 4])
def test_sft_run_writes_checkpoint(tmp_path, tiny_ckpt, lora):
    data = _chat_file(tmp_path / "train.jsonl")
    out = tmp_path / "sft"
    m = sft(SFTConfig(model=str(tiny_ckpt), data=data, eval_data=data, out=str(out), lr=3e-3, steps=3,
                      batch_size=2, seq_len=256, warmup=1, lora_rank=lora, quiet=True))
    assert m["steps"] == 3 and m["examples"] == 24 and m["eval_loss"] > 0
    model, tok = load_model(out)
    base, _ = load_model(tiny_ckpt)
    assert tok is not None and set(model.state_dict()) == set(base.state_dict())  # merged: Meta's names
    changed = [k for k, v in model.state_dict().items() if not torch.equal(v, base.state_dict()[k])]
    if lora:  # only adapted weights move
        assert changed and all(k.split(".")[-2] in ("wq", "wk", "wv", "wo", "w1", "w2", "w3")
                               for k in changed)
    else:
        assert "tok_embeddings.weight" in changed
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["posttrain"]["stage"] == "sft" and not (out / "train_state.pt").exists()


@pytest.mark.slow
def test_sft_learns(tmp_path, tiny_ckpt):
    data = _chat_file(tmp_path / "train.jsonl", n=8)
    m = sft(SFTConfig(model=str(tiny_ckpt), data=data, eval_data=data, out=str(tmp_path / "a"), lr=1e-2,
                      steps=1, batch_size=4, seq_len=256, warmup=0, quiet=True))
    m2 = sft(SFTConfig(model=str(tiny_ckpt), data=data, eval_data=data, out=str(tmp_path / "b"), lr=1e-2,
                       steps=30, batch_size=4, seq_len=256, warmup=0, quiet=True))
    assert m2["eval_loss"] < 0.7 * m["eval_loss"]


def test_step_loop_resumes(tmp_path, tiny_model):
    opt = make_optimizer(tiny_model.parameters(), 1e-3, 0.0)
    x = torch.randint(0, 100, (2, 8))

    def step_fn(step):
        loss = tiny_model(x).logsumexp(-1).mean()
        loss.backward()
        if step == 2:
            raise KeyboardInterrupt
        return {"loss": loss.detach()}

    loop = StepLoop(tmp_path, tiny_model, opt, 5, lr=1e-3, warmup=0, save_every=0, fingerprint={"a": 1})
    with pytest.raises(KeyboardInterrupt):
        loop.run(step_fn, quiet=True)
    assert (tmp_path / "train_state.pt").is_file()
    w = tiny_model.tok_embeddings.weight.detach().clone()
    with torch.no_grad():
        tiny_model.tok_embeddings.weight.zero_()
    loop2 = StepLoop(tmp_path, tiny_model, opt, 5, lr=1e-3, warmup=0, save_every=0, fingerprint={"a": 1})
    assert loop2.step == 2 and torch.equal(tiny_model.tok_embeddings.weight, w)
    with pytest.raises(HerdError, match="other settings"):
        StepLoop(tmp_path, tiny_model, opt, 5, lr=1e-3, warmup=0, save_every=0, fingerprint={"a": 2})


def test_sft_errors(tmp_path, tiny_ckpt):
    with pytest.raises(HerdError, match="not found"):
        sft(SFTConfig(model=str(tiny_ckpt), data=str(tmp_path / "nope.jsonl"), out=str(tmp_path / "o")))
    with pytest.raises(HerdError, match="checkpoint not found"):
        sft(SFTConfig(model=str(tmp_path / "none"), data="x", out=str(tmp_path / "o")))
    with pytest.raises(HerdError, match="lr"):
        sft(SFTConfig(model=str(tiny_ckpt), data="x", out=str(tmp_path / "o"), lr=-1))
