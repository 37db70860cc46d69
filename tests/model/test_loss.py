"""The fused output-layer + cross-entropy (herd.model.loss): the same loss and gradients as
logits -> F.cross_entropy, with ignored targets, tied embeddings, chunks that do not divide the
token count, no-grad evaluation and autocast."""

import copy

import pytest
import torch
import torch.nn.functional as F

from herd.model.args import ModelArgs
from herd.model.loss import fused_linear_cross_entropy
from herd.model.transformer import Transformer


def _model(**kw):
    a = dict(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=300, multiple_of=32, max_seq_len=64)
    a.update(kw)
    return Transformer.build(ModelArgs(**a), seed=0)


def _batch(V, B=3, T=20, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, V, (B, T + 1), generator=g)
    tg = x[:, 1:].clone()
    tg[0, :5] = -100  # e.g. a prompt, or padding
    tg[2, -3:] = -100
    return x[:, :-1], tg


@pytest.mark.parametrize("tied", [False, True])
@pytest.mark.parametrize("fuse", [True, False])
def test_loss_and_grads_match_plain_cross_entropy(tied, fuse, monkeypatch):
    import herd.model.loss as loss_mod

    monkeypatch.setattr(loss_mod, "FUSE_ABOVE_BYTES", 0 if fuse else 1 << 40)
    a = _model(tie_embeddings=tied)
    b = copy.deepcopy(a)
    x, tg = _batch(300)
    plain = F.cross_entropy(a(x).flatten(0, 1), tg.flatten(), ignore_index=-100, reduction="sum")
    fused = b(x, targets=tg)
    assert fused.dtype == torch.float32 and fused.dim() == 0
    assert torch.allclose(fused, plain, rtol=1e-5)
    (plain * 0.5).backward()
    (fused * 0.5).backward()
    for (k, pa), pb in zip(a.named_parameters(), b.parameters()):
        assert torch.allclose(pa.grad, pb.grad, rtol=1e-4, atol=1e-6), k


@pytest.mark.parametrize("chunk", [1, 7, 64, 1000])
def test_chunk_sizes(chunk):
    g = torch.Generator().manual_seed(1)
    h = torch.randn(45, 16, generator=g, requires_grad=True)
    w = torch.randn(50, 16, generator=g, requires_grad=True)
    t = torch.randint(0, 50, (45,), generator=g)
    t[::4] = -100
    ref = F.cross_entropy(h @ w.t(), t, ignore_index=-100, reduction="sum")
    got = fused_linear_cross_entropy(h, w, t, chunk=chunk)
    assert torch.allclose(got, ref, rtol=1e-5)
    gr = torch.autograd.grad(ref, (h, w))
    gf = torch.autograd.grad(got, (h, w))
    for x, y in zip(gr, gf):
        assert torch.allclose(x, y, rtol=1e-4, atol=1e-6)


@pytest.fixture(params=[True, False], ids=["fused", "plain"])
def fuse(request, monkeypatch):
    import herd.model.loss as loss_mod

    monkeypatch.setattr(loss_mod, "FUSE_ABOVE_BYTES", 0 if request.param else 1 << 40)
    return request.param


def test_no_grad_and_all_ignored(fuse):
    m = _model()
    x, tg = _batch(300)
    with torch.no_grad():
        ref = F.cross_entropy(m(x).flatten(0, 1), tg.flatten(), ignore_index=-100, reduction="sum")
        assert torch.allclose(m(x, targets=tg), ref, rtol=1e-5)
    none = torch.full_like(tg, -100)
    loss = m(x, targets=none)
    assert loss.item() == 0.0
    loss.backward()  # zero gradients, no NaN
    assert all(torch.isfinite(p.grad).all() for p in m.parameters() if p.grad is not None)


def test_autocast_bf16_close_to_fp32(fuse):
    m = _model()
    x, tg = _batch(300)
    ref = m(x, targets=tg)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = m(x, targets=tg)
    assert got.dtype == torch.float32
    assert torch.allclose(got, ref, rtol=2e-2)
    got.backward()
    assert all(p.grad.dtype == torch.float32 for p in m.parameters())


def test_shape_mismatch_is_clear():
    with pytest.raises(ValueError, match="do not match"):
        fused_linear_cross_entropy(torch.randn(4, 8), torch.randn(10, 8), torch.zeros(5, dtype=torch.long))
