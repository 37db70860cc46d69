"""herd.fileio: atomic writes leave the old file or the whole new one, never a part, and no
temporary behind; the data and the rename are fsynced."""

import json
import os

import pytest

from herd.errors import HerdError
from herd.fileio import AtomicFile, atomic_dir, atomic_open, atomic_write, atomic_write_json, replace_dir


class Boom(Exception):
    pass


def names(d):
    return sorted(p.name for p in d.iterdir())


def test_atomic_write_bytes_and_str(tmp_path):
    p = tmp_path / "a.bin"
    atomic_write(p, b"\x00\x01")
    assert p.read_bytes() == b"\x00\x01"
    atomic_write(p, "héllo")  # replaces; str is UTF-8
    assert p.read_bytes() == "héllo".encode()
    assert names(tmp_path) == ["a.bin"]


def test_atomic_write_json(tmp_path):
    p = tmp_path / "x.json"
    atomic_write_json(p, {"a": 1.5, "b": [1, 2]}, indent=2)
    text = p.read_text()
    assert text.endswith("}\n") and json.loads(text) == {"a": 1.5, "b": [1, 2]}


def test_atomic_open_success_and_failure(tmp_path):
    p = tmp_path / "log.jsonl"
    with atomic_open(p, "w", encoding="utf-8") as f:
        f.write("one\n")
        assert not p.exists()  # nothing at the target until the block completes
    assert p.read_text() == "one\n"
    with pytest.raises(Boom), atomic_open(p, "w") as f:
        f.write("half of tw")
        raise Boom
    assert p.read_text() == "one\n"  # the old file is intact
    assert names(tmp_path) == ["log.jsonl"]  # and no temporary is left
    with pytest.raises(KeyboardInterrupt), atomic_open(p, "wb") as f:
        raise KeyboardInterrupt
    assert names(tmp_path) == ["log.jsonl"] and p.read_text() == "one\n"


def test_atomic_open_file_closed_by_a_wrapping_writer(tmp_path):
    """zstandard's stream_writer closes the file it wraps on exit; the commit still happens."""
    p = tmp_path / "x.zst"
    with atomic_open(p, "wb") as f:
        f.write(b"data")
        f.close()
    assert p.read_bytes() == b"data" and names(tmp_path) == ["x.zst"]


def test_atomic_file_by_name(tmp_path):
    """Writers that take a file name (torch.save, safetensors, pyarrow) write `tmp`."""
    p = tmp_path / "w.npy"
    p.write_bytes(b"old")
    with AtomicFile(p) as a:
        assert a.tmp.parent == tmp_path and a.tmp != p
        a.tmp.write_bytes(b"new")
    assert p.read_bytes() == b"new"
    with pytest.raises(Boom), AtomicFile(p) as a:
        a.tmp.write_bytes(b"partial")
        raise Boom
    assert p.read_bytes() == b"new" and names(tmp_path) == ["w.npy"]


def test_commit_and_discard_by_hand(tmp_path):
    """A writer kept open across calls (curation's drop files) commits when it is closed."""
    p = tmp_path / "drops.jsonl"
    w = AtomicFile(p, "w", encoding="utf-8")
    w.file.write("a\n")
    assert w.commit() == p and p.read_text() == "a\n"
    w = AtomicFile(p, "w")
    w.file.write("b\n")
    w.discard()
    assert p.read_text() == "a\n" and names(tmp_path) == ["drops.jsonl"]


def test_file_and_directory_are_fsynced(tmp_path, monkeypatch):
    synced = []
    real = os.fsync

    def fsync(fd):
        synced.append(os.path.isdir(f"/proc/self/fd/{fd}") if os.path.exists("/proc/self/fd") else None)
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    atomic_write(tmp_path / "f", b"x")
    assert len(synced) >= 2  # the data, then the directory holding the rename
    if synced[0] is not None:
        assert synced[0] is False and synced[-1] is True


def test_atomic_dir_new_replace_and_failure(tmp_path):
    out = tmp_path / "ckpt"
    with atomic_dir(out) as d:
        assert d != out and d.parent == tmp_path
        (d / "config.json").write_text("{}")
        (d / "original").mkdir()
        (d / "original" / "tokenizer.model").write_text("t")
    assert names(out) == ["config.json", "original"]
    with atomic_dir(out) as d:  # an existing directory is replaced by the complete new one
        (d / "model.safetensors").write_text("m")
    assert names(out) == ["model.safetensors"]
    with pytest.raises(Boom), atomic_dir(out) as d:
        (d / "half").write_text("h")
        raise Boom
    assert names(out) == ["model.safetensors"]  # untouched
    assert names(tmp_path) == ["ckpt"]  # no temporary or .old directory left


def test_atomic_dir_refuses_a_file(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(HerdError, match="not a directory"), atomic_dir(tmp_path / "f"):
        pass
    assert (tmp_path / "f").read_text() == "x"


def test_replace_dir(tmp_path):
    src, dst = tmp_path / "out.tmp", tmp_path / "out"
    src.mkdir()
    (src / "new").write_text("n")
    replace_dir(src, dst)  # nothing there yet
    assert names(dst) == ["new"] and not src.exists()
    src.mkdir()
    (src / "newer").write_text("n")
    (tmp_path / "out.old").mkdir()  # a stale one from a crash is cleared
    replace_dir(src, dst)
    assert names(dst) == ["newer"] and names(tmp_path) == ["out"]
