"""Fixtures for the evaluation tests: a tiny random Llama 3 model with a small tokenizer (the first
8,192 merges of the real Llama 3 BPE, a valid BPE of its own, plus the 256 special tokens), also
saved as a herd checkpoint."""

import pytest
import torch

from herd.checkpoint import save_herd
from herd.model.args import ModelArgs
from herd.model.transformer import Transformer
from herd.tokenizer import Tokenizer


@pytest.fixture(scope="session")
def tokenizer():
    full = Tokenizer.llama3()
    return Tokenizer({b: r for b, r in full.mergeable_ranks.items() if r < 8192}, name="llama3-8k")


@pytest.fixture(scope="session")
def tiny(tokenizer):
    args = ModelArgs(
        dim=64,
        n_layers=2,
        n_heads=4,
        n_kv_heads=2,
        vocab_size=tokenizer.n_words,
        multiple_of=32,
        max_seq_len=1024,
    )
    model = Transformer.build(args, seed=0).eval()
    return model, tokenizer


@pytest.fixture(scope="session")
def tiny_ckpt(tiny, tmp_path_factory):
    model, tok = tiny
    d = tmp_path_factory.mktemp("ckpt") / "tiny"
    save_herd(model, d, tokenizer=tok)
    return d


@pytest.fixture(autouse=True)
def one_thread():
    """The models here are tiny: one thread avoids thread hand-off costs (8x faster on a busy
    2-core machine); the previous setting is restored for the rest of the suite."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
