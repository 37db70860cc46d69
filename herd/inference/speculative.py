"""Speculative decoding with a small draft model (paper §6 inference; Leviathan et al. 2023, Chen
et al. 2023, as gpt-fast does it).

Each round the draft model proposes k tokens one at a time; the target model scores all of them
in one forward pass of k+1 tokens; draft token i is accepted with probability min(1, p_i/q_i)
(p = target, q = draft distribution, both after temperature/top-k/top-p); at the first rejection
the token is redrawn from norm(max(0, p - q)); if all k are accepted one more token is drawn from
the target's next distribution. The output then has exactly the target's distribution. At
temperature 0 both distributions are one-hot on their argmax, which reduces to: accept while
the draft's token equals the target's argmax, then emit the target's argmax, so the output is
exactly the target's greedy output.

    from herd.inference.speculative import SpeculativeGenerator
    gen = SpeculativeGenerator(target, draft, tokenizer=None, k=4)
    gen.generate(prompts, max_new_tokens=..., temperature=..., ...)  # same API as Generator

The draft must share the target's tokenizer (same vocabulary size). Sequences run one at a time
(batch 1, the latency case speculative decoding is for); the K samples of a prompt share its
prefill (generation writes only cache slots after the prompt, so the prompt's K/V stay valid).
"""

from __future__ import annotations

import time
from typing import Callable, Sequence

import torch

from herd.errors import HerdError
from herd.inference.engine import Completion, GenerationStats, Generator
from herd.inference.sampling import filter_probs, sample_from


def accept_draft(draft_tokens: Sequence[int], q: torch.Tensor | None, p: torch.Tensor,
                 generator: torch.Generator | None = None) -> tuple[int, int]:
    """Speculative sampling's verification. draft_tokens: the k proposed ids; q [k, V]: the draft
    distributions they were drawn from (None = greedy); p [k+1, V]: the target distributions at
    the same positions (greedy: logits or any scores, argmax is used). Returns (n accepted, the
    next token): the output is draft_tokens[:n] + [next]."""
    k = len(draft_tokens)
    if q is None:  # greedy
        best = p.argmax(-1).tolist()
        n = 0
        while n < k and draft_tokens[n] == best[n]:
            n += 1
        return n, best[n]
    d = torch.tensor(draft_tokens, device=p.device)
    ar = torch.arange(k, device=p.device)
    pd, qd = p[ar, d], q[ar, d]
    u = torch.rand(k, generator=generator, device=p.device)
    ok = (u * qd <= pd).tolist()  # u < p/q without dividing by a q of 0
    n = 0
    while n < k and ok[n]:
        n += 1
    if n == k:
        return n, int(sample_from(p[k], generator))
    resid = (p[n] - q[n]).clamp_min(0)
    s = resid.sum()
    # p == q exactly would have accepted with probability 1; guard against rounding anyway
    return n, int(sample_from(resid / s if s > 0 else p[n], generator))


