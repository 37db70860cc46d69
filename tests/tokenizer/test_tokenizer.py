"""The Llama 3 tokenizer (paper §3.2): ids identical to llama-models' Tokenizer on > 1 MB of varied
text, lossless round trips, batch encoding equal to `encode`, clear errors for bad files."""

import base64
import random

import pytest

from tokenizer_corpus import EMOJI, SPECIAL_LOOKING, long_runs, multilingual_text, varied_corpus
from herd.errors import HerdError
from herd.tokenizer import SPECIAL_TOKENS, Tokenizer
from herd.tokenizer.tokenizer import ParallelEncoder, split_long_runs


@pytest.fixture(scope="module")
def tok():
    return Tokenizer.llama3()


@pytest.fixture(scope="module")
def meta():
    from llama_models.llama3.tokenizer import Tokenizer as MetaTokenizer

    return MetaTokenizer.get_instance()


@pytest.fixture(scope="module")
def docs():
    return varied_corpus()


def test_corpus_is_large_and_varied(docs):
    assert sum(len(d.encode("utf-8")) for d in docs) >= 1_000_000
    joined = "".join(docs)
    for probe in ("Congress", "def ", "import ", "我能吞下玻璃", "Съешь",
                  "ภาษาไทย", "اللغة العربية", "👨‍👩‍👧‍👦", "<|eot_id|>", " " * 30_000, "\n" * 26_000):
        assert probe in joined, probe


def test_ids_identical_to_llama_models(tok, meta, docs):
    n_tokens = 0
    for i, d in enumerate(docs):
        ours = tok.encode(d)
        assert ours == meta.encode(d, bos=False, eos=False), f"document {i} ({d[:40]!r}) differs"
        n_tokens += len(ours)
    assert n_tokens > 250_000
    for d in (EMOJI, SPECIAL_LOOKING, multilingual_text(2_000)):
        assert tok.encode(d, bos=True, eos=True) == meta.encode(d, bos=True, eos=True)
        assert tok.encode(d, allowed_special="all") == meta.encode(d, bos=False, eos=False,
                                                                   allowed_special="all")


def test_special_tokens_match_llama_models(tok, meta):
    assert tok.special_tokens == meta.special_tokens
    assert list(tok.special_tokens) == SPECIAL_TOKENS and len(SPECIAL_TOKENS) == 256
    assert (tok.bos_id, tok.eos_id, tok.pad_id) == (128000, 128001, 128004)
    assert (tok.start_header_id, tok.end_header_id, tok.eom_id, tok.eot_id, tok.python_tag_id) == (
        128006, 128007, 128008, 128009, 128010)
    assert tok.stop_tokens == meta.stop_tokens and tok.n_words == meta.n_words == 128256
    # Special-looking text stays text unless allowed; allowed, it is the one special id.
    assert 128009 not in tok.encode("<|eot_id|>")
    assert tok.encode("<|eot_id|>", allowed_special="all") == [128009]
    with pytest.raises(ValueError):
        tok.encode("<|eot_id|>", disallowed_special="all")


def test_decode_encode_round_trip(tok, docs):
    for d in docs:
        assert tok.decode(tok.encode(d)) == d
    ids = tok.encode(SPECIAL_LOOKING, allowed_special="all", bos=True, eos=True)
    assert tok.decode(ids) == "<|begin_of_text|>" + SPECIAL_LOOKING + "<|end_of_text|>"
    with pytest.raises(HerdError):
        tok.decode([tok.n_words])
    with pytest.raises(HerdError):
        tok.encode(b"bytes")


def test_encode_batch_equals_encode(tok, docs):
    docs = docs[::2] + long_runs()  # every kind of text, half the bulk
    expected = [tok.encode(d) for d in docs]
    assert tok.encode_batch(docs, num_threads=2) == expected
    assert tok.encode_batch(docs[-20:], num_threads=1) == expected[-20:]
    assert tok.encode_batch(docs[:5], bos=True, eos=True) == [[tok.bos_id] + e + [tok.eos_id]
                                                              for e in expected[:5]]
    arrays = tok.encode_batch(docs[::4] + ["", "lone surrogate \ud800 here"], numpy=True, bos=True)
    assert all(a.dtype.name == "uint32" for a in arrays)
    assert [a.tolist() for a in arrays] == [tok.encode(d, bos=True)
                                            for d in docs[::4] + ["", "lone surrogate \ud800 here"]]
    assert tok.encode_batch([]) == []
    with ParallelEncoder(tok, processes=2, chunk_chars=100_000) as pe:
        part = docs[-30:]  # small documents and the long runs, over several tasks
        assert [a.tolist() for a in pe.encode_batch(part, eos=True)] == [e + [tok.eos_id]
                                                                         for e in expected[-30:]]
    with pytest.raises(HerdError):
        tok.encode_batch(["ok", 3])


