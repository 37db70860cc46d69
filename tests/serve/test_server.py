"""`herd serve` end to end with the real `openai` client against a live server on a tiny model trained
in the fixture (tests/serve/conftest.py): models, chat and completions, streaming == non-streaming,
greedy == `herd generate`, tool calls (streamed and not), the tool loop in the sandbox, usage, the
client's exception classes, 32 concurrent streams."""

import asyncio
import json
import re

import httpx
import openai
import pytest
from serve_util import API_KEY, CODE_TOOL, TODAY, dialogs, live_server

from herd.serve.app import create_app
from herd.serve.tools import convert_messages
from herd.tokenizer.chat_format import ChatFormat


@pytest.fixture(scope="module")
def server(trained):
    _, model, tok = trained
    app = create_app(
        model,
        tok,
        model_name="tiny-chat",
        api_key=API_KEY,
        max_batch=8,
        max_seq_len=1024,
        today=TODAY,
        tool_loop=True,
        prefill_chunk=256,
    )
    with live_server(app) as url:
        yield url, app


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server[0] + "/v1", api_key=API_KEY, max_retries=0, timeout=120)


def chat(client, messages, **kw):
    kw.setdefault("temperature", 0)
    kw.setdefault("max_tokens", 80)
    return client.chat.completions.create(model="tiny-chat", messages=messages, **kw)


def test_models_list(client):
    ids = [m.id for m in client.models.list()]
    assert ids == ["tiny-chat"]
    assert client.models.retrieve("tiny-chat").id == "tiny-chat"


def test_chat_answers_and_usage(client, trained):
    _, _, tok = trained
    for msgs, tools, answer in dialogs()[:3]:
        r = chat(client, msgs)
        c = r.choices[0]
        assert c.message.content == answer and c.finish_reason == "stop" and c.message.role == "assistant"
        prompt = ChatFormat(tok).encode_dialog_prompt(convert_messages(msgs))
        assert r.usage.prompt_tokens == len(prompt)
        # the answer's tokens and the <|eot_id|> that ended it
        assert r.usage.completion_tokens == len(tok.encode(answer)) + 1
        assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
        assert r.object == "chat.completion" and r.model == "tiny-chat" and r.id.startswith("chatcmpl-")


def test_max_tokens_and_stop(client):
    msgs = dialogs()[1][0]
    r = chat(client, msgs, max_tokens=3)
    assert r.choices[0].finish_reason == "length" and r.usage.completion_tokens == 3
    r = chat(client, msgs, stop=["llama"])
    assert (
        r.choices[0].message.content == "Once upon a time, a little " and r.choices[0].finish_reason == "stop"
    )
    s = chat(client, msgs, stop=["llama"], stream=True)
    assert (
        "".join(ch.choices[0].delta.content or "" for ch in s if ch.choices) == "Once upon a time, a little "
    )


@pytest.mark.parametrize("seed", [1, 2])
def test_streaming_equals_non_streaming(client, seed):
    msgs = [{"role": "user", "content": "Say something random."}]
    kw = {"temperature": 1.3, "top_p": 0.95, "seed": seed, "max_tokens": 40, "n": 2}
    r = chat(client, msgs, **kw)
    texts, finish, usage, calls = ["", ""], [None, None], None, [[], []]
    first = {}
    for ch in chat(client, msgs, stream=True, stream_options={"include_usage": True}, **kw):
        if not ch.choices:
            usage = ch.usage
            continue
        c = ch.choices[0]
        first.setdefault(c.index, c.delta.role)
        texts[c.index] += c.delta.content or ""
        finish[c.index] = c.finish_reason or finish[c.index]
        for t in c.delta.tool_calls or []:  # a sampled <|python_tag|> starts a code-interpreter call
            if t.function.name:
                calls[c.index].append([t.function.name, ""])
            calls[c.index][-1][1] += t.function.arguments or ""
    assert texts == [c.message.content or "" for c in r.choices]
    assert calls == [
        [[t.function.name, t.function.arguments] for t in c.message.tool_calls or []] for c in r.choices
    ]
    assert finish == [c.finish_reason for c in r.choices]
    assert first == {0: "assistant", 1: "assistant"}  # the first delta carries the role
    assert usage.model_dump() == r.usage.model_dump()


def test_completions_streaming_equals_non_streaming(client):
    kw = {
        "model": "tiny-chat",
        "prompt": ["Once upon a time", "Hello"],
        "max_tokens": 20,
        "temperature": 1.5,
        "seed": 5,
        "n": 2,
    }
    r = client.completions.create(**kw)
    texts = {}
    for ch in client.completions.create(stream=True, **kw):
        for c in ch.choices:
            texts[c.index] = texts.get(c.index, "") + c.text
    assert [texts[i] for i in range(4)] == [c.text for c in sorted(r.choices, key=lambda c: c.index)]


