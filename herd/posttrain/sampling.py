"""K samples per prompt for rejection sampling (paper §4.2.2) and greedy answers for task accuracy,
through herd.inference's `Generator`.

The paper shares the prompt's KV cache across the K samples of a prompt (PagedAttention, >2x
throughput); `Generator.generate(..., num_samples=K)` prefills each prompt once and copies its
cache rows to its K samples. Here its completions are regrouped per prompt, and the stop token
(`<|eot_id|>`, `<|eom_id|>`, `<|end_of_text|>`) is put back at the end of a completion that
produced one, so callers can tell a finished answer from one cut off at max_new_tokens.
"""

from __future__ import annotations


def sample_completions(model, tokenizer, prompts: list[list[int]], *, k: int = 1, max_new_tokens: int = 256,
                       temperature: float = 1.0, top_p: float = 1.0, top_k: int = 0, seed: int = 0,
                       max_batch: int = 256) -> list[list[list[int]]]:
    """For each prompt (ids ending with an open assistant header), `k` completions: ids, ending
    with the stop token when one was produced. temperature 0 = greedy."""
    from herd.inference import Generator

    rows = max(k, (max_batch // k) * k)  # whole prompts per batch: each prompt is prefilled once
    gen = Generator(model, tokenizer, max_batch=rows)
    outs = gen.generate(prompts, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
                        top_k=top_k, seed=seed, num_samples=k)
    stop_id = {"end_of_turn": tokenizer.eot_id, "end_of_message": tokenizer.eom_id,
               "end_of_text": tokenizer.eos_id}
    res: list[list[list[int]]] = [[[] for _ in range(k)] for _ in prompts]
    for c in outs:
        ids = list(c.tokens)
        if c.stop_reason in stop_id:
            ids.append(stop_id[c.stop_reason])
        res[c.prompt_index][c.sample_index] = ids
    return res


def strip_stop(ids: list[int], tokenizer) -> tuple[list[int], bool]:
    """(ids without the final stop token, whether the completion ended with one)."""
    if ids and ids[-1] in tokenizer.stop_tokens:
        return ids[:-1], True
    return ids, False


__all__ = ["sample_completions", "strip_stop"]
