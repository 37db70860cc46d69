"""The document mask through FlexAttention's block mask: long packed sequences (paper §3.2, §3.4.2) on GPU.

herd's exact document mask (`sdpa_attention`) runs one causal SDPA per document. That costs nothing
extra for a few long documents, but an 8K–128K training sequence packed with hundreds of short ones
becomes hundreds of small kernel launches per layer. FlexAttention (torch.nn.attention.flex_attention,
as torchtitan uses it) runs the whole row in one fused kernel that skips the blocks of the [T, T] score
grid the mask leaves empty: the mask is causal and same-document, so a 128x128 tile is skipped, computed
without a mask (every pair inside one document, below the diagonal) or computed under `mask_mod`.

The block mask is built here straight from the document spans, on the tile grid (O((T/128)^2) small
integers, nothing of size T x T), and equals `create_block_mask` with the same `mask_mod` (tested);
torch's uncompiled `create_block_mask` would materialise a [T, T] boolean (16 GiB at 128K). Masks are
cached per document layout, so the layers of one step (and activation-checkpoint recomputation) build
it once. The kernel is `torch.compile(flex_attention)`: FlexAttention's eager form materialises the
scores. Grouped-query attention runs with `enable_gqa=True` (K and V are never repeated).

Where it runs: `sdpa_attention` hands a multi-document training row to `flex_document_attention` when
the tensors are on CUDA, the head dimension is at least 16 (the Triton kernel's minimum) and the row
length a multiple of the 128-token tile (`flex_usable`). The CPU keeps the per-document SDPA: torch
2.13's CPU FlexAttention is forward-only (inductor's CPU template raises on backward), compiles for
~10 s per shape and measured 2-5x slower than the per-document loop at 8K tokens (bench/flex.py).
"""

from __future__ import annotations

import functools

import torch

BLOCK = 128  # FlexAttention's default tile (_DEFAULT_SPARSE_BLOCK_SIZE)
_CACHE_SIZE = 4  # layouts kept: one step's, plus an evaluation batch's, with room to spare
_masks: dict = {}


def flex_usable(q: torch.Tensor) -> bool:
    """Whether the FlexAttention path runs for q [B, H, T, D]: CUDA, head dimension >= 16, and T a
    multiple of the tile. Pretraining's fixed sequence lengths are; rows padded to each batch's longest
    (SFT) mostly are not, and would compile a kernel per length: those keep per-document SDPA."""
    return q.is_cuda and q.shape[-1] >= 16 and q.shape[2] % BLOCK == 0


def document_runs(segments, T: int, device=None) -> torch.Tensor:
    """[B, T] int32: for each token the index of its document in its row (0, 1, ... along the row),
    from the per-row (start, end) spans of `document_segments`."""
    runs = torch.empty(len(segments), T, dtype=torch.int32)
    for b, segs in enumerate(segments):
        for i, (s, e) in enumerate(segs):
            runs[b, s:e] = i
    return runs.to(device)


def document_mask_mod(runs: torch.Tensor):
    """FlexAttention mask_mod of the paper's document mask: causal, and within one document."""

    def mask_mod(b, h, q_idx, kv_idx):
        return (q_idx >= kv_idx) & (runs[b, q_idx] == runs[b, kv_idx])

    return mask_mod


def _ordered(blocks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(number of set tiles per query tile row, their column indices first) as BlockMask stores them."""
    blocks = blocks.to(torch.int32)
    num = blocks.sum(-1).to(torch.int32)
    idx = torch.argsort(blocks, dim=-1, descending=True, stable=True).to(torch.int32)
    return num.contiguous(), idx.contiguous()


def document_block_mask(segments, T: int, device, block: int = BLOCK):
    """The BlockMask of the causal document mask for rows of length T with these document spans.

    Documents are contiguous runs, so a tile (query tile i, key tile j < i) holds an allowed pair exactly
    when the last document of key tile j is the first of query tile i, and only allowed pairs when the
    whole of both tiles is one document. Diagonal tiles are partial (causal inside); tiles padded past T
    are partial, as create_block_mask makes them."""
    from torch.nn.attention.flex_attention import BlockMask

    runs = document_runs(segments, T)  # on the CPU: the tile grid is small, then moved
    n = -(-T // block)
    first = torch.arange(n) * block
    last = torch.clamp(first + block, max=T) - 1
    lo, hi = runs[:, first], runs[:, last]  # [B, n]: first and last document of each tile
    padded = torch.zeros(n, dtype=torch.bool)
    padded[-1] = T % block != 0
    below = torch.ones(n, n, dtype=torch.bool).tril(-1)  # key tile strictly before the query tile
    touch = hi[:, None, :] == lo[:, :, None]  # [B, q tile, kv tile]: key tile's last doc = query's first
    whole = (lo[:, None, :] == hi[:, :, None]) & ~padded[:, None] & ~padded[None, :]
    full = below & touch & whole
    partial = (below & touch & ~whole) | torch.eye(n, dtype=torch.bool)
    num, idx = _ordered(partial[:, None])
    fnum, fidx = _ordered(full[:, None])
    dev_runs = runs.to(device)
    return BlockMask.from_kv_blocks(num.to(device), idx.to(device), fnum.to(device), fidx.to(device),
                                    BLOCK_SIZE=block, mask_mod=document_mask_mod(dev_runs),
                                    seq_lengths=(T, T))


def cached_block_mask(segments, T: int, device):
    """`document_block_mask`, cached by the document layout (every layer of a step shares one)."""
    key = (tuple(tuple(s) for s in segments), T, str(device))
    mask = _masks.get(key)
    if mask is None:
        mask = document_block_mask(segments, T, device)
        if len(_masks) >= _CACHE_SIZE:
            _masks.pop(next(iter(_masks)))
        _masks[key] = mask
    return mask


@functools.cache
def compiled_flex():
    import torch._dynamo
    from torch.nn.attention.flex_attention import flex_attention

    # One kernel per shape (sequence length, micro-batch rows, grad or not): a recipe's ramp and its six
    # long-context stages pass dynamo's default of 8 recompiles, after which it would run FlexAttention
    # eagerly, which materialises the [T, T] scores. Raising the limit only allows more compiles.
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)
    return torch.compile(flex_attention, dynamic=False)


def flex_document_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, segments,
                            mask: torch.Tensor | None = None) -> torch.Tensor:
    """The causal document-mask attention of `sdpa_attention` (q [B, H, T, D], k/v [B, Hkv, T, D],
    `segments` per row (start, end) spans) as one FlexAttention call; an attention core
    (`Attention.core`) of the same arguments. Only the training/prefill case: Tq == S, no `mask`."""
    if mask is not None or q.shape[2] != k.shape[2]:
        raise ValueError("flex_document_attention: causal document mask only (no attn_mask, Tq == S)")
    T = q.shape[2]
    block_mask = cached_block_mask(segments, T, q.device)
    return compiled_flex()(q, k, v, block_mask=block_mask, enable_gqa=q.shape[1] != k.shape[1])


__all__ = ["flex_document_attention", "document_block_mask", "document_mask_mod", "document_runs",
           "flex_usable", "compiled_flex"]
