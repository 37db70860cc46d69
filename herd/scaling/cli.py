"""`herd scaling isoflop | fit | predict`: the scaling-law experiments of paper §3.2.1."""

from __future__ import annotations

import json
from pathlib import Path


ISO_HELP = {
    "data": "tokenized data directory (from `herd tokenize`); repeat the flag for a mix",
    "budgets": "compute budgets in FLOPs, e.g. 3e13,1e14,3e14",
    "val_data": "tokenized directory held out whole for the validation loss (default: the val split)",
    "sizes": "non-embedding parameter counts to try at every budget, e.g. 2e5,5e5,1e6 (default: --n-sizes "
             "sizes around the Chinchilla guess of each budget)",
    "n_sizes": "sizes per budget when --sizes is not given",
    "spread": "automatic sizes span guess/spread .. guess*spread, no lower than the vocab's floor on N",
    "tokens_per_param": "Chinchilla's ratio, the centre of the automatic sizes",
    "lr": "peak learning rate (decays to 0.1x)",
    "warmup_frac": "share of the steps spent warming up",
    "min_steps": "fewest optimizer steps a run may take",
    "max_batch": "sequences per step at most",
    "val_batches": "validation batches per run",
    "val_batch_size": "sequences per validation batch",
    "out": "output directory",
    "device": "auto (cuda if available, else cpu), cpu, cuda or cuda:N",
    "dtype": "auto (bfloat16 on a GPU, float32 on a CPU), float32, bfloat16 or float16",
    "vocab_size": "0: from the tokenized data",
    "progress": "progress bars",
    "peak_flops": "peak FLOP/s for MFU in the logs (0: probed)",
    "threads": "torch CPU threads per run (0: torch's default)",
    "doc_mask": "the document mask of §3.2",
}


def _iso_cls():
    from herd.scaling.config import IsoFLOPConfig

    return IsoFLOPConfig


def register(sub) -> None:
    from herd.config import add_config_parser

    p = sub.add_parser(
        "scaling",
        help="scaling laws: IsoFLOP sweeps, fits, compute-optimal predictions (§3.2.1)",
        description="Scaling laws (paper §3.2.1): run IsoFLOP sweeps, fit parabolas and power "
        "laws, predict the compute-optimal model for a budget.",
    )
    s = p.add_subparsers(dest="scaling_cmd", metavar="SUBCOMMAND")
    p.set_defaults(func=lambda a: (p.print_help(), 0)[1])

    iso = add_config_parser(
        s,
        "isoflop",
        _iso_cls,
        section="isoflop",
        field_help=ISO_HELP,
        config_help="TOML file: an [isoflop] table or a flat table of fields; flags override it",
        help="train small models at several compute budgets",
        description="Train a family of models at each compute budget C; each model of N "
        "non-embedding parameters sees D = C / flops_per_token tokens, with a "
        "cosine schedule (warmup, decay to 0.1x peak). Writes OUT/runs.jsonl "
        "(resumable: finished runs are skipped) and fits them. Every field below is set as "
        "--FIELD VALUE (or --isoflop.FIELD VALUE); a list as a,b,c or by repeating the flag.",
        epilog="example:\n  herd scaling isoflop --data data/tok --val-data data/heldout "
        "--budgets 1e11,3e11,1e12 --out runs/iso",
    )
    iso.set_defaults(func=_isoflop)

    fit = s.add_parser(
        "fit",
        help="fit IsoFLOP parabolas and compute-optimal power laws",
        description="Fit a parabola of validation loss against ln N (and ln D) at each budget, "
        "then N*(C)=A·C^α, D*(C) and L*(C); with nll/accuracy fields also the "
        "FLOPs->NLL line and NLL->accuracy sigmoid. Prints the fit and residuals.",
    )
    fit.add_argument(
        "runs",
        help="runs.jsonl (or its directory) from `herd scaling isoflop`, or a JSON list "
        "of {flops, n_params, tokens, loss[, nll, accuracy]}",
    )
    fit.add_argument("--out", default="", help="write the fit here (default: fit.json beside the runs)")
    fit.add_argument("--plots", default="", help="directory for PNG plots (default: beside the fit)")
    fit.add_argument(
        "--chance", type=float, default=None, help="chance accuracy of the task (fixes the sigmoid's floor)"
    )
    fit.add_argument("--target", type=float, default=None, help="also predict at this budget (FLOPs)")
    fit.set_defaults(func=_fit)

    pr = s.add_parser(
        "predict",
        help="compute-optimal size, tokens and loss for a budget",
        description="Compute-optimal non-embedding parameters, training tokens and validation "
        "loss for a compute budget, from a fit written by `herd scaling fit`.",
    )
    pr.add_argument("--flops", required=True, type=float, help="compute budget in FLOPs, e.g. 1e17")
    pr.add_argument("--fit", default="runs/isoflop/fit.json", help="fit.json from `herd scaling fit`")
    pr.add_argument(
        "--vocab", type=int, default=0, help="also print a model config of that size for this vocab"
    )
    pr.add_argument("--json", action="store_true", help="print JSON")
    pr.set_defaults(func=_predict)


