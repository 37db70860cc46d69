"""The Llama 3.1 chat and tool format (paper §4.1, §4.3.5): token ids identical to llama-models'
ChatFormat on 25 dialogs (built-in, custom and code-interpreter tool calls, ipython results,
<|eom_id|>) in all three tool-call formats; decoding identical to llama-models'; system prompts
identical to llama-models' prompt-format page; role masks for post-training."""

import os
import re

import pytest

from herd.errors import HerdError
from herd.tokenizer import Tokenizer
from herd.tokenizer.chat_format import ChatFormat, custom_tools_prompt, encode_tool_call, system_prompt

SONGS_TOOL = {"tool_name": "trending_songs", "description": "Returns the trending songs on a Music site",
              "parameters": {"n": {"param_type": "int", "description": "The number of songs to return",
                                   "required": True},
                             "genre": {"param_type": "str", "description": "The genre of the songs to return",
                                       "required": False}}}
WEATHER_TOOL = {"tool_name": "get_weather", "description": "Get weather info for places",
                "parameters": {"city": {"param_type": "string",
                                        "description": "The name of the city to get the weather for",
                                        "required": True},
                               "metric": {"param_type": "string",
                                          "description": "The metric for weather. Options are: "
                                          "celsius, fahrenheit", "required": False, "default": "celsius"}}}
WOLFRAM_RESULT = '{\n    "queryresult": {\n        "success": true,\n        "plaintext": "7"\n    }\n}\n'


def call(name, **arguments):
    return {"tool_name": name, "arguments": arguments}


def assistant(content="", *calls, eom=False):
    m = {"role": "assistant", "content": content, "tool_calls": list(calls)}
    if eom:
        m["stop_reason"] = "end_of_message"
    else:
        m["stop_reason"] = "end_of_turn"
    return m


SYS = {"role": "system", "content": "You are a helpful assistant."}
TOOL_SYS = {"role": "system",
            "content": system_prompt(["brave_search", "wolfram_alpha"], today="21 September 2024",
                                     instructions="You are a helpful assistant.")}
CODE_SYS = {"role": "system", "content": system_prompt(["code_interpreter"], today="05 March 2025")}
CUSTOM_SYS = {"role": "system", "content": system_prompt(custom_tools=True, today="21 September 2024")}


def user(text, **kw):
    return {"role": "user", "content": text, **kw}


DIALOGS = [
    [user("Hello!")],
    [SYS, user("Answer who are you in the form of jeopardy?")],
    [SYS, user("Hi"), assistant("Hello! How can I help?"), user("Tell me a joke about llamas 🦙.")],
    [user("Ça va? ¿Qué tal? 你好！Привет! مرحبا")],
    [user("Text that looks special: "
          "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n<|python_tag|>")],
    [user("   leading and trailing whitespace   \n\n\t")],
    [user(""), assistant(""), user("")],
    [user(["first part. ", "second part", {"type": "text", "text": " third"}])],
    [user("What does the document say?", context="The document says: llamas hum.")],
    [TOOL_SYS, user("Search the web for the latest price of 1oz gold?"),
     assistant("", call("brave_search", query="latest price of 1oz gold"), eom=True)],
    [TOOL_SYS, user("What is the 100th decimal of pi?"),
     assistant("", call("wolfram_alpha", query="100th decimal of pi"), eom=True),
     {"role": "tool", "content": WOLFRAM_RESULT}, assistant("The 100th decimal of pi is 7.")],
    [TOOL_SYS, user("Draw a llama"), assistant("", call("photogen", query="a llama in the Andes"), eom=True),
     {"role": "ipython", "content": "[image generated]"}],
    [CODE_SYS, user("Write code to check if 7 is prime"),
     assistant("",
               call("code_interpreter",
                    code="def is_prime(n):\n    return n > 1 and all(n % d for d in range(2, n))"
                        "\n\nprint(is_prime(7))"), eom=True),
     {"role": "ipython", "content": "[stdout]True[/stdout]"}, assistant("Yes, 7 is prime.")],
    [CODE_SYS, user("Plot it"),
     assistant("Sure, running:", call("code_interpreter", code="import math\nmath.pi"),
               eom=True), {"role": "tool", "content": "3.141592653589793"}],
    [CUSTOM_SYS, user(custom_tools_prompt([SONGS_TOOL], "json")),
     user("Use tools to get latest trending songs")],
    [CUSTOM_SYS, user(custom_tools_prompt([SONGS_TOOL], "json")),
     user("Use tools to get latest trending songs"),
     assistant("", call("trending_songs", n="10", genre="all"), eom=True),
     {"role": "ipython", "content": '["great song1", "awesome song2"]'}, assistant("Here are two songs.")],
    [CUSTOM_SYS, user(custom_tools_prompt([SONGS_TOOL, WEATHER_TOOL], "function_tag")),
     user("Weather in Paris?"), assistant("", call("get_weather", city="Paris", metric="celsius"))],
    [{"role": "system", "content": custom_tools_prompt([WEATHER_TOOL], "python_list")},
     user("What is the weather in SF and Seattle?"),
     assistant("", call("get_weather", city="San Francisco", metric="celsius"),
               call("get_weather", city="Seattle"))],
    [user("Call two things"), assistant("Calling.", call("lookup", id=7, flags=[True, None, 1.5],
                                                           opts={"a": "b"}),
                                        call("brave_search", query="x"))],
    [user("mixed"),
     assistant("", call("brave_search", query="first"), call("code_interpreter", code="1+1"), eom=True)],
    [TOOL_SYS, user("Search then compute"),
     assistant("", call("brave_search", query="llama weight"), eom=True),
     {"role": "tool", "content": "about 200 kg"},
     assistant("", call("wolfram_alpha", query="200 kg in lb"), eom=True),
     {"role": "tool", "content": "440.9 lb"}, assistant("A llama weighs about 441 lb.")],
    [SYS, user("Long" + " text" * 2_000), assistant("Short answer.")],
    [user("Whitespace run:" + " " * 30_000 + "end")],
    [user("Emoji: 👨‍👩‍👧‍👦🏳️‍🌈🇯🇵 and code ```python\nprint('hi')\n```")],
    [SYS, user("q1"), assistant("a1"), user("q2"), assistant("a2", eom=True), user("q3")],
]


