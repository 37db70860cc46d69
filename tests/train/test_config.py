"""Config loading: TOML recipes, --section.field overrides, one-line errors for mistakes."""

import glob
import os

import pytest

from herd.errors import HerdError
from herd.train import load_config
from herd.train.schedule import build_plan

RECIPES = sorted(glob.glob(os.path.join(os.path.dirname(__file__), "..", "..", "recipes", "*.toml")))


@pytest.mark.parametrize("path", RECIPES, ids=os.path.basename)
def test_recipes_load_and_plan(path):
    cfg = load_config(path).validate()
    plan = build_plan(cfg)
    assert plan[0].start_step == 0 and all(a.end_step == b.start_step for a, b in zip(plan, plan[1:]))
    assert cfg.model.args().max_seq_len >= max(p.seq_len for p in plan)


def test_405b_recipe_is_the_papers():
    cfg = load_config("llama3.1-405b")  # a bare name finds recipes/NAME.toml
    assert (cfg.optim.lr, cfg.schedule.final_lr, cfg.schedule.warmup_steps, cfg.schedule.decay_steps) == \
        (8e-5, 8e-7, 8000, 1_200_000)
    plan = build_plan(cfg)
    tok = {p.name: p.batch_tokens for p in plan}
    assert tok["stage0"] == 4 * 2**20 and plan[0].seq_len == 4096
    assert tok["stage1"] == 8 * 2**20 and plan[1].seq_len == 8192
    assert tok["stage2"] == 16 * 2**20
    # the 8M stage starts once 252M tokens are seen, the 16M stage once 2.87T are
    assert plan[1].start_tokens >= 252_000_000 > plan[1].start_tokens - tok["stage0"]
    assert plan[2].start_tokens >= 2_870_000_000_000 > plan[2].start_tokens - tok["stage1"]
    lc = [p for p in plan if p.name.startswith("long_context")]
    assert len(lc) == 6 and lc[-1].seq_len == 131072 and lc[0].seq_len > 8192
    assert abs(sum(p.steps * p.batch_tokens for p in lc) - 800e9) < 0.01 * 800e9
    (an,) = [p for p in plan if p.name == "anneal"]
    assert an.seq_len == 131072
    assert an.steps * an.batch_tokens >= 40_000_000 > (an.steps - 1) * an.batch_tokens
    assert [s.weight for s in cfg.data.sources] == [50, 25, 17, 8]


def test_overrides_and_types(tmp_path):
    cfg = load_config("herd-5m", ["--optim.lr", "1e-3", "--run.compile", "true", "--stages.1.seq_len", "384",
                                  "--model.n_layers", "3", "--optim.betas", "[0.8, 0.9]", "--run.out=x/y"])
    assert cfg.optim.lr == 1e-3 and cfg.run.compile is True and cfg.stages[1].seq_len == 384
    assert cfg.model.args().n_layers == 3 and cfg.optim.betas == [0.8, 0.9] and cfg.run.out == "x/y"
    cfg = load_config(None, ["--run.steps", "5", "--stages.0.batch_size", "2", "--optim.betas", "0.8,0.99"])
    assert cfg.stages[0].batch_size == 2 and cfg.optim.betas == [0.8, 0.99] and cfg.validate()


@pytest.mark.parametrize("args,msg", [
    (["--optim.lrr", "1"], r"unknown field optim.lrr \(did you mean optim.lr\?\)"),
    (["--nosuch.x", "1"], "unknown field nosuch"),
    (["--model.dimm", "3"], "unknown field model.dimm"),
    (["--optim.lr", "fast"], "optim.lr must be a number"),
    (["--run.steps", "1.5"], "run.steps must be an integer"),
    (["--run.compile", "1"], "run.compile must be true or false"),
    (["--model.dim", "\"big\""], "model.dim must be an integer"),
    (["--optim.lr"], "has no value"),
    (["--stages.5.seq_len", "1"], "index 5 out of range"),
    (["--data.sources.path", "x"], "is a list; index it by number"),
])
def test_bad_config_one_line(args, msg):
    with pytest.raises(HerdError, match=msg) as e:
        load_config("herd-5m", args)
    assert "\n" not in str(e.value)


def test_bad_toml_and_values(tmp_path):
    p = tmp_path / "r.toml"
    p.write_text("[optim]\nlr = 1e-3\nbogus = 2\n")
    with pytest.raises(HerdError, match="unknown field optim.bogus"):
        load_config(p)
    p.write_text("[optim\n")
    with pytest.raises(HerdError, match="not valid TOML"):
        load_config(p)
    with pytest.raises(HerdError, match="config file not found"):
        load_config(tmp_path / "none.toml")
    with pytest.raises(HerdError, match="exactly one of run.tokens and run.steps"):
        load_config(None).validate()
    with pytest.raises(HerdError, match="unknown model preset"):
        load_config(None, ["--model.preset", "gpt5", "--run.steps", "1"]).validate()
    with pytest.raises(HerdError, match="after_tokens must increase"):
        load_config("herd-5m", ["--stages.1.after_tokens", "0"]).validate()


def test_cli_errors_are_one_line(tmp_path, capsys):
    from herd.cli import main

    assert main(["pretrain", "--config", "herd-5m", "--optim.nope", "1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("herd: error: config: unknown field optim.nope") and err.count("\n") == 1
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["pretrain", "--config", "herd-5m", "--data", str(empty), "--run.out",
                 str(tmp_path / "o")]) == 2
    assert "empty data directory" in capsys.readouterr().err
    assert main(["pretrain", "--config", "herd-5m", "--print-config", "--data", "a:3", "--data", "b"]) == 0
    out = capsys.readouterr().out
    assert "# stage1: steps" in out and '{ path = "a", weight = 3.0 }, { path = "b", weight = 1.0 }' in out
    assert main(["pretrain", "--config", "herd-5m", "--data", "a:0"]) == 2
    assert "positive weight" in capsys.readouterr().err
