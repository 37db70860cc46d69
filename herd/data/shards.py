"""Token shards on disk (the input of pretraining, paper §3.1 -> §3.4).

A tokenized directory, as written by `herd tokenize`:

    meta.json                 format, tokenizer (n_words, bos/eos ids, sha256), splits with their shards
    tokenizer.model           the tokenizer used (tiktoken format), so the data is self-describing
    train-00000.bin           uint32 token ids, all documents of the shard back to back (raw, memmapped)
    train-00000.idx.npy       int64 document offsets into the .bin, n_docs + 1 entries (0 first)
    val-00000.bin, ...        the held-out split, same layout

Documents are stored with their <|begin_of_text|> / <|end_of_text|> tokens when tokenized with
bos/eos (the default), so packing them back to back is exactly what the model sees.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from herd.errors import HerdError

FORMAT = "herd-tokens"
VERSION = 1


def read_meta(path: str | Path) -> dict:
    p = Path(path)
    if not p.exists():
        raise HerdError(f"token data not found: {p} (run `herd tokenize` first)")
    if not p.is_dir():
        raise HerdError(f"{p}: token data is a directory written by `herd tokenize`")
    m = p / "meta.json"
    if not m.is_file():
        if not any(p.iterdir()):
            raise HerdError(f"{p}: empty data directory; tokenize documents into it with `herd tokenize`")
        raise HerdError(f"{p}: no meta.json; not a directory written by `herd tokenize`")
    try:
        meta = json.loads(m.read_text())
    except ValueError as e:
        raise HerdError(f"{m}: not valid JSON ({e})") from None
    if meta.get("format") != FORMAT:
        raise HerdError(f"{m}: not herd token data (format {meta.get('format')!r})")
    return meta


class TokenData:
    """One split of a tokenized directory: documents addressed by a global index 0..n_docs-1."""

    def __init__(self, path: str | Path, split: str = "train"):
        self.path = Path(path)
        self.meta = read_meta(self.path)
        self.split = split
        info = self.meta["splits"].get(split)
        if info is None:
            raise HerdError(f"{self.path}: no '{split}' split (splits: {', '.join(self.meta['splits'])})")
        self.tokens: list[np.ndarray] = []
        offsets = []
        for sh in info["shards"]:
            f, idx = self.path / sh["tokens"], self.path / sh["index"]
            if not f.is_file() or not idx.is_file():
                raise HerdError(f"{self.path}: shard {sh['tokens']} or its index is missing (re-run herd "
                                "tokenize)")
            off = np.load(idx)
            n = off[-1] if len(off) else 0
            size = f.stat().st_size
            if size != 4 * n:
                raise HerdError(f"{f}: {size} bytes, the index says {4 * n}; truncated shard (re-run herd "
                                "tokenize)")
            self.tokens.append(np.memmap(f, dtype=np.uint32, mode="r", shape=(n,)) if n
                               else np.zeros(0, np.uint32))
            offsets.append(off.astype(np.int64))
        self.offsets = offsets
        counts = [len(o) - 1 for o in offsets]
        self.shard_first_doc = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        self.lengths = (np.concatenate([np.diff(o) for o in offsets]) if offsets
                        else np.zeros(0)).astype(np.int64)
        self.n_docs = int(len(self.lengths))
        self.n_tokens = int(self.lengths.sum())

    @property
    def vocab_size(self) -> int:
        return int(self.meta["tokenizer"]["n_words"])

    def doc(self, i: int, start: int = 0, end: int | None = None) -> np.ndarray:
        """Tokens [start, end) of document i."""
        s = int(np.searchsorted(self.shard_first_doc, i, side="right") - 1)
        local = i - self.shard_first_doc[s]
        a = self.offsets[s][local]
        e = self.offsets[s][local + 1] if end is None else a + end
        return self.tokens[s][a + start:e]

    def tokenizer_path(self) -> Path | None:
        t = self.meta.get("tokenizer", {}).get("file")
        return self.path / t if t else None


def has_split(path: str | Path, split: str) -> bool:
    return split in read_meta(path)["splits"] and read_meta(path)["splits"][split]["n_docs"] > 0


__all__ = ["TokenData", "read_meta", "has_split", "FORMAT", "VERSION"]
