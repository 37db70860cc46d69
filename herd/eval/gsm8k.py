"""GSM8K (paper §5, math reasoning): 8-shot chain of thought, scored by exact match of the final
number.

The prompt is the 8 exemplars of Wei et al. (2022), "Q: ...\nA: <reasoning> The answer is N.\n\n"
(the same as lm-evaluation-harness's gsm8k-cot) followed by "Q: <question>\nA:"; the model's text is
cut at the first blank line or "Q:". Shots can instead come from a GSM8K train file (`shots=PATH`),
with the calculator annotations <<...>> removed and "#### N" written as "The answer is N.".
The final answer is the number after "####" (else after the last "The answer is", else the last
number in the text), with $ and thousands separators removed, compared numerically to the gold
number after "####".
"""

from __future__ import annotations

import os
import re

from herd.errors import HerdError, require_file
from herd.eval.report import iter_jsonl

WEI_SHOTS = [
    (
        "There are 15 trees in the grove. Grove workers will plant trees in the grove today. After "
        "they are done, there will be 21 trees. How many trees did the grove workers plant today?",
        "There are 15 trees originally. Then there were 21 trees after some more were planted. So "
        "there must have been 21 - 15 = 6. The answer is 6.",
    ),
    (
        "If there are 3 cars in the parking lot and 2 more cars arrive, how many cars are in the "
        "parking lot?",
        "There are originally 3 cars. 2 more cars arrive. 3 + 2 = 5. The answer is 5.",
    ),
    (
        "Leah had 32 chocolates and her sister had 42. If they ate 35, how many pieces do they have "
        "left in total?",
        "Originally, Leah had 32 chocolates. Her sister had 42. So in total they had 32 + 42 = 74. "
        "After eating 35, they had 74 - 35 = 39. The answer is 39.",
    ),
    (
        "Jason had 20 lollipops. He gave Denny some lollipops. Now Jason has 12 lollipops. How many "
        "lollipops did Jason give to Denny?",
        "Jason started with 20 lollipops. Then he had 12 after giving some to Denny. So he gave Denny "
        "20 - 12 = 8. The answer is 8.",
    ),
    (
        "Shawn has five toys. For Christmas, he got two toys each from his mom and dad. How many toys "
        "does he have now?",
        "Shawn started with 5 toys. If he got 2 toys each from his mom and dad, then that is 4 more "
        "toys. 5 + 4 = 9. The answer is 9.",
    ),
    (
        "There were nine computers in the server room. Five more computers were installed each day, "
        "from monday to thursday. How many computers are now in the server room?",
        "There were originally 9 computers. For each of 4 days, 5 more computers were added. So 5 * 4 "
        "= 20 computers were added. 9 + 20 is 29. The answer is 29.",
    ),
    (
        "Michael had 58 golf balls. On tuesday, he lost 23 golf balls. On wednesday, he lost 2 more. "
        "How many golf balls did he have at the end of wednesday?",
        "Michael started with 58 golf balls. After losing 23 on tuesday, he had 58 - 23 = 35. After "
        "losing 2 more, he had 35 - 2 = 33 golf balls. The answer is 33.",
    ),
    (
        "Olivia has $23. She bought five bagels for $3 each. How much money does she have left?",
        "Olivia had 23 dollars. 5 bagels for 3 dollars each will be 5 x 3 = 15 dollars. So she has 23 "
        "- 15 dollars left. 23 - 15 is 8. The answer is 8.",
    ),
]
STOP = ("\n\n", "\nQ:", "Q:")
_NUM = r"-?[$]?\s*-?\d[\d,]*(?:\.\d+)?"


