"""One error type for a user's mistake.

Rule of the house: bad input (a wrong path, a bad config value, a malformed record, a corrupt
checkpoint) gets one line that names the problem and what to do. Code raises `HerdError` with
that line; the CLI prints it as `herd: error: ...` and exits with status 2, no traceback.
"""

from pathlib import Path


class HerdError(Exception):
    """A problem with the user's input, reported as one clear line."""


def require_file(path, what: str = "file"):
    """Return `path` as a Path if it exists, else raise a HerdError naming it."""
    p = Path(path)
    if not p.exists():
        raise HerdError(f"{what} not found: {p} (check the path)")
    return p


def check_output_file(path, overwrite: bool = False, flag: str = "--out", example: str = "out.file") -> Path:
    """Check, before any work, that a file can be written at `path`: not a directory, its folder
    exists (created if missing) and is a folder, and an existing file is replaced only with
    --overwrite. Returns `path` as a Path."""
    p = Path(path)
    if p.is_dir():
        raise HerdError(f"{flag} {p} is a directory; give a file path, e.g. {p / example}")
    parent = p.parent
    if parent.exists() and not parent.is_dir():
        raise HerdError(f"{flag} {p}: {parent} is a file, not a folder")
    if p.exists() and not overwrite:
        raise HerdError(f"{flag} {p} already exists; pass --overwrite to replace it")
    parent.mkdir(parents=True, exist_ok=True)
    return p


def check_output_dir(path, overwrite: bool = False, flag: str = "--out") -> Path:
    """Check, before any work, that a directory can be written at `path`: not a file, and an
    existing non-empty directory is replaced only with --overwrite. Returns `path` as a Path."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise HerdError(f"{flag} {p} is a file; give a directory path")
    if p.is_dir() and any(p.iterdir()) and not overwrite:
        raise HerdError(f"{flag} {p} already exists and is not empty; pass --overwrite to replace it")
    for parent in p.parents:
        if parent.exists() and not parent.is_dir():
            raise HerdError(f"{flag} {p}: {parent} is a file, not a folder")
    return p


def read_utf8(path, what: str = "file") -> str:
    """The text of a file that must exist, be a file and hold UTF-8; else one HerdError line."""
    p = require_file(path, what)
    if p.is_dir():
        raise HerdError(f"{p} is a directory; give a {what}")
    try:
        return p.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise HerdError(f"{p}: not UTF-8 text (byte {e.start}); convert it, e.g. iconv -t utf-8") from None


class OneDefaultHelpFormatter:
    """Mixed into an argparse formatter: like ArgumentDefaultsHelpFormatter, but a help text that
    already names its default (or has no real one) is left as it is, so no option shows two."""

    def _get_help_string(self, action):
        text = action.help or ""
        if "default" in text or action.default in (None, False, "==SUPPRESS=="):
            return text
        return text + " (default: %(default)s)"
