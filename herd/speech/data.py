"""Speech training data, synthesised offline with espeak-ng (herd.speech.espeak).

Utterances (what is said -> what the LM should answer):
  digit     "seven"                    transcribe -> "seven"                 answer -> "7"
  number    "forty two"                transcribe -> "forty two"             answer -> "42"
  question  "what is two plus three"   transcribe -> "what is two plus three" answer -> "5"
  sentence  "the cat sees a red ball"  transcribe -> the sentence
Each is spoken by a speaker drawn from the English voices of espeak-ng x its voice variants, at a
random rate (words per minute), pitch and pitch range. The variants (speaker identities) are split:
HELD_OUT_VARIANTS are never used for training, only for the held-out evaluation.

The LM sees, in the Llama 3 chat format (ChatFormat.encode_header):
  <|begin_of_text|><|start_header_id|>user<|end_header_id|>\\n\\n
  SPEECH_START [speech embeddings] SPEECH_END {instruction}<|eot_id|>
  <|start_header_id|>assistant<|end_header_id|>\\n\\n{answer}<|eot_id|>
and `text_example` puts the text itself between the speech tokens (the text form of the same task).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from herd.speech.espeak import ENGLISH, VARIANTS, Voice

TRANSCRIBE = "Transcribe the audio."
ANSWER = "Answer with a number."
TASKS = {"transcribe": TRANSCRIBE, "answer": ANSWER}

HELD_OUT_VARIANTS = ["f5", "m7", "klatt3", "steph", "travis", "Storm", "zac"]
TRAIN_VARIANTS = [v for v in VARIANTS if v not in HELD_OUT_VARIANTS]

ONES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven",
        "twelve",
        "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen"]
TENS = ["", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]

_SUBJECTS = ["the cat", "the dog", "my friend", "the teacher", "a bird", "the child", "his mother",
             "the farmer"]
_VERBS = ["sees", "likes", "finds", "wants", "takes", "brings", "holds", "opens"]
_OBJECTS = ["a red ball", "the green door", "an old book", "the big box", "a small cup", "the blue car",
            "some fresh bread", "a warm coat"]

MIX = {"digit": 0.4, "number": 0.2, "question": 0.2, "sentence": 0.2}


def number_words(n: int) -> str:
    """0..999 in words ("forty two", "one hundred and five")."""
    if not 0 <= n < 1000:
        raise ValueError(f"number out of range: {n}")
    if n < 20:
        return ONES[n]
    if n < 100:
        return TENS[n // 10] + ("" if n % 10 == 0 else " " + ONES[n % 10])
    rest = n % 100
    return ONES[n // 100] + " hundred" + ("" if rest == 0 else " and " + number_words(rest))


@dataclass(frozen=True)
class Utterance:
    kind: str  # digit / number / question / sentence
    text: str  # what is said
    answer: str | None  # the answer of the "answer" task (None: transcription only)


def draw_utterance(rng: random.Random, kind: str | None = None) -> Utterance:
    kind = kind or rng.choices(list(MIX), weights=list(MIX.values()))[0]
    if kind == "digit":
        n = rng.randrange(10)
        return Utterance(kind, ONES[n], str(n))
    if kind == "number":
        n = rng.randrange(10, 100)
        return Utterance(kind, number_words(n), str(n))
    if kind == "question":
        a, b = rng.randrange(10), rng.randrange(10)
        return Utterance(kind, f"what is {ONES[a]} plus {ONES[b]}", str(a + b))
    if kind == "sentence":
        return Utterance(kind, f"{rng.choice(_SUBJECTS)} {rng.choice(_VERBS)} {rng.choice(_OBJECTS)}", None)
    raise ValueError(f"unknown utterance kind {kind!r}")


def draw_task(rng: random.Random, u: Utterance) -> tuple[str, str]:
    """(instruction, target text) for an utterance: transcription, or the answer when it has one."""
    if u.answer is not None and rng.random() < 0.5:
        return ANSWER, u.answer
    return TRANSCRIBE, u.text


def draw_voice(rng: random.Random, held_out: bool = False) -> Voice:
    variant = rng.choice(HELD_OUT_VARIANTS if held_out else TRAIN_VARIANTS)
    return Voice(f"{rng.choice(ENGLISH)}+{variant}", rate=rng.randint(130, 230), pitch=rng.randint(25, 80),
                 range=rng.randint(20, 90))


# ---- token layout ------------------------------------------------------------------------------
class Layout:
    """Token ids of the speech prompt around the speech slot, for one tokenizer."""

    def __init__(self, tok):
        from herd.speech.model import SPEECH_END, SPEECH_START
        from herd.tokenizer.chat_format import ChatFormat

        self.tok = tok
        self.fmt = ChatFormat(tok)
        st = tok.special_tokens
        self.start, self.end, self.eot = st[SPEECH_START], st[SPEECH_END], st["<|eot_id|>"]
        self.bos = st["<|begin_of_text|>"]
        self.user = [self.bos] + self.fmt.encode_header("user")
        self.assistant = self.fmt.encode_header("assistant")

    def prompt(self, n_slots: int, instruction: str) -> tuple[list[int], list[bool]]:
        """(prompt ids, speech-slot flags) with `n_slots` placeholder positions for the speech."""
        head = self.user + [self.start]
        tail = [self.end] + self.tok.encode(" " + instruction) + [self.eot] + self.assistant
        ids = head + [self.end] * n_slots + tail  # the placeholder ids never reach the LM
        slots = [False] * len(head) + [True] * n_slots + [False] * len(tail)
        return ids, slots

    def text_prompt(self, text: str, instruction: str) -> list[int]:
        """The text form: the words themselves between the speech tokens."""
        return (self.user + [self.start] + self.tok.encode(text) + [self.end]
                + self.tok.encode(" " + instruction) + [self.eot] + self.assistant)

    def answer(self, text: str) -> list[int]:
        return self.tok.encode(text) + [self.eot]


def batch_rows(rows: list[tuple[list[int], list[bool], list[int]]], pad: int):
    """(tokens [B, T], slots [B, T], targets [B, T]) from (prompt ids, slot flags, answer ids) rows,
    right-padded; targets are the next token at answer positions, -100 elsewhere."""
    import torch

    T = max(len(p) + len(a) for p, _, a in rows)
    tokens = torch.full((len(rows), T), pad, dtype=torch.long)
    slots = torch.zeros((len(rows), T), dtype=torch.bool)
    targets = torch.full((len(rows), T), -100, dtype=torch.long)
    for b, (p, s, a) in enumerate(rows):
        seq = p + a
        tokens[b, :len(seq)] = torch.tensor(seq)
        slots[b, :len(s)] = torch.tensor(s)
        targets[b, len(p) - 1:len(seq) - 1] = torch.tensor(a)
    return tokens, slots, targets


# ---- synthesis ---------------------------------------------------------------------------------
@dataclass
class Sample:
    utterance: Utterance
    voice: Voice
    feats: object  # [frames, 80] float32 tensor


def synthesize_set(n: int, seed: int, held_out: bool = False, kinds: list[str] | None = None,
                   progress: bool | None = None) -> list[Sample]:
    """`n` utterances spoken by random voices (training or held-out variants), as log-mel features."""
    from tqdm import tqdm

    from herd.speech.espeak import synthesize
    from herd.speech.features import log_mel

    rng = random.Random(seed)
    out = []
    for i in tqdm(range(n), desc="synthesising speech", unit="utt", disable=progress is False or None,
                  leave=False):
        u = draw_utterance(rng, kinds[i % len(kinds)] if kinds else None)
        v = draw_voice(rng, held_out)
        wav, sr = synthesize(u.text, v)
        out.append(Sample(u, v, log_mel(wav, sr)))
    return out


__all__ = [
    "ANSWER",
    "HELD_OUT_VARIANTS",
    "TRAIN_VARIANTS",
    "TRANSCRIBE",
    "Layout",
    "Sample",
    "Utterance",
    "batch_rows",
    "draw_task",
    "draw_utterance",
    "draw_voice",
    "number_words",
    "synthesize_set",
]


def task_texts() -> list[str]:
    """Every text of the tasks (utterances, answers, instructions), for training a small tokenizer."""
    out = [number_words(n) for n in range(100)] + [str(n) for n in range(100)]
    out += [f"what is {ONES[a]} plus {ONES[b]}" for a in range(10) for b in range(10)]
    out += [f"{s} {v} {o}" for s in _SUBJECTS for v in _VERBS for o in _OBJECTS]
    return out + [" " + TRANSCRIBE, " " + ANSWER, "user", "assistant", "\n\n"] * 100  # as often as they occur


def task_tokenizer(vocab_size: int = 768):
    """A small Llama-3-style BPE tokenizer (herd.tokenizer.train: byte-level, tiktoken format, the
    256 Llama 3 special tokens after its ranks, so SPEECH_START/SPEECH_END exist) learned on the
    task texts: a CPU-sized vocabulary for the stand-in LM."""
    from herd.tokenizer.train import train_bpe

    return train_bpe(task_texts() * 4, vocab_size=vocab_size, show_progress=False, allow_smaller=True,
                     name="speech-tasks")
