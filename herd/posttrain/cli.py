"""`herd sft`, `herd rm`, `herd rejection-sample`, `herd dpo`, `herd average` and
`herd posttrain make-task|demo`: the post-training stages of paper §4 on the command line.

Each of sft, rm, rejection-sample and dpo reads its dataclass config (herd.posttrain.config) through
the one config loader (herd.config): an optional TOML file (`--config FILE`: a table named after the
command, e.g. `[dpo]`, or a flat file), then `--field value` flags (also written `--dpo.field value`;
a bool as `--quiet` / `--no-resume`), which override it; `--print-config` prints the result as TOML.
Heavy modules are imported inside the command functions.
"""

from __future__ import annotations

import json

from herd.errors import HerdError

HELP = {
    "model": "checkpoint to start from (herd, Meta or Hugging Face directory)",
    "data": "training JSONL file",
    "out": "output directory (a herd checkpoint); an interrupted run resumes from it",
    "tokenizer": "tokenizer file to use instead of the checkpoint's ('llama3' for Meta's)",
    "eval_data": "held-out JSONL to report on at the end",
    "eval_fraction": "fraction of the data held out when --eval-data is not given",
    "ref_model": "reference model for DPO (not set: the starting model)",
    "lr": "peak learning rate (paper, 405B: 1e-5)",
    "warmup": "linear warmup steps before the cosine decay",
    "weight_decay": "AdamW weight decay",
    "epochs": "passes over the data (ignored when --steps > 0)",
    "steps": "number of optimizer steps (0: from --epochs)",
    "batch_size": "examples (SFT: rows) per step",
    "seq_len": "row length in tokens for SFT packing",
    "max_len": "longest sequence kept (longer records are skipped)",
    "pack": "pack dialogs with the document mask (SFT)",
    "lora_rank": "LoRA rank (0: full fine-tuning)",
    "lora_alpha": "LoRA alpha (the update is scaled by alpha/rank)",
    "lora_targets": "comma-separated linear layers to adapt: wq,wk,wv,wo,w1,w2,w3,output",
    "beta": "DPO beta (paper: 0.1)",
    "nll_coef": "coefficient of the per-token NLL on chosen (paper: 0.2)",
    "seed": "random seed (data order, sampling)",
    "on_bad_line": "what to do with a malformed JSONL line: skip (warn) or stop",
    "save_every": "save the training state every N steps (0: only on Ctrl-C)",
    "resume": "resume from OUT/train_state.pt when present",
    "log_every": "update the progress line every N steps",
    "quiet": "no progress bar",
    "prompts": "prompts JSONL ({'prompt'|'messages', 'answer' or 'tests'})",
    "scorer": "'math' (exact final answer), 'code' (unit tests in the sandbox) or a reward-model directory",
    "k": "samples per prompt",
    "max_new_tokens": "longest completion",
    "temperature": "sampling temperature",
    "top_p": "nucleus sampling mass (1: off)",
    "top_k": "top-k sampling (0: off)",
    "chunk": "prompts per chunk (unit of progress and resumption)",
    "max_batch": "rows decoded together",
    "code_timeout": "seconds per code test run",
    "device": "auto (cuda if available, else cpu), cpu, cuda or cuda:N",
    "dtype": "auto (bfloat16 on a GPU, float32 on a CPU), float32, bfloat16 or float16",
}


def _config(args, command: str):
    """The command's config: --config (its [COMMAND] table, or a flat file), then the flags."""
    from herd.config import load_args

    return load_args(args)


def _header(command: str, args) -> str:
    src = f"from {args.config} and the flags" if args.config else "the defaults and the flags"
    return f"herd {command} config ({src}); load it with: herd {command} --config FILE"


# Per-command help where the shared text above does not fit.
HELP_BY_COMMAND = {
    "sft": {"data": "training chat JSONL (comma-separated for several files)"},
    "rejection-sample": {
        "out": "output directory: sft.jsonl (the best answers), pairs.jsonl, samples.jsonl; an interrupted "
               "run resumes from it",
        "resume": "resume from OUT/samples.partial.jsonl when present",
    },
}

WHAT = {"sft": "fine-tuned model", "rm": "reward model", "dpo": "DPO model", "average": "averaged model"}


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if hasattr(v, "item"):  # a 0-d tensor
        return _fmt(v.item())
    if isinstance(v, (list, tuple)):
        return ", ".join(_fmt(x) for x in v)
    return str(v)


def summary(command: str, metrics: dict, out: str | None = None) -> str:
    """A post-training command's result for a person: one line per number, then where it went."""
    lines = [f"herd {command}: done"]
    for k, v in metrics.items():
        if isinstance(v, dict) or k == "out":
            continue
        lines.append(f"  {k.replace('_', ' '):<28} {_fmt(v)}")
    if out:
        what = WHAT.get(command)
        lines.append(f"{what} written to {out}" if what else f"output written to {out}")
    return "\n".join(lines)


def _print(metrics: dict, command: str = "", out: str | None = None, as_json: bool = False):
    if as_json or not command:
        print(json.dumps(metrics, indent=2, default=float))
    else:
        print(summary(command, metrics, out))


