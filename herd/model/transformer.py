"""The Llama 3 transformer (paper §3.2), with names as in Meta's checkpoints.

Block: h = x + Wo·Attn(RoPE(Wq n), RoPE(Wk n), Wv n), n = RMSNorm(x); out = h + W2(silu(W1 m) * W3 m),
m = RMSNorm(h). Grouped-query attention, RoPE theta 500K with the Llama 3.1 frequency scaling, no
biases, untied output (tied for the 3.2 presets). The numerics follow Meta's reference
(llama-models `llama3/model.py`): RMSNorm and RoPE in fp32, logits returned in fp32.

Attention goes through `scaled_dot_product_attention`. Packed sequences get the paper's document
(block-causal) mask without ever building a seq x seq mask: the sequence is cut at document
boundaries and each document runs causal SDPA on its own slice, which is exact and keeps memory
linear in the sequence length. Positions restart at 0 in each document, so a document's logits
do not depend on what it was packed with.

The module holds no distributed code: tensor/FSDP/pipeline parallelism are applied from outside
(herd.train), as torchtitan does. Build big models on the meta device, then `init_weights`:
`Transformer.build(get_preset("llama3.1-405b"), device="meta")` costs no memory.
"""

from __future__ import annotations

import functools
import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from herd.errors import HerdError
from herd.model.args import ModelArgs


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.float32 and self.weight.dtype == torch.float32:
            # One fused op, the same bits as the formula below in fp32 (and a much cheaper backward).
            return F.rms_norm(x, (x.shape[-1],), self.weight, self.eps)
        xf = x.float()
        out = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return out.type_as(x) * self.weight

    def reset_parameters(self):
        nn.init.ones_(self.weight)


