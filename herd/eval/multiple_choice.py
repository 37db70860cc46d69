"""Multiple-choice evaluation by log-likelihood (paper §5, MMLU-style), with the robustness
variants of §5.1.2 ("Model robustness"): label sets, answer-order permutations and few-shot label bias.

Data: JSONL records {"question": str, "choices": [str, ...], "answer": index or label letter}
(optionally "subject"). Prompt (MMLU format):

    {question}
    A. {choice 0}
    B. {choice 1}
    ...
    Answer: A

Each few-shot example ends with its answer and a blank line; the test example ends with "Answer:".
The model's choice is the label with the highest log p(" " + label | prompt). With single-token
labels (all the label sets here with the Llama 3 tokenizer) one forward pass per question scores all
choices.

Robustness variants (the paper reports MMLU accuracy under each):
- label sets: "A." (default), "A)", "1.", symbols "$ & # @" and rare tokens "œ § з ü";
- answer order: choices permuted (e.g. every cyclic shift), the gold index follows its choice;
- few-shot label bias: every shot rearranged so that its answer is the same label (all "A", all
  "B", ...); a biased model drifts towards that label, which `bias_rate` measures.
"""

from __future__ import annotations

import os
from typing import Sequence

import torch
import torch.nn.functional as F

from herd.errors import HerdError, require_file
from herd.eval.report import iter_jsonl

# label set name -> (labels, how a choice line is written)
LABEL_SETS = {
    "A.": (list("ABCDEFGHIJ"), "{label}. {text}"),
    "A)": (list("ABCDEFGHIJ"), "{label}) {text}"),
    "1.": ([str(i) for i in range(1, 11)], "{label}. {text}"),
    "symbols": (["$", "&", "#", "@", "%", "*"], "{label} {text}"),
    "rare": (["œ", "§", "з", "ü", "ð", "ж"], "{label} {text}"),
}


def load_mc(path: str | os.PathLike, limit: int | None = None) -> list[dict]:
    """MMLU-style JSONL -> [{"question", "choices", "answer": int}]."""
    p = require_file(path, "multiple-choice file")
    out = []
    for ln, rec in iter_jsonl(p):
        out.append(_check_record(rec, f"{p}:{ln}"))
        if limit is not None and len(out) >= limit:
            break
    if not out:
        raise HerdError(f"{p}: no examples")
    return out


def _check_record(rec, where: str) -> dict:
    if not isinstance(rec, dict) or not {"question", "choices", "answer"} <= set(rec):
        raise HerdError(f"{where}: a multiple-choice record needs question, choices and answer")
    ch = rec["choices"]
    if not isinstance(ch, list) or len(ch) < 2 or not all(isinstance(c, str) for c in ch):
        raise HerdError(f"{where}: choices must be a list of at least 2 strings")
    a = rec["answer"]
    if isinstance(a, str):
        a = a.strip()
        if len(a) == 1 and a.upper() in "ABCDEFGHIJ":
            a = "ABCDEFGHIJ".index(a.upper())
        elif a.isdigit():
            a = int(a)
        else:
            raise HerdError(f"{where}: answer {rec['answer']!r} is neither an index nor a letter")
    if not isinstance(a, int) or not 0 <= a < len(ch):
        raise HerdError(f"{where}: answer {rec['answer']!r} out of range for {len(ch)} choices")
    return {**rec, "answer": a}


def permute(ex: dict, perm: Sequence[int]) -> dict:
    """The example with choices reordered: new choice j is old choice perm[j]."""
    if sorted(perm) != list(range(len(ex["choices"]))):
        raise HerdError(f"permutation {list(perm)} does not fit {len(ex['choices'])} choices")
    return {**ex, "choices": [ex["choices"][i] for i in perm], "answer": list(perm).index(ex["answer"])}


def move_answer_to(ex: dict, pos: int) -> dict:
    """Swap the gold choice into position `pos` (used to give every few-shot example the same label)."""
    n = len(ex["choices"])
    perm = list(range(n))
    perm[pos], perm[ex["answer"]] = perm[ex["answer"]], perm[pos]
    return permute(ex, perm)


def format_question(ex: dict, labels: str = "A.") -> str:
    if labels not in LABEL_SETS:
        raise HerdError(f"unknown label set {labels!r}; choose one of: {', '.join(LABEL_SETS)}")
    labs, line = LABEL_SETS[labels]
    if len(ex["choices"]) > len(labs):
        raise HerdError(
            f"label set {labels!r} has {len(labs)} labels; the question has {len(ex['choices'])} choices"
        )
    lines = [ex["question"].strip()] + [
        line.format(label=labs[i], text=c) for i, c in enumerate(ex["choices"])
    ]
    return "\n".join(lines) + "\nAnswer:"


def build_prompt(ex: dict, shots: Sequence[dict] = (), labels: str = "A.") -> str:
    labs = LABEL_SETS[labels][0] if labels in LABEL_SETS else None
    parts = [format_question(s, labels) + f" {labs[s['answer']]}\n\n" for s in shots]
    return "".join(parts) + format_question(ex, labels)


