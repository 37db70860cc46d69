"""Fixtures for the inference tests: a tiny model, a small real BPE tokenizer (the first 2,000
ranks of the Llama 3 BPE, which is a valid BPE on its own) and a saved herd checkpoint."""

import os
import sys

import pytest
import torch  # noqa: F401
from inference_util import tiny_args, tiny_model  # noqa: F401

sys.path.insert(0, os.path.dirname(__file__))


@pytest.fixture(scope="session")
def small_tokenizer():
    from herd.tokenizer import Tokenizer

    ranks = Tokenizer.llama3().mergeable_ranks
    return Tokenizer({k: v for k, v in ranks.items() if v < 2000}, name="small")


@pytest.fixture(scope="session")
def model():
    return tiny_model()


@pytest.fixture(scope="session")
def tok_model(small_tokenizer):
    return tiny_model(vocab_size=small_tokenizer.n_words)


@pytest.fixture(scope="session")
def ckpt(tmp_path_factory, tok_model, small_tokenizer):
    from herd.checkpoint import save_herd

    path = tmp_path_factory.mktemp("ckpt") / "tiny"
    save_herd(tok_model, path, tokenizer=small_tokenizer)
    return path


@pytest.fixture(autouse=True)
def _threads():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)