def rope_frequencies(args: ModelArgs, device=None) -> torch.Tensor:
    """Per-pair rotation frequencies, with the Llama 3.1 scaling when `use_scaled_rope`."""
    d = args.head_dim
    freqs = 1.0 / (args.rope_theta ** (torch.arange(0, d, 2, device=device)[: d // 2].float() / d))
    if args.use_scaled_rope:
        factor, lo, hi, old = (args.rope_scale_factor, args.rope_low_freq_factor, args.rope_high_freq_factor,
                               args.rope_old_context_len)
        wavelen = 2 * math.pi / freqs
        new = torch.where(wavelen > old / lo, freqs / factor, freqs)
        smooth = (old / wavelen - lo) / (hi - lo)
        freqs = torch.where((wavelen >= old / hi) & (wavelen <= old / lo),
                            (1 - smooth) * new / factor + smooth * new, new)
    return freqs


def rope_table(args: ModelArgs, n: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    freqs = rope_frequencies(args, device)
    angles = torch.outer(torch.arange(n, device=device, dtype=torch.float32), freqs)
    return torch.cos(angles), torch.sin(angles)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate interleaved pairs (x[2i], x[2i+1]) as Meta's complex multiply does.
    x: [B, T, H, D]; cos/sin: [B or 1, T, D/2]."""
    # Meta's formulation: the pairs as complex numbers times e^(i*theta), one kernel forward and
    # backward (the same products and sums as x0*c - x1*s, x0*s + x1*c).
    xc = torch.view_as_complex(x.float().reshape(*x.shape[:-1], -1, 2))
    fc = torch.complex(cos.float(), sin.float()).unsqueeze(2)
    return torch.view_as_real(xc * fc).flatten(-2).type_as(x)


def gqa_fused(q: torch.Tensor) -> bool:
    """Whether SDPA's `enable_gqa` runs in a fused kernel for q: on the CPU (flash, the same bits as
    repeating K/V, faster) and for fp16/bf16 on CUDA (flash). For fp32 on CUDA only the math kernel
    takes it, which builds the whole [T, T] score matrix: there K/V are repeated instead."""
    return q.device.type == "cpu" or q.dtype in (torch.float16, torch.bfloat16)


class KVCache(nn.Module):
    """A preallocated (static) key/value cache for all layers: [layers, batch, kv_heads, max_len, head_dim]."""

    def __init__(self, args: ModelArgs, batch: int, max_len: int, dtype=torch.float32, device=None):
        super().__init__()
        shape = (args.n_layers, batch, args.n_kv_heads, max_len, args.head_dim)
        self.register_buffer("k", torch.zeros(shape, dtype=dtype, device=device), persistent=False)
        self.register_buffer("v", torch.zeros(shape, dtype=dtype, device=device), persistent=False)

    @property
    def batch(self) -> int:
        return self.k.shape[1]

    @property
    def max_len(self) -> int:
        return self.k.shape[3]


def document_segments(doc_ids: torch.Tensor) -> list[list[tuple[int, int]]]:
    """For each row of `doc_ids` [B, T], the (start, end) of each run of equal ids."""
    ids = doc_ids.detach().cpu()
    change = torch.ones_like(ids, dtype=torch.bool)
    change[:, 1:] = ids[:, 1:] != ids[:, :-1]
    out = []
    T = ids.shape[1]
    for row in change:
        starts = torch.nonzero(row).flatten().tolist()
        out.append(list(zip(starts, starts[1:] + [T])))
    return out


def positions_from_segments(segments: list[list[tuple[int, int]]], T: int, device) -> torch.Tensor:
    pos = torch.empty(len(segments), T, dtype=torch.long)
    for b, segs in enumerate(segments):
        for s, e in segs:
            pos[b, s:e] = torch.arange(e - s)
    return pos.to(device)


class Attention(nn.Module):
    def __init__(self, args: ModelArgs):
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = args.n_heads, args.n_kv_heads, args.head_dim
        self.n_rep = self.n_heads // self.n_kv_heads
        self.wq = nn.Linear(args.dim, args.n_heads * self.head_dim, bias=False)
        self.wk = nn.Linear(args.dim, args.n_kv_heads * self.head_dim, bias=False)
        self.wv = nn.Linear(args.dim, args.n_kv_heads * self.head_dim, bias=False)
        self.wo = nn.Linear(args.n_heads * self.head_dim, args.dim, bias=False)

    def forward(self, x, cos, sin, *, segments=None, cache: KVCache | None = None, layer: int = 0,
                cache_pos=None, attn_mask=None):
        B, T, _ = x.shape
        q = self.wq(x).view(B, T, self.n_heads, self.head_dim)
        k = self.wk(x).view(B, T, self.n_kv_heads, self.head_dim)
        v = self.wv(x).view(B, T, self.n_kv_heads, self.head_dim)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # [B, H, T, D]

        if cache is not None:
            ck, cv = cache.k[layer], cache.v[layer]
            if isinstance(cache_pos, int):
                ck[:B, :, cache_pos:cache_pos + T] = k
                cv[:B, :, cache_pos:cache_pos + T] = v
            else:
                ck[:B].index_copy_(2, cache_pos, k)
                cv[:B].index_copy_(2, cache_pos, v)
            S = attn_mask.shape[-1]
            out = self._sdpa_gqa(q, ck[:B, :, :S], cv[:B, :, :S], attn_mask)
        elif segments is not None and any(len(s) > 1 for s in segments):
            out = torch.empty_like(q)
            for b, segs in enumerate(segments):
                for s, e in segs:
                    out[b:b + 1, :, s:e] = self._causal(q[b:b + 1, :, s:e], k[b:b + 1, :, s:e], v[b:b + 1, :, s:e])
        else:
            out = self._causal(q, k, v)
        return self.wo(out.transpose(1, 2).reshape(B, T, -1))

    def _causal(self, q, k, v):
        if self.n_rep > 1:
            if gqa_fused(q):  # grouped-query attention without copying K and V per query head
                return F.scaled_dot_product_attention(q, k, v, is_causal=q.shape[2] > 1, enable_gqa=True)
            k, v = k.repeat_interleave(self.n_rep, dim=1), v.repeat_interleave(self.n_rep, dim=1)
        return F.scaled_dot_product_attention(q, k, v, is_causal=q.shape[2] > 1)

    def _sdpa_gqa(self, q, k, v, mask):
        """Attention over a cache with an explicit boolean mask [B, 1, T, S]. The query heads that
        share a KV head are folded into the sequence axis, so K and V are never copied."""
        B, H, T, D = q.shape
        if self.n_rep == 1:
            return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        qg = q.reshape(B, self.n_kv_heads, self.n_rep * T, D)
        m = mask.unsqueeze(2).expand(B, 1, self.n_rep, T, mask.shape[-1]).reshape(B, 1, self.n_rep * T, -1)
        out = F.scaled_dot_product_attention(qg, k, v, attn_mask=m)
        return out.reshape(B, H, T, D)


class FeedForward(nn.Module):
    def __init__(self, dim: int, hidden_dim: int):
        super().__init__()
        self.w1 = nn.Linear(dim, hidden_dim, bias=False)
        self.w2 = nn.Linear(hidden_dim, dim, bias=False)
        self.w3 = nn.Linear(dim, hidden_dim, bias=False)

    def forward(self, x):
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class TransformerBlock(nn.Module):
    def __init__(self, layer_id: int, args: ModelArgs):
        super().__init__()
        self.layer_id = layer_id
        self.attention = Attention(args)
        self.feed_forward = FeedForward(args.dim, args.ffn_hidden_dim)
        self.attention_norm = RMSNorm(args.dim, eps=args.norm_eps)
        self.ffn_norm = RMSNorm(args.dim, eps=args.norm_eps)

    def forward(self, x, cos, sin, **kw):
        h = x + self.attention(self.attention_norm(x), cos, sin, layer=self.layer_id, **kw)
        return h + self.feed_forward(self.ffn_norm(h))


class Transformer(nn.Module):
    def __init__(self, args: ModelArgs):
        super().__init__()
        self.args = args
        self.tok_embeddings = nn.Embedding(args.vocab_size, args.dim)
        self.layers = nn.ModuleList(TransformerBlock(i, args) for i in range(args.n_layers))
        self.norm = RMSNorm(args.dim, eps=args.norm_eps)
        self.output = nn.Linear(args.dim, args.vocab_size, bias=False)
        if args.tie_embeddings:
            self.output.weight = self.tok_embeddings.weight
        cos, sin = rope_table(args, args.max_seq_len)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)

    # ---- construction -------------------------------------------------------------------------
    @classmethod
    def build(cls, args: ModelArgs, device="cpu", dtype: torch.dtype = torch.float32, init: bool = True,
              seed: int | None = None) -> "Transformer":
        """Build on the meta device (no memory), then materialise on `device` and initialise.
        With device="meta" the model stays abstract (shapes and parameter counts only)."""
        with torch.device("meta"):
            model = cls(args)
        if str(device) == "meta":
            return model
        model.to_empty(device=device)
        if args.tie_embeddings:  # to_empty makes new Parameter objects, which unties them
            model.output.weight = model.tok_embeddings.weight
        model.reset_rope()
        if init:
            if seed is not None:
                torch.manual_seed(seed)
            model.init_weights()
        model = model.to(dtype)
        model.reset_rope()  # RoPE tables stay fp32 (as Meta's reference), whatever the weights' dtype
        return model

    def reset_rope(self):
        dev = self.tok_embeddings.weight.device
        cos, sin = rope_table(self.args, self.args.max_seq_len, device=dev)
        self.rope_cos, self.rope_sin = cos, sin

    def init_plan(self) -> list[tuple[str, Callable[[torch.Tensor], object]]]:
        """(parameter name, in-place initialiser) in the order they draw random numbers, for
        training from scratch (torchtitan-style): N(0, 0.02) for the input projections, depth-scaled
        std for the residual outputs (wo, w2), dim^-0.5 for the output, ones for the norms. Applying
        it to full tensors in this order gives the same weights whether the model is whole or
        sharded over ranks (herd.train.parallel.materialize_sharded)."""
        a = self.args
        plan: list[tuple[str, Callable]] = []
        if a.tie_embeddings:
            plan.append(("tok_embeddings.weight", functools.partial(nn.init.normal_, std=0.02)))
        else:
            o = a.dim ** -0.5
            plan.append(("tok_embeddings.weight", functools.partial(nn.init.normal_, std=1.0)))
            plan.append(("output.weight", functools.partial(nn.init.trunc_normal_, std=o, a=-3 * o, b=3 * o)))
        d = 0.02 / math.sqrt(2 * a.n_layers)
        inner = functools.partial(nn.init.trunc_normal_, std=0.02, a=-0.06, b=0.06)
        resid = functools.partial(nn.init.trunc_normal_, std=d, a=-3 * d, b=3 * d)
        for i in range(len(self.layers)):
            for name in ("attention.wq", "attention.wk", "attention.wv", "feed_forward.w1", "feed_forward.w3"):
                plan.append((f"layers.{i}.{name}.weight", inner))
            for name in ("attention.wo", "feed_forward.w2"):
                plan.append((f"layers.{i}.{name}.weight", resid))
            plan += [(f"layers.{i}.attention_norm.weight", nn.init.ones_), (f"layers.{i}.ffn_norm.weight", nn.init.ones_)]
        plan.append(("norm.weight", nn.init.ones_))
        names, params = {n for n, _ in plan}, {n for n, _ in self.named_parameters()}
        if names != params:  # a parameter left out would keep whatever memory it was given
            raise RuntimeError(f"init_plan does not cover the parameters: {sorted(names ^ params)}")
        return plan

    @torch.no_grad()
    def init_weights(self):
        """Initialise every parameter for training from scratch (see `init_plan`)."""
        params = dict(self.named_parameters())
        for name, fn in self.init_plan():
            fn(params[name])

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    # ---- forward ------------------------------------------------------------------------------
    def forward_hidden(self, tokens: torch.Tensor, *, pos: torch.Tensor | None = None,
                       doc_ids: torch.Tensor | None = None, cache: KVCache | None = None,
                       cache_pos: int | torch.Tensor | None = None,
                       attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Final-norm hidden states [B, T, dim].

        tokens: [B, T] ids. doc_ids: [B, T] document index of each token in a packed sequence
        (block-causal mask; positions restart per document). pos: [B, T] or [T] RoPE positions.
        cache/cache_pos/attn_mask: decoding with a static KVCache; K/V of these tokens are written
        at cache slots `cache_pos` (an int start or a [T] tensor of slots) and attention reads
        cache slots [0, S) under `attn_mask` [B, 1, T, S] (True = attend). Without attn_mask an
        int cache_pos gives the plain causal mask over slots [0, cache_pos + T)."""
        B, T = tokens.shape
        segments = None
        if cache is not None:
            if cache_pos is None:
                cache_pos = 0
            if attn_mask is None:
                if not isinstance(cache_pos, int):
                    raise ValueError("attn_mask is required when cache_pos is a tensor")
                S = cache_pos + T
                if S > cache.max_len:
                    raise HerdError(f"sequence of {S} tokens is longer than the cache ({cache.max_len})")
                attn_mask = torch.ones(T, S, dtype=torch.bool, device=tokens.device).tril(cache_pos)[None, None]
                attn_mask = attn_mask.expand(B, 1, T, S)
            if pos is None:
                if isinstance(cache_pos, int):
                    pos = torch.arange(cache_pos, cache_pos + T, device=tokens.device)
                else:
                    pos = cache_pos
        elif doc_ids is not None:
            segments = document_segments(doc_ids)
            if pos is None:
                pos = positions_from_segments(segments, T, tokens.device)
        if pos is None:
            if T > self.args.max_seq_len:
                raise HerdError(f"sequence of {T} tokens is longer than the model's max_seq_len "
                                f"({self.args.max_seq_len})")
            cos, sin = self.rope_cos[:T][None], self.rope_sin[:T][None]
        else:
            if pos.dim() == 1:
                pos = pos[None]
            if int(pos.max()) >= self.args.max_seq_len:
                raise HerdError(f"position {int(pos.max())} is beyond the model's max_seq_len "
                                f"({self.args.max_seq_len})")
            cos, sin = self.rope_cos[pos], self.rope_sin[pos]
        h = self.tok_embeddings(tokens)
        for layer in self.layers:
            h = layer(h, cos, sin, segments=segments, cache=cache, cache_pos=cache_pos, attn_mask=attn_mask)
        return self.norm(h)

    def forward(self, tokens: torch.Tensor, *, last_only: bool = False, targets: torch.Tensor | None = None,
                **kw) -> torch.Tensor:
        """Logits [B, T, vocab] in fp32 (or [B, 1, vocab] with last_only). Keywords as forward_hidden.

        With `targets` [B, T] (the next token of each position; -100 = no loss there) it returns the
        summed cross-entropy instead (an fp32 scalar); when the [B, T, vocab] fp32 logits would pass
        1 GB the loss is fused with the output layer in chunks of tokens, so they never exist
        (herd.model.loss). Inside forward, so FSDP has gathered the output weight."""
        h = self.forward_hidden(tokens, **kw)
        if targets is not None:
            from herd.model.loss import cross_entropy_sum

            return cross_entropy_sum(h, self.output.weight, targets)
        if last_only:
            h = h[:, -1:]
        return self.output(h).float()


__all__ = ["ModelArgs", "Transformer", "KVCache", "RMSNorm", "rope_frequencies", "rope_table", "apply_rope",
           "document_segments"]
