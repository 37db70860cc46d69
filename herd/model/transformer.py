"""The Llama 3 transformer (paper §3.2), with names as in Meta's checkpoints.

Block: h = x + Wo·Attn(RoPE(Wq n), RoPE(Wk n), Wv n), n = RMSNorm(x); out = h + W2(silu(W1 m) * W3 m),
m = RMSNorm(h). Grouped-query attention, RoPE theta 500K with the Llama 3.1 frequency scaling, no
biases, untied output (tied for the 3.2 presets). The numerics follow Meta's reference
(llama-models `llama3/model.py`): RMSNorm and RoPE in fp32, logits returned in fp32.

Attention goes through `scaled_dot_product_attention`. Packed sequences get the paper's document
(block-causal) mask without ever building a seq x seq mask: the sequence is cut at document
boundaries and each document runs causal SDPA on its own slice, which is exact and keeps memory
linear in the sequence length. Positions restart at 0 in each document, so a document's logits
do not depend on what it was packed with. On CUDA a row of several documents runs instead as one
FlexAttention kernel over a block mask (herd.model.flex): fast with hundreds of documents per row.

`Transformer.forward` is the one forward pass: training (with `targets`, the loss), prefill and
decode (with a `KVCache`, each layer writing through `LayerKV.update`), and the last-position-only
prefill (`last_only`). The attention core is a plain function of (q, k, v, segments, mask)
(`Attention.core`, `sdpa_attention` by default) and head counts are read from the tensors, so
parallelism can swap the core or shard the heads without another model. herd.inference's packed
CPU decode step is an optional fast path over the same modules and these same functions.

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
from herd.model.flex import flex_document_attention, flex_usable


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """RMSNorm as Meta's reference computes it: in fp32, cast back, times the weight."""
    if x.dtype == torch.float32 and weight.dtype == torch.float32:
        # One fused op, the same bits as the formula below in fp32 (and a much cheaper backward).
        return F.rms_norm(x, (x.shape[-1],), weight, eps)
    xf = x.float()
    return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)).type_as(x) * weight


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rms_norm(x, self.weight, self.eps)

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


def apply_rope(x: torch.Tensor, freqs) -> torch.Tensor:
    """Rotate interleaved pairs (x[2i], x[2i+1]) as Meta's complex multiply does, in fp32.
    x: [B, T, H, D]; freqs: the factors e^(i*theta) of the positions as a complex tensor [B or 1,
    T, D/2] (Meta's formulation), or as a (cos, sin) pair of that shape (under torch.compile:
    inductor generates no code for complex ops). Both give the same fp32 values."""
    if isinstance(freqs, tuple):  # (a + ib)(c + is) = (ac - bs) + i(as + bc), in real arithmetic
        xf = x.float().unflatten(-1, (-1, 2))
        a, b = xf[..., 0], xf[..., 1]
        c, s = freqs[0].unsqueeze(2), freqs[1].unsqueeze(2)
        return torch.stack([a * c - b * s, a * s + b * c], -1).flatten(-2).type_as(x)
    # one kernel forward and backward (the same products and sums as the real form)
    xc = torch.view_as_complex(x.float().reshape(*x.shape[:-1], -1, 2))
    return torch.view_as_real(xc * freqs.unsqueeze(2)).flatten(-2).type_as(x)


def _last(freqs):
    return tuple(f[:, -1:] for f in freqs) if isinstance(freqs, tuple) else freqs[:, -1:]


def gqa_fused(q: torch.Tensor) -> bool:
    """Whether SDPA's `enable_gqa` runs in a fused kernel for q: on the CPU (flash, the same bits as
    repeating K/V, faster) and for fp16/bf16 on CUDA (flash). For fp32 on CUDA only the math kernel
    takes it, which builds the whole [T, T] score matrix: there K/V are repeated instead."""
    return q.device.type == "cpu" or q.dtype in (torch.float16, torch.bfloat16)


