"""Heuristic document filters (paper §3.1.1, "Heuristic filtering").

The paper names three families and leaves thresholds unstated, so defaults follow Gopher (Rae et
al. 2021) and C4/RefinedWeb where they exist [unconfirmed for Llama 3]:
- duplicated n-gram coverage ratio (Rae et al.) "to remove lines that consist of repeated content
  such as logging or error messages": dup-line fraction, dup-line character fraction, top 2/3/4-gram
  character fraction, and the fraction of characters inside repeated 5..10-grams;
- "dirty word" counting (Raffel et al.) "to filter out adult websites": fraction of words in the
  language's word list (English ships with better-profanity; other languages via a file);
- token-distribution Kullback-Leibler divergence "to filter out documents containing excessive
  numbers of outlier tokens compared to the training corpus distribution": KL(p_doc || p_corpus) with
  a herd Tokenizer, the corpus unigram distribution measured over the whole dataset in the run;
- plus the usual length / symbol / line-shape rules (Gopher quality filter), applied to prose
  domains only (code is not judged by the shape of prose; its repetition thresholds are scaled).
`check()` returns the first failing rule's name (the drop reason) and all measured values.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from functools import lru_cache
from pathlib import Path

import numpy as np

from herd.errors import HerdError

_WORD_RE = re.compile(r"\w+(?:'\w+)?", re.UNICODE)
_BULLETS = ("•", "●", "○", "▪", "‣", "-", "*", "–", "·")


def words_of(text: str) -> list[str]:
    return text.split()


def dup_line_stats(text: str) -> tuple[float, float]:
    """(fraction of lines that repeat an earlier line, fraction of characters in such lines)."""
    lines = [ln.strip() for ln in text.split("\n") if ln.strip()]
    if not lines:
        return 0.0, 0.0
    seen, dup_lines, dup_chars = set(), 0, 0
    total_chars = sum(len(ln) for ln in lines)
    for ln in lines:
        if ln in seen:
            dup_lines += 1
            dup_chars += len(ln)
        else:
            seen.add(ln)
    return dup_lines / len(lines), dup_chars / max(total_chars, 1)


def top_ngram_char_frac(words: list[str], n: int) -> float:
    """Characters covered by the most frequent n-gram (counted with repetition) / all word characters."""
    if len(words) < n:
        return 0.0
    grams = Counter(tuple(words[i:i + n]) for i in range(len(words) - n + 1))
    gram, count = grams.most_common(1)[0]
    if count <= 1:
        return 0.0
    total = sum(len(w) for w in words)
    return sum(len(w) for w in gram) * count / max(total, 1)


def dup_ngram_char_frac(words: list[str], n: int) -> float:
    """Fraction of word characters inside n-grams that occur more than once (Gopher's coverage)."""
    if len(words) < n:
        return 0.0
    grams = [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]
    counts = Counter(grams)
    covered = np.zeros(len(words), dtype=bool)
    seen: set = set()
    for i, g in enumerate(grams):
        if counts[g] > 1:
            if g in seen:  # mark repeats, not the first occurrence
                covered[i:i + n] = True
            seen.add(g)
    lens = np.fromiter((len(w) for w in words), dtype=np.int64, count=len(words))
    return float(lens[covered].sum() / max(lens.sum(), 1))


@lru_cache(maxsize=16)
def dirty_words(lang: str, files: tuple = ()) -> frozenset[str]:
    """The dirty-word list of a language: a configured file, else better-profanity's English list."""
    table = dict(files)
    if lang in table:
        p = Path(table[lang])
        if not p.is_file():
            raise HerdError(f"heuristics.dirty_word_files[{lang!r}] not found: {p}")
        return frozenset(w.strip().lower() for w in p.read_text().splitlines()
                         if w.strip() and not w.startswith("#"))
    if lang == "en":
        try:
            import better_profanity
        except ImportError:
            return frozenset()
        p = Path(better_profanity.__file__).parent / "profanity_wordlist.txt"
        return frozenset(w.strip().lower() for w in p.read_text().splitlines() if w.strip())
    return frozenset()


def dirty_word_ratio(text: str, wordlist: frozenset[str]) -> float:
    if not wordlist:
        return 0.0
    toks = [t.lower() for t in _WORD_RE.findall(text)]
    if not toks:
        return 0.0
    return sum(t in wordlist for t in toks) / len(toks)


def shape_stats(text: str, words: list[str]) -> dict:
    lines = [ln for ln in text.split("\n") if ln.strip()]
    n_words = len(words)
    stats = {
        "n_words": n_words,
        "mean_word_len": (sum(len(w) for w in words) / n_words) if n_words else 0.0,
        "symbol_word_ratio": (((text.count("#") + text.count("...") + text.count("…")) / n_words)
                              if n_words else 0.0),
        "bullet_line_frac": ((sum(ln.lstrip().startswith(_BULLETS) for ln in lines) / len(lines))
                             if lines else 0.0),
        "ellipsis_line_frac": ((sum(ln.rstrip().endswith(("...", "…")) for ln in lines) / len(lines))
                               if lines else 0.0),
        "alpha_word_frac": (sum(any(c.isalpha() for c in w) for w in words) / n_words) if n_words else 0.0,
        "max_line_chars": max((len(ln) for ln in lines), default=0),
    }
    return stats


class KLScorer:
    """KL(p_doc || p_corpus) in nats over a herd Tokenizer's ids; corpus counts get add-alpha
    smoothing (a small alpha, so a small corpus is not drowned by 128K unseen ids)."""

    def __init__(self, corpus_counts: np.ndarray, tokenizer, alpha: float = 0.01):
        self.tok = tokenizer
        c = corpus_counts.astype(np.float64) + alpha
        self.log_q = np.log(c / c.sum())

    def __call__(self, text: str) -> tuple[float, int]:
        ids = self.tok.encode(text)
        if not ids:
            return 0.0, 0
        uniq, counts = np.unique(np.asarray(ids, dtype=np.int64), return_counts=True)
        p = counts / counts.sum()
        return float(np.sum(p * (np.log(p) - self.log_q[uniq]))), len(ids)


def doc_token_weights(ids, vocab: int, cap: int = 0) -> np.ndarray:
    """One document's share of the corpus reference distribution of the KL heuristic: its token
    counts, scaled down so the document weighs at most `cap` tokens (0: no cap). A robust reference:
    one adversarial document ("word word word ..." of megabytes) cannot outweigh the rest."""
    c = np.bincount(np.asarray(ids, dtype=np.int64), minlength=vocab)[:vocab].astype(np.float64)
    n = len(ids)
    if cap and n > cap:
        c *= cap / n
    return c


def token_counts(text: str, tokenizer, vocab: int) -> np.ndarray:
    return np.bincount(np.asarray(tokenizer.encode(text), dtype=np.int64), minlength=vocab)[:vocab]


def check(text: str, cfg, lang: str, domain: str, kl: KLScorer | None = None) -> tuple[str | None, dict]:
    """First failing heuristic (a drop reason such as 'dup_ngram_5') or None, and the values."""
    words = words_of(text)
    vals: dict = {"n_words": len(words)}
    if len(words) > cfg.max_words:  # before the costly rules: a giant document is judged by size
        return "too_many_words", vals
    prose = domain in cfg.prose_domains
    scale = 1.0 if prose else cfg.nonprose_rep_scale
    dl, dc = dup_line_stats(text)
    vals["dup_line_frac"], vals["dup_line_char_frac"] = dl, dc
    reason = None
    if dl > cfg.max_dup_line_frac * scale:
        reason = "dup_line_frac"
    elif dc > cfg.max_dup_line_char_frac * scale:
        reason = "dup_line_char_frac"
    for n, thr in sorted(cfg.max_top_ngram_char_frac.items(), key=lambda kv: int(kv[0])):
        v = top_ngram_char_frac(words, int(n))
        vals[f"top_{n}gram_char_frac"] = v
        if reason is None and v > thr * scale:
            reason = f"top_{n}gram_char_frac"
    for n, thr in sorted(cfg.max_dup_ngram_char_frac.items(), key=lambda kv: int(kv[0])):
        if reason is not None:
            break  # the costliest rule; skip once a document has already failed
        v = dup_ngram_char_frac(words, int(n))
        vals[f"dup_{n}gram_char_frac"] = v
        if v > thr * scale:
            reason = f"dup_{n}gram_char_frac"
    wl = dirty_words(lang, tuple(sorted(cfg.dirty_word_files.items())))
    vals["dirty_word_ratio"] = dirty_word_ratio(text, wl)
    if reason is None and vals["dirty_word_ratio"] > cfg.max_dirty_word_ratio:
        reason = "dirty_words"
    s = shape_stats(text, words)
    vals.update(s)
    if reason is None and s["max_line_chars"] > cfg.max_line_chars:
        reason = "max_line_chars"
    if reason is None and prose:
        if s["n_words"] < cfg.min_words:
            reason = "too_few_words"
        elif not cfg.min_mean_word_len <= s["mean_word_len"] <= cfg.max_mean_word_len:
            reason = "mean_word_len"
        elif s["symbol_word_ratio"] > cfg.max_symbol_word_ratio:
            reason = "symbol_word_ratio"
        elif s["bullet_line_frac"] > cfg.max_bullet_line_frac:
            reason = "bullet_lines"
        elif s["ellipsis_line_frac"] > cfg.max_ellipsis_line_frac:
            reason = "ellipsis_lines"
        elif s["alpha_word_frac"] < cfg.min_alpha_word_frac:
            reason = "alpha_word_frac"
    if kl is not None and cfg.kl:
        v, n_tok = kl(text)
        vals["kl"], vals["n_tokens"] = v, n_tok
        if reason is None and n_tok >= cfg.kl_min_tokens and v > cfg.max_kl:
            reason = "token_kl"
    if not math.isfinite(vals.get("kl", 0.0)):
        vals["kl"] = 0.0
    return reason, vals
