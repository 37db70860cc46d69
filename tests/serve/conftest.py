"""Fixtures for the serve tests: a tiny model trained here (a few seconds) on a handful of Llama 3.1
dialogs, plain answers, a custom tool call and a code-interpreter call, so that a live server's
answers, tool calls and tool loop can be checked with greedy decoding; and a running server."""

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))

TODAY = "26 July 2024"
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "description": "the city"}},
            "required": ["city"],
        },
    },
}
CODE_TOOL = {"type": "function", "function": {"name": "code_interpreter"}}
API_KEY = "sk-herd-test"


def dialogs():
    """(OpenAI messages, tools, the assistant's final answer) the tiny model learns."""
    weather_call = {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
            }
        ],
    }
    code_call = {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "call_2",
                "type": "function",
                "function": {"name": "code_interpreter", "arguments": '{"code": "print(6*7)"}'},
            }
        ],
    }
    return [
        ([{"role": "user", "content": "Hello, who are you?"}], None, "I am a tiny herd model, here to help."),
        (
            [{"role": "user", "content": "Tell me a story."}],
            None,
            "Once upon a time, a little llama walked over the hills to find the sea.",
        ),
        (
            [
                {"role": "system", "content": "Answer briefly."},
                {"role": "user", "content": "What is the capital of France?"},
            ],
            None,
            "The capital of France is Paris.",
        ),
        ([{"role": "user", "content": "What is the weather in Paris?"}], [WEATHER_TOOL], weather_call),
        (
            [
                {"role": "user", "content": "What is the weather in Paris?"},
                weather_call,
                {"role": "tool", "tool_call_id": "call_1", "content": "18 degrees and sunny"},
            ],
            [WEATHER_TOOL],
            "It is 18 degrees and sunny in Paris.",
        ),
        ([{"role": "user", "content": "What is 6 times 7? Use Python."}], [CODE_TOOL], code_call),
        (
            [
                {"role": "user", "content": "What is 6 times 7? Use Python."},
                code_call,
                {"role": "tool", "tool_call_id": "call_2", "content": "[passed]\n[stdout]\n42\n[/stdout]"},
            ],
            [CODE_TOOL],
            "The code printed 42, so 6 times 7 is 42.",
        ),
    ]


def _train(tok):
    import torch

    from herd.model.args import ModelArgs
    from herd.model.transformer import Transformer
    from herd.serve.tools import convert_messages
    from herd.tokenizer.chat_format import ChatFormat

    fmt = ChatFormat(tok, python_tag="all_tool_calls")
    seqs = []
    for msgs, tools, answer in dialogs():
        full = msgs + [answer if isinstance(answer, dict) else {"role": "assistant", "content": answer}]
        herd = convert_messages(full, tools, today=TODAY)
        if isinstance(answer, dict):
            herd[-1]["stop_reason"] = "end_of_message"
        enc = fmt.encode_dialog_with_roles(herd)
        mask = enc.assistant_mask()
        seqs.append((enc.tokens, mask))
    # all dialogs packed in one row, each its own document (block-causal attention, positions from 0)
    toks, tgt, doc = [], [], []
    for d, (t, m) in enumerate(seqs):
        toks += t
        tgt += [t[j + 1] if m[j + 1] else -100 for j in range(len(t) - 1)] + [-100]
        doc += [d] * len(t)
    x, y, doc_ids = torch.tensor([toks]), torch.tensor([tgt]), torch.tensor([doc])
    args = ModelArgs(
        dim=128,
        n_layers=2,
        n_heads=4,
        n_kv_heads=2,
        vocab_size=tok.n_words,
        multiple_of=32,
        max_seq_len=1024,
        use_scaled_rope=True,
    )
    torch.manual_seed(0)
    model = Transformer.build(args, seed=0)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.0)
    keep = y != -100
    loss = acc = None
    for step in range(300):
        logits = model.output(model(x, doc_ids=doc_ids, hidden=True)[keep]).float()  # answer positions only
        loss = torch.nn.functional.cross_entropy(logits, y[keep])
        acc = float((logits.argmax(-1) == y[keep]).float().mean())
        # every answer token is the argmax, with a margin: greedy decoding gives back the answers
        if acc == 1.0 and loss.item() < 0.05:
            break
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval(), loss.item(), acc, step


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
        model, loss, acc, steps = _train(small_tokenizer)
    finally:
        torch.set_num_threads(n)
    assert acc == 1.0, (
        f"the tiny model did not learn its dialogs (loss {loss}, accuracy {acc}, {steps} steps)"
    )
    path = tmp_path_factory.mktemp("serve") / "tiny-chat"
    save_herd(model, path, tokenizer=small_tokenizer)
    return path, model, small_tokenizer
