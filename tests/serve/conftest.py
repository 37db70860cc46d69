"""Fixtures for the serve tests: a tiny model trained here (a few seconds) on a handful of Llama 3.1
dialogs, plain answers, a custom tool call and a code-interpreter call, so that a live server's
answers, tool calls and tool loop can be checked with greedy decoding; and a running server."""

import pytest
from serve_util import train_tiny_chat_model


@pytest.fixture(scope="session")
def small_tokenizer():
    from herd.tokenizer import Tokenizer

    ranks = Tokenizer.llama3().mergeable_ranks
    return Tokenizer({k: v for k, v in ranks.items() if v < 2000}, name="small")


@pytest.fixture(scope="session")
def trained(tmp_path_factory, small_tokenizer):
    """(checkpoint dir, model, tokenizer) of the tiny model trained on `dialogs()`."""
    import torch

    from herd.checkpoint import save_herd

    n = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model: one thread is fastest, and far faster on a busy machine
    try:
        model, loss, acc, steps = train_tiny_chat_model(small_tokenizer)
    finally:
        torch.set_num_threads(n)
    assert acc == 1.0, (
        f"the tiny model did not learn its dialogs (loss {loss}, accuracy {acc}, {steps} steps)"
    )
    path = tmp_path_factory.mktemp("serve") / "tiny-chat"
    save_herd(model, path, tokenizer=small_tokenizer)
    return path, model, small_tokenizer


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models run fastest on one thread, and far faster than on two when the machine is busy."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
