"""Scaling-law fits (paper §3.2.1): IsoFLOP parabolas, compute-optimal power laws, and the
two-stage prediction of benchmark accuracy.

The method, as in the paper:
1. For each compute budget C, fit a parabola of validation loss against log model size
   (and, separately, against log training tokens). Its minimum is the compute-optimal point
   (N*_C, D*_C) and its value there the compute-optimal loss L*_C.
2. Fit power laws N*(C) = A_N·C^α_N and D*(C) = A_D·C^α_D by a straight line in log-log space
   (the paper's (α, A) = (0.53, 0.29) is the one for tokens), and the optimal loss against
   compute, L*(C) = B·C^β (a straight line in log-log space; β < 0).
3. Benchmark prediction: (1) a linear fit from log10 training FLOPs to the normalized negative
   log-likelihood (NLL) of the correct answer of the compute-optimal models; (2) a sigmoid from
   that NLL to accuracy, fitted on all models.

A run is a dict with `flops` (its budget C), `n_params` (N), `tokens` (D) and `loss` (held-out
loss in nats/token); optional `nll` (task NLL) and `accuracy`. Which N and C convention the runs
use is theirs to state (`convention`); herd's sweeps use C = D·ModelArgs.flops_per_token(seq)
and N = non-embedding parameters (output layer included), the N that FLOPs count.
Logs are natural logs throughout, except the FLOPs->NLL stage, which uses log10 C as the paper's
plots do. Only numpy (and scipy for the sigmoid) are needed.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from herd.errors import HerdError
from herd.fileio import atomic_write_json

REQUIRED = ("flops", "n_params", "tokens", "loss")


@dataclass
class Parabola:
    """loss = a·x² + b·x + c with x = ln(N) (or ln(D)) at one budget."""

    budget: float
    variable: str  # "n_params" or "tokens"
    a: float
    b: float
    c: float
    x_opt: float  # ln of the optimum
    loss_opt: float
    residuals: list[float]  # observed - fitted, in the runs' order (sorted by x)
    rms_residual: float
    max_abs_residual: float
    n_points: int
    status: str  # "ok", "extrapolated" (minimum outside the sampled sizes), "no-minimum" (not convex)

    @property
    def opt(self) -> float:
        return math.exp(self.x_opt)

    def __call__(self, x):
        x = np.asarray(x, dtype=float)
        return self.a * x * x + self.b * x + self.c


@dataclass
class PowerLaw:
    """y = A·C^alpha, fitted as ln y = ln A + alpha·ln C."""

    A: float
    alpha: float
    r2: float
    n_points: int

    def __call__(self, C):
        return self.A * np.asarray(C, dtype=float) ** self.alpha


@dataclass
class Sigmoid:
    """accuracy = lo + (hi - lo) / (1 + exp(k·(nll - x0))): falls from hi to lo as NLL grows."""

    lo: float
    hi: float
    k: float
    x0: float
    rms_residual: float
    n_points: int

    def __call__(self, nll):
        return _sigmoid(np.asarray(nll, dtype=float), self.lo, self.hi, self.k, self.x0)


@dataclass
class Linear:
    """y = slope·log10(C) + intercept (paper: compute-optimal task NLL against training FLOPs)."""

    slope: float
    intercept: float
    r2: float
    n_points: int

    def __call__(self, C):
        return self.slope * np.log10(np.asarray(C, dtype=float)) + self.intercept


@dataclass
class ScalingFit:
    """Everything `herd scaling fit` learns from a set of IsoFLOP runs."""

    budgets: list[float]
    parabolas_n: list[Parabola]
    parabolas_d: list[Parabola]
    n_opt: PowerLaw  # N*(C)
    d_opt: PowerLaw  # D*(C)
    loss_opt: PowerLaw  # L*(C)
    nll_stage: Linear | None = None
    acc_stage: Sigmoid | None = None
    convention: str = ""
    notes: list[str] = field(default_factory=list)

    def predict(self, flops: float) -> dict:
        """Compute-optimal model size, tokens and loss at budget `flops`."""
        if not (flops > 0 and math.isfinite(flops)):
            raise HerdError(f"--flops must be a positive number, got {flops!r}")
        out = {
            "flops": float(flops),
            "n_params": float(self.n_opt(flops)),
            "tokens": float(self.d_opt(flops)),
            "loss": float(self.loss_opt(flops)),
            "extrapolation": float(flops / max(self.budgets)) if flops > max(self.budgets) else 1.0,
        }
        if self.nll_stage is not None:
            out["nll"] = float(self.nll_stage(flops))
            if self.acc_stage is not None:
                out["accuracy"] = float(self.acc_stage(out["nll"]))
        return out

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ScalingFit":
        try:
            return cls(
                budgets=list(d["budgets"]),
                parabolas_n=[Parabola(**p) for p in d["parabolas_n"]],
                parabolas_d=[Parabola(**p) for p in d["parabolas_d"]],
                n_opt=PowerLaw(**d["n_opt"]),
                d_opt=PowerLaw(**d["d_opt"]),
                loss_opt=PowerLaw(**d["loss_opt"]),
                nll_stage=Linear(**d["nll_stage"]) if d.get("nll_stage") else None,
                acc_stage=Sigmoid(**d["acc_stage"]) if d.get("acc_stage") else None,
                convention=d.get("convention", ""),
                notes=list(d.get("notes", [])),
            )
        except (KeyError, TypeError) as e:
            raise HerdError(f"not a scaling fit (from `herd scaling fit`): {e}") from None

    def save(self, path) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(path, self.to_dict(), indent=2)

    @classmethod
    def load(cls, path) -> "ScalingFit":
        p = Path(path)
        if not p.is_file():
            raise HerdError(f"scaling fit not found: {p} (run `herd scaling fit RUNS --out {p}` first)")
        try:
            return cls.from_dict(json.loads(p.read_text()))
        except json.JSONDecodeError as e:
            raise HerdError(f"{p}: not valid JSON ({e.msg}, line {e.lineno})") from None


# ---------------------------------------------------------------------------------------------
# Reading runs


def load_runs(path) -> list[dict]:
    """Runs from a JSON list, a JSONL file, or a directory holding `runs.jsonl` (the output of
    `herd scaling isoflop`). Each needs flops, n_params, tokens, loss (positive numbers)."""
    p = Path(path)
    if p.is_dir():
        p = p / "runs.jsonl"
    if not p.is_file():
        raise HerdError(
            f"runs file not found: {p} (give the JSONL from `herd scaling isoflop`, or its directory)"
        )
    text = p.read_text()
    try:
        if text.lstrip().startswith("["):
            runs = json.loads(text)
        else:
            runs = [json.loads(line) for line in text.splitlines() if line.strip()]
    except json.JSONDecodeError as e:
        raise HerdError(f"{p}: malformed JSON at line {e.lineno} ({e.msg})") from None
    return validate_runs(runs, where=str(p))


def validate_runs(runs: list[dict], where: str = "runs") -> list[dict]:
    out = []
    for i, r in enumerate(runs):
        if not isinstance(r, dict):
            raise HerdError(f"{where}: run {i + 1} is not an object")
        for k in REQUIRED:
            v = r.get(k)
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v) or v <= 0:
                raise HerdError(f"{where}: run {i + 1} needs a positive number `{k}`, got {v!r}")
        out.append(r)
    if not out:
        raise HerdError(f"{where}: no runs")
    return out


def group_by_budget(runs: list[dict], rel_tol: float = 0.02) -> dict[float, list[dict]]:
    """Group runs whose budgets agree within rel_tol (budgets are floats written by hand)."""
    groups: dict[float, list[dict]] = {}
    for r in sorted(runs, key=lambda r: r["flops"]):
        for b in groups:
            if abs(r["flops"] - b) <= rel_tol * b:
                groups[b].append(r)
                break
        else:
            groups[float(r["flops"])] = [r]
    return groups


# ---------------------------------------------------------------------------------------------
# Fits


def fit_parabola(x, y, budget: float = 0.0, variable: str = "n_params") -> Parabola:
    """Least-squares parabola y = a x² + b x + c (x = ln size); minimum = compute-optimal point.
    A parabola needs three distinct sizes. If it is not convex (a <= 0: the runs do not bracket
    a minimum) the best observed point stands in and the status says so."""
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    order = np.argsort(x)
    x, y = x[order], y[order]
    if len(np.unique(x)) < 3:
        raise HerdError(
            f"budget {budget:.3g}: a parabola needs runs at 3 or more distinct sizes, got {len(np.unique(x))}"
        )
    a, b, c = np.polyfit(x, y, 2)
    res = y - (a * x * x + b * x + c)
    if a > 0:
        x_opt = -b / (2 * a)
        loss_opt = c - b * b / (4 * a)
        span = x.max() - x.min()
        status = "ok" if x.min() - 0.25 * span <= x_opt <= x.max() + 0.25 * span else "extrapolated"
    else:
        i = int(np.argmin(y))
        x_opt, loss_opt, status = float(x[i]), float(y[i]), "no-minimum"
    return Parabola(
        budget=float(budget),
        variable=variable,
        a=float(a),
        b=float(b),
        c=float(c),
        x_opt=float(x_opt),
        loss_opt=float(loss_opt),
        residuals=[float(v) for v in res],
        rms_residual=float(np.sqrt(np.mean(res**2))),
        max_abs_residual=float(np.max(np.abs(res))),
        n_points=int(len(x)),
        status=status,
    )


def fit_power_law(C, y) -> PowerLaw:
    """y = A·C^alpha by least squares on ln y = ln A + alpha ln C (two or more points)."""
    C = np.asarray(C, dtype=float)
    y = np.asarray(y, dtype=float)
    if len(C) < 2 or len(np.unique(C)) < 2:
        raise HerdError("a power law needs two or more distinct compute budgets")
    if np.any(C <= 0) or np.any(y <= 0):
        raise HerdError("a power law needs positive budgets and values")
    lx, ly = np.log(C), np.log(y)
    alpha, lnA = np.polyfit(lx, ly, 1)
    pred = lnA + alpha * lx
    ss_res = float(np.sum((ly - pred) ** 2))
    ss_tot = float(np.sum((ly - ly.mean()) ** 2))
    r2 = 1.0 - ss_res / ss_tot if ss_tot > 0 else 1.0
    return PowerLaw(A=float(math.exp(lnA)), alpha=float(alpha), r2=float(r2), n_points=int(len(C)))


def fit_linear_log10(C, y) -> Linear:
    """y = slope·log10 C + intercept (stage 1 of the benchmark prediction)."""
    lx = np.log10(np.asarray(C, dtype=float))
    y = np.asarray(y, dtype=float)
    if len(np.unique(lx)) < 2:
        raise HerdError("the FLOPs->NLL fit needs two or more distinct compute budgets")
    slope, intercept = np.polyfit(lx, y, 1)
    pred = slope * lx + intercept
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    r2 = 1.0 - float(np.sum((y - pred) ** 2)) / ss_tot if ss_tot > 0 else 1.0
    return Linear(slope=float(slope), intercept=float(intercept), r2=float(r2), n_points=int(len(y)))


def _sigmoid(x, lo, hi, k, x0):
    z = np.clip(k * (x - x0), -60, 60)
    return lo + (hi - lo) / (1.0 + np.exp(z))


def fit_sigmoid(nll, acc, *, chance: float | None = None) -> Sigmoid:
    """accuracy = lo + (hi-lo)·σ(-k(nll-x0)) (stage 2). With `chance` the floor lo is fixed at
    the task's chance accuracy (the paper's benchmarks are multiple choice); else fitted."""
    from scipy.optimize import curve_fit

    x = np.asarray(nll, dtype=float)
    y = np.asarray(acc, dtype=float)
    if len(x) < (3 if chance is not None else 4):
        raise HerdError(f"the NLL->accuracy sigmoid needs at least {3 if chance is not None else 4} models")
    if np.any((y < 0) | (y > 1)):
        raise HerdError("accuracies must lie in [0, 1]")
    k0 = 4.0 / max(float(np.ptp(x)), 1e-6)
    x00 = float(np.median(x))
    if chance is not None:
        f = lambda x, hi, k, x0: _sigmoid(x, chance, hi, k, x0)  # noqa: E731
        p, _ = curve_fit(
            f,
            x,
            y,
            p0=[max(float(y.max()), chance + 1e-3), k0, x00],
            bounds=([chance, 1e-6, -np.inf], [1.0, np.inf, np.inf]),
            maxfev=20000,
        )
        lo, (hi, k, x0) = chance, p
    else:
        p, _ = curve_fit(
            _sigmoid,
            x,
            y,
            p0=[float(y.min()), float(y.max()), k0, x00],
            bounds=([0.0, 0.0, 1e-6, -np.inf], [1.0, 1.0, np.inf, np.inf]),
            maxfev=20000,
        )
        lo, hi, k, x0 = p
    res = y - _sigmoid(x, lo, hi, k, x0)
    return Sigmoid(
        lo=float(lo),
        hi=float(hi),
        k=float(k),
        x0=float(x0),
        rms_residual=float(np.sqrt(np.mean(res**2))),
        n_points=int(len(x)),
    )


def fit_runs(runs: list[dict], *, chance: float | None = None, convention: str = "") -> ScalingFit:
    """The whole §3.2.1 fit from a list of runs (see module docstring)."""
    runs = validate_runs(runs)
    groups = group_by_budget(runs)
    notes: list[str] = []
    budgets, pn, pd = [], [], []
    for C, rs in groups.items():
        if len({r["n_params"] for r in rs}) < 3:
            notes.append(f"budget {C:.3g} skipped: runs at fewer than 3 sizes")
            continue
        C = float(np.exp(np.mean(np.log([r["flops"] for r in rs]))))
        loss = [r["loss"] for r in rs]
        p_n = fit_parabola(np.log([r["n_params"] for r in rs]), loss, C, "n_params")
        p_d = fit_parabola(np.log([r["tokens"] for r in rs]), loss, C, "tokens")
        for p in (p_n, p_d):
            if p.status != "ok":
                notes.append(f"budget {C:.3g} ({p.variable}): parabola {p.status}")
        budgets.append(C)
        pn.append(p_n)
        pd.append(p_d)
    if len(budgets) < 2:
        raise HerdError(
            f"need IsoFLOP runs at 2 or more budgets with 3+ sizes each; got {len(budgets)} usable "
            f"of {len(groups)} budget(s)"
        )
    n_opt = fit_power_law(budgets, [p.opt for p in pn])
    d_opt = fit_power_law(budgets, [p.opt for p in pd])
    # The compute-optimal loss: the two parabolas estimate the same minimum; average them.
    loss_opt = fit_power_law(budgets, [(a.loss_opt + b.loss_opt) / 2 for a, b in zip(pn, pd)])

    nll_stage = acc_stage = None
    with_nll = [r for r in runs if isinstance(r.get("nll"), (int, float))]
    if with_nll:
        # Stage 1 on the compute-optimal models: per budget, the run nearest the fitted N*.
        pts = []
        for C, p in zip(budgets, pn):
            rs = [r for r in with_nll if abs(r["flops"] - C) <= 0.02 * C]
            if rs:
                best = min(rs, key=lambda r: abs(math.log(r["n_params"]) - p.x_opt))
                pts.append((C, best["nll"]))
        if len(pts) >= 2:
            nll_stage = fit_linear_log10([c for c, _ in pts], [v for _, v in pts])
        with_acc = [r for r in with_nll if isinstance(r.get("accuracy"), (int, float))]
        if len(with_acc) >= (3 if chance is not None else 4):
            acc_stage = fit_sigmoid(
                [r["nll"] for r in with_acc], [r["accuracy"] for r in with_acc], chance=chance
            )
    return ScalingFit(
        budgets=budgets,
        parabolas_n=pn,
        parabolas_d=pd,
        n_opt=n_opt,
        d_opt=d_opt,
        loss_opt=loss_opt,
        nll_stage=nll_stage,
        acc_stage=acc_stage,
        convention=convention,
        notes=notes,
    )
