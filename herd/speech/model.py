"""The speech encoder and adapter of paper §8, and how their output enters a frozen herd LM.

    log-mel [B, T, 80] (10 ms frames)
      -> stack 4 frames (40 ms) -> linear -> Conformer blocks            (SpeechEncoder)
      -> conv stride 2 (80 ms) -> one rotary transformer layer -> linear (SpeechAdapter)
      -> speech embeddings [B, T/8, lm_dim], spliced into the LM's input between
         <|reserved_special_token_10|> (SPEECH_START) and <|reserved_special_token_11|> (SPEECH_END)

A Conformer block (Gulati et al. 2020) is: x + FFN/2, x + MHSA (here with rotary position
embeddings, herd's `apply_rope`), x + conv module (pointwise conv + GLU, depthwise conv,
normalisation, SiLU, pointwise conv), x + FFN/2, LayerNorm. Padded frames are masked out of
attention and zeroed before every convolution, so an utterance's output does not depend on what
it was batched with. The LM is never changed: its parameters are frozen and the speech vectors go
in through `Transformer.forward(..., embeds=)`; text-only inputs run exactly as without the adapter.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from herd.model.transformer import apply_rope

SPEECH_START = "<|reserved_special_token_10|>"
SPEECH_END = "<|reserved_special_token_11|>"


@dataclass
class SpeechArgs:
    """Shapes of the encoder and adapter (the paper's: 1B-parameter, 24-layer Conformer and a
    ~100M adapter; the defaults here are CPU-sized)."""
    n_mels: int = 80
    stack: int = 4  # 10 ms frames stacked into 40 ms
    dim: int = 128
    n_layers: int = 4
    n_heads: int = 4
    ffn_mult: int = 4
    conv_kernel: int = 15
    adapter_dim: int = 256
    adapter_heads: int = 4
    adapter_kernel: int = 3
    adapter_stride: int = 2
    lm_dim: int = 128
    rope_theta: float = 10000.0
    dropout: float = 0.0

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> SpeechArgs:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def rope_factors(head_dim: int, T: int, theta: float, device=None) -> torch.Tensor:
    """e^(i * pos * freq) [1, T, head_dim/2] for herd's `apply_rope`."""
    freqs = 1.0 / (theta ** (torch.arange(0, head_dim, 2, device=device).float() / head_dim))
    angles = torch.outer(torch.arange(T, device=device, dtype=torch.float32), freqs)
    return torch.polar(torch.ones_like(angles), angles)[None]


class RotaryAttention(nn.Module):
    def __init__(self, dim: int, n_heads: int, dropout: float = 0.0):
        super().__init__()
        self.n_heads = n_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.dropout = dropout

    def forward(self, x, freqs, mask):
        """x [B, T, dim]; mask [B, 1, 1, T] (True = a real frame)."""
        B, T, _ = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.n_heads, -1).unbind(2)
        q, k = apply_rope(q, freqs), apply_rope(k, freqs)
        o = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                           attn_mask=mask,
                                           dropout_p=self.dropout if self.training else 0.0)
        return self.out(o.transpose(1, 2).reshape(B, T, -1))


class FeedForward(nn.Module):
    def __init__(self, dim: int, hidden: int, dropout: float = 0.0):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.w1 = nn.Linear(dim, hidden)
        self.w2 = nn.Linear(hidden, dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x):
        return self.drop(self.w2(self.drop(F.silu(self.w1(self.norm(x))))))


