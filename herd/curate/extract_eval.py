"""Extraction quality against ground truth (paper §3.1.1: the parser "optimizes for precision in
boilerplate removal and content recall").

Ground truth: Debian's python3.11-doc ships each HTML page of the Python docs with the reST source
it was built from (html/_sources/<page>.rst.txt). We strip reST markup from the source and score
line-level recall (ground-truth lines found in the extract) and precision (extract lines found in
the ground truth). A line is "found" when at least half of its word trigrams (bigrams/unigrams for
shorter lines) occur on the other side; lines of fewer than 2 words are not scored. Line wrapping
differs (reST wraps paragraphs, HTML does not), so matching is by n-grams, not by whole lines.

    python -m herd.curate.extract_eval [--limit N] [--root /usr/share/doc/python3.11/html]
prints the table for herd's extractor, resiliparse's defaults and trafilatura's defaults.
"""

from __future__ import annotations

import argparse
import re
import time
from pathlib import Path

from herd.errors import HerdError

DOC_ROOT = Path("/usr/share/doc/python3.11/html")
_ROLE = re.compile(r":[\w:+-]+:`(?:[^`<]*<([^>`]+)>|~?!?([^`]+))`")
_LINK = re.compile(r"`([^`<]+?)\s*<[^>]+>`_{1,2}")
_WORDS = re.compile(r"\w+")
_SKIP_DIRECTIVES = re.compile(r"^\s*\.\. (index|module|moduleauthor|sectionauthor|toctree|highlight|"
                              r"testsetup|testcleanup|_[\w-]+|\|[\w-]+\||include|raw|only|currentmodule|"
                              r"audit-event-table|literalinclude|impl-detail|csv-table|tabularcolumns)\b")
_FIELD = re.compile(r"^\s*:(synopsis|noindex|platform|deprecated|maxdepth|audit-event|no-typesetting|"
                    r"options|titlesonly|caption|name|linenos|emphasize-lines|hidden|glob|numbered)\b.*$")


def rst_to_lines(src: str) -> list[str]:
    """Plain-text lines of a reST source: markup stripped; comments and directives that render
    nothing (index, toctree, module, ...) dropped together with their indented blocks."""
    out = []
    skip_indent = None  # inside a skipped block: lines indented deeper than this are skipped
    for line in src.splitlines():
        s = line.rstrip()
        if not s.strip():
            out.append("")
            continue
        indent = len(s) - len(s.lstrip())
        if skip_indent is not None:
            if indent > skip_indent:
                continue
            skip_indent = None
        if re.fullmatch(r"\s*([=\-~^\"'`#*+.:_])\1{2,}\s*", s) or re.fullmatch(r"[\s=]+", s):
            continue  # heading underline / simple-table rule
        is_directive = re.match(r"^\s*\.\. [\w:-]+::", s)
        if s.lstrip().startswith("..") and (_SKIP_DIRECTIVES.match(s) or not is_directive):
            skip_indent = indent  # comment, target, substitution or non-rendering directive
            continue
        if _FIELD.match(s):
            continue
        m = re.match(r"^\s*\.\. (versionadded|versionchanged|deprecated|deprecated-removed|seealso)"
                     r"::\s*(.*)$", s)
        if m:  # Sphinx renders these directives as fixed phrases
            verb = {"versionadded": "New in version", "versionchanged": "Changed in version",
                    "deprecated": "Deprecated since version",
                    "deprecated-removed": "Deprecated since version", "seealso": "See also"}[m.group(1)]
            s = f"{verb} {m.group(2)}"
        elif is_directive:
            s = re.sub(r"^\s*\.\. [\w:-]+::\s*", "", s)  # keep the argument (signatures, titles)
        s = _LINK.sub(r"\1", s)
        s = _ROLE.sub(lambda m: m.group(1) or m.group(2), s)
        s = s.replace("``", "").replace("**", "").replace("|", " ")
        s = re.sub(r"(?<!\w)\*(\S[^*]*?)\*(?!\w)", r"\1", s)
        out.append(s)
    return out


