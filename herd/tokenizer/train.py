"""Train a new byte-level BPE tokenizer like Llama 3's (paper §3.2), on any corpus, any size.

Llama 3's tokenizer is tiktoken BPE: text is first cut by the split regex `PAT_STR`, each piece
is turned into UTF-8 bytes and merged by rank. `train_bpe` learns new ranks the same way, with
the Rust-backed trainer of Hugging Face `tokenizers` (it counts pieces and pairs on all cores):

- the same pre-tokenization: `Split(PAT_STR, "isolated")` then GPT-2's byte-to-unicode mapping
  (`ByteLevel`, no extra regex), so the trainer sees exactly the pieces tiktoken will see;
- byte-level: all 256 single bytes are in the vocabulary (ranks 0..255, in byte order), so any
  text encodes and decoding is lossless;
- `vocab_size` counts the 256 Llama 3 special tokens, which tiktoken adds after the ranks (ids
  vocab_size-256 .. vocab_size-1, same order as Llama 3). So the BPE part has vocab_size-256 ranks:
  256 bytes + vocab_size-512 merges. It is the `vocab_size` a model uses.

The trained merges are converted to tiktoken ranks (a merge's token gets the rank of its place in
the merge list) and saved in tiktoken's file format, so encoding always runs through tiktoken.
`check_merges` proves the conversion right for every merge: both parts rank below the token, and
tiktoken's own rank-greedy BPE, run on the token's bytes with ranks below it, rebuilds exactly the
trainer's pair. The tests also compare tiktoken's ids with the trained HF tokenizer's ids on
held-out text (tests/tokenizer/test_tokenizer_train.py).

    tok = train_bpe(texts_or_files, vocab_size=4096)      # -> herd Tokenizer (tiktoken)
    tok.save("tokenizer.model")

(An HF tokenizer.json for any herd Tokenizer, for HF exports, is herd/checkpoint/hf_tokenizer.py.)
"""

from __future__ import annotations

import gzip
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

from herd.errors import HerdError
from herd.tokenizer.tokenizer import NUM_SPECIAL_TOKENS, PAT_STR, Tokenizer

MIN_MERGES = 256
MIN_VOCAB_SIZE = NUM_SPECIAL_TOKENS + 256 + MIN_MERGES  # specials + bytes + some merges = 768

# Plain-text files read by `iter_texts` when given a directory.
TEXT_SUFFIXES = (".txt", ".md", ".rst", ".py", ".c", ".h", ".cc", ".cpp", ".js", ".ts", ".java", ".go", ".rs",
                 ".html", ".css", ".json", ".jsonl", ".jsonl.gz", ".tex", ".csv", ".toml", ".yaml", ".yml",
                 ".sh")


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character map, the alphabet of HF's ByteLevel."""
    bs = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


_B2U = bytes_to_unicode()
_U2B = {c: b for b, c in _B2U.items()}


def _unicode_to_bytes(token: str) -> bytes:
    return bytes(_U2B[c] for c in token)


# ---- corpus ---------------------------------------------------------------------------------------
def _files(paths: Iterable[str | os.PathLike], suffixes: tuple[str, ...]) -> list[Path]:
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file() and f.name.endswith(suffixes))
            if not found:
                raise HerdError(f"no text files ({', '.join(suffixes[:4])}, ...) under {p}")
            out.extend(found)
        elif p.is_file():
            out.append(p)
        else:
            raise HerdError(f"input not found: {p} (give text files or directories)")
    return out


def _read_file(f: Path) -> Iterator[str]:
    """A .jsonl(.gz) file gives the "text" field of each record; any other file its whole text."""
    name = f.name
    if name.endswith((".jsonl", ".jsonl.gz")):
        opener = gzip.open if name.endswith(".gz") else open
        with opener(f, "rt", encoding="utf-8") as fh:
            for n, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                    text = rec["text"]
                except (ValueError, KeyError, TypeError):
                    raise HerdError(f"{f}: line {n} is not a JSON record with a \"text\" field") from None
                if not isinstance(text, str):
                    raise HerdError(f"{f}: line {n}: \"text\" is not a string")
                yield text
        return
    data = f.read_bytes()
    try:
        yield data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise HerdError(f"{f}: not UTF-8 text ({e.reason} at byte {e.start}); "
                        "convert it or leave it out") from None


