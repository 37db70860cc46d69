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
