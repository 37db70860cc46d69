"""`herd tokenize`: documents (JSONL, Parquet, text files) -> token shards (paper §3.1 -> §3.4).

Reads documents in a fixed order, encodes them on all cores (a process pool; each worker holds
its own tokenizer and uses Meta's cutting of long inputs, so ids equal `Tokenizer.encode`), and
writes uint32 shards plus document indexes (layout in herd/data/shards.py). A held-out
validation split is chosen by a hash of each document's text, so the same document always lands
in the same split and duplicates cannot leak across it. Output is written into a temporary
sibling directory and renamed into place when complete: an interrupted run leaves nothing half
written, and re-running it starts over.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import sys
import zlib
from pathlib import Path
from typing import Iterator

import numpy as np

from herd.data.shards import FORMAT, VERSION
from herd.errors import HerdError
from herd.fileio import atomic_write_json, replace_dir

TEXT_EXT = (".txt", ".md", ".text")
JSONL_EXT = (".jsonl", ".jsonl.gz", ".jsonl.zst", ".json.gz", ".ndjson")
PARQUET_EXT = (".parquet",)


def find_inputs(inputs) -> list[Path]:
    """Expand files and directories (recursively, sorted) into the input files to tokenize."""
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    out: list[Path] = []
    known = TEXT_EXT + JSONL_EXT + PARQUET_EXT
    for x in inputs:
        p = Path(x)
        if not p.exists():
            raise HerdError(f"input not found: {p}")
        if p.is_dir():
            out.extend(sorted(f for f in p.rglob("*") if f.is_file() and f.name.endswith(known)))
        elif p.name.endswith(known):
            out.append(p)
        else:
            raise HerdError(f"{p}: unknown input type; use .jsonl[.gz|.zst], .parquet or .txt/.md files")
    if not out:
        raise HerdError(f"no input documents found in {', '.join(map(str, inputs))} "
                        "(looked for .jsonl, .jsonl.gz, .jsonl.zst, .parquet, .txt, .md)")
    return out


def _open_text(path: Path):
    if path.name.endswith(".gz"):
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8")
    if path.name.endswith(".zst"):
        import zstandard

        return io.TextIOWrapper(zstandard.ZstdDecompressor().stream_reader(open(path, "rb")),
                                encoding="utf-8")
    return open(path, encoding="utf-8")


def read_documents(path: Path, text_field: str = "text") -> Iterator[str]:
    """The documents of one input file, in order. A malformed record is a HerdError (file:line)."""
    name = path.name
    if name.endswith(TEXT_EXT):
        try:
            yield path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise HerdError(f"{path}: not UTF-8 text") from None
        return
    if name.endswith(PARQUET_EXT):
        import pyarrow.parquet as pq

        try:
            pf = pq.ParquetFile(path)
        except Exception as e:  # pyarrow raises several types for a bad file
            raise HerdError(f"{path}: not a readable Parquet file ({e})") from None
        if text_field not in pf.schema_arrow.names:
            raise HerdError(f"{path}: no column {text_field!r} (columns: "
                            f"{', '.join(pf.schema_arrow.names)}); pick one with --text-field")
        for batch in pf.iter_batches(columns=[text_field]):
            for t in batch.column(0).to_pylist():
                if t is not None:
                    yield t
        return
    with _open_text(path) as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except ValueError:
                raise HerdError(f"{path}:{n}: not a JSON record") from None
            if not isinstance(rec, dict) or text_field not in rec:
                raise HerdError(f"{path}:{n}: record has no {text_field!r} field; pick one with --text-field")
            t = rec[text_field]
            if not isinstance(t, str):
                raise HerdError(f"{path}:{n}: field {text_field!r} is not a string")
            yield t


# ---- workers ------------------------------------------------------------------------------------
_TOK = None


def _init_worker(ranks: dict, name: str):
    global _TOK
    from herd.tokenizer import Tokenizer

    _TOK = Tokenizer(ranks, name=name)


def is_val(text: str, val_fraction: float) -> bool:
    """Deterministic held-out choice from the document's text (crc32)."""
    if val_fraction <= 0:
        return False
    return zlib.crc32(text.encode("utf-8", "surrogatepass")) % 1_000_000 < val_fraction * 1_000_000


