"""herd.precision: the auto rule (pure, tested with the figures of both kinds of machine), the per-machine
cache, explicit choices, and one real probe on this machine."""

import json

import pytest
import torch

from herd import precision as P
from herd.errors import HerdError

AMX_FLAGS = ["avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_int8", "amx_tile"]
AVX2_FLAGS = ["avx", "avx2", "fma", "f16c"]
# figures measured on the two machines of docs/benchmarks.md (2 threads)
AMX = {"fp32": 154e9, "bf16": 1.2e12, "fp32_decode": 11e9, "bf16_decode": 14e9, "fp32_peak": 154e9,
       "bf16_peak": 1.94e12, "ms": 12.0}
AVX2 = {"fp32": 175e9, "bf16": 6e9, "fp32_decode": 12e9, "bf16_decode": 2e9, "fp32_peak": 175e9,
        "bf16_peak": 6e9, "ms": 30.0}


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HERD_CACHE_DIR", str(tmp_path))
    return tmp_path / "precision.json"


def fake_machine(monkeypatch, flags, figures):
    calls = []

    def run_probe(kind, shapes, reps=3):
        calls.append((kind, tuple(shapes)))
        return dict(figures)

    monkeypatch.setattr(P, "run_probe", run_probe)
    monkeypatch.setattr(P, "cpu_info", lambda: ("Test CPU", sorted(flags)))
    return calls


@pytest.mark.parametrize("s,want", [("auto", "auto"), ("fp32", "fp32"), ("float32", "fp32"), ("BF16", "bf16"),
                                    ("bfloat16", "bf16"), (torch.bfloat16, "bf16"), ("torch.float32", "fp32"),
                                    (None, "auto"), ("fp16", "fp16")])
def test_parse(s, want):
    assert P.parse_precision(s) == want


def test_parse_bad():
    with pytest.raises(HerdError, match="use auto, fp32 or bf16"):
        P.parse_precision("int4")


def test_decide_amx_picks_bf16():
    for kind in ("train", "infer"):
        choice, reason = P.decide(kind, AMX, AMX_FLAGS)
        assert choice == "bf16" and "amx_bf16" in reason and "fp32" in reason


def test_decide_avx2_picks_fp32():
    for kind in ("train", "infer"):
        choice, reason = P.decide(kind, AVX2, AVX2_FLAGS)
        assert choice == "fp32" and "no bf16 matrix hardware" in reason and "0.03x" in reason


def test_decide_infer_slow_decode_keeps_fp32():
    fig = dict(AMX, bf16_decode=5e9)  # prefill faster, batch-1 decode slower: inference stays fp32
    assert P.decide("infer", fig, AMX_FLAGS)[0] == "fp32"
    assert P.decide("train", fig, AMX_FLAGS)[0] == "bf16"


def test_decide_margin():
    fig = dict(AMX, bf16=1.1 * AMX["fp32"])  # within noise of fp32: not worth the rounding
    assert P.decide("train", fig, AMX_FLAGS)[0] == "fp32"


def test_resolve_avx2_machine_auto_is_fp32(monkeypatch, cache):
    fake_machine(monkeypatch, AVX2_FLAGS, AVX2)
    lines = []
    dtype, reason, peak = P.resolve_precision("auto", "cpu", shapes=(256, 704, 512), log=lines.append)
    assert dtype == torch.float32 and peak == AVX2["fp32_peak"]
    assert lines == [f"herd: precision fp32 — {reason}"]


