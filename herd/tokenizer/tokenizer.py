"""The Llama 3 tokenizer (paper §3.2): tiktoken BPE with 256 special tokens.

`Tokenizer.llama3()` loads the real 128,000 BPE ranks that ship in the PyPI package
`llama-models` (llama_models/llama3/tokenizer.model). `Tokenizer.load(path)` loads any BPE file in
tiktoken's format (base64 token, space, rank per line), e.g. one trained by `herd tokenizer train`
(herd/tokenizer/train.py). The special tokens take the ids right after the BPE ranks, in
llama-models' order, and encoding follows Meta's cutting of long inputs (400K-character pieces,
runs of > 25K whitespace or non-whitespace characters split), so ids are identical to Meta's
`Tokenizer.encode`. `encode_batch` encodes many texts on all cores (tiktoken releases the GIL, so
plain threads scale) with the same cutting, hence the same ids as `encode`.
"""

from __future__ import annotations

import base64
import importlib.util
import multiprocessing as mp
import os
import re
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path
from typing import AbstractSet, Collection, Iterable, Iterator, Literal, Sequence

from herd.errors import HerdError
from herd.fileio import atomic_open

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



def _long_run_pattern(max_run: int) -> re.Pattern:
    """Runs of > max_run whitespace or non-whitespace characters, found by regex instead of
    Meta's per-character loop. The lookbehinds let a match start only where a run starts, so
    the scan stays linear (without them every position inside a long run rescans it)."""
    return re.compile(r"(?<!\s)\s{%d,}|(?<!\S)\S{%d,}" % (max_run + 1, max_run + 1))


_LONG_RUN = _long_run_pattern(MAX_NO_WHITESPACES_CHARS)
_WHITESPACE = re.compile(r"\s")


def llama3_tokenizer_path() -> Path:
    """Where the real Llama 3 BPE file lies: inside the installed `llama-models` package."""
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
    check_ranks(ranks, where=str(p))
    return ranks


def check_ranks(ranks: dict[bytes, int], where: str = "tokenizer") -> None:
    """The special tokens take ids len(ranks).. , so the ranks must be exactly 0..n-1, and every
    single byte must be a token (else tiktoken cannot encode arbitrary text)."""
    n = len(ranks)
    if sorted(ranks.values()) != list(range(n)):
        raise HerdError(f"{where}: BPE ranks are not exactly 0..{n - 1} (duplicated or missing ranks); "
                        "the file is corrupt")
    missing = [b for b in range(256) if bytes([b]) not in ranks]
    if missing:
        raise HerdError(f"{where}: {len(missing)} of the 256 single bytes have no rank (e.g. byte "
                        f"{missing[0]}); a byte-level BPE file needs all of them")


def save_bpe_ranks(ranks: dict[bytes, int], path: str | os.PathLike) -> None:
    with atomic_open(path, "wb") as f:
        for tok, rank in sorted(ranks.items(), key=lambda kv: kv[1]):
            f.write(base64.b64encode(tok) + b" " + str(rank).encode() + b"\n")


