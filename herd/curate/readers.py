"""Input readers for curation (paper §3.1.1, "we use data from a variety of sources").

Every reader yields plain dict records, one per document:
    {"id", "source", "text" | "html", "url", "timestamp"}  - a readable document, or
    {"id", "source", "error": "reason: detail"}            - a record that could not be read.
A bad record never stops the run: it is yielded as an error record, counted as input and dropped
with its reason, so the accounting (kept + dropped == input) holds for any input.

Formats: WARC (.warc, .warc.gz; response records), HTML files (.html, .htm), JSONL (.jsonl,
.json, .ndjson, optionally .gz/.zst; fields text or html, url, timestamp), Parquet (same fields),
and everything else as one plain-text document per file (source code, .txt, .md, .rst ...).
"""

from __future__ import annotations

import codecs
import gzip
import io
import json
import os
import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

from herd.errors import HerdError

HTML_EXT = (".html", ".htm", ".xhtml")
WARC_EXT = (".warc", ".warc.gz")
JSONL_EXT = (".jsonl", ".json", ".ndjson", ".jsonl.gz", ".json.gz", ".jsonl.zst", ".json.zst", ".ndjson.gz")
PARQUET_EXT = (".parquet",)
MAX_RECORD_BYTES = 64 << 20  # a longer JSON line / text file is reported, not loaded


def kind_of(path: str | Path) -> str:
    name = str(path).lower()
    if name.endswith(WARC_EXT):
        return "warc"
    if name.endswith(JSONL_EXT):
        return "jsonl"
    if name.endswith(PARQUET_EXT):
        return "parquet"
    if name.endswith(HTML_EXT):
        return "html"
    return "text"


def expand_inputs(inputs: list[str | Path]) -> list[Path]:
    """Files named or found (recursively, sorted) under the directories named."""
    files: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            files.extend(sorted(f for f in p.rglob("*") if f.is_file() and not f.name.startswith(".")))
        elif p.is_file():
            files.append(p)
        else:
            raise HerdError(f"input not found: {p} (give WARC/HTML/JSONL/Parquet/text files or directories)")
    if not files:
        raise HerdError(f"no input files found in {', '.join(map(str, inputs))}")
    return files


def parse_timestamp(value) -> float | None:
    """Seconds since the epoch from an ISO date, a number, or None; raises ValueError otherwise."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise ValueError("boolean timestamp")
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        s = value.strip().replace("Z", "+00:00")
        try:
            return float(s)
        except ValueError:
            pass
        dt = datetime.fromisoformat(s)
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=timezone.utc)
        return dt.timestamp()
    raise ValueError(f"timestamp of type {type(value).__name__}")


_CHARSET_RE = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?([A-Za-z0-9_.:-]+)""", re.I)


def _decode_html(raw: bytes, declared: str = "") -> str:
    """HTML bytes -> str: the declared charset (HTTP header or <meta>) when Python knows it, else
    UTF-8 when the bytes are valid UTF-8, else resiliparse's encoding detection."""
    from resiliparse.parse.encoding import bytes_to_str, detect_encoding

    m = _CHARSET_RE.search(raw[:4096])
    for name in (declared, m.group(1).decode("ascii", "ignore") if m else ""):
        if name:
            try:
                codecs.lookup(name)
                return raw.decode(name, errors="replace")
            except LookupError:
                pass
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return bytes_to_str(raw, detect_encoding(raw))


def _looks_binary(raw: bytes) -> bool:
    head = raw[:8192]
    return b"\x00" in head


def _error(doc_id: str, source: str, reason: str) -> dict:
    return {"id": doc_id, "source": source, "error": reason}


