"""Plots of the scaling-law fits (paper §3.2.1, Figures 2-4): the IsoFLOP curves with their
parabolas and minima, the compute-optimal power laws, and the two benchmark-prediction stages.
matplotlib with the Agg backend (files only, no display needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from herd.scaling.fit import ScalingFit, group_by_budget


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_isoflops(fit: ScalingFit, runs: list[dict], path, variable: str = "n_params") -> Path:
    """Validation loss against model size (or tokens) per budget, with the fitted parabolas."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=110)
    groups = group_by_budget(runs)
    parabolas = fit.parabolas_n if variable == "n_params" else fit.parabolas_d
    cmap = plt.get_cmap("viridis")
    for i, p in enumerate(parabolas):
        color = cmap(i / max(1, len(parabolas) - 1) * 0.85)
        rs = next((v for b, v in groups.items() if abs(b - p.budget) <= 0.02 * p.budget), [])
        x = np.array([r[variable] for r in rs], dtype=float)
        y = np.array([r["loss"] for r in rs], dtype=float)
        ax.scatter(x, y, color=color, s=22, zorder=3)
        lo, hi = np.log(x.min()) - 0.15, np.log(x.max()) + 0.15
        xs = np.linspace(min(lo, p.x_opt - 0.1), max(hi, p.x_opt + 0.1), 100)
        ax.plot(np.exp(xs), p(xs), color=color, lw=1.3, label=f"{p.budget:.2g} FLOPs")
        ax.scatter([p.opt], [p.loss_opt], color=color, marker="*", s=120, edgecolor="k", zorder=4)
    ax.set_xscale("log")
    ax.set_xlabel("non-embedding parameters N" if variable == "n_params" else "training tokens D")
    ax.set_ylabel("validation loss (nats/token)")
    ax.set_title("IsoFLOP curves (stars: compute-optimal points)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, which="both")
    return _save(fig, path)


def plot_power_laws(fit: ScalingFit, path, target: float | None = None) -> Path:
    """N*(C) and D*(C) on log-log axes, extrapolated to `target` FLOPs (marked) if given."""
    plt = _plt()
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.9), dpi=110)
    C = np.array(fit.budgets)
    hi = max(C.max(), target or 0) * 1.5
    cs = np.geomspace(C.min() / 1.5, hi, 100)
    for ax, law, pts, label in (
        (axes[0], fit.n_opt, [p.opt for p in fit.parabolas_n], "compute-optimal N*"),
        (axes[1], fit.d_opt, [p.opt for p in fit.parabolas_d], "compute-optimal tokens D*"),
        (
            axes[2],
            fit.loss_opt,
            [(a.loss_opt + b.loss_opt) / 2 for a, b in zip(fit.parabolas_n, fit.parabolas_d)],
            "compute-optimal loss L*",
        ),
    ):
        ax.scatter(C, pts, color="C0", zorder=3, label="IsoFLOP minima")
        ax.plot(cs, law(cs), color="C1", label=f"{law.A:.3g}·C^{law.alpha:.3f}")
        if target:
            ax.scatter(
                [target],
                [law(target)],
                marker="*",
                s=140,
                color="C3",
                edgecolor="k",
                zorder=4,
                label=f"prediction at {target:.2g}",
            )
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("compute C (FLOPs)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    fig.suptitle("Scaling laws fitted on the IsoFLOP minima")
    return _save(fig, path)


def plot_benchmark_stages(fit: ScalingFit, runs: list[dict], path) -> Path | None:
    """Stage 1 (FLOPs -> task NLL) and stage 2 (NLL -> accuracy) when they were fitted."""
    if fit.nll_stage is None:
        return None
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.9), dpi=110)
    rs = [r for r in runs if isinstance(r.get("nll"), (int, float))]
    axes[0].scatter([r["flops"] for r in rs], [r["nll"] for r in rs], s=14, alpha=0.6, label="runs")
    cs = np.geomspace(min(fit.budgets) / 1.5, max(fit.budgets) * 3, 50)
    axes[0].plot(cs, fit.nll_stage(cs), color="C1", label="linear in log10 C")
    axes[0].set_xscale("log")
    axes[0].set_xlabel("compute C (FLOPs)")
    axes[0].set_ylabel("normalized NLL of the correct answer")
    axes[0].legend(fontsize=8)
    if fit.acc_stage is not None:
        ra = [r for r in rs if isinstance(r.get("accuracy"), (int, float))]
        x = np.array([r["nll"] for r in ra])
        axes[1].scatter(x, [r["accuracy"] for r in ra], s=14, label="runs")
        xs = np.linspace(x.min() - 0.2 * np.ptp(x), x.max() + 0.2 * np.ptp(x), 100)
        axes[1].plot(xs, fit.acc_stage(xs), color="C1", label="sigmoid")
        axes[1].set_xlabel("normalized NLL")
        axes[1].set_ylabel("accuracy")
        axes[1].legend(fontsize=8)
    else:
        axes[1].set_axis_off()
    return _save(fig, path)


def _save(fig, path) -> Path:
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_all(fit: ScalingFit, runs: list[dict], out_dir, target: float | None = None) -> list[Path]:
    out = Path(out_dir)
    paths = [
        plot_isoflops(fit, runs, out / "isoflop_params.png", "n_params"),
        plot_isoflops(fit, runs, out / "isoflop_tokens.png", "tokens"),
        plot_power_laws(fit, out / "power_laws.png", target),
    ]
    p = plot_benchmark_stages(fit, runs, out / "benchmark_prediction.png")
    return paths + ([p] if p else [])
