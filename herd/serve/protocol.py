"""The OpenAI wire format of `herd serve`: request validation (one clear message and the `param` it is
about, as OpenAI's 400s) and the shapes of responses, chunks and errors.

Accepted fields (anything else is a 400 "Unrecognized request argument", as OpenAI answers):
chat: model, messages, max_tokens, max_completion_tokens, temperature, top_p, top_k, n, seed, stop,
stream, stream_options{include_usage}, logprobs, top_logprobs, presence_penalty, frequency_penalty,
logit_bias, tools, tool_choice ("auto" | "none"), parallel_tool_calls, response_format {"type": "text"},
user, metadata, store, service_tier. completions: model, prompt, max_tokens, temperature, top_p,
top_k, n, best_of (= n), seed, stop, stream, stream_options, logprobs (0-20), echo, suffix (null),
presence_penalty, frequency_penalty, logit_bias, user.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from herd.serve.tools import RequestError

COMMON = {
    "model",
    "max_tokens",
    "temperature",
    "top_p",
    "top_k",
    "n",
    "seed",
    "stop",
    "stream",
    "stream_options",
    "presence_penalty",
    "frequency_penalty",
    "logit_bias",
    "user",
    "metadata",
    "store",
    "service_tier",
}
CHAT_FIELDS = COMMON | {
    "messages",
    "max_completion_tokens",
    "logprobs",
    "top_logprobs",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "response_format",
}
COMPLETION_FIELDS = COMMON | {"prompt", "best_of", "logprobs", "echo", "suffix"}
MAX_STOP = 16
MAX_STOP_LEN = 256


@dataclass
class Params:
    model: str
    n: int = 1
    max_tokens: int | None = None
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    stream: bool = False
    include_usage: bool = False
    logprobs: int | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logit_bias: dict[int, float] = field(default_factory=dict)
    # chat
    messages: list | None = None
    tools: list | None = None
    tool_choice: str = "auto"
    # completions
    prompt: object = None
    echo: bool = False


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _opt(body, name, check, what, default=None):
    v = body.get(name)
    if v is None:
        return default
    if not check(v):
        raise RequestError(f"Invalid value for '{name}': {what}, got {_show(v)}.", name, "invalid_value")
    return v


def _show(v) -> str:
    s = repr(v)
    return s if len(s) <= 60 else s[:57] + "..."


def _common(body: dict, allowed: set, vocab_size: int, max_n: int) -> Params:
    if not isinstance(body, dict):
        raise RequestError("The request body must be a JSON object.", None, "invalid_request")
    for k in body:
        if k not in allowed:
            raise RequestError(f"Unrecognized request argument supplied: {k}", k, "unknown_parameter")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise RequestError("you must provide a model parameter (a string)", "model", "invalid_value")
    p = Params(model=model)
    p.n = _opt(body, "n", lambda v: _is_int(v) and 1 <= v <= max_n, f"an integer from 1 to {max_n}", 1)
    p.temperature = float(
        _opt(body, "temperature", lambda v: _is_num(v) and 0 <= v <= 2, "a number from 0 to 2", 1.0)
    )
    p.top_p = float(_opt(body, "top_p", lambda v: _is_num(v) and 0 <= v <= 1, "a number from 0 to 1", 1.0))
    if p.top_p == 0:  # nothing but the most likely token
        p.temperature = 0.0
        p.top_p = 1.0
    p.top_k = _opt(body, "top_k", lambda v: _is_int(v) and v >= -1, "an integer >= 0 (0 or -1 = off)", 0)
    p.top_k = max(p.top_k, 0)
    p.seed = _opt(body, "seed", lambda v: _is_int(v) and -(2**63) <= v < 2**64, "an integer")
    p.presence_penalty = float(
        _opt(body, "presence_penalty", lambda v: _is_num(v) and -2 <= v <= 2, "a number from -2 to 2", 0.0)
    )
    p.frequency_penalty = float(
        _opt(body, "frequency_penalty", lambda v: _is_num(v) and -2 <= v <= 2, "a number from -2 to 2", 0.0)
    )
    stop = body.get("stop")
    if stop is not None:
        if isinstance(stop, str):
            stop = [stop]
        if (
            not isinstance(stop, list)
            or len(stop) > MAX_STOP
            or not all(isinstance(s, str) and 0 < len(s) <= MAX_STOP_LEN for s in stop)
        ):
            raise RequestError(
                f"Invalid value for 'stop': a non-empty string or a list of at most {MAX_STOP} "
                f"non-empty strings (at most {MAX_STOP_LEN} characters each), got {_show(stop)}.",
                "stop",
                "invalid_value",
            )
        p.stop = stop
    p.stream = _opt(body, "stream", lambda v: isinstance(v, bool), "a boolean", False)
    so = body.get("stream_options")
    if so is not None:
        if not p.stream:
            raise RequestError(
                "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
                "stream_options",
                "invalid_value",
            )
        if (
            not isinstance(so, dict)
            or set(so) - {"include_usage"}
            or not isinstance(so.get("include_usage", False), bool)
        ):
            raise RequestError(
                "Invalid value for 'stream_options': {\"include_usage\": true|false}.",
                "stream_options",
                "invalid_value",
            )
        p.include_usage = so.get("include_usage", False)
    lb = body.get("logit_bias")
    if lb is not None:
        if not isinstance(lb, dict) or len(lb) > 300:
            raise RequestError(
                "Invalid value for 'logit_bias': an object of at most 300 token ids to numbers.",
                "logit_bias",
                "invalid_value",
            )
        for k, v in lb.items():
            try:
                t = int(k)
            except (TypeError, ValueError):
                t = -1
            if not 0 <= t < vocab_size or not _is_num(v) or not -100 <= v <= 100:
                raise RequestError(
                    f"Invalid value for 'logit_bias': token id {_show(k)} must be in [0, {vocab_size}) "
                    "and its bias a number from -100 to 100.",
                    "logit_bias",
                    "invalid_value",
                )
            p.logit_bias[t] = float(v)
    for name in ("user", "service_tier"):
        _opt(body, name, lambda v: isinstance(v, str), "a string")
    _opt(body, "metadata", lambda v: isinstance(v, dict), "an object")
    _opt(body, "store", lambda v: isinstance(v, bool), "a boolean")
    return p


def _max_tokens(body, name, limit):
    return _opt(body, name, lambda v: _is_int(v) and 1 <= v <= limit, f"an integer from 1 to {limit}")


def parse_chat(body, vocab_size: int, max_n: int, max_seq_len: int) -> Params:
    p = _common(body, CHAT_FIELDS, vocab_size, max_n)
    mt = _max_tokens(body, "max_completion_tokens", max_seq_len)
    p.max_tokens = mt if mt is not None else _max_tokens(body, "max_tokens", max_seq_len)
    msgs = body.get("messages")
    if not isinstance(msgs, list) or not msgs:
        raise RequestError(
            "Invalid value for 'messages': a non-empty list of messages.", "messages", "invalid_value"
        )
    p.messages = msgs
    lp = _opt(body, "logprobs", lambda v: isinstance(v, bool), "a boolean", False)
    top = _opt(body, "top_logprobs", lambda v: _is_int(v) and 0 <= v <= 20, "an integer from 0 to 20")
    if top is not None and not lp:
        raise RequestError("'top_logprobs' needs 'logprobs' set to true.", "top_logprobs", "invalid_value")
    p.logprobs = (top or 0) if lp else None
    p.tools = body.get("tools")
    if p.tools is not None and not isinstance(p.tools, list):
        raise RequestError("Invalid value for 'tools': a list of tools.", "tools", "invalid_value")
    tc = body.get("tool_choice")
    if tc is not None:
        if tc not in ("auto", "none"):
            raise RequestError(
                'Invalid value for \'tool_choice\': herd supports "auto" and "none" (the model '
                "decides whether to call a tool); forcing a call is not supported.",
                "tool_choice",
                "invalid_value",
            )
        p.tool_choice = tc
    _opt(body, "parallel_tool_calls", lambda v: isinstance(v, bool), "a boolean")
    rf = body.get("response_format")
    if rf is not None and (not isinstance(rf, dict) or rf.get("type") != "text"):
        raise RequestError(
            'Invalid value for \'response_format\': only {"type": "text"} is supported.',
            "response_format",
            "invalid_value",
        )
    return p


def parse_completion(body, vocab_size: int, max_n: int, max_seq_len: int) -> Params:
    p = _common(body, COMPLETION_FIELDS, vocab_size, max_n)
    p.max_tokens = _max_tokens(body, "max_tokens", max_seq_len)
    if p.max_tokens is None:
        p.max_tokens = 16  # OpenAI's default for completions
    prompt = body.get("prompt")
    ok = isinstance(prompt, str) or (
        isinstance(prompt, list)
        and prompt
        and (
            all(isinstance(x, str) for x in prompt)
            or all(_is_int(x) for x in prompt)
            or all(isinstance(x, list) and x and all(_is_int(t) for t in x) for x in prompt)
        )
    )
    if not ok:
        raise RequestError(
            "Invalid value for 'prompt': a string, a list of strings, a list of token ids or a list "
            "of lists of token ids (non-empty).",
            "prompt",
            "invalid_value",
        )
    if isinstance(prompt, list) and len(prompt) > 64 and not _is_int(prompt[0]):
        raise RequestError(
            "Invalid value for 'prompt': at most 64 prompts per request.", "prompt", "invalid_value"
        )
    p.prompt = prompt
    lp = _opt(body, "logprobs", lambda v: _is_int(v) and 0 <= v <= 20, "an integer from 0 to 20")
    p.logprobs = lp
    p.echo = _opt(body, "echo", lambda v: isinstance(v, bool), "a boolean", False)
    if body.get("suffix") is not None:
        raise RequestError(
            "'suffix' (fill-in-the-middle) is not supported by Llama 3 models.", "suffix", "invalid_value"
        )
    bo = body.get("best_of")
    if bo is not None and bo != p.n:
        raise RequestError(
            "'best_of' must equal 'n' (herd returns every sample).", "best_of", "invalid_value"
        )
    return p


def error_body(
    message: str, type_: str = "invalid_request_error", param: str | None = None, code: str | None = None
) -> dict:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


ERROR_TYPES = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    403: "invalid_request_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    429: "rate_limit_error",
    500: "server_error",
    503: "server_error",
}


__all__ = ["ERROR_TYPES", "Params", "error_body", "parse_chat", "parse_completion"]
