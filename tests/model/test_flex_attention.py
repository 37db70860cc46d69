"""The FlexAttention document mask (herd.model.flex) against the exact per-document SDPA core.

On the CPU (torch 2.13): the block mask built from document spans equals torch's `create_block_mask`;
the compiled FlexAttention forward (inductor's CPU template; its backward is not implemented on CPU)
equals per-document SDPA, for single cores and a whole model; gradients go through FlexAttention's own
eager (reference) implementation with the same block mask. The CUDA tests run the compiled kernel
forward and backward, as training does."""

import pytest
import torch
import torch.nn.attention.flex_attention as torch_flex

import herd.model.flex as flex
import herd.model.transformer as transformer
from herd.model import ModelArgs, Transformer
from herd.model.flex import document_block_mask, document_mask_mod, document_runs, flex_document_attention
from herd.model.transformer import document_segments, sdpa_attention


def spans(cuts, T):
    b = [0, *cuts, T]
    return [(b[i], b[i + 1]) for i in range(len(b) - 1)]


T = 300  # not a multiple of the 128-token tile: a padded last tile
LAYOUTS = {
    "edges": [spans([128, 256], T), spans([100, 200], T)],  # boundaries on and off tile edges
    "crossing": [spans([5, 127, 129, 255, 257], T), [(0, T)]],  # tiny documents across tile edges; one doc
    "many": [spans(list(range(7, T, 13)), T), spans([1, 2, 3, 299], T)],  # 23 documents; 1-token docs
}


