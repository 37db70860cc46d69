"""Code Shield (paper §5.4.7; PAPER.md §7): flag insecure code in model output before it is shown.

Meta's Insecure Code Detector, from the PyPI `codeshield` package: regex rules first (fast, most
traffic stops there), then semgrep on code whose pre-scan patterns look suspicious; a finding of
severity `error` means BLOCK, any other finding WARN, none IGNORE, each with its CWE id.

semgrep: codeshield runs the `semgrep-core` binary. The newest semgrep scans 0 files with the
`--project-root /` that codeshield passes, so nothing is ever reported; semgrep 1.70.0 works.
Its Python dependencies clash with other packages, and codeshield only needs the binary, so
scripts/setup.sh installs semgrep==1.70.0 with `--no-deps --target $VENV/tools/semgrep` (outside
sys.path). `semgrep_core()` finds the binary: $HERD_SEMGREP_CORE, then that tool folder, then
`semgrep-core` on PATH. Without it only the regex stage runs (`CodeShield(semgrep=False)`).

Model output is scanned per fenced code block (```python ... ```), in the block's language when it
names one codeshield knows, else in every language codeshield supports.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

from herd.errors import HerdError

LANG_ALIASES = {
    "py": "python",
    "python": "python",
    "python3": "python",
    "c": "c",
    "h": "c",
    "cpp": "cpp",
    "c++": "cpp",
    "cc": "cpp",
    "hpp": "cpp",
    "cs": "csharp",
    "csharp": "csharp",
    "java": "java",
    "js": "javascript",
    "javascript": "javascript",
    "ts": "javascript",
    "node": "javascript",
    "php": "php",
    "rs": "rust",
    "rust": "rust",
    "kt": "kotlin",
    "kotlin": "kotlin",
    "rb": "ruby",
    "ruby": "ruby",
    "swift": "swift",
    "m": "objective_c",
    "mm": "objective_cpp",
}
SUFFIXES = {
    ".py": "python",
    ".c": "c",
    ".h": "c",
    ".cc": "cpp",
    ".cpp": "cpp",
    ".hpp": "cpp",
    ".cs": "csharp",
    ".java": "java",
    ".js": "javascript",
    ".ts": "javascript",
    ".php": "php",
    ".rs": "rust",
    ".kt": "kotlin",
    ".rb": "ruby",
    ".swift": "swift",
    ".m": "objective_c",
    ".mm": "objective_cpp",
}
_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+#-]*)[^\n]*\n(.*?)(?:```|\Z)", re.S)


@dataclass
class CodeIssue:
    cwe_id: str
    line: int | None
    description: str
    severity: str  # error | warning | advice
    language: str = ""
    analyzer: str = ""

    def to_dict(self) -> dict:
        return {
            "cwe_id": self.cwe_id,
            "line": self.line,
            "description": self.description,
            "severity": self.severity,
            "language": self.language,
            "analyzer": self.analyzer,
        }


@dataclass
class CodeShieldResult:
    treatment: str  # block | warn | ignore
    issues: list[CodeIssue] = field(default_factory=list)

    @property
    def insecure(self) -> bool:
        return bool(self.issues)

    def to_dict(self) -> dict:
        return {"treatment": self.treatment, "issues": [i.to_dict() for i in self.issues]}


def semgrep_core() -> Path | None:
    """The semgrep-core binary codeshield runs (see the module docstring), or None."""
    env = os.environ.get("HERD_SEMGREP_CORE")
    if env:
        p = Path(env)
        if not p.is_file():
            raise HerdError(f"HERD_SEMGREP_CORE={env} is not a file; point it at semgrep 1.70's semgrep-core")
        return p
    for root in (Path(sys.prefix), Path(sys.executable).resolve().parent.parent):
        p = root / "tools" / "semgrep" / "semgrep" / "bin" / "semgrep-core"
        if p.is_file():
            return p
    found = shutil.which("semgrep-core")
    return Path(found) if found else None


_LOCK = threading.Lock()
_MODULES: dict = {}


def _codeshield(semgrep: bool):
    """Import codeshield with our semgrep-core first on PATH (it looks the binary up on import)."""
    with _LOCK:
        if "cs" in _MODULES:
            return _MODULES["cs"]
        core = semgrep_core() if semgrep else None
        if core is not None:
            os.environ["PATH"] = f"{core.parent}{os.pathsep}{os.environ.get('PATH', '')}"
        elif semgrep:
            raise HerdError(
                "Code Shield needs semgrep 1.70's semgrep-core: run scripts/setup.sh, or pip install "
                "--no-deps --target .venv/tools/semgrep semgrep==1.70.0 (or pass semgrep=False)"
            )
        try:
            from codeshield.insecure_code_detector import insecure_code_detector as icd
            from codeshield.insecure_code_detector import languages, oss
            from codeshield.insecure_code_detector.usecases import UseCase
        except ImportError:
            raise HerdError(
                "Code Shield needs the PyPI package codeshield: pip install --no-deps codeshield pyyaml"
            ) from None
        except Exception as e:  # codeshield raises a bare Exception when semgrep-core is missing
            raise HerdError(f"codeshield could not start: {e}") from None
        oss.ENABLE_SEMGREP = core is not None
        _MODULES["cs"] = (icd, languages, UseCase)
        return _MODULES["cs"]


def _run(coro):
    """Run a coroutine to completion from sync code, also when an event loop is running here
    (the server calls shields from its handlers): then on a thread of its own."""
    import asyncio

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    box = {}

    def target():
        try:
            box["v"] = asyncio.run(coro)
        except BaseException as e:  # handed back to the caller's thread
            box["e"] = e

    t = threading.Thread(target=target)
    t.start()
    t.join()
    if "e" in box:
        raise box["e"]
    return box["v"]


def _severity(s) -> str:
    s = str(getattr(s, "value", s)).lower()
    return s if s in ("error", "warning", "advice") else "warning"


class CodeShield:
    """Scan code or model output. `semgrep=False` runs the regex stage only."""

    def __init__(self, semgrep: bool = True):
        self.icd, self.languages, self.usecase = _codeshield(semgrep)

    def _language(self, name: str | None):
        if not name:
            return None
        lang = LANG_ALIASES.get(name.lower().lstrip("."))
        if lang is None:
            return None
        return self.languages.Language(lang)

    async def _scan(self, code: str, language):
        langs = [language] if language is not None else self.languages.get_supported_languages()
        out = []
        for lang in langs:
            issues = await self.icd.analyze(lang, code, usecase=self.usecase.CODESHIELD)
            out += [
                CodeIssue(
                    str(i.cwe_id or ""),
                    i.line,
                    i.description or "",
                    _severity(i.severity),
                    lang.value,
                    str(getattr(i.analyzer, "value", i.analyzer) or ""),
                )
                for i in issues or []
            ]
        return out

    def scan_code(self, code: str, language: str | None = None, line_offset: int = 0) -> CodeShieldResult:
        """Scan one piece of code (`language`: python, c, cpp, java, javascript, php, rust, csharp,
        ... or a file suffix; None scans it as every supported language)."""
        if not isinstance(code, str):
            raise HerdError(f"code shield: expected text, got {type(code).__name__}")
        lang = self._language(language)
        if language and lang is None:
            raise HerdError(
                f"code shield: unknown language {language!r}; use one of "
                f"{', '.join(sorted(set(LANG_ALIASES.values())))}"
            )
        issues = _run(self._scan(code, lang)) if code.strip() else []
        seen, uniq = set(), []
        for i in issues:
            if i.line is not None:
                i.line += line_offset
            key = (i.cwe_id, i.line, i.description)
            if key not in seen:
                seen.add(key)
                uniq.append(i)
        return result_of(uniq)

    def scan_output(self, text: str) -> CodeShieldResult:
        """Scan the fenced code blocks of a model's answer (line numbers are the answer's)."""
        issues = []
        for lang, code, line in code_blocks(text):
            known = lang if self._language(lang) is not None else None
            issues += self.scan_code(code, known, line_offset=line - 1).issues
        return result_of(issues)


def result_of(issues: list[CodeIssue]) -> CodeShieldResult:
    if any(i.severity == "error" for i in issues):
        return CodeShieldResult("block", issues)
    return CodeShieldResult("warn" if issues else "ignore", issues)


def code_blocks(text: str) -> list[tuple[str, str, int]]:
    """[(language tag, code, first line of the code in `text`)] of the ``` fenced blocks (an
    unclosed last fence runs to the end, as a streamed answer may)."""
    out = []
    for m in _FENCE.finditer(text):
        line = text.count("\n", 0, m.start(2)) + 1
        out.append((m.group(1).lower(), m.group(2), line))
    return out


def language_of_path(path: str) -> str | None:
    return SUFFIXES.get(Path(path).suffix.lower())


_DEFAULT: dict = {}


def scan_code(code: str, language: str | None = None) -> CodeShieldResult:
    """Module-level shortcut with a shared CodeShield (semgrep when available)."""
    if "shield" not in _DEFAULT:
        _DEFAULT["shield"] = CodeShield(semgrep=semgrep_core() is not None)
    return _DEFAULT["shield"].scan_code(code, language)


__all__ = [
    "CodeShield",
    "CodeShieldResult",
    "CodeIssue",
    "scan_code",
    "code_blocks",
    "semgrep_core",
    "language_of_path",
]