class SpeculativeGenerator:
    def __init__(self, target, draft, tokenizer=None, k: int = 4, max_seq_len: int | None = None):
        if draft.args.vocab_size != target.args.vocab_size:
            raise HerdError(f"the draft model's vocabulary ({draft.args.vocab_size}) differs from the "
                            f"target's ({target.args.vocab_size}); the draft must use the same tokenizer")
        if not isinstance(k, int) or k < 1:
            raise HerdError(f"speculative k (draft tokens per round) must be a positive integer, got {k!r}")
        max_seq_len = min(max_seq_len or target.args.max_seq_len, target.args.max_seq_len,
                          draft.args.max_seq_len)
        self.target = Generator(target, tokenizer, max_batch=1, max_seq_len=max_seq_len)
        self.draft = Generator(draft, tokenizer, max_batch=1, max_seq_len=max_seq_len)
        self.tokenizer, self.k, self.max_seq_len = tokenizer, k, max_seq_len
        self.stats = GenerationStats()

    @torch.inference_mode()
    def generate(self, prompts: Sequence[Sequence[int]], max_new_tokens: int = 128, temperature: float = 0.0,
                 top_p: float = 1.0, top_k: int = 0, seed: int | None = None,
                 stop_tokens: Sequence[int] | None = None, num_samples: int = 1,
                 on_token: Callable[[int, int, int], object] | None = None) -> list[Completion]:
        prompts = self.target._check(prompts, max_new_tokens, temperature, top_p, top_k, num_samples)
        if stop_tokens is None:
            stop_tokens = list(self.tokenizer.stop_tokens) if self.tokenizer is not None else []
        stops = set(int(t) for t in stop_tokens)
        gen = torch.Generator(device=self.target.device)
        gen.seed() if seed is None else gen.manual_seed(int(seed))
        self.stats = GenerationStats(extra={"rounds": 0, "drafted": 0, "accepted": 0})
        out = []
        for i, prompt in enumerate(prompts):
            P = len(prompt)
            n_max = min(max_new_tokens, self.max_seq_len - P)
            tc = self.target.cache_for(1, P + n_max + self.k + 1)
            dc = self.draft.cache_for(1, P + n_max + self.k + 1)
            x = torch.tensor([prompt], device=self.target.device)
            pos = torch.arange(P, device=x.device)[None]
            t0 = time.perf_counter()
            t_logits = self.target.forward(x, pos, tc, 0, P, None)[0]
            self.draft.forward(x, pos, dc, 0, P, None)
            self.stats.prefill_tokens += P
            self.stats.prefill_s += time.perf_counter() - t0
            for j in range(num_samples):
                t0 = time.perf_counter()
                toks, reason = self._one(P, n_max, t_logits, tc, dc, temperature, top_p, top_k, gen, stops,
                                         lambda t: on_token(i, j, t) if on_token is not None else None)
                self.stats.decode_s += time.perf_counter() - t0
                self.stats.decode_tokens += len(toks)
                out.append(Completion(tokens=toks, stop_reason=reason, prompt_index=i, sample_index=j,
                                      text=(self.tokenizer.decode(toks) if self.tokenizer is not None
                                            else None),
                                      prompt_tokens=P))
        return out

    def _probs(self, logits, temperature, top_p, top_k):
        return None if temperature == 0 else filter_probs(logits, temperature, top_p, top_k)

    def _one(self, P, n_max, t_logits, tc, dc, temperature, top_p, top_k, gen, stops, emit):
        dev = self.target.device
        p0 = self._probs(t_logits, temperature, top_p, top_k)
        cur = int(t_logits.argmax()) if p0 is None else int(sample_from(p0, gen))
        toks: list[int] = []
        slot = P  # cache slot (= position) of `cur`, not yet in either cache
        while True:
            if cur in stops:
                return toks, self.target.stop_reason(cur)
            toks.append(cur)
            emit(cur)
            if len(toks) >= n_max:
                return toks, "length"
            k = min(self.k, n_max - len(toks))  # never draft past the budget
            # the draft proposes k tokens, feeding cur, d1, ..., d_{k-1}
            drafts, qs, last = [], [], cur
            for s in range(k):
                lg = self.draft.forward(torch.tensor([[last]], device=dev),
                                        torch.tensor([[slot + s]], device=dev),
                                        dc, slot + s, slot + s + 1, None)[0]
                q = self._probs(lg, temperature, top_p, top_k)
                last = int(lg.argmax()) if q is None else int(sample_from(q, gen))
                drafts.append(last)
                qs.append(q)
            # the target scores cur, d1..dk in one pass: k+1 next-token distributions
            seq = torch.tensor([[cur] + drafts], device=dev)
            S = slot + k + 1
            ar = torch.arange(S, device=dev)
            mask = (ar[None, :] <= ar[slot:S, None])[None, None]
            pos = torch.arange(slot, S, device=dev)[None]
            lg = self.target.forward(seq, pos, tc, slot, S, mask, all_logits=True)[0]
            p = lg if temperature == 0 else filter_probs(lg, temperature, top_p, top_k)
            n, nxt = accept_draft(drafts, None if temperature == 0 else torch.stack(qs), p, gen)
            self.stats.extra["rounds"] += 1
            self.stats.extra["drafted"] += k
            self.stats.extra["accepted"] += n
            if n == k:  # the draft has not seen d_k yet: add it to its cache
                self.draft.forward(torch.tensor([[drafts[-1]]], device=dev),
                                   torch.tensor([[slot + k]], device=dev), dc, slot + k, slot + k + 1, None)
            for d in drafts[:n]:
                if d in stops:
                    return toks, self.target.stop_reason(d)
                toks.append(d)
                emit(d)
                if len(toks) >= n_max:
                    return toks, "length"
            slot += n + 1
            cur = nxt


__all__ = ["SpeculativeGenerator", "accept_draft"]