def load_gsm8k(path: str | os.PathLike, limit: int | None = None) -> list[dict]:
    """GSM8K JSONL records (question, answer with '#### N' at the end)."""
    p = require_file(path, "GSM8K file")
    if p.is_dir():
        p = require_file(p / "test.jsonl", "GSM8K test file")
    out = []
    for ln, rec in iter_jsonl(p):
        if not isinstance(rec, dict) or "question" not in rec or "answer" not in rec:
            raise HerdError(f"{p}:{ln}: a GSM8K record needs 'question' and 'answer'")
        if "####" not in rec["answer"]:
            raise HerdError(f"{p}:{ln}: answer has no '#### N' final answer")
        out.append(rec)
        if limit is not None and len(out) >= limit:
            break
    return out


def normalize_number(s: str) -> str | None:
    """'$1,000.00' -> '1000'; None when `s` is not a number."""
    s = s.strip().replace("$", "").replace(",", "").replace(" ", "").rstrip(".")
    try:
        v = float(s)
    except ValueError:
        return None
    return str(int(v)) if v == int(v) else repr(v)


def gold_answer(answer: str) -> str:
    """The number after '####' in a GSM8K answer."""
    g = normalize_number(answer.split("####")[-1])
    if g is None:
        raise HerdError(f"GSM8K gold answer is not a number: {answer.split('####')[-1].strip()!r}")
    return g


def extract_answer(text: str) -> str | None:
    """The final number of a chain of thought (normalized), or None."""
    for pat in (r"####\s*(" + _NUM + ")", r"[Tt]he (?:final )?answer is[:\s]*(" + _NUM + ")"):
        m = re.findall(pat, text)
        if m:
            return normalize_number(m[-1])
    nums = re.findall(_NUM, text)
    return normalize_number(nums[-1]) if nums else None


def cot_from_solution(answer: str) -> str:
    """A GSM8K reference solution as a chain of thought in the exemplars' style."""
    body, final = answer.rsplit("####", 1)
    body = re.sub(r"<<[^>]*>>", "", body).strip().replace("\n", " ")
    return f"{body} The answer is {final.strip()}."


def build_prompt(question: str, shots: list[tuple[str, str]]) -> str:
    return "".join(f"Q: {q}\nA: {a}\n\n" for q, a in shots) + f"Q: {question}\nA:"


def make_shots(shots=None, n_shot: int = 8) -> list[tuple[str, str]]:
    if shots is None:
        if n_shot > len(WEI_SHOTS):
            raise HerdError(
                f"GSM8K: the built-in prompt has {len(WEI_SHOTS)} exemplars; pass shots=PATH for more"
            )
        return WEI_SHOTS[:n_shot]
    recs = load_gsm8k(shots, limit=n_shot)
    return [(r["question"], cot_from_solution(r["answer"])) for r in recs]


def gsm8k(
    model,
    tokenizer,
    path,
    n_shot: int = 8,
    limit: int | None = None,
    max_new_tokens: int = 256,
    shots=None,
    max_batch: int = 8,
    progress: bool = False,
) -> dict:
    """8-shot chain-of-thought exact match on a GSM8K file; per-example predictions included."""
    from herd.eval.scoring import generate

    recs = load_gsm8k(path, limit)
    sh = make_shots(shots, n_shot)
    prompts = [build_prompt(r["question"], sh) for r in recs]
    texts = generate(
        model,
        tokenizer,
        prompts,
        max_new_tokens=max_new_tokens,
        temperature=0.0,
        stop=STOP,
        max_batch=max_batch,
        progress=progress,
    )
    examples = []
    for r, t in zip(recs, texts):
        pred, gold = extract_answer(t[0]), gold_answer(r["answer"])
        examples.append(
            {
                "question": r["question"],
                "gold": gold,
                "pred": pred,
                "correct": pred == gold,
                "output": t[0],
                "text": r["question"] + " " + r["answer"],
            }
        )
    acc = sum(e["correct"] for e in examples) / max(len(examples), 1)
    return {"accuracy": acc, "n": len(examples), "n_shot": n_shot, "examples": examples}


__all__ = [
    "WEI_SHOTS",
    "load_gsm8k",
    "gold_answer",
    "extract_answer",
    "normalize_number",
    "cot_from_solution",
    "build_prompt",
    "make_shots",
    "gsm8k",
]