def record_from_dict(obj, doc_id: str, source: str) -> dict:
    """Check one JSON/Parquet row: text or html must be a string, url a string, timestamp a date."""
    if not isinstance(obj, dict):
        return _error(doc_id, source, f"wrong_type: record is a {type(obj).__name__}, not an object")
    rec = {"id": doc_id, "source": source}
    if obj.get("text") is not None:
        if not isinstance(obj["text"], str):
            return _error(doc_id, source, f"wrong_type: text is a {type(obj['text']).__name__}")
        rec["text"] = obj["text"]
    elif obj.get("html") is not None:
        if not isinstance(obj["html"], str):
            return _error(doc_id, source, f"wrong_type: html is a {type(obj['html']).__name__}")
        rec["html"] = obj["html"]
    else:
        return _error(doc_id, source, "missing_field: no text or html")
    url = obj.get("url")
    if url is not None and not isinstance(url, str):
        return _error(doc_id, source, f"wrong_type: url is a {type(url).__name__}")
    rec["url"] = url or ""
    try:
        rec["timestamp"] = parse_timestamp(obj.get("timestamp"))
    except (ValueError, TypeError, OverflowError) as e:
        return _error(doc_id, source, f"wrong_type: timestamp {str(e)[:80]}")
    if obj.get("id") is not None:
        rec["orig_id"] = str(obj["id"])
    return rec


def _open_binary(path: Path):
    name = path.name.lower()
    if name.endswith(".gz"):
        return gzip.open(path, "rb")
    if name.endswith(".zst"):
        import zstandard

        return zstandard.ZstdDecompressor().stream_reader(open(path, "rb"), closefd=True)
    return open(path, "rb")


def read_jsonl(path: Path, source: str) -> Iterator[dict]:
    n = 0
    try:
        with _open_binary(path) as raw:
            f = io.BufferedReader(raw, buffer_size=1 << 20) if not isinstance(raw, io.BufferedReader) else raw
            while True:
                line = f.readline(MAX_RECORD_BYTES + 1)
                if not line:
                    break
                doc_id = f"{source}#{n}"
                n += 1
                if len(line) > MAX_RECORD_BYTES and not line.endswith(b"\n"):
                    while line and not line.endswith(b"\n"):  # skip the rest of the giant line
                        line = f.readline(MAX_RECORD_BYTES)
                    yield _error(doc_id, source, f"record_too_large: JSON line over {MAX_RECORD_BYTES} bytes")
                    continue
                if not line.strip():
                    n -= 1  # blank lines are not records
                    continue
                try:
                    obj = json.loads(line.decode("utf-8"))
                except UnicodeDecodeError as e:
                    yield _error(doc_id, source, f"invalid_utf8: {e.reason} at byte {e.start}")
                    continue
                except json.JSONDecodeError as e:
                    yield _error(doc_id, source, f"malformed_json: {e.msg} at column {e.colno}")
                    continue
                yield record_from_dict(obj, doc_id, source)
    except (OSError, EOFError, ValueError) as e:  # truncated gzip/zstd stream
        yield _error(f"{source}#{n}", source, f"corrupt_file: {type(e).__name__}: {str(e)[:120]}")


def read_parquet(path: Path, source: str) -> Iterator[dict]:
    import pyarrow.parquet as pq

    n = 0
    try:
        pf = pq.ParquetFile(path)
        cols = [c for c in ("text", "html", "url", "timestamp", "id") if c in pf.schema_arrow.names]
        for batch in pf.iter_batches(batch_size=1024, columns=cols):
            for row in batch.to_pylist():
                ts = row.get("timestamp")
                if isinstance(ts, datetime):
                    row["timestamp"] = (ts.timestamp() if ts.tzinfo
                                        else ts.replace(tzinfo=timezone.utc).timestamp())
                yield record_from_dict(row, f"{source}#{n}", source)
                n += 1
    except Exception as e:  # pyarrow raises many types for a corrupt file
        yield _error(f"{source}#{n}", source, f"corrupt_file: {type(e).__name__}: {str(e)[:120]}")


