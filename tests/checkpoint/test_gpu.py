"""Checkpoints onto a GPU (paper §3.2 models): `load_model(..., device="cuda", dtype=...)` from each
format gives the CPU model's logits (fp32 exactly up to kernel differences, bf16 within bf16 noise)."""

import pytest
import torch

from herd.checkpoint import load_model, save_herd
from herd.checkpoint.hf import save_hf
from herd.checkpoint.meta import save_meta
from herd.model import ModelArgs, Transformer


@pytest.mark.gpu
@pytest.mark.parametrize("fmt", ["herd", "hf", "meta"])
def test_load_onto_cuda(tmp_path, fmt):
    torch.backends.cuda.matmul.allow_tf32 = False
    args = ModelArgs(dim=256, n_layers=2, n_heads=8, n_kv_heads=2, vocab_size=512, multiple_of=64,
                     max_seq_len=512, use_scaled_rope=True)
    m = Transformer.build(args, seed=0).eval()
    {"herd": save_herd, "hf": save_hf, "meta": save_meta}[fmt](m, tmp_path / fmt)
    tokens = torch.randint(0, 512, (2, 512), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = m(tokens)
        g32, _ = load_model(tmp_path / fmt, device="cuda")
        assert g32.tok_embeddings.weight.is_cuda and g32.rope_cos.is_cuda
        out32 = g32(tokens.cuda()).cpu()
        g16, _ = load_model(tmp_path / fmt, device="cuda", dtype=torch.bfloat16)
        assert g16.layers[0].attention.wq.weight.dtype == torch.bfloat16
        out16 = g16(tokens.cuda()).cpu()
    assert (out32 - ref).abs().max().item() <= 1e-4
    assert (out16 - ref).abs().max().item() <= 0.1 * ref.abs().max().item()


@pytest.mark.gpu
@pytest.mark.slow
@pytest.mark.parametrize("preset,shards", [("llama3.2-1b", 1), ("llama3.1-8b", 8)])
def test_real_size_meta_to_hf(tmp_path, preset, shards):
    """Real shapes and the real Llama 3 tokenizer (the 8B with 4 of its 32 layers): Meta files in bf16
    (8 model-parallel shards for the 8B) -> `herd convert` -> transformers loads the weights and the
    tokenizer.json; logits equal herd's, ids equal tiktoken's, Meta -> HF -> Meta is bit-exact.
    Seen on an H100: max |herd - HF| 2.3e-5 (1B) and 1.6e-5 (8B shape) over 700 tokens."""
    transformers = pytest.importorskip("transformers")
    from herd.checkpoint import convert_checkpoint
    from herd.checkpoint.meta import load_meta_state_dict
    from herd.model import get_preset
    from herd.tokenizer import Tokenizer

    torch.backends.cuda.matmul.allow_tf32 = False
    tok = Tokenizer.llama3()
    args = get_preset(preset) if preset == "llama3.2-1b" else get_preset(preset, n_layers=4)
    m = Transformer.build(args, device="cuda", seed=0)
    with torch.no_grad():
        for p in m.parameters():  # trained-model scale, so that attention and RoPE matter
            if p.dim() == 2 and p is not m.tok_embeddings.weight:
                p.normal_(0, p.shape[1] ** -0.5)
    save_meta(m.to(torch.bfloat16), tmp_path / "meta", shards=shards, tokenizer=tok)
    del m
    log = lambda s: None  # noqa: E731
    convert_checkpoint(tmp_path / "meta", tmp_path / "hf", "hf", log=log)
    convert_checkpoint(tmp_path / "hf", tmp_path / "meta2", "meta", log=log)
    a1, s1 = load_meta_state_dict(tmp_path / "meta")
    a2, s2 = load_meta_state_dict(tmp_path / "meta2")
    assert a1 == a2 == args and set(s1) == set(s2)
    assert all(s1[k].dtype == s2[k].dtype and torch.equal(s1[k], s2[k]) for k in s1)
    hf = transformers.LlamaForCausalLM.from_pretrained(str(tmp_path / "hf"),
                                                       dtype=torch.float32).cuda().eval()
    herd_model, herd_tok = load_model(tmp_path / "hf", device="cuda")
    assert herd_tok is not None and herd_tok.n_words == 128256
    text = open(__file__).read()[:3000] + " Ελληνικά русский 日本語 🙂"
    ids = tok.encode(text, bos=True)[:700]
    x = torch.tensor([ids], device="cuda")
    with torch.no_grad():
        assert (herd_model(x) - hf(x).logits).abs().max().item() <= 1e-4
    at = transformers.AutoTokenizer.from_pretrained(str(tmp_path / "hf"))
    assert at(text)["input_ids"] == tok.encode(text, bos=True)
