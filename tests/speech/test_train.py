"""`herd speech text-lm|train|synth` and `herd generate --audio` end to end on a tiny scale: the
adapter's loss falls, the frozen LM's text-only logits stay bit-identical, errors are one line.
The held-out accuracy run is in test_accuracy.py (slow)."""

import hashlib
import json

import pytest
import torch

from herd.cli import main


@pytest.fixture(scope="module")
def lm_dir(tmp_path_factory):
    torch.set_num_threads(1)  # on a loaded 2-core machine, 2 threads spin more than they compute
    d = tmp_path_factory.mktemp("speech") / "lm"
    assert main(["speech", "text-lm", "--out", str(d), "--steps", "150", "--batch-size", "32", "--dim", "64",
                 "--n-layers", "2", "--threads", "1"]) == 0
    return d


def _digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def trained(lm_dir, tmp_path_factory):
    from herd.checkpoint import load_model
    from herd.speech.data import Layout
    from herd.speech.train import SpeechTrainConfig, train_speech

    out = tmp_path_factory.mktemp("speech") / "adapter"
    lm, tok = load_model(lm_dir)
    lay = Layout(tok)
    text = torch.tensor([lay.text_prompt("forty two", "Answer with a number.")])
    before = lm(text).clone()
    weights = {k: v.clone() for k, v in lm.state_dict().items()}
    disk = _digest(lm_dir / "model.safetensors")
    cfg = SpeechTrainConfig(model=str(lm_dir), out=str(out), train_utts=64, eval_utts=5, steps=60,
                            batch_size=8, lr=5e-3, warmup=5, dim=32, n_layers=1, n_heads=2, adapter_dim=32,
                            quiet=True)
    res = train_speech(cfg, log=lambda s: None, lm=lm, tok=tok)
    return {"out": out, "res": res, "lm": lm, "text": text, "before": before, "weights": weights,
            "disk": disk}


def test_adapter_loss_falls_and_lm_is_untouched(trained, lm_dir):
    res, lm = trained["res"], trained["lm"]
    losses = json.loads((trained["out"] / "speech.json").read_text())["losses"]
    assert len(losses) == 60
    assert sum(losses[-10:]) / 10 < 0.9 * sum(losses[:10]) / 10  # measured: 1.78 -> 1.50
    assert 0 <= res["digit/answer"] <= 1 and res["n"]["digit/answer"] == 2
    # the frozen LM: no gradients, the same tensors, the same text-only logits bit for bit, the file untouched
    assert all(not p.requires_grad and p.grad is None for p in lm.parameters())
    assert all(torch.equal(v, trained["weights"][k]) for k, v in lm.state_dict().items())
    assert torch.equal(lm(trained["text"]), trained["before"])
    assert _digest(lm_dir / "model.safetensors") == trained["disk"]
    from herd.checkpoint import load_model

    again, _ = load_model(lm_dir)
    assert torch.equal(again(trained["text"]), trained["before"])


def test_adapter_roundtrip_and_generate_audio(trained, lm_dir, tmp_path, capsys):
    from herd.speech.train import load_adapter

    speech, cfg = load_adapter(trained["out"])
    assert speech.args.dim == 32 and not speech.training
    assert cfg["speech_start"] == "<|reserved_special_token_10|>" and cfg["lm"] == str(lm_dir.resolve())
    assert main(["speech", "synth", "--out", str(tmp_path / "w"), "--n", "2", "--kind", "digit",
                 "--held-out"]) == 0
    man = [json.loads(x) for x in (tmp_path / "w" / "manifest.jsonl").read_text().splitlines()]
    assert len(man) == 2 and man[0]["kind"] == "digit" and man[0]["answer"] == str("0123456789".index(
        man[0]["answer"]))
    capsys.readouterr()
    wav = str(tmp_path / "w" / man[0]["audio"])
    assert main(["generate", str(trained["out"]), "--audio", wav, "--prompt", "Answer with a number.",
                 "--max-new-tokens", "4"]) == 0
    first = capsys.readouterr().out
    # the same through the LM checkpoint and --speech: the same greedy answer
    assert main(["generate", str(lm_dir), "--speech", str(trained["out"]), "--audio", wav, "--prompt",
                 "Answer with a number.", "--max-new-tokens", "4"]) == 0
    assert capsys.readouterr().out == first


def test_errors_are_one_line(trained, lm_dir, tmp_path, capsys):
    cases = [
        (["generate", str(lm_dir), "--audio", str(tmp_path / "none.wav")], "not a speech adapter"),
        (["generate", str(trained["out"]), "--audio", str(tmp_path / "none.wav")], "audio file not found"),
        (["generate", str(lm_dir), "--speech", str(trained["out"])], "--speech needs --audio"),
        (["speech", "train", "--out", str(tmp_path / "x")], "no LM"),
        (["speech", "train", "--model", str(lm_dir), "--out", str(tmp_path / "x"), "--steps", "0"], "steps"),
        (["speech", "train", "--model", str(lm_dir), "--out", str(tmp_path / "x"), "--stpes", "3"],
         "did you mean"),
        (["speech", "train", "--model", str(lm_dir), "--out", str(tmp_path / "x"), "--kinds", "poem"],
         "poem"),
        (["speech", "synth", "--out", str(tmp_path / "s"), "--text", "hi", "--voice", "en-us+nobody"],
         "variant"),
    ]
    for argv, msg in cases:
        capsys.readouterr()
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert msg in err and len(err.splitlines()) == 1 and "Traceback" not in err, (argv, err)


def test_print_config(capsys):
    assert main(["speech", "train", "--print-config", "--steps", "7"]) == 0
    out = capsys.readouterr().out
    assert "[speech]" in out and "steps = 7" in out
