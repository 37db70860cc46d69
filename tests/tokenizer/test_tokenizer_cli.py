"""`herd tokenizer train|encode|decode|stats` end to end, and its errors (exit 2, one line)."""

from tokenizer_corpus import english, multilingual_text
from herd.cli import main
from herd.tokenizer import Tokenizer


def test_train_encode_decode_stats(tmp_path, capsys):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "en.txt").write_text("\n\n".join(english(150_000)), encoding="utf-8")
    (corpus / "ml.md").write_text(multilingual_text(30_000), encoding="utf-8")
    out = tmp_path / "tok.model"
    assert main(["tokenizer", "train", "--input", str(corpus), "--vocab-size", "1024", "--out", str(out),
                 "--quiet"]) == 0
    assert "vocab_size 1024" in capsys.readouterr().out
    tok = Tokenizer.load(out)
    assert tok.n_words == 1024

    assert main(["tokenizer", "encode", "--tokenizer", str(out), "Hello llamas"]) == 0
    ids = capsys.readouterr().out.split()
    assert list(map(int, ids)) == tok.encode("Hello llamas")
    assert main(["tokenizer", "decode", "--tokenizer", str(out), *ids]) == 0
    assert capsys.readouterr().out == "Hello llamas\n"
    assert main(["tokenizer", "encode", "--allow-special", "--bos", "<|eot_id|>hi"]) == 0
    assert capsys.readouterr().out.split()[:2] == ["128000", "128009"]

    assert main(["tokenizer", "stats", "--input", str(corpus), "--tokenizer", "llama3", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3 and "chars/token" in lines[1] and "vocab 1024" in lines[2]
    llama_cpt = float(lines[1].split(" chars/token")[0].split()[-1])
    small_cpt = float(lines[2].split(" chars/token")[0].split()[-1])
    assert llama_cpt > small_cpt > 1.5  # 128K ranks compress better than 768 (mostly English here)


def test_errors_exit_2(tmp_path, capsys):
    assert main(["tokenizer", "train", "--input", str(tmp_path / "nope"), "--vocab-size", "1024",
                 "--out", str(tmp_path / "t.model")]) == 2
    assert "herd: error: input not found" in capsys.readouterr().err
    (tmp_path / "a.txt").write_text("hello " * 100)
    assert main(["tokenizer", "train", "--input", str(tmp_path), "--vocab-size", "300", "--out", "x"]) == 2
    assert ">= 768" in capsys.readouterr().err
    (tmp_path / "corrupt.model").write_bytes(b"\x00\x01garbage\n")
    assert main(["tokenizer", "encode", "--tokenizer", str(tmp_path / "corrupt.model"), "x"]) == 2
    assert "herd: error:" in capsys.readouterr().err
    assert main(["tokenizer", "decode", "abc"]) == 2
    assert main(["tokenizer", "decode", "999999"]) == 2