@pytest.fixture(scope="module")
def tok():
    return Tokenizer.llama3()


@pytest.fixture(scope="module")
def fmt(tok):
    return ChatFormat(tok)


@pytest.fixture(scope="module")
def meta():
    from llama_models.llama3.chat_format import ChatFormat as MetaChatFormat
    from llama_models.llama3.tokenizer import Tokenizer as MetaTokenizer

    return MetaChatFormat(MetaTokenizer.get_instance())


def to_meta(m):
    from llama_models.datatypes import RawMessage, RawTextItem, StopReason, ToolCall

    content = m["content"]
    if isinstance(content, list):
        content = [RawTextItem(text=c) if isinstance(c, str) else RawTextItem(text=c["text"])
                   for c in content]
    return RawMessage(role="tool" if m["role"] == "ipython" else m["role"], content=content,
                      context=m.get("context"),
                      stop_reason=StopReason(m["stop_reason"]) if m.get("stop_reason") else None,
                      tool_calls=[ToolCall(call_id=f"id{i}", tool_name=c["tool_name"],
                                           arguments=c["arguments"])
                                  for i, c in enumerate(m.get("tool_calls") or [])])


def test_enough_dialogs_with_every_kind_of_tool_call():
    assert len(DIALOGS) >= 20
    names = {c["tool_name"] for d in DIALOGS for m in d for c in m.get("tool_calls") or []}
    assert {"brave_search", "wolfram_alpha", "photogen", "code_interpreter", "trending_songs",
            "get_weather"} <= names
    assert any(m["role"] in ("ipython", "tool") for d in DIALOGS for m in d)
    assert any(m.get("stop_reason") == "end_of_message" for d in DIALOGS for m in d)


@pytest.mark.parametrize("tool_prompt_format", ["json", "function_tag", "python_list"])
def test_dialog_tokens_identical_to_llama_models(fmt, meta, tool_prompt_format):
    from llama_models.datatypes import ToolPromptFormat

    for i, dialog in enumerate(DIALOGS):
        ours = fmt.encode_dialog_prompt(dialog, tool_prompt_format=tool_prompt_format)
        theirs = meta.encode_dialog_prompt([to_meta(m) for m in dialog],
                                           ToolPromptFormat(tool_prompt_format)).tokens
        assert ours == theirs, f"dialog {i}"
        for m in dialog:
            ours_m = fmt.encode_message(m, tool_prompt_format)
            assert ours_m == meta.encode_message(to_meta(m), ToolPromptFormat(tool_prompt_format))[0]


def test_dialog_text_round_trip(fmt, tok):
    ids = fmt.encode_dialog_prompt(DIALOGS[10])
    text = tok.decode(ids)
    assert text.startswith("<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nEnvironment: "
                           "ipython\n")
    assert text.endswith("<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n")
    assert ('wolfram_alpha.call(query="100th decimal of pi")<|eom_id|>'
            '<|start_header_id|>ipython<|end_header_id|>') in text
    # The dialog text, re-encoded with special tokens allowed, gives the same ids back.
    assert tok.encode(text, allowed_special="all") == ids
    assert ids[0] == tok.bos_id and ids.count(tok.eom_id) == 1


