"""The Llama 3.1 chat and tool-use format (paper §4.1 "chat dialog format", §4.3.5 tool use).

Every message is a header, its content, and an end token:

    <|begin_of_text|><|start_header_id|>system<|end_header_id|>\\n\\n{content}<|eot_id|>
    <|start_header_id|>user<|end_header_id|>\\n\\n{content}<|eot_id|>
    <|start_header_id|>assistant<|end_header_id|>\\n\\n<|python_tag|>{tool call}<|eom_id|>
    <|start_header_id|>ipython<|end_header_id|>\\n\\n{tool output}<|eot_id|>
    <|start_header_id|>assistant<|end_header_id|>\\n\\n          <- the open header the model completes

Messages are plain dicts:

    {"role": "system" | "user" | "assistant" | "ipython" | "tool",     ("tool" is written "ipython")
     "content": str (or a list of str / {"type": "text", "text": str}, each encoded separately),
     "tool_calls": [{"tool_name": "brave_search" | ... | "my_function", "arguments": {...}}],  # assistant
     "stop_reason": "end_of_turn" | "end_of_message",     # assistant: <|eot_id|> or <|eom_id|>
     "context": str}                                      # user, optional (RAG), appended after "\\n\\n"

Token ids are identical to `llama_models.llama3.chat_format.ChatFormat` (llama-models 0.3.0;
tests/tokenizer/test_chat_format.py compares them on dialogs with every kind of tool call):
- built-in tool calls are written `brave_search.call(query="...")` (also wolfram_alpha, photogen);
  a code_interpreter call is its code, after `<|python_tag|>`; custom tool calls follow
  `tool_prompt_format`: "json" `{"type": "function", "name": ..., "parameters": {...}}`,
  "function_tag" `<function=name>{...}</function>`, "python_list" `[name(a=1, b="x")]`.
- llama-models 0.3.0 puts `<|python_tag|>` only before a code_interpreter call. Its Llama 3.1
  prompt-format page (llama_models/llama3_1/prompt_format.md) shows it before every tool call;
  `ChatFormat(tok, python_tag="all_tool_calls")` gives that form.

`decode_assistant_message(tokens)` parses model output back into a message, as llama-models'
decode: a custom call (`<function=...>{...}`, a JSON object with "name"/"parameters", or a Python
list of calls), else a built-in `tool.call(query="...")`, else code after `<|python_tag|>`; the
stop reason comes from the final `<|eot_id|>`/`<|eom_id|>`. (Malformed calls that crash
llama-models, e.g. JSON without "parameters", are returned as plain content here.)

For post-training masks, `encode_dialog_with_roles(messages)` returns an `EncodedDialog`: the
same tokens plus, per token, the role of its message, which part it is ("begin", "header",
"content", "end") and the message index; `.assistant_mask()` marks assistant content and its
<|eot_id|>/<|eom_id|> (what SFT trains on, §4.1.2), never headers, and never other roles.

System-prompt builders (the text llama-models' templates render): `system_prompt(builtin_tools,
...)` for "Environment: ipython / Tools: ... / Cutting Knowledge Date / Today Date", and
`custom_tools_prompt(tools, format)` for custom tool definitions (JSON, <function> tag or the
Llama 3.2 Python-list system prompt). Tool definitions are dicts: {"tool_name", "description",
"parameters": {name: {"param_type", "description", "required" (True), "default" (None)}}}.
"""

from __future__ import annotations

import ast
import datetime as _dt
import json
import re
import uuid
from dataclasses import dataclass, field
from typing import Any, Sequence

from herd.errors import HerdError
from herd.tokenizer.tokenizer import Tokenizer

ROLES = ("system", "user", "assistant", "ipython", "tool")
BUILTIN_TOOLS = ("brave_search", "wolfram_alpha", "photogen", "code_interpreter")
TOOL_PROMPT_FORMATS = ("json", "function_tag", "python_list")
STOP_REASONS = ("end_of_turn", "end_of_message", "out_of_tokens")
KNOWLEDGE_CUTOFF = "December 2023"