def _run(stage):
    def fn(args):
        cfg = _config(args, stage)
        if args.print_config:
            from herd.config import print_config

            return print_config(cfg, stage, header=_header(stage, args))
        cfg.validate()
        if stage == "sft":
            from herd.posttrain.sft import sft

            _print(sft(cfg), stage, cfg.out, args.json)
        elif stage == "rm":
            from herd.posttrain.reward import train_reward_model

            _print(train_reward_model(cfg), stage, cfg.out, args.json)
        elif stage == "rejection-sample":
            from herd.posttrain.rejection import rejection_sample

            _print(rejection_sample(cfg), stage, cfg.out, args.json)
        elif stage == "dpo":
            from herd.posttrain.dpo import dpo

            _print(dpo(cfg), stage, cfg.out, args.json)
        return 0
    return fn


def cmd_average(args):
    from herd.posttrain.average import average_checkpoints

    weights = None
    if args.weights:
        try:
            weights = [float(w) for w in args.weights.split(",")]
        except ValueError:
            raise HerdError(f"--weights: expected comma-separated numbers, got {args.weights!r}") from None
    _print(average_checkpoints(args.checkpoints, args.out, weights), "average", args.out, args.json)
    return 0


def cmd_make_task(args):
    from herd.posttrain.tasks import write_task

    _print(write_task(args.out, args.train, args.test, args.seed, args.max_value), "posttrain make-task",
           args.out,
           args.json)
    return 0


def cmd_demo(args):
    from herd.posttrain.demo import DemoConfig, run_demo

    cfg = DemoConfig(out=args.out, seed=args.seed, quiet=args.quiet)
    res = run_demo(args.out, cfg)
    _print({"accuracy": res["accuracy"], "seconds": res["seconds"]}, "posttrain demo", args.out, args.json)
    return 0


def register(sub) -> None:
    from herd.config import add_config_parser
    from herd.posttrain.config import DPOConfig, RMConfig, RSConfig, SFTConfig

    specs = [
        ("sft", SFTConfig, "supervised fine-tuning on chat JSONL, loss on assistant tokens (paper §4.1.3)"),
        ("rm", RMConfig, "train a reward model on preference JSONL: -log sigmoid(r_chosen - r_rejected) "
                             "(paper §4.1.2)"),
        ("rejection-sample", RSConfig, "K samples per prompt, scored by a verifier or reward model; the best "
                                          "become SFT data (paper §4.2.2)"),
        ("dpo", DPOConfig, "DPO with beta 0.1, formatting tokens masked and an NLL term on chosen "
                              "(paper §4.1.4)"),
    ]
    for name, cls, desc in specs:
        p = add_config_parser(sub, name, cls, section=name, field_help={**HELP,
                                                                        **HELP_BY_COMMAND.get(name, {})},
                              help=desc, description=desc,
                              config_help=f"TOML file: a [{name}] table or a flat table of fields; flags "
                                          "override it")
        p.add_argument("--json", action="store_true", help="print the final metrics as JSON")
        p.set_defaults(func=_run(name))

    p = sub.add_parser("average", help="average compatible checkpoints (paper §4.1.5)",
                       description="Average compatible checkpoints, uniformly or with --weights "
                                   "(paper §4.1.5).")
    p.add_argument("checkpoints", nargs="+", metavar="CKPT")
    p.add_argument("--out", required=True, metavar="DIR", help="where the averaged herd checkpoint goes")
    p.add_argument("--weights", metavar="W1,W2,...", help="one weight per checkpoint (normalised to sum 1)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=cmd_average)

    p = sub.add_parser("posttrain", help="post-training tools: the arithmetic task, the end-to-end demo",
                       description="Post-training tools (paper §4).")
    psub = p.add_subparsers(dest="posttrain_command", metavar="COMMAND")
    q = psub.add_parser("make-task", help="write arithmetic word problems with exact answers "
                                          "(train/test split)",
                        description="Write OUT/train.jsonl, test.jsonl (chat) and *_prompts.jsonl (for "
                                    "rejection sampling) of arithmetic word problems.")
    q.add_argument("--train", type=int, default=2000, metavar="N", help="train problems (default: 2000)")
    q.add_argument("--test", type=int, default=200, metavar="N", help="test problems (default: 200)")
    q.add_argument("--seed", type=int, default=0, help="seed of the split (default: 0)")
    q.add_argument("--max-value", type=int, default=99, help="largest operand (default: 99)")
    q.add_argument("--out", required=True, metavar="DIR")
    q.add_argument("--json", action="store_true", help="print the result as JSON")
    q.set_defaults(func=cmd_make_task)
    q = psub.add_parser("demo", help="pretrain a tiny model, then SFT -> rejection sampling -> DPO on the "
                                     "arithmetic task, with held-out accuracy after each stage",
                        description="The whole post-training round on a CPU in minutes.")
    q.add_argument("out", metavar="DIR")
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--quiet", action="store_true")
    q.add_argument("--json", action="store_true", help="print the result as JSON")
    q.set_defaults(func=cmd_demo)
    p.set_defaults(func=lambda a: (p.print_help(), 0)[1])