def _causal(q, k, v):
    r = q.shape[1] // k.shape[1]
    if r > 1:
        if gqa_fused(q):  # grouped-query attention without copying K and V per query head
            return F.scaled_dot_product_attention(q, k, v, is_causal=q.shape[2] > 1, enable_gqa=True)
        k, v = k.repeat_interleave(r, dim=1), v.repeat_interleave(r, dim=1)
    return F.scaled_dot_product_attention(q, k, v, is_causal=q.shape[2] > 1)


def sdpa_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, segments=None,
                   mask: torch.Tensor | None = None) -> torch.Tensor:
    """The attention core: q [B, H, Tq, D], k/v [B, Hkv, S, D] -> [B, H, Tq, D]. Head counts come
    from the tensors (a tensor-parallel shard with fewer local heads runs unchanged); context
    parallelism swaps in its own function of the same arguments (`Attention.core`).

    - `mask` [B, 1, Tq, S] (True = attend): attention over the given keys under it;
    - no mask and Tq == S: causal, cut at the document boundaries of `segments` (per row, a list
      of (start, end); the paper's block-causal mask without a [T, T] matrix): one SDPA per
      document on the CPU, one FlexAttention kernel over a block mask on CUDA (herd.model.flex);
    - no mask and Tq < S: the queries are the last positions and see every key (a decode step, or
      the last-position prefill), so only Tq == 1 is allowed.
    With a mask or a single query, the query heads that share a KV head are folded into the
    query axis, so K and V are read once and never copied."""
    B, H, Tq, D = q.shape
    S = k.shape[2]
    if mask is None and Tq == S and Tq > 1:
        if segments is not None and any(len(s) > 1 for s in segments):
            if flex_usable(q):  # CUDA: one FlexAttention kernel over the block mask (herd.model.flex)
                return flex_document_attention(q, k, v, segments)
            out = torch.empty_like(q)
            for b, segs in enumerate(segments):
                for s, e in segs:
                    out[b:b + 1, :, s:e] = _causal(q[b:b + 1, :, s:e], k[b:b + 1, :, s:e], v[b:b + 1, :, s:e])
            return out
        return _causal(q, k, v)
    if mask is None and Tq > 1:
        raise ValueError("several queries over a longer cache need an attention mask")
    Hkv = k.shape[1]
    r = H // Hkv
    if r == 1:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    qg = q.reshape(B, Hkv, r * Tq, D)
    if mask is not None and Tq > 1:
        mask = mask.unsqueeze(2).expand(B, 1, r, Tq, S).reshape(B, 1, r * Tq, S)
    return F.scaled_dot_product_attention(qg, k, v, attn_mask=mask).reshape(B, H, Tq, D)