def _isoflop(args) -> int:
    from herd.config import load_args

    cfg = load_args(args)
    if args.print_config:
        from herd.config import print_config

        src = f"from {args.config} and the flags" if args.config else "the defaults and the flags"
        return print_config(cfg, "isoflop", header=f"herd scaling isoflop config ({src}); "
                                                   "load it with: herd scaling isoflop --config FILE")
    from herd.scaling.isoflop import run_isoflop

    fit = run_isoflop(cfg.validate())
    print(format_fit(fit))
    print(f"runs: {cfg.out}/runs.jsonl  fit: {cfg.out}/fit.json  plots: {cfg.out}/*.png")
    return 0


def _fit(args) -> int:
    from herd.scaling.fit import fit_runs, load_runs
    from herd.scaling.plot import plot_all

    runs = load_runs(args.runs)
    conv = next((r.get("convention") for r in runs if r.get("convention")), "")
    fit = fit_runs(runs, chance=args.chance, convention=conv)
    src = Path(args.runs)
    out = Path(args.out) if args.out else (src if src.is_dir() else src.parent) / "fit.json"
    fit.save(out)
    plots = plot_all(fit, runs, Path(args.plots) if args.plots else out.parent, target=args.target)
    print(format_fit(fit))
    if args.target:
        print(format_prediction(fit.predict(args.target)))
    print(f"fit: {out}")
    print("plots: " + ", ".join(str(p) for p in plots))
    return 0


def _predict(args) -> int:
    from herd.scaling.fit import ScalingFit

    fit = ScalingFit.load(args.fit)
    pred = fit.predict(args.flops)
    if args.vocab:
        from herd.scaling.isoflop import model_for_size

        m = model_for_size(pred["n_params"], args.vocab)
        pred["model"] = {k: getattr(m, k) for k in ("dim", "n_layers", "n_heads", "n_kv_heads", "vocab_size")}
        pred["model_non_embedding_params"] = m.num_params(exclude_embedding=True)
    if args.json:
        print(json.dumps(pred, indent=2))
    else:
        print(format_prediction(pred))
    return 0


def format_fit(fit) -> str:
    lines = [f"IsoFLOP fit over {len(fit.budgets)} budgets ({fit.convention or 'convention not stated'})"]
    lines.append(f"{'budget':>10} {'N*':>10} {'D*':>10} {'L*':>8} {'rms res':>8} {'max res':>8} status")
    for pn, pd in zip(fit.parabolas_n, fit.parabolas_d):
        lines.append(
            f"{pn.budget:10.3g} {pn.opt:10.3g} {pd.opt:10.3g} {pn.loss_opt:8.4f} "
            f"{pn.rms_residual:8.4f} {pn.max_abs_residual:8.4f} {pn.status}/{pd.status}"
        )
    lines.append(f"N*(C) = {fit.n_opt.A:.4g} * C^{fit.n_opt.alpha:.4f}   (R² {fit.n_opt.r2:.4f})")
    lines.append(f"D*(C) = {fit.d_opt.A:.4g} * C^{fit.d_opt.alpha:.4f}   (R² {fit.d_opt.r2:.4f})")
    lines.append(f"L*(C) = {fit.loss_opt.A:.4g} * C^{fit.loss_opt.alpha:.5f}   (R² {fit.loss_opt.r2:.4f})")
    if fit.nll_stage:
        lines.append(f"task NLL(C) = {fit.nll_stage.slope:.4f} * log10 C + {fit.nll_stage.intercept:.4f}")
    if fit.acc_stage:
        s = fit.acc_stage
        lines.append(
            f"accuracy(NLL) = {s.lo:.3f} + {s.hi - s.lo:.3f} / (1 + exp({s.k:.3f} (NLL - {s.x0:.3f})))"
        )
    lines += [f"note: {n}" for n in fit.notes]
    return "\n".join(lines)


def format_prediction(pred: dict) -> str:
    s = (
        f"at C = {pred['flops']:.3g} FLOPs: N* = {pred['n_params']:.4g} non-embedding params, "
        f"D* = {pred['tokens']:.4g} tokens, predicted loss {pred['loss']:.4f}"
    )
    if pred.get("extrapolation", 1.0) > 1.0:
        s += f" (extrapolated {pred['extrapolation']:.3g}x beyond the largest budget)"
    if "accuracy" in pred:
        s += f", task NLL {pred['nll']:.3f}, accuracy {pred['accuracy']:.3f}"
    elif "nll" in pred:
        s += f", task NLL {pred['nll']:.3f}"
    if "model" in pred:
        s += f"\nmodel: {pred['model']} ({pred['model_non_embedding_params']:,} non-embedding params)"
    return s
