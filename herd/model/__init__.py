"""The Llama 3 model (paper §3.2): configuration, presets and the transformer."""

from herd.model.args import PRESETS, ModelArgs, get_preset, scaled_preset
from herd.model.transformer import KVCache, Transformer

__all__ = ["ModelArgs", "PRESETS", "get_preset", "scaled_preset", "Transformer", "KVCache"]
