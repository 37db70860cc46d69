"""The Llama 3 tokenizer (paper §3.2): tiktoken BPE with 256 special tokens.

`Tokenizer.llama3()` loads the real 128,000 BPE ranks that ship in the PyPI package
`llama-models` (llama_models/llama3/tokenizer.model). `Tokenizer.load(path)` loads any BPE file in
tiktoken's format (base64 token, space, rank per line), e.g. one trained by `herd tokenizer train`.
The special tokens take the ids right after the BPE ranks, in llama-models' order, and encoding
follows Meta's cutting of long inputs (400K-character pieces, runs of > 25K whitespace or
non-whitespace characters split), so ids are identical to Meta's `Tokenizer.encode`.
"""

from __future__ import annotations

import base64
import os
import re
from pathlib import Path
from typing import AbstractSet, Collection, Iterator, Literal, Sequence

from herd.errors import HerdError

PAT_STR = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
           r"\s*[\r\n]+|\s+(?!\S)|\s+")
TIKTOKEN_MAX_ENCODE_CHARS = 400_000
MAX_NO_WHITESPACES_CHARS = 25_000
NUM_SPECIAL_TOKENS = 256

_NAMED_SPECIALS = [
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|reserved_special_token_0|>",
    "<|reserved_special_token_1|>",
    "<|finetune_right_pad_id|>",
    "<|step_id|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eom_id|>",
    "<|eot_id|>",
    "<|python_tag|>",
    "<|image|>",
]
SPECIAL_TOKENS = _NAMED_SPECIALS + [
    f"<|reserved_special_token_{2 + i}|>" for i in range(NUM_SPECIAL_TOKENS - len(_NAMED_SPECIALS))
]

# Long runs of whitespace or of non-whitespace, found by regex instead of a per-character loop.
_LONG_RUN = re.compile(r"\s{%d,}|\S{%d,}" % (MAX_NO_WHITESPACES_CHARS + 1, MAX_NO_WHITESPACES_CHARS + 1))


def llama3_tokenizer_path() -> Path:
    """Where the real Llama 3 BPE file lies: inside the installed `llama-models` package."""
    import importlib.util

    spec = importlib.util.find_spec("llama_models")
    if spec is None or not spec.submodule_search_locations:
        raise HerdError("the Llama 3 tokenizer ships in the PyPI package llama-models: "
                        "pip install --no-deps llama-models")
    path = Path(list(spec.submodule_search_locations)[0]) / "llama3" / "tokenizer.model"
    if not path.exists():
        raise HerdError(f"llama-models is installed but has no tokenizer file at {path}")
    return path


def load_bpe_ranks(path: str | os.PathLike) -> dict[bytes, int]:
    """Read a tiktoken BPE file, with a clear error for a missing or malformed one."""
    p = Path(path)
    if not p.is_file():
        raise HerdError(f"tokenizer file not found: {p}")
    ranks: dict[bytes, int] = {}
    with open(p, "rb") as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                tok, rank = line.split()
                ranks[base64.b64decode(tok, validate=True)] = int(rank)
            except Exception:
                raise HerdError(f"{p}: line {n} is not a tiktoken BPE entry ('<base64> <rank>'); "
                                "is this a tokenizer file?") from None
    if not ranks:
        raise HerdError(f"{p}: empty tokenizer file")
    return ranks


def save_bpe_ranks(ranks: dict[bytes, int], path: str | os.PathLike) -> None:
    p = Path(path)
    tmp = p.with_name(p.name + ".tmp")
    with open(tmp, "wb") as f:
        for tok, rank in sorted(ranks.items(), key=lambda kv: kv[1]):
            f.write(base64.b64encode(tok) + b" " + str(rank).encode() + b"\n")
    os.replace(tmp, p)


