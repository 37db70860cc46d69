"""`herd curate`: the data-curation pipeline of paper §3.1.1 from the command line.

    herd curate --config RECIPE.toml --input data/ crawl.warc.gz --out curated/ [--dedup.threshold 0.7]
    herd curate --config default --print-config          # the default recipe as TOML
    herd curate train-quality --positive good/ --negative bad.jsonl --out quality.bin
"""

from __future__ import annotations

import json
import sys


def _cls():
    from herd.curate.config import CurateConfig

    return CurateConfig


def _names():
    from herd.curate.config import recipe_names

    return recipe_names()


def register(sub) -> None:
    from herd.config import add_config_parser

    p = add_config_parser(
        sub, "curate", _cls, names=_names,
        config_help="TOML recipe, or `default` (herd/curate/default.toml); default: the built-in defaults",
        help="curate raw web data: extract, langid, PII, dedup, filters, mix (§3.1)",
        description="Curate raw data with a TOML recipe (see herd/curate/default.toml), or "
                    "`herd curate train-quality ...` to train the quality classifier. Any recipe field is "
                    "overridden as --stage.key value (these win over the shorthand flags below).",
        epilog="examples:\n  herd curate --config default --input pages/ --out curated/\n"
               "  herd curate --config recipe.toml --input a.warc.gz --out out/ --dedup.threshold 0.7\n"
               "  herd curate train-quality --positive wiki.jsonl --negative spam/ --out q.bin")
    p.add_argument("recipe", nargs="?", default=None,
                   help="the word train-quality, or a TOML recipe (the same as --config RECIPE)")
    p.add_argument("--input", nargs="+", default=None,
                   help="WARC/HTML/JSONL/Parquet/text files or directories "
                        "(= --run.input)")
    p.add_argument("--out",
                   help="output directory (= --run.out; run again with the same one to resume a killed "
                        "run); for train-quality the model file")
    p.add_argument("--executor", choices=["local", "ray"],
                   help="local processes or a Ray cluster (= --run.executor)")
    p.add_argument("--ray-address",
                   help="Ray cluster address (= --run.ray_address; default: start a local Ray)")
    p.add_argument("--workers", type=int, help="worker processes (= --run.workers; default: all cores)")
    p.add_argument("--set", action="append", default=[], metavar="STAGE.KEY=VALUE",
                   help="override a recipe field, e.g. --set mix.enabled=false (the same as --mix.enabled "
                        "false)")
    p.add_argument("--positive", nargs="+", default=[], help="train-quality: high-quality documents")
    p.add_argument("--negative", nargs="+", default=[], help="train-quality: low-quality documents")
    p.add_argument("--epoch", type=int, default=10, help="train-quality: fastText epochs")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_main)


def _train_quality(args) -> int:
    from herd.curate.quality import train_quality
    from herd.errors import HerdError

    if not args.out:
        raise HerdError("--out is required: the model file to write")
    if not args.positive or not args.negative:
        raise HerdError("train-quality needs --positive and --negative inputs")
    m = train_quality(args.positive, args.negative, args.out, epoch=args.epoch)
    print(json.dumps(m, indent=1))
    return 0


def _main(args) -> int:
    from herd.config import load_args
    from herd.errors import HerdError

    if args.recipe == "train-quality":
        return _train_quality(args)
    if args.recipe and args.config:
        raise HerdError(f"give the recipe once: either {args.recipe} or --config {args.config}")
    run = {k: v for k, v in (("input", args.input), ("out", args.out), ("executor", args.executor),
                             ("ray_address", args.ray_address), ("workers", args.workers)) if v is not None}
    cfg = load_args(args, {"run": run} if run else None, config=args.recipe or args.config,
                    first_overrides=args.set)
    if args.print_config:
        from herd.config import print_config

        src = f"from {args.recipe or args.config} and the flags" if (args.recipe or args.config) else \
            "the defaults and the flags"
        return print_config(cfg,
                            header=f"herd curate recipe ({src}); load it with: herd curate --config FILE")
    cfg.validate()
    if not cfg.run.out:
        raise HerdError("--out is required: the output directory (or set run.out in the recipe)")
    if not cfg.run.input:
        raise HerdError("--input is required: files or directories to curate (or set run.input in the "
                        "recipe)")
    from herd.curate.pipeline import run_curation

    r = run_curation(cfg, cfg.run.input, cfg.run.out, progress=not args.quiet and sys.stderr.isatty())
    out = cfg.run.out
    print(f"curated {r['input_docs']} documents -> kept {r['kept_docs']}, dropped {r['dropped_docs']} "
          f"({'accounting OK' if r['accounting_ok'] else 'ACCOUNTING MISMATCH'}) in {r['seconds']} s; "
          f"report: {out}/report.md")
    for k, v in list(r["dropped"].items())[:12]:
        print(f"  dropped {v:7d}  {k}")
    if r["mix"]["enabled"]:
        print("  mix realised: " + ", ".join(f"{k} {v:.2f}" for k, v in r["mix"]["realised"].items()))
    return 0 if r["accounting_ok"] else 1
