"""Each failure a new user saw (issue [2/7], "What failed, as seen"), reproduced and now passing."""

import json
import os
import stat

import pytest
import torch

from herd.checkpoint import save_herd
from herd.cli import main
from herd.model import ModelArgs, Transformer
from herd.posttrain.demo import demo_tokenizer


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    d = tmp_path_factory.mktemp("nu")
    tok = demo_tokenizer()
    torch.manual_seed(0)
    args = ModelArgs(dim=32, n_layers=1, n_heads=4, n_kv_heads=2, vocab_size=tok.n_words, multiple_of=16,
                     max_seq_len=256)
    save_herd(Transformer.build(args, seed=0), d / "ckpt", tokenizer=tok)
    return d / "ckpt"


def run(capsys, *argv):
    try:
        rc = main([str(a) for a in argv])
    except SystemExit as e:
        rc = e.code
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_eval_takes_data_as_in_the_readme(ckpt, tmp_path, capsys):
    held = tmp_path / "held_out.txt"
    held.write_text("Tom has 3 pens and buys 4 more. " * 5)
    rc, out, _ = run(capsys, "eval", ckpt, "--task", "perplexity", "--data", held,
                     "--out", tmp_path / "r.json")
    assert rc == 0 and "bits per byte" in out
    rc, out, _ = run(capsys, "eval", ckpt, "--task", "ppl", "--text", held, "--out", tmp_path / "r2.json",
                     "--json")
    assert rc == 0 and json.loads(out)[0]["task"] == "ppl"


def test_eval_text_folder_and_non_utf8(ckpt, tmp_path, capsys):
    (tmp_path / "held").mkdir()
    (tmp_path / "held" / "a.txt").write_text("Tom has 3 pens. " * 5)
    rc, out, _ = run(capsys, "eval", ckpt, "--task", "ppl", "--text", tmp_path / "held",
                     "--out", tmp_path / "r.json")
    assert rc == 0 and "perplexity" in out  # a folder of texts is read, not a traceback
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"caf\xe9\n")
    rc, _, err = run(capsys, "eval", ckpt, "--task", "ppl", "--text", bad)
    assert rc == 2 and "not UTF-8" in err and "Traceback" not in err


def test_tokenizer_train_positional_and_output_checked_first(tmp_path, capsys):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "a.txt").write_text("The state of the Union is strong and getting stronger. " * 300)
    (tmp_path / "outdir").mkdir()
    rc, _, err = run(capsys, "tokenizer", "train", corpus, "--vocab-size", "800",
                     "--out", tmp_path / "outdir", "--allow-smaller", "--quiet")
    assert rc == 2 and "is a directory" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus", "outdir"]  # nothing left behind
    rc, _, _ = run(capsys, "tokenizer", "train", corpus, "--vocab-size", "800", "--out", tmp_path / "t.model",
                     "--allow-smaller", "--quiet")
    assert rc == 0 and (tmp_path / "t.model").is_file()
    rc, _, err = run(capsys, "tokenizer", "train", corpus, "--vocab-size", "800",
                     "--out", tmp_path / "t.model")
    assert rc == 2 and "--overwrite" in err


