"""Rejection sampling (paper §4.2.2): K samples per prompt from the current policy, each scored,
the best kept as SFT data.

The K samples of a prompt are decoded in one batch that shares the prompt's KV cache (see
herd.posttrain.sampling). Scorers:
* "math": exact match of the final answer ("#### N") with the record's "answer" (§4.3.3).
* "code": the completion's code (the first ```python block, or the whole text) followed by the
  record's "tests" runs in herd.eval.sandbox; score 1 if it exits cleanly (§4.3.1).
* a reward-model directory (written by `herd rm`): the RM's scalar reward (§4.2.2).

Outputs in OUT/: sft.jsonl (prompt + best response per prompt; with a verifier only prompts
whose best sample passes), pairs.jsonl (best vs worst where they differ: preference data for DPO),
samples.jsonl (every sample and its score), stats.json (score distribution, mean score of one
sample, mean best-of-K score, and their difference: the best-of-K gain). Prompts are processed in
chunks appended to samples.jsonl, so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import json
import re
import statistics
import sys
from dataclasses import asdict
from pathlib import Path

from herd.errors import HerdError
from herd.posttrain.config import RSConfig
from herd.posttrain.data import BadRecord, parse_prompt, read_jsonl, write_jsonl


def _parse(scorer: str):
    def parse(obj):
        msgs = parse_prompt(obj)
        if msgs[-1]["role"] == "assistant":
            raise BadRecord("the prompt ends with an assistant message; nothing to sample")
        rec = {"messages": msgs}
        if scorer == "math":
            if "answer" not in obj:
                raise BadRecord("the math verifier needs 'answer'")
            rec["answer"] = obj["answer"]
        elif scorer == "code":
            if not isinstance(obj.get("tests"), str):
                raise BadRecord("the code verifier needs 'tests' (Python source with asserts)")
            rec["tests"] = obj["tests"]
        return rec
    return parse


_CODE = re.compile(r"```(?:python|py)?\s*\n(.*?)```", re.S)


def extract_code(text: str) -> str:
    m = _CODE.search(text)
    return m.group(1) if m else text


def make_scorer(cfg: RSConfig):
    """score(record, [texts]) -> [float]."""
    if cfg.scorer == "math":
        from herd.posttrain.tasks import is_correct

        return lambda rec, texts: [float(is_correct(t, rec["answer"])) for t in texts]
    if cfg.scorer == "code":
        try:
            from herd.eval.sandbox import run_code
        except ImportError:
            raise HerdError("the code verifier needs herd.eval.sandbox (the eval stage), which is "
                            "not installed")

        def score(rec, texts):
            return [float(run_code(extract_code(t) + "\n\n" + rec["tests"],
                                   timeout_s=cfg.code_timeout).passed)
                    for t in texts]
        return score
    if Path(cfg.scorer).is_dir():
        from herd.posttrain.common import cfg_device
        from herd.posttrain.reward import load_reward_model, score_responses

        device, dtype = cfg_device(cfg)
        rm, rm_tok = load_reward_model(cfg.scorer, device=device, dtype=dtype)
        return lambda rec, texts: score_responses(rm, rm_tok, rec["messages"], texts)
    raise HerdError(f"scorer {cfg.scorer!r}: use 'math', 'code' or a reward-model directory")


def summarize(records: list[dict], verifier: bool) -> dict:
    """Score distribution and best-of-K gain over sampled records."""
    scores = [s for r in records for s in r["scores"]]
    best = [max(r["scores"]) for r in records]
    one = statistics.fmean(scores)
    stats = {"prompts": len(records), "samples": len(scores), "mean_score": one,
             "best_of_k": statistics.fmean(best),
             "gain": statistics.fmean(best) - one, "min": min(scores), "max": max(scores),
             "median": statistics.median(scores)}
    if len(scores) > 1:
        stats["stdev"] = statistics.stdev(scores)
    q = statistics.quantiles(scores, n=4) if len(scores) > 1 else [scores[0]] * 3
    stats["quartiles"] = q
    if verifier:  # pass rate of one sample vs pass@K
        stats["pass@1"] = one
        stats["pass@k"] = statistics.fmean(1.0 if b > 0 else 0.0 for b in best)
        hist = {}
        for r in records:
            c = int(sum(r["scores"]))
            hist[c] = hist.get(c, 0) + 1
        stats["correct_per_prompt"] = {str(c): hist[c] for c in sorted(hist)}
    return stats


def build_outputs(records: list[dict], verifier: bool) -> tuple[list[dict], list[dict]]:
    """SFT rows (prompt + the best sample; with a verifier only when it passes) and preference
    pairs (best vs worst sample, where their scores differ). Ties go to the earlier sample."""
    sft_rows, pair_rows = [], []
    for r in records:
        sc = r["scores"]
        b = max(range(len(sc)), key=lambda j: sc[j])
        w = min(range(len(sc)), key=lambda j: sc[j])
        extra = {k: r[k] for k in ("answer", "tests") if k in r}
        if not verifier or sc[b] > 0:
            sft_rows.append({"messages": r["messages"] + [{"role": "assistant", "content": r["samples"][b]}],
                             "score": sc[b], **extra})
        if sc[b] > sc[w]:
            pair_rows.append({"messages": r["messages"], "chosen": r["samples"][b],
                              "rejected": r["samples"][w],
                              **extra})
    return sft_rows, pair_rows


def rejection_sample(cfg: RSConfig) -> dict:
    from tqdm import tqdm

    from herd.posttrain.common import cfg_device, check_positive, load_policy
    from herd.posttrain.data import encode_prompt
    from herd.posttrain.sampling import sample_completions, strip_stop

    for name in ("model", "prompts", "out"):
        if not getattr(cfg, name):
            raise HerdError(f"rejection-sample: '{name}' is required")
    check_positive("k", cfg.k, integer=True)
    check_positive("max_new_tokens", cfg.max_new_tokens, integer=True)
    check_positive("chunk", cfg.chunk, integer=True)
    device, dtype = cfg_device(cfg)
    verifier = cfg.scorer in ("math", "code")
    recs = read_jsonl(cfg.prompts, _parse(cfg.scorer), cfg.on_bad_line, what="prompt record")
    score = make_scorer(cfg)
    # sampling: weights in dtype
    model, tok = load_policy(cfg.model, cfg.tokenizer, device=device, dtype=dtype)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    partial = out / "samples.partial.jsonl"
    done: dict[int, dict] = {}
    if cfg.resume and partial.is_file():
        for line in partial.read_text().splitlines():
            try:
                r = json.loads(line)
                done[int(r["index"])] = r
            except (ValueError, KeyError):
                break  # a line cut by an interruption: sample it again
    elif partial.exists():
        partial.unlink()
    todo = [i for i in range(len(recs)) if i not in done]
    if done:
        print(f"herd: resuming rejection sampling: {len(done)} of {len(recs)} prompts done", file=sys.stderr)
    bar = tqdm(total=len(recs), initial=len(done), desc="rejection-sample", disable=cfg.quiet,
               file=sys.stderr)
    with open(partial, "a", encoding="utf-8") as f:
        for c0 in range(0, len(todo), cfg.chunk):
            idx = todo[c0:c0 + cfg.chunk]
            prompts = [encode_prompt(tok, recs[i]["messages"]) for i in idx]
            outs = sample_completions(model, tok, prompts, k=cfg.k, max_new_tokens=cfg.max_new_tokens,
                                      temperature=cfg.temperature, top_p=cfg.top_p, top_k=cfg.top_k,
                                      seed=cfg.seed * 1_000_003 + idx[0], max_batch=cfg.max_batch)
            for i, samples in zip(idx, outs):
                texts, finished = [], []
                for s in samples:
                    ids, stopped = strip_stop(s, tok)
                    texts.append(tok.decode(ids))
                    finished.append(stopped)
                sc = score(recs[i], texts)
                # a sample cut off at max_new_tokens never finished its answer: it scores 0 with a
                # verifier and below every finished sample with a reward model
                floor = 0.0 if verifier else min(sc) - 1.0
                sc = [s if fin else floor for s, fin in zip(sc, finished)]
                r = {"index": i, **recs[i], "samples": texts, "scores": sc}
                done[i] = r
                f.write(json.dumps(r, ensure_ascii=False) + "\n")
            f.flush()
            bar.update(len(idx))
    bar.close()
    records = [done[i] for i in range(len(recs))]
    sft_rows, pair_rows = build_outputs(records, verifier)
    stats = summarize(records, verifier)
    stats.update(kept_for_sft=len(sft_rows), pairs=len(pair_rows), k=cfg.k, scorer=cfg.scorer)
    write_jsonl(out / "sft.jsonl", sft_rows)
    write_jsonl(out / "pairs.jsonl", pair_rows)
    write_jsonl(out / "samples.jsonl", (dict(r) for r in records))
    (out / "stats.json").write_text(json.dumps({"stats": stats, "config": asdict(cfg)}, indent=2) + "\n")
    partial.unlink()
    return stats


__all__ = ["RSConfig", "rejection_sample", "build_outputs", "make_scorer", "summarize", "extract_code"]
