"""Helpers of the serve tests: a live `herd serve` app in a thread of the test process on a pre-bound
socket (no port race), and the tiny chat model the fixtures train (its dialogs and tools)."""

import contextlib
import socket
import threading
import time


@contextlib.contextmanager
def live_server(app, log_config=None):
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", log_config=log_config, timeout_graceful_shutdown=2)
    server = uvicorn.Server(config)
    t = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    t.start()
    deadline = time.time() + 60
    while not server.started:
        if not t.is_alive() or time.time() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        t.join(30)
        sock.close()


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


def train_tiny_chat_model(tok):
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
