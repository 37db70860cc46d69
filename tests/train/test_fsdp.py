"""Data parallel (FSDP2 over gloo, paper §3.3.2): 2 processes under torchrun give the losses of
1 process at the same global batch, to 1e-5, for 20 steps (the 2-process run also accumulates
gradients over 2 micro-batches per rank and writes a checkpoint under FSDP)."""

import json
import os
import shutil
import subprocess
import sys

import torch
from train_helpers import tiny_config, tiny_toml

from herd.train import pretrain

EXTRA = ["--run.steps", "20", "--checkpoint.interval", "10", "--eval.interval", "10", "--eval.batches", "2"]


def _losses(out, kind="train", key="loss"):
    recs = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    return [r[key] for r in recs if r["kind"] == kind]


def test_two_process_fsdp_matches_one_process(para_tok_dir, tmp_path):
    one = pretrain(tiny_config(para_tok_dir, tmp_path / "one", *EXTRA))
    toml = tiny_toml(para_tok_dir, tmp_path / "two", tmp_path / "two.toml", *EXTRA,
                     "--run.micro_batch_tokens", "64")
    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable)) or "torchrun"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    p = subprocess.run([torchrun, "--standalone", "--nproc_per_node", "2", "-m", "herd", "pretrain",
                        "--config", toml], env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    a, b = _losses(tmp_path / "one"), _losses(tmp_path / "two")
    assert len(a) == len(b) == 20
    assert max(abs(x - y) for x, y in zip(a, b)) < 1e-5, list(zip(a, b))
    va, vb = _losses(tmp_path / "one", "val", "val_loss"), _losses(tmp_path / "two", "val", "val_loss")
    assert len(va) == len(vb) == 1 and abs(va[0] - vb[0]) < 1e-5
    start = [json.loads(x) for x in (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()][0]
    assert start["world"] == 2
    ck = tmp_path / "two" / "checkpoints" / "step-00000020"
    assert (ck / "rng-1.pt").is_file() and (ck / "state" / ".metadata").is_file()
    assert not (ck / "state.pt").exists()
    # 2 processes resume from their own sharded checkpoint (step 10) and end bit-identical
    from safetensors.torch import load_file

    final = load_file(str(tmp_path / "two" / "model" / "model.safetensors"))
    shutil.rmtree(ck)
    shutil.rmtree(tmp_path / "two" / "model")
    p = subprocess.run([torchrun, "--standalone", "--nproc_per_node", "2", "-m", "herd", "pretrain",
                        "--config", toml, "--resume"], env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "resuming from" in p.stderr and "step-00000010" in p.stderr
    again = load_file(str(tmp_path / "two" / "model" / "model.safetensors"))
    assert all(torch.equal(final[k], again[k]) for k in final)
    assert _losses(tmp_path / "two")[-10:] == b[-10:]
    # the checkpoint written under FSDP is sharded (each rank wrote its shards): a 1-process run
    # resumes from it
    res = pretrain(tiny_config(para_tok_dir, tmp_path / "two", *EXTRA[:1], "25", *EXTRA[2:], "--run.resume",
                               "true"))
    assert res["steps"] == 25 and abs(one["val_loss"] - res["val_loss"]) < 0.5
