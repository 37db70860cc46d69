"""Model configuration and the named presets of the Llama 3 herd (paper §3.2, Table 3).

Field names follow Meta's `params.json` (llama-models `ModelArgs`), so a Meta checkpoint's
params load as-is. The FFN width follows Meta's formula: h = 4*dim; h = int(2h/3);
h = int(multiplier*h); round up to a multiple of `multiple_of`.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

from herd.errors import HerdError


@dataclass
class ModelArgs:
    dim: int = 4096
    n_layers: int = 32
    n_heads: int = 32
    n_kv_heads: int | None = None
    vocab_size: int = 128256
    multiple_of: int = 256
    ffn_dim_multiplier: float | None = None
    norm_eps: float = 1e-5
    rope_theta: float = 500000.0
    # Llama 3.1 RoPE frequency scaling (llama-models `apply_scaling`); 3.2 uses factor 32.
    use_scaled_rope: bool = False
    rope_scale_factor: float = 8.0
    rope_low_freq_factor: float = 1.0
    rope_high_freq_factor: float = 4.0
    rope_old_context_len: int = 8192
    max_seq_len: int = 8192
    tie_embeddings: bool = False

    def __post_init__(self):
        if self.n_kv_heads is None:
            self.n_kv_heads = self.n_heads
        for name in ("dim", "n_layers", "n_heads", "n_kv_heads", "vocab_size", "multiple_of", "max_seq_len"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                raise HerdError(f"model config: {name} must be a positive integer, got {v!r}")
        if self.dim % self.n_heads:
            raise HerdError(f"model config: dim ({self.dim}) must be divisible by n_heads ({self.n_heads})")
        if self.n_heads % self.n_kv_heads:
            raise HerdError(
                f"model config: n_heads ({self.n_heads}) must be a multiple of n_kv_heads ({self.n_kv_heads})"
            )
        if (self.dim // self.n_heads) % 2:
            raise HerdError(f"model config: head dim ({self.dim // self.n_heads}) must be even for RoPE")

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads

    @property
    def ffn_hidden_dim(self) -> int:
        h = int(2 * (4 * self.dim) / 3)
        if self.ffn_dim_multiplier is not None:
            h = int(self.ffn_dim_multiplier * h)
        return self.multiple_of * ((h + self.multiple_of - 1) // self.multiple_of)

    def num_params(self, exclude_embedding: bool = False) -> int:
        d, L, hd = self.dim, self.n_layers, self.head_dim
        attn = d * self.n_heads * hd * 2 + d * self.n_kv_heads * hd * 2
        ffn = 3 * d * self.ffn_hidden_dim
        per_layer = attn + ffn + 2 * d
        emb = self.vocab_size * d
        out = 0 if self.tie_embeddings else self.vocab_size * d
        total = L * per_layer + d + emb + out
        return total - emb if exclude_embedding else total

    def flops_per_token(self, seq_len: int | None = None) -> float:
        """Training FLOPs per token: 6 x (non-embedding params, the output layer included)
        + 12 x layers x dim x seq (attention scores and values, forward and backward);
        the convention of PaLM and torchtitan."""
        seq = seq_len or self.max_seq_len
        return 6 * self.num_params(exclude_embedding=True) + 12 * self.n_layers * self.dim * seq

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict, *, strict: bool = True) -> "ModelArgs":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown and strict:
            raise HerdError(f"model config: unknown field(s) {', '.join(unknown)}")
        return cls(**{k: v for k, v in d.items() if k in names})

    def replace(self, **kw) -> "ModelArgs":
        return dataclasses.replace(self, **kw)


_L31 = dict(use_scaled_rope=True, max_seq_len=131072)

PRESETS: dict[str, ModelArgs] = {
    # Llama 3 (8K context, no RoPE scaling) and Llama 3.1 (128K context, scaled RoPE) [paper T3; LM sku_list].
    "llama3-8b": ModelArgs(dim=4096, n_layers=32, n_heads=32, n_kv_heads=8, multiple_of=1024,
                           ffn_dim_multiplier=1.3, max_seq_len=8192),
    "llama3-70b": ModelArgs(dim=8192, n_layers=80, n_heads=64, n_kv_heads=8, multiple_of=4096,
                            ffn_dim_multiplier=1.3, max_seq_len=8192),
    "llama3.1-8b": ModelArgs(dim=4096, n_layers=32, n_heads=32, n_kv_heads=8, multiple_of=1024,
                             ffn_dim_multiplier=1.3, **_L31),
    "llama3.1-70b": ModelArgs(dim=8192, n_layers=80, n_heads=64, n_kv_heads=8, multiple_of=4096,
                              ffn_dim_multiplier=1.3, **_L31),
    "llama3.1-405b": ModelArgs(dim=16384, n_layers=126, n_heads=128, n_kv_heads=8, multiple_of=4096,
                               ffn_dim_multiplier=1.2, **_L31),
    # Llama 3.2 text models: tied embeddings, RoPE scaling factor 32.
    "llama3.2-1b": ModelArgs(dim=2048, n_layers=16, n_heads=32, n_kv_heads=8, multiple_of=256,
                             ffn_dim_multiplier=1.5, tie_embeddings=True, rope_scale_factor=32.0, **_L31),
    "llama3.2-3b": ModelArgs(dim=3072, n_layers=28, n_heads=24, n_kv_heads=8, multiple_of=256,
                             ffn_dim_multiplier=1.0, tie_embeddings=True, rope_scale_factor=32.0, **_L31),
    # Small presets for CPU work: same architecture, small vocabulary (a BPE tokenizer trained by
    # `herd tokenizer train`; vocab_size counts its 256 special tokens).
    "herd-5m": ModelArgs(dim=256, n_layers=4, n_heads=4, n_kv_heads=2, vocab_size=4096, multiple_of=64,
                         max_seq_len=2048),
    "herd-20m": ModelArgs(dim=384, n_layers=8, n_heads=6, n_kv_heads=2, vocab_size=16384, multiple_of=64,
                          max_seq_len=2048),
    "herd-100m": ModelArgs(dim=768, n_layers=12, n_heads=12, n_kv_heads=4, vocab_size=32768, multiple_of=256,
                           max_seq_len=2048),
}


def get_preset(name: str, **overrides) -> ModelArgs:
    if name not in PRESETS:
        raise HerdError(f"unknown model preset {name!r}; choose one of: {', '.join(PRESETS)}")
    return PRESETS[name].replace(**overrides) if overrides else dataclasses.replace(PRESETS[name])


def scaled_preset(n_params: float, vocab_size: int, *, head_dim: int = 64, seq_len: int = 2048) -> ModelArgs:
    """A model of about `n_params` parameters (embeddings included) with Llama proportions:
    dim ~ 64*layers (aspect ratio of the small Llama models), GQA 2:1 or more. Used by the
    IsoFLOP sweeps, which need a smooth family of sizes."""
    best = None
    for n_layers in range(2, 49):
        for dim in range(head_dim * 2, 4097, head_dim):
            if not (32 * n_layers <= dim <= 128 * n_layers):
                continue
            n_heads = dim // head_dim
            n_kv = max(1, n_heads // 2)
            while n_heads % n_kv:
                n_kv -= 1
            a = ModelArgs(dim=dim, n_layers=n_layers, n_heads=n_heads, n_kv_heads=n_kv, vocab_size=vocab_size,
                          multiple_of=64, max_seq_len=seq_len)
            err = abs(math.log(a.num_params() / n_params)) + 0.02 * abs(math.log(dim / (64 * n_layers)))
            if best is None or err < best[0]:
                best = (err, a)
    return best[1]


__all__ = ["ModelArgs", "PRESETS", "get_preset", "scaled_preset", "field"]
