"""Inference (paper §6): the generation engine, streaming, FP8/int8 quantization, speculative
decoding and the `herd generate` / `herd chat` commands. See `herd.inference.engine` for the API:

    from herd.inference import Generator
    gen = Generator(model, tokenizer=None, max_batch=8, max_seq_len=None, compile=False)
    gen.generate(prompts, max_new_tokens=128, temperature=0.0, top_p=1.0, top_k=0, seed=None,
                 stop_tokens=None, num_samples=1, on_token=None) -> list[Completion]

Exports are lazy, so `herd --help` (which imports herd.inference.cli) does not import torch."""

import importlib

_EXPORTS = {
    "Generator": "herd.inference.engine", "Completion": "herd.inference.engine",
    "GenerationStats": "herd.inference.engine", "TextStreamer": "herd.inference.stream",
    "stream_text": "herd.inference.stream", "filter_probs": "herd.inference.sampling",
    "sample": "herd.inference.sampling", "SpeculativeGenerator": "herd.inference.speculative",
    "quantize": "herd.inference.quant",
}


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'herd.inference' has no attribute {name!r}")


__all__ = list(_EXPORTS)
