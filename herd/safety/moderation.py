"""The shields of `herd serve` (paper §5.4.7): input and output moderation with one call each.

    mod = build_moderation(input_guard="guard/", output_guard="guard/", prompt_guard="pg/", code_shield=True)
    d = mod.check_input(messages)            # before generation
    d = mod.check_output(messages, text)     # on the answer (or on streamed text so far)
    d.blocked, d.reason, d.categories, d.latency_s

Input: Prompt Guard on the last user turn (jailbreak score, p[JAILBREAK]) and on the tool outputs
since it (indirect-injection score, p[INJECTION] + p[JAILBREAK]), both against `prompt_threshold`
(0.9, llama-stack's); then Llama Guard with agent type User on the conversation. Output: Llama
Guard with agent type Agent on the conversation plus the answer; Code Shield on the answer's fenced
code (BLOCK blocks; WARN is reported in the reason but lets the answer through, as llama-stack).
Shields run in that order and stop at the first block; `latency_s` is the time of the whole check.
The same checkpoint given for input and output is loaded once. Calls are serialised by a lock, so
a threaded server can share one Moderation.

messages: OpenAI-style dicts {"role": "system" | "user" | "assistant" | "tool", "content": str or a
list of text parts (or None)}.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from herd.errors import HerdError

REFUSAL = "I can't help with that. Can I help with something else?"


@dataclass
class Decision:
    blocked: bool
    reason: str = ""
    categories: list[str] = field(default_factory=list)
    latency_s: float = 0.0
    shield: str = ""  # the shield that blocked (or "" when none did)
    scores: dict = field(default_factory=dict)  # each shield's score, for logs and metrics

    def to_dict(self) -> dict:
        return {
            "blocked": self.blocked,
            "reason": self.reason,
            "categories": self.categories,
            "latency_s": round(self.latency_s, 6),
            "shield": self.shield,
            "scores": self.scores,
        }


def _text(content) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            c if isinstance(c, str) else c.get("text", "")
            for c in content
            if isinstance(c, str) or (isinstance(c, dict) and c.get("type", "text") == "text")
        )
    raise HerdError(f"message content must be text, got {type(content).__name__}")


def _check_messages(messages) -> list[dict]:
    if not isinstance(messages, (list, tuple)):
        raise HerdError('messages must be a list of {"role", "content"} dicts')
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or "role" not in m:
            raise HerdError(f'message {i}: a message is a dict with "role" and "content"')
    return list(messages)


class Moderation:
    def __init__(
        self,
        input_guard=None,
        output_guard=None,
        prompt_guard=None,
        code_shield=None,
        prompt_threshold: float = 0.9,
    ):
        self.input_guard, self.output_guard = input_guard, output_guard
        self.prompt_guard, self.code_shield = prompt_guard, code_shield
        self.prompt_threshold = prompt_threshold
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return any(
            x is not None for x in (self.input_guard, self.output_guard, self.prompt_guard, self.code_shield)
        )

    def check_input(self, messages) -> Decision:
        t0 = time.perf_counter()
        msgs = _check_messages(messages)
        scores: dict = {}
        with self._lock:
            d = self._input(msgs, scores)
        d.latency_s, d.scores = time.perf_counter() - t0, scores
        return d

    def _input(self, msgs, scores) -> Decision:
        last_user = max((i for i, m in enumerate(msgs) if m["role"] == "user"), default=-1)
        if self.prompt_guard is not None:
            if last_user >= 0:
                s = self.prompt_guard.jailbreak_scores([_text(msgs[last_user].get("content"))])[0]
                scores["prompt_guard_jailbreak"] = round(s, 6)
                if s >= self.prompt_threshold:
                    return Decision(
                        True,
                        f"prompt guard: jailbreak in the user turn (score {s:.3f})",
                        ["JAILBREAK"],
                        shield="prompt_guard",
                    )
            tools = [
                _text(m.get("content")) for m in msgs[last_user + 1 :] if m["role"] in ("tool", "ipython")
            ]
            if tools:
                inj = self.prompt_guard.injection_scores(tools)
                scores["prompt_guard_injection"] = round(max(inj), 6)
                if max(inj) >= self.prompt_threshold:
                    return Decision(
                        True,
                        f"prompt guard: prompt injection in a tool output (score {max(inj):.3f})",
                        ["INJECTION"],
                        shield="prompt_guard",
                    )
        if self.input_guard is not None and last_user >= 0:
            r = _classify(self.input_guard, msgs[: last_user + 1], "User")
            if isinstance(r, Decision):
                return r
            scores["llama_guard_input"] = round(r.score, 6)
            if r.label == "unsafe":
                return Decision(
                    True,
                    "llama guard: unsafe user message" + _cats(r.categories),
                    r.categories,
                    shield="llama_guard",
                )
        return Decision(False)

    def check_output(self, messages, text: str) -> Decision:
        t0 = time.perf_counter()
        msgs = _check_messages(messages)
        if not isinstance(text, str):
            raise HerdError(f"the answer to check must be text, got {type(text).__name__}")
        scores: dict = {}
        with self._lock:
            d = self._output(msgs, text, scores)
        d.latency_s, d.scores = time.perf_counter() - t0, scores
        return d

    def _output(self, msgs, text, scores) -> Decision:
        if self.output_guard is not None:
            conv = [m for m in msgs if m["role"] in ("user", "assistant")] + [
                {"role": "assistant", "content": text}
            ]
            if any(m["role"] == "user" for m in conv):
                r = _classify(self.output_guard, conv, "Agent")
                if isinstance(r, Decision):
                    return r
                scores["llama_guard_output"] = round(r.score, 6)
                if r.label == "unsafe":
                    return Decision(
                        True,
                        "llama guard: unsafe answer" + _cats(r.categories),
                        r.categories,
                        shield="llama_guard",
                    )
        warn = ""
        if self.code_shield is not None:
            cs = self.code_shield.scan_output(text)
            scores["code_shield"] = cs.treatment
            cwes = sorted({i.cwe_id for i in cs.issues})
            if cs.treatment == "block":
                return Decision(
                    True, f"code shield: insecure code ({', '.join(cwes)})", cwes, shield="code_shield"
                )
            if cs.treatment == "warn":
                warn = f"code shield warning: {', '.join(cwes)}"
        return Decision(False, warn)


def _classify(guard, conv, agent_type):
    """The guard's result, or a blocking Decision when its answer is unreadable (fail closed: an
    answer that is neither `safe` nor `unsafe` + categories is never taken as safe)."""
    from herd.safety.llama_guard import GuardOutputError

    try:
        return guard.classify(conv, agent_type)
    except GuardOutputError as e:
        return Decision(True, f"llama guard: unreadable answer, blocked ({e})", [], shield="llama_guard")


def _cats(cats) -> str:
    from herd.safety.llama_guard import CATEGORIES

    return f" ({', '.join(f'{c} {CATEGORIES.get(c, c)}' for c in cats)})" if cats else ""


def build_moderation(
    input_guard=None,
    output_guard=None,
    prompt_guard=None,
    code_shield: bool = False,
    *,
    guard_threshold: float = 0.5,
    prompt_threshold: float = 0.9,
    device: str = "cpu",
    tokenizer=None,
) -> Moderation:
    """Load the shields named: Llama Guard checkpoints (any layout herd loads) for input and
    output, a Prompt Guard (herd's MiniLM head or Meta's mDeBERTa), Code Shield on/off."""
    from herd.safety.llama_guard import LlamaGuard

    loaded: dict = {}

    def guard(path):
        if path is None:
            return None
        key = str(path)
        if key not in loaded:
            loaded[key] = LlamaGuard.load(path, tokenizer=tokenizer, device=device, threshold=guard_threshold)
        return loaded[key]

    pg = None
    if prompt_guard is not None:
        from herd.safety.prompt_guard import load_prompt_guard

        pg = load_prompt_guard(prompt_guard, device=device)
    cs = None
    if code_shield:
        from herd.safety.code_shield import CodeShield, semgrep_core

        cs = CodeShield(semgrep=semgrep_core() is not None)
    return Moderation(guard(input_guard), guard(output_guard), pg, cs, prompt_threshold=prompt_threshold)


__all__ = ["Decision", "Moderation", "build_moderation", "REFUSAL"]
