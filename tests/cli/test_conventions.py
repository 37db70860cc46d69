"""One convention for every command: `python -m herd`, `herd --version`, shell completion, and the
shared flags (--config NAME|FILE with bare names, --print-config, --out, --overwrite, --json, --quiet)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from herd import __version__
from herd.cli import build_parser, main

ROOT = Path(__file__).resolve().parents[2]


def test_python_dash_m_herd_and_version():
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    r = subprocess.run([sys.executable, "-m", "herd", "--version"], capture_output=True, text=True, env=env,
                       check=False, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == f"herd {__version__}"


def test_bash_completion_completes_commands_and_options(tmp_path, capsys):
    assert main(["completion", "bash"]) == 0
    script = tmp_path / "herd.bash"
    script.write_text(capsys.readouterr().out)

    def complete(*words):
        cmd = (f"source {script}; COMP_WORDS=({' '.join(words)}); COMP_CWORD={len(words) - 1}; "
               "_herd_complete; echo \"${COMPREPLY[@]}\"")
        return subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, check=True,
                              cwd=tmp_path).stdout.split()

    assert complete("herd", "pre") == ["pretrain"]
    assert "--run.max_steps" in complete("herd", "pretrain", "--run.m")
    assert complete("herd", "tokenizer", "tr") == ["train"]
    assert complete("herd", "tokenizer", "train", "--vocab") == ["--vocab-size"]
    assert "--beta" in complete("herd", "dpo", "--be")
    assert main(["completion", "zsh"]) == 0 and "bashcompinit" in capsys.readouterr().out


@pytest.mark.parametrize("cmd", ["pretrain", "curate", "sft", "rm", "dpo", "rejection-sample", "speedrun"])
def test_config_commands_share_config_and_print_config(cmd):
    p = build_parser()
    sub = next(a for a in p._actions if a.__class__.__name__ == "_SubParsersAction").choices[cmd]
    opts = {s for a in sub._actions for s in a.option_strings}
    assert {"--config", "--print-config"} <= opts


def test_commands_that_write_take_out_and_summaries_take_json():
    p = build_parser()
    choices = next(a for a in p._actions if a.__class__.__name__ == "_SubParsersAction").choices
    for cmd in ("pretrain", "curate", "tokenize", "eval", "average", "plot"):
        assert "--out" in {s for a in choices[cmd]._actions for s in a.option_strings}, cmd
    for cmd in ("pretrain", "sft", "rm", "dpo", "rejection-sample", "average", "eval", "plot"):
        assert "--json" in {s for a in choices[cmd]._actions for s in a.option_strings}, cmd
    for cmd in ("tokenize", "convert", "tokenizer"):
        parser = choices[cmd] if cmd != "tokenizer" else next(
            a for a in choices[cmd]._actions if a.__class__.__name__ == "_SubParsersAction").choices["train"]
        assert "--overwrite" in {s for a in parser._actions for s in a.option_strings}, cmd
