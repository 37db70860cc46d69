"""The decode step of the engine (one new token per row), packed for speed on the CPU.

Decoding one token is bound by reading the weights, plus the cost of every dispatched op (a few
microseconds each on a CPU: ~40 per layer in a plain forward). Two things make it cheaper:

1. **Weights laid out [in, out], in place.** Every linear weight of the blocks and the output layer
   becomes the transpose of a contiguous [in, out] tensor: the CPU's GEMV/GEMM kernels stream that
   layout best (the 32K-vocab output layer runs 1.3x faster at batch 1 and 1.9x at batch 8 than
   from [out, in] on the 2-core machine of docs/benchmarks.md). The parameters keep their objects,
   shapes and values (`param.data` is re-laid out), no memory is added, and the weights stay dense
   tensors, so the model still runs, trains (gradients take the same layout; fused AdamW included),
   saves (as contiguous tensors) and loads, and generation sees every later update in place.
2. **Fewer ops.** `addmm` fuses the residual adds into the wo and w2 matmuls, no `Module.__call__`,
   no mask without padding. RMSNorm, RoPE, the cache write and attention are the model's own
   functions (herd.model.transformer), so there is no second copy of the model's math.

int8 layers (`Int8Linear`) are fused where that saves a kernel call: q/k/v into one int8 matrix and
w1/w3 into another (the modules' buffers become row blocks of it). FP8 layers run through their
modules. Packing is off by default on CUDA, where the compiled/graphed step is the fast path
(`Generator(compile=True)`). A tied output layer keeps the embedding's layout.

The step computes what `Transformer.forward` computes with a cache; tests compare its logits with
the model's and its greedy ids with HF's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from herd.inference.quant import Int8Linear
from herd.model.transformer import apply_rope, rms_norm


def _plain(mods) -> bool:
    return all(type(m) is nn.Linear and m.weight.is_floating_point() for m in mods)


def _pack_t(mod: nn.Linear) -> torch.Tensor:
    """Lay `mod`'s weight [out, in] out column-major, in place; returns its [in, out] contiguous view.
    The weight stays a dense tensor (a transpose of a contiguous one), so gradients take its layout
    and every optimizer (fused AdamW included) handles it as before. Only fp32 weights are re-laid
    out: the CPU's bf16 GEMV (oneDNN) streams [out, in] rows best (3.5x slower from [in, out] on the
    AMX machine of docs/benchmarks.md), so a bf16/fp16 weight keeps its layout (its .t() is returned)."""
    w = mod.weight
    if w.dtype != torch.float32:
        if not w.is_contiguous():  # e.g. packed in fp32, then cast with .to(): back to [out, in] rows
            w.data = w.detach().contiguous()
        return w.detach().t()
    if not (w.dim() == 2 and w.stride() == (1, w.shape[0])):
        w.data = w.detach().t().contiguous().t()
    return w.detach().t()


def _pack_int8(mods: list[Int8Linear]):
    """One int8 matrix for several Int8Linear layers (rows concatenated; the modules' buffers become
    its row blocks, contiguous); x -> the outputs side by side."""
    q = torch.cat([m.weight for m in mods]) if len(mods) > 1 else mods[0].weight.contiguous()
    s = torch.cat([m.scale for m in mods]) if len(mods) > 1 else mods[0].scale
    sb = s.to(torch.bfloat16)
    off = 0
    for m in mods:
        n = m.weight.shape[0]
        m.weight, m.scale, m.scale_bf16 = q[off:off + n], s[off:off + n], sb[off:off + n]
        off += n
    if q.is_cuda:
        return lambda x: F.linear(x, q.to(x.dtype)) * s.to(x.dtype)
    return lambda x: torch.ops.aten._weight_int8pack_mm(x.to(torch.bfloat16), q, sb).to(x.dtype)


def _gemv_rows(buf: torch.Tensor) -> torch.Tensor | None:
    """The [out, in] rows that batch 1 multiplies through torch.mv/addmv, for a bf16/fp16 CPU weight
    (`buf` its [in, out] view): that GEMV streams the rows 1.25-1.35x faster than the GEMM path of
    mm/linear (1 thread, AMX machine of docs/benchmarks.md). None: fp32 or CUDA, mm/addmm throughout."""
    return None if buf.dtype == torch.float32 or buf.is_cuda else buf.t()


def _mm(buf: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """x [B, in] -> x @ buf for an [in, out] view (the GEMV at batch 1 where _gemv_rows says so)."""
    w = _gemv_rows(buf)
    if w is None:
        return lambda x: torch.mm(x, buf)
    return lambda x: torch.mv(w, x[0])[None] if x.shape[0] == 1 else torch.mm(x, buf)


def _multi(mods) -> Callable[[torch.Tensor], tuple]:
    """x [B, in] -> the outputs of `mods` (a tuple), packed where the layer type allows."""
    if _plain(mods):
        fns = [_mm(_pack_t(m)) for m in mods]
        return lambda x: tuple(f(x) for f in fns)
    if all(type(m) is Int8Linear for m in mods):
        f, sizes = _pack_int8(mods), [m.weight.shape[0] for m in mods]
        return lambda x: f(x).split(sizes, -1)
    return lambda x: tuple(m(x) for m in mods)


def _residual(mod) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """(h, x) -> h + mod(x), as one addmm when `mod` is a plain linear layer."""
    if _plain([mod]):
        buf = _pack_t(mod)
        w = _gemv_rows(buf)
        if w is None:
            return lambda h, x: torch.addmm(h, x, buf)
        return lambda h, x: torch.addmv(h[0], w, x[0])[None] if x.shape[0] == 1 else torch.addmm(h, x, buf)
    f = _multi([mod])
    return lambda h, x: h + f(x)[0]


@dataclass
class LayerPlan:
    n1: nn.Module
    n2: nn.Module
    qkv: Callable  # x -> (q, k, v)
    wo: Callable  # (h, o) -> h + wo(o)
    w13: Callable  # x -> (w1 x, w3 x)
    w2: Callable  # (h, a) -> h + w2(a)


@dataclass
class DecodePlan:
    layers: list[LayerPlan]
    out: Callable
    core: list  # each layer's attention core (Attention.core)
    structure: tuple  # the modules the plan was built from
    ptrs: tuple  # and the data pointers of their weights

    def current(self, model) -> bool:
        """False once the model's modules or weights were replaced (quantize_*, `p.data = ...`, .to())."""
        return _structure(model) == self.structure and _ptrs(self.structure) == self.ptrs