def iter_texts(paths: Iterable[str | os.PathLike],
               suffixes: tuple[str, ...] = TEXT_SUFFIXES) -> Iterator[str]:
    """Texts from files and directories (recursively, files ending in `suffixes`)."""
    for f in _files(paths, suffixes):
        yield from _read_file(f)


def count_files(paths: Iterable[str | os.PathLike], suffixes: tuple[str, ...] = TEXT_SUFFIXES) -> int:
    return len(_files(paths, suffixes))


# ---- training ---------------------------------------------------------------------------------------
def train_hf_bpe(texts: Iterable[str], n_bpe: int, *, min_frequency: int = 2, show_progress: bool = True,
                 length: int | None = None):
    """The HF `tokenizers` byte-level BPE with Llama 3's pre-tokenization, trained to `n_bpe`
    tokens (256 bytes + merges). Returns a `tokenizers.Tokenizer`."""
    from tokenizers import Regex
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import decoders, models, pre_tokenizers, trainers

    tok = HFTokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(PAT_STR), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=n_bpe, min_frequency=min_frequency, show_progress=show_progress,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), special_tokens=[])
    tok.train_from_iterator(texts, trainer, length=length)
    return tok


def hf_merges(hf_tok) -> list[tuple[bytes, bytes]]:
    """The merge list of a trained HF byte-level BPE, as pairs of byte strings."""
    model = json.loads(hf_tok.to_str())["model"]
    if model.get("type") != "BPE":
        raise HerdError(f"expected a BPE tokenizer, got {model.get('type')}")
    merges = []
    for m in model["merges"]:
        a, b = m.split(" ", 1) if isinstance(m, str) else m  # old ("a b") and new ([a, b]) formats
        merges.append((_unicode_to_bytes(a), _unicode_to_bytes(b)))
    return merges


def merges_to_ranks(merges: list[tuple[bytes, bytes]]) -> dict[bytes, int]:
    """tiktoken ranks: the 256 bytes first (byte order), then each merge's token in merge order.
    A merge whose token already exists (the trainer can reach a token twice) adds nothing."""
    ranks = {bytes([b]): b for b in range(256)}
    for a, b in merges:
        if a not in ranks or b not in ranks:
            raise HerdError("BPE merge list refers to a token before it is made; the tokenizer is corrupt")
        ranks.setdefault(a + b, len(ranks))
    return ranks


def _bpe_parts(ranks: dict[bytes, int], token: bytes, max_rank: int) -> list[bytes]:
    """tiktoken's algorithm (merge the lowest-ranked adjacent pair, leftmost first) on `token`,
    using only ranks below `max_rank`."""
    parts = [bytes([b]) for b in token]
    while len(parts) > 1:
        best, best_rank = -1, max_rank
        for i in range(len(parts) - 1):
            r = ranks.get(parts[i] + parts[i + 1])
            if r is not None and r < best_rank:
                best, best_rank = i, r
        if best < 0:
            break
        parts[best:best + 2] = [parts[best] + parts[best + 1]]
    return parts


@dataclass
class MergeCheck:
    merges: int
    out_of_order: int  # a part does not rank below the merged token
    inconsistent: int  # tiktoken would build the token from a different pair than the trainer did
    examples: list

    @property
    def ok(self) -> bool:
        return self.out_of_order == 0 and self.inconsistent == 0


