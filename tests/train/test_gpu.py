"""Pretraining on a CUDA GPU: bf16 autocast with fp32 master weights, fused AdamW, optional
torch.compile; the run learns and its export loads (paper §3.3 numerics)."""

import json

import pytest
import torch
from train_helpers import tiny_config

from herd.train import pretrain


@pytest.mark.gpu
@pytest.mark.parametrize("compile_", [False, True])
def test_pretrain_bf16_on_gpu(para_tok_dir, tmp_path, compile_):
    out = tmp_path / "gpu"
    cfg = tiny_config(para_tok_dir, out, "--run.steps", "30", "--run.device", "cuda", "--eval.interval", "15",
                      "--run.compile", str(compile_).lower(), "--checkpoint.interval", "15",
                      "--run.peak_flops", "0")
    res = pretrain(cfg)
    recs = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    start = recs[0]
    train = [r for r in recs if r["kind"] == "train"]
    assert start["dtype"] == "torch.bfloat16" and start["peak_flops"] > 1e13
    assert train[-1]["loss"] < train[0]["loss"] - 1.0 and res["val_loss"] < train[0]["loss"]
    assert all(r["mem_gib"] > 0 for r in train)
    from herd.checkpoint import load_model

    model, _ = load_model(res["model_dir"])
    assert next(model.parameters()).dtype == torch.float32  # master weights stay fp32
