"""Tool use, Llama 3.1 style (paper §4.3.5), for `herd serve` and `herd chat --tools`.

OpenAI request -> Llama 3.1 prompt (llama-models' prompt_format.md, "JSON based tool calling"):
- `tools` naming `code_interpreter`, `brave_search` or `wolfram_alpha` turn on those built-in tools
  (system prompt "Environment: ipython" / "Tools: brave_search, wolfram_alpha"); other functions are
  custom tools, described in a user message (ChatFormat's `custom_tools_prompt`, JSON format) put
  before the first user message; the client's system message follows the environment lines;
- an assistant message's `tool_calls` become herd tool calls (after <|python_tag|>, ending
  <|eom_id|>), and `role: "tool"` messages become ipython messages.

Model output -> OpenAI: `<|python_tag|>{"name", "parameters"}`, `<function=name>{...}</function>`,
`brave_search.call(query="...")` or code after <|python_tag|> are parsed by ChatFormat's
`decode_assistant_message` into `tool_calls` ({"id", "type": "function", "function": {"name",
"arguments" (a JSON string)}}); a code-interpreter call is the function `code_interpreter` with
arguments {"code": ...}.

The tool-use loop: `ToolRunner` executes built-in calls (code in herd's eval sandbox: namespaces,
rlimits, no network, a time limit; search and wolfram through pluggable callables, whose offline
defaults are a local stub and a local calculator), and `run_tool_loop` feeds each output back as an
ipython message until the model ends its turn with <|eot_id|>, at most `max_iterations` tool calls.
"""

from __future__ import annotations

import ast
import importlib
import json
import math
import operator
import uuid
from collections.abc import Callable

from herd.errors import HerdError
from herd.tokenizer.chat_format import BUILTIN_TOOLS, custom_tools_prompt, system_prompt

EXECUTABLE = ("code_interpreter", "brave_search", "wolfram_alpha")


class RequestError(HerdError):
    """A bad request: the message, and the request field it is about (OpenAI's `param`)."""

    def __init__(self, message: str, param: str | None = None, code: str | None = None, status: int = 400):
        super().__init__(message)
        self.param, self.code, self.status = param, code, status


# ---- OpenAI -> herd ---------------------------------------------------------------------------------
def _text(content, where: str, allow_none=False) -> str:
    if content is None and allow_none:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        out = []
        for j, part in enumerate(content):
            if isinstance(part, str):
                out.append(part)
            elif isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str):
                out.append(part["text"])
            elif isinstance(part, dict) and part.get("type") in ("image_url", "input_audio", "file"):
                raise RequestError(
                    f"{where}[{j}]: content of type {part['type']!r} is not supported by this "
                    "text model; send text parts only",
                    f"{where}[{j}]",
                )
            else:
                raise RequestError(
                    f'{where}[{j}]: a content part is {{"type": "text", "text": "..."}}', f"{where}[{j}]"
                )
        return "".join(out)
    raise RequestError(
        f"{where}: content must be a string or a list of text parts, got {type(content).__name__}", where
    )