def split_long_runs(s: str, max_run: int = MAX_NO_WHITESPACES_CHARS) -> Iterator[str]:
    """Meta's `_split_whitespaces_or_nonwhitespaces`: cut `s` so that no piece holds more than
    `max_run` consecutive whitespace or non-whitespace characters. Same cuts as Meta's loop."""
    if max_run == MAX_NO_WHITESPACES_CHARS:
        pattern = _LONG_RUN
    else:
        pattern = re.compile(r"\s{%d,}|\S{%d,}" % (max_run + 1, max_run + 1))
    start = 0
    for m in pattern.finditer(s):
        # Meta cuts every max_run characters inside a run, counted from the run's first character.
        for cut in range(m.start() + max_run, m.end(), max_run):
            yield s[start:cut]
            start = cut
    yield s[start:]


class Tokenizer:
    """tiktoken BPE plus the 256 Llama 3 special tokens."""

    pat_str = PAT_STR

    def __init__(self, mergeable_ranks: dict[bytes, int], name: str = "herd", path: str | None = None):
        import tiktoken

        self.path = path
        self.mergeable_ranks = mergeable_ranks
        n = len(mergeable_ranks)
        self.special_tokens = {tok: n + i for i, tok in enumerate(SPECIAL_TOKENS)}
        self.model = tiktoken.Encoding(name=name, pat_str=PAT_STR, mergeable_ranks=mergeable_ranks,
                                       special_tokens=self.special_tokens)
        self.n_words = n + len(SPECIAL_TOKENS)
        st = self.special_tokens
        self.bos_id = st["<|begin_of_text|>"]
        self.eos_id = st["<|end_of_text|>"]
        self.eot_id = st["<|eot_id|>"]
        self.eom_id = st["<|eom_id|>"]
        self.python_tag_id = st["<|python_tag|>"]
        self.pad_id = st["<|finetune_right_pad_id|>"]
        self.start_header_id = st["<|start_header_id|>"]
        self.end_header_id = st["<|end_header_id|>"]
        self.stop_tokens = [self.eos_id, self.eom_id, self.eot_id]

    # ---- loading ------------------------------------------------------------------------------
    @classmethod
    def llama3(cls) -> "Tokenizer":
        path = llama3_tokenizer_path()
        return cls(load_bpe_ranks(path), name="llama3", path=str(path))

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Tokenizer":
        return cls(load_bpe_ranks(path), name=Path(path).stem, path=str(path))

    def save(self, path: str | os.PathLike) -> None:
        save_bpe_ranks(self.mergeable_ranks, path)

    @property
    def vocab_size(self) -> int:
        return self.n_words

    # ---- encoding -----------------------------------------------------------------------------
    def encode(self, s: str, *, bos: bool = False, eos: bool = False,
               allowed_special: Literal["all"] | AbstractSet[str] | None = None,
               disallowed_special: Literal["all"] | Collection[str] = ()) -> list[int]:
        """Ids as Meta's `Tokenizer.encode`. By default text that looks like a special token is
        encoded as plain text; allowed_special="all" turns it into the special token."""
        if not isinstance(s, str):
            raise HerdError(f"tokenizer: expected text (str), got {type(s).__name__}")
        allowed = allowed_special if allowed_special is not None else set()
        t: list[int] = [self.bos_id] if bos else []
        for i in range(0, len(s), TIKTOKEN_MAX_ENCODE_CHARS):
            for piece in split_long_runs(s[i:i + TIKTOKEN_MAX_ENCODE_CHARS]):
                t.extend(self.model.encode(piece, allowed_special=allowed, disallowed_special=disallowed_special))
        if eos:
            t.append(self.eos_id)
        return t

    def decode(self, t: Sequence[int]) -> str:
        return self.model.decode(list(t))

    def decode_bytes(self, t: Sequence[int]) -> bytes:
        return self.model.decode_bytes(list(t))

    def id_to_piece(self, i: int) -> bytes:
        return self.model.decode_single_token_bytes(i)


__all__ = ["Tokenizer", "PAT_STR", "SPECIAL_TOKENS", "llama3_tokenizer_path", "load_bpe_ranks", "save_bpe_ranks",
           "split_long_runs"]