def _encode_chunk(job):
    texts, bos, eos, val_fraction = job
    tok = _TOK
    out = {"train": ([], []), "val": ([], [])}
    if hasattr(tok, "encode_batch"):
        # uint32 arrays straight from tiktoken (no Python ints); this process is one of the pool's.
        encoded = tok.encode_batch(texts, bos=bos, eos=eos, num_threads=1, numpy=True)
    else:
        encoded = [np.asarray(tok.encode(t, bos=bos, eos=eos), dtype=np.uint32) for t in texts]
    for t, ids in zip(texts, encoded):
        toks, lens = out["val" if is_val(t, val_fraction) else "train"]
        toks.append(np.asarray(ids, dtype=np.uint32))
        lens.append(len(ids))
    res = {}
    for split, (toks, lens) in out.items():
        res[split] = (np.concatenate(toks) if toks else np.zeros(0, np.uint32), np.asarray(lens,
                                                                                           dtype=np.int64))
    return res


class _ShardWriter:
    def __init__(self, root: Path, split: str, shard_tokens: int, shards: list[dict] | None = None):
        self.root, self.split, self.shard_tokens = root, split, shard_tokens
        self.shards: list[dict] = list(shards or [])
        self.f = None
        self._open()

    def _open(self):
        i = len(self.shards)
        self.name = f"{self.split}-{i:05d}"
        self.f = open(self.root / f"{self.name}.bin", "wb")
        self.lengths: list[np.ndarray] = []
        self.n = 0

    def add(self, tokens: np.ndarray, lengths: np.ndarray) -> bool:
        """Append documents; True when this closed a full shard."""
        if not len(lengths):
            return False
        self.f.write(tokens.astype(np.uint32, copy=False).tobytes())
        self.lengths.append(lengths)
        self.n += int(tokens.size)
        if self.n >= self.shard_tokens:
            self.roll()
            return True
        return False

    def roll(self):
        """Close the current shard (if it holds anything) and start the next."""
        if self.n:
            self._close()
            self._open()

    def _close(self):
        self.f.flush()
        os.fsync(self.f.fileno())
        self.f.close()
        lens = np.concatenate(self.lengths) if self.lengths else np.zeros(0, np.int64)
        if not len(lens):
            os.remove(self.root / f"{self.name}.bin")
            return
        off = np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)
        np.save(self.root / f"{self.name}.idx.npy", off)
        self.shards.append({"tokens": f"{self.name}.bin", "index": f"{self.name}.idx.npy",
                            "n_tokens": int(off[-1]), "n_docs": int(len(lens))})

    def finish(self) -> dict:
        self._close()
        return {"shards": self.shards, "n_tokens": sum(s["n_tokens"] for s in self.shards),
                "n_docs": sum(s["n_docs"] for s in self.shards)}


def _file_sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for b in iter(lambda: f.read(1 << 20), b""):
            h.update(b)
    return h.hexdigest()


def _identity(files: list[Path], tok_sha: str, **params) -> dict:
    """What a resumable tokenization depends on: the inputs (path, size, mtime), tokenizer, options."""
    return {"inputs": [[str(f), f.stat().st_size, f.stat().st_mtime_ns] for f in files], "tokenizer": tok_sha,
            **params}


