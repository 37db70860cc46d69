"""`herd guard`, `herd prompt-guard`, `herd code-shield`: the system-level safety tools (paper §5.4.7).

herd guard CKPT --input conv.jsonl [--agent-type user|agent] [--show-prompt]   # Llama Guard 3
herd guard train --out runs/guard [--preset herd-5m] [--epochs 1]               # train a small guard
herd prompt-guard PATH --input texts.jsonl | --text "..."                       # jailbreak / injection
herd prompt-guard train --out runs/prompt-guard
herd code-shield FILE|- [--language python]                                     # insecure code -> JSON
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from herd.errors import HerdError


def register(sub) -> None:
    p = sub.add_parser(
        "guard",
        help="Llama Guard 3: classify conversations (or `guard train` a small guard)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "checkpoint",
        metavar="CHECKPOINT|train",
        help="a Llama Guard checkpoint (Meta, HF or herd layout), or `train`",
    )
    g = p.add_argument_group("classify")
    g.add_argument("--input", help='JSONL of {"messages": [...]} (one conversation a line; - for stdin)')
    g.add_argument("--output", help="write the JSONL results here (default: stdout)")
    g.add_argument(
        "--agent-type",
        choices=["user", "agent"],
        default=None,
        help="classify the last user turn (input) or agent turn (output); default: by the last message",
    )
    g.add_argument(
        "--show-prompt", action="store_true", help="print the exact guard prompt of each line instead"
    )
    g.add_argument("--exclude", default="", help="category codes to leave out, e.g. S6,S7")
    g.add_argument("--categories", default=None, help="category set: 8b (S1-S14, default) or 1b (S1-S13)")
    g.add_argument("--threshold", type=float, default=0.5, help="unsafe when P(first token = unsafe) >= this")
    g.add_argument("--tokenizer", default=None, help="tokenizer override ('llama3' for Meta's Llama Guard 3)")
    g.add_argument("--device", default="cpu")
    t = p.add_argument_group("train")
    t.add_argument("--out", help="output directory of `guard train` (the guard is OUT/checkpoint)")
    t.add_argument("--preset", default="herd-5m", help="model preset (default herd-5m)")
    t.add_argument("--dim", type=int, default=0, help="override the preset's width")
    t.add_argument("--n-layers", type=int, default=0, help="override the preset's depth")
    t.add_argument("--epochs", type=float, default=3.0)
    t.add_argument("--steps", type=int, default=0, help="if > 0, overrides --epochs")
    t.add_argument("--lr", type=float, default=2e-3)
    t.add_argument("--warmup", type=int, default=20, help="warmup steps")
    t.add_argument("--batch-size", type=int, default=16)
    t.add_argument("--limit", type=int, default=0, help="train on this many examples (0: all)")
    t.add_argument(
        "--eval-limit", type=int, default=0, help="evaluate on this many held-out examples (0: all)"
    )
    t.add_argument("--max-chars", type=int, default=600, help="cut each message to this many characters")
    t.add_argument("--n-benign", type=int, default=1600)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_guard)

    p = sub.add_parser(
        "prompt-guard",
        help="Prompt Guard: jailbreak / prompt-injection scores (or train one)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "path", metavar="PATH|train", help="a Prompt Guard (herd's head or Meta's mDeBERTa), or `train`"
    )
    p.add_argument("--input", help='JSONL of {"text": ...} (or plain lines); - for stdin')
    p.add_argument("--text", action="append", help="a text to score (repeatable)")
    p.add_argument("--out", help="`train`: output directory")
    p.add_argument("--n-benign", type=int, default=800)
    p.add_argument("--n-docs", type=int, default=400)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_prompt_guard)

    p = sub.add_parser(
        "code-shield",
        help="Code Shield: scan code for insecure patterns -> JSON",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("file", metavar="FILE|-", help="code file, or - for stdin")
    p.add_argument("--language", default=None, help="language (default: from the file suffix; all for stdin)")
    p.add_argument(
        "--output-text", action="store_true", help="the input is a model answer: scan its ``` code blocks"
    )
    p.add_argument("--no-semgrep", action="store_true", help="regex rules only")
    p.set_defaults(func=cmd_code_shield)


def _read_lines(path: str) -> list[tuple[int, str]]:
    if path == "-":
        return list(enumerate(sys.stdin.read().splitlines(), 1))
    p = Path(path)
    if not p.is_file():
        raise HerdError(f"input file not found: {p}")
    return list(enumerate(p.read_text(encoding="utf-8").splitlines(), 1))


def _conversations(path: str) -> list[list[dict]]:
    out = []
    for n, line in _read_lines(path):
        if not line.strip():
            continue
        try:
            d = json.loads(line)
            msgs = d["messages"] if isinstance(d, dict) else d
            if not isinstance(msgs, list) or not msgs:
                raise ValueError
        except (ValueError, KeyError, TypeError):
            raise HerdError(
                f'{path}:{n}: expected {{"messages": [{{"role": ..., "content": ...}}, ...]}}'
            ) from None
        out.append(msgs)
    if not out:
        raise HerdError(f"{path}: no conversations")
    return out


def _agent_type(arg, msgs) -> str:
    if arg:
        return "User" if arg == "user" else "Agent"
    last = msgs[-1]
    role = last.get("role") if isinstance(last, dict) else ("user" if len(msgs) % 2 else "assistant")
    return "Agent" if role == "assistant" else "User"


def cmd_guard(args) -> int:
    if args.checkpoint == "train":
        return _guard_train(args)
    if not args.input:
        raise HerdError("guard: --input CONV.jsonl is required (or `herd guard train --out DIR`)")
    from herd.safety.llama_guard import guard_prompt_text

    convs = _conversations(args.input)
    excluded = [c.strip().upper() for c in args.exclude.split(",") if c.strip()]
    if args.show_prompt:
        for msgs in convs:
            sys.stdout.write(
                guard_prompt_text(msgs, _agent_type(args.agent_type, msgs), args.categories, excluded)
            )
            sys.stdout.write("\n")
        return 0
    from herd.safety.llama_guard import LlamaGuard

    kw = {"categories": args.categories} if args.categories else {}
    guard = LlamaGuard.load(
        args.checkpoint,
        tokenizer=args.tokenizer,
        device=args.device,
        excluded=excluded,
        threshold=args.threshold,
        **kw,
    )
    lines, errors = [], 0
    for i, msgs in enumerate(convs):
        agent = _agent_type(args.agent_type, msgs)
        try:
            r = guard.classify(msgs, agent).to_dict()
        except HerdError as e:  # an unreadable answer is an error for that line, never "safe"
            errors += 1
            r = {"label": "error", "error": str(e)}
        lines.append(json.dumps({"index": i, "agent_type": agent, **r}, ensure_ascii=False))
    text = "\n".join(lines) + "\n"
    if args.output:
        from herd.fileio import atomic_write

        atomic_write(args.output, text)
    else:
        sys.stdout.write(text)
    if errors:
        print(
            f"herd: warning: {errors} conversation(s) got an unreadable guard answer (label 'error')",
            file=sys.stderr,
        )
    return 0


def _guard_train(args) -> int:
    from herd.safety.train import GuardTrainConfig, train_guard

    if not args.out:
        raise HerdError("guard train: --out DIR is required")
    cfg = GuardTrainConfig(
        out=args.out,
        preset=args.preset,
        dim=args.dim,
        n_layers=args.n_layers,
        tokenizer=args.tokenizer,
        epochs=args.epochs,
        steps=args.steps,
        lr=args.lr,
        warmup=args.warmup,
        batch_size=args.batch_size,
        limit=args.limit,
        eval_limit=args.eval_limit,
        max_chars=args.max_chars,
        n_benign=args.n_benign,
        seed=args.seed,
        device=args.device,
        quiet=args.quiet or not sys.stderr.isatty(),
    )
    ev = train_guard(cfg)
    g, k = ev["guard"]["overall"], ev["keyword"]["overall"]
    print(f"guard: {Path(args.out) / 'checkpoint'}")
    print(
        f"held-out ({g['n']}): guard P {g['precision']:.3f} R {g['recall']:.3f} F1 {g['f1']:.3f} "
        f"AUC {ev['auc']}; keyword baseline P {k['precision']:.3f} R {k['recall']:.3f} F1 {k['f1']:.3f}"
    )
    print(f"details: {Path(args.out) / 'eval.json'}")
    return 0


def cmd_prompt_guard(args) -> int:
    if args.path == "train":
        from herd.safety.prompt_guard import train_prompt_guard

        if not args.out:
            raise HerdError("prompt-guard train: --out DIR is required")
        m = train_prompt_guard(args.out, seed=args.seed, n_benign=args.n_benign, n_docs=args.n_docs)
        print(json.dumps(m, indent=1))
        print(f"prompt guard: {args.out}")
        return 0
    texts = list(args.text or [])
    if args.input:
        for n, line in _read_lines(args.input):
            if not line.strip():
                continue
            try:
                d = json.loads(line)
                texts.append(d["text"] if isinstance(d, dict) else str(d))
            except (ValueError, KeyError, TypeError):
                texts.append(line)
    if not texts:
        raise HerdError("prompt-guard: give --text TEXT or --input FILE")
    from herd.safety.prompt_guard import load_prompt_guard

    pg = load_prompt_guard(args.path)
    for i, t in enumerate(texts):
        print(json.dumps({"index": i, **pg.classify(t)}))
    return 0


def cmd_code_shield(args) -> int:
    from herd.safety.code_shield import CodeShield, language_of_path

    if args.file == "-":
        code, lang = sys.stdin.read(), args.language
    else:
        p = Path(args.file)
        if not p.is_file():
            raise HerdError(f"code file not found: {p}")
        try:
            code = p.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise HerdError(f"{p}: not UTF-8 text") from None
        lang = args.language or language_of_path(str(p))
    shield = CodeShield(semgrep=not args.no_semgrep)
    r = shield.scan_output(code) if args.output_text else shield.scan_code(code, lang)
    print(
        json.dumps(
            {
                "treatment": r.treatment,
                "issues": [
                    {
                        k: v
                        for k, v in i.to_dict().items()
                        if k in ("cwe_id", "line", "description", "severity")
                    }
                    for i in r.issues
                ],
            },
            indent=1,
        )
    )
    return 0
