"""Fixtures for the post-training tests: a tiny random herd model with the demo's small tokenizer."""

import pytest
import torch

from herd.checkpoint import save_herd
from herd.model import ModelArgs, Transformer
from herd.posttrain.demo import demo_tokenizer


@pytest.fixture(scope="session")
def tok():
    return demo_tokenizer()


def tiny_args(tok, **kw):
    base = dict(dim=32, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=tok.n_words, multiple_of=16,
                max_seq_len=256)
    base.update(kw)
    return ModelArgs(**base)


@pytest.fixture(scope="session")
def tiny_ckpt(tmp_path_factory, tok):
    torch.manual_seed(0)
    model = Transformer.build(tiny_args(tok), seed=0)
    path = tmp_path_factory.mktemp("ckpt") / "tiny"
    save_herd(model, path, tokenizer=tok)
    return path


@pytest.fixture
def tiny_model(tok):
    return Transformer.build(tiny_args(tok), seed=0)


@pytest.fixture(scope="session")
def make_args(tok):
    """tiny_args as a fixture: make_args(**overrides) -> ModelArgs."""
    return lambda **kw: tiny_args(tok, **kw)
