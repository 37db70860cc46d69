"""The safety hook of `herd serve` (paper §5.4 system-level safety: Llama Guard 3 on the input and the
output, Prompt Guard, Code Shield). herd.safety builds the real object; the server only needs this
protocol:

    moderation.check_input(messages) -> Decision          # before generation
    moderation.check_output(messages, text) -> Decision   # on the final answer, and on streamed text
                                                          # at sentence boundaries

`messages` is the OpenAI-style list of dicts the client sent (system/user/assistant/tool messages).
A blocked decision ends the answer with finish_reason "content_filter" and `REFUSAL` as its text.
Every decision is logged and counted in /metrics.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

REFUSAL = "I'm sorry, but I can't help with that."


@dataclass
class Decision:
    blocked: bool = False
    reason: str = ""
    categories: list[str] = field(default_factory=list)
    latency_s: float = 0.0


@runtime_checkable
class Moderation(Protocol):
    def check_input(self, messages: list[dict]) -> Decision: ...

    def check_output(self, messages: list[dict], text: str) -> Decision: ...


def load_moderation(input_guards=(), output_guards=(), prompt_guard=None, code_shield=False):
    """The moderation object for the CLI's --shield/--prompt-guard/--code-shield flags (None when none
    is given), from herd.safety."""
    from herd.errors import HerdError

    if not (input_guards or output_guards or prompt_guard or code_shield):
        return None
    if len(input_guards) > 1 or len(output_guards) > 1:
        raise HerdError("give at most one --shield input=CKPT and one --shield output=CKPT")
    try:
        from herd.safety import build_moderation
    except ImportError as e:
        raise HerdError(
            f"--shield/--prompt-guard/--code-shield need herd.safety, which is not available ({e}); "
            "install herd with its safety stage or drop these flags"
        ) from None
    return build_moderation(
        input_guard=input_guards[0] if input_guards else None,
        output_guard=output_guards[0] if output_guards else None,
        prompt_guard=prompt_guard,
        code_shield=bool(code_shield),
    )


__all__ = ["REFUSAL", "Decision", "Moderation", "load_moderation"]