def parse_tools(tools, tool_choice="auto") -> tuple[list[str], list[dict]]:
    """OpenAI `tools` -> (built-in tool names, herd custom tool definitions)."""
    if tools is None:
        return [], []
    if not isinstance(tools, list):
        raise RequestError('tools must be a list of {"type": "function", "function": {...}}', "tools")
    builtin, custom = [], []
    for i, t in enumerate(tools):
        where = f"tools[{i}]"
        if not isinstance(t, dict) or t.get("type") != "function" or not isinstance(t.get("function"), dict):
            raise RequestError(
                f'{where}: a tool is {{"type": "function", "function": {{"name": ...}}}}', where
            )
        f = t["function"]
        name = f.get("name")
        if (
            not isinstance(name, str)
            or not name
            or len(name) > 64
            or not all(c.isalnum() or c in "_-" for c in name)
        ):
            raise RequestError(
                f"{where}.function.name must be 1-64 letters, digits, '_' or '-', got {name!r}",
                f"{where}.function.name",
            )
        desc = f.get("description", "")
        if desc is not None and not isinstance(desc, str):
            raise RequestError(
                f"{where}.function.description must be a string", f"{where}.function.description"
            )
        if name in BUILTIN_TOOLS:
            if name not in builtin:
                builtin.append(name)
            continue
        params = f.get("parameters") or {}
        if not isinstance(params, dict):
            raise RequestError(
                f"{where}.function.parameters must be a JSON Schema object", f"{where}.function.parameters"
            )
        props = params.get("properties") or {}
        required = params.get("required") or []
        if not isinstance(props, dict) or not isinstance(required, list):
            raise RequestError(
                f'{where}.function.parameters needs "properties" (an object) and "required" (a list)',
                f"{where}.function.parameters",
            )
        defs = {}
        for pname, spec in props.items():
            spec = spec if isinstance(spec, dict) else {}
            defs[pname] = {
                "param_type": spec.get("type", "string"),
                "description": spec.get("description", ""),
                "required": pname in required,
                "default": spec.get("default"),
            }
        custom.append({"tool_name": name, "description": desc or "", "parameters": defs})
    if tool_choice == "none":
        return [], []
    return builtin, custom


def convert_messages(messages, tools=None, tool_choice="auto", builtin_tools=(), today=None) -> list[dict]:
    """OpenAI `messages` (+ `tools`) -> herd ChatFormat messages, as module docstring says."""
    if not isinstance(messages, list) or not messages:
        raise RequestError("messages must be a non-empty list", "messages")
    builtin, custom = parse_tools(tools, tool_choice)
    for b in builtin_tools:
        if b not in builtin:
            builtin.append(b)
    out: list[dict] = []
    system = None
    for i, m in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(m, dict):
            raise RequestError(f'{where} must be an object with "role" and "content"', where)
        role = m.get("role")
        if role not in ("system", "developer", "user", "assistant", "tool", "ipython"):
            raise RequestError(
                f"{where}.role {role!r} is not one of system, developer, user, assistant, tool",
                f"{where}.role",
            )
        if role == "assistant":
            calls = m.get("tool_calls")
            if calls is None or calls == []:
                if "content" not in m or m.get("content") is None:
                    raise RequestError(
                        f"{where}: an assistant message needs content or tool_calls", f"{where}.content"
                    )
                out.append({"role": "assistant", "content": _text(m["content"], f"{where}.content")})
                continue
            if not isinstance(calls, list):
                raise RequestError(f"{where}.tool_calls must be a list", f"{where}.tool_calls")
            herd_calls = []
            for j, c in enumerate(calls):
                cw = f"{where}.tool_calls[{j}]"
                fn = c.get("function") if isinstance(c, dict) else None
                if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
                    raise RequestError(
                        f'{cw}: a tool call is {{"id", "type": "function", "function": '
                        '{"name", "arguments"}}',
                        cw,
                    )
                args = fn.get("arguments", "{}")
                if isinstance(args, str):
                    try:
                        args = json.loads(args) if args.strip() else {}
                    except ValueError:
                        raise RequestError(
                            f"{cw}.function.arguments is not valid JSON", f"{cw}.function.arguments"
                        ) from None
                if not isinstance(args, dict):
                    raise RequestError(
                        f"{cw}.function.arguments must be a JSON object", f"{cw}.function.arguments"
                    )
                if fn["name"] == "code_interpreter" and not isinstance(args.get("code"), str):
                    raise RequestError(
                        f'{cw}: a code_interpreter call needs arguments {{"code": "..."}}',
                        f"{cw}.function.arguments",
                    )
                if fn["name"] in ("brave_search", "wolfram_alpha", "photogen") and not isinstance(
                    args.get("query"), str
                ):
                    raise RequestError(
                        f'{cw}: a {fn["name"]} call needs arguments {{"query": "..."}}',
                        f"{cw}.function.arguments",
                    )
                herd_calls.append({"tool_name": fn["name"], "arguments": args})
            out.append(
                {
                    "role": "assistant",
                    "content": _text(m.get("content"), f"{where}.content", allow_none=True),
                    "tool_calls": herd_calls,
                    "stop_reason": "end_of_message",
                }
            )
            continue
        if "content" not in m:
            raise RequestError(f'{where}: no "content"', f"{where}.content")
        text = _text(m["content"], f"{where}.content")
        if role in ("system", "developer"):
            if system is None and not out:
                system = text
                continue
            out.append({"role": "system", "content": text})
        elif role in ("tool", "ipython"):
            out.append({"role": "ipython", "content": text})
        else:
            out.append({"role": "user", "content": text})
    if builtin or custom:
        head = [
            {
                "role": "system",
                "content": system_prompt(
                    builtin, custom_tools=bool(custom), instructions=system, today=today
                ),
            }
        ]
        if custom:  # the tool definitions: a user message before the first user message
            k = next((j for j, m in enumerate(out) if m["role"] == "user"), len(out))
            out.insert(k, {"role": "user", "content": custom_tools_prompt(custom, "json")})
        return head + out
    return ([{"role": "system", "content": system}] if system is not None else []) + out


