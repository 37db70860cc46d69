"""The cpu speedrun preset sized by the probed training throughput (herd.speedrun.machine)."""

from test_probe import AMX, AMX_FLAGS, AVX2, AVX2_FLAGS, fake_machine

from herd.speedrun.config import preset
from herd.speedrun.machine import MAX_SCALE, machine_scale


def test_amx_machine_scales_the_budgets(monkeypatch, tmp_path):
    monkeypatch.setenv("HERD_CACHE_DIR", str(tmp_path))
    fake_machine(monkeypatch, AMX_FLAGS, AMX)
    cfg = preset("cpu", device="cpu")
    lines = []
    scaled, info = machine_scale(cfg, lines.append)
    f = min(MAX_SCALE, AMX["bf16"] / AMX["fp32"])
    assert info["scale"] == f > 1
    assert scaled.flagship_flops == cfg.flagship_flops * f
    assert scaled.budgets == [b * f for b in cfg.budgets]
    assert cfg.hash() != scaled.hash() and info["budgets"] == cfg.budgets
    assert lines and lines[0].startswith(f"speedrun: compute scale x{f:.2f}") and "amx_bf16" in lines[0]


def test_avx2_machine_keeps_the_preset(monkeypatch, tmp_path):
    monkeypatch.setenv("HERD_CACHE_DIR", str(tmp_path))
    fake_machine(monkeypatch, AVX2_FLAGS, AVX2)
    cfg = preset("cpu", device="cpu")
    scaled, info = machine_scale(cfg, lambda s: None)
    assert info["scale"] == 1.0 and scaled == cfg and "no bf16 matrix hardware" in info["reason"]


def test_fixed_scale_and_explicit_fp32(monkeypatch, tmp_path):
    monkeypatch.setenv("HERD_CACHE_DIR", str(tmp_path))
    calls = fake_machine(monkeypatch, AMX_FLAGS, AMX)
    assert machine_scale(preset("quick"), lambda s: None)[1]["scale"] == 1.0
    assert machine_scale(preset("cpu", compute_scale=2.0), lambda s: None)[0].flagship_flops == 2 * 6e12
    assert machine_scale(preset("cpu", device="cpu", dtype="float32"), lambda s: None)[1]["scale"] == 1.0
    assert calls == []
