"""Atomic file and directory writes: a crash at any instant leaves either the old file or the
complete new one, never half of one.

A file is written to a temporary sibling (`NAME.tmp`, in the same directory so the rename stays
on one file system), flushed and fsynced, renamed over the target with `os.replace`, and the
directory is fsynced so the rename itself survives a power cut. On an exception (Ctrl-C included)
the temporary is removed and the old file is left as it was. A fixed temporary name means a run
killed mid-write leaves at most one stale `NAME.tmp`, which the next write of NAME overwrites.

    with atomic_open(path, "w", encoding="utf-8") as f:   # a file object
        f.write(text)
    atomic_write(path, b"bytes or str")
    atomic_write_json(path, obj, indent=2)
    with AtomicFile(path) as a:                            # a writer that wants a file name
        torch.save(state, a.tmp)
    with atomic_dir(path) as tmp:                          # a whole directory
        (tmp / "config.json").write_text(...)

The parent directory must exist (as for `open`). Only the standard library is imported here.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from pathlib import Path

from herd.errors import HerdError


def fsync_file(path: str | os.PathLike) -> None:
    """Flush a written file's data to disk."""
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def fsync_dir(path: str | os.PathLike) -> None:
    """Flush a directory's entries (a rename into it) to disk; a no-op where directories cannot be
    opened (Windows)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class AtomicFile:
    """The temporary sibling `tmp` of `path`; `commit()` fsyncs it and renames it over `path`,
    `discard()` removes it. As a context manager: commit on success, discard on an exception.

    With a `mode` ("w", "wb", ...) the temporary is opened as `file`; without one, `tmp` is only a
    name, for writers that open the file themselves (torch.save, safetensors, pyarrow)."""

    def __init__(self, path: str | os.PathLike, mode: str | None = None, encoding: str | None = None):
        self.path = Path(path)
        self.tmp = self.path.with_name(self.path.name + ".tmp")
        self.file = open(self.tmp, mode, encoding=encoding) if mode else None

    def commit(self) -> Path:
        try:
            if self.file is not None and not self.file.closed:
                self.file.flush()
                os.fsync(self.file.fileno())
                self.file.close()
            else:  # a name only, or a file a wrapping writer closed (zstandard's stream_writer)
                fsync_file(self.tmp)
            os.replace(self.tmp, self.path)
        except BaseException:
            self.discard()
            raise
        fsync_dir(self.path.parent)
        return self.path

    def discard(self) -> None:
        if self.file is not None:
            self.file.close()
        self.tmp.unlink(missing_ok=True)

    def __enter__(self) -> AtomicFile:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.discard()


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", encoding: str | None = None):
    """`open(path, mode)` that replaces `path` only once the block completes."""
    with AtomicFile(path, mode, encoding) as a:
        yield a.file


def atomic_write(path: str | os.PathLike, data: bytes | str, encoding: str = "utf-8") -> Path:
    """Write `data` (bytes, or str encoded with `encoding`) to `path` atomically."""
    with AtomicFile(path, "wb") as a:
        a.file.write(data.encode(encoding) if isinstance(data, str) else data)
    return Path(path)


def atomic_write_json(path: str | os.PathLike, obj, **dumps_kw) -> Path:
    """`json.dumps(obj, **dumps_kw)` and a newline, written to `path` atomically."""
    return atomic_write(path, json.dumps(obj, **dumps_kw) + "\n")


def replace_dir(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """Rename the complete directory `src` to `dst`, replacing a directory already there (moved
    aside to `DST.old` first, removed after), and fsync the parent. The caller has fsynced the
    files inside `src`."""
    src, dst = Path(src), Path(dst)
    if dst.exists():
        old = dst.with_name(dst.name + ".old")
        if old.exists():
            shutil.rmtree(old)
        os.replace(dst, old)
        os.replace(src, dst)
        shutil.rmtree(old)
    else:
        os.replace(src, dst)
    fsync_dir(dst.parent)
    return dst


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike):
    """Yield a fresh temporary sibling directory (`PATH.tmp-save`); when the block completes, every
    file in it (subfolders too) is fsynced and it replaces `path` (`replace_dir`), so a crash never
    leaves a half-written directory and an existing one is only replaced by a complete one. On an
    exception the temporary directory is removed."""
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise HerdError(f"{out}: exists and is not a directory; choose another output path")
    tmp = out.with_name(out.name + ".tmp-save")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        yield tmp
        for f in sorted(tmp.rglob("*")):
            if f.is_file():
                fsync_file(f)
        for d in sorted((d for d in tmp.rglob("*") if d.is_dir()), reverse=True):
            fsync_dir(d)
        fsync_dir(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    replace_dir(tmp, out)


__all__ = [
    "AtomicFile",
    "atomic_dir",
    "atomic_open",
    "atomic_write",
    "atomic_write_json",
    "fsync_dir",
    "fsync_file",
    "replace_dir",
]
