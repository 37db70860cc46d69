"""Post-training data (paper §4.1, §4.2): chat and preference JSONL, and their tokens with loss masks.

A dialog is encoded in the Llama 3.1 chat format (`<|begin_of_text|>` then, per message,
`<|start_header_id|>role<|end_header_id|>\\n\\n content <|eot_id|>`; an assistant message that waits
on a tool ends with `<|eom_id|>`). Beside the ids we keep, per token, which message role it belongs
to and whether it is a formatting token, because the losses differ in what they train on:

* SFT (§4.1.3): loss on the assistant's tokens only, its content and the `<|eot_id|>`/`<|eom_id|>`
  that ends it (so the model learns to stop); system, user and ipython (tool output) tokens and
  every header are masked.
* DPO (§4.1.4): loss on the response's content only; headers and `<|eot_id|>`/`<|eom_id|>` are
  masked for chosen and rejected alike (the paper: they share these tokens, and learning them from
  both sides at once conflicts).

The ids equal Meta's `ChatFormat` (llama-models) for the same messages; the test compares them.

Bad records are reported as `FILE:LINE: reason`; `on_bad_line="skip"` warns and goes on,
"stop" raises a HerdError.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from herd.errors import HerdError
from herd.fileio import atomic_open

ROLES = ("system", "user", "assistant", "ipython")


class BadRecord(ValueError):
    """A record that cannot be used; the message is the reason."""


@dataclass
class Encoded:
    """Ids of one dialog and per-token flags. `sft_mask[i]`: token i is an SFT target;
    `dpo_mask[i]`: token i is a DPO target (response content, formatting excluded)."""

    tokens: list[int]
    sft_mask: list[bool]
    dpo_mask: list[bool] = field(default_factory=list)


# ---- reading JSONL ------------------------------------------------------------------------------
def read_jsonl(path, parse: Callable[[dict], object], on_bad_line: str = "skip",
               what: str = "record") -> list:
    """Parse each line of `path` with `parse(obj)`; a line that is not JSON or that `parse` rejects
    (BadRecord) is reported with its file and line number. Blank lines are ignored."""
    if on_bad_line not in ("skip", "stop"):
        raise HerdError(f"on_bad_line must be 'skip' or 'stop', got {on_bad_line!r}")
    p = Path(path)
    if not p.is_file():
        raise HerdError(f"{what} file not found: {p} (check the path)")
    out, bad = [], 0
    with open(p, encoding="utf-8", errors="strict") as f:
        for n, line in enumerate(_lines(f, p), 1):
            if not line.strip():
                continue
            try:
                try:
                    obj = json.loads(line)
                except ValueError as e:
                    raise BadRecord(f"not valid JSON ({e.msg})") from None
                if not isinstance(obj, dict):
                    raise BadRecord(f"expected a JSON object, got {type(obj).__name__}")
                out.append(parse(obj))
            except BadRecord as e:
                msg = f"{p}:{n}: bad {what}: {e}"
                if on_bad_line == "stop":
                    raise HerdError(msg + " (fix it, or pass --on-bad-line skip)") from None
                bad += 1
                print(f"herd: warning: {msg} (skipped)", file=sys.stderr)
    if bad:
        print(f"herd: warning: {p}: skipped {bad} bad line(s), kept {len(out)}", file=sys.stderr)
    if not out:
        raise HerdError(f"{p}: no usable {what}s")
    return out


def _lines(f, p):
    try:
        yield from f
    except UnicodeDecodeError as e:
        raise HerdError(f"{p}: not UTF-8 text ({e.reason} at byte {e.start})") from None


def write_jsonl(path, records: Iterable[dict]) -> int:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with atomic_open(p, "w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
            n += 1
    return n


# ---- records ------------------------------------------------------------------------------------
def check_message(m, where: str = "message") -> dict:
    if not isinstance(m, dict):
        raise BadRecord(f"{where} must be an object with 'role' and 'content'")
    role, content = m.get("role"), m.get("content")
    if role == "tool":  # Meta's name for the tool-output role; the format writes it as ipython
        role = "ipython"
    if role not in ROLES:
        raise BadRecord(f"{where} has role {role!r}; expected one of {', '.join(ROLES)}")
    if not isinstance(content, str):
        raise BadRecord(f"{where} needs 'content' as a string")
    out = {"role": role, "content": content}
    if m.get("stop_reason") == "end_of_message" or m.get("eom"):
        out["eom"] = True
    return out


def parse_chat(obj: dict) -> list[dict]:
    msgs = obj.get("messages")
    if not isinstance(msgs, list) or not msgs:
        raise BadRecord("needs 'messages', a non-empty list")
    msgs = [check_message(m, f"message {i}") for i, m in enumerate(msgs)]
    if not any(m["role"] == "assistant" for m in msgs):
        raise BadRecord("no assistant message, so nothing to train on")
    return msgs


def parse_prompt(obj: dict) -> list[dict]:
    """A prompt as messages: {"prompt": str} or {"messages": [...]} not ending with the assistant."""
    if "messages" in obj:
        msgs = obj["messages"]
        if not isinstance(msgs, list) or not msgs:
            raise BadRecord("'messages' must be a non-empty list")
        msgs = [check_message(m, f"message {i}") for i, m in enumerate(msgs)]
    elif isinstance(obj.get("prompt"), str):
        msgs = [{"role": "user", "content": obj["prompt"]}]
    else:
        raise BadRecord("needs 'prompt' (a string) or 'messages' (a list)")
    return msgs


def _response(obj: dict, key: str) -> dict:
    r = obj[key]
    if isinstance(r, str):
        return {"role": "assistant", "content": r}
    if isinstance(r, dict):
        m = check_message({"role": "assistant", **r}, key)
        if m["role"] != "assistant":
            raise BadRecord(f"'{key}' must be an assistant message")
        return m
    raise BadRecord(f"'{key}' must be a string or an assistant message")


@dataclass
class Preference:
    prompt: list[dict]
    chosen: dict
    rejected: dict
    edited: dict | None = None

    def ranked(self) -> list[dict]:
        """Responses best first: edited > chosen > rejected (§4.1.2)."""
        return ([self.edited] if self.edited else []) + [self.chosen, self.rejected]


def parse_preference(obj: dict) -> Preference:
    for key in ("chosen", "rejected"):
        if key not in obj:
            raise BadRecord(f"missing '{key}'")
    prompt = parse_prompt(obj)
    if prompt[-1]["role"] == "assistant":
        raise BadRecord("the prompt's last message is the assistant's; the responses go in chosen/rejected")
    edited = _response(obj, "edited") if obj.get("edited") is not None else None
    return Preference(prompt, _response(obj, "chosen"), _response(obj, "rejected"), edited)


# ---- encoding -----------------------------------------------------------------------------------
def encode_header(tokenizer, role: str) -> list[int]:
    return [tokenizer.start_header_id, *tokenizer.encode(role), tokenizer.end_header_id,
            *tokenizer.encode("\n\n")]


def encode_dialog(tokenizer, messages: list[dict], *, add_generation_prompt: bool = False,
                  bos: bool = True) -> Encoded:
    """Ids of `messages` in the chat format with the SFT and DPO masks. With
    `add_generation_prompt` an open assistant header ends the sequence (a prompt for sampling).
    The DPO mask marks the content of the last message when it is the assistant's."""
    tokens: list[int] = [tokenizer.bos_id] if bos else []
    sft: list[bool] = [False] * len(tokens)
    dpo: list[bool] = [False] * len(tokens)
    last = len(messages) - 1
    for i, m in enumerate(messages):
        header = encode_header(tokenizer, m["role"])
        content = tokenizer.encode(m["content"]) if m["content"] else []
        end = tokenizer.eom_id if m.get("eom") else tokenizer.eot_id
        is_asst = m["role"] == "assistant"
        tokens += header + content + [end]
        sft += [False] * len(header) + [is_asst] * (len(content) + 1)
        dpo += [False] * len(header) + [is_asst and i == last] * len(content) + [False]
    if add_generation_prompt:
        header = encode_header(tokenizer, "assistant")
        tokens += header
        sft += [False] * len(header)
        dpo += [False] * len(header)
    return Encoded(tokens, sft, dpo)


def encode_prompt(tokenizer, messages: list[dict]) -> list[int]:
    """Ids of a prompt ending with an open assistant header (what the model continues)."""
    return encode_dialog(tokenizer, messages, add_generation_prompt=True).tokens


def encode_pair(tokenizer, prompt: list[dict], response: dict) -> Encoded:
    """prompt + one assistant response (for the RM and DPO)."""
    return encode_dialog(tokenizer, prompt + [response])


def shift_labels(enc_tokens: list[int], mask: list[bool], ignore: int = -100) -> list[int]:
    """Next-token labels for positions 0..n-2: label[i] = token[i+1] when token i+1 is a target."""
    return [t if m else ignore for t, m in zip(enc_tokens[1:], mask[1:])]


__all__ = ["ROLES", "BadRecord", "Encoded", "Preference", "read_jsonl", "write_jsonl", "parse_chat",
           "parse_prompt", "parse_preference", "encode_dialog", "encode_prompt", "encode_pair",
           "shift_labels", "encode_header", "check_message"]
