"""Chat encoding (Meta's ids), the SFT and DPO loss masks, and bad-line reporting."""

import json

import pytest

from herd.errors import HerdError
from herd.posttrain.common import IGNORE, masked_labels
from herd.posttrain.data import (encode_dialog, encode_pair, encode_prompt, parse_chat, parse_preference,
                                 read_jsonl)

DIALOG = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Tom has 3 pens."},
    {"role": "assistant", "content": "ok"},
    {"role": "user", "content": "How many?"},
    {"role": "assistant", "content": "<|python_tag|>count()", "stop_reason": "end_of_message"},
    {"role": "ipython", "content": "3"},
    {"role": "assistant", "content": "#### 3"},
]


def targets(tok, tokens, mask):
    """Decoded text of the tokens that carry loss, as runs."""
    runs, cur = [], []
    for t, m in zip(tokens, mask):
        if m:
            cur.append(t)
        elif cur:
            runs.append(tok.decode(cur))
            cur = []
    if cur:
        runs.append(tok.decode(cur))
    return runs


def test_chat_ids_equal_meta_chat_format():
    from llama_models.datatypes import RawMessage, StopReason
    from llama_models.llama3.chat_format import ChatFormat
    from llama_models.llama3.tokenizer import Tokenizer as MetaTokenizer

    from herd.tokenizer import Tokenizer

    ours = Tokenizer.llama3()
    cf = ChatFormat(MetaTokenizer.get_instance())
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi there"},
            {"role": "assistant", "content": "Hello!"}, {"role": "ipython", "content": "[1, 2]"},
            {"role": "user", "content": "2+2?"}]
    meta = [RawMessage(role="tool" if m["role"] == "ipython" else m["role"], content=m["content"],
                       stop_reason=StopReason.end_of_turn) for m in msgs]
    assert encode_prompt(ours, msgs) == cf.encode_dialog_prompt(meta).tokens
    # an assistant message waiting on a tool ends with <|eom_id|>
    ids, _ = cf.encode_message(RawMessage(role="assistant", content="x = 1",
                                          stop_reason=StopReason.end_of_message),
                               tool_prompt_format=None)
    enc = encode_dialog(ours, [{"role": "assistant", "content": "x = 1", "eom": True}], bos=False)
    assert enc.tokens == ids


def test_sft_mask_is_assistant_content_and_its_end_token(tok):
    msgs = parse_chat({"messages": DIALOG})
    enc = encode_dialog(tok, msgs)
    assert len(enc.tokens) == len(enc.sft_mask) == len(enc.dpo_mask)
    # every assistant message's content and its <|eot_id|>/<|eom_id|>; nothing of system, user, ipython,
    # no header
    assert targets(tok, enc.tokens, enc.sft_mask) == [
        "ok<|eot_id|>", "<|python_tag|>count()<|eom_id|>", "#### 3<|eot_id|>"]
    for t, m in zip(enc.tokens, enc.sft_mask):
        if t in (tok.start_header_id, tok.end_header_id, tok.bos_id):
            assert not m
    # labels: position i predicts token i+1 when i+1 is a target
    lab = masked_labels(enc.tokens, enc.sft_mask)
    assert len(lab) == len(enc.tokens) and lab[-1] == IGNORE
    assert [enc.tokens[i + 1] for i in range(len(lab) - 1) if lab[i] != IGNORE] == \
        [t for t, m in zip(enc.tokens, enc.sft_mask) if m]


def test_dpo_mask_excludes_formatting_tokens(tok):
    pref = parse_preference({"prompt": "Tom has 3 pens. How many?", "chosen": "#### 3",
                             "rejected": {"content": "#### 4", "stop_reason": "end_of_message"}})
    for resp, text, end in ((pref.chosen, "#### 3", tok.eot_id), (pref.rejected, "#### 4", tok.eom_id)):
        enc = encode_pair(tok, pref.prompt, resp)
        assert enc.tokens[-1] == end
        assert targets(tok, enc.tokens, enc.dpo_mask) == [text]  # content only: no header, no eot/eom
        assert not any(m for t, m in zip(enc.tokens, enc.dpo_mask)
                       if t in (tok.start_header_id, tok.end_header_id, tok.eot_id, tok.eom_id))
    # in a multi-turn prompt only the final response is a DPO target
    enc = encode_dialog(tok, parse_chat({"messages": DIALOG}))
    assert targets(tok, enc.tokens, enc.dpo_mask) == ["#### 3"]


def test_preference_ranking_with_edited():
    p = parse_preference({"messages": [{"role": "user", "content": "q"}], "chosen": "b", "rejected": "c",
                          "edited": "a"})
    assert [r["content"] for r in p.ranked()] == ["a", "b", "c"]
    p = parse_preference({"prompt": "q", "chosen": "b", "rejected": "c"})
    assert [r["content"] for r in p.ranked()] == ["b", "c"]


def _write(path, lines):
    path.write_text("\n".join(lines) + "\n")
    return path


def test_bad_lines_reported_with_file_and_line(tmp_path, capsys):
    good = json.dumps({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]})
    f = _write(tmp_path / "chat.jsonl", [
        good,
        "{not json",
        json.dumps({"messages": [{"role": "robot", "content": "x"}]}),
        "",
        json.dumps({"messages": [{"role": "user", "content": "only a question"}]}),
        json.dumps([1, 2]),
        good,
    ])
    recs = read_jsonl(f, parse_chat, "skip", what="chat record")
    assert len(recs) == 2
    err = capsys.readouterr().err
    assert f"{f}:2: bad chat record: not valid JSON" in err
    assert f"{f}:3: bad chat record: message 0 has role 'robot'" in err
    assert f"{f}:5: bad chat record: no assistant message" in err
    assert f"{f}:6: bad chat record: expected a JSON object" in err
    assert "skipped 4 bad line(s), kept 2" in err
    with pytest.raises(HerdError, match=rf"{f}:2: bad chat record: not valid JSON"):
        read_jsonl(f, parse_chat, "stop", what="chat record")


def test_bad_preference_records(tmp_path):
    f = _write(tmp_path / "p.jsonl", [json.dumps({"prompt": "q", "chosen": "a"})])
    with pytest.raises(HerdError, match=r"p.jsonl:1: bad preference record: missing 'rejected'"):
        read_jsonl(f, parse_preference, "stop", what="preference record")
    f = _write(tmp_path / "q.jsonl", [json.dumps({"chosen": "a", "rejected": "b"})])
    with pytest.raises(HerdError, match="needs 'prompt'"):
        read_jsonl(f, parse_preference, "stop", what="preference record")
    with pytest.raises(HerdError, match="no usable"):
        read_jsonl(f, parse_preference, "skip", what="preference record")
    with pytest.raises(HerdError, match="not found"):
        read_jsonl(tmp_path / "missing.jsonl", parse_chat)
    with pytest.raises(HerdError, match="on_bad_line"):
        read_jsonl(f, parse_chat, "ignore")
