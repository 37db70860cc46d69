"""Inference (paper §6): the generation engine, streaming, FP8/int8 quantization, speculative
decoding and the `herd generate` / `herd chat` commands. See `herd.inference.engine` for the API."""

from herd.inference.engine import Completion, GenerationStats, Generator
from herd.inference.sampling import filter_probs, sample
from herd.inference.stream import TextStreamer, stream_text

__all__ = ["Generator", "Completion", "GenerationStats", "TextStreamer", "stream_text", "filter_probs", "sample"]
