"""K samples per prompt for rejection sampling (paper §4.2.2) and greedy answers for task accuracy.

The paper shares the prompt's KV cache across the K samples of a prompt (PagedAttention, >2x
throughput). herd.inference's `Generator` does that when it is installed; otherwise this file's
`_shared_prefix_sample` does the same with the model's static KV cache: prompts of equal length
are prefilled once as one batch, the cache rows are copied K times, and the K x G rows decode
together. Decoding stops per row at a stop token (`<|eot_id|>`, `<|eom_id|>`, `<|end_of_text|>`).
"""

from __future__ import annotations

from collections import defaultdict

import torch

from herd.errors import HerdError


def _sample_next(logits, temperature: float, top_p: float, top_k: int, generator):
    try:
        from herd.inference.sampling import sample
    except ImportError:  # herd.inference not installed: plain temperature / top-k / top-p sampling
        sample = None
    if sample is not None:
        return sample(logits, temperature, top_p, top_k, generator)
    if temperature == 0:
        return logits.argmax(-1)
    logits = logits.float() / temperature
    if top_k:
        kth = torch.topk(logits, min(top_k, logits.shape[-1]), dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits, -1)
    if top_p < 1.0:
        sp, idx = torch.sort(probs, -1, descending=True)
        sp = sp.masked_fill(torch.cumsum(sp, -1) - sp >= top_p, 0.0)
        probs = torch.zeros_like(probs).scatter_(-1, idx, sp)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


@torch.no_grad()
def _shared_prefix_sample(model, prompts, k, max_new_tokens, temperature, top_p, top_k, seed, stop_ids,
                          max_batch: int = 256):
    from herd.model.transformer import KVCache

    model.eval()
    gen = torch.Generator().manual_seed(seed)
    dev = next(model.parameters()).device
    out: list[list[list[int]]] = [[] for _ in prompts]
    by_len = defaultdict(list)
    for i, p in enumerate(prompts):
        by_len[len(p)].append(i)
    stop = torch.tensor(sorted(stop_ids), device=dev)
    group = max(1, max_batch // k)
    for n, idx in sorted(by_len.items()):
        if n + max_new_tokens > model.args.max_seq_len:
            raise HerdError(f"prompt of {n} tokens + {max_new_tokens} new ones exceeds the model's max_seq_len "
                            f"({model.args.max_seq_len})")
        for g0 in range(0, len(idx), group):
            ids = idx[g0:g0 + group]
            G = len(ids)
            cache = KVCache(model.args, G * k, n + max_new_tokens, dtype=next(model.parameters()).dtype, device=dev)
            toks = torch.tensor([prompts[i] for i in ids], device=dev)
            logits = model(toks, cache=cache, cache_pos=0, last_only=True)[:, -1]
            # the prompt was computed once per prompt; its K/V now serve all K samples
            rows = torch.arange(G, device=dev).repeat_interleave(k)
            cache.k[:, : G * k] = cache.k[:, rows]
            cache.v[:, : G * k] = cache.v[:, rows]
            logits = logits[rows]
            new = torch.empty(G * k, max_new_tokens, dtype=torch.long, device=dev)
            done = torch.zeros(G * k, dtype=torch.bool, device=dev)
            lengths = torch.full((G * k,), max_new_tokens, dtype=torch.long, device=dev)
            for t in range(max_new_tokens):
                nxt = _sample_next(logits, temperature, top_p, top_k, gen)
                new[:, t] = nxt
                just = ~done & torch.isin(nxt, stop)
                lengths[just] = t + 1
                done |= just
                if bool(done.all()) or t == max_new_tokens - 1:
                    break
                logits = model(nxt[:, None], cache=cache, cache_pos=n + t)[:, -1]
            for r in range(G * k):
                out[ids[r // k]].append(new[r, : int(lengths[r])].tolist())
    return out


def sample_completions(model, tokenizer, prompts: list[list[int]], *, k: int = 1, max_new_tokens: int = 256,
                       temperature: float = 1.0, top_p: float = 1.0, top_k: int = 0, seed: int = 0,
                       max_batch: int = 256) -> list[list[list[int]]]:
    """For each prompt (ids ending with an open assistant header), `k` completions (ids, the stop
    token included when one was produced). temperature 0 = greedy."""
    stop_ids = set(tokenizer.stop_tokens)
    gen_cls = _generator_class()
    if gen_cls is not None:
        g = gen_cls(model, tokenizer)
        res = g.generate(prompts, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
                         top_k=top_k, seed=seed, num_samples=k)
        return _from_completions(res, len(prompts), k)
    return _shared_prefix_sample(model, prompts, k, max_new_tokens, temperature, top_p, top_k, seed, stop_ids,
                                 max_batch)


def _generator_class():
    try:
        from herd.inference import Generator  # type: ignore
    except ImportError:
        return None
    return Generator


def _from_completions(res, n_prompts: int, k: int) -> list[list[list[int]]]:
    """Normalise herd.inference's results to [prompt][sample] -> ids."""
    items = list(res)
    if len(items) == n_prompts and all(isinstance(getattr(c, "tokens", None), list) for c in items):
        toks = [c.tokens for c in items]
        if k == 1 and toks and toks[0] and isinstance(toks[0][0], int):
            return [[t] for t in toks]
        return toks
    if len(items) == n_prompts * k:
        flat = [c.tokens for c in items]
        return [flat[i * k:(i + 1) * k] for i in range(n_prompts)]
    raise HerdError("herd.inference.Generator returned results in an unexpected shape")


def strip_stop(ids: list[int], tokenizer) -> tuple[list[int], bool]:
    """(ids without the final stop token, whether the completion ended with one)."""
    if ids and ids[-1] in tokenizer.stop_tokens:
        return ids[:-1], True
    return ids, False


__all__ = ["sample_completions", "strip_stop"]