def test_greedy_equals_herd_generate(client, trained, tmp_path):
    from herd.cli import main

    path, _, _ = trained
    out = tmp_path / "gen.jsonl"
    assert (
        main(
            [
                "generate",
                str(path),
                "--prompt",
                "Once upon a time",
                "--prompt",
                "The capital of",
                "--max-new-tokens",
                "24",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    recs = [json.loads(line) for line in out.read_text().splitlines()]
    r = client.completions.create(
        model="tiny-chat", prompt=["Once upon a time", "The capital of"], max_tokens=24, temperature=0
    )
    assert [c.text for c in sorted(r.choices, key=lambda c: c.index)] == [x["completion"] for x in recs]
    # the chat form: herd generate --chat
    out2 = tmp_path / "chat.jsonl"
    assert (
        main(
            [
                "generate",
                str(path),
                "--chat",
                "--prompt",
                "Hello, who are you?",
                "--max-new-tokens",
                "40",
                "--out",
                str(out2),
            ]
        )
        == 0
    )
    rec = json.loads(out2.read_text())
    assert (
        chat(client, [{"role": "user", "content": "Hello, who are you?"}]).choices[0].message.content
        == rec["completion"]
    )


def test_completions_logprobs_echo(client):
    r = client.completions.create(
        model="tiny-chat", prompt="Once upon", max_tokens=5, temperature=0, logprobs=2, echo=True
    )
    c = r.choices[0]
    assert c.text.startswith("Once upon")
    lp = c.logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == 5
    for tok, v, top in zip(lp.tokens, lp.token_logprobs, lp.top_logprobs):
        assert (
            v <= 0 and len(top) == 2 and max(top.values()) == pytest.approx(v, abs=1e-5)
        )  # greedy: the top one
    assert c.text == "Once upon" + "".join(lp.tokens)
    r2 = client.completions.create(model="tiny-chat", prompt=[1, 2, 3], max_tokens=4, temperature=0)
    assert r2.usage.prompt_tokens == 3 and r2.usage.completion_tokens == 4


def test_chat_logprobs(client):
    r = chat(client, dialogs()[0][0], logprobs=True, top_logprobs=3)
    content = r.choices[0].logprobs.content
    assert "".join(x.token for x in content) == r.choices[0].message.content
    assert all(len(x.top_logprobs) == 3 and x.top_logprobs[0].token == x.token for x in content)


def test_tool_call_parsed(client):
    msgs, tools, _ = dialogs()[3]
    r = chat(client, msgs, tools=tools)
    c = r.choices[0]
    assert c.finish_reason == "tool_calls" and c.message.content is None
    (tc,) = c.message.tool_calls
    assert tc.type == "function" and tc.function.name == "get_weather" and tc.id.startswith("call_")
    assert json.loads(tc.function.arguments) == {"city": "Paris"}
    # streamed: tool-call deltas (the name first, then the arguments)
    calls, finish, content = {}, None, ""
    for ch in chat(client, msgs, tools=tools, stream=True):
        d = ch.choices[0].delta
        content += d.content or ""
        for t in d.tool_calls or []:
            e = calls.setdefault(t.index, {"id": None, "name": "", "arguments": ""})
            e["id"] = t.id or e["id"]
            e["name"] += (t.function.name or "") if t.function else ""
            e["arguments"] += (t.function.arguments or "") if t.function else ""
        finish = ch.choices[0].finish_reason or finish
    assert content == "" and finish == "tool_calls"
    assert len(calls) == 1 and calls[0]["name"] == "get_weather"
    assert json.loads(calls[0]["arguments"]) == {"city": "Paris"}
    # tool choice none: no tool prompt, a plain answer
    r = chat(client, msgs, tools=tools, tool_choice="none")
    assert r.choices[0].message.tool_calls is None


def test_tool_result_goes_back_as_ipython(client):
    msgs, tools, answer = dialogs()[4]
    r = chat(client, msgs, tools=tools)
    assert r.choices[0].message.content == answer and r.choices[0].finish_reason == "stop"


def test_tool_loop_runs_code_in_the_sandbox(client):
    msgs = [{"role": "user", "content": "What is 6 times 7? Use Python."}]
    r = chat(client, msgs, tools=[CODE_TOOL])
    m = r.choices[0].message
    assert m.content == "The code printed 42, so 6 times 7 is 42." and r.choices[0].finish_reason == "stop"
    trace = m.model_extra["tool_trace"]
    assert trace[0]["name"] == "code_interpreter" and json.loads(trace[0]["arguments"]) == {
        "code": "print(6*7)"
    }
    assert "42" in trace[0]["output"] and "[passed]" in trace[0]["output"]  # the sandbox ran it
    # streamed: the call, its output, then the answer
    kinds, text = [], ""
    for ch in chat(client, msgs, tools=[CODE_TOOL], stream=True):
        d = ch.choices[0].delta
        if d.tool_calls:
            kinds.append("call")
        if d.model_extra.get("tool_result"):
            kinds.append("result")
            assert "42" in d.model_extra["tool_result"]["content"]
        text += d.content or ""
    assert kinds == ["call", "call", "result"] and text == m.content


def test_client_exception_classes(server, client):
    url = server[0]
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=url + "/v1", api_key="wrong", max_retries=0).models.list()
    with pytest.raises(openai.NotFoundError) as e:
        client.chat.completions.create(model="gpt-4", messages=[{"role": "user", "content": "hi"}])
    assert e.value.body["code"] == "model_not_found"
    with pytest.raises(openai.BadRequestError) as e:
        chat(client, [{"role": "user", "content": "hi"}], temperature=-1)
    assert e.value.body["param"] == "temperature"
    with pytest.raises(openai.BadRequestError) as e:
        chat(client, [{"role": "user", "content": "word " * 2000}])
    assert e.value.body["code"] == "context_length_exceeded"


def test_health_metrics_and_page(server):
    url = server[0]
    assert httpx.get(url + "/health").json()["status"] == "ok"
    text = httpx.get(url + "/metrics").text
    for name in (
        "herd_requests_total",
        "herd_prompt_tokens_total",
        "herd_completion_tokens_total",
        "herd_queue_depth",
        "herd_time_to_first_token_seconds_bucket",
        "herd_tokens_per_second",
        "herd_running_sequences",
    ):
        assert name in text
    page = httpx.get(url + "/")
    assert (
        page.status_code == 200
        and "herd chat" in page.text
        and "http://" not in page.text.split("<script")[0]
    )


def test_32_concurrent_streams(server, trained):
    url = server[0]
    cases = [d for d in dialogs() if isinstance(d[2], str) and d[1] is None]

    async def one(client, i):
        msgs, _, answer = cases[i % len(cases)]
        s = await client.chat.completions.create(
            model="tiny-chat", messages=msgs, temperature=0, max_tokens=60, stream=True
        )
        text, finish = "", None
        async for ch in s:
            text += ch.choices[0].delta.content or ""
            finish = ch.choices[0].finish_reason or finish
        return text == answer and finish == "stop"

    async def main():
        async with openai.AsyncOpenAI(base_url=url + "/v1", api_key=API_KEY, max_retries=0, timeout=300) as c:
            return await asyncio.gather(*[one(c, i) for i in range(32)], return_exceptions=True)

    results = asyncio.run(main())
    assert results == [True] * 32
    text = httpx.get(url + "/metrics").text
    assert "herd_queue_depth 0.0" in text
    # the same prompts sent again and again: their prefill came from the prefix cache
    reused = float(re.search(r"^herd_prefix_reused_tokens (\S+)$", text, re.MULTILINE).group(1))
    assert reused >= 16 * 10


def test_output_moderation_sees_tool_code_before_it_runs(trained):
    """A moderation object (Code Shield's place) reads a code-interpreter call before the tool loop runs
    it: blocked code is never executed."""
    from herd.serve.moderation import REFUSAL, Decision

    class NoPrint:
        def __init__(self):
            self.seen = []

        def check_input(self, messages):
            return Decision()

        def check_output(self, messages, text):
            self.seen.append(text)
            return Decision(blocked="print(" in text, reason="code", categories=["code"])

    _, model, tok = trained
    mod = NoPrint()
    app = create_app(
        model, tok, model_name="tiny-chat", max_seq_len=1024, today=TODAY, tool_loop=True, moderation=mod
    )
    msgs = [{"role": "user", "content": "What is 6 times 7? Use Python."}]
    with live_server(app) as url:
        c = openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0)
        r = c.chat.completions.create(model="tiny-chat", messages=msgs, tools=[CODE_TOOL], temperature=0)
        assert r.choices[0].finish_reason == "content_filter" and r.choices[0].message.content == REFUSAL
        assert "tool_trace" not in (r.choices[0].message.model_extra or {})
        chunks = list(
            c.chat.completions.create(
                model="tiny-chat", messages=msgs, tools=[CODE_TOOL], temperature=0, stream=True
            )
        )
        assert chunks[-1].choices[0].finish_reason == "content_filter"
        assert not any(ch.choices[0].delta.model_extra.get("tool_result") for ch in chunks)
    assert mod.seen[0] == "print(6*7)"