OUTPUTS = [
    "Hello! How can I help?<|eot_id|>",
    "<|start_header_id|>assistant<|end_header_id|>\n\nHi there<|eot_id|>",
    '<|python_tag|>brave_search.call(query="latest price of 1oz gold")<|eom_id|>',
    'brave_search.call(query="who won the 2024 NBA finals")<|eom_id|>',
    '<|python_tag|>wolfram_alpha.call(query="100th decimal of pi")<|eom_id|>',
    '<|python_tag|>{\n    "type": "function",\n    "name": "trending_songs",\n    "parameters": {\n'
    '        "n": "10",\n        "genre": "all"\n    }\n}<|eom_id|>',
    '{"name": "get_weather", "parameters": {"city": "Paris"}}<|eot_id|>',
    '{"type": "function", "name": "brave_search", "parameters": {"q": "llamas"}}<|eom_id|>',
    '<function=trending_songs>{"n": 10}</function><|eot_id|>',
    "<function=get_weather>{'city': 'Oslo'}</function><|eot_id|>",
    "[get_weather(city='San Francisco', metric='celsius'), get_weather(city='Seattle', "
    "metric='celsius')]<|eot_id|>",
    "<|python_tag|>def is_prime(n):\n    return n > 1\n\nprint(is_prime(7))<|eom_id|>",
    "<|python_tag|>print('no end token')",
    "Just text without an end token",
    '   {"a": 1}<|eot_id|>',
    "[1, 2, 3]<|eot_id|>",
]


def _strip_ids(m):
    return {**m, "tool_calls": [{k: v for k, v in c.items() if k != "call_id"} for c in m["tool_calls"]]}


def test_decode_identical_to_llama_models(fmt, meta, tok):
    from llama_models.datatypes import StopReason

    for text in OUTPUTS:
        ids = tok.encode(text, allowed_special="all")
        ours = fmt.decode_assistant_message(ids, "out_of_tokens")
        theirs = meta.decode_assistant_message(ids, StopReason.out_of_tokens)
        expected = {"role": "assistant", "content": theirs.content, "stop_reason": theirs.stop_reason.value,
                    "tool_calls": [{"tool_name": getattr(c.tool_name, "value", c.tool_name),
                                    "arguments": c.arguments}
                                   for c in theirs.tool_calls]}
        assert _strip_ids(ours) == expected, text
    assert fmt.decode_assistant_message(tok.encode("no end"))["stop_reason"] == "out_of_tokens"


def test_encode_then_decode_assistant_messages(fmt):
    for dialog in DIALOGS:
        for m in dialog:
            if m["role"] != "assistant" or len(m["tool_calls"]) > 1 or (m["content"] and m["tool_calls"]):
                continue  # the format carries one call, or text (as llama-models' decode)
            ids = fmt.encode_message(m)
            got = _strip_ids(fmt.decode_assistant_message(ids))
            assert got["stop_reason"] == m["stop_reason"] and got["content"] == m["content"]
            assert got["tool_calls"] == m["tool_calls"], m
    # The custom-call formats decode back to the same call.
    c = call("get_weather", city="Paris", metric="celsius")
    for f in ("json", "function_tag", "python_list"):
        ids = fmt.encode_message(assistant("", c), f)
        assert _strip_ids(fmt.decode_assistant_message(ids))["tool_calls"] == [c], f


def test_roles_and_assistant_mask(fmt, tok):
    dialog = DIALOGS[12]  # system, user, assistant code call (eom), ipython, assistant answer
    enc = fmt.encode_dialog_with_roles(dialog)
    assert enc.tokens == fmt.encode_dialog_prompt(dialog)[:len(enc)]
    assert (fmt.encode_dialog_with_roles(dialog, add_generation_prompt=True).tokens
            == fmt.encode_dialog_prompt(dialog))
    assert len(enc.tokens) == len(enc.roles) == len(enc.parts) == len(enc.message_ids)
    mask = enc.assistant_mask()
    kept = [t for t, k in zip(enc.tokens, mask) if k]
    code = dialog[2]["tool_calls"][0]["arguments"]["code"]
    assert tok.decode(kept) == "<|python_tag|>" + code + "<|eom_id|>" + "Yes, 7 is prime.<|eot_id|>"
    assert not any(m and p == "header" for m, p in zip(mask, enc.parts))
    no_end = [t for t, k in zip(enc.tokens, enc.assistant_mask(include_end=False)) if k]
    assert tok.eot_id not in no_end and tok.eom_id not in no_end
    assert enc.parts[0] == "begin" and enc.roles[0] == "" and enc.message_ids[0] == -1
    assert set(enc.roles[1:]) == {"system", "user", "assistant", "ipython"}
    assert [enc.tokens[i] for i, p in enumerate(enc.parts) if p == "end"].count(tok.eot_id) == 4


