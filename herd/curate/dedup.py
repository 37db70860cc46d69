"""De-duplication at three levels (paper §3.1.1, "De-duplication").

- URL level: keep the most recent document of each normalised URL (herd/curate/urls.py).
- Document level: "global MinHash de-duplication across the entire dataset to remove near duplicate
  documents". Signatures are datasketch MinHashes of word shingles (shingle size and number of
  permutations configurable); locality-sensitive hashing splits each signature into `bands` bands
  and documents that share a band are candidates; a candidate whose estimated Jaccard similarity
  with an already-kept document is >= `threshold` is dropped (greedy, in input order, so the first
  copy survives and memory holds only kept documents' band keys).
- Line level: "we remove lines that appeared more than 6 times in each bucket of 30M documents";
  bucket size and the count are configurable; a document left empty is dropped.
"""

from __future__ import annotations

import hashlib
import re
import struct
import zlib
from collections import defaultdict

import numpy as np

_WORD_RE = re.compile(r"\w+", re.UNICODE)


def shingles(text: str, k: int) -> list[bytes]:
    """Word k-grams of the lower-cased text (a text shorter than k words is one shingle)."""
    words = _WORD_RE.findall(text.lower())
    if len(words) <= k:
        return [" ".join(words).encode()] if words else []
    return [" ".join(words[i:i + k]).encode() for i in range(len(words) - k + 1)]


_PERM_CACHE: dict = {}
_MULT = np.uint64(0x9E3779B1)  # odd 32-bit multiplier of the rolling shingle hash


def shingle_hashes(text: str, k: int) -> np.ndarray:
    """32-bit hashes of the word k-grams: crc32 per word, combined by a polynomial over the k-gram.
    Same value as hashing each joined shingle, up to 32-bit collisions, at a tenth of the cost."""
    words = _WORD_RE.findall(text.lower())
    if not words:
        return np.zeros(0, dtype=np.uint64)
    w = np.fromiter((zlib.crc32(x.encode()) for x in words), dtype=np.uint64, count=len(words))
    if len(w) <= k:
        k = len(w)
    n = len(w) - k + 1
    h = np.zeros(n, dtype=np.uint64)
    for j in range(k):  # uint64 wrap-around is the modulus
        h = h * _MULT + w[j:j + n]
    return np.unique(h & np.uint64(0xFFFFFFFF))


def minhash_signature(text: str, shingle_size: int = 5, num_perm: int = 128, seed: int = 1) -> np.ndarray:
    """MinHash signature (uint32[num_perm], datasketch's affine32 scheme) of the text's shingles."""
    from datasketch import MinHash

    key = (num_perm, seed)
    if key not in _PERM_CACHE:  # permutations are the expensive part of MinHash(); make them once
        m0 = MinHash(num_perm=num_perm, seed=seed, hashfunc=int)
        _PERM_CACHE[key] = (m0.permutations, m0.scheme)
    perms, scheme = _PERM_CACHE[key]
    m = MinHash(num_perm=num_perm, seed=seed, hashfunc=int, permutations=perms, scheme=scheme)
    hv = shingle_hashes(text, shingle_size)
    if hv.size:
        m.update_batch(hv.tolist())
    return np.asarray(m.hashvalues, dtype=np.uint32)


class MinHashLSH:
    """Greedy near-duplicate filter over signatures added in order."""

    def __init__(self, num_perm: int = 128, bands: int = 16, threshold: float = 0.8):
        assert num_perm % bands == 0
        self.num_perm, self.bands, self.rows, self.threshold = num_perm, bands, num_perm // bands, threshold
        self.tables: list[dict[bytes, list[int]]] = [defaultdict(list) for _ in range(bands)]
        self.kept: dict[int, np.ndarray] = {}

    def add(self, key: int, sig: np.ndarray) -> int | None:
        """Add a document; return the key of the kept document it duplicates (None = kept)."""
        band_keys = [sig[b * self.rows:(b + 1) * self.rows].tobytes() for b in range(self.bands)]
        seen: set[int] = set()
        for table, bk in zip(self.tables, band_keys):
            for other in table.get(bk, ()):
                if other in seen:
                    continue
                seen.add(other)
                if float(np.mean(self.kept[other] == sig)) >= self.threshold:
                    return other
        for table, bk in zip(self.tables, band_keys):
            table[bk].append(key)
        self.kept[key] = sig
        return None


def line_hash(line: str) -> int:
    """64-bit hash of a stripped line (stable across processes, unlike hash())."""
    return struct.unpack("<q",
                         hashlib.blake2b(line.strip().encode("utf-8", "replace"), digest_size=8).digest())[0]


def line_hashes(text: str, min_chars: int = 1) -> list[int]:
    """Hashes of the lines that line-level dedup may remove (empty/short lines are never counted)."""
    return [line_hash(ln) for ln in text.split("\n") if len(ln.strip()) >= min_chars]


def frequent_lines(bucket_hashes: list[np.ndarray], max_occurrences: int = 6) -> np.ndarray:
    """Sorted hashes occurring more than max_occurrences times in one bucket of documents."""
    if not bucket_hashes:
        return np.zeros(0, dtype=np.int64)
    allh = np.concatenate(bucket_hashes).astype(np.int64, copy=False)
    if allh.size == 0:
        return allh
    uniq, counts = np.unique(allh, return_counts=True)
    return uniq[counts > max_occurrences]


def remove_lines(text: str, frequent: np.ndarray | set, min_chars: int = 1) -> tuple[str, int]:
    """Text without its frequent lines, and how many lines were removed."""
    if len(frequent) == 0:
        return text, 0
    freq = frequent if isinstance(frequent, (set, frozenset)) else None
    out, removed = [], 0
    for ln in text.split("\n"):
        if len(ln.strip()) >= min_chars:
            h = line_hash(ln)
            hit = (h in freq) if freq is not None else _in_sorted(frequent, h)
            if hit:
                removed += 1
                continue
        out.append(ln)
    return "\n".join(out).strip("\n"), removed


def _in_sorted(arr: np.ndarray, h: int) -> bool:
    i = int(np.searchsorted(arr, h))
    return i < arr.size and int(arr[i]) == h


def line_dedup_buckets(docs: list[str], bucket_docs: int, max_occurrences: int = 6,
                       min_chars: int = 1) -> tuple[list[str], int]:
    """In-memory line-level dedup of a list of documents (used by tests and small runs)."""
    out, removed = [], 0
    for start in range(0, len(docs), bucket_docs):
        bucket = docs[start:start + bucket_docs]
        freq = frequent_lines([np.array(line_hashes(d, min_chars), dtype=np.int64) for d in bucket],
                              max_occurrences)
        fs = set(freq.tolist())
        for d in bucket:
            t, r = remove_lines(d, fs, min_chars)
            out.append(t)
            removed += r
    return out, removed
