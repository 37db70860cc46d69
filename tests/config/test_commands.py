"""The one config system (herd/config.py) through every configurable command: `--print-config` with
no other argument prints the defaults; a `--section.field value` override of every field lands (and
the flat `--field value` form of flat configs); the printed TOML loads back as `--config` to the same
config; mistakes are one line."""

import dataclasses
import typing

import pytest

from herd.cli import main
from herd.compat import tomllib
from herd.config import _strip_optional, dumps, load
from herd.curate.config import CurateConfig
from herd.posttrain.config import DPOConfig, RMConfig, RSConfig, SFTConfig
from herd.scaling.config import IsoFLOPConfig
from herd.speedrun.config import PRESETS, SpeedrunConfig
from herd.train.config import TrainConfig

# (argv of the command, its config class, the section of a flat config or None)
COMMANDS = [
    (["pretrain"], TrainConfig, None),
    (["curate"], CurateConfig, None),
    (["sft"], SFTConfig, "sft"),
    (["rm"], RMConfig, "rm"),
    (["dpo"], DPOConfig, "dpo"),
    (["rejection-sample"], RSConfig, "rejection-sample"),
    (["speedrun", "--config", "cpu"], SpeedrunConfig, "speedrun"),
    (["scaling", "isoflop"], IsoFLOPConfig, "isoflop"),
]
IDS = [" ".join(c[0][:2]) for c in COMMANDS]


def _no_none(x):
    if isinstance(x, dict):
        return {k: _no_none(v) for k, v in x.items() if v is not None}
    if isinstance(x, list):
        return [_no_none(v) for v in x]
    return x


def _printed(capsys, argv) -> tuple[dict, str]:
    assert main(argv + ["--print-config"]) == 0
    out = capsys.readouterr().out
    return tomllib.loads(out), out


def _expected(cfg, section):
    d = _no_none(dataclasses.asdict(cfg))
    return {section: d} if section else d


@pytest.mark.parametrize("argv,cls,section", COMMANDS, ids=IDS)
def test_print_config_alone_prints_the_defaults(argv, cls, section, capsys):
    doc, out = _printed(capsys, argv)
    assert doc == _expected(cls(), section)
    assert out.startswith("# herd ")


def test_speedrun_print_config_without_a_preset(capsys):
    import torch

    doc, _ = _printed(capsys, ["speedrun"])
    name = "gpu" if torch.cuda.is_available() else "cpu"
    assert doc["speedrun"]["preset"] == name and doc["speedrun"]["out"] == f"speedrun-{name}"


# ---- a new value for every field, written as on a command line ------------------------------------
def _new_value(tp, default, name):
    """(command-line text, the value it must load as) for a field of type `tp`, unlike `default`."""
    tp = _strip_optional(tp)
    origin = typing.get_origin(tp)
    if tp is bool:
        return ("false" if default else "true"), not default
    if tp is int:
        return str(default + 3), default + 3
    if tp is float:
        return repr(default + 0.25), default + 0.25
    if tp is str:
        return f"x-{name}", f"x-{name}"
    if origin is list:
        (item,) = typing.get_args(tp)
        if item is str:
            return "a,b", ["a", "b"]
        if item is float:
            return "1.5,2.5e3", [1.5, 2500.0]
        if dataclasses.is_dataclass(item):  # e.g. [[long_context]], data.sources: a TOML array of tables
            obj = item()
            vals = {f.name: _new_value(f.type if not isinstance(f.type, str)
                                       else typing.get_type_hints(item)[f.name],
                                       getattr(obj, f.name), f.name) for f in dataclasses.fields(item)}
            text = "[{" + ", ".join(f"{k} = {_toml(v[1])}" for k, v in vals.items()) + "}]"
            return text, [{k: v[1] for k, v in vals.items()}]
    if tp is dict or origin is dict:
        args = typing.get_args(tp)
        v = {float: 0.5, int: 7, str: "p"}.get(args[1] if args else int, 7)
        key = "n_layers" if name == "overrides" else "k"
        return "{" + f"{key} = {_toml(v)}" + "}", {key: v}
    raise AssertionError(f"no test value for {name}: {tp}")