def _structure(model) -> tuple:
    mods = []
    for layer in model.layers:
        a, f = layer.attention, layer.feed_forward
        mods += [a.wq, a.wk, a.wv, a.wo, f.w1, f.w2, f.w3, layer.attention_norm, layer.ffn_norm]
    return tuple(mods + [model.norm, model.output, model.tok_embeddings])


def _ptrs(structure) -> tuple:
    return tuple(m.weight.data_ptr() for m in structure)


def build_plan(model, pack: bool) -> DecodePlan:
    """The decode plan of `model`; with `pack`, plain and int8 linear layers are packed in place."""
    layers = []
    for layer in model.layers:
        a, f = layer.attention, layer.feed_forward
        if pack:
            lp = LayerPlan(layer.attention_norm, layer.ffn_norm, _multi([a.wq, a.wk, a.wv]), _residual(a.wo),
                           _multi([f.w1, f.w3]), _residual(f.w2))
        else:
            qkv, w13 = [a.wq, a.wk, a.wv], [f.w1, f.w3]
            lp = LayerPlan(layer.attention_norm, layer.ffn_norm,
                           lambda x, ms=qkv: tuple(m(x) for m in ms), lambda h, x, m=a.wo: h + m(x),
                           lambda x, ms=w13: tuple(m(x) for m in ms), lambda h, x, m=f.w2: h + m(x))
        layers.append(lp)
    out = model.output
    if pack and out.weight is not model.tok_embeddings.weight:  # a tied output keeps the embedding's layout
        f = _multi([out])
        out_fn = lambda x: f(x)[0]  # noqa: E731
    elif pack and _plain([out]) and out.weight.dtype != torch.float32:  # tied, bf16/fp16: its [V, dim] rows
        out_fn = _mm(out.weight.detach().t())
    else:
        out_fn = out
    structure = _structure(model)
    return DecodePlan(layers, out_fn, [layer.attention.core for layer in model.layers], structure,
                      _ptrs(structure))


def decode_step(model, plan: DecodePlan, tokens: torch.Tensor, fc: torch.Tensor, cache, slot: int, S: int,
                mask: torch.Tensor | None) -> torch.Tensor:
    """Logits [B, V] (fp32) of one new token per row. tokens [B]; fc [B, 1, D/2] complex RoPE
    factors of the rows' positions; K/V written at cache slot `slot`; attention over slots [0, S)
    under `mask` [B, 1, 1, S] (True = attend; None: all). The math is the model's own functions
    (rms_norm, apply_rope, the attention core, LayerKV.update) over the plan's packed matmuls."""
    B = tokens.shape[0]
    D = model.args.head_dim
    h = F.embedding(tokens, model.tok_embeddings.weight)
    for i, p in enumerate(plan.layers):
        q, k, v = p.qkv(rms_norm(h, p.n1.weight, p.n1.eps))  # [B, H*D], [B, Hkv*D], [B, Hkv*D]
        q = apply_rope(q.view(B, 1, -1, D), fc).transpose(1, 2)  # [B, H, 1, D]
        k = apply_rope(k.view(B, 1, -1, D), fc).transpose(1, 2)
        ck, cv = cache.layer(i).update(slot, k, v.view(B, -1, 1, D))
        o = plan.core[i](q, ck[:, :, :S], cv[:, :, :S], None, mask)
        h = p.wo(h, o.reshape(B, -1))
        g, u = p.w13(rms_norm(h, p.n2.weight, p.n2.eps))
        h = p.w2(h, F.silu(g) * u)
    h = rms_norm(h, model.norm.weight, model.norm.eps)
    return plan.out(h).float()


__all__ = ["DecodePlan", "LayerPlan", "build_plan", "decode_step"]
