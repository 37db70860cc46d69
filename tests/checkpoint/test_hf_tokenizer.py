"""The HF tokenizer.json export (paper §3.2 tokenizer): transformers' AutoTokenizer on a herd HF
export gives herd's ids; a Llama 3 style tokenizer.json reads back into the same tiktoken ranks."""

import pytest

from herd.checkpoint import load_model
from herd.checkpoint.hf import save_hf
from herd.checkpoint.hf_tokenizer import load_hf_tokenizer_json, to_hf_tokenizer
from herd.model import ModelArgs, Transformer
from herd.tokenizer import Tokenizer

TEXT = ("Hello world!  The  quick brown fox's 12345 jumps.\n\n\tdef f(x):\n        return x ** 2  # code\n"
        "Ελληνικά русский العربية हिन्दी 日本語 한국어 中文 Türkçe Việt 🙂🚀 naïve café    \n\n\n end")


def _toy():
    ranks = {bytes([i]): i for i in range(256)}
    for piece in (b"he", b"ll", b"hell", b"hello", b" w", b"or", b" wor", b" world", b"  ", b"    ", b"\n\n",
                  b"re", b"tu", b"tur", b"turn", b" re", b" return", b"\xc3\xa9", b"caf", b"caf\xc3\xa9"):
        ranks[piece] = len(ranks)
    return Tokenizer(ranks)


def test_toy_tokenizer_export_matches_in_transformers(tmp_path):
    transformers = pytest.importorskip("transformers")
    tok = _toy()
    m = Transformer.build(ModelArgs(dim=32, n_layers=1, n_heads=2, vocab_size=tok.n_words, multiple_of=16,
                                    max_seq_len=64), seed=0)
    save_hf(m, tmp_path / "hf", tokenizer=tok)
    at = transformers.AutoTokenizer.from_pretrained(str(tmp_path / "hf"))
    for text in (TEXT, "hello world", " return café", "x" * 300):
        assert at(text)["input_ids"] == tok.encode(text, bos=True)
        assert at.decode(tok.encode(text)) == text
    assert at.convert_tokens_to_ids("<|eot_id|>") == tok.eot_id
    # herd reads tokenizer.json back when there is no tiktoken original/tokenizer.model
    (tmp_path / "hf" / "original" / "tokenizer.model").unlink()
    _, t2 = load_model(tmp_path / "hf")
    assert t2.mergeable_ranks == tok.mergeable_ranks and t2.encode(TEXT) == tok.encode(TEXT)


@pytest.mark.slow
def test_llama3_tokenizer_json_matches_tiktoken(tmp_path):
    tok = Tokenizer.llama3()
    hf = to_hf_tokenizer(tok)
    text = TEXT * 200
    assert hf.encode(text).ids == tok.encode(text, bos=True)
    hf.save(str(tmp_path / "tokenizer.json"))
    t2 = load_hf_tokenizer_json(tmp_path / "tokenizer.json")
    assert t2.mergeable_ranks == tok.mergeable_ranks
