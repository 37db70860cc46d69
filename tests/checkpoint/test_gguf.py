"""llama.cpp's convert_hf_to_gguf.py accepts herd's Hugging Face export (slow; needs the converter:
scripts/fetch_llama_cpp.sh puts it in ~/.cache/herd/llama.cpp, or point HERD_LLAMA_CPP_SRC at a
llama.cpp source tree or an unpacked llama-cpp-python sdist).

With the tiktoken tokenizer.model at the root of the export the converter took it for a SentencePiece
model and failed ("could not parse ModelProto"); under original/, as in Meta's HF repos, it reads
tokenizer.json through transformers. It names the pre-tokenizer by hashing the ids of a test string,
so the real Llama 3 tokenizer is recognised as "llama-bpe", while a herd-trained vocabulary (same
split regex, other ids) has an unknown hash: the converter refuses it by design, at that step only.
The GGUF is read back with the converter's own gguf-py: tensors, vocabulary, special ids, chat
template and the Llama 3.1 RoPE factors match herd's model."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from herd.checkpoint.hf import save_hf
from herd.checkpoint.hf_tokenizer import CHAT_TEMPLATE, _bytes_to_unicode
from herd.errors import HerdError
from herd.model import ModelArgs, Transformer
from herd.model.transformer import rope_frequencies
from herd.tokenizer import Tokenizer

pytestmark = pytest.mark.slow


def _converter_dir() -> Path | None:
    env = os.environ.get("HERD_LLAMA_CPP_SRC")
    base = Path(env) if env else (Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
                                  / "herd" / "llama.cpp")
    for d in (base, base / "vendor" / "llama.cpp"):  # a llama.cpp tree, or an unpacked sdist
        if (d / "convert_hf_to_gguf.py").is_file():
            return d
    return None


@pytest.fixture(scope="module")
def llama_cpp():
    d = _converter_dir()
    if d is None:
        pytest.skip("llama.cpp's convert_hf_to_gguf.py not found: run scripts/fetch_llama_cpp.sh "
                    "or set HERD_LLAMA_CPP_SRC")
    pytest.importorskip("transformers", reason="the converter reads tokenizer.json with transformers")
    paths = [str(d / "gguf-py")] + [str(p) for p in (d.parent / "pydeps", d / "pydeps") if p.is_dir()]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths + [os.environ.get("PYTHONPATH", "")]),
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    r = subprocess.run([sys.executable, "-c", "import sentencepiece, gguf"], env=env, capture_output=True,
                       text=True)
    if r.returncode:
        pytest.skip(f"the converter's imports fail ({r.stderr.strip().splitlines()[-1]}); "
                    f"run scripts/fetch_llama_cpp.sh or pip install 'herd[gguf]'")
    return d, env


def _convert(llama_cpp, src, out, *extra):
    d, env = llama_cpp
    return subprocess.run([sys.executable, str(d / "convert_hf_to_gguf.py"), str(src), "--outfile", str(out),
                           "--outtype", "f32", *extra], env=env, capture_output=True, text=True, timeout=600)


# Read the GGUF with the converter's own gguf-py: metadata as JSON, a few tensors as .npy.
_READ = r"""
import json, sys
import numpy as np
from gguf import GGUFReader
r = GGUFReader(sys.argv[1])
out = {"tensors": {t.name: [int(x) for x in t.shape] for t in r.tensors}, "fields": {}}
for name, f in r.fields.items():
    if name.startswith(("general.", "llama.", "tokenizer.")) and name != "tokenizer.ggml.merges":
        v = f.contents()
        out["fields"][name] = v.tolist() if hasattr(v, "tolist") else v
for t in r.tensors:
    if t.name in sys.argv[3:]:
        np.save(f"{sys.argv[2]}/{t.name}.npy", np.asarray(t.data))
