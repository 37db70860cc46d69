"""`herd generate` and `herd chat`: prompts from flags and files, JSONL out with resume, chat
format, quantization and a draft model from the command line, the interactive chat (history,
/reset, Ctrl-C, tool calls), and one-line errors for bad input."""

import json

import pytest

from herd.cli import main
from herd.inference import Generator
from herd.inference.cli import Chat, chat_loop


def _run(capsys, *argv):
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def test_generate_one_prompt_streams(ckpt, tok_model, small_tokenizer, capsys):
    rc, out, err = _run(capsys, "generate", ckpt, "--prompt", "Hello there", "--max-new-tokens", 12)
    assert rc == 0
    ref = Generator(tok_model, small_tokenizer).generate([small_tokenizer.encode("Hello there", bos=True)],
                                                         max_new_tokens=12)[0]
    assert out == ref.text + "\n"
    assert "tok/s" in err


def test_generate_file_to_jsonl_and_resume(ckpt, tok_model, small_tokenizer, tmp_path, capsys):
    prompts = ["The cat", "A much longer prompt about a dog and a park", "x"]
    f = tmp_path / "p.txt"
    f.write_text("\n".join(prompts) + "\n\n")
    out = tmp_path / "out.jsonl"
    rc, _, _ = _run(capsys, "generate", ckpt, "--prompts-file", f, "--out", out, "--max-new-tokens", 8,
                    "--max-batch", 2)
    assert rc == 0
    recs = [json.loads(x) for x in out.read_text().splitlines()]
    assert [r["prompt"] for r in recs] == prompts
    ref = Generator(tok_model, small_tokenizer).generate(
        [small_tokenizer.encode(p, bos=True) for p in prompts], max_new_tokens=8)
    assert [r["tokens"] for r in recs] == [o.tokens for o in ref]
    assert [r["completion"] for r in recs] == [o.text for o in ref]
    # an existing output is never overwritten silently
    rc, _, err = _run(capsys, "generate", ckpt, "--prompts-file", f, "--out", out)
    assert rc == 2 and "--resume" in err
    # interrupted after the first record, in the middle of writing the second: resume completes it
    lines = out.read_text().splitlines(keepends=True)
    out.write_text(lines[0] + lines[1][:10])
    rc, _, _ = _run(capsys, "generate", ckpt, "--prompts-file", f, "--out", out, "--max-new-tokens", 8,
                    "--resume")
    assert rc == 0
    assert [json.loads(x) for x in out.read_text().splitlines()] == recs


def test_generate_jsonl_chat_samples_quant_draft(ckpt, small_tokenizer, tmp_path, capsys):
    f = tmp_path / "p.jsonl"
    f.write_text(json.dumps({"prompt": "Hi"}) + "\n" +
                 json.dumps({"messages": [{"role": "user", "content": "What is 2+2?"}]}) + "\n")
    out = tmp_path / "o.jsonl"
    rc, _, err = _run(capsys, "generate", ckpt, "--prompts-file", f, "--out", out, "--max-new-tokens", 5,
                      "--temperature", "0.8", "--seed", 1, "--num-samples", 3, "--quant", "int8",
                      "--system", "Be brief")
    assert rc == 0, err
    recs = [json.loads(x) for x in out.read_text().splitlines()]
    assert [(r["prompt_index"], r["sample_index"]) for r in recs] == [(i, j) for i in range(2)
                                                                      for j in range(3)]
    assert all("tool_calls" in r for r in recs)
    # a draft model (here the same checkpoint) gives plain greedy output
    outs = []
    for extra in ([], ["--draft", ckpt, "--speculate-k", 3]):
        rc, o, err = _run(capsys, "generate", ckpt, "--prompt", "Hello", "--max-new-tokens", 10, *extra)
        assert rc == 0, err
        outs.append(o)
    assert outs[0] == outs[1]