def test_resolve_amx_machine_and_cache(monkeypatch, cache):
    calls = fake_machine(monkeypatch, AMX_FLAGS, AMX)
    dtype, reason, peak = P.resolve_precision("auto", "cpu", shapes=(512, 1536, 512))
    assert dtype == torch.bfloat16 and peak == AMX["bf16_peak"] and "cached" not in reason
    assert calls == [("train", (512, 1536, 512))]
    # the second call (any process on this machine) reads the cache: no probe
    dtype2, reason2, _ = P.resolve_precision("auto", "cpu", shapes=(512, 1536, 512))
    assert dtype2 == torch.bfloat16 and "cached" in reason2 and len(calls) == 1
    saved = json.loads(cache.read_text())
    assert len(saved) == 1 and next(iter(saved.values()))["cpu"] == "Test CPU"
    # other shapes, another kind or other threads are other entries
    P.resolve_precision("auto", "cpu", shapes=(64, 192, 256))
    P.resolve_precision("auto", "cpu", shapes=(512, 1536, 512), kind="infer")
    assert len(calls) == 3
    # explicit choices are honoured; the peak is that precision's
    d, r, pk = P.resolve_precision("fp32", "cpu", shapes=(512, 1536, 512))
    assert d == torch.float32 and r.startswith("fp32: requested") and pk == AMX["fp32_peak"]
    d, r, pk = P.resolve_precision("bf16", "cpu", shapes=(512, 1536, 512))
    assert d == torch.bfloat16 and pk == AMX["bf16_peak"]


def test_cache_unwritable_still_resolves(monkeypatch, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    monkeypatch.setenv("HERD_CACHE_DIR", str(blocker / "sub"))  # a directory under a file: cannot be made
    fake_machine(monkeypatch, AMX_FLAGS, AMX)
    assert P.resolve_precision("auto", "cpu", shapes=(512, 1536, 512))[0] == torch.bfloat16


def test_fp16_on_cpu_is_an_error(cache):
    with pytest.raises(HerdError, match="fp16 is for GPUs"):
        P.resolve_precision("fp16", "cpu")


def test_resolve_device_auto_uses_probe(monkeypatch, cache):
    from herd.train.parallel import resolve_device

    fake_machine(monkeypatch, AVX2_FLAGS, AVX2)
    info = {}
    assert (resolve_device("cpu", "auto", shapes=(64, 192, 256), info=info)
            == (torch.device("cpu"), torch.float32))
    assert info["precision"] == "fp32" and "AVX2" in info["reason"]
    fake_machine(monkeypatch, AMX_FLAGS, AMX)
    info = {}
    assert resolve_device("cpu", "auto", shapes=(65, 192, 256), info=info)[1] == torch.bfloat16
    assert info["peak"] == AMX["bf16_peak"]
    info = {}
    assert resolve_device("cpu", "float32", info=info)[1] == torch.float32 and info["reason"] == "requested"


def test_real_probe_on_this_machine(cache):
    """The probe itself, on this CPU: positive figures for both precisions, the choice consistent with
    them."""
    fig = P.run_probe("infer", (128, 384, 64), reps=1)
    for k in ("fp32", "bf16", "fp32_decode", "bf16_decode", "fp32_peak", "bf16_peak"):
        assert fig[k] > 0, k
    _, flags = P.cpu_info()
    choice, reason = P.decide("infer", fig, flags)
    assert choice in ("fp32", "bf16") and reason.startswith(choice)
    if not P.bf16_hardware(flags):
        assert "no bf16 matrix hardware" in reason


def test_shapes_of():
    from herd.model.args import get_preset

    a = get_preset("herd-20m")
    assert P.shapes_of(a, 2048) == (a.dim, a.ffn_hidden_dim, 2048)


def test_figures_from_an_overloaded_machine_are_measured_again(monkeypatch, cache):
    calls = fake_machine(monkeypatch, AMX_FLAGS, AMX)
    loads = iter([20.0, 19.0, 1.0, 1.0])
    monkeypatch.setattr(P.os, "getloadavg", lambda: (next(loads), 0.0, 0.0))
    monkeypatch.setattr(P.os, "cpu_count", lambda: 2)
    P.probe("train", (512, 1536, 512))  # measured at load 20 on 2 cores
    assert P.probe("train", (512, 1536, 512))[1] is True  # still busy: the cache stands
    assert P.probe("train", (512, 1536, 512))[1] is False  # calm now: measured again
    assert P.probe("train", (512, 1536, 512))[1] is True
    assert len(calls) == 2
