"""`herd scaling fit / predict` end to end on synthetic runs: JSON fit, PNG plots, bad input."""

import json

from herd.cli import main
from herd.model.args import ModelArgs
from herd.scaling.isoflop import IsoFLOPConfig, model_for_size, plan_runs
from tests.scaling.test_fit import synthetic_runs


def test_fit_and_predict_cli(tmp_path, capsys):
    runs = synthetic_runs(alpha=0.5, A=0.1)
    (tmp_path / "runs.jsonl").write_text("\n".join(json.dumps(r) for r in runs) + "\n")
    assert main(["scaling", "fit", str(tmp_path), "--target", "1e19"]) == 0
    out = capsys.readouterr().out
    assert "N*(C) = 0.1 * C^0.5000" in out and "rms res" in out
    for name in ("fit.json", "isoflop_params.png", "isoflop_tokens.png", "power_laws.png"):
        f = tmp_path / name
        assert f.is_file() and f.stat().st_size > 1000
    assert (tmp_path / "isoflop_params.png").read_bytes()[:4] == b"\x89PNG"
    assert main(["scaling", "predict", "--flops", "1e19", "--fit", str(tmp_path / "fit.json"), "--json"]) == 0
    pred = json.loads(capsys.readouterr().out)
    assert abs(pred["n_params"] / (0.1 * 1e19**0.5) - 1) < 1e-3
    assert (
        main(
            ["scaling", "predict", "--flops", "1e15", "--fit", str(tmp_path / "fit.json"), "--vocab", "4096"]
        )
        == 0
    )
    assert "non-embedding params" in capsys.readouterr().out


def test_bad_input_one_line(tmp_path, capsys):
    assert main(["scaling", "predict", "--flops", "1e19", "--fit", str(tmp_path / "missing.json")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("herd: error: scaling fit not found") and err.count("\n") == 1
    (tmp_path / "runs.jsonl").write_text('{"flops": 1}\n')
    assert main(["scaling", "fit", str(tmp_path)]) == 2
    assert "n_params" in capsys.readouterr().err


def test_model_for_size_and_plan():
    for n in (5e5, 1e6, 5e6, 2e7):
        m = model_for_size(n, 4096)
        assert isinstance(m, ModelArgs)
        assert abs(m.num_params(exclude_embedding=True) / n - 1) < 0.15
    cfg = IsoFLOPConfig(data=[], budgets=[3e13, 1e14], seq_len=128, min_steps=20)
    plan = plan_runs(cfg, 4096)
    assert len({r["flops"] for r in plan}) == 2
    for r in plan:
        # the FLOPs convention: C = D * flops_per_token(seq), within the rounding to whole steps
        c = r["tokens"] * r["model"].flops_per_token(128)
        assert abs(c / r["flops"] - 1) < 0.05 + r["batch_size"] * 128 / r["tokens"]
        assert r["steps"] >= 20
    # one batch size per budget
    for C in (3e13, 1e14):
        assert len({r["batch_size"] for r in plan if r["flops"] == C}) == 1


def test_plan_grid_brackets_the_guess_above_the_floor():
    """A budget whose Chinchilla guess sqrt(C/120) sits near the vocab's floor on N keeps sizes on
    both sides of it, and a larger budget gets a larger grid."""
    import math

    cfg = IsoFLOPConfig(data=[], budgets=[3e11, 3e12], n_sizes=4, spread=3.0, seq_len=256, min_steps=30)
    plan = plan_runs(cfg, 1024)
    for C in (3e11, 3e12):
        ns = [r["n_params"] for r in plan if r["flops"] == C]
        guess = math.sqrt(C / 120)
        assert len(ns) >= 3 and min(ns) < guess < max(ns)
    top = {C: max(r["n_params"] for r in plan if r["flops"] == C) for C in (3e11, 3e12)}
    assert top[3e12] > top[3e11]