BUILTIN_TOOL_PATTERN = re.compile(r'\b(?P<tool_name>\w+)\.call\(query="(?P<query>[^"]*)"\)')
CUSTOM_TOOL_CALL_PATTERN = re.compile(r"<function=(?P<function_name>[^}]+)>(?P<args>{.*?})")


# ---- tool calls as text ---------------------------------------------------------------------------------
def _python_value(v: Any) -> str:
    if isinstance(v, str):
        return f'"{v}"'
    if isinstance(v, (int, float, bool)) or v is None:
        return str(v)
    if isinstance(v, list):
        return f"[{', '.join(_python_value(x) for x in v)}]"
    if isinstance(v, dict):
        return f"{{{', '.join(f'{k}={_python_value(x)}' for k, x in v.items())}}}"
    raise HerdError(f"tool call argument of type {type(v).__name__} cannot be written in python_list format")


def encode_tool_call(call: dict, tool_prompt_format: str = "json") -> str:
    """The text of one assistant tool call (llama-models' ToolUtils.encode_tool_call)."""
    name, args = call["tool_name"], call.get("arguments", {})
    if name in ("brave_search", "wolfram_alpha", "photogen"):
        if not isinstance(args, dict) or "query" not in args:
            raise HerdError(f"a {name} tool call needs arguments {{\"query\": ...}}, got {args!r}")
        return f'{name}.call(query="{args["query"]}")'
    if name == "code_interpreter":
        if not isinstance(args, dict) or "code" not in args:
            raise HerdError(f"a code_interpreter tool call needs arguments {{\"code\": ...}}, got {args!r}")
        return args["code"]
    if tool_prompt_format == "json":
        return json.dumps({"type": "function", "name": name, "parameters": args})
    if tool_prompt_format == "function_tag":
        return f"<function={name}>{json.dumps(args)}</function>"
    if tool_prompt_format == "python_list":
        if not isinstance(args, dict):
            raise HerdError(f"python_list tool calls need dict arguments, got {args!r}")
        return f"[{name}({', '.join(f'{k}={_python_value(v)}' for k, v in args.items())})]"
    raise HerdError(f"unknown tool_prompt_format {tool_prompt_format!r}; use one of "
                    f"{', '.join(TOOL_PROMPT_FORMATS)}")


def _is_json_object(s: str) -> bool:
    try:
        return isinstance(json.loads(s), dict)
    except json.JSONDecodeError:
        return False


def _python_list_calls(s: str) -> list[tuple[str, dict]] | None:
    """`[f(a=1), g(b="x")]` -> [(f, {a: 1}), (g, {b: "x"})]; None if `s` is not such a list."""
    try:
        tree = ast.parse(s)
    except (SyntaxError, ValueError, RecursionError):
        return None
    if len(tree.body) != 1 or not isinstance(tree.body[0], ast.Expr) \
            or not isinstance(tree.body[0].value, ast.List):
        return None
    calls = tree.body[0].value.elts
    if not calls:
        return None
    out = []
    for c in calls:
        if not isinstance(c, ast.Call) or not isinstance(c.func, ast.Name) or c.args:
            return None
        try:
            out.append((c.func.id, {k.arg: ast.literal_eval(k.value) for k in c.keywords}))
        except (ValueError, SyntaxError, TypeError):
            return None
    return out


def extract_custom_tool_call(body: str) -> tuple[str, Any] | None:
    """llama-models' maybe_extract_custom_tool_call: <function=...>{...}, a JSON object naming a
    function, or a Python list of calls (the first call, as llama-models)."""
    m = CUSTOM_TOOL_CALL_PATTERN.search(body)
    if m:
        try:
            return m.group("function_name"), json.loads(m.group("args").replace("'", '"'))
        except json.JSONDecodeError:
            return None
    if _is_json_object(body):
        obj = json.loads(body)
        if obj.get("type") == "function" or "name" in obj:
            if "name" not in obj or "parameters" not in obj:
                return None
            return obj["name"], obj["parameters"]
        return None
    calls = _python_list_calls(body)
    return calls[0] if calls else None


def extract_builtin_tool_call(body: str) -> tuple[str, str] | None:
    m = BUILTIN_TOOL_PATTERN.search(body)
    return (m.group("tool_name"), m.group("query")) if m else None


