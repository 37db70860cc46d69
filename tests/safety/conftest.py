"""Fixtures for the safety tests: the real Llama 3 tokenizer (it ships in llama-models)."""

import pytest


@pytest.fixture(scope="session")
def llama3():
    from herd.tokenizer import Tokenizer

    return Tokenizer.llama3()
