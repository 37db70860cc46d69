"""Training a new BPE tokenizer (paper §3.2): the HF `tokenizers` trainer's merges converted to
tiktoken ranks give the same ids as the trained HF tokenizer on held-out text, every merge is
consistent with tiktoken's rank order, round trips are lossless, bad input is a HerdError."""

import json

import pytest
import tiktoken.load

from tokenizer_corpus import (EMOJI, SPECIAL_LOOKING, english, long_runs, multilingual_text, python_code,
                              random_text)
from herd.errors import HerdError
from herd.tokenizer import Tokenizer
from herd.tokenizer.train import (MIN_VOCAB_SIZE, bytes_to_unicode, check_merges, hf_merges, iter_texts,
                                  train_bpe)

VOCAB = 2048


def train_texts():
    code = python_code(700_000)
    return (english(500_000) + code[: len(code) // 2]
            + [multilingual_text(20_000, seed=100 + i) for i in range(4)])


def held_out_texts():
    code = python_code(700_000)
    return (english(200_000, skip=200) + code[len(code) // 2:][:8]
            + [multilingual_text(3_000, seed=i) for i in range(8)]
            + [random_text(3_000, seed=50 + i) for i in range(8)]
            + [EMOJI, SPECIAL_LOOKING, "", " ", "\n\n\n"])


@pytest.fixture(scope="module")
def trained():
    tok, hf = train_bpe(train_texts(), VOCAB, show_progress=False, return_hf=True)
    return tok, hf


def _hf_ids_as_ranks(tok, hf, texts):
    """The trained HF tokenizer's ids, renamed to the tiktoken rank of the same bytes."""
    u2b = {c: b for b, c in bytes_to_unicode().items()}
    id_to_rank = {i: tok.mergeable_ranks[bytes(u2b[c] for c in s)] for s, i in hf.get_vocab().items()}
    return [[id_to_rank[i] for i in e.ids] for e in hf.encode_batch(texts)]


def test_sizes_and_layout(trained):
    tok, hf = trained
    ranks = tok.mergeable_ranks
    assert tok.n_words == VOCAB and len(ranks) == VOCAB - 256 == hf.get_vocab_size()
    assert all(ranks[bytes([b])] == b for b in range(256))  # the 256 bytes first, in byte order
    assert tok.bos_id == VOCAB - 256 and tok.eot_id == VOCAB - 256 + 9  # Llama 3's special order
    assert max(map(len, ranks)) > 4  # real merges, not only bytes


def test_every_merge_consistent_with_rank_order(trained):
    tok, hf = trained
    merges = hf_merges(hf)
    assert len(merges) == VOCAB - 512
    check = check_merges(tok.mergeable_ranks, merges)
    assert check.ok and check.merges == len(merges), check
    for i, (a, b) in enumerate(merges):
        assert tok.mergeable_ranks[a + b] == 256 + i


def test_tiktoken_ids_equal_hf_trained_tokenizer_on_held_out(trained):
    tok, hf = trained
    held = held_out_texts()
    assert sum(map(len, held)) > 300_000
    theirs = _hf_ids_as_ranks(tok, hf, held)
    for text, ids in zip(held, theirs):
        assert tok.model.encode_ordinary(text) == ids, text[:60]  # same input as HF: no long-run cutting
    # With herd's long-run cutting, ids equal HF's on the same pieces.
    from herd.tokenizer.tokenizer import split_long_runs

    s = long_runs()[0]
    assert tok.encode(s) == [i for ids in _hf_ids_as_ranks(tok, hf, list(split_long_runs(s))) for i in ids]


def test_trained_round_trip_and_compression(trained):
    tok, _ = trained
    held = held_out_texts() + long_runs()[:2]
    for text in held:
        assert tok.decode(tok.encode(text)) == text
    eng = english(200_000, skip=200)
    chars = sum(map(len, eng))
    assert chars / sum(map(len, tok.encode_batch(eng))) > 2.5  # a 2K vocabulary: ~2.8 chars/token on English


def test_save_load_is_tiktoken_format(trained, tmp_path):
    tok, _ = trained
    path = tmp_path / "tokenizer.model"
    tok.save(path)
    assert tiktoken.load.load_tiktoken_bpe(str(path)) == tok.mergeable_ranks
    again = Tokenizer.load(path)
    text = multilingual_text(5_000, seed=7)
    assert again.encode(text) == tok.encode(text) and again.n_words == VOCAB


def test_train_from_files(tmp_path):
    (tmp_path / "a.txt").write_text(" ".join(english(60_000)), encoding="utf-8")
    sub = tmp_path / "sub"
    sub.mkdir()
    with open(sub / "b.jsonl", "w", encoding="utf-8") as f:
        for i in range(50):
            f.write(json.dumps({"text": multilingual_text(1_000, seed=i), "id": i}) + "\n")
    (sub / "ignored.bin").write_bytes(b"\xff\xfe")
    assert len(list(iter_texts([tmp_path]))) == 51
    tok = train_bpe(files=[tmp_path], vocab_size=1024, show_progress=False)
    assert tok.n_words == 1024
    text = multilingual_text(2_000, seed=99)
    assert tok.decode(tok.encode(text)) == text


def test_bad_input(tmp_path):
    with pytest.raises(HerdError, match=">= 768"):
        train_bpe(["some text"], vocab_size=512)
    assert MIN_VOCAB_SIZE == 768
    with pytest.raises(HerdError, match="too small"):
        train_bpe(["tiny corpus, tiny corpus"], vocab_size=4096, show_progress=False)
    small = train_bpe(["tiny corpus, tiny corpus"] * 3, vocab_size=4096, show_progress=False,
                      allow_smaller=True)
    assert 512 < small.n_words < 4096 and small.decode(small.encode("tiny corpus")) == "tiny corpus"
    with pytest.raises(HerdError, match="empty"):
        train_bpe(["", ""], vocab_size=1024, show_progress=False)
    with pytest.raises(HerdError, match="not found"):
        train_bpe(files=[tmp_path / "missing"], vocab_size=1024)
    (tmp_path / "latin1.txt").write_bytes("café".encode("latin-1"))
    with pytest.raises(HerdError, match="UTF-8"):
        train_bpe(files=[tmp_path / "latin1.txt"], vocab_size=1024)
    (tmp_path / "bad.jsonl").write_text('{"text": "ok"}\n{"no_text": 1}\n')
    with pytest.raises(HerdError, match="line 2"):
        train_bpe(files=[tmp_path / "bad.jsonl"], vocab_size=1024)
    with pytest.raises(HerdError):
        train_bpe([1, 2, 3], vocab_size=1024)
