"""Tool calls and the tool-use loop (scripted model stub; the real-model loop is in test_server.py),
the OpenAI -> Llama 3.1 prompt conversion, and the moderation hook with a fake moderation object."""

import json

import httpx
import openai
import pytest
from serve_util import live_server

from herd.serve.moderation import REFUSAL, Decision, Moderation
from herd.serve.tools import (
    RequestError,
    ToolRunner,
    convert_messages,
    local_calculator,
    openai_tool_calls,
    run_tool_loop,
)
from herd.tokenizer.chat_format import custom_tools_prompt, system_prompt

TOOL = {
    "type": "function",
    "function": {
        "name": "trending_songs",
        "description": "Returns the trending songs",
        "parameters": {
            "type": "object",
            "properties": {"n": {"type": "int", "description": "The number of songs"}},
            "required": ["n"],
        },
    },
}


def test_tools_become_the_llama31_prompt():
    msgs = [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "Use tools to get latest trending songs"},
    ]
    out = convert_messages(msgs, [TOOL], today="21 September 2024")
    # as llama-models' prompt_format.md ("JSON based tool calling"): the environment in the system
    # message, the function definitions in a user message before the question
    assert out[0] == {
        "role": "system",
        "content": system_prompt(
            [], custom_tools=True, instructions="You are a helpful assistant.", today="21 September 2024"
        ),
    }
    assert out[0]["content"].startswith("Environment: ipython\n")
    assert out[1]["role"] == "user" and out[1]["content"] == custom_tools_prompt(
        [
            {
                "tool_name": "trending_songs",
                "description": "Returns the trending songs",
                "parameters": {
                    "n": {"param_type": "int", "description": "The number of songs", "required": True}
                },
            }
        ]
    )
    assert out[2] == {"role": "user", "content": "Use tools to get latest trending songs"}
    # built-in tools by name; tool messages go back as ipython; an assistant call keeps its arguments
    out = convert_messages(
        [
            {"role": "user", "content": "q"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "1",
                        "type": "function",
                        "function": {"name": "brave_search", "arguments": '{"query": "x"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "1", "content": "result"},
        ],
        [
            {"type": "function", "function": {"name": "brave_search"}},
            {"type": "function", "function": {"name": "code_interpreter"}},
        ],
        today="1 May 2024",
    )
    assert out[0]["content"].startswith("Environment: ipython\nTools: brave_search\n")
    assert out[2] == {
        "role": "assistant",
        "content": "",
        "stop_reason": "end_of_message",
        "tool_calls": [{"tool_name": "brave_search", "arguments": {"query": "x"}}],
    }
    assert out[3] == {"role": "ipython", "content": "result"}
    # no tools: the messages as they are (the same prompt as herd generate --chat)
    assert convert_messages(msgs) == msgs
    with pytest.raises(RequestError, match="not valid JSON"):
        convert_messages(
            [
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {"id": "1", "type": "function", "function": {"name": "f", "arguments": "{x"}}
                    ],
                }
            ]
        )


def test_openai_tool_calls_shape():
    (c,) = openai_tool_calls([{"call_id": "abc", "tool_name": "f", "arguments": {"a": 1}}])
    assert c["type"] == "function" and c["function"] == {"name": "f", "arguments": '{"a": 1}'}
    assert c["id"].startswith("call_")


def test_local_calculator():
    assert json.loads(local_calculator("2^10 + sqrt(16)"))["result"] == "1028"
    assert json.loads(local_calculator("(3 + 4) * 6"))["result"] == "42"
    assert "error" in json.loads(local_calculator("__import__('os')"))


