"""The CLI walk: every subcommand given each kind of bad input a new user types — a missing path, a
directory where a file goes, a file where a directory goes, a non-UTF-8 file, an empty file, a negative
number, a word where a number goes — ends with exit status 2 and one `herd: error:` / usage line, never
a traceback."""

import json
import re

import pytest
import torch

from herd.checkpoint import save_herd
from herd.cli import build_parser, main
from herd.model import ModelArgs, Transformer
from herd.posttrain.demo import demo_tokenizer


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    d = tmp_path_factory.mktemp("walk")
    tok = demo_tokenizer()
    torch.manual_seed(0)
    args = ModelArgs(dim=32, n_layers=1, n_heads=4, n_kv_heads=2, vocab_size=tok.n_words, multiple_of=16,
                     max_seq_len=128)
    save_herd(Transformer.build(args, seed=0), d / "ckpt", tokenizer=tok)
    tok.save(d / "tok.model")
    (d / "adir").mkdir()
    (d / "afile.txt").write_text("The state of the Union is strong.\n" * 40)
    (d / "bad.bin").write_bytes(b"caf\xe9 \xff\xfe\x00 not utf-8\n" * 10)
    (d / "empty.txt").write_text("")
    (d / "chat.jsonl").write_text(json.dumps({"messages": [
        {"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}) + "\n")
    return d


# Each case: the argv, with {X} for the workspace path of X. Grouped by the mistake.
MISSING = [
    "info {missing}", "convert {missing} {out} --to hf",
    "tokenizer train {missing} --vocab-size 1024 --out {out}",
    "tokenizer encode --tokenizer {missing} hi", "tokenize {missing} --out {out}",
    "pretrain --config {missing}.toml",
    "pretrain --config herd-5m --data {missing} --run.steps 1 --out {out}",
    "sft --model {missing} --data {chat.jsonl} --out {out}",
    "sft --model {ckpt} --data {missing} --out {out}",
    "rm --model {ckpt} --data {missing} --out {out}", "dpo --model {ckpt} --data {missing} --out {out}",
    "rejection-sample --model {ckpt} --prompts {missing} --out {out}", "average {missing} {ckpt} --out {out}",
    "generate {missing} --prompt hi", "chat {missing}", "eval {missing} --task ppl --text {afile.txt}",
    "eval {ckpt} --task ppl --text {missing}", "plot {missing}",
    "curate default --input {missing} --out {out}",
    "generate {ckpt} --prompts-file {missing}",
]
DIR_FOR_FILE = [
    "tokenizer encode --tokenizer {adir} hi", "pretrain --config {adir}",
    "sft --model {ckpt} --data {adir} --out {out}",
    "dpo --model {ckpt} --data {adir} --out {out}",
    "rejection-sample --model {ckpt} --prompts {adir} --out {out}",
    "eval {ckpt} --task ppl --text {adir}", "tokenizer train {afile.txt} --vocab-size 1024 --out {adir}",
    "eval {ckpt} --task ppl --text {afile.txt} --out {adir}", "generate {ckpt} --prompts-file {adir}",
    "tokenizer encode --file {adir}",
]
FILE_FOR_DIR = [
    "convert {afile.txt} {out} --to hf", "convert {ckpt} {afile.txt} --to hf",
    "generate {afile.txt} --prompt hi",
    "chat {afile.txt}", "eval {afile.txt} --task ppl --text {afile.txt}", "plot {afile.txt}",
    "pretrain --config herd-5m --data {afile.txt} --run.steps 1 --out {out}",
    "sft --model {afile.txt} --data {chat.jsonl} --out {out}", "tokenize {afile.txt} --out {afile.txt}",
    "info {afile.txt}",
]
NON_UTF8 = [
    "pretrain --config {bad.bin}", "sft --config {bad.bin}", "eval {ckpt} --task ppl --text {bad.bin}",
    "sft --model {ckpt} --data {bad.bin} --out {out}", "tokenizer encode --file {bad.bin}",
    "tokenizer encode --tokenizer {bad.bin} hi", "generate {ckpt} --prompts-file {bad.bin}",
    "curate --config {bad.bin}",
]
EMPTY = [
    "eval {ckpt} --task ppl --text {empty.txt}", "sft --model {ckpt} --data {empty.txt} --out {out}",
    "dpo --model {ckpt} --data {empty.txt} --out {out}", "tokenize {empty.txt} --out {out}",
    "tokenizer train {empty.txt} --vocab-size 1024 --out {out}",
    "tokenizer encode --tokenizer {empty.txt} hi",
    "generate {ckpt} --prompts-file {empty.txt}", "pretrain --config {empty.txt}",
]
NEGATIVE = [
    "tokenizer train {afile.txt} --vocab-size -5 --out {out}", "pretrain --config herd-5m --run.steps -5",
    "pretrain --config herd-5m --run.max_steps -1",
    "sft --model {ckpt} --data {chat.jsonl} --out {out} --steps -3",
    "generate {ckpt} --prompt hi --max-new-tokens -1", "eval {ckpt} --task ppl --text {afile.txt} --limit -1",
    "convert {ckpt} {out} --to meta --shards -1", "tokenize {afile.txt} --out {out} --val-fraction -0.1",
    "generate {ckpt} --prompt hi --temperature -1",
    "dpo --model {ckpt} --data {chat.jsonl} --out {out} --lr -1",
]
WRONG_TYPE = [
    "tokenizer train {afile.txt} --vocab-size many --out {out}",
    "pretrain --config herd-5m --run.steps forty",
    "pretrain --config herd-5m --optim.lr fast",
    "sft --model {ckpt} --data {chat.jsonl} --out {out} --steps x",
    "generate {ckpt} --prompt hi --max-new-tokens lots",
    "eval {ckpt} --task ppl --text {afile.txt} --limit all",
    "tokenize {afile.txt} --out {out} --workers two", "convert {ckpt} {out} --to hf --max-shard-gb big",
    "scaling predict --flops lots",
]
CASES = [(k, c) for k, group in (("missing", MISSING), ("dir-for-file", DIR_FOR_FILE),
                                 ("file-for-dir", FILE_FOR_DIR), ("non-utf8", NON_UTF8), ("empty", EMPTY),
                                 ("negative", NEGATIVE), ("wrong-type", WRONG_TYPE)) for c in group]


def _argv(cmd: str, ws, tmp_path) -> list[str]:
    names = {"missing": str(ws / "no_such_thing"), "out": str(tmp_path / "out"),
             **{p.name: str(p) for p in ws.iterdir()}}
    return [names.get(a[1:-1], a) if a.startswith("{") and a.endswith("}") else a for a in cmd.split()]


@pytest.mark.parametrize("kind,cmd", CASES, ids=[f"{k}:{c.split(' {')[0]}" for k, c in CASES])
def test_bad_input_exits_2_without_traceback(kind, cmd, ws, tmp_path, capsys):
    argv = _argv(cmd, ws, tmp_path)
    try:
        rc = main(argv)
    except SystemExit as e:  # argparse's own usage errors
        rc = e.code
    err = capsys.readouterr().err
    assert rc == 2, f"herd {' '.join(argv)} -> exit {rc}\n{err}"
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert lines and ("herd: error:" in lines[-1] or "error:" in lines[-1]), err


def test_every_subcommand_is_walked():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    walked = {c.split()[0] for _, c in CASES}
    # not walked: commands that take no path and no number a user types (their own tests cover them)
    exempt = {"speedrun", "scaling", "posttrain", "lm-eval", "tokenizer", "serve", "guard", "prompt-guard",
              "code-shield", "vision", "speech", "plan", "completion"}
    missing = set(sub.choices) - walked - exempt
    assert not missing, f"subcommands not in the CLI walk: {sorted(missing)}"


def test_help_texts_print_one_default():
    """A flag's help names its default once (an option printed with two defaults was a lie)."""
    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    for name, p in sub.choices.items():
        text = p.format_help()
        for line in text.splitlines():
            assert len(re.findall(r"\(default[: ]", line)) <= 1, f"herd {name} --help: {line}"