def tokenize_files(inputs, tokenizer, out_dir, *, text_field: str = "text", val_fraction: float = 0.005,
                   bos: bool = True, eos: bool = True, workers: int = 0, shard_tokens: int = 1 << 28,
                   chunk_docs: int = 64, overwrite: bool = False, progress: bool = True, log=None) -> dict:
    """Tokenize documents into a token directory (see herd/data/shards.py) and return its meta.

    inputs: files or directories (.jsonl[.gz|.zst] with a `text_field`, .parquet, .txt/.md one
    document per file). tokenizer: a herd Tokenizer, or a path to a tiktoken file, or "llama3".
    workers: processes (0 = all cores). val_fraction: share of documents held out (by text hash).

    Interrupted (Ctrl-C, crash), the same call resumes: every time a shard is full, the shards
    written so far and the number of documents they hold are recorded in OUT.tmp-tokenize/
    progress.json; a re-run with the same inputs (paths, sizes, mtimes), tokenizer and options
    continues from there and produces the same output as an uninterrupted run."""
    from tqdm import tqdm

    from herd.tokenizer import Tokenizer

    log = log or (lambda m: print(m, file=sys.stderr))
    if isinstance(tokenizer, (str, os.PathLike)):
        tokenizer = Tokenizer.llama3() if str(tokenizer) == "llama3" else Tokenizer.load(tokenizer)
    if not 0 <= val_fraction < 1:
        raise HerdError(f"val_fraction must be in [0, 1), got {val_fraction}")
    files = find_inputs(inputs)
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise HerdError(f"{out} already exists and is not empty; choose another --out or pass "
                            "--overwrite")
    tmp = out.with_name(out.name + ".tmp-tokenize")
    tmp.mkdir(parents=True, exist_ok=True)
    tokenizer.save(tmp / "tokenizer.model")
    ident = _identity(files, _file_sha256(tmp / "tokenizer.model"), text_field=text_field,
                      val_fraction=val_fraction, bos=bos, eos=eos, shard_tokens=shard_tokens,
                      chunk_docs=chunk_docs)
    prog_file = tmp / "progress.json"
    prog = None
    if prog_file.is_file():
        try:
            prog = json.loads(prog_file.read_text())
        except ValueError:
            prog = None
        if prog is not None and prog.get("identity") != ident:
            log(f"herd: {tmp} holds an interrupted tokenization of other inputs or options; starting over")
            prog = None
    if prog is None:
        prog = {"identity": ident, "docs": 0, "empty": 0, "shards": {"train": [], "val": []}}
    else:
        log(f"herd: resuming the interrupted tokenization after {prog['docs']:,} documents")
    keep = {"tokenizer.model", "progress.json"} | {x for sh in prog["shards"].values() for d in sh
                                                    for x in (d["tokens"], d["index"])}
    for f in tmp.iterdir():  # shards written after the last record are redone
        if f.name not in keep:
            f.unlink() if f.is_file() else shutil.rmtree(f)
    workers = workers or os.cpu_count() or 1
    writers = {s: _ShardWriter(tmp, s, shard_tokens, prog["shards"][s]) for s in ("train", "val")}
    total_bytes = sum(f.stat().st_size for f in files)
    n_empty = prog["empty"]
    ends: list[tuple[int, int]] = []  # (documents read, empty documents) at the end of each job, in order

    def jobs():
        nonlocal n_empty
        buf: list[str] = []
        seen = 0
        for f in files:
            for t in read_documents(f, text_field):
                seen += 1
                if seen <= prog["docs"]:
                    continue
                if not t.strip():
                    n_empty += 1
                    continue
                buf.append(t)
                if len(buf) >= chunk_docs:
                    ends.append((seen, n_empty))
                    yield buf, bos, eos, val_fraction
                    buf = []
            bar.update(f.stat().st_size)
        ends.append((seen, n_empty))
        if buf:
            yield buf, bos, eos, val_fraction

    def record(docs: int, empty: int):
        writers["val"].roll()  # both splits end at the same document
        atomic_write_json(prog_file, {"identity": ident, "docs": docs, "empty": empty,
                                       "shards": {s: w.shards for s, w in writers.items()}})

    bar = tqdm(total=total_bytes, unit="B", unit_scale=True, desc="tokenize",
               disable=None if progress else True)  # None: shown on a terminal only
    ranks, name = tokenizer.mergeable_ranks, getattr(tokenizer.model, "name", "herd")
    pool = None
    try:
        if workers == 1:
            _init_worker(ranks, name)
            results = map(_encode_chunk, jobs())
        else:
            import multiprocessing as mp  # here, not at the top: this module is loaded by `herd --help`

            pool = mp.get_context("spawn" if os.name != "posix" else "fork").Pool(
                workers, initializer=_init_worker, initargs=(ranks, name))
            results = pool.imap(_encode_chunk, jobs(), chunksize=1)
        n_tok = 0
        for res in results:  # imap keeps the input order: the output is deterministic
            docs, empty = ends.pop(0)
            full = False
            for split, (toks, lens) in res.items():
                full |= writers[split].add(toks, lens) and split == "train"
                n_tok += int(toks.size)
            if full:
                record(docs, empty)
            bar.set_postfix(tokens=f"{n_tok:,}")
        if pool is not None:
            pool.close()
            pool.join()
    except BaseException:
        if pool is not None:
            pool.terminate()
        bar.close()
        for w in writers.values():
            w.f.close()
        if not prog_file.exists():  # nothing worth resuming
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    bar.close()
    splits = {s: w.finish() for s, w in writers.items()}
    if splits["train"]["n_docs"] == 0 and splits["val"]["n_docs"] == 0:
        shutil.rmtree(tmp, ignore_errors=True)
        raise HerdError(f"no non-empty documents in {', '.join(map(str, inputs))}")
    meta = {
        "format": FORMAT, "version": VERSION, "dtype": "uint32",
        "tokenizer": {"file": "tokenizer.model", "n_words": tokenizer.n_words, "bos_id": tokenizer.bos_id,
                      "eos_id": tokenizer.eos_id, "sha256": ident["tokenizer"]},
        "bos": bos, "eos": eos, "val_fraction": val_fraction, "text_field": text_field,
        "inputs": [str(f) for f in files], "empty_documents_skipped": n_empty, "splits": splits,
    }
    atomic_write_json(tmp / "meta.json", meta, indent=1)
    prog_file.unlink(missing_ok=True)
    replace_dir(tmp, out)
    return meta


__all__ = ["tokenize_files", "find_inputs", "read_documents", "is_val"]
