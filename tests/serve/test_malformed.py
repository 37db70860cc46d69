"""Malformed requests: each gets a 4xx in OpenAI's error shape, the server keeps serving, and nothing
is logged as a traceback. A tiny random model is enough here."""

import json
import logging

import httpx
import pytest
from serve_util import live_server

from herd.serve.app import create_app

GOOD = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3}


def chat(**kw):
    d = dict(GOOD)
    d.update(kw)
    return {k: v for k, v in d.items() if v is not ...}


BAD = [  # (name, path, raw body or JSON object, expected status)
    ("bad json", "/v1/chat/completions", b"{", 400),
    ("empty body", "/v1/chat/completions", b"", 400),
    ("json array", "/v1/chat/completions", b"[1, 2]", 400),
    ("json string", "/v1/chat/completions", b'"hello"', 400),
    (
        "invalid utf-8",
        "/v1/chat/completions",
        b'{"model": "m", "messages": [{"role": "user", "content": "\xff\xfe"}]}',
        400,
    ),
    (
        "10 MB body",
        "/v1/chat/completions",
        json.dumps(chat(messages=[{"role": "user", "content": "x" * (10 << 20)}])).encode(),
        413,
    ),
    ("deep nesting", "/v1/chat/completions", b"[" * 100000 + b"]" * 100000, 400),
    (
        "NaN temperature",
        "/v1/chat/completions",
        b'{"model": "m", "messages": [{"role": "user", "content": "hi"}], "temperature": NaN}',
        400,
    ),
    ("no model", "/v1/chat/completions", chat(model=...), 400),
    ("model not a string", "/v1/chat/completions", chat(model=123), 400),
    ("unknown model", "/v1/chat/completions", chat(model="gpt-4"), 404),
    ("no messages", "/v1/chat/completions", chat(messages=...), 400),
    ("empty messages", "/v1/chat/completions", chat(messages=[]), 400),
    ("messages a string", "/v1/chat/completions", chat(messages="hi"), 400),
    ("message a string", "/v1/chat/completions", chat(messages=["hi"]), 400),
    ("unknown role", "/v1/chat/completions", chat(messages=[{"role": "wizard", "content": "hi"}]), 400),
    ("content a number", "/v1/chat/completions", chat(messages=[{"role": "user", "content": 5}]), 400),
    ("no content", "/v1/chat/completions", chat(messages=[{"role": "user"}]), 400),
    (
        "image part",
        "/v1/chat/completions",
        chat(messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]),
        400,
    ),
    ("negative max_tokens", "/v1/chat/completions", chat(max_tokens=-5), 400),
    ("zero max_tokens", "/v1/chat/completions", chat(max_tokens=0), 400),
    ("huge max_tokens", "/v1/chat/completions", chat(max_tokens=10**12), 400),
    ("max_tokens a string", "/v1/chat/completions", chat(max_tokens="10"), 400),
    ("max_tokens beyond the context", "/v1/chat/completions", chat(max_tokens=250), 400),
    (
        "prompt beyond the context",
        "/v1/chat/completions",
        chat(messages=[{"role": "user", "content": "a " * 600}]),
        400,
    ),
    ("temperature < 0", "/v1/chat/completions", chat(temperature=-0.5), 400),
    ("temperature > 2", "/v1/chat/completions", chat(temperature=5), 400),
    ("temperature a string", "/v1/chat/completions", chat(temperature="hot"), 400),
    ("top_p > 1", "/v1/chat/completions", chat(top_p=1.5), 400),
    ("n = 0", "/v1/chat/completions", chat(n=0), 400),
    ("n too big", "/v1/chat/completions", chat(n=1000), 400),
    ("stop a number", "/v1/chat/completions", chat(stop=5), 400),
    ("too many stops", "/v1/chat/completions", chat(stop=["x"] * 100), 400),
    ("seed a string", "/v1/chat/completions", chat(seed="abc"), 400),
    ("stream a string", "/v1/chat/completions", chat(stream="yes"), 400),
    (
        "stream_options without stream",
        "/v1/chat/completions",
        chat(stream_options={"include_usage": True}),
        400,
    ),
    ("logprobs a string", "/v1/chat/completions", chat(logprobs="yes"), 400),
    ("top_logprobs without logprobs", "/v1/chat/completions", chat(top_logprobs=3), 400),
    ("unknown field", "/v1/chat/completions", chat(frobnicate=1), 400),
    ("tools not a list", "/v1/chat/completions", chat(tools={"a": 1}), 400),
    ("tool without function", "/v1/chat/completions", chat(tools=[{"type": "function"}]), 400),
    (
        "tool with a bad name",
        "/v1/chat/completions",
        chat(tools=[{"type": "function", "function": {"name": "a b!"}}]),
        400,
    ),
    (
        "tool call with bad JSON",
        "/v1/chat/completions",
        chat(
            messages=[
                {"role": "user", "content": "hi"},
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{not json"}}
                    ],
                },
                {"role": "tool", "tool_call_id": "c", "content": "1"},
            ]
        ),
        400,
    ),
    ("tool_choice required", "/v1/chat/completions", chat(tool_choice="required"), 400),
    ("logit_bias bad token", "/v1/chat/completions", chat(logit_bias={"999999999": 5}), 400),
    ("response_format json", "/v1/chat/completions", chat(response_format={"type": "json_object"}), 400),
    ("completions: no prompt", "/v1/completions", {"model": "m"}, 400),
    ("completions: empty prompt list", "/v1/completions", {"model": "m", "prompt": []}, 400),
    ("completions: token out of vocab", "/v1/completions", {"model": "m", "prompt": [1, 10**7]}, 400),
    ("completions: suffix", "/v1/completions", {"model": "m", "prompt": "a", "suffix": "b"}, 400),
    ("completions: unknown model", "/v1/completions", {"model": "x", "prompt": "a"}, 404),
    ("unknown url", "/v1/embeddings", {"model": "m", "input": "a"}, 404),
]


