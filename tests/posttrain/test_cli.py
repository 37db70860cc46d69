"""The post-training commands: help, make-task, errors as one line with exit status 2."""

import json

from herd.cli import main


def test_help_lists_commands(capsys):
    for cmd in ("sft", "rm", "rejection-sample", "dpo", "average"):
        try:
            main([cmd, "--help"])
        except SystemExit as e:
            assert e.code == 0
        out = capsys.readouterr().out
        assert "--out" in out
    try:
        main(["dpo", "--help"])
    except SystemExit:
        pass
    out = capsys.readouterr().out
    assert "--beta" in out and "--nll-coef" in out and "--lora-rank" in out


def test_make_task(tmp_path, capsys):
    assert main(["posttrain", "make-task", "--train", "20", "--test", "5", "--seed", "1", "--out",
                 str(tmp_path), "--json"]) == 0
    files = json.loads(capsys.readouterr().out)
    assert len(open(files["train"]).read().splitlines()) == 20
    assert len(open(files["test_prompts"]).read().splitlines()) == 5


def test_errors_are_one_line(tmp_path, tiny_ckpt, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}\n'
                   '{"messages": 3}\n')
    rc = main(["sft", "--model", str(tiny_ckpt), "--data", str(bad), "--out", str(tmp_path / "o"),
               "--on-bad-line", "stop", "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and f"herd: error: {bad}:2: bad chat record: needs 'messages'" in err
    assert "Traceback" not in err
    rc = main(["average", str(tiny_ckpt), str(tmp_path / "missing"), "--out", str(tmp_path / "a")])
    assert rc == 2 and "checkpoint not found" in capsys.readouterr().err
    recipe = tmp_path / "r.toml"
    recipe.write_text('[dpo]\nbeta = 0.1\nbogus = 1\n')
    rc = main(["dpo", "--config", str(recipe), "--model", str(tiny_ckpt), "--data", "x", "--out", "y"])
    assert rc == 2 and "unknown field dpo.bogus" in capsys.readouterr().err
    rc = main(["sft", "--data", "x", "--out", "y"])
    assert rc == 2 and "sft: 'model' is required" in capsys.readouterr().err
    rc = main(["dpo", "--model", "m", "--data", "x", "--out", "y", "--dtype", "fp8"])
    assert rc == 2 and "dpo: dtype must be auto, float32, bfloat16 or float16" in capsys.readouterr().err
    rc = main(["sft", "--model", "m", "--data", "x", "--out", "y", "--lora-targets", "wq,wz"])
    assert rc == 2 and "lora_targets must be comma-separated names" in capsys.readouterr().err


def test_recipe_and_flags(tmp_path, tiny_ckpt, capsys):
    data = tmp_path / "p.jsonl"
    data.write_text(json.dumps({"prompt": "Tom has 2 pens. How many?", "chosen": "#### 2",
                                "rejected": "#### 3"}) + "\n")
    recipe = tmp_path / "r.toml"
    recipe.write_text(f'[dpo]\nmodel = "{tiny_ckpt}"\ndata = "{data}"\nsteps = 5\nbatch_size = 1\n')
    rc = main(["dpo", "--config", str(recipe), "--steps", "1", "--out", str(tmp_path / "d"), "--quiet",
               "--json"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert out["steps"] == 1 and out["pairs"] == 1  # the flag overrode the recipe
    # the --dpo.field form, and --print-config of the resolved config
    assert main(["dpo", "--config", str(recipe), "--dpo.steps", "2", "--no-resume", "--print-config"]) == 0
    printed = capsys.readouterr().out
    assert "[dpo]" in printed and "steps = 2" in printed and "resume = false" in printed


def test_posttrain_configs_share_one_base():
    from herd.posttrain.config import (DPOConfig, PostTrainConfig, RMConfig, RSConfig, SFTConfig,
                                       TrainLoopConfig)

    for cls in (SFTConfig, RMConfig, DPOConfig, RSConfig):
        assert issubclass(cls, PostTrainConfig)
        c = cls()
        assert (c.device, c.dtype) == ("auto", "auto")
    for cls in (SFTConfig, RMConfig, DPOConfig):
        assert issubclass(cls, TrainLoopConfig) and cls().lr == 1e-5
    assert RSConfig(model="m", prompts="p", out="o").validate()
    assert SFTConfig(model="m", data="d", out="o", device="cuda:1", dtype="bfloat16").validate()