@torch.no_grad()
def _choice_logprobs(
    model, tokenizer, prompts: list[str], n_choices: list[int], labels: str, batch_size: int = 8
) -> list[list[float]]:
    """log p(" " + label_i | prompt) for each prompt and each of its labels."""
    from herd.eval.scoring import encode_pair, loglikelihood_tokens

    labs = LABEL_SETS[labels][0]
    out: list[list[float] | None] = [None] * len(prompts)
    single, multi = [], []
    for i, (p, n) in enumerate(zip(prompts, n_choices)):
        pairs = [encode_pair(tokenizer, p, " " + labs[j]) for j in range(n)]
        if all(len(c) == 1 for _, c in pairs) and all(ctx == pairs[0][0] for ctx, _ in pairs):
            single.append((i, pairs[0][0], [c[0] for _, c in pairs]))
        else:
            multi.append((i, pairs))
    # One forward pass per question: the labels differ only in the last token.
    L = model.args.max_seq_len
    dev = model.tok_embeddings.weight.device
    model.eval()
    single.sort(key=lambda r: -len(r[1]))
    for b in range(0, len(single), batch_size):
        batch = single[b : b + batch_size]
        ctxs = [r[1][-L:] for r in batch]
        T = max(len(c) for c in ctxs)
        x = torch.zeros(len(batch), T, dtype=torch.long, device=dev)
        for j, c in enumerate(ctxs):
            x[j, : len(c)] = torch.tensor(c)
        h = model.forward_hidden(x)
        last = torch.stack([h[j, len(c) - 1] for j, c in enumerate(ctxs)])
        logp = F.log_softmax(model.output(last).float(), dim=-1)
        for j, (i, _, toks) in enumerate(batch):
            out[i] = [float(logp[j, t]) for t in toks]
    for i, pairs in multi:
        out[i] = [r[0] for r in loglikelihood_tokens(model, pairs, batch_size)]
    return out  # type: ignore[return-value]


def multiple_choice(
    model,
    tokenizer,
    examples: Sequence[dict],
    n_shot: int = 0,
    shots: Sequence[dict] | None = None,
    labels: str = "A.",
    permutation: Sequence[int] | None = None,
    shot_bias: int | None = None,
    batch_size: int = 8,
    progress: bool = False,
) -> dict:
    """Accuracy by log-likelihood of the answer label. shots: the pool of few-shot examples (their
    first n_shot are used); permutation: reorder every test example's choices; shot_bias: give every
    shot its answer at this position (few-shot label bias)."""
    examples = [_check_record(e, f"example {i}") for i, e in enumerate(examples)]
    if not examples:
        raise HerdError("multiple_choice: no examples")
    shots = [_check_record(s, f"shot {i}") for i, s in enumerate(shots or [])][:n_shot]
    if len(shots) < n_shot:
        raise HerdError(f"multiple_choice: {n_shot} shots asked for, {len(shots)} available")
    if shot_bias is not None:
        shots = [move_answer_to(s, shot_bias) for s in shots]
    if permutation is not None:
        examples = [permute(e, permutation) for e in examples]
    prompts = [build_prompt(e, shots, labels) for e in examples]
    from tqdm import tqdm

    n_choices = [len(e["choices"]) for e in examples]
    lps = []
    step = max(1, 4 * batch_size)  # the unit of the progress bar
    with tqdm(total=len(prompts), desc="multiple choice", unit="q", dynamic_ncols=True,
              disable=None if progress else True) as bar:
        for i in range(0, len(prompts), step):
            lps += _choice_logprobs(
                model, tokenizer, prompts[i : i + step], n_choices[i : i + step], labels, batch_size
            )
            bar.update(len(prompts[i : i + step]))
    per = []
    for e, lp in zip(examples, lps):
        pred = max(range(len(lp)), key=lp.__getitem__)
        per.append(
            {
                "pred": pred,
                "answer": e["answer"],
                "correct": pred == e["answer"],
                "logprobs": lp,
                "text": e["question"] + " " + " ".join(e["choices"]),
            }
        )
    acc = sum(p["correct"] for p in per) / len(per)
    res = {"accuracy": acc, "n": len(per), "labels": labels, "n_shot": n_shot, "examples": per}
    if shot_bias is not None:
        res["shot_bias"] = shot_bias
        res["bias_rate"] = sum(p["pred"] == shot_bias for p in per) / len(per)
    if permutation is not None:
        res["permutation"] = list(permutation)
    return res


def robustness(
    model,
    tokenizer,
    examples: Sequence[dict],
    shots: Sequence[dict] | None = None,
    n_shot: int = 0,
    label_sets: Sequence[str] = ("A.", "A)", "1.", "symbols", "rare"),
    batch_size: int = 8,
) -> dict:
    """Accuracy under each label set, each cyclic shift of the answer order, and each few-shot label
    bias (when there are shots); the spread (max - min) of each family measures sensitivity."""
    examples = [_check_record(e, f"example {i}") for i, e in enumerate(examples)]
    n = min(len(e["choices"]) for e in examples)
    examples = [e for e in examples if len(e["choices"]) == n]  # permutations need a common size
    out: dict = {"n": len(examples), "label_sets": {}, "permutations": {}, "label_bias": {}}
    kw = dict(shots=shots, n_shot=n_shot, batch_size=batch_size)
    for ls in label_sets:
        out["label_sets"][ls] = multiple_choice(model, tokenizer, examples, labels=ls, **kw)["accuracy"]
    for s in range(n):
        perm = [(j + s) % n for j in range(n)]
        out["permutations"]["".join(map(str, perm))] = multiple_choice(
            model, tokenizer, examples, permutation=perm, **kw
        )["accuracy"]
    if shots and n_shot:
        for pos in range(n):
            r = multiple_choice(model, tokenizer, examples, shot_bias=pos, **kw)
            out["label_bias"][LABEL_SETS["A."][0][pos]] = {
                "accuracy": r["accuracy"],
                "bias_rate": r["bias_rate"],
            }
    for fam in ("label_sets", "permutations"):
        v = list(out[fam].values())
        out[f"{fam}_spread"] = max(v) - min(v) if v else 0.0
    return out


__all__ = [
    "LABEL_SETS",
    "load_mc",
    "permute",
    "move_answer_to",
    "format_question",
    "build_prompt",
    "multiple_choice",
    "robustness",
]
