"""Tokenizer (paper §3.2) and the Llama 3.1 chat and tool format (§4.1, §4.3.5)."""

from herd.tokenizer.tokenizer import SPECIAL_TOKENS, Tokenizer

__all__ = ["Tokenizer", "SPECIAL_TOKENS"]
