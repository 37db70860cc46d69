"""The Llama 3 model (paper §3.2): configuration, presets and the transformer.

`herd.model.args` needs no torch; the transformer is imported on first use, so light
modules (the CLI) can read presets without paying torch's import time."""

from herd.model.args import PRESETS, ModelArgs, get_preset, scaled_preset

__all__ = ["ModelArgs", "PRESETS", "get_preset", "scaled_preset", "Transformer", "KVCache"]


def __getattr__(name):
    if name in ("Transformer", "KVCache"):
        from herd.model import transformer

        return getattr(transformer, name)
    raise AttributeError(f"module 'herd.model' has no attribute {name!r}")