# ---- herd -> OpenAI ---------------------------------------------------------------------------------
def openai_tool_calls(calls: list[dict]) -> list[dict]:
    return [
        {
            "id": "call_" + (c.get("call_id") or uuid.uuid4().hex).replace("-", "")[:24],
            "type": "function",
            "function": {"name": c["tool_name"], "arguments": json.dumps(c["arguments"], ensure_ascii=False)},
        }
        for c in calls
    ]


# ---- executing built-in tools --------------------------------------------------------------------------
_OPS = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
    ast.USub: operator.neg,
    ast.UAdd: operator.pos,
}
_FUNCS = {
    n: getattr(math, n)
    for n in (
        "sqrt",
        "exp",
        "log",
        "log10",
        "log2",
        "sin",
        "cos",
        "tan",
        "asin",
        "acos",
        "atan",
        "floor",
        "ceil",
        "factorial",
        "gcd",
    )
}
_CONSTS = {"pi": math.pi, "e": math.e}


def _calc(node):
    if isinstance(node, ast.Expression):
        return _calc(node.body)
    if (
        isinstance(node, ast.Constant)
        and isinstance(node.value, (int, float))
        and not isinstance(node.value, bool)
    ):
        return node.value
    if isinstance(node, ast.Name) and node.id in _CONSTS:
        return _CONSTS[node.id]
    if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
        a, b = _calc(node.left), _calc(node.right)
        if isinstance(node.op, ast.Pow) and abs(b) > 1000:
            raise ValueError("exponent too large")
        return _OPS[type(node.op)](a, b)
    if isinstance(node, ast.UnaryOp) and type(node.op) in _OPS:
        return _OPS[type(node.op)](_calc(node.operand))
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id in _FUNCS
        and not node.keywords
    ):
        return _FUNCS[node.func.id](*[_calc(a) for a in node.args])
    raise ValueError("not an arithmetic expression")


def local_calculator(query: str) -> str:
    """The offline stand-in for wolfram_alpha: evaluates an arithmetic expression (numbers, + - * / //
    % **, sqrt/log/sin/... and pi, e); anything else is reported as not understood."""
    q = query.strip().rstrip("?=").replace("^", "**").replace("×", "*").replace("÷", "/")
    try:
        value = _calc(ast.parse(q, mode="eval"))
    except (SyntaxError, ValueError, TypeError, ZeroDivisionError, OverflowError, RecursionError) as e:
        return json.dumps(
            {
                "query": query,
                "error": f"the offline calculator did not understand this ({e}); "
                "configure a real backend with --wolfram-tool",
            }
        )
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        value = int(value)
    return json.dumps({"query": query, "result": str(value)})


