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
