"""`herd chat --tools`: the tool-use loop in the interactive chat, with the tiny model trained in the
fixture: its code-interpreter call runs in herd's sandbox and the answer uses the output."""

import io

from serve_util import TODAY

from herd.inference.cli import Chat, chat_loop
from herd.inference.engine import Generator
from herd.serve.tools import ToolRunner


def test_chat_tools_runs_the_code_and_answers(trained):
    _, model, tok = trained
    out = []
    chat = Chat(
        Generator(model, tok, max_batch=1),
        tok,
        write=out.append,
        tools=(ToolRunner(), ["code_interpreter"]),
        today=TODAY,
        max_new_tokens=60,
        temperature=0.0,
    )
    lines = iter(["What is 6 times 7? Use Python.", "/exit"])
    assert chat_loop(chat, read=lambda prompt: next(lines)) == 0
    text = "".join(out)
    assert '[tool call] code_interpreter({"code": "print(6*7)"})' in text
    assert "[tool output] [passed]\n[stdout]\n42\n[/stdout]" in text
    assert "[answer it with /tool TEXT]" not in text
    assert [m["role"] for m in chat.messages] == ["system", "user", "assistant", "ipython", "assistant"]
    assert chat.messages[0]["content"].startswith("Environment: ipython\n")
    assert chat.messages[-1]["content"] == "The code printed 42, so 6 times 7 is 42."


def test_chat_tools_cli_flag(trained, monkeypatch, capsys):
    from herd.cli import main

    path, _, _ = trained
    monkeypatch.setattr("sys.stdin", io.StringIO(""))  # Ctrl-D at once
    assert main(["chat", str(path), "--tools", "code_interpreter,wolfram_alpha", "--temperature", "0"]) == 0
    assert main(["chat", str(path), "--tools", "photoshop"]) == 2
    assert "unknown tool 'photoshop'" in capsys.readouterr().err
