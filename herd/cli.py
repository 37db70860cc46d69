"""The `herd` command line.

Each stage registers its own subcommands in its `cli.py` (a `register(subparsers)` function);
this file only lists them, so the stages stay independent. Heavy imports happen inside the
command functions, so `herd --help` is fast. A `HerdError` (a user's mistake) is printed as one
line and exits with status 2; Ctrl-C exits with 130.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from herd.errors import HerdError

# Module that registers each group of subcommands. Order = order in `herd --help`.
STAGES = [
    "herd.speedrun.cli",  # speedrun
    "herd.model.cli",  # info
    "herd.checkpoint.cli",  # convert
    "herd.tokenizer.cli",  # tokenizer train/encode
    "herd.curate.cli",  # curate
    "herd.data.cli",  # tokenize
    "herd.train.cli",  # pretrain
    "herd.train.plan",  # plan (4D layouts, memory, MFU)
    "herd.scaling.cli",  # scaling isoflop/fit/predict
    "herd.posttrain.cli",  # sft, rm, rejection-sample, dpo, average
    "herd.inference.cli",  # generate, chat
    "herd.eval.cli",  # eval
    "herd.serve.cli",  # serve
    "herd.safety.cli",  # guard, prompt-guard, code-shield
    "herd.vision.cli",  # vision train
    "herd.speech.cli",  # speech train
    "herd.plot",  # plot
    "herd.completion",  # completion bash|zsh
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="herd",
        description="The Llama 3 Herd of Models: data, tokenizer, pretraining, post-training, evaluation, "
                    "inference.",
    )
    from herd import __version__

    parser.add_argument("--version", action="version", version=f"herd {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in STAGES:
        try:
            mod = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name and (name == e.name or name.startswith(e.name + ".")):  # stage not built yet
                continue
            raise
        mod.register(sub)
    _one_default(sub)
    return parser


def _one_default(sub) -> None:
    """A stage's parser built with argparse's ArgumentDefaultsHelpFormatter prints "(default: X)" after a
    help text that already names its default; give it the formatter that leaves such a text alone."""
    from herd.errors import OneDefaultHelpFormatter

    todo = list(sub.choices.values())
    while todo:
        p = todo.pop()
        if isinstance(p.formatter_class, type) and issubclass(p.formatter_class,
                                                              argparse.ArgumentDefaultsHelpFormatter):
            p.formatter_class = type("OneDefault" + p.formatter_class.__name__,
                                     (OneDefaultHelpFormatter, p.formatter_class), {})
        for a in p._actions:
            if isinstance(a, argparse._SubParsersAction):
                todo += list(a.choices.values())


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)  # a config override's mistake is found while parsing
        if not getattr(args, "func", None):
            parser.print_help()
            return 0
        rc = args.func(args)
        return int(rc or 0)
    except HerdError as e:
        print(f"herd: error: {e}", file=sys.stderr)
        return 2
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError) as e:
        # A path mistake that a command did not check itself: still one line, not a traceback.
        what = {FileNotFoundError: "not found", IsADirectoryError: "is a directory, not a file",
                NotADirectoryError: "is not a directory", PermissionError: "permission denied"}[type(e)]
        print(f"herd: error: {e.filename or e}: {what} (check the path)", file=sys.stderr)
        return 2
    except UnicodeDecodeError as e:
        print(f"herd: error: an input is not UTF-8 text ({e.reason} at byte {e.start}); convert it to UTF-8",
              file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("herd: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `herd info ... | head`: the reader left, not an error

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
