"""System-level safety (paper §5.4.7; PAPER.md §7): Llama Guard 3, Prompt Guard, Code Shield.

    llama_guard_prompt   the Llama Guard 3 task prompt, exact (llama_guard.py)
    LlamaGuard           classify conversations with any Llama Guard checkpoint (llama_guard.py)
    parse_guard_output   `safe` / `unsafe\\nS1,S10` -> verdict; anything else is an error
    load_prompt_guard    BENIGN / INJECTION / JAILBREAK: mDeBERTa or a MiniLM head (prompt_guard.py)
    scan_code            Code Shield: insecure code -> block / warn / ignore with CWE ids (code_shield.py)
    build_moderation     the input and output shields of `herd serve` (moderation.py)
    Decision             one shield decision: blocked, reason, categories, latency

Names are imported on first use, so `herd --help` stays fast.
"""

import importlib

_WHERE = {
    "llama_guard_prompt": "llama_guard",
    "guard_prompt_text": "llama_guard",
    "parse_guard_output": "llama_guard",
    "LlamaGuard": "llama_guard",
    "GuardOutputError": "llama_guard",
    "CATEGORIES": "llama_guard",
    "load_prompt_guard": "prompt_guard", "PromptGuardBase": "prompt_guard",
    "scan_code": "code_shield",
    "CodeShieldResult": "code_shield",
    "build_moderation": "moderation",
    "Decision": "moderation",
    "Moderation": "moderation",
}

__all__ = list(_WHERE)


def __getattr__(name):
    if name in _WHERE:
        return getattr(importlib.import_module(f"herd.safety.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'herd.safety' has no attribute {name!r}")