# ---- messages -------------------------------------------------------------------------------------------
def _content_items(content: Any, where: str) -> list[str]:
    if isinstance(content, str):
        return [content]
    if isinstance(content, dict):
        content = [content]
    if isinstance(content, list):
        items = []
        for c in content:
            if isinstance(c, str):
                items.append(c)
            elif isinstance(c, dict) and c.get("type", "text") == "text" and isinstance(c.get("text"), str):
                items.append(c["text"])
            else:
                raise HerdError(f"{where}: content items must be text "
                                f"(str or {{\"type\": \"text\", \"text\": ...}}); "
                                f"got {str(c)[:60]!r} (images are not supported by herd's text models)")
        return items
    raise HerdError(f"{where}: content must be a string or a list of text items, got "
                    f"{type(content).__name__}")


def _check_message(m: Any, i: int) -> None:
    where = f"message {i}"
    if not isinstance(m, dict):
        raise HerdError(f"{where}: a message is a dict with \"role\" and \"content\", got {type(m).__name__}")
    role = m.get("role")
    if role not in ROLES:
        raise HerdError(f"{where}: role {role!r} is not one of {', '.join(ROLES)}")
    if "content" not in m:
        raise HerdError(f"{where}: no \"content\" (use \"\" for an assistant message that only calls tools)")
    calls = m.get("tool_calls") or []
    if calls and role != "assistant":
        raise HerdError(f"{where}: only assistant messages carry tool_calls (role is {role!r})")
    for c in calls:
        if not isinstance(c, dict) or not isinstance(c.get("tool_name"), str):
            raise HerdError(f"{where}: a tool call is a dict with \"tool_name\" (str) and \"arguments\", got "
                            f"{c!r}")
    sr = m.get("stop_reason")
    if sr is not None and sr not in STOP_REASONS:
        raise HerdError(f"{where}: stop_reason {sr!r} is not one of {', '.join(STOP_REASONS)}")


@dataclass
class EncodedDialog:
    """Tokens of a dialog and, per token, where it comes from (for loss masks in post-training).

    roles[i]: "system" | "user" | "assistant" | "ipython" of the message token i belongs to, or
              "" for <|begin_of_text|> and the trailing open assistant header (generation prompt).
    parts[i]: "begin" (<|begin_of_text|>), "header" (<|start_header_id|>role<|end_header_id|>\\n\\n),
              "content" (text, <|python_tag|>, tool calls) or "end" (<|eot_id|> / <|eom_id|>).
    message_ids[i]: index of the message in the input list, -1 for "begin" and the open header.
    """

    tokens: list[int] = field(default_factory=list)
    roles: list[str] = field(default_factory=list)
    parts: list[str] = field(default_factory=list)
    message_ids: list[int] = field(default_factory=list)

    def add(self, tokens: Sequence[int], role: str, part: str, message_id: int) -> None:
        self.tokens.extend(tokens)
        self.roles.extend([role] * len(tokens))
        self.parts.extend([part] * len(tokens))
        self.message_ids.extend([message_id] * len(tokens))

    def assistant_mask(self, include_end: bool = True) -> list[bool]:
        """True where SFT computes the loss: assistant content, plus its <|eot_id|>/<|eom_id|>
        (so the model learns to stop) unless include_end=False."""
        keep = ("content", "end") if include_end else ("content",)
        return [r == "assistant" and p in keep for r, p in zip(self.roles, self.parts)]

    def __len__(self) -> int:
        return len(self.tokens)


