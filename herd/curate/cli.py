"""`herd curate`: the data-curation pipeline of paper §3.1.1 from the command line.

    herd curate RECIPE.toml --input data/ crawl.warc.gz --out curated/ [--executor ray --ray-address auto]
    herd curate train-quality --positive good/ --negative bad.jsonl --out quality.bin
"""

from __future__ import annotations

import argparse
import json
import sys


def register(sub) -> None:
    p = sub.add_parser("curate", help="curate raw web data: extract, langid, PII, dedup, filters, mix (§3.1)",
                       description="Curate raw data with a TOML recipe (see herd/curate/default.toml), or "
                                   "`herd curate train-quality ...` to train the quality classifier.",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog="examples:\n  herd curate herd/curate/default.toml --input pages/ --out curated/\n"
                              "  herd curate recipe.toml --input a.warc.gz --out out/ --set dedup.threshold=0.7\n"
                              "  herd curate train-quality --positive wiki.jsonl --negative spam/ --out q.bin")
    p.add_argument("recipe", help="TOML recipe, or the word train-quality")
    p.add_argument("--input", nargs="+", default=[], help="WARC/HTML/JSONL/Parquet/text files or directories")
    p.add_argument("--out", help="output directory (run again with the same --out to resume a killed run)")
    p.add_argument("--executor", choices=["local", "ray"], help="local processes (default) or a Ray cluster")
    p.add_argument("--ray-address", help="Ray cluster address (default: start a local Ray)")
    p.add_argument("--workers", type=int, help="worker processes (default: all cores)")
    p.add_argument("--set", action="append", default=[], metavar="STAGE.KEY=VALUE",
                   help="override a recipe field, e.g. --set mix.enabled=false (repeatable)")
    p.add_argument("--positive", nargs="+", default=[], help="train-quality: high-quality documents")
    p.add_argument("--negative", nargs="+", default=[], help="train-quality: low-quality documents")
    p.add_argument("--epoch", type=int, default=10, help="train-quality: fastText epochs")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_main)


def _main(args) -> int:
    from herd.errors import HerdError

    if not args.out:
        raise HerdError("--out is required (an output directory, or the model file for train-quality)")
    if args.recipe == "train-quality":
        from herd.curate.quality import train_quality

        if not args.positive or not args.negative:
            raise HerdError("train-quality needs --positive and --negative inputs")
        m = train_quality(args.positive, args.negative, args.out, epoch=args.epoch)
        print(json.dumps(m, indent=1))
        return 0
    from herd.curate.config import load_recipe
    from herd.curate.pipeline import run_curation

    if not args.input:
        raise HerdError("--input is required: files or directories to curate")
    cfg = load_recipe(args.recipe, args.set)
    r = run_curation(cfg, args.input, args.out, executor=args.executor, ray_address=args.ray_address,
                     workers=args.workers, progress=not args.quiet and sys.stderr.isatty())
    print(f"curated {r['input_docs']} documents -> kept {r['kept_docs']}, dropped {r['dropped_docs']} "
          f"({'accounting OK' if r['accounting_ok'] else 'ACCOUNTING MISMATCH'}) in {r['seconds']} s; "
          f"report: {args.out}/report.md")
    for k, v in list(r["dropped"].items())[:12]:
        print(f"  dropped {v:7d}  {k}")
    if r["mix"]["enabled"]:
        print("  mix realised: " + ", ".join(f"{k} {v:.2f}" for k, v in r["mix"]["realised"].items()))
    return 0 if r["accounting_ok"] else 1