@pytest.fixture(scope="module")
def server(small_tokenizer):
    from inference_util import tiny_model

    model = tiny_model(vocab_size=small_tokenizer.n_words)  # max_seq_len 256
    app = create_app(
        model, small_tokenizer, model_name="m", max_batch=4, max_seq_len=256, max_body_bytes=1 << 20
    )
    with live_server(app) as url:
        yield url


def test_malformed_requests_get_openai_errors(server, caplog, capfd):
    assert len(BAD) >= 30
    caplog.set_level(logging.INFO)
    with httpx.Client(base_url=server, timeout=60) as c:
        for name, path, body, status in BAD:
            raw = body if isinstance(body, bytes) else json.dumps(body).encode()
            r = c.post(path, content=raw, headers={"Content-Type": "application/json"})
            assert r.status_code == status, (name, r.status_code, r.text[:300])
            err = r.json()["error"]
            assert set(err) == {"message", "type", "param", "code"}, name
            assert isinstance(err["message"], str) and err["message"] and "Traceback" not in err["message"], (
                name
            )
            # and the server still serves
            ok = c.post("/v1/chat/completions", json=GOOD)
            assert ok.status_code == 200 and ok.json()["choices"][0]["finish_reason"] in ("length", "stop"), (
                name,
                ok.text,
            )
        r = c.get("/v1/chat/completions")  # wrong method
        assert 400 <= r.status_code < 500 and "error" in r.json()
    assert not [rec for rec in caplog.records if rec.exc_info or "Traceback" in rec.getMessage()]
    out, err = capfd.readouterr()
    assert "Traceback" not in out + err


def test_a_client_that_leaves_frees_its_slot(small_tokenizer):
    """Streams cut by their clients stop generating at once (their slots go to the next requests)."""
    import time

    from inference_util import tiny_model

    model = tiny_model(vocab_size=small_tokenizer.n_words)
    app = create_app(model, small_tokenizer, model_name="m", max_batch=2, max_seq_len=256)
    eng = app.state.engine
    body = dict(
        GOOD, max_tokens=230, stream=True, logit_bias={str(t): -100 for t in small_tokenizer.stop_tokens}
    )
    with live_server(app) as url, httpx.Client(base_url=url, timeout=60) as c:
        for _ in range(6):  # three times the slots
            with c.stream("POST", "/v1/chat/completions", json=body) as r:
                assert r.status_code == 200
                for line in r.iter_lines():
                    if line.startswith("data: {") and '"content": ""' not in line:
                        break  # leave mid-stream, after the first token
        deadline = time.time() + 30
        while (eng.running or eng.queue_depth) and time.time() < deadline:
            time.sleep(0.05)
        assert eng.running == 0 and eng.queue_depth == 0
        # far fewer tokens than 6 x 230 were generated: each stream stopped when its client left
        assert eng.stats["generated_tokens"] < 6 * 230 / 2
        ok = c.post("/v1/chat/completions", json=dict(GOOD, logit_bias=body["logit_bias"]))
        assert ok.status_code == 200 and ok.json()["usage"]["completion_tokens"] == 3


def test_overloaded_is_503(small_tokenizer):
    from inference_util import tiny_model

    model = tiny_model(vocab_size=small_tokenizer.n_words)
    app = create_app(model, small_tokenizer, model_name="m", max_batch=1, max_seq_len=256, max_queue=0)
    with live_server(app) as url:
        r = httpx.post(url + "/v1/chat/completions", json=GOOD, timeout=30)
        assert r.status_code == 503
        assert r.json()["error"]["code"] == "overloaded" and r.json()["error"]["type"] == "server_error"
        assert (
            'herd_requests_total{endpoint="/v1/chat/completions",status="503"} 1.0'
            in httpx.get(url + "/metrics").text
        )
