"""A run killed with SIGKILL at random steps and resumed ends bit-identical to an uninterrupted
run (CPU, fp32, one thread; paper §3.3.4: training survives interruptions). The trainer runs in
a subprocess (`python -m herd pretrain`) and is killed from outside while it trains or writes a
checkpoint."""

import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest
import torch
from train_helpers import tiny_toml
from safetensors.torch import load_file

EXTRA = ["--run.steps", "40", "--checkpoint.interval", "3", "--checkpoint.keep", "2", "--eval.interval", "10",
         "--stages.0.batch_size", "8"]


def _herd(args, **kw):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, "-m", "herd", "pretrain", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def _steps_logged(out):
    f = out / "metrics.jsonl"
    if not f.exists():
        return 0
    n = 0
    for line in f.read_text().splitlines():
        try:
            r = json.loads(line)
        except ValueError:
            continue
        if r.get("kind") == "train":
            n = r["step"]
    return n


def _run_with_kills(toml, out, kill_steps):
    for k in kill_steps:
        p = _herd(["--config", toml, "--resume"])
        deadline = time.time() + 120
        while _steps_logged(out) < k and p.poll() is None and time.time() < deadline:
            time.sleep(0.005)
        assert p.poll() is None, p.stderr.read()
        os.kill(p.pid, signal.SIGKILL)
        p.wait()
        assert p.returncode == -signal.SIGKILL
    p = _herd(["--config", toml, "--resume"])
    _, err = p.communicate(timeout=300)
    assert p.returncode == 0, err
    return err


def _check_same(a, b):
    wa = load_file(str(a / "model" / "model.safetensors"))
    wb = load_file(str(b / "model" / "model.safetensors"))
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k


def _kill_test(para_tok_dir, tmp_path, kill_steps):
    ref = tmp_path / "ref"
    p = _herd(["--config", tiny_toml(para_tok_dir, ref, tmp_path / "ref.toml", *EXTRA)])
    _, err = p.communicate(timeout=300)
    assert p.returncode == 0, err
    out = tmp_path / "killed"
    err = _run_with_kills(tiny_toml(para_tok_dir, out, tmp_path / "k.toml", *EXTRA), out, kill_steps)
    assert "resuming from" in err
    _check_same(ref, out)
    losses = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    ref_losses = [json.loads(x) for x in (ref / "metrics.jsonl").read_text().splitlines()]
    pick = lambda rs: [(r["step"], r["loss"]) for r in rs if r["kind"] == "train"]  # noqa: E731
    assert pick(losses) == pick(ref_losses)


@pytest.mark.slow
def test_sigkill_at_random_steps_then_resume_bit_identical(para_tok_dir, tmp_path):
    rng = random.Random(1234)
    kills = sorted(rng.sample(range(2, 38), 3))
    _kill_test(para_tok_dir, tmp_path, kills)
