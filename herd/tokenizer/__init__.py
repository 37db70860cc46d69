"""Tokenizer (paper §3.2) and the Llama 3.1 chat and tool format (§4.1, §4.3.5).

    Tokenizer          tiktoken BPE + 256 special tokens; `.llama3()` is Meta's (tokenizer.py)
    ParallelEncoder    encode a big corpus on every core with processes (tokenizer.py)
    train_bpe          train a new Llama-3-style BPE of any size with HF tokenizers (train.py)
    ChatFormat         dialogs <-> ids, tool calls, per-token roles for loss masks (chat_format.py)

Names are imported on first use, so `herd --help` (which imports herd.tokenizer.cli) stays fast.
"""

import importlib

_WHERE = {
    "Tokenizer": "tokenizer", "ParallelEncoder": "tokenizer", "SPECIAL_TOKENS": "tokenizer",
    "train_bpe": "train",
    "ChatFormat": "chat_format", "EncodedDialog": "chat_format", "system_prompt": "chat_format",
    "custom_tools_prompt": "chat_format",
}

__all__ = list(_WHERE)


def __getattr__(name):
    if name in _WHERE:
        return getattr(importlib.import_module(f"herd.tokenizer.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'herd.tokenizer' has no attribute {name!r}")
