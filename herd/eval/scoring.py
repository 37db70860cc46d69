"""Log-likelihood scoring and generation for evaluation (paper §5): the primitives every benchmark
uses. Multiple-choice tasks rank answers by log p(answer | prompt); perplexity and bits per byte
score held-out text; generative tasks (HumanEval, GSM8K) sample with `herd.inference.Generator`.

Conventions follow lm-evaluation-harness so that numbers are comparable and the lm-eval adapter is
a thin wrapper: the context is encoded with BOS in front; trailing spaces of a context move to the
continuation; the continuation's ids are the tail of encode(context + continuation) beyond
encode(context) (so a merge across the boundary is scored as the model would see it). Sequences
longer than the model's context keep their last tokens. Only the positions that are scored go
through the output projection, so a 128K vocabulary costs memory for those positions only.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F

from herd.errors import HerdError


def _max_len(model) -> int:
    return int(model.args.max_seq_len)


def _device(model):
    return model.tok_embeddings.weight.device


def encode_pair(tokenizer, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """(context ids with BOS, continuation ids) as lm-eval's `_encode_pair` does it."""
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces > 0:
        continuation = context[-n_spaces:] + continuation
        context = context[:-n_spaces]
    whole = tokenizer.encode(context + continuation, bos=True)
    ctx = tokenizer.encode(context, bos=True)
    return whole[: len(ctx)], whole[len(ctx) :]


@torch.no_grad()
def loglikelihood_tokens(
    model, pairs: Sequence[tuple[Sequence[int], Sequence[int]]], batch_size: int = 8
) -> list[tuple[float, bool]]:
    """For each (context ids, continuation ids): (sum of log p(continuation | context), whether the
    continuation is the greedy choice at every position)."""
    model.eval()
    L = _max_len(model)
    dev = _device(model)
    rows = []
    for i, (ctx, cont) in enumerate(pairs):
        if len(cont) == 0:
            raise HerdError(f"loglikelihood: request {i} has an empty continuation")
        if len(ctx) == 0:
            raise HerdError(f"loglikelihood: request {i} has an empty context (start it with BOS)")
        if len(cont) > L:
            raise HerdError(
                f"loglikelihood: request {i} has a {len(cont)}-token continuation, longer than the "
                f"model's context ({L})"
            )
        full = list(ctx) + list(cont)
        inp = full[-(L + 1) :][:-1]  # keep the last tokens that fit
        rows.append((i, inp, list(cont)))
    out: list[tuple[float, bool] | None] = [None] * len(rows)
    rows.sort(key=lambda r: -len(r[1]))  # similar lengths share a batch
    for b in range(0, len(rows), batch_size):
        batch = rows[b : b + batch_size]
        T = max(len(r[1]) for r in batch)
        x = torch.zeros(len(batch), T, dtype=torch.long, device=dev)
        for j, (_, inp, _) in enumerate(batch):
            x[j, : len(inp)] = torch.tensor(inp)  # right padding: causal attention never sees it
        h = model.forward_hidden(x)
        for j, (i, inp, cont) in enumerate(batch):
            n = len(cont)
            logits = model.output(h[j, len(inp) - n : len(inp)]).float()
            logp = F.log_softmax(logits, dim=-1)
            tgt = torch.tensor(cont, device=dev)
            ll = logp.gather(-1, tgt[:, None]).sum().item()
            out[i] = (ll, bool((logits.argmax(-1) == tgt).all()))
    return out  # type: ignore[return-value]


def loglikelihood(model, tokenizer, requests: Sequence[tuple[str, str]], batch_size: int = 8):
    """For each (context, continuation) text pair: (log p(continuation | BOS + context), is_greedy)."""
    return loglikelihood_tokens(model, [encode_pair(tokenizer, c, x) for c, x in requests], batch_size)


@torch.no_grad()
def token_logprobs(
    model, tokens: Sequence[int], max_len: int | None = None, chunk: int = 512
) -> torch.Tensor:
    """log p(tokens[j] | tokens[:j]) for j = 1..N-1, in disjoint prediction windows of at most
    `max_len` tokens, each with as much preceding context as fits (lm-eval's rolling windows)."""
    model.eval()
    L = min(max_len or _max_len(model), _max_len(model))
    dev = _device(model)
    full = torch.as_tensor(list(tokens), dtype=torch.long, device=dev)
    N = len(full)
    out = torch.empty(max(N - 1, 0), dtype=torch.float32)
    s = 1
    while s < N:
        e = min(s + L, N)
        a = max(0, e - 1 - L)
        h = model.forward_hidden(full[a : e - 1][None])[0]
        h = h[s - 1 - a :]
        tgt = full[s:e]
        for c in range(0, len(tgt), chunk):  # the vocab projection in chunks bounds memory
            logp = F.log_softmax(model.output(h[c : c + chunk]).float(), dim=-1)
            out[s - 1 + c : s - 1 + c + len(logp)] = logp.gather(-1, tgt[c : c + chunk, None])[:, 0].cpu()
        s = e
    return out