def test_tool_loop_with_a_scripted_model():
    """The loop logic: the model's code call runs in the sandbox, its output comes back as an ipython
    message, the next answer uses it; max_iterations bounds a model that never stops calling."""
    seen = []

    def model(messages):
        seen.append([dict(m) for m in messages])
        last = messages[-1]
        if last["role"] == "user":
            return {
                "role": "assistant",
                "content": "",
                "stop_reason": "end_of_message",
                "tool_calls": [
                    {"tool_name": "code_interpreter", "arguments": {"code": "print(sum(range(101)))"}}
                ],
            }
        assert last["role"] == "ipython"
        value = last["content"].split("[stdout]\n")[1].split("\n")[0]
        return {
            "role": "assistant",
            "content": f"The sum is {value}.",
            "stop_reason": "end_of_turn",
            "tool_calls": [],
        }

    calls = []
    new = run_tool_loop(
        model,
        [{"role": "user", "content": "sum 0..100"}],
        ToolRunner(),
        on_tool=lambda c, out: calls.append((c, out)),
    )
    assert [m["role"] for m in new] == ["assistant", "ipython", "assistant"]
    assert new[-1]["content"] == "The sum is 5050."
    assert "[passed]" in new[1]["content"] and "5050" in new[1]["content"]
    assert len(calls) == 1 and len(seen) == 2

    def stubborn(messages):
        return {
            "role": "assistant",
            "content": "",
            "stop_reason": "end_of_message",
            "tool_calls": [{"tool_name": "wolfram_alpha", "arguments": {"query": "1+1"}}],
        }

    new = run_tool_loop(stubborn, [{"role": "user", "content": "?"}], ToolRunner(), max_iterations=3)
    assert [m["role"] for m in new].count("ipython") == 3 and new[-1]["role"] == "assistant"
    assert json.loads(new[1]["content"])["result"] == "2"


def test_sandbox_errors_and_pluggable_search():
    r = ToolRunner(search=lambda q: f"results for {q}")
    out = r(
        {
            "tool_name": "code_interpreter",
            "arguments": {"code": "import socket; socket.create_connection(('1.1.1.1', 80))"},
        }
    )
    assert out.startswith("[failed]") and "[stderr]" in out  # no network in the sandbox
    assert r({"tool_name": "brave_search", "arguments": {"query": "llamas"}}) == "results for llamas"
    assert "offline" in ToolRunner()({"tool_name": "brave_search", "arguments": {"query": "x"}})


class FakeModeration:
    """Blocks inputs mentioning 'bomb' and outputs containing a chosen word; records the calls."""

    def __init__(self, bad_output):
        self.bad_output, self.calls = bad_output, []

    def check_input(self, messages):
        self.calls.append(("input", messages))
        bad = any("bomb" in str(m.get("content")) for m in messages)
        return Decision(
            blocked=bad, reason="S9" if bad else "", categories=["S9"] if bad else [], latency_s=0.001
        )

    def check_output(self, messages, text):
        self.calls.append(("output", text))
        bad = self.bad_output is not None and self.bad_output in text
        return Decision(
            blocked=bad, reason="S1" if bad else "", categories=["S1"] if bad else [], latency_s=0.002
        )


def test_moderation_hooks(trained):
    from serve_util import dialogs

    from herd.serve.app import create_app

    _, model, small_tokenizer = trained  # a trained model: its greedy answer is known
    msgs, _, text = dialogs()[0]
    mod = FakeModeration(bad_output="herd model")
    assert isinstance(mod, Moderation)
    app = create_app(model, small_tokenizer, model_name="m", max_seq_len=1024, moderation=mod)
    with live_server(app) as url:
        c = openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0)
        r = c.chat.completions.create(
            model="m",
            messages=[{"role": "user", "content": "how to build a bomb"}],
            max_tokens=12,
            temperature=0,
        )
        assert r.choices[0].finish_reason == "content_filter" and r.choices[0].message.content == REFUSAL
        assert mod.calls[-1][0] == "input" and mod.calls[-1][1][0]["content"] == "how to build a bomb"
        r = c.chat.completions.create(model="m", messages=msgs, temperature=0)
        assert r.choices[0].finish_reason == "content_filter" and r.choices[0].message.content == REFUSAL
        assert mod.calls[-1] == ("output", text)
        chunks = list(
            c.chat.completions.create(
                model="m",
                messages=msgs,
                temperature=0,
                stream=True,
            )
        )
        assert chunks[-1].choices[0].finish_reason == "content_filter"
        streamed = "".join(ch.choices[0].delta.content or "" for ch in chunks)
        assert streamed == REFUSAL  # the blocked sentence never went out
        mod.bad_output = None
        r = c.chat.completions.create(model="m", messages=msgs, temperature=0)
        assert r.choices[0].message.content == text and r.choices[0].finish_reason == "stop"
        metrics = httpx.get(url + "/metrics").text
        assert 'herd_moderation_decisions_total{result="blocked",stage="input"} 1.0' in metrics
        assert 'herd_moderation_decisions_total{result="blocked",stage="output"}' in metrics
        assert 'herd_moderation_decisions_total{result="allowed",stage="output"}' in metrics
