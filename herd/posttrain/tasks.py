"""A verifiable task for post-training (paper §4.2.2/§4.3.3: math answers checked against the
reference): arithmetic word problems with exact answers, GSM8K when given its JSONL, the
final-answer verifier, and held-out accuracy.

Problems are one-step additions and subtractions in short templates ("Mia has 23 apples. She buys
45 more. How many apples does Mia have now?"); the solution is the equation then the answer in
GSM8K's form: "23 + 45 = 68\\n#### 68". Train and test come from separate seeded streams and the
test set holds no question of the train set. The verifier reads the number after the last "####"
and compares it exactly with the reference.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from pathlib import Path

from herd.errors import HerdError

NAMES = ["Mia", "Tom", "Ana", "Leo", "Sam", "Eva", "Ben", "Zoe", "Max", "Ivy", "Kai", "Lea"]
ITEMS = ["apples", "books", "coins", "cards", "shells", "stamps", "pens", "eggs", "rocks", "beads"]
ADD = [("{n} has {a} {x}. {p} buys {b} more. How many {x} does {n} have now?", "{a} + {b} = {c}"),
       ("{n} had {a} {x} and found {b} more. How many {x} does {n} have?", "{a} + {b} = {c}")]
SUB = [("{n} has {a} {x}. {p} gives away {b}. How many {x} does {n} have left?", "{a} - {b} = {c}"),
       ("{n} had {a} {x} and lost {b}. How many {x} does {n} have?", "{a} - {b} = {c}")]
PRONOUN = {"Mia": "She", "Ana": "She", "Eva": "She", "Zoe": "She", "Ivy": "She", "Lea": "She"}

_ANSWER = re.compile(r"####\s*(-?[\d,]*\.?\d+)")


@dataclass
class Problem:
    question: str
    answer: int | float
    solution: str

    def messages(self, with_solution: bool = True) -> list[dict]:
        m = [{"role": "user", "content": self.question}]
        if with_solution:
            m.append({"role": "assistant", "content": self.solution})
        return m

    def chat_record(self) -> dict:
        return {"messages": self.messages(), "answer": self.answer}

    def prompt_record(self) -> dict:
        return {"prompt": self.question, "answer": self.answer}


def make_problem(rng: random.Random, max_value: int = 99) -> Problem:
    n = rng.choice(NAMES)
    x = rng.choice(ITEMS)
    a, b = rng.randint(1, max_value), rng.randint(1, max_value)
    if rng.random() < 0.5:
        q, s = rng.choice(ADD)
        c = a + b
    else:
        a, b = max(a, b), min(a, b)
        q, s = rng.choice(SUB)
        c = a - b
    fill = dict(n=n, p=PRONOUN.get(n, "He"), a=a, b=b, c=c, x=x)
    return Problem(q.format(**fill), c, s.format(**fill) + f"\n#### {c}")


def arithmetic_task(n: int, seed: int, max_value: int = 99, exclude: set[str] | None = None) -> list[Problem]:
    """`n` distinct problems from a stream seeded by `seed`, none of whose question is in `exclude`."""
    if not isinstance(n, int) or n < 0:
        raise HerdError(f"number of problems must be a non-negative integer, got {n!r}")
    rng = random.Random(seed)
    seen = set(exclude or ())
    out = []
    tries = 0
    while len(out) < n:
        p = make_problem(rng, max_value)
        tries += 1
        if p.question in seen:
            if tries > 50 * (n + 100):
                raise HerdError(f"cannot make {n} distinct problems with max_value={max_value}; raise it")
            continue
        seen.add(p.question)
        out.append(p)
    return out


def split_task(train: int, test: int, seed: int, max_value: int = 99) -> tuple[list[Problem], list[Problem]]:
    """Train and test sets from separate streams; no test question appears in train."""
    tr = arithmetic_task(train, seed, max_value)
    te = arithmetic_task(test, seed + 1_000_003, max_value, exclude={p.question for p in tr})
    return tr, te


def write_task(out, train: int, test: int, seed: int = 0, max_value: int = 99) -> dict:
    """Write OUT/train.jsonl and OUT/test.jsonl (chat records with "answer") and
    OUT/train_prompts.jsonl, OUT/test_prompts.jsonl (prompts with "answer", for rejection sampling)."""
    from herd.posttrain.data import write_jsonl

    tr, te = split_task(train, test, seed, max_value)
    o = Path(out)
    o.mkdir(parents=True, exist_ok=True)
    files = {"train": o / "train.jsonl", "test": o / "test.jsonl", "train_prompts": o / "train_prompts.jsonl",
             "test_prompts": o / "test_prompts.jsonl"}
    write_jsonl(files["train"], (p.chat_record() for p in tr))
    write_jsonl(files["test"], (p.chat_record() for p in te))
    write_jsonl(files["train_prompts"], (p.prompt_record() for p in tr))
    write_jsonl(files["test_prompts"], (p.prompt_record() for p in te))
    return {k: str(v) for k, v in files.items()}


# ---- answers ------------------------------------------------------------------------------------
def parse_number(s: str) -> int | float | None:
    s = s.replace(",", "").strip()
    try:
        v = float(s)
    except ValueError:
        return None
    return int(v) if v.is_integer() else v


def extract_answer(text: str) -> int | float | None:
    """The number after the last '####' (GSM8K's convention), or None."""
    m = _ANSWER.findall(text)
    return parse_number(m[-1]) if m else None


def is_correct(text: str, answer) -> bool:
    got = extract_answer(text)
    ref = parse_number(str(answer)) if not isinstance(answer, (int, float)) else answer
    return got is not None and ref is not None and abs(got - ref) < 1e-9


def load_gsm8k(path) -> list[Problem]:
    """GSM8K's JSONL ({"question", "answer": "...#### N"}) as Problems; the calculator
    annotations <<...>> are dropped from the solution."""
    from herd.posttrain.data import BadRecord, read_jsonl

    def parse(obj):
        q, a = obj.get("question"), obj.get("answer")
        if not isinstance(q, str) or not isinstance(a, str):
            raise BadRecord("needs 'question' and 'answer' strings")
        ans = extract_answer(a)
        if ans is None:
            raise BadRecord("answer has no '#### N' final answer")
        return Problem(q, ans, re.sub(r"<<[^>]*>>", "", a))

    return read_jsonl(path, parse, "skip", what="GSM8K record")


def load_problems(path) -> list[Problem]:
    """Problems from a prompts or chat JSONL with an "answer" field (what write_task writes)."""
    from herd.posttrain.data import BadRecord, parse_prompt, read_jsonl

    def parse(obj):
        if "answer" not in obj:
            raise BadRecord("needs 'answer'")
        msgs = parse_prompt(obj)
        user = [m for m in msgs if m["role"] != "assistant"]
        sol = msgs[-1]["content"] if msgs[-1]["role"] == "assistant" else ""
        ans = obj["answer"] if isinstance(obj["answer"], (int, float)) else parse_number(str(obj["answer"]))
        if ans is None:
            raise BadRecord(f"answer {obj['answer']!r} is not a number")
        return Problem(user[-1]["content"], ans, sol)

    return read_jsonl(path, parse, "skip", what="problem")


def task_accuracy(model, tokenizer, problems: list[Problem], max_new_tokens: int = 32, *,
                  return_outputs: bool = False):
    """Fraction of `problems` whose greedy answer's final number equals the reference."""
    from herd.posttrain.data import encode_prompt
    from herd.posttrain.sampling import sample_completions, strip_stop

    if not problems:
        raise HerdError("task_accuracy: no problems")
    prompts = [encode_prompt(tokenizer, p.messages(with_solution=False)) for p in problems]
    outs = sample_completions(model, tokenizer, prompts, k=1, max_new_tokens=max_new_tokens, temperature=0.0)
    texts = [tokenizer.decode(strip_stop(o[0], tokenizer)[0]) for o in outs]
    ok = [is_correct(t, p.answer) for t, p in zip(texts, problems)]
    acc = sum(ok) / len(ok)
    return (acc, texts) if return_outputs else acc


__all__ = ["Problem", "arithmetic_task", "split_task", "write_task", "extract_answer", "is_correct",
           "load_gsm8k", "load_problems", "task_accuracy", "parse_number"]
