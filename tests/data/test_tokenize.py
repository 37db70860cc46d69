"""herd tokenize: documents -> token shards (paper §3.1 -> §3.4)."""

import gzip
import json

import numpy as np
import pytest

from herd.data import TokenData, read_documents, tokenize_files
from herd.data.tokenize import is_val
from herd.errors import HerdError


def test_shards_hold_exact_ids_and_split(tok_dir, byte_tok, text_files):
    train, val = TokenData(tok_dir, "train"), TokenData(tok_dir, "val")
    texts = [open(f, encoding="utf-8").read() for f in text_files]
    texts = [t for t in texts if t.strip()]
    want_val = [t for t in texts if is_val(t, 0.1)]
    want_train = [t for t in texts if not is_val(t, 0.1)]
    assert train.n_docs == len(want_train) and val.n_docs == len(want_val) and val.n_docs > 0
    for data, want in ((train, want_train), (val, want_val)):
        for i, t in enumerate(want):  # same order as the input, each document with bos ... eos
            assert data.doc(i).tolist() == byte_tok.encode(t, bos=True, eos=True)
    assert train.n_tokens == sum(len(byte_tok.encode(t)) + 2 for t in want_train)
    meta = json.loads((tok_dir / "meta.json").read_text())
    assert meta["tokenizer"]["n_words"] == 512 and (tok_dir / "tokenizer.model").is_file()


def test_jsonl_gz_parquet_and_many_shards_and_workers(tmp_path, byte_tok, text_files):
    import pyarrow as pa
    import pyarrow.parquet as pq

    texts = [open(f, encoding="utf-8").read()[:3000] for f in text_files[:12]]
    with gzip.open(tmp_path / "a.jsonl.gz", "wt") as f:
        for t in texts[:6]:
            f.write(json.dumps({"text": t, "id": 1}) + "\n")
    pq.write_table(pa.table({"text": texts[6:]}), tmp_path / "b.parquet")
    out = tmp_path / "tok"
    meta = tokenize_files([tmp_path / "a.jsonl.gz", tmp_path / "b.parquet"], byte_tok, out, val_fraction=0,
                          workers=2, shard_tokens=5000, chunk_docs=2, progress=False)
    d = TokenData(out)
    assert len(meta["splits"]["train"]["shards"]) > 2  # split across shards
    assert d.n_docs == 12
    for i, t in enumerate(texts):
        assert d.doc(i).tolist() == byte_tok.encode(t, bos=True, eos=True)
    assert d.doc(3, 5, 9).tolist() == byte_tok.encode(texts[3], bos=True)[5:9]


def test_bad_inputs_one_clear_line(tmp_path, byte_tok):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine"}\nnot json\n')
    with pytest.raises(HerdError, match=r"bad.jsonl:2: not a JSON record"):
        list(read_documents(bad))
    nofield = tmp_path / "nofield.jsonl"
    nofield.write_text('{"body": "x"}\n')
    with pytest.raises(HerdError, match="no 'text' field"):
        tokenize_files([nofield], byte_tok, tmp_path / "o1", workers=1, progress=False)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(HerdError, match="no input documents"):
        tokenize_files([empty], byte_tok, tmp_path / "o2", workers=1, progress=False)
    with pytest.raises(HerdError, match="input not found"):
        tokenize_files([tmp_path / "nope"], byte_tok, tmp_path / "o3", workers=1, progress=False)
    with pytest.raises(HerdError, match="empty data directory"):
        TokenData(empty)
    ok = tmp_path / "ok.txt"
    ok.write_text("some text")
    tokenize_files([ok], byte_tok, tmp_path / "o4", workers=1, progress=False, val_fraction=0)
    with pytest.raises(HerdError, match="already exists"):
        tokenize_files([ok], byte_tok, tmp_path / "o4", workers=1, progress=False)
    assert not list(tmp_path.glob("*.tmp-tokenize"))  # failures leave no temporaries


def test_truncated_shard_detected(tmp_path, byte_tok):
    ok = tmp_path / "ok.txt"
    ok.write_text("some text " * 50)
    out = tmp_path / "t"
    tokenize_files([ok], byte_tok, out, workers=1, progress=False, val_fraction=0)
    f = out / "train-00000.bin"
    f.write_bytes(f.read_bytes()[:-8])
    with pytest.raises(HerdError, match="truncated shard"):
        TokenData(out)


def test_cli_tokenize(tmp_path, byte_tok, capsys):
    from herd.cli import main

    byte_tok.save(tmp_path / "bytes.model")
    src = tmp_path / "doc.jsonl"
    src.write_text("".join(json.dumps({"content": f"document number {i}"}) + "\n" for i in range(20)))
    rc = main(["tokenize", str(src), "--out", str(tmp_path / "o"), "--tokenizer",
               str(tmp_path / "bytes.model"),
               "--text-field", "content", "--workers", "1", "--quiet", "--val-fraction", "0"])
    assert rc == 0 and "20 documents" in capsys.readouterr().out
    assert np.asarray(TokenData(tmp_path / "o").doc(0)).tolist() == byte_tok.encode("document number 0",
                                                                                     bos=True, eos=True)
    assert main(["tokenize", str(tmp_path / "missing.jsonl"), "--out", str(tmp_path / "x")]) == 2


def test_interrupted_tokenization_resumes_to_the_same_output(tmp_path, byte_tok, text_files, monkeypatch):
    import herd.data.tokenize as tk

    kw = dict(val_fraction=0.2, workers=1, shard_tokens=20_000, chunk_docs=2, progress=False)
    ref = tokenize_files(text_files[:20], byte_tok, tmp_path / "ref", **kw)
    orig, n = tk.read_documents, {"docs": 0}

    def dying(path, field="text"):
        for t in orig(path, field):
            n["docs"] += 1
            if n["docs"] == 13:
                raise KeyboardInterrupt
            yield t

    monkeypatch.setattr(tk, "read_documents", dying)
    with pytest.raises(KeyboardInterrupt):
        tokenize_files(text_files[:20], byte_tok, tmp_path / "out", **kw)
    prog = json.loads((tmp_path / "out.tmp-tokenize" / "progress.json").read_text())
    assert 0 < prog["docs"] < 13 and prog["shards"]["train"]
    monkeypatch.undo()
    msgs = []
    meta = tokenize_files(text_files[:20], byte_tok, tmp_path / "out", log=msgs.append, **kw)
    assert any(f"after {prog['docs']} documents" in m for m in msgs)
    assert not (tmp_path / "out.tmp-tokenize").exists()
    for split in ("train", "val"):
        a, b = TokenData(tmp_path / "ref", split), TokenData(tmp_path / "out", split)
        assert meta["splits"][split]["n_tokens"] == ref["splits"][split]["n_tokens"] > 0
        assert a.n_docs == b.n_docs and all(np.array_equal(a.doc(i), b.doc(i)) for i in range(a.n_docs))