class ConvModule(nn.Module):
    """Pointwise conv + GLU, depthwise conv, LayerNorm (over channels: independent of the batch's
    padding, unlike BatchNorm), SiLU, pointwise conv."""

    def __init__(self, dim: int, kernel: int, dropout: float = 0.0):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.pw1 = nn.Linear(dim, 2 * dim)
        self.dw = nn.Conv1d(dim, dim, kernel, padding=kernel // 2, groups=dim)
        self.dw_norm = nn.LayerNorm(dim)
        self.pw2 = nn.Linear(dim, dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x, valid):
        """x [B, T, dim]; valid [B, T, 1] float (1 = a real frame)."""
        h = F.glu(self.pw1(self.norm(x)), dim=-1) * valid
        h = self.dw(h.transpose(1, 2)).transpose(1, 2)
        return self.drop(self.pw2(F.silu(self.dw_norm(h))))


class ConformerBlock(nn.Module):
    def __init__(self, a: SpeechArgs):
        super().__init__()
        self.ff1 = FeedForward(a.dim, a.ffn_mult * a.dim, a.dropout)
        self.attn_norm = nn.LayerNorm(a.dim)
        self.attn = RotaryAttention(a.dim, a.n_heads, a.dropout)
        self.conv = ConvModule(a.dim, a.conv_kernel, a.dropout)
        self.ff2 = FeedForward(a.dim, a.ffn_mult * a.dim, a.dropout)
        self.norm = nn.LayerNorm(a.dim)

    def forward(self, x, freqs, mask, valid):
        x = x + 0.5 * self.ff1(x)
        x = x + self.attn(self.attn_norm(x), freqs, mask)
        x = x + self.conv(x, valid)
        x = x + 0.5 * self.ff2(x)
        return self.norm(x) * valid


def _masks(lengths: torch.Tensor, T: int):
    valid = torch.arange(T, device=lengths.device)[None] < lengths[:, None]  # [B, T]
    return valid[:, None, None, :], valid[..., None].float()


class SpeechEncoder(nn.Module):
    """Conformer over 4-frame stacks of log-mel features (input normalised per utterance and mel
    channel over its real frames)."""

    def __init__(self, a: SpeechArgs):
        super().__init__()
        self.args = a
        self.proj = nn.Linear(a.n_mels * a.stack, a.dim)
        self.layers = nn.ModuleList(ConformerBlock(a) for _ in range(a.n_layers))

    def forward(self, feats: torch.Tensor, lengths: torch.Tensor):
        """feats [B, T, n_mels] (zero-padded), lengths [B] frames -> ([B, T', dim], lengths')
        with T' = ceil(T / stack)."""
        a = self.args
        B, T, M = feats.shape
        valid = (torch.arange(T, device=feats.device)[None] < lengths[:, None])[..., None].float()
        n = valid.sum(1).clamp(min=1)
        mean = (feats * valid).sum(1, keepdim=True) / n[:, None]
        std = ((((feats - mean) * valid) ** 2).sum(1, keepdim=True) / n[:, None]).add(1e-5).sqrt()
        x = (feats - mean) / std * valid
        pad = (-T) % a.stack
        x = F.pad(x, (0, 0, 0, pad)).reshape(B, (T + pad) // a.stack, a.stack * M)
        lengths = torch.div(lengths + a.stack - 1, a.stack, rounding_mode="floor")
        mask, valid = _masks(lengths, x.shape[1])
        x = self.proj(x) * valid
        freqs = rope_factors(a.dim // a.n_heads, x.shape[1], a.rope_theta, x.device)
        for layer in self.layers:
            x = layer(x, freqs, mask, valid)
        return x, lengths


class SpeechAdapter(nn.Module):
    """Conv (stride 2), one rotary transformer layer, linear to the LM's width."""

    def __init__(self, a: SpeechArgs):
        super().__init__()
        self.args = a
        self.conv = nn.Conv1d(a.dim, a.adapter_dim, a.adapter_kernel, stride=a.adapter_stride,
                              padding=a.adapter_kernel // 2)
        self.attn_norm = nn.LayerNorm(a.adapter_dim)
        self.attn = RotaryAttention(a.adapter_dim, a.adapter_heads, a.dropout)
        self.ffn = FeedForward(a.adapter_dim, 4 * a.adapter_dim, a.dropout)
        self.norm = nn.LayerNorm(a.adapter_dim)
        self.out = nn.Linear(a.adapter_dim, a.lm_dim)

    def out_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        a = self.args
        k, s, p = a.adapter_kernel, a.adapter_stride, a.adapter_kernel // 2
        return torch.div(lengths + 2 * p - k, s, rounding_mode="floor") + 1

    def forward(self, x, lengths):
        a = self.args
        x = self.conv(x.transpose(1, 2)).transpose(1, 2)
        lengths = self.out_lengths(lengths)
        mask, valid = _masks(lengths, x.shape[1])
        x = x * valid
        freqs = rope_factors(a.adapter_dim // a.adapter_heads, x.shape[1], a.rope_theta, x.device)
        x = x + self.attn(self.attn_norm(x), freqs, mask)
        x = x + self.ffn(x)
        return self.out(self.norm(x)) * valid, lengths


class SpeechModel(nn.Module):
    """Encoder + adapter: log-mel features -> embeddings in the LM's input space."""

    def __init__(self, a: SpeechArgs):
        super().__init__()
        self.args = a
        self.encoder = SpeechEncoder(a)
        self.adapter = SpeechAdapter(a)

    def forward(self, feats, lengths):
        """feats [B, T, 80], lengths [B] -> (embeddings [B, S, lm_dim], lengths [B])."""
        return self.adapter(*self.encoder(feats, lengths))

    def n_embeddings(self, frames: int) -> int:
        """How many speech embeddings `frames` log-mel frames give."""
        n = torch.tensor([math.ceil(frames / self.args.stack)])
        return int(self.adapter.out_lengths(n))


def lm_inputs(lm, tokens: torch.Tensor, slots: torch.Tensor, speech: torch.Tensor, lengths: torch.Tensor):
    """The LM's input vectors: token embeddings, with each row's speech slots (True in `slots`
    [B, T], in order) replaced by that row's first `lengths[b]` speech embeddings."""
    emb = lm.tok_embeddings(tokens)
    S = speech.shape[1]
    take = torch.arange(S, device=speech.device)[None] < lengths[:, None]  # [B, S]
    return emb.masked_scatter(slots[..., None], speech[take].to(emb.dtype))


__all__ = [
    "SPEECH_END",
    "SPEECH_START",
    "SpeechAdapter",
    "SpeechArgs",
    "SpeechEncoder",
    "SpeechModel",
    "lm_inputs",
]