def check_merges(ranks: dict[bytes, int], merges: list[tuple[bytes, bytes]]) -> MergeCheck:
    """Check that tiktoken ranks reproduce the merge list: for each merge (a, b) -> t,
    rank(a) < rank(t) and rank(b) < rank(t), and tiktoken's own BPE of t's bytes with the ranks
    below rank(t) ends in exactly [a, b]. Then rank-greedy (tiktoken) and merge-list (HF) BPE
    take the same steps."""
    out_of_order = inconsistent = 0
    examples = []
    seen = set()
    for a, b in merges:
        t = a + b
        if t in seen:  # a second merge to an existing token: tiktoken reaches it by the first one
            continue
        seen.add(t)
        r = ranks[t]
        if not (ranks[a] < r and ranks[b] < r):
            out_of_order += 1
            examples.append((a, b))
        elif _bpe_parts(ranks, t, r) != [a, b]:
            inconsistent += 1
            if len(examples) < 5:
                examples.append((a, b))
    return MergeCheck(len(merges), out_of_order, inconsistent, examples)


def train_bpe(texts: Iterable[str] | Iterable[str | os.PathLike] | None = None, vocab_size: int = 4096, *,
              files: Iterable[str | os.PathLike] | None = None, min_frequency: int = 2,
              show_progress: bool = True, allow_smaller: bool = False, name: str = "herd",
              return_hf: bool = False):
    """Train a Llama-3-style tokenizer with `vocab_size` ids in all (BPE ranks + 256 specials).

    `texts`: an iterable of strings; or `files`: text files / directories (.jsonl records give
    their "text"). Returns a herd `Tokenizer` (and the HF tokenizer too with `return_hf=True`).
    Raises HerdError if the corpus is too small to learn vocab_size-512 merges, unless
    `allow_smaller` (then the tokenizer is smaller; its `n_words` says by how much)."""
    if not isinstance(vocab_size, int) or vocab_size < MIN_VOCAB_SIZE:
        raise HerdError(f"vocab_size {vocab_size} is too small: it counts {NUM_SPECIAL_TOKENS} special "
                        f"tokens and 256 byte tokens, so it must be >= {MIN_VOCAB_SIZE} (>= {MIN_MERGES} "
                        "merges)")
    if (texts is None) == (files is None):
        raise HerdError("train_bpe: give either texts or files")
    if files is not None:
        files = list(files)
        texts = iter_texts(files)
    n_bpe = vocab_size - NUM_SPECIAL_TOKENS
    empty = True

    def guarded(it):
        nonlocal empty
        for t in it:
            if not isinstance(t, str):
                raise HerdError(f"train_bpe: expected texts (str), got {type(t).__name__}")
            if t:
                empty = False
                yield t

    hf = train_hf_bpe(guarded(texts), n_bpe, min_frequency=min_frequency, show_progress=show_progress)
    if empty:
        raise HerdError("train_bpe: the corpus is empty")
    merges = hf_merges(hf)
    ranks = merges_to_ranks(merges)
    if len(ranks) < n_bpe and not allow_smaller:
        raise HerdError(f"the corpus is too small for vocab_size {vocab_size}: only {len(ranks) - 256} "
                        f"merges reach min_frequency {min_frequency} (needed {n_bpe - 256}); give more text "
                        f"or a vocab_size <= {len(ranks) + NUM_SPECIAL_TOKENS}")
    check = check_merges(ranks, merges)
    if not check.ok:
        # Never seen on real corpora; if it happens the ids would differ from the HF trainer's.
        raise HerdError(f"BPE conversion check failed: {check.out_of_order} merges out of order, "
                        f"{check.inconsistent} not rebuilt by tiktoken (e.g. {check.examples[:2]})")
    tok = Tokenizer(ranks, name=name)
    return (tok, hf) if return_hf else tok


__all__ = ["train_bpe", "train_hf_bpe", "hf_merges", "merges_to_ranks", "check_merges", "iter_texts",
           "count_files", "bytes_to_unicode", "MIN_VOCAB_SIZE", "MergeCheck"]