def offline_search(query: str) -> str:
    """The offline stand-in for brave_search: no network, so no results; says how to plug one in."""
    return json.dumps(
        {
            "query": query,
            "top_k": [],
            "note": "offline: no search backend is configured; pass --search-tool module:function",
        }
    )


def format_code_result(res) -> str:
    """A sandbox Result as the ipython message the model reads."""
    parts = [f"[{res.status}]"]
    if res.stdout:
        parts.append("[stdout]\n" + res.stdout.rstrip("\n") + "\n[/stdout]")
    if res.stderr and not res.passed:
        parts.append("[stderr]\n" + res.stderr.rstrip("\n")[-2000:] + "\n[/stderr]")
    return "\n".join(parts)


def load_callable(spec: str) -> Callable[[str], str]:
    """ "module:function" -> the function (a user's search/wolfram backend)."""
    mod, _, fn = spec.partition(":")
    if not mod or not fn:
        raise HerdError(f"a tool backend is given as module:function, got {spec!r}")
    try:
        f = getattr(importlib.import_module(mod), fn)
    except (ImportError, AttributeError) as e:
        raise HerdError(f"cannot load tool backend {spec!r}: {e}") from None
    if not callable(f):
        raise HerdError(f"tool backend {spec!r} is not callable")
    return f


class ToolRunner:
    """Runs built-in tool calls: code_interpreter in the sandbox, search and wolfram through callables."""

    def __init__(
        self,
        search: Callable[[str], str] | None = None,
        wolfram: Callable[[str], str] | None = None,
        code_timeout_s: float = 10.0,
        code_memory_mb: int = 1024,
    ):
        self.search = search or offline_search
        self.wolfram = wolfram or local_calculator
        self.code_timeout_s, self.code_memory_mb = code_timeout_s, code_memory_mb

    def can_run(self, call: dict) -> bool:
        return call.get("tool_name") in EXECUTABLE

    def __call__(self, call: dict) -> str:
        name, args = call["tool_name"], call.get("arguments") or {}
        if name == "code_interpreter":
            from herd.eval.sandbox import run_code

            return format_code_result(
                run_code(
                    str(args.get("code", "")),
                    timeout_s=self.code_timeout_s,
                    memory_mb=self.code_memory_mb,
                    require_end=False,
                )
            )
        query = str(args.get("query", ""))
        try:
            out = self.search(query) if name == "brave_search" else self.wolfram(query)
        except Exception as e:  # noqa: BLE001  (a user's backend failing is the tool's output, not a crash)
            out = json.dumps({"query": query, "error": f"{type(e).__name__}: {e}"})
        return out if isinstance(out, str) else json.dumps(out, ensure_ascii=False)


def run_tool_loop(
    generate: Callable[[list[dict]], dict],
    messages: list[dict],
    runner: ToolRunner,
    max_iterations: int = 5,
    on_tool: Callable[[dict, str], object] | None = None,
) -> list[dict]:
    """Drive a tool-using dialog: `generate(messages) -> assistant message` (herd format: content,
    tool_calls, stop_reason); each built-in call is run by `runner` and its output appended as an
    ipython message, until an answer without an executable call (or `max_iterations` calls).
    Returns the new messages (assistant and ipython ones); `on_tool(call, output)` sees each call."""
    new: list[dict] = []
    for _ in range(max_iterations + 1):
        msg = generate(messages + new)
        new.append(msg)
        calls = [c for c in msg.get("tool_calls") or [] if runner.can_run(c)]
        if not calls or len([m for m in new if m["role"] == "ipython"]) >= max_iterations:
            return new
        for c in calls:
            out = runner(c)
            if on_tool is not None:
                on_tool(c, out)
            new.append({"role": "ipython", "content": out})
    return new


__all__ = [
    "RequestError",
    "ToolRunner",
    "convert_messages",
    "format_code_result",
    "load_callable",
    "local_calculator",
    "offline_search",
    "openai_tool_calls",
    "parse_tools",
    "run_tool_loop",
]
