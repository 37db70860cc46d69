"""`herd pretrain --config FILE_OR_NAME [--section.field value ...] [--print-config]` (paper §3.4)."""

from __future__ import annotations


def _cls():
    from herd.train.config import TrainConfig

    return TrainConfig


def _names():
    from herd.train.config import recipe_names

    return recipe_names()


def register(sub) -> None:
    from herd.config import add_config_parser

    p = add_config_parser(
        sub, "pretrain", _cls, names=_names,
        config_help="TOML recipe file or a name in recipes/ (e.g. herd-5m); default: the built-in defaults",
        help="pretrain a model with the Llama 3 recipe (warmup+cosine, ramp, long context, annealing)",
        description="Pretrain from a TOML recipe (see recipes/). Any config field can be overridden as "
                    "--section.field value, e.g. --optim.lr 3e-4 --run.out runs/x "
                    "--data.sources.0.path data/tok --stages.0.batch_size 16 (these win over --data and "
                    "--resume). Run data-parallel with `torchrun --nproc_per_node N -m herd pretrain ...`. "
                    "Reference: docs/pretraining.md.",
    )
    p.add_argument("--data", action="append", default=None, metavar="DIR[:WEIGHT]",
                   help="a tokenized data directory (from herd tokenize), optionally with a weight; repeat "
                        "to mix; replaces data.sources")
    p.add_argument("--resume", action="store_true",
                   help="continue from the newest valid checkpoint in run.out (= --run.resume true)")
    p.add_argument("--out", default=None, metavar="DIR", help="the run folder (= --run.out)")
    p.add_argument("--quiet", action="store_true", help="no progress bar (= --run.progress false)")
    p.add_argument("--json", action="store_true", help="print the final summary as JSON")
    p.set_defaults(func=run)


def parse(args):
    from herd.config import load_args
    from herd.errors import HerdError

    values: dict = {}
    if args.data:
        srcs = []
        for d in args.data:
            path, _, w = d.rpartition(":")
            try:
                weight = float(w)
            except ValueError:  # no weight given (or a ':' inside the path)
                path, weight = d, 1.0
            if not path or weight <= 0:
                raise HerdError(f"--data {d}: expected DIR or DIR:WEIGHT with a positive weight")
            srcs.append({"path": path, "weight": weight})
        values["data"] = {"sources": srcs}
    if args.resume:
        values["run"] = {"resume": True}
    if args.out:
        values.setdefault("run", {})["out"] = args.out
    if args.quiet:
        values.setdefault("run", {})["progress"] = False
    # A length given on the command line replaces the recipe's: --run.steps 40 needs no --run.tokens 0.
    given = {k for k, _ in getattr(args, "config_overrides", [])}
    for mine, other in (("run.steps", "tokens"), ("run.tokens", "steps")):
        if mine in given and f"run.{other}" not in given:
            values.setdefault("run", {})[other] = 0
    return load_args(args, values)


def plan_summary(cfg) -> list[str]:
    """The run plan, stated before training starts: steps, batch and tokens of each phase, the
    warmup, and how many passes over the training data that is."""
    from herd.train.schedule import build_plan, effective_warmup

    plan = build_plan(cfg)
    total = plan[-1].end_step if plan else 0
    tokens = sum(p.steps * p.batch_tokens for p in plan)
    lines = [f"plan: {total:,} steps, {tokens:,} tokens" +
             (f" (capped by run.max_steps {cfg.run.max_steps})" if cfg.run.max_steps else "")]
    for p in plan:
        lines.append(f"  {p.name:<14} {p.steps:>7,} steps  batch {p.batch_size} x {p.seq_len} "
                     f"= {p.batch_tokens:,} tokens/step  ({p.steps * p.batch_tokens:,} tokens, {p.mix} mix)")
    warmup = effective_warmup(cfg)
    lines.append(f"  warmup {warmup:,} steps, then {cfg.schedule.decay} decay to {cfg.schedule.final_lr:g}"
                 + (f" (schedule.warmup_steps {cfg.schedule.warmup_steps} shortened for run.max_steps)"
                    if warmup != cfg.schedule.warmup_steps else ""))
    if warmup >= total:
        lines.append(f"  warning: the warmup ({warmup} steps) is as long as the run ({total} steps): the LR "
                     "never reaches its peak; lower --schedule.warmup_steps or use --run.max_steps")
    if not cfg.data.val and not any(_has_val(s.path) for s in cfg.data.sources):
        lines.append("  no validation split in the data: no validation loss will be reported "
                     "(herd tokenize --val-fraction 0.1 holds documents out)")
    n_data = _data_tokens(cfg)
    if n_data:
        main = sum(p.steps * p.batch_tokens for p in plan if p.mix == "main")
        ep = main / n_data
        lines.append(f"  data: {n_data:,} training tokens -> {ep:.2f} passes (epochs) over them" +
                     ("; more than one pass repeats the data (add data or fewer steps)" if ep > 1.05 else ""))
    return lines


def _has_val(path) -> bool:
    from herd.data.shards import TokenData
    from herd.errors import HerdError

    try:
        return TokenData(path, "val").n_tokens > 0
    except (HerdError, OSError, ValueError):
        return True  # unreadable now: the trainer reports it


def _data_tokens(cfg) -> int:
    """Training tokens in the main data sources (0 when they cannot be read yet)."""
    from herd.data.shards import TokenData
    from herd.errors import HerdError

    try:
        return sum(TokenData(s.path, "train").n_tokens for s in cfg.data.sources)
    except (HerdError, OSError, ValueError):
        # a missing or unreadable source: the trainer says so, in one line
        return 0


def _plan(cfg) -> list[str]:
    from herd.train.schedule import build_plan

    return [f"{ph.name}: steps {ph.start_step}..{ph.end_step} batch {ph.batch_size}x{ph.seq_len} "
            f"({ph.batch_tokens:,} tokens) from {ph.start_tokens:,} tokens, "
            f"mix {ph.mix}" for ph in build_plan(cfg)]


def run(args) -> int:
    cfg = parse(args)
    if args.print_config:
        from herd.config import print_config

        src = f"from {args.config} and the flags" if args.config else "the defaults and the flags"
        return print_config(cfg, header=f"herd pretrain config ({src}); load it with: herd pretrain --config "
                                        "FILE\nthe step plan follows as comments", notes=_plan)
    import os
    import sys

    from herd.train import pretrain

    cfg.validate()
    main_rank = os.environ.get("RANK", "0") == "0"
    if main_rank:
        print("\n".join(plan_summary(cfg)), file=sys.stderr)
    res = pretrain(cfg)
    if main_rank:
        if args.json:
            import json

            print(json.dumps(res, indent=1, default=str))
        else:
            val = f", val loss {res['val_loss']:.4f}" if res.get("val_loss") is not None else \
                " (no validation split: `herd tokenize --val-fraction` holds documents out)"
            print(f"trained {res['steps']:,} steps, {res['tokens']:,} tokens in {res['wall_time']:.0f} s: "
                  f"train loss {res['train_loss']:.4f}{val}")
            print(f"model written to {res['model_dir']}  (try: herd generate {res['model_dir']} "
                  "--prompt \"...\")")
            print(f"metrics: {res['metrics']}  (plot: herd plot {res['out_dir']})")
    return 0