def rolling_loglikelihood(model, tokenizer, texts: Sequence[str], max_len: int | None = None,
                          progress: bool = False):
    """Whole-text log-likelihood after BOS: list of (logprob, n_tokens, n_bytes). progress: a tqdm bar
    over the texts' bytes (shown on a terminal only)."""
    from tqdm import tqdm

    res = []
    bar = tqdm(total=sum(len(t.encode("utf-8")) for t in texts if isinstance(t, str)), desc="perplexity",
               unit="B", unit_scale=True, disable=None if progress else True, dynamic_ncols=True)
    for t in texts:
        if not isinstance(t, str):
            raise HerdError(f"rolling_loglikelihood: expected text, got {type(t).__name__}")
        ids = tokenizer.encode(t, bos=True)
        lp = token_logprobs(model, ids, max_len)
        res.append((float(lp.double().sum()), len(ids) - 1, len(t.encode("utf-8"))))
        bar.update(res[-1][2])
    bar.close()
    return res


def perplexity(model, tokenizer, texts: Sequence[str], max_len: int | None = None,
               progress: bool = False) -> dict:
    """Token perplexity and bits per byte of held-out texts (all tokens after each BOS are scored)."""
    texts = [t for t in texts if t]
    if not texts:
        raise HerdError("perplexity: no non-empty texts to score")
    rows = rolling_loglikelihood(model, tokenizer, texts, max_len, progress=progress)
    nll = -sum(r[0] for r in rows)
    n_tok = sum(r[1] for r in rows)
    n_bytes = sum(r[2] for r in rows)
    return {
        "perplexity": math.exp(nll / n_tok),
        "nll_per_token": nll / n_tok,
        "bits_per_byte": nll / math.log(2) / n_bytes,
        "tokens": n_tok,
        "bytes": n_bytes,
        "texts": len(texts),
    }


def bits_per_byte(model, tokenizer, texts: Sequence[str], max_len: int | None = None) -> float:
    """Total NLL in bits over total UTF-8 bytes: comparable across tokenizers."""
    return perplexity(model, tokenizer, texts, max_len)["bits_per_byte"]


def cut_at_stop(text: str, stop: Sequence[str]) -> str:
    """Text up to the first of the stop strings."""
    cut = len(text)
    for s in stop:
        k = text.find(s)
        if k != -1:
            cut = min(cut, k)
    return text[:cut]


def generate(
    model,
    tokenizer,
    prompts: Sequence[str],
    max_new_tokens: int = 256,
    temperature: float = 0.0,
    top_p: float = 1.0,
    seed: int | None = 0,
    num_samples: int = 1,
    stop: Sequence[str] = ("\n\n",),
    max_batch: int = 8,
    progress: bool = False,
) -> list[list[str]]:
    """Sample `num_samples` completions per prompt with herd.inference; texts cut at `stop`.
    progress: a tqdm bar over generated tokens (upper bound: every row runs to max_new_tokens)."""
    from tqdm import tqdm

    from herd.inference import Generator

    L = _max_len(model)
    ids = []
    for p in prompts:
        t = tokenizer.encode(p, bos=True)
        if len(t) + max_new_tokens > L:  # keep the end of an over-long prompt (few-shot examples go first)
            t = [tokenizer.bos_id] + t[-(L - max_new_tokens - 1) :]
        ids.append(t)
    gen = Generator(model, tokenizer, max_batch=max_batch)
    bar = tqdm(
        total=len(ids) * num_samples * max_new_tokens, desc="generate", unit="tok", disable=not progress
    )
    outs = gen.generate(
        ids,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_p=top_p,
        seed=seed,
        num_samples=num_samples,
        on_token=lambda *_: bar.update(1),
    )
    bar.close()
    res: list[list[str]] = [[] for _ in prompts]
    for o in sorted(outs, key=lambda o: (o.prompt_index, o.sample_index)):
        res[o.prompt_index].append(cut_at_stop(tokenizer.decode(o.tokens), stop))
    return res


__all__ = [
    "encode_pair",
    "loglikelihood_tokens",
    "loglikelihood",
    "token_logprobs",
    "rolling_loglikelihood",
    "perplexity",
    "bits_per_byte",
    "generate",
    "cut_at_stop",
]