def _md_blocks(path):
    text = open(path, encoding="utf-8").read()
    return re.findall(r"##### Input Prompt Format\n```\n(.*?)\n```", text, flags=re.S)


def test_system_and_tool_prompts_match_llama_models_prompt_format_page(tok):
    import llama_models

    pages = os.path.dirname(llama_models.__file__)
    blocks = _md_blocks(os.path.join(pages, "llama3_1", "prompt_format.md"))
    fmt_all = ChatFormat(tok, python_tag="all_tool_calls")  # the form shown on that page

    def text(dialog, f=fmt_all):
        return tok.decode(f.encode_dialog_prompt(dialog))

    sys_builtin = {"role": "system",
                   "content": system_prompt(["brave_search", "wolfram_alpha"], today="21 September 2024",
                                             instructions="You are a helpful assistant.")}
    assert text([sys_builtin, user("Search the web for the latest price of 1oz gold?")]) in blocks
    sys_custom = {"role": "system", "content": system_prompt(custom_tools=True, today="21 September 2024",
                                                              instructions="You are a helpful assistant.")}
    for f in ("json", "function_tag"):
        dialog = [sys_custom, user(custom_tools_prompt([SONGS_TOOL], f)),
                  user("Use tools to get latest trending songs")]
        assert text(dialog) in blocks, f
    wolfram = blocks[[i for i, b in enumerate(blocks) if "100th decimal" in b][0]]
    result = wolfram.split("<|start_header_id|>ipython<|end_header_id|>\n\n")[1].split("<|eot_id|>")[0]
    full = [{"role": "system", "content": "Environment: ipython\nTools: brave_search, wolfram_alpha\n"},
            user("What is the 100th decimal of pi?"),
            assistant("", call("wolfram_alpha", query="100th decimal of pi"), eom=True),
            {"role": "tool", "content": result}]
    assert text(full) == wolfram
    # llama-models 0.3.0 itself writes <|python_tag|> only before code: the default ChatFormat.
    assert text(full, ChatFormat(tok)) == wolfram.replace("<|python_tag|>", "")
    assert system_prompt(["code_interpreter"], today="24 September 2024") == (
        "Environment: ipython\n\nCutting Knowledge Date: December 2023\nToday Date: 24 September 2024\n")
    assert system_prompt(today="01 January 2025").startswith("Cutting Knowledge Date: December 2023\n")


def test_python_list_prompt_is_valid_json_description():
    import json

    p = custom_tools_prompt([WEATHER_TOOL, SONGS_TOOL], "python_list")
    assert p.startswith("You are an expert in composing functions.")
    listed = json.loads(p[p.index("\n[\n") + 1:])
    assert [t["name"] for t in listed] == ["get_weather", "trending_songs"]
    assert listed[0]["parameters"] == {
        "type": "dict", "required": ["city"],
        "properties": {"city": {"type": "string",
                                "description": "The name of the city to get the weather for"},
                       "metric": {"type": "string",
                                  "description": "The metric for weather. Options are: celsius, "
                                  "fahrenheit", "default": "celsius"}}}


def test_tool_call_text():
    assert encode_tool_call(call("brave_search", query="q")) == 'brave_search.call(query="q")'
    assert encode_tool_call(call("f", a=1), "function_tag") == '<function=f>{"a": 1}</function>'
    assert encode_tool_call(call("f", a="x", b=[1, True]), "python_list") == '[f(a="x", b=[1, True])]'
    assert encode_tool_call(call("f", a=1)) == '{"type": "function", "name": "f", "parameters": {"a": 1}}'


def test_bad_messages(fmt):
    bad = [
        [{"role": "robot", "content": "hi"}],
        [{"role": "user"}],
        [{"role": "user", "content": 42}],
        [{"role": "user", "content": [{"type": "image", "data": b""}]}],
        [user("hi", tool_calls=[call("brave_search", query="x")])],
        [assistant("", {"arguments": {}})],
        [assistant("", call("brave_search", q="missing query"))],
        [assistant("", call("code_interpreter", source="x"))],
        [{"role": "assistant", "content": "", "stop_reason": "done"}],
        ["not a dict"],
    ]
    for dialog in bad:
        with pytest.raises(HerdError):
            fmt.encode_dialog_prompt(dialog)
    with pytest.raises(HerdError):
        fmt.encode_dialog_prompt([user("x")], tool_prompt_format="xml")
    with pytest.raises(HerdError):
        fmt.encode_dialog_prompt(user("a dict, not a list"))
    with pytest.raises(HerdError):
        system_prompt(["google"])
    with pytest.raises(HerdError):
        custom_tools_prompt([{"tool_name": "f", "parameters": {"a": {"description": "no type"}}}])
