"""`herd pretrain --config recipes/NAME.toml [--section.field value ...]` (paper §3.4)."""

from __future__ import annotations

import argparse


class _OverridesParser(argparse.ArgumentParser):
    """Keeps unknown `--section.field value` arguments as config overrides (in `_extra`)."""

    def parse_known_args(self, args=None, namespace=None):
        ns, rest = super().parse_known_args(args, namespace)
        extra, left = [], []
        i = 0
        while i < len(rest):
            a = rest[i]
            if a.startswith("--") and "." in a.split("=")[0]:
                extra.append(a)
                if "=" not in a and i + 1 < len(rest):
                    extra.append(rest[i + 1])
                    i += 1
            else:
                left.append(a)
            i += 1
        ns._extra = getattr(ns, "_extra", []) + extra
        return ns, left


def register(sub) -> None:
    # The pretrain parser accepts any --section.field override; swap the parser class just for it.
    cls, sub._parser_class = sub._parser_class, _OverridesParser
    try:
        p = _add(sub)
    finally:
        sub._parser_class = cls
    p.set_defaults(func=run)


def _add(sub):
    p = sub.add_parser(
        "pretrain",
        help="pretrain a model with the Llama 3 recipe (warmup+cosine, ramp, long context, annealing)",
        description="Pretrain from a TOML recipe (see recipes/). Any config field can be overridden as "
                    "--section.field value, e.g. --optim.lr 3e-4 --run.out_dir runs/x "
                    "--data.sources.0.path data/tok --stages.0.batch_size 16. Run data-parallel with "
                    "`torchrun --nproc_per_node N -m herd pretrain ...`.",
        epilog="Sections: model, data, optim, schedule, stages, long_context, anneal, eval, checkpoint, guard, run "
               "(reference: docs/pretraining.md).",
    )
    p.add_argument("--config", help="TOML recipe file or a name in recipes/ (e.g. herd-5m)")
    p.add_argument("--data", action="append", default=None, metavar="DIR[:WEIGHT]",
                   help="a tokenized data directory (from herd tokenize), optionally with a weight; repeat to mix; "
                        "replaces data.sources")
    p.add_argument("--resume", action="store_true", help="continue from the newest valid checkpoint in run.out_dir")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and the plan, then exit")
    return p


def parse(args, extra: list[str]):
    from herd.errors import HerdError
    from herd.train.config import Source, load_config

    cfg = load_config(args.config, extra)
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
            srcs.append(Source(path=path, weight=weight))
        cfg.data.sources = srcs
    if args.resume:
        cfg.run.resume = True
    return cfg


def run(args, extra: list[str] | None = None) -> int:
    cfg = parse(args, extra or getattr(args, "_extra", []))
    if args.print_config:
        import json

        from herd.train.schedule import build_plan

        print(json.dumps(cfg.validate().to_dict(), indent=1))
        for ph in build_plan(cfg):
            print(f"{ph.name}: steps {ph.start_step}..{ph.end_step} batch {ph.batch_size}x{ph.seq_len} "
                  f"({ph.batch_tokens:,} tokens) from {ph.start_tokens:,} tokens, mix {ph.mix}")
        return 0
    from herd.train import pretrain

    pretrain(cfg)
    return 0