def _units(words: list[str]) -> list[tuple]:
    n = min(3, len(words))
    return [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]


def _unit_sets(lines: list[str]) -> dict[int, set]:
    sets: dict[int, set] = {1: set(), 2: set(), 3: set()}
    for ln in lines:
        w = _WORDS.findall(ln.lower())
        for n in (1, 2, 3):
            sets[n].update(tuple(w[i:i + n]) for i in range(len(w) - n + 1))
    return sets


def _matched(lines: list[str], other: dict[int, set], min_frac: float = 0.5) -> tuple[int, int]:
    total = hit = 0
    for ln in lines:
        w = _WORDS.findall(ln.lower())
        if len(w) < 2:
            continue
        u = _units(w)
        total += 1
        if sum(x in other[len(x)] for x in u) >= min_frac * len(u):
            hit += 1
    return hit, total


def score_page(extracted: str, truth_lines: list[str]) -> dict:
    ext_lines = extracted.splitlines()
    r_hit, r_tot = _matched(truth_lines, _unit_sets(ext_lines))
    p_hit, p_tot = _matched(ext_lines, _unit_sets(truth_lines))
    return {"recall_hit": r_hit, "recall_total": r_tot, "precision_hit": p_hit, "precision_total": p_tot}


def pages(root: Path = DOC_ROOT, limit: int | None = None) -> list[tuple[Path, Path]]:
    if not (root / "_sources").is_dir():
        raise HerdError(f"{root}/_sources not found: apt-get install -y python3.11-doc")
    out = []
    for src in sorted((root / "_sources").rglob("*.rst.txt")):
        rel = src.relative_to(root / "_sources")
        html = root / str(rel).replace(".rst.txt", ".html")
        if html.is_file():
            out.append((html, src))
    return out[:limit] if limit else out


def evaluate(extractors: dict, root: Path = DOC_ROOT, limit: int | None = None) -> dict:
    """Micro-averaged line recall/precision (and F1, seconds) of each extractor over the pages."""
    ps = pages(root, limit)
    res = {name: {"recall_hit": 0, "recall_total": 0, "precision_hit": 0, "precision_total": 0,
                  "seconds": 0.0}
           for name in extractors}
    for html_path, src_path in ps:
        html = html_path.read_text(encoding="utf-8", errors="replace")
        truth = rst_to_lines(src_path.read_text(encoding="utf-8", errors="replace"))
        for name, fn in extractors.items():
            t = time.perf_counter()
            text = fn(html)
            res[name]["seconds"] += time.perf_counter() - t
            for k, v in score_page(text, truth).items():
                res[name][k] += v
    for r in res.values():
        r["recall"] = r["recall_hit"] / max(r["recall_total"], 1)
        r["precision"] = r["precision_hit"] / max(r["precision_total"], 1)
        r["f1"] = 2 * r["recall"] * r["precision"] / max(r["recall"] + r["precision"], 1e-9)
        r["pages"] = len(ps)
    return res


def default_extractors(with_trafilatura: bool = True) -> dict:
    from herd.curate.extract import html_to_text, raw_resiliparse, raw_trafilatura

    ex = {"herd (resiliparse main content + code/math/alt)": html_to_text,
          "resiliparse defaults": raw_resiliparse}
    if with_trafilatura:
        ex["trafilatura defaults"] = raw_trafilatura
    return ex


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--root", default=str(DOC_ROOT))
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--no-trafilatura", action="store_true")
    a = ap.parse_args(argv)
    res = evaluate(default_extractors(not a.no_trafilatura), Path(a.root), a.limit)
    print("| extractor | pages | line recall | line precision | F1 | ms/page |")
    print("|---|---|---|---|---|---|")
    for name, r in res.items():
        print(f"| {name} | {r['pages']} | {r['recall']:.3f} | {r['precision']:.3f} | {r['f1']:.3f} | "
              f"{1000 * r['seconds'] / max(r['pages'], 1):.1f} |")


if __name__ == "__main__":
    main()
