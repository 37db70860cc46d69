"""Scaling-law fits (§3.2.1) on synthetic IsoFLOP data with known exponents."""

import json
import math

import numpy as np
import pytest

from herd.errors import HerdError
from herd.scaling.fit import ScalingFit, fit_parabola, fit_power_law, fit_runs, fit_sigmoid, load_runs

BUDGETS = [1e15, 3e15, 1e16, 3e16, 1e17]


def synthetic_runs(alpha=0.47, A=0.08, beta=-0.05, B=30.0, k=0.08, noise=0.0, seed=0, n_sizes=7):
    """Loss = L*(C) + k·(ln N - ln N*(C))², N*(C) = A·C^alpha, L*(C) = B·C^beta, D = C/(6N)."""
    rng = np.random.default_rng(seed)
    runs = []
    for C in BUDGETS:
        n_star = A * C**alpha
        for f in np.geomspace(1 / 4, 4, n_sizes):
            N = n_star * f
            loss = B * C**beta + k * math.log(f) ** 2 + noise * rng.standard_normal()
            runs.append({"flops": C, "n_params": N, "tokens": C / (6 * N), "loss": loss})
    return runs


def test_power_laws_recovered_within_2_percent():
    alpha, A, beta, B = 0.47, 0.08, -0.05, 30.0
    fit = fit_runs(synthetic_runs(alpha, A, beta, B, noise=0.002))
    assert abs(fit.n_opt.alpha - alpha) / alpha < 0.02
    # D* = C/(6 N*) -> exponent 1 - alpha, coefficient 1/(6A)
    assert abs(fit.d_opt.alpha - (1 - alpha)) / (1 - alpha) < 0.02
    assert abs(fit.loss_opt.alpha - beta) / abs(beta) < 0.02
    assert fit.n_opt.r2 > 0.999
    pred = fit.predict(1e19)
    assert abs(pred["n_params"] / (A * 1e19**alpha) - 1) < 0.1
    assert abs(pred["loss"] / (B * 1e19**beta) - 1) < 0.02
    # residuals of each parabola are reported, and small for noise 0.002
    for p in fit.parabolas_n + fit.parabolas_d:
        assert len(p.residuals) == p.n_points == 7
        assert p.rms_residual < 0.005 and p.status == "ok"


def test_noiseless_exact():
    fit = fit_runs(synthetic_runs(0.53, 0.29, -0.048, 12.0))
    assert fit.n_opt.alpha == pytest.approx(0.53, rel=1e-6)
    assert fit.n_opt.A == pytest.approx(0.29, rel=1e-5)
    assert fit.loss_opt.alpha == pytest.approx(-0.048, rel=1e-6)
    assert max(p.max_abs_residual for p in fit.parabolas_n) < 1e-9


def test_chinchilla_form_exponent():
    """L = E + a/N^p + b/D^q with C = 6ND: the true optimum is N* ∝ C^(q/(p+q)); IsoFLOP
    parabolas around it recover the exponent within 2%."""
    E, a, p, b, q = 1.7, 400.0, 0.34, 410.0, 0.28
    expo = q / (p + q)
    G = (p * a / (q * b)) ** (1 / (p + q))
    runs = []
    for C in BUDGETS:
        n_star = G * (C / 6) ** expo
        for f in np.geomspace(1 / 3, 3, 9):
            N = n_star * f
            D = C / (6 * N)
            runs.append({"flops": C, "n_params": N, "tokens": D, "loss": E + a / N**p + b / D**q})
    fit = fit_runs(runs)
    assert abs(fit.n_opt.alpha - expo) / expo < 0.02
    assert abs(fit.d_opt.alpha - (1 - expo)) / (1 - expo) < 0.02


def test_parabola_flags_no_minimum():
    x = np.log([1e6, 2e6, 4e6, 8e6])
    p = fit_parabola(x, [3.0, 2.9, 2.85, 2.84 - 0.2], 1e15)  # still falling: concave/no bracket
    assert p.status in ("no-minimum", "extrapolated")
    with pytest.raises(HerdError, match="3 or more"):
        fit_parabola(x[:2], [1.0, 2.0], 1e15)


def test_power_law_needs_two_budgets():
    with pytest.raises(HerdError):
        fit_power_law([1e15], [1e6])
    law = fit_power_law([1e15, 1e17], [1e6, 1e7])
    assert law.alpha == pytest.approx(0.5)


def test_sigmoid_and_two_stage_prediction():
    rng = np.random.default_rng(1)
    nll = np.linspace(0.5, 3.0, 25)
    acc = 0.25 + 0.7 / (1 + np.exp(3.0 * (nll - 1.6))) + 0.005 * rng.standard_normal(25)
    s = fit_sigmoid(nll, acc, chance=0.25)
    assert s.k == pytest.approx(3.0, rel=0.1) and s.x0 == pytest.approx(1.6, rel=0.03)
    assert s.hi == pytest.approx(0.95, abs=0.02)
    s4 = fit_sigmoid(nll, acc)
    assert s4.lo == pytest.approx(0.25, abs=0.03)
    # full two-stage: task NLL falls linearly in log10 C; accuracy follows the sigmoid
    runs = synthetic_runs()
    for r in runs:
        r["nll"] = 6.0 - 0.3 * math.log10(r["flops"]) + 0.5 * (r["loss"] - 30 * r["flops"] ** -0.05)
        r["accuracy"] = float(0.25 + 0.7 / (1 + math.exp(3.0 * (r["nll"] - 1.6))))
    fit = fit_runs(runs, chance=0.25)
    assert fit.nll_stage.slope == pytest.approx(-0.3, rel=0.02)
    pred = fit.predict(1e19)
    assert pred["nll"] == pytest.approx(6.0 - 0.3 * 19, abs=0.02)
    assert pred["accuracy"] == pytest.approx(0.25 + 0.7 / (1 + math.exp(3.0 * (pred["nll"] - 1.6))), abs=0.02)


def test_roundtrip_and_bad_input(tmp_path):
    runs = synthetic_runs()
    f = tmp_path / "runs.jsonl"
    f.write_text("\n".join(json.dumps(r) for r in runs))
    fit = fit_runs(load_runs(tmp_path))
    fit.save(tmp_path / "fit.json")
    again = ScalingFit.load(tmp_path / "fit.json")
    assert again.predict(1e18) == fit.predict(1e18)
    f.write_text('{"flops": 1e15, "n_params": -3, "tokens": 1, "loss": 2}\n')
    with pytest.raises(HerdError, match="n_params"):
        load_runs(f)
    f.write_text("{not json\n")
    with pytest.raises(HerdError, match="malformed"):
        load_runs(f)
    with pytest.raises(HerdError, match="not found"):
        load_runs(tmp_path / "nope.jsonl")
    with pytest.raises(HerdError, match="2 or more budgets"):
        fit_runs([r for r in runs if r["flops"] == BUDGETS[0]])
    with pytest.raises(HerdError, match="positive"):
        fit.predict(-1)