def test_curate_by_bare_name_and_packaged_path_from_anywhere(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rc, out, _ = run(capsys, "curate", "default", "--print-config")
    assert rc == 0 and "[dedup]" in out
    rc, out2, _ = run(capsys, "curate", "herd/curate/default.toml", "--print-config")
    assert rc == 0 and "[dedup]" in out2
    rc, out3, _ = run(capsys, "pretrain", "--config", "recipes/herd-5m.toml", "--print-config")
    assert rc == 0 and 'preset = "herd-5m"' in out3


def test_pretrain_steps_cap_and_plan(tmp_path, capsys):
    rc, _, err = run(capsys, "pretrain", "--config", "herd-5m", "--run.steps", "-5")
    assert rc == 2 and "run.steps must be >= 0, got -5" in err
    rc, out, _ = run(capsys, "pretrain", "--config", "herd-5m", "--run.steps", "40", "--print-config")
    assert rc == 0 and "tokens = 0" in out and "steps = 40" in out  # --run.steps replaces the recipe's tokens
    from herd.train.cli import plan_summary
    from herd.train.config import load_config
    from herd.train.schedule import LRSchedule, build_plan

    cfg = load_config("herd-5m", ["--run.max_steps", "40"]).validate()
    plan = build_plan(cfg)
    assert plan[-1].end_step == 40
    assert [p.name for p in plan] == ["stage0", "stage1", "long_context0", "anneal"]
    assert all(p.steps >= 1 for p in plan)
    lr = LRSchedule(cfg, plan)
    assert lr.warmup == 4 and lr(3) == pytest.approx(cfg.optim.lr) and lr(39) < lr(30)
    text = "\n".join(plan_summary(cfg))
    assert "plan: 40 steps" in text and "anneal" in text and "warmup 4 steps" in text
    with pytest.raises(Exception, match="fewer than the run's 4 phases"):
        build_plan(load_config("herd-5m", ["--run.max_steps", "2"]))


def test_two_document_corpus_says_what_happens(tmp_path, capsys):
    from herd.tokenizer.train import train_bpe

    (tmp_path / "two").mkdir()
    text = "The state of the Union is strong and getting stronger every single year. "
    for i in range(2):
        (tmp_path / "two" / f"{i}.txt").write_text(f"Document {i}. " + text * 60)
    tok = train_bpe([text * 50], vocab_size=800, allow_smaller=True, show_progress=False)
    tok.save(tmp_path / "tok.model")
    rc, _, err = run(capsys, "tokenize", tmp_path / "two", "--tokenizer", tmp_path / "tok.model", "--out",
                     tmp_path / "data", "--quiet", "--workers", "1")
    assert rc == 0 and "validation split is empty" in err
    from herd.train.cli import plan_summary
    from herd.train.config import load_config

    cfg = load_config("herd-5m", ["--run.steps", "40", "--run.tokens", "0", "--data.sources.0.path",
                                  str(tmp_path / "data")]).validate()
    text = "\n".join(plan_summary(cfg))
    assert "no validation split" in text and "passes (epochs)" in text and "repeats the data" in text


def test_run_folder_given_as_model(tmp_path, ckpt, capsys):
    import shutil

    run_dir = tmp_path / "runs" / "5m"
    run_dir.mkdir(parents=True)
    (run_dir / "metrics.jsonl").write_text("")
    shutil.copytree(ckpt, run_dir / "model")
    (run_dir / "config.json").write_text(json.dumps({"model": {"preset": "herd-5m"}}))
    rc, _, err = run(capsys, "generate", run_dir, "--prompt", "hi")
    assert rc == 2 and f"its model is {run_dir / 'model'}" in err
    rc, _, _ = run(capsys, "generate", run_dir / "model", "--prompt", "Tom", "--max-new-tokens", "2")
    assert rc == 0


def test_convert_refuses_to_replace_without_overwrite(tmp_path, ckpt, capsys):
    rc, _, _ = run(capsys, "convert", ckpt, tmp_path / "hf", "--to", "hf")
    assert rc == 0
    rc, _, err = run(capsys, "convert", ckpt, tmp_path / "hf", "--to", "hf")
    assert rc == 2 and "--overwrite" in err
    rc, _, _ = run(capsys, "convert", ckpt, tmp_path / "hf", "--to", "hf", "--overwrite")
    assert rc == 0


def test_help_texts_tell_the_truth(capsys):
    for cmd in ("rm", "dpo"):
        _, out, _ = run(capsys, cmd, "--help")
        assert "comma-separated for several files" not in out
    _, out, _ = run(capsys, "rejection-sample", "--help")
    assert "a herd checkpoint" not in out and "samples.partial.jsonl" in out and "train_state.pt" not in out


def test_post_training_summary_is_for_people(tmp_path, ckpt, capsys):
    data = tmp_path / "p.jsonl"
    data.write_text(json.dumps({"prompt": "Tom has 2 pens. How many?", "chosen": "#### 2",
                                "rejected": "#### 3"}) + "\n")
    rc, out, _ = run(capsys, "dpo", "--model", ckpt, "--data", data, "--out", tmp_path / "d", "--steps", "2",
                     "--batch-size", "1", "--quiet")
    assert rc == 0 and out.startswith("herd dpo: done") and "DPO model written to" in out
    assert not out.lstrip().startswith("{")
    recs = [json.loads(x) for x in (tmp_path / "d" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in recs] == [1, 2] and all("loss" in r for r in recs)
    rc, out, _ = run(capsys, "plot", tmp_path / "d")
    assert rc == 0 and (tmp_path / "d" / "plots" / "loss.png").is_file()
    assert "loss.png" in (tmp_path / "d" / "plots" / "index.html").read_text()


def test_mfu_is_averaged_and_never_above_the_peak(tmp_path, monkeypatch, capsys):
    """A peak probed on a busy machine (here: absurdly low) gave mfu=143%; now the peak is raised to the
    achieved rate and MFU stays <= 100%, averaged over the last steps."""
    from herd.data.tokenize import tokenize_files
    from herd.tokenizer.train import train_bpe
    from herd.train import trainer
    from herd.train.config import load_config

    text = "The state of the Union is strong and getting stronger every single year. "
    tok = train_bpe([text * 50], vocab_size=800, allow_smaller=True, show_progress=False)
    (tmp_path / "c").mkdir()
    for i in range(4):
        (tmp_path / "c" / f"{i}.txt").write_text(f"Document {i}. " + text * 40)
    tokenize_files([tmp_path / "c"], tok, tmp_path / "tok", val_fraction=0.0, workers=1, progress=False,
                   log=lambda s: None)
    monkeypatch.setattr(trainer, "peak_flops", lambda device, dtype: 1e3)
    cfg = load_config("herd-5m", [
        "--data.sources.0.path", str(tmp_path / "tok"), "--run.out", str(tmp_path / "run"),
        "--run.tokens", "0", "--run.steps", "4", "--long_context", "[]", "--anneal.tokens", "0",
        "--model.dim", "32", "--model.n_layers", "1", "--model.n_heads", "4", "--model.n_kv_heads", "2",
        "--model.multiple_of", "16", "--model.vocab_size", str(tok.n_words),
        "--stages", "[{after_tokens = 0, batch_size = 2, seq_len = 32}]", "--run.progress", "false",
        "--eval.interval", "0", "--schedule.warmup_steps", "1"]).validate()
    trainer.pretrain(cfg, log=lambda s: None)
    recs = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in recs if r["kind"] == "train"]
    assert len(train) == 4 and all(0 < r["mfu"] <= 1.0 for r in train)
    assert all("tokens_per_s_avg" in r for r in train)


@pytest.mark.parametrize("umask", [0o022, 0o002])
def test_files_follow_the_umask(tmp_path, umask):
    from herd.fileio import AtomicFile, atomic_dir, atomic_write

    old = os.umask(umask)
    try:
        atomic_write(tmp_path / "a.txt", "x")
        with AtomicFile(tmp_path / "b.pt") as a:
            torch.save({"x": 1}, a.tmp)
        with atomic_dir(tmp_path / "model") as d:
            (d / "config.json").write_text("{}")
    finally:
        os.umask(old)
    for p in (tmp_path / "a.txt", tmp_path / "b.pt", tmp_path / "model" / "config.json"):
        assert stat.S_IMODE(p.stat().st_mode) == 0o666 & ~umask, p
    assert stat.S_IMODE((tmp_path / "model").stat().st_mode) == 0o777 & ~umask