json.dump(out, open(f"{sys.argv[2]}/gguf.json", "w"))
"""


def _read_gguf(llama_cpp, path, tmp, names):
    r = subprocess.run([sys.executable, "-c", _READ, str(path), str(tmp), *names], env=llama_cpp[1],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads((tmp / "gguf.json").read_text())


def test_llama_cpp_converts_the_export(tmp_path, llama_cpp):
    import numpy as np

    try:
        tok = Tokenizer.llama3()
    except HerdError as e:
        pytest.skip(str(e))
    args = ModelArgs(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=tok.n_words, multiple_of=16,
                     max_seq_len=16384, use_scaled_rope=True, tie_embeddings=True)
    # bf16: Meta's release dtype; f32 in the GGUF is exact
    model = Transformer.build(args, seed=0).to(torch.bfloat16)
    save_hf(model, tmp_path / "hf", tokenizer=tok)
    assert not (tmp_path / "hf" / "tokenizer.model").exists()

    r = _convert(llama_cpp, tmp_path / "hf", tmp_path / "m.gguf")
    assert r.returncode == 0, r.stderr[-3000:]
    assert (tmp_path / "m.gguf").stat().st_size > 4 * 128256 * 64

    names = ["token_embd.weight", "blk.0.attn_q.weight", "blk.1.attn_k.weight", "blk.1.ffn_down.weight",
             "output_norm.weight", "rope_freqs.weight"]
    g = _read_gguf(llama_cpp, tmp_path / "m.gguf", tmp_path, names)
    f = g["fields"]
    # 9 tensors a layer, embeddings, final norm, the Llama 3.1 RoPE factors; tied: no output.weight
    assert len(g["tensors"]) == 9 * args.n_layers + 3 and "output.weight" not in g["tensors"]
    assert f["general.architecture"] == "llama"
    assert (f["llama.block_count"], f["llama.embedding_length"], f["llama.feed_forward_length"]) == (
        args.n_layers, args.dim, args.ffn_hidden_dim)
    assert (f["llama.attention.head_count"], f["llama.attention.head_count_kv"]) == (args.n_heads,
                                                                                      args.n_kv_heads)
    assert f["llama.context_length"] == args.max_seq_len and f["llama.rope.freq_base"] == args.rope_theta
    assert f["llama.vocab_size"] == tok.n_words == len(f["tokenizer.ggml.tokens"])
    assert (f["tokenizer.ggml.model"], f["tokenizer.ggml.pre"]) == ("gpt2", "llama-bpe")
    assert f["tokenizer.ggml.bos_token_id"] == tok.bos_id and f["tokenizer.ggml.add_bos_token"] is True
    assert f["tokenizer.chat_template"] == CHAT_TEMPLATE
    # the vocabulary, id for id: herd's BPE ranks as byte-level strings, then the special tokens
    enc = _bytes_to_unicode()
    tokens = f["tokenizer.ggml.tokens"]
    for b, i in tok.mergeable_ranks.items():
        assert tokens[i] == "".join(enc[x] for x in b), i
    for s, i in tok.special_tokens.items():
        assert tokens[i] == s
    # weights: llama.cpp undoes HF's RoPE row permutation, so q and k are herd's (Meta's) layout again
    sd = model.state_dict()
    for gname, hname in (("token_embd.weight", "tok_embeddings.weight"),
                         ("output_norm.weight", "norm.weight"),
                         ("blk.0.attn_q.weight", "layers.0.attention.wq.weight"),
                         ("blk.1.attn_k.weight", "layers.1.attention.wk.weight"),
                         ("blk.1.ffn_down.weight", "layers.1.feed_forward.w2.weight")):
        got = torch.from_numpy(np.load(tmp_path / f"{gname}.npy"))
        assert torch.equal(got, sd[hname].float()), gname
    # llama.cpp divides RoPE's base frequencies by these factors: herd's Llama 3.1 scaling
    factors = torch.from_numpy(np.load(tmp_path / "rope_freqs.weight.npy")).double()
    want = rope_frequencies(args.replace(use_scaled_rope=False)).double() / rope_frequencies(args).double()
    assert factors.min() == 1.0 and factors.max() == args.rope_scale_factor
    assert torch.allclose(factors, want, rtol=1e-5)


def test_a_herd_trained_vocabulary_stops_only_at_the_pretokenizer_hash(tmp_path, llama_cpp):
    """The layout is right for any herd tokenizer (no SentencePiece error); the converter's table of
    known pre-tokenizer hashes holds only released tokenizers, so a herd-trained one is refused there."""
    ranks = {bytes([i]): i for i in range(256)} | {b"he": 256, b"ll": 257, b"hell": 258, b"hello": 259}
    tok = Tokenizer(ranks)
    model = Transformer.build(ModelArgs(dim=32, n_layers=1, n_heads=2, vocab_size=tok.n_words, multiple_of=16,
                                        max_seq_len=64), seed=0)
    save_hf(model, tmp_path / "hf", tokenizer=tok)
    r = _convert(llama_cpp, tmp_path / "hf", tmp_path / "toy.gguf", "--vocab-only")
    assert r.returncode != 0
    assert "BPE pre-tokenizer was not recognized" in r.stderr, r.stderr[-3000:]
    assert "ModelProto" not in r.stderr  # what the root tokenizer.model of herd's old layout gave
