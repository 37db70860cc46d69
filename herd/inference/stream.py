"""Streaming text out of a stream of token ids (paper §6 inference; used by `herd chat` and
`herd generate`): a token may end in the middle of a multi-byte UTF-8 character (byte-level BPE),
so bytes are buffered until they decode and a character is never split across deltas."""

from __future__ import annotations

import codecs


class TextStreamer:
    """`push(token_id) -> str` gives the new text (possibly ""), `flush() -> str` the rest.
    Bytes that can never decode are replaced by U+FFFD, as `Tokenizer.decode` does."""

    def __init__(self, tokenizer, skip_special: bool = False):
        self.tokenizer = tokenizer
        self.skip_special = skip_special
        self._special = set(tokenizer.special_tokens.values()) if skip_special else set()
        self._dec = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def push(self, token: int) -> str:
        if token in self._special:
            return ""
        return self._dec.decode(self.tokenizer.id_to_piece(int(token)))

    def flush(self) -> str:
        out = self._dec.decode(b"", final=True)
        self._dec.reset()
        return out


def stream_text(tokenizer, tokens) -> list[str]:
    """The deltas `TextStreamer` yields for `tokens` (their concatenation is the decoded text)."""
    s = TextStreamer(tokenizer)
    deltas = [s.push(t) for t in tokens]
    deltas.append(s.flush())
    return deltas


__all__ = ["TextStreamer", "stream_text"]
