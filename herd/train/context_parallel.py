"""Context parallelism as the Llama 3 paper describes it (§3.3.2), for long sequences.

The sequence is cut into 2*cp chunks and context-parallel rank i holds chunks i and 2*cp-1-i, so every
rank has the same share of the causal work (an early chunk with few keys and a late one with many).
Each layer computes Q, K and V for its own tokens, all-gathers K and V over the cp group (autograd: the
backward is a reduce-scatter of their gradients) and runs attention for its local queries over the keys
up to them, with the causal and the **document mask** applied across chunk edges: a document that starts
in an earlier chunk (on another rank) is seen whole. The attention itself is exact per-document SDPA,
the CPU path of herd's document mask, here with a lower-right-aligned causal mask for queries whose
document began before their chunk. torch's own `context_parallel` (ring attention) has no CPU kernel
nor masks in torch 2.13; this is the paper's all-gather form, which also is what the paper chose.

Per-batch state (which chunks, where documents start) travels as the attention's `segments` argument
(a `CPSegments`), so activation checkpointing and pipeline micro-batches stay exact.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from herd.model.transformer import _causal, document_segments, gqa_fused


def local_positions(T: int, cp: int, rank: int) -> torch.Tensor:
    """Indices (into the full sequence of length T) of the tokens context-parallel rank `rank` holds:
    chunk rank, then chunk 2*cp-1-rank, each T/(2*cp) long."""
    c = T // (2 * cp)
    a, b = rank, 2 * cp - 1 - rank
    return torch.cat([torch.arange(a * c, (a + 1) * c), torch.arange(b * c, (b + 1) * c)])


@dataclass
class CPSegments:
    """What the context-parallel attention needs to know about a batch: the cp group, this rank, and per
    row the (query start, query end) in local coordinates with the (key start, key end) in the full
    sequence that those queries attend (one entry per document piece per local chunk)."""

    group: object
    cp: int
    rank: int
    T: int  # full sequence length
    runs: list[list[tuple[int, int, int, int]]]

    def __len__(self):  # a batch of rows, as the one-process segments list
        return len(self.runs)


def cp_runs(doc_ids: torch.Tensor | None, B: int, T: int, cp: int, rank: int) -> list[list[tuple]]:
    segs = document_segments(doc_ids) if doc_ids is not None else [[(0, T)]] * B
    c = T // (2 * cp)
    out = []
    for row in segs:
        runs = []
        for off, g in ((0, rank), (c, 2 * cp - 1 - rank)):
            lo_g, hi_g = g * c, (g + 1) * c
            for s, e in row:
                lo, hi = max(s, lo_g), min(e, hi_g)
                if lo < hi:
                    runs.append((lo - lo_g + off, hi - lo_g + off, s, hi))
        out.append(runs)
    return out


def shard_sequence(doc_ids: torch.Tensor | None, B: int, T: int, device, group, cp: int, rank: int):
    """For a batch of B rows of T tokens (document ids `doc_ids` [B, T] or None = one document per row):
    (local index [2T/(2cp)] into the sequence, local RoPE positions [B, T/cp] restarting per document,
    CPSegments for the attention)."""
    from herd.model.transformer import positions_from_segments

    idx = local_positions(T, cp, rank)
    segs = document_segments(doc_ids) if doc_ids is not None else [[(0, T)]] * B
    pos = positions_from_segments(segs, T, "cpu")[:, idx].to(device)
    return idx.to(device), pos, CPSegments(group, cp, rank, T, cp_runs(doc_ids, B, T, cp, rank))


def _all_gather(x: torch.Tensor, group) -> list[torch.Tensor]:
    """All-gather with autograd (the backward reduce-scatters the gradients to their owners)."""
    import torch.distributed._functional_collectives as funcol

    gather = (
        getattr(funcol, "all_gather_single_autograd", None) or funcol.all_gather_tensor_autograd
    )  # torch<2.13
    out = funcol.wait_tensor(gather(x.contiguous().unsqueeze(0), 0, group))
    return list(out.unbind(0))


def gather_sequence(x: torch.Tensor, seg: CPSegments) -> torch.Tensor:
    """x [B, H, 2c, D] on every cp rank (its two chunks) -> [B, H, T, D] in sequence order."""
    parts = _all_gather(x, seg.group)
    c = x.shape[2] // 2
    chunks = []
    for g in range(2 * seg.cp):
        r, half = (g, 0) if g < seg.cp else (2 * seg.cp - 1 - g, 1)
        chunks.append(parts[r][:, :, half * c : (half + 1) * c])
    return torch.cat(chunks, dim=2)


def _masked(q, k, v, offset: int):
    """Attention of q [1, H, n, D] over k/v [1, Hkv, m, D], m = n + offset: query t sees keys <= t + offset
    (causal aligned at the lower right: the queries are the last n of the m positions)."""
    n, m = q.shape[2], k.shape[2]
    mask = torch.ones(n, m, dtype=torch.bool, device=q.device).tril(diagonal=offset)
    r = q.shape[1] // k.shape[1]
    if r > 1:
        if gqa_fused(q):
            return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True)
        k, v = k.repeat_interleave(r, dim=1), v.repeat_interleave(r, dim=1)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


def context_parallel_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, segments: CPSegments, mask=None
) -> torch.Tensor:
    """Attention.core under context parallelism: q [B, H, 2c, D], k/v [B, Hkv, 2c, D] of this rank's two
    chunks -> [B, H, 2c, D], exact causal document-masked attention over the whole sequence."""
    if mask is not None or not isinstance(segments, CPSegments):
        raise ValueError("context-parallel attention is for training: it needs CPSegments and no mask")
    Hkv = k.shape[1]
    kv = gather_sequence(torch.cat([k, v], dim=1), segments)
    K, V = kv[:, :Hkv], kv[:, Hkv:]
    out = torch.empty_like(q)
    for b, runs in enumerate(segments.runs):
        for ql, qh, kl, kh in runs:
            qs, ks, vs = q[b : b + 1, :, ql:qh], K[b : b + 1, :, kl:kh], V[b : b + 1, :, kl:kh]
            off = (kh - kl) - (qh - ql)
            out[b : b + 1, :, ql:qh] = _causal(qs, ks, vs) if off == 0 else _masked(qs, ks, vs, off)
    return out


__all__ = [
    "CPSegments",
    "context_parallel_attention",
    "cp_runs",
    "gather_sequence",
    "local_positions",
    "shard_sequence",
]