def _has_long_run(s: str, max_run: int) -> bool:
    """Cheap test for a run of > max_run whitespace or non-whitespace characters. Such a run
    contains a whole aligned block of max_run // 2 characters, so checking each block (both
    checks stop at the first character that breaks the run) costs almost nothing on real text."""
    b = max(1, max_run // 2)
    for i in range(0, len(s) - b + 1, b):
        block = s[i:i + b]
        if block.isspace() or _WHITESPACE.search(block) is None:
            return True
    return False


def split_long_runs(s: str, max_run: int = MAX_NO_WHITESPACES_CHARS) -> Iterator[str]:
    """Meta's `_split_whitespaces_or_nonwhitespaces`: cut `s` so that no piece holds more than
    `max_run` consecutive whitespace or non-whitespace characters. Same cuts as Meta's loop
    (Python's `\\s` is exactly `str.isspace`, which Meta's loop uses)."""
    if not _has_long_run(s, max_run):
        yield s
        return
    if max_run == MAX_NO_WHITESPACES_CHARS:
        pattern = _LONG_RUN
    else:
        pattern = _long_run_pattern(max_run)
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
        """A tiktoken BPE file, or a directory holding one named tokenizer.model (a herd checkpoint),
        or under original/ (an HF export laid out as Meta's HF repos)."""
        p = Path(path)
        if p.is_dir():
            meta_hf = p / "original" / "tokenizer.model"
            p = (meta_hf if not (p / "tokenizer.model").is_file() and meta_hf.is_file()
                 else p / "tokenizer.model")
        return cls(load_bpe_ranks(p), name=p.stem, path=str(p))

    @classmethod
    def from_spec(cls, spec: str | os.PathLike) -> "Tokenizer":
        """"llama3" -> the real Llama 3 tokenizer; anything else is a path for `load`."""
        return cls.llama3() if str(spec) == "llama3" else cls.load(spec)

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
                t.extend(self.model.encode(piece, allowed_special=allowed,
                                           disallowed_special=disallowed_special))
        if eos:
            t.append(self.eos_id)
        return t

    def _pieces(self, s: str) -> list[str]:
        """Meta's cutting: 400K-character chunks, then no run of > 25K (non-)whitespace."""
        return [piece for i in range(0, len(s), TIKTOKEN_MAX_ENCODE_CHARS)
                for piece in split_long_runs(s[i:i + TIKTOKEN_MAX_ENCODE_CHARS])]

    def _encode_numpy(self, piece: str):
        try:
            return self.model.encode_to_numpy(piece, allowed_special=set(), disallowed_special=())
        except UnicodeEncodeError:  # lone surrogates: the same repair tiktoken's encode does
            piece = piece.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
            return self.model.encode_to_numpy(piece, allowed_special=set(), disallowed_special=())

    def encode_batch(self, texts: Iterable[str], *, bos: bool = False, eos: bool = False,
                     num_threads: int | None = None, numpy: bool = False) -> list:
        """`[encode(t, bos=bos, eos=eos) for t in texts]` on `num_threads` threads (default: all
        cores). Text that looks like a special token is encoded as plain text, as `encode` does by
        default. tiktoken's Rust core releases the GIL, so threads run in parallel; with
        numpy=True each text's ids come back as a uint32 array, which skips building Python ints
        under the GIL and scales further with threads (what corpus tokenization wants)."""
        texts = list(texts)
        for t in texts:
            if not isinstance(t, str):
                raise HerdError(f"tokenizer: expected texts (str), got {type(t).__name__}")
        # Cut every text into Meta's pieces, encode all pieces in parallel, then join per text.
        owner: list[int] = []
        pieces: list[str] = []
        for i, t in enumerate(texts):
            ps = self._pieces(t)
            pieces.extend(ps)
            owner.extend([i] * len(ps))
        enc = self._encode_numpy if numpy else self.model.encode_ordinary
        num_threads = num_threads or os.cpu_count() or 1
        if num_threads <= 1 or len(pieces) <= 1:
            encoded = [enc(p) for p in pieces]
        else:
            # Several pieces per task keep the thread pool's overhead small next to the encoding.
            k = max(1, min(64, len(pieces) // (4 * num_threads)))
            with ThreadPoolExecutor(num_threads) as ex:
                groups = ex.map(lambda g: [enc(p) for p in g],
                                [pieces[j:j + k] for j in range(0, len(pieces), k)])
                encoded = [ids for g in groups for ids in g]
        if numpy:
            import numpy as np

            parts: list[list] = [[] for _ in texts]
            for i, ids in zip(owner, encoded):
                parts[i].append(ids)
            head = [np.array([self.bos_id], dtype=np.uint32)] if bos else []
            tail = [np.array([self.eos_id], dtype=np.uint32)] if eos else []
            return [np.concatenate(head + p + tail) if (head or p or tail) else np.zeros(0, np.uint32)
                    for p in parts]
        out: list[list[int]] = [[self.bos_id] if bos else [] for _ in texts]
        for i, ids in zip(owner, encoded):
            out[i].extend(ids)
        if eos:
            for ids in out:
                ids.append(self.eos_id)
        return out

    def decode(self, t: Sequence[int]) -> str:
        """Text of the ids; bytes that are not valid UTF-8 (a token cut mid-character) become U+FFFD."""
        return self.decode_bytes(t).decode("utf-8", errors="replace")

    def decode_bytes(self, t: Sequence[int]) -> bytes:
        try:
            return self.model.decode_bytes([int(i) for i in t])
        except (KeyError, ValueError, OverflowError, TypeError):
            bad = next((i for i in t if not (isinstance(i, int) or hasattr(i, "__index__"))
                        or not 0 <= int(i) < self.n_words), None)
            raise HerdError(f"cannot decode token id {bad!r}: ids of this tokenizer are "
                            f"0..{self.n_words - 1}") from None

    def id_to_piece(self, i: int) -> bytes:
        try:
            return self.model.decode_single_token_bytes(i)
        except (KeyError, ValueError, OverflowError, TypeError):
            raise HerdError(f"cannot decode token id {i!r}: ids of this tokenizer are 0..{self.n_words - 1} "
                            "(a model with a larger vocab_size than its tokenizer?)") from None

    def is_special(self, i: int) -> bool:
        return i >= len(self.mergeable_ranks)

    def __repr__(self) -> str:
        return f"Tokenizer({self.model.name!r}, n_words={self.n_words})"


_WORKER_TOKENIZER: "Tokenizer | None" = None


def _worker_init(ranks: dict[bytes, int], name: str) -> None:
    global _WORKER_TOKENIZER
    _WORKER_TOKENIZER = Tokenizer(ranks, name=name)


def _worker_encode(job: tuple[list[str], bool, bool]) -> list:
    texts, bos, eos = job
    return _WORKER_TOKENIZER.encode_batch(texts, bos=bos, eos=eos, num_threads=1, numpy=True)


class ParallelEncoder:
    """Encode a large corpus on every core with processes, for machines where threads stop
    scaling (measured: `encode_batch`'s threads peak around 8 because building the results needs
    the GIL). Each worker holds its own copy of the tokenizer; ids come back as uint32 arrays,
    identical to `tok.encode`.

        with ParallelEncoder(tok, processes=16) as pe:
            for ids in pe.encode_batch(texts):   # list of np.uint32 arrays, in order
                ...
    """

    def __init__(self, tok: "Tokenizer", processes: int | None = None, chunk_chars: int = 250_000):
        self.processes = processes or os.cpu_count() or 1
        self.chunk_chars = chunk_chars
        ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
        self.pool = ProcessPoolExecutor(self.processes, mp_context=ctx, initializer=_worker_init,
                                        initargs=(tok.mergeable_ranks, tok.model.name))

    def encode_batch(self, texts: Iterable[str], *, bos: bool = False, eos: bool = False) -> list:
        jobs, cur, n = [], [], 0
        for t in texts:
            if not isinstance(t, str):
                raise HerdError(f"tokenizer: expected texts (str), got {type(t).__name__}")
            cur.append(t)
            n += len(t)
            if n >= self.chunk_chars:  # ~250K characters per task: little overhead, good balance
                jobs.append((cur, bos, eos))
                cur, n = [], 0
        if cur:
            jobs.append((cur, bos, eos))
        return [ids for chunk in self.pool.map(_worker_encode, jobs) for ids in chunk]

    def close(self) -> None:
        self.pool.shutdown(cancel_futures=True)

    def __enter__(self) -> "ParallelEncoder":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


__all__ = ["Tokenizer", "ParallelEncoder", "PAT_STR", "SPECIAL_TOKENS", "NUM_SPECIAL_TOKENS", "check_ranks",
           "llama3_tokenizer_path",
           "load_bpe_ranks", "save_bpe_ranks", "split_long_runs"]
