"""Contamination and memorization analysis (paper §5.1.4 "Contamination analysis"; the memorization
study of §5 [its exact section and the 50+50 token lengths are unconfirmed here]).

Contamination (after Singh et al., 2024, as the paper uses it): a token of an evaluation example
is covered when it lies inside some 8-gram of the example that also occurs in the pre-training
corpus; an example is contaminated when the covered fraction is at least T_D (chosen per dataset).
Scores are then reported on the clean and contaminated subsets separately.

The index scales to the whole corpus: every shard's 8-grams are hashed (a 64-bit polynomial rolling
hash, wrapping uint64 arithmetic in numpy) and stored as one sorted, de-duplicated uint64 array per
shard (8 bytes per distinct 8-gram; `NgramIndex.save` writes them as .npy and `load` memory-maps
them). A query hashes the example's 8-grams and looks each up with `np.searchsorted` in every
shard's array: O(m log N), no Python loop over the corpus. 64-bit hashes make false matches
negligible (~N*m / 2^64). Shards are herd token data directories (herd.data: uint32 .bin files plus
a document index, written by `herd tokenize`) or plain token arrays; n-grams that cross document
boundaries contain the BOS/EOS tokens, which never occur in an encoded example, so they never match.

Memorization (Ippolito et al., 2023, as in the paper): sample (prefix, continuation) pairs of 50 + 50
tokens from the training data; the inclusion rate is the fraction for which the model's greedy
continuation of the prefix equals the true continuation exactly.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from herd.errors import HerdError
from herd.fileio import atomic_open

MULT = np.uint64(0x9E3779B97F4A7C15)  # odd 64-bit multiplier (golden ratio), a standard hashing constant
OFFSET = np.uint64(0x632BE59BD9B4E019)
CHUNK = 1 << 24  # tokens hashed at a time while building (bounds memory at ~8 bytes x CHUNK x 3)


def hash_ngrams(tokens: np.ndarray, n: int = 8) -> np.ndarray:
    """64-bit hashes of all n-grams of `tokens` (len - n + 1 of them), uint64."""
    t = np.asarray(tokens).astype(np.uint64)
    m = len(t) - n + 1
    if m <= 0:
        return np.zeros(0, np.uint64)
    with np.errstate(over="ignore"):
        h = np.full(m, OFFSET, dtype=np.uint64)
        for j in range(n):
            h = h * MULT + (t[j : j + m] + np.uint64(1))
            h ^= h >> np.uint64(29)
    return h


def _shard_arrays(source) -> list[np.ndarray]:
    """Token arrays from a herd token directory (its train split), .bin/.npy files, or arrays."""
    if isinstance(source, np.ndarray):
        return [source]
    if isinstance(source, (str, os.PathLike)):
        p = Path(source)
        if p.is_dir():
            from herd.data.shards import TokenData

            return list(TokenData(p, "train").tokens)
        if not p.is_file():
            raise HerdError(f"training tokens not found: {p} (a herd token directory, .bin or .npy file)")
        if p.suffix == ".npy":
            return [np.load(p, mmap_mode="r")]
        if p.stat().st_size % 4:
            raise HerdError(f"{p}: size is not a multiple of 4; expected raw uint32 tokens")
        return [np.memmap(p, dtype=np.uint32, mode="r")]
    out = []
    for s in source:
        out += _shard_arrays(s) if isinstance(s, (str, os.PathLike, np.ndarray)) else [np.asarray(s)]
    return out


def sorted_unique(h: np.ndarray) -> np.ndarray:
    """Sorted distinct values (sort + neighbour compare: numpy 2.4's np.unique is ~50x slower here)."""
    h = np.sort(h)
    if len(h) == 0:
        return h
    keep = np.empty(len(h), dtype=bool)
    keep[0] = True
    np.not_equal(h[1:], h[:-1], out=keep[1:])
    return h[keep]


class NgramIndex:
    """Sorted hashed n-grams of a token corpus, one array per shard."""

    def __init__(self, tables: list[np.ndarray], n: int = 8):
        self.tables = tables
        self.n = n

    @classmethod
    def build(
        cls, sources, n: int = 8, out_dir: str | os.PathLike | None = None, progress: bool = False
    ) -> "NgramIndex":
        """Index every n-gram of the shards. With out_dir the tables are written there (and a
        later `load` reuses them)."""
        arrays = _shard_arrays(sources)
        if not arrays:
            raise HerdError("contamination: no training token shards to index")
        it = arrays
        if progress:
            from tqdm import tqdm

            it = tqdm(arrays, desc="8-gram index", unit="shard")
        tables = []
        for arr in it:
            parts = []
            for s in range(0, max(len(arr) - n + 1, 0), CHUNK):
                parts.append(sorted_unique(hash_ngrams(np.asarray(arr[s : s + CHUNK + n - 1]), n)))
            tables.append(sorted_unique(np.concatenate(parts)) if parts else np.zeros(0, np.uint64))
        idx = cls(tables, n)
        if out_dir is not None:
            idx.save(out_dir)
        return idx

    def save(self, out_dir: str | os.PathLike) -> Path:
        d = Path(out_dir)
        d.mkdir(parents=True, exist_ok=True)
        for i, t in enumerate(self.tables):
            with atomic_open(d / f"shard-{i:05d}.npy", "wb") as f:
                np.save(f, t)
        (d / "ngram.txt").write_text(f"n={self.n}\nshards={len(self.tables)}\n")
        return d

    @classmethod
    def load(cls, out_dir: str | os.PathLike) -> "NgramIndex":
        d = Path(out_dir)
        meta = d / "ngram.txt"
        if not meta.is_file():
            raise HerdError(f"{d}: not an n-gram index (no ngram.txt); build one with NgramIndex.build")
        kv = dict(line.split("=", 1) for line in meta.read_text().split())
        tables = [np.load(d / f"shard-{i:05d}.npy", mmap_mode="r") for i in range(int(kv["shards"]))]
        return cls(tables, int(kv["n"]))

    def contains(self, hashes: np.ndarray) -> np.ndarray:
        """Bool mask: which hashes occur in any shard."""
        order = np.argsort(hashes, kind="stable")
        q = hashes[order]  # sorted keys: searchsorted walks the table once instead of jumping around
        found = np.zeros(len(q), dtype=bool)
        for t in self.tables:
            if len(t) == 0:
                continue
            k = np.searchsorted(t, q)
            k[k == len(t)] = 0
            found |= np.asarray(t[k]) == q
        out = np.empty_like(found)
        out[order] = found
        return out

    def covered(self, tokens: Sequence[int]) -> np.ndarray:
        """Bool mask over `tokens`: inside some n-gram that occurs in the corpus."""
        return self.covered_many([tokens])[0]

    def covered_many(self, token_lists: Sequence[Sequence[int]]) -> list[np.ndarray]:
        """`covered` for many examples with one hashing pass and one lookup per shard."""
        n = self.n
        arrs = [np.asarray(t, dtype=np.int64).reshape(-1) for t in token_lists]
        lengths = np.array([len(a) for a in arrs], dtype=np.int64)
        if len(arrs) == 0 or lengths.sum() == 0:
            return [np.zeros(len(a), dtype=bool) for a in arrs]
        flat = np.concatenate(arrs)
        h = hash_ngrams(flat, n)
        owner = np.repeat(np.arange(len(arrs)), lengths)
        # an n-gram starting at i is an example's own only if it ends in the same example
        valid = owner[: len(h)] == owner[n - 1 :] if len(h) else np.zeros(0, dtype=bool)
        hit = np.zeros(len(h), dtype=bool)
        hit[valid] = self.contains(h[valid])
        # token j is covered when an n-gram starting in [j - n + 1, j] is a hit
        starts = np.zeros(len(flat) + 1, dtype=np.int64)
        starts[1 : len(h) + 1] = np.cumsum(hit)
        starts[len(h) + 1 :] = starts[len(h)]
        j = np.arange(len(flat))
        cov = (starts[j + 1] - starts[np.maximum(j - n + 1, 0)]) > 0
        return np.split(cov, np.cumsum(lengths)[:-1])


def contamination(index: NgramIndex, token_lists: Iterable[Sequence[int]], batch: int = 4096) -> list[float]:
    """Fraction of each example's tokens covered by corpus n-grams (0 for examples shorter than n)."""
    lists = list(token_lists)
    out: list[float] = []
    for b in range(0, len(lists), batch):
        out += [float(c.mean()) if len(c) else 0.0 for c in index.covered_many(lists[b : b + batch])]
    return out


def split_by_contamination(
    correct: Sequence[bool | float], fractions: Sequence[float], threshold: float
) -> dict:
    """Scores on the clean (fraction < T_D) and contaminated (>= T_D) subsets."""
    if len(correct) != len(fractions):
        raise HerdError(f"contamination: {len(correct)} scores but {len(fractions)} fractions")
    if not 0.0 <= threshold <= 1.0:
        raise HerdError(f"contamination threshold T_D must be in [0, 1], got {threshold}")
    out = {"threshold": threshold}
    for name, sel in (
        ("clean", [f < threshold for f in fractions]),
        ("contaminated", [f >= threshold for f in fractions]),
    ):
        xs = [float(c) for c, s in zip(correct, sel) if s]
        out[name] = {"n": len(xs), "score": sum(xs) / len(xs) if xs else None}
    out["contaminated_fraction"] = out["contaminated"]["n"] / max(len(fractions), 1)
    return out


def sample_spans(sources, n_samples: int = 100, length: int = 100, seed: int = 0) -> list[np.ndarray]:
    """n_samples random spans of `length` tokens from the training shards (no Python loop over data)."""
    arrays = [a for a in _shard_arrays(sources) if len(a) >= length]
    if not arrays:
        raise HerdError(f"memorization: no training shard has {length} tokens")
    rng = np.random.default_rng(seed)
    sizes = np.array([len(a) - length + 1 for a in arrays], dtype=np.float64)
    which = rng.choice(len(arrays), size=n_samples, p=sizes / sizes.sum())
    return [
        np.asarray(arrays[w][s : s + length]).astype(np.int64)
        for w in which
        for s in [int(rng.integers(0, len(arrays[w]) - length + 1))]
    ]


def memorization(
    model,
    sources,
    n_samples: int = 100,
    prefix_len: int = 50,
    cont_len: int = 50,
    seed: int = 0,
    max_batch: int = 8,
) -> dict:
    """Inclusion rate: fraction of sampled training spans whose greedy continuation of the first
    prefix_len tokens reproduces the next cont_len tokens exactly."""
    from herd.inference import Generator

    spans = sample_spans(sources, n_samples, prefix_len + cont_len, seed)
    gen = Generator(model, None, max_batch=max_batch)
    prompts = [s[:prefix_len].tolist() for s in spans]
    # No stop tokens: an end-of-text inside the true continuation must be reproduced too.
    outs = gen.generate(prompts, max_new_tokens=cont_len, temperature=0.0, stop_tokens=[])
    outs = sorted(outs, key=lambda o: o.prompt_index)
    hits = [list(o.tokens) == s[prefix_len:].tolist() for o, s in zip(outs, spans)]
    return {
        "inclusion_rate": sum(hits) / len(hits),
        "n": len(hits),
        "prefix_len": prefix_len,
        "cont_len": cont_len,
        "included": hits,
    }


__all__ = [
    "hash_ngrams",
    "NgramIndex",
    "contamination",
    "split_by_contamination",
    "sample_spans",
    "memorization",
]