class ChatFormat:
    """Encode dialogs and decode assistant output in the Llama 3.1 format, with herd's Tokenizer."""

    def __init__(self, tokenizer: Tokenizer, python_tag: str = "code_interpreter"):
        if python_tag not in ("code_interpreter", "all_tool_calls"):
            raise HerdError(f"python_tag must be 'code_interpreter' or 'all_tool_calls', got {python_tag!r}")
        self.tokenizer = tokenizer
        self.python_tag = python_tag
        st = tokenizer.special_tokens
        self.begin_id = st["<|begin_of_text|>"]
        self.start_header_id = st["<|start_header_id|>"]
        self.end_header_id = st["<|end_header_id|>"]
        self.eot_id = st["<|eot_id|>"]
        self.eom_id = st["<|eom_id|>"]
        self.python_tag_id = st["<|python_tag|>"]
        self._newlines = tokenizer.encode("\n\n")

    def _encode(self, s: str) -> list[int]:
        return self.tokenizer.encode(s)

    def encode_header(self, role: str) -> list[int]:
        return ([self.start_header_id] + self._encode("ipython" if role == "tool" else role)
                + [self.end_header_id] + self._newlines)

    def _message_parts(self, message: dict, tool_prompt_format: str,
                       index: int = 0) -> list[tuple[str, list[int]]]:
        _check_message(message, index)
        if tool_prompt_format not in TOOL_PROMPT_FORMATS:
            raise HerdError(f"unknown tool_prompt_format {tool_prompt_format!r}; use one of "
                            f"{', '.join(TOOL_PROMPT_FORMATS)}")
        role = message["role"]
        calls = message.get("tool_calls") or []
        content: list[int] = []
        if role == "assistant" and calls and (calls[0]["tool_name"] == "code_interpreter"
                                               or self.python_tag == "all_tool_calls"):
            content.append(self.python_tag_id)
        for text in _content_items(message["content"], f"message {index}"):
            content += self._encode(text)
        if role == "user" and message.get("context") is not None:
            content += self._encode("\n\n")
            for text in _content_items(message["context"], f"message {index} context"):
                content += self._encode(text)
        for c in calls:
            content += self._encode(encode_tool_call(c, tool_prompt_format))
        eom = role == "assistant" and message.get("stop_reason") == "end_of_message"
        return [("header", self.encode_header(role)), ("content", content),
                ("end", [self.eom_id if eom else self.eot_id])]

    def encode_message(self, message: dict, tool_prompt_format: str = "json") -> list[int]:
        return [t for _, toks in self._message_parts(message, tool_prompt_format) for t in toks]

    def encode_dialog_prompt(self, messages: Sequence[dict], tool_prompt_format: str = "json") -> list[int]:
        """<|begin_of_text|>, every message, then an open assistant header for the model to complete."""
        return self.encode_dialog_with_roles(messages, tool_prompt_format, add_generation_prompt=True).tokens

    def encode_dialog_with_roles(self, messages: Sequence[dict], tool_prompt_format: str = "json",
                                 add_generation_prompt: bool = False) -> EncodedDialog:
        """Tokens of <|begin_of_text|> + messages (+ the open assistant header if
        add_generation_prompt, which makes the tokens equal `encode_dialog_prompt`), with the role,
        part and message index of every token. See `EncodedDialog`."""
        if isinstance(messages, dict) or not isinstance(messages, Sequence):
            raise HerdError("a dialog is a list of messages (dicts with \"role\" and \"content\")")
        out = EncodedDialog()
        out.add([self.begin_id], "", "begin", -1)
        for i, m in enumerate(messages):
            parts = self._message_parts(m, tool_prompt_format, i)
            role = "ipython" if m["role"] == "tool" else m["role"]
            for part, toks in parts:
                out.add(toks, role, part, i)
        if add_generation_prompt:
            out.add(self.encode_header("assistant"), "", "header", -1)
        return out

    # ---- decoding -------------------------------------------------------------------------------------
    def decode_assistant_message(self, tokens: Sequence[int], stop_reason: str | None = None) -> dict:
        """Model output (optionally starting with the assistant header, ending with <|eot_id|> or
        <|eom_id|>) -> {"role": "assistant", "content", "stop_reason", "tool_calls"}. Without an
        end token the stop reason is `stop_reason` (default "out_of_tokens")."""
        return self.decode_assistant_message_from_content(self.tokenizer.decode(tokens), stop_reason)

    def decode_assistant_message_from_content(self, content: str, stop_reason: str | None = None) -> dict:
        stop_reason = stop_reason or "out_of_tokens"
        content = content.strip(" ")
        header = "<|start_header_id|>assistant<|end_header_id|>\n\n"
        if content.startswith(header):
            content = content[len(header):]
        ipython = content.startswith("<|python_tag|>")
        if ipython:
            content = content[len("<|python_tag|>"):]
        if content.endswith("<|eot_id|>"):
            content, stop_reason = content[:-len("<|eot_id|>")], "end_of_turn"
        elif content.endswith("<|eom_id|>"):
            content, stop_reason = content[:-len("<|eom_id|>")], "end_of_message"

        name, args = None, {}
        custom = extract_custom_tool_call(content)
        if custom is not None:
            name, args = custom
            # A built-in tool called in a custom format: its first argument is the query.
            if name in BUILTIN_TOOLS and isinstance(args, dict) and args:
                args = {"query": list(args.values())[0]}
        else:
            builtin = extract_builtin_tool_call(content)
            if builtin is not None:
                name, args = builtin[0], {"query": builtin[1]}
            elif ipython:
                name, args = "code_interpreter", {"code": content}
        calls = []
        if name is not None and args is not None:
            calls.append({"call_id": str(uuid.uuid4()), "tool_name": name, "arguments": args})
            content = ""
        return {"role": "assistant", "content": content, "stop_reason": stop_reason, "tool_calls": calls}


