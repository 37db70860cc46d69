"""Training in bf16 autocast (fp32 master weights, fp32 loss) against fp32: same data, same init, loss
curves that agree within the noise of training; the start record of metrics.jsonl names the precision
and why; MFU is taken against the peak of the precision used. The 300-step version is `slow`."""

import json

import pytest
import torch
from test_probe import AMX, AMX_FLAGS, fake_machine
from train_helpers import tiny_config


def _run(tok_dir, out, precision, steps, monkeypatch=None):
    from herd.train import pretrain

    cfg = tiny_config(tok_dir, out, "--run.steps", steps, "--run.precision", precision,
                      "--run.peak_flops", "0", "--eval.batches", "4")
    res = pretrain(cfg, log=lambda s: None)
    recs = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    return res, recs


def _losses(recs):
    return [r["loss"] for r in recs if r.get("kind") == "train"]


def _compare(tok_dir, tmp_path, steps):
    r32, m32 = _run(tok_dir, tmp_path / "fp32", "fp32", steps)
    r16, m16 = _run(tok_dir, tmp_path / "bf16", "bf16", steps)
    a, b = _losses(m32), _losses(m16)
    assert len(a) == len(b) == steps
    assert a != b  # bf16 really ran: its rounding shows in the losses
    start32, start16 = m32[0], m16[0]
    assert start32["kind"] == start16["kind"] == "start"
    assert start32["precision"] == "fp32" and start16["precision"] == "bf16"
    assert start16["dtype"] == "torch.bfloat16" and start16["precision_reason"] == "requested"
    # MFU against the peak of the precision used: the bf16 peak is probed for the bf16 run
    assert start16["peak_flops"] > 0 and start32["peak_flops"] > 0
    # the curves agree within noise: the training noise is the step-to-step wobble of the fp32 curve itself
    tail = steps // 2
    noise = sum(abs(a[i] - a[i - 1]) for i in range(steps - tail, steps)) / tail
    diff = sum(abs(x - y) for x, y in zip(a[-tail:], b[-tail:])) / tail
    mean_a, mean_b = sum(a[-tail:]) / tail, sum(b[-tail:]) / tail
    assert a[-1] < a[0] - 1.0 and b[-1] < b[0] - 1.0  # both learn
    print(f"{steps} steps: fp32 {a[-1]:.4f} bf16 {b[-1]:.4f}; "
          f"val {r32['val_loss']:.4f} {r16['val_loss']:.4f}; "
          f"mean |diff| {diff:.4f} vs step noise {noise:.4f}")
    assert diff < max(noise, 0.02), (diff, noise)
    assert abs(mean_a - mean_b) < 0.02 * mean_a, (mean_a, mean_b)
    assert abs(r32["val_loss"] - r16["val_loss"]) < 0.03 * r32["val_loss"], (r32, r16)
    return a, b, noise, diff


def test_bf16_autocast_matches_fp32_short(tok_dir, tmp_path):
    _compare(tok_dir, tmp_path, 40)


@pytest.mark.slow
def test_bf16_autocast_matches_fp32_300_steps(tok_dir, tmp_path):
    a, b, noise, diff = _compare(tok_dir, tmp_path, 300)
    print(f"300 steps: fp32 {a[-1]:.4f} bf16 {b[-1]:.4f}; mean |diff| {diff:.4f} vs step noise {noise:.4f}")


def test_auto_on_an_amx_machine_trains_in_bf16(tok_dir, tmp_path, monkeypatch):
    """`auto` (the default) with the probe of an AMX machine: bf16 autocast, the reason in the start record
    and the log line, MFU against the bf16 peak."""
    monkeypatch.setenv("HERD_CACHE_DIR", str(tmp_path / "cache"))
    fake_machine(monkeypatch, AMX_FLAGS, AMX)
    from herd.train import pretrain

    cfg = tiny_config(tok_dir, tmp_path / "auto", "--run.steps", 3, "--run.peak_flops", "0")
    assert cfg.run.precision == "auto"
    lines = []
    pretrain(cfg, log=lines.append)
    recs = [json.loads(x) for x in (tmp_path / "auto" / "metrics.jsonl").read_text().splitlines()]
    start = recs[0]
    assert start["precision"] == "bf16" and "amx_bf16" in start["precision_reason"]
    assert start["peak_flops"] == AMX["bf16_peak"]
    assert any(s.startswith("herd: precision bf16 — bf16 autocast") for s in lines)
    train = [r for r in recs if r.get("kind") == "train"]
    assert train and all(r["mfu"] > 0 for r in train)


def test_old_dtype_name_still_works(tok_dir, tmp_path, capsys):
    from herd.train import load_config

    cfg = load_config(None, ["--run.dtype", "float32"])
    assert cfg.run.precision == "float32"
    assert "run.dtype is deprecated; use run.precision" in capsys.readouterr().err
    cfg = load_config(None, ["--run.precision", "bf16"])
    assert cfg.run.precision == "bf16"


def test_bad_precision_is_one_clear_error(tmp_path):
    from herd.errors import HerdError
    from herd.train import load_config

    cfg = load_config(None, ["--run.precision", "int3", "--run.steps", "1"])
    with pytest.raises(HerdError, match="run.precision must be auto, fp32, bf16"):
        cfg.validate()


def test_autocast_forward_keeps_fp32_numerics():
    """Under the trainer's autocast the matmuls run in bf16, while RMSNorm, RoPE and the loss stay fp32
    (the model upcasts them), and the parameters (master weights) stay fp32."""
    from herd.model.args import get_preset
    from herd.model.transformer import Transformer

    args = get_preset("herd-5m", dim=64, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=256, multiple_of=32)
    m = Transformer.build(args, seed=0)
    toks = torch.randint(0, 256, (2, 33), generator=torch.Generator().manual_seed(0))
    seen = {}
    def hook(mod, inputs, out):
        seen.setdefault("wq", out.dtype)

    m.layers[0].attention.wq.register_forward_hook(hook)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = m(toks[:, :-1], targets=toks[:, 1:])
    assert seen["wq"] == torch.bfloat16 and loss.dtype == torch.float32
    loss.backward()
    assert all(p.dtype == torch.float32 and p.grad.dtype == torch.float32 for p in m.parameters())
    ref = m(toks[:, :-1], targets=toks[:, 1:])
    assert abs(loss.item() - ref.item()) < 0.01 * ref.item()