def read_warc(path: Path, source: str) -> Iterator[dict]:
    from warcio.archiveiterator import ArchiveIterator

    n = 0
    try:
        with open(path, "rb") as f:
            for record in ArchiveIterator(f):
                if record.rec_type is None or not record.rec_headers.get_header("WARC-Type"):
                    yield _error(f"{source}#{n}", source,
                                 "corrupt_file: WARC record without a WARC-Type header")
                    return
                if record.rec_type not in ("response", "resource", "conversion"):
                    continue  # request/metadata/warcinfo records are not documents
                doc_id = f"{source}#{n}"
                n += 1
                url = record.rec_headers.get_header("WARC-Target-URI") or ""
                try:
                    ts = parse_timestamp(record.rec_headers.get_header("WARC-Date"))
                except ValueError:
                    ts = None
                ctype = ""
                if record.http_headers is not None:
                    ctype = (record.http_headers.get_header("Content-Type") or "").lower()
                    status = record.http_headers.get_statuscode()
                    if status and not str(status).startswith("2"):
                        yield _error(doc_id, source, f"http_status: {status}")
                        continue
                else:
                    ctype = (record.rec_headers.get_header("Content-Type") or "").lower()
                payload = record.content_stream().read(MAX_RECORD_BYTES + 1)
                if len(payload) > MAX_RECORD_BYTES:
                    yield _error(doc_id, source, f"record_too_large: over {MAX_RECORD_BYTES} bytes")
                    continue
                if record.rec_type == "conversion" or ctype.startswith("text/plain"):
                    try:
                        yield {"id": doc_id, "source": source, "text": payload.decode("utf-8"), "url": url,
                               "timestamp": ts}
                    except UnicodeDecodeError as e:
                        yield _error(doc_id, source, f"invalid_utf8: {e.reason} at byte {e.start}")
                    continue
                if ctype and "html" not in ctype:
                    yield _error(doc_id, source, f"not_html: content type {ctype.split(';')[0]}")
                    continue
                m = re.search(r"charset=([\w.:-]+)", ctype)
                yield {"id": doc_id, "source": source, "html": _decode_html(payload, m.group(1) if m else ""),
                       "url": url, "timestamp": ts}
    except Exception as e:  # warcio raises ArchiveLoadFailed, zlib errors, ... on a corrupt file
        yield _error(f"{source}#{n}", source, f"corrupt_file: {type(e).__name__}: {str(e)[:120]}")


def read_single_file(path: Path, source: str, kind: str) -> Iterator[dict]:
    """One HTML or text file = one document; its URL is file://<path>, its time the file's mtime."""
    doc_id = f"{source}#0"
    try:
        size = path.stat().st_size
        if size > MAX_RECORD_BYTES:
            yield _error(doc_id, source, f"record_too_large: file of {size} bytes")
            return
        raw = path.read_bytes()
        mtime = path.stat().st_mtime
    except OSError as e:
        yield _error(doc_id, source, f"unreadable: {e.strerror or e}")
        return
    url = "file://" + os.path.abspath(path)
    if kind == "html":
        if _looks_binary(raw):
            yield _error(doc_id, source, "binary_file: NUL bytes in an HTML file")
            return
        yield {"id": doc_id, "source": source, "html": _decode_html(raw), "url": url, "timestamp": mtime}
        return
    if _looks_binary(raw):
        yield _error(doc_id, source, "binary_file: NUL bytes")
        return
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        yield _error(doc_id, source, f"invalid_utf8: {e.reason} at byte {e.start}")
        return
    yield {"id": doc_id, "source": source, "text": text, "url": url, "timestamp": mtime}


def read_documents(path: str | Path, source: str | None = None) -> Iterator[dict]:
    """Yield the records of one input file (see the module docstring)."""
    path = Path(path)
    source = source or str(path)
    kind = kind_of(path)
    if kind == "warc":
        yield from read_warc(path, source)
    elif kind == "jsonl":
        yield from read_jsonl(path, source)
    elif kind == "parquet":
        yield from read_parquet(path, source)
    else:
        yield from read_single_file(path, source, kind)


def plan_tasks(files: list[Path], files_per_task: int = 200) -> list[list[str]]:
    """Group input files into map tasks: one task per multi-record file (WARC/JSONL/Parquet), and
    single-document files (HTML, text, code) in chunks of `files_per_task`, so a directory of 10k
    small pages is 50 tasks, not 10k."""
    tasks: list[list[str]] = []
    small: list[str] = []
    for f in files:
        if kind_of(f) in ("warc", "jsonl", "parquet"):
            tasks.append([str(f)])
        else:
            small.append(str(f))
    for i in range(0, len(small), max(1, files_per_task)):
        tasks.append(small[i:i + files_per_task])
    return tasks