# ---- system prompts -----------------------------------------------------------------------------------
def _today(today: str | _dt.date | None) -> str:
    if today is None:
        today = _dt.date.today()
    return today.strftime("%d %B %Y") if isinstance(today, (_dt.date, _dt.datetime)) else str(today)


def system_prompt(builtin_tools: Sequence[str] = (), *, custom_tools: bool = False,
                  instructions: str | None = None,
                  today: str | _dt.date | None = None, knowledge_cutoff: str = KNOWLEDGE_CUTOFF) -> str:
    """The recommended Llama 3.1 system message. With tools it starts with "Environment: ipython"
    (which also turns on the code interpreter), then "Tools: brave_search, wolfram_alpha" for the
    listed built-in tools other than code_interpreter; then the knowledge cutoff and today's date
    ("21 September 2024"), then `instructions`. Custom tools are described in a user message
    (`custom_tools_prompt`); pass custom_tools=True so the environment line is there."""
    for t in builtin_tools:
        if t not in BUILTIN_TOOLS:
            raise HerdError(f"unknown built-in tool {t!r}; built-in tools are {', '.join(BUILTIN_TOOLS)}")
    s = ""
    if builtin_tools or custom_tools:
        s = "Environment: ipython\n"
        shown = [t for t in builtin_tools if t != "code_interpreter"]
        if shown:
            s += "Tools: " + ", ".join(shown).strip()
        s += "\n"
    s += f"Cutting Knowledge Date: {knowledge_cutoff}\nToday Date: {_today(today)}"
    if instructions:
        s += "\n\n" + instructions
    return s + "\n"


def _tojson(v: Any) -> str:
    """Jinja's `tojson` filter (sorted keys, HTML-safe), which llama-models' templates use."""
    s = json.dumps(v, sort_keys=True)
    return s.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026").replace("'", "\\u0027")


def _tool_defs(tools: Sequence[dict]) -> list[dict]:
    out = []
    for t in tools:
        if not isinstance(t, dict) or not isinstance(t.get("tool_name"), str):
            raise HerdError("a tool definition is a dict with \"tool_name\", \"description\", "
                            f"\"parameters\"; got {t!r}")
        params = {}
        for name, p in (t.get("parameters") or {}).items():
            if not isinstance(p, dict) or "param_type" not in p:
                raise HerdError(f"tool {t['tool_name']}: parameter {name!r} needs a \"param_type\"")
            params[name] = {"param_type": p["param_type"], "description": p.get("description"),
                            "required": p.get("required", True), "default": p.get("default")}
        out.append({"tool_name": t["tool_name"], "description": t.get("description"), "parameters": params})
    return out