@pytest.mark.parametrize("argv, msg", [
    (["generate", "/nonexistent/ckpt", "--prompt", "hi"], "checkpoint not found"),
    (["generate", "CKPT", "--prompt", "word " * 400], "context"),
    (["generate", "CKPT", "--prompt", "hi", "--temperature", "-1"], "temperature"),
    (["generate", "CKPT", "--prompt", "hi", "--top-p", "0"], "top_p"),
    (["generate", "CKPT", "--prompt", "hi", "--top-k", "-3"], "top_k"),
    (["generate", "CKPT", "--prompts-file", "/nonexistent.txt"], "prompts file not found"),
    (["generate", "CKPT"], "no prompt"),
    (["chat", "/nonexistent/ckpt"], "checkpoint not found"),
])
def test_bad_input_one_line(ckpt, capsys, argv, msg):
    rc, out, err = _run(capsys, *[str(ckpt) if a == "CKPT" else a for a in argv])
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("herd: error: ") and msg in lines[0]


def test_bad_jsonl_line(ckpt, tmp_path, capsys):
    f = tmp_path / "p.jsonl"
    f.write_text('{"prompt": "ok"}\n{"nope": 1}\n')
    rc, _, err = _run(capsys, "generate", ckpt, "--prompts-file", f)
    assert rc == 2 and "p.jsonl:2" in err


class _Script:
    def __init__(self, lines):
        self.lines = list(lines)

    def __call__(self, prompt=""):
        if not self.lines:
            raise EOFError
        return self.lines.pop(0)


def test_chat_history_reset_and_ctrl_c(tok_model, small_tokenizer):
    gen = Generator(tok_model, small_tokenizer, max_batch=1)
    written = []
    state = {"interrupt_at": None, "deltas": 0}

    def write(s):
        written.append(s)
        if state["interrupt_at"] is not None:
            state["deltas"] += 1
            if state["deltas"] == state["interrupt_at"]:
                raise KeyboardInterrupt  # as Ctrl-C during generation
    chat = Chat(gen, small_tokenizer, system="You are terse.", write=write, max_new_tokens=12)
    assert chat_loop(chat, _Script(["Hello", "How are you?"])) == 0
    roles = [m["role"] for m in chat.messages]
    assert roles == ["system", "user", "assistant", "user", "assistant"]
    # the second turn was prompted with the whole history
    fmt = chat.fmt
    ref = gen.generate([fmt.encode_dialog_prompt(chat.messages[:4])], max_new_tokens=12)[0]
    assert chat.messages[4]["content"] == fmt.decode_assistant_message(ref.tokens)["content"]
    # /reset clears, Ctrl-C stops the answer but not the chat, then the chat goes on
    state["interrupt_at"] = 3
    chat_loop(chat, _Script(["/reset", "Tell me a story", "/exit", "never read"]))
    assert "[history cleared]\n" in written
    assert any("[stopped]" in w for w in written)
    assert [m["role"] for m in chat.messages] == ["system", "user", "assistant"]
    assert len(chat.messages[2]["content"]) > 0


class _ToolCallingGen:
    """Stands in for a model that answers with a code_interpreter call (a tiny random model never does)."""
    max_seq_len = 256

    def __init__(self, tok):
        self.tok = tok

    def generate(self, prompts, on_token=None, **kw):
        from herd.inference import Completion

        toks = [self.tok.python_tag_id] + self.tok.encode("print(1 + 1)")
        for t in toks:
            on_token(0, 0, t)
        return [Completion(tokens=toks, stop_reason="end_of_message", prompt_index=0)]


def test_chat_shows_tool_calls(small_tokenizer):
    written = []
    chat = Chat(_ToolCallingGen(small_tokenizer), small_tokenizer, write=written.append, max_new_tokens=12)
    chat_loop(chat, _Script(["compute 1+1", "/tool 2"]))
    text = "".join(written)
    assert '[tool call] code_interpreter({"code": "print(1 + 1)"})' in text
    assert chat.messages[1]["tool_calls"][0]["tool_name"] == "code_interpreter"
    assert chat.messages[1]["stop_reason"] == "end_of_message"
    assert chat.messages[2] == {"role": "ipython", "content": "2"}
