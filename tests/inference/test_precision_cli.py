"""`--precision` on `herd generate` (issue [4/7]): explicit bf16 loads bf16 weights and says so on stderr;
`auto` resolves with the probe (here mocked as an AVX2-only machine: fp32, the same text as an fp32
Generator); a bad value is an argparse error."""

import pytest

from herd import precision as P
from herd.cli import main
from herd.inference import Generator


def _run(capsys, *argv):
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def test_generate_bf16(ckpt, tok_model, small_tokenizer, capsys):
    rc, out, err = _run(capsys, "generate", ckpt, "--prompt", "Hello there", "--max-new-tokens", 8,
                        "--precision", "bf16")
    assert rc == 0 and out.strip()
    assert "herd: precision bf16 — requested" in err


def test_generate_auto_on_avx2_machine_is_fp32(ckpt, tok_model, small_tokenizer, capsys, monkeypatch,
                                               tmp_path):
    monkeypatch.setenv("HERD_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(P, "cpu_info", lambda: ("AVX2 CPU", ["avx", "avx2", "fma"]))
    monkeypatch.setattr(P, "run_probe", lambda kind, shapes, reps=3: {
        "fp32": 175e9, "bf16": 6e9, "fp32_decode": 12e9, "bf16_decode": 2e9, "fp32_peak": 175e9,
        "bf16_peak": 6e9, "ms": 20.0})
    rc, out, err = _run(capsys, "generate", ckpt, "--prompt", "Hello there", "--max-new-tokens", 12)
    assert rc == 0
    assert "herd: precision fp32 — fp32:" in err and "no bf16 matrix hardware" in err
    ref = Generator(tok_model, small_tokenizer).generate([small_tokenizer.encode("Hello there", bos=True)],
                                                         max_new_tokens=12)[0]
    assert out == ref.text + "\n"


def test_bad_precision(ckpt, capsys):
    with pytest.raises(SystemExit) as e:
        main(["generate", str(ckpt), "--prompt", "x", "--precision", "int4"])
    assert e.value.code == 2
    assert "invalid choice: 'int4'" in capsys.readouterr().err