def custom_tools_prompt(tools: Sequence[dict], tool_prompt_format: str = "json") -> str:
    """Text describing custom tools, as llama-models' generators render it: "json" and
    "function_tag" (Llama 3.1) go in a user message; "python_list" (Llama 3.2) is a whole
    system prompt."""
    defs = _tool_defs(tools)
    if tool_prompt_format == "json":
        s = ("Answer the user's question by making use of the following functions if needed.\n"
             "If none of the function can be used, please say so.\n"
             "Here is a list of functions in JSON format:\n")
        for t in defs:
            required = [n for n, p in t["parameters"].items() if p["required"] is True]
            props = ",".join(
                "\n                {\n"
                f'                    "{n}": {{\n'
                '                        "type": "object",\n'
                f'                        "description": "{p["description"]}"\n'
                "                    }\n"
                "                }" for n, p in t["parameters"].items())
            s += ("{\n"
                  '    "type": "function",\n'
                  '    "function": {\n'
                  f'        "name": "{t["tool_name"]}",\n'
                  f'        "description": "{t["description"]}",\n'
                  '        "parameters": {\n'
                  '            "type": "object",\n'
                  f'            "properties": [{props}\n'
                  "            ],\n"
                  f'            "required": {_tojson(required)}\n'
                  "        }\n"
                  "    }\n"
                  "}\n")
        return s + "\nReturn function calls in JSON format."
    if tool_prompt_format == "function_tag":
        s = "You have access to the following functions:\n\n"
        for t in defs:
            params = {n: {k: v for k, v in p.items() if k != "default"} for n, p in t["parameters"].items()}
            s += (f"Use the function '{t['tool_name']}' to '{t['description']}':\n"
                  f'{{"name": "{t["tool_name"]}", "description": "{t["description"]}", '
                  f'"parameters": {_tojson(params)}}}\n\n')
        return s + (
            "Think very carefully before calling functions.\n"
            "If you choose to call a function ONLY reply in the following format with no prefix or "
            "suffix:\n\n"
            '<function=example_function_name>{"example_name": "example_value"}</function>\n\n'
            "Reminder:\n"
            "- If looking for real time information use relevant functions before falling back to "
            "brave_search\n"
            "- Function calls MUST follow the specified format, start with <function= and end with "
            "</function>\n"
            "- Required parameters MUST be specified\n"
            "- Only call one function at a time\n"
            "- Put the entire function call reply on one line")
    if tool_prompt_format == "python_list":
        blocks = []
        for t in defs:
            required = [n for n, p in t["parameters"].items() if p["required"] is True]
            props = ",".join(
                f'\n                "{n}": {{\n'
                f'                    "type": "{p["param_type"]}",\n'
                f'                    "description": "{p["description"]}"'
                + (f',\n                    "default": "{p["default"]}"' if p["default"] else "")
                + "\n                }" for n, p in t["parameters"].items())
            blocks.append("{\n"
                          f'        "name": "{t["tool_name"]}",\n'
                          f'        "description": "{t["description"]}",\n'
                          '        "parameters": {\n'
                          '            "type": "dict",\n'
                          f'            "required": {_tojson(required)},\n'
                          f'            "properties": {{{props}\n'
                          "            }\n"
                          "        }\n"
                          "    }")
        return (
            "You are an expert in composing functions. You are given a question and a set of possible "
            "functions.\n"
            "Based on the question, you will need to make one or more function/tool calls to achieve the "
            "purpose.\n"
            "If none of the function can be used, point it out. If the given question lacks the parameters "
            "required by the function,\nalso point it out. You should only return the function call in tools "
            "call sections.\n\n"
            "If you decide to invoke any of the function(s), you MUST put it in the format of "
            "[func_name1(params_name1=params_value1, params_name2=params_value2...), func_name2(params)]\n"
            "You SHOULD NOT include any other text in the response.\n\n"
            "Here is a list of functions in JSON format that you can invoke.\n\n"
            "[\n    " + ",\n    ".join(blocks) + "\n]")
    raise HerdError(f"unknown tool_prompt_format {tool_prompt_format!r}; use one of "
                    f"{', '.join(TOOL_PROMPT_FORMATS)}")


__all__ = ["ChatFormat", "EncodedDialog", "encode_tool_call", "extract_custom_tool_call",
           "extract_builtin_tool_call", "system_prompt", "custom_tools_prompt", "ROLES", "BUILTIN_TOOLS",
           "TOOL_PROMPT_FORMATS"]
