"""Scaling laws (paper §3.2.1): IsoFLOP sweeps, parabola and power-law fits, compute-optimal
predictions, and the two-stage benchmark prediction (FLOPs -> task NLL -> accuracy).

    from herd.scaling import fit_runs, load_runs, ScalingFit, IsoFLOPConfig, run_isoflop, model_for_size

    fit = fit_runs(load_runs("runs/isoflop"))       # parabolas per budget, N*(C), D*(C), L*(C)
    fit.predict(1e17)    # {"n_params", "tokens", "loss", ...} at the compute-optimal point
    fit.save("fit.json"); ScalingFit.load("fit.json")
    run_isoflop(IsoFLOPConfig(data=["data/tok"], budgets=[1e13, 3e13, 1e14]))   # trains, fits, plots
    model_for_size(n_nonemb, vocab_size)            # a Llama-shaped ModelArgs of ~N non-embedding params

The plots (`herd.scaling.plot.plot_all`) need matplotlib; the sigmoid fit needs scipy.
"""

from herd.scaling.fit import (
    Linear,
    Parabola,
    PowerLaw,
    ScalingFit,
    Sigmoid,
    fit_linear_log10,
    fit_parabola,
    fit_power_law,
    fit_runs,
    fit_sigmoid,
    group_by_budget,
    load_runs,
)
from herd.scaling.isoflop import (
    CONVENTION,
    IsoFLOPConfig,
    heldout_loss,
    model_for_size,
    plan_runs,
    run_isoflop,
)

__all__ = [
    "ScalingFit",
    "Parabola",
    "PowerLaw",
    "Sigmoid",
    "Linear",
    "fit_runs",
    "load_runs",
    "fit_parabola",
    "fit_power_law",
    "fit_sigmoid",
    "fit_linear_log10",
    "group_by_budget",
    "IsoFLOPConfig",
    "run_isoflop",
    "model_for_size",
    "plan_runs",
    "heldout_loss",
    "CONVENTION",
]