class LayerKV:
    """One layer's view of a KVCache: `update` writes new keys/values and returns the layer's whole
    cache for the batch's rows."""

    __slots__ = ("k", "v")

    def __init__(self, k: torch.Tensor, v: torch.Tensor):
        self.k, self.v = k, v

    def update(self, pos, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write k/v [B, Hkv, T, D] at slots pos..pos+T (an int start) or at the slots of a [T]
        LongTensor; -> (keys, values) [B, Hkv, max_len, D] of this layer for rows [0, B)."""
        B, T = k.shape[0], k.shape[2]
        ck, cv = self.k[:B], self.v[:B]
        if isinstance(pos, int):
            ck[:, :, pos:pos + T] = k
            cv[:, :, pos:pos + T] = v
        else:
            ck.index_copy_(2, pos, k)
            cv.index_copy_(2, pos, v)
        return ck, cv


class KVCache(nn.Module):
    """A preallocated (static) key/value cache for all layers: [layers, batch, kv_heads, max_len, head_dim]
    (one allocation; `layer(i)` is layer i's view)."""

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

    def layer(self, i: int) -> LayerKV:
        return LayerKV(self.k[i], self.v[i])


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
        self.head_dim = args.head_dim
        self.wq = nn.Linear(args.dim, args.n_heads * self.head_dim, bias=False)
        self.wk = nn.Linear(args.dim, args.n_kv_heads * self.head_dim, bias=False)
        self.wv = nn.Linear(args.dim, args.n_kv_heads * self.head_dim, bias=False)
        self.wo = nn.Linear(args.n_heads * self.head_dim, args.dim, bias=False)
        self.core: Callable = sdpa_attention  # (q, k, v, segments, mask) -> out; context parallelism swaps it

    def forward(self, x, freqs, *, segments=None, cache: LayerKV | None = None, cache_pos=None,
                kv_len: int | None = None, attn_mask=None, last_only: bool = False):
        """x [B, T, dim] -> [B, T, dim] (or [B, 1, dim] with last_only: only the last position's
        query, attention and wo; every position's K/V still go to the cache). With a cache, this
        call's K/V are written at `cache_pos` and attention reads slots [0, kv_len) under
        `attn_mask`; without a mask the call is a prefill from slot 0 (causal over its own keys)
        or a single decoded token (every slot)."""
        B, T, _ = x.shape
        D = self.head_dim
        xq = x[:, -1:] if last_only else x
        q = apply_rope(self.wq(xq).view(B, xq.shape[1], -1, D), _last(freqs) if last_only else freqs)
        k = apply_rope(self.wk(x).view(B, T, -1, D), freqs)
        v = self.wv(x).view(B, T, -1, D)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # [B, H, T, D]
        mask = attn_mask
        if cache is not None:
            ck, cv = cache.update(cache_pos, k, v)
            if mask is not None or T == 1:  # else: a fresh prefill attends over its own keys
                k, v = ck[:, :, :kv_len], cv[:, :, :kv_len]
        if last_only and mask is not None:
            mask = mask[:, :, -1:]
        out = self.core(q, k, v, segments, mask)
        return self.wo(out.transpose(1, 2).reshape(B, q.shape[2], -1))


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

    def forward(self, x, freqs, last_only: bool = False, **kw):
        h = (x[:, -1:] if last_only else x) + self.attention(self.attention_norm(x), freqs,
                                                             last_only=last_only, **kw)
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
            for name in ("attention.wq", "attention.wk", "attention.wv", "feed_forward.w1",
                         "feed_forward.w3"):
                plan.append((f"layers.{i}.{name}.weight", inner))
            for name in ("attention.wo", "feed_forward.w2"):
                plan.append((f"layers.{i}.{name}.weight", resid))
            plan += [(f"layers.{i}.attention_norm.weight", nn.init.ones_), (f"layers.{i}.ffn_norm.weight",
                                                                            nn.init.ones_)]
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
    def rope_factors(self, pos: torch.Tensor | None, T: int):
        """The RoPE factors of positions `pos` [B, T] (None: 0..T-1) in the form `apply_rope` takes:
        complex e^(i*theta) eagerly (cached per table), (cos, sin) under torch.compile."""
        if torch.compiler.is_compiling():
            if pos is None:
                return self.rope_cos[:T][None], self.rope_sin[:T][None]
            return self.rope_cos[pos], self.rope_sin[pos]
        key = (self.rope_cos.data_ptr(), self.rope_cos.device, self.rope_cos.shape)
        if self.__dict__.get("_fc_key") != key:
            with torch.inference_mode(False):  # a normal tensor, so later training can save it for backward
                self.__dict__["_fc"] = torch.complex(self.rope_cos, self.rope_sin)
            self.__dict__["_fc_key"] = key
        fc = self.__dict__["_fc"]
        return fc[:T][None] if pos is None else fc[pos]

    def forward(self, tokens: torch.Tensor, *, targets: torch.Tensor | None = None,
                pos: torch.Tensor | None = None,
                doc_ids: torch.Tensor | None = None, cache: KVCache | None = None,
                cache_pos: int | torch.Tensor | None = None, kv_len: int | None = None,
                attn_mask: torch.Tensor | None = None, last_only: bool = False,
                hidden: bool = False, attn_segments=None,
                embeds: torch.Tensor | None = None) -> torch.Tensor:
        """The one forward pass, for training, prefill and decode.

        tokens: [B, T] ids. Returns fp32 logits [B, T, vocab] ([B, 1, vocab] with `last_only`),
        the final-norm hidden states with `hidden`, or with `targets` [B, T] (the next token of
        each position; -100 = no loss there) the summed cross-entropy (an fp32 scalar; when the
        [B, T, vocab] fp32 logits would pass 1 GB the loss is fused with the output layer in chunks
        of tokens, herd.model.loss). The loss is inside forward, so FSDP has gathered the output.

        doc_ids: [B, T] document index of each token in a packed sequence (block-causal mask;
        positions restart per document). pos: [B, T] or [T] RoPE positions. attn_segments: handed to
        every Attention.core as its `segments` (context parallelism passes its chunk layout here).
        cache/cache_pos/kv_len/attn_mask: decoding with a static KVCache. K/V of these tokens are
        written at cache slots `cache_pos` (an int start, or a [T] tensor of slots) and attention
        reads slots [0, kv_len) under `attn_mask` [B, 1, T, kv_len] (True = attend). Without a
        mask an int cache_pos means no padding: kv_len = cache_pos + T, causal prefill from slot 0
        or one token at a time after it.
        last_only: only the last position's logits are needed, so the last layer runs its queries,
        attention, wo and feed-forward for that position alone (its K/V still reach the cache):
        nearly 1/n_layers of a long prefill's work saved.
        embeds: [B, T, dim] input vectors used instead of `tok_embeddings(tokens)` (e.g. the speech
        adapter's embeddings spliced between token embeddings); `tokens` still gives B and T."""
        B, T = tokens.shape
        checks = not torch.compiler.is_compiling()
        segments = None
        if cache is not None:
            if cache_pos is None:
                cache_pos = 0
            if attn_mask is not None:
                kv_len = attn_mask.shape[-1]
            elif checks:
                if not isinstance(cache_pos, int):
                    raise ValueError("attn_mask is required when cache_pos is a tensor")
                if T > 1 and cache_pos != 0:
                    raise ValueError("an attn_mask is needed for several tokens after slot 0")
            if kv_len is None:
                kv_len = cache_pos + T
            if checks and kv_len > cache.max_len:
                raise HerdError(f"sequence of {kv_len} tokens is longer than the cache ({cache.max_len})")
            if pos is None:
                pos = (torch.arange(cache_pos, cache_pos + T, device=tokens.device)
                       if isinstance(cache_pos, int) else cache_pos)
        elif doc_ids is not None:
            segments = document_segments(doc_ids)
            if pos is None:
                pos = positions_from_segments(segments, T, tokens.device)
        if attn_segments is not None:
            segments = attn_segments
        if pos is not None and pos.dim() == 1:
            pos = pos[None]
        if checks:
            top = T - 1 if pos is None else int(pos.max())
            if top >= self.args.max_seq_len:
                what = f"sequence of {T} tokens is" if pos is None else f"position {top} is"
                raise HerdError(f"{what} longer than the model's max_seq_len ({self.args.max_seq_len})")
        freqs = self.rope_factors(pos, T)
        trick = last_only and segments is None and targets is None and not hidden
        h = self.tok_embeddings(tokens) if embeds is None else embeds
        n = len(self.layers)
        for i, layer in enumerate(self.layers):
            kv = cache.layer(layer.layer_id) if cache is not None else None
            h = layer(h, freqs, last_only=trick and i == n - 1, segments=segments, cache=kv,
                      cache_pos=cache_pos,
                      kv_len=kv_len, attn_mask=attn_mask)
        h = self.norm(h)
        if targets is not None:
            from herd.model.loss import output_loss

            return output_loss(h, self.output, targets)
        if last_only:
            h = h[:, -1:]
        return h if hidden else self.output(h).float()

    def forward_hidden(self, tokens: torch.Tensor, **kw) -> torch.Tensor:
        """Final-norm hidden states [B, T, dim]: `forward(tokens, hidden=True, **kw)`."""
        return self.forward(tokens, hidden=True, **kw)


__all__ = ["ModelArgs", "Transformer", "KVCache", "LayerKV", "RMSNorm", "rms_norm", "rope_frequencies",
           "rope_table",
           "apply_rope", "sdpa_attention", "document_segments"]