def test_long_run_cutting_matches_meta():
    from llama_models.llama3.tokenizer import Tokenizer as MetaTokenizer

    meta_split = MetaTokenizer._split_whitespaces_or_nonwhitespaces  # a Python loop: keep inputs small
    rng = random.Random(0)
    for max_run in (1, 2, 7):
        for _ in range(300):
            s = "".join(rng.choice([" ", "\n", "a", "é", "\u3000", "x y", "🦙"])
                        * rng.randint(1, 3 * max_run + 2) for _ in range(rng.randint(0, 6)))
            assert list(split_long_runs(s, max_run)) == list(meta_split(s, max_run)), (s, max_run)
    for s in long_runs()[:3]:
        pieces = list(split_long_runs(s))
        assert pieces == list(meta_split(s, 25_000)) and len(pieces) > 1


def test_save_load_round_trip(tok, tmp_path):
    path = tmp_path / "tokenizer.model"
    tok.save(path)
    assert path.read_bytes() == open(tok.path, "rb").read()  # byte-identical to Meta's file
    again = Tokenizer.load(path)
    assert again.mergeable_ranks == tok.mergeable_ranks
    # a directory with tokenizer.model
    assert Tokenizer.from_spec(tmp_path).encode("hi there") == tok.encode("hi there")


def _write(path, lines):
    path.write_bytes(b"".join(line + b"\n" for line in lines))
    return path


def test_bad_tokenizer_files(tmp_path):
    good = [base64.b64encode(bytes([b])) + b" " + str(b).encode() for b in range(256)]
    assert Tokenizer.load(_write(tmp_path / "ok.model", good)).n_words == 512
    with pytest.raises(HerdError, match="not found"):
        Tokenizer.load(tmp_path / "missing.model")
    with pytest.raises(HerdError, match="not found"):
        Tokenizer.load(tmp_path)  # a directory without tokenizer.model
    with pytest.raises(HerdError, match="empty"):
        Tokenizer.load(_write(tmp_path / "empty.model", []))
    with pytest.raises(HerdError, match="line 1"):
        Tokenizer.load(_write(tmp_path / "text.model", [b"this is not a tokenizer"]))
    (tmp_path / "binary.model").write_bytes(bytes(random.Random(0).randrange(256) for _ in range(4096)))
    with pytest.raises(HerdError):
        Tokenizer.load(tmp_path / "binary.model")
    with pytest.raises(HerdError, match="ranks"):
        Tokenizer.load(_write(tmp_path / "gap.model", good[:-1] + [base64.b64encode(b"\xff") + b" 300"]))
    with pytest.raises(HerdError, match="single bytes"):
        Tokenizer.load(_write(tmp_path / "nobyte.model", good[:-1] + [base64.b64encode(b"ab") + b" 255"]))
    with pytest.raises(HerdError):
        Tokenizer.load(_write(tmp_path / "truncated.model", good[:100] + [good[100][:5]]))


@pytest.mark.slow
def test_ids_identical_to_llama_models_on_whole_corpora(tok, meta):
    """All 249 State of the Union addresses and the whole CPython standard library (~40 MB)."""
    from tokenizer_corpus import english, python_code, wiki_summaries

    docs = (english(10**9) + python_code(10**9) + wiki_summaries("fr-fr", 10**9)
            + wiki_summaries("es-es", 10**9))
    assert sum(map(len, docs)) > 10_000_000
    ours = tok.encode_batch(docs)
    for i, d in enumerate(docs):
        assert ours[i] == meta.encode(d, bos=False, eos=False), f"document {i} ({d[:40]!r}) differs"
