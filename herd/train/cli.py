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
                   help="a tokenized data directory (from herd tokenize), optionally with a weight; repeat to mix; "
                        "replaces data.sources")
    p.add_argument("--resume", action="store_true",
                   help="continue from the newest valid checkpoint in run.out (= --run.resume true)")
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
    return load_args(args, values)


def _plan(cfg) -> list[str]:
    from herd.train.schedule import build_plan

    return [f"{ph.name}: steps {ph.start_step}..{ph.end_step} batch {ph.batch_size}x{ph.seq_len} "
            f"({ph.batch_tokens:,} tokens) from {ph.start_tokens:,} tokens, mix {ph.mix}" for ph in build_plan(cfg)]


def run(args) -> int:
    cfg = parse(args)
    if args.print_config:
        from herd.config import print_config

        src = f"from {args.config} and the flags" if args.config else "the defaults and the flags"
        return print_config(cfg, header=f"herd pretrain config ({src}); load it with: herd pretrain --config FILE\n"
                                        "the step plan follows as comments", notes=_plan)
    from herd.train import pretrain

    pretrain(cfg.validate())
    return 0
