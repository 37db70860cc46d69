"""Serving (paper §6 inference; §4.3.5 tool use; §5.4 system-level safety): `herd serve`, an
OpenAI-compatible HTTP server with continuous batching (herd.serve.engine), streaming, Llama 3.1
tool calls and a tool-use loop (herd.serve.tools), a moderation hook (herd.serve.moderation) and a
web chat page (static/index.html). See docs/serving.md."""