def _toml(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return f'"{v}"'
    return repr(v)


def _leaves(cls, cfg, prefix):
    """(dotted path, type, default) of every field; a list of tables is reached by index 0."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp, v = _strip_optional(hints[f.name]), getattr(cfg, f.name)
        path = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(tp):
            yield from _leaves(tp, v, path + ".")
        elif typing.get_origin(tp) is list and dataclasses.is_dataclass(typing.get_args(tp)[0]) and v:
            yield from _leaves(typing.get_args(tp)[0], v[0], path + ".0.")
        else:
            yield path, hints[f.name], v


def _get(doc, path):
    for p in path.split("."):
        doc = doc[int(p)] if isinstance(doc, list) else doc[p]
    return doc


def _overrides(cls, section, flat_form):
    argv, want = [], {}
    for path, tp, default in _leaves(cls, cls(), ""):
        if cls is SpeedrunConfig and path == "preset":
            continue  # --preset is the shorthand for --config NAME; the field is set as --speedrun.preset
        text, value = _new_value(tp, default, path.rsplit(".", 1)[-1])
        flag = f"--{path.replace('_', '-')}" if flat_form else f"--{section + '.' if section else ''}{path}"
        argv += [flag, text]
        want[path] = value
    return argv, want


@pytest.mark.parametrize("argv,cls,section", COMMANDS, ids=IDS)
def test_every_field_is_overridden_and_round_trips(argv, cls, section, capsys, tmp_path):
    forms = [False, True] if section else [False]
    for flat_form in forms:
        extra, want = _overrides(cls, section, flat_form)
        doc, out = _printed(capsys, argv + extra)
        body = doc[section] if section else doc
        for path, value in want.items():
            assert _get(body, path) == value, (path, flat_form)
        # the printed TOML is a config: loading it gives the same config, printing it the same text
        f = tmp_path / "printed.toml"
        f.write_text(out)
        base = argv[:-2] if argv[-2:] == ["--config", "cpu"] else argv
        doc2, out2 = _printed(capsys, base + ["--config", str(f)])
        assert doc2 == doc
        assert out2.splitlines()[1:] == out.splitlines()[1:]  # all but the header line
        names = PRESETS if cls is SpeedrunConfig else None
        assert load(cls, f, section=section, names=names) == load(cls, None, extra, section=section)


def test_pretrain_sections_each_take_an_override(capsys):
    """One field of each section, the way the docs write them (and README's --run.out)."""
    doc, out = _printed(capsys, ["pretrain", "--config", "herd-5m", "--model.n_layers", "3", "--data", "d:2",
                                 "--optim.lr", "1e-3", "--schedule.decay", "linear",
                                 "--stages.1.seq_len", "384", "--long_context.0.tokens", "5",
                                 "--anneal.checkpoints", "2", "--eval.batches", "3",
                                 "--checkpoint.keep", "2", "--guard.max_bad_steps", "9",
                                 "--run.out", "runs/20m"])
    assert doc["model"]["overrides"] == {"n_layers": 3}
    assert doc["data"]["sources"] == [{"path": "d", "weight": 2.0}]
    assert doc["optim"]["lr"] == 1e-3 and doc["schedule"]["decay"] == "linear"
    assert doc["stages"][1]["seq_len"] == 384 and doc["long_context"][0]["tokens"] == 5
    assert (doc["anneal"]["checkpoints"], doc["eval"]["batches"], doc["checkpoint"]["keep"],
            doc["guard"]["max_bad_steps"], doc["run"]["out"]) == (2, 3, 2, 9, "runs/20m")
    assert "# stage1: steps" in out  # the step plan, as comments


def test_dumps_round_trips_every_recipe_and_preset(tmp_path):
    from herd.train.config import load_config, recipe_names

    for name in recipe_names():
        cfg = load_config(name)
        (tmp_path / "r.toml").write_text(dumps(cfg))
        assert load_config(tmp_path / "r.toml") == cfg, name
    for name in PRESETS:
        cfg = load(SpeedrunConfig, name, names=PRESETS, section="speedrun")
        (tmp_path / "s.toml").write_text(dumps(cfg, "speedrun"))
        assert load(SpeedrunConfig, tmp_path / "s.toml", section="speedrun") == cfg, name
    cfg = load(CurateConfig, "default",
               names={"default": __import__("herd.curate.config").curate.config.DEFAULT_RECIPE})
    assert cfg == CurateConfig()  # default.toml holds exactly the defaults
    odd = SFTConfig(model='a "quoted"\\path\n\tü', tokenizer="t")
    (tmp_path / "o.toml").write_text(dumps(odd, "sft"))
    assert load(SFTConfig, tmp_path / "o.toml", section="sft") == odd


# ---- mistakes: one line, exit 2 -------------------------------------------------------------------
@pytest.mark.parametrize("argv,msg", [
    (["pretrain", "--run.otu", "x"], "unknown field run.otu (did you mean run.out?)"),
    (["pretrain", "--nosuch.x", "1"], "unknown field nosuch"),
    (["pretrain", "--optim.lr", "fast"], "optim.lr must be a number, got 'fast'"),
    (["pretrain", "--config", "herd-6m"],
     "unknown config name 'herd-6m' (known: herd-100m, herd-20m, herd-5m"),
    (["pretrain", "--config", "no/such.toml"], "config file not found: no/such.toml"),
    (["curate", "--dedup.threshhold", "0.5"],
     "unknown field dedup.threshhold (did you mean dedup.threshold?)"),
    (["curate", "--config", "nope"], "unknown config name 'nope' (known: default"),
    (["sft", "--lrr", "1"], "unknown field sft.lrr (did you mean sft.lr?)"),
    (["dpo", "--dpo.beta", "big"], "dpo.beta must be a number"),
    (["rm", "--steps"], "--steps has no value"),
    (["rejection-sample", "--k", "1.5"], "rejection-sample.k must be an integer"),
    (["speedrun", "--config", "tpu"], "unknown config name 'tpu' (known: cpu, gpu, quick"),
    (["speedrun", "--quick", "--nope", "1"], "unknown field speedrun.nope"),
    (["scaling", "isoflop", "--budgets", "3e13,lots"], "isoflop.budgets.1 must be a number"),
])
def test_mistakes_are_one_line(argv, msg, capsys):
    assert main(argv + ["--print-config"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("herd: error: ") and msg in err and err.count("\n") == 1, err


def test_print_config_of_an_incomplete_config_says_why(capsys):
    assert main(["sft", "--print-config"]) == 0
    cap = capsys.readouterr()
    assert "# not runnable as is: sft: 'model' is required" in cap.out and "herd: note:" in cap.err


def test_old_out_dir_name_still_loads_with_a_warning(tmp_path, capsys):
    from herd.train.config import load_config

    cfg = load_config(None, ["--run.out_dir", "x"])
    assert cfg.run.out == "x" and "run.out_dir is deprecated; use run.out" in capsys.readouterr().err
    (tmp_path / "r.toml").write_text('[run]\nout_dir = "y"\nsteps = 1\n')
    assert load_config(tmp_path / "r.toml").run.out == "y"
    assert load_config(tmp_path / "r.toml", ["--run.out", "z"]).run.out == "z"  # the command line wins


def test_flat_shorthands_and_lists(capsys):
    doc, _ = _printed(capsys, ["dpo", "--quiet", "--no-resume", "--ref-model", "r",
                               "--dpo.lora_targets", "wq,wv"])
    assert doc["dpo"]["quiet"] is True and doc["dpo"]["resume"] is False and doc["dpo"]["ref_model"] == "r"
    doc, _ = _printed(capsys, ["scaling", "isoflop", "--data", "a", "--data", "b", "--budgets", "1e11,3e11"])
    assert doc["isoflop"]["data"] == ["a", "b"] and doc["isoflop"]["budgets"] == [1e11, 3e11]
    doc, _ = _printed(capsys, ["speedrun", "--quick", "--speedrun.caps.sotu", "0", "--out", "o"])
    assert doc["speedrun"]["caps"]["sotu"] == 0 and doc["speedrun"]["caps"]["wiki-en"] == 60_000
    assert doc["speedrun"]["out"] == "o" and doc["speedrun"]["preset"] == "quick"
