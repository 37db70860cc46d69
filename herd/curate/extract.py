"""HTML -> plain text (paper §3.1.1, "PII and safety filtering" / "Text extraction and cleaning").

The paper builds "a custom parser that extracts the HTML content and optimizes for precision in
boilerplate removal and content recall", keeps "the structure of mathematics and code", keeps image
alt text ("math content is often represented as pre-rendered images where the math is also provided
in the alt attribute") and drops markdown markers ("harmful to the performance of models trained
primarily on web data"). We build on resiliparse's main-content extractor and add:

- math: MathML with a TeX annotation, MathJax `<script type="math/tex">` and KaTeX become their TeX
  source inline (the rendered duplicates are skipped), so an equation survives as one readable piece;
- code: `<pre>` blocks keep their line breaks and indentation (resiliparse's preserve_formatting);
- alt text of images is kept; Sphinx/MkDocs permalink glyphs ("¶") and skip links are dropped;
- output is plain text: no list bullets, no '#' headings, no '*' emphasis, no link syntax.
"""

from __future__ import annotations

import html as html_lib
import re

# Rendered duplicates of math (the TeX source is kept instead) and permalink glyphs.
SKIP_SELECTORS = [".headerlink", ".katex-html", ".MathJax_Preview", ".MathJax", ".MathJax_Display",
                  ".MathJax_SVG", ".skip-link", ".visually-hidden", ".sr-only"]

_MATH_RE = re.compile(r"<math\b[^>]*>(.*?)</math>", re.S | re.I)
_TEX_ANN_RE = re.compile(r"<annotation\b[^>]*encoding=[\"']application/x-tex[\"'][^>]*>(.*?)</annotation>",
                         re.S | re.I)
_MATH_SCRIPT_RE = re.compile(r"<script\b[^>]*type=[\"']math/tex(;\s*mode=display)?[\"'][^>]*>(.*?)</script>",
                             re.S | re.I)
_BLANKS_RE = re.compile(r"\n{3,}")
_TRAILING_WS_RE = re.compile(r"[ \t]+\n")


def _math_to_tex(html: str) -> str:
    """Replace each math element by an inline span holding its TeX source."""

    def from_mathml(m: re.Match) -> str:
        ann = _TEX_ANN_RE.search(m.group(1))
        if ann:
            return f"<span> {ann.group(1).strip()} </span>"
        return m.group(0)  # MathML without TeX: resiliparse linearises its mi/mo/mn text

    def from_script(m: re.Match) -> str:
        tex = html_lib.escape(m.group(2).strip(), quote=False)
        return f"<div>{tex}</div>" if m.group(1) else f"<span> {tex} </span>"

    if "math" in html:
        html = _MATH_SCRIPT_RE.sub(from_script, html)
        html = _MATH_RE.sub(from_mathml, html)
    return html


def html_to_text(html: str, main_content: bool = True, alt_texts: bool = True, keep_math: bool = True) -> str:
    """Main-content plain text of an HTML page ('' if nothing is left)."""
    from resiliparse.extract.html2text import extract_plain_text

    if keep_math:
        html = _math_to_tex(html)
    text = extract_plain_text(html, preserve_formatting=True, main_content=main_content, alt_texts=alt_texts,
                              list_bullets=False, links=False, form_fields=False, noscript=False,
                              skip_elements=SKIP_SELECTORS)
    text = _TRAILING_WS_RE.sub("\n", text.replace("\u00b6", ""))
    return _BLANKS_RE.sub("\n\n", text).strip()


def raw_resiliparse(html: str) -> str:
    """resiliparse's defaults (all visible text), the baseline of bench/curate_extraction.py."""
    from resiliparse.extract.html2text import extract_plain_text

    return extract_plain_text(html)


def raw_trafilatura(html: str) -> str:
    """trafilatura's defaults, a second baseline."""
    import trafilatura

    return trafilatura.extract(html) or ""