def qkv(B=2, H=4, Hkv=2, D=16, n=T, grad=False, device="cpu", dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    shapes = [(B, H, n, D), (B, Hkv, n, D), (B, Hkv, n, D)]
    return [torch.randn(s, generator=g).to(device, dtype).requires_grad_(grad) for s in shapes]


@pytest.mark.parametrize("name", list(LAYOUTS))
def test_block_mask_equals_create_block_mask(name):
    segs = LAYOUTS[name]
    ours = document_block_mask(segs, T, "cpu")
    ref = torch_flex.create_block_mask(document_mask_mod(document_runs(segs, T)), len(segs), None, T, T,
                                       device="cpu")
    for kind in ("kv", "full_kv", "q", "full_q"):
        num, ref_num = getattr(ours, f"{kind}_num_blocks"), getattr(ref, f"{kind}_num_blocks")
        assert torch.equal(num, ref_num), kind
        idx, ref_idx = getattr(ours, f"{kind}_indices"), getattr(ref, f"{kind}_indices")
        for b in range(len(segs)):
            for i in range(num.shape[-1]):
                n = int(num[b, 0, i])
                assert torch.equal(idx[b, 0, i, :n], ref_idx[b, 0, i, :n]), (kind, b, i)
    assert ours.sparsity() == ref.sparsity()


def test_block_mask_of_a_long_sequence_is_small_and_cached():
    n = 131072
    segs = [spans(list(range(2000, n, 2000)), n)]  # 128K tokens, 66 documents
    flex._masks.clear()
    m = flex.cached_block_mask(segs, n, "cpu")
    assert m.kv_indices.shape == (1, 1, 1024, 1024)  # the 128-token tile grid, never [T, T]
    assert flex.cached_block_mask([list(s) for s in segs], n, "cpu") is m  # same layout: built once
    assert m.sparsity() > 98  # percent of tiles skipped


@pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")
@pytest.mark.parametrize("name", list(LAYOUTS))
def test_flex_gradients_equal_per_document_sdpa(name, monkeypatch):
    """Outputs and q/k/v gradients through FlexAttention's eager implementation (the compiled kernel's
    reference) with herd's block mask and mask_mod; torch refuses gradients on CPU only by a device check."""
    segs = LAYOUTS[name]
    monkeypatch.setattr(torch_flex, "_validate_device", lambda *a: None)
    q, k, v = qkv(grad=True)
    dout = torch.randn(q.shape, generator=torch.Generator().manual_seed(1))
    out = torch_flex.flex_attention(q, k, v, block_mask=document_block_mask(segs, T, "cpu"), enable_gqa=True)
    grads = torch.autograd.grad(out, (q, k, v), dout)
    ref = sdpa_attention(q, k, v, segs)
    ref_grads = torch.autograd.grad(ref, (q, k, v), dout)
    assert (out - ref).abs().max() <= 1e-5
    for g, r in zip(grads, ref_grads):
        assert (g - r).abs().max() <= 1e-5


@pytest.mark.parametrize("Hkv", [2, 4])
def test_compiled_flex_forward_equals_per_document_sdpa_on_cpu(Hkv):
    """The compiled kernel (inductor's CPU FlexAttention template) on every layout, GQA 2:1 and MHA (the
    first compile takes ~15 s on a cold inductor cache, later shapes ~4 s)."""
    with torch.no_grad():
        for name, segs in LAYOUTS.items():
            q, k, v = qkv(Hkv=Hkv)
            out = flex_document_attention(q, k, v, segs)
            assert (out - sdpa_attention(q, k, v, segs)).abs().max() <= 1e-5, name


def test_model_forward_through_the_flex_dispatch_equals_per_document_sdpa(monkeypatch):
    """The whole model with doc_ids, sdpa_attention handing the rows to FlexAttention as it does on CUDA:
    the same logits, one block mask for both layers."""
    args = ModelArgs(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=256, multiple_of=16,
                     max_seq_len=T)
    model = Transformer.build(args, seed=0)
    tokens = torch.randint(0, 256, (2, T), generator=torch.Generator().manual_seed(0))
    doc_ids = torch.zeros(2, T, dtype=torch.long)
    doc_ids[0, 90:] = 1
    doc_ids[0, 130:] = 2  # a document across the 128-token tile edge
    doc_ids[1, 250:] = 1
    with torch.no_grad():
        ref = model(tokens, doc_ids=doc_ids)
        flex._masks.clear()
        monkeypatch.setattr(transformer, "flex_usable", lambda q: True)
        out = model(tokens, doc_ids=doc_ids)
    assert len(flex._masks) == 1
    assert (out - ref).abs().max() <= 1e-5
    assert len(document_segments(doc_ids)[0]) == 3


def test_cpu_keeps_the_per_document_sdpa(monkeypatch):
    called = []
    monkeypatch.setattr(transformer, "flex_document_attention", lambda *a: called.append(1))
    q, k, v = qkv(n=64)
    sdpa_attention(q, k, v, [spans([10], 64), spans([30], 64)])
    assert not called


def _per_document(monkeypatch):
    monkeypatch.setattr(transformer, "flex_usable", lambda q: False)


@pytest.mark.gpu
@pytest.mark.parametrize("name", list(LAYOUTS))
def test_cuda_flex_kernel_outputs_and_gradients_equal_per_document_sdpa(name, monkeypatch):
    n = 384  # tile-aligned rows go to FlexAttention: the layouts with their last document extended
    segs = [s[:-1] + [(s[-1][0], n)] for s in LAYOUTS[name]]
    q, k, v = qkv(D=64, n=n, grad=True, device="cuda")
    dout = torch.randn(q.shape, generator=torch.Generator().manual_seed(1)).cuda()
    flex._masks.clear()
    with torch.no_grad():
        sdpa_attention(*qkv(D=64, device="cuda"), LAYOUTS[name])  # T = 300: per-document SDPA
    assert not flex._masks
    out = sdpa_attention(q, k, v, segs)  # dispatches to FlexAttention on CUDA
    assert len(flex._masks) == 1
    grads = torch.autograd.grad(out, (q, k, v), dout)
    _per_document(monkeypatch)
    ref = sdpa_attention(q, k, v, segs)
    ref_grads = torch.autograd.grad(ref, (q, k, v), dout)
    assert (out - ref).abs().max() <= 1e-5
    for g, r in zip(grads, ref_grads):
        assert (g - r).abs().max() <= 1e-5


@pytest.mark.gpu
def test_cuda_training_step_with_many_documents_at_8k(monkeypatch):
    """A bf16 forward + backward of a small model on 8K tokens in 64 documents: loss and gradients as
    with per-document SDPA (bf16 rounding), the block mask built once for all layers."""
    n = 8192
    args = ModelArgs(dim=256, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=512, multiple_of=32,
                     max_seq_len=n)
    model = Transformer.build(args, device="cuda", seed=0)
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, 512, (1, n), generator=g).cuda()
    cuts = sorted(torch.randperm(n - 1, generator=g)[:63].add(1).tolist())
    doc_ids = torch.zeros(1, n, dtype=torch.long)
    for c in cuts:
        doc_ids[0, c:] += 1

    def step():
        model.zero_grad()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = model(tokens, targets=tokens.roll(-1, 1), doc_ids=doc_ids.cuda()) / n
        loss.backward()
        return loss.item(), model.layers[0].attention.wq.weight.grad.clone()

    flex._masks.clear()
    loss, grad = step()
    assert len(flex._masks) == 1
    _per_document(monkeypatch)
    ref_loss, ref_grad = step()
    assert abs(loss - ref_loss) < 1e-2
    assert (grad - ref_grad).norm() / ref_grad.norm() < 5e-2
