"""Continuous batching (paper §6 inference, as vLLM/TGI serve): one engine loop, a static KV cache
of `max_batch` rows (slots), requests admitted between decode steps.

    engine = BatchEngine(model, tokenizer, max_batch=8, max_seq_len=2048)
    engine.start()                                  # the loop runs in a daemon thread
    handle = engine.submit(prompt_ids, SamplingParams(max_tokens=64, temperature=0.7, seed=1), n=2,
                           sink=lambda ev: ...)     # called from the engine thread
    engine.cancel(handle)                           # a client went away: its slots are freed
    engine.close()

Every sequence owns one row of the cache and its own position: a decode step feeds one token per
running row at that row's own position (K/V written per row, attention over each row's own slots
under a mask), samples each row with its own temperature/top-p/top-k/penalties and its own seeded
`torch.Generator`, and sends each new token to the request's sink as an `Event`. A sequence that
stops (a stop token: <|eot_id|>, <|eom_id|>, <|end_of_text|>; its max_tokens; the context; a
cancel) frees its row at once, and queued requests are admitted into free rows before the next
step. Prompts are prefilled in chunks of `prefill_chunk` tokens between decode steps, so a long
prompt does not stall the streams already running.

Shared-prefix KV reuse: each row remembers which tokens its cache slots hold, also after its
request ended. A new prompt takes the free row whose cache shares the longest prefix with it, and
may copy a longer shared prefix from any other row (running or not), so only the rest is
prefilled: a chat's next turn, the same system prompt, or the same prompt sent many times (the
paper's shared prompt KV for rejection sampling). The `n` choices of one request are prefilled
once and the prompt's cache is copied to their rows.

The model math is the model's own: prefill is `Transformer.forward` with the cache (the last
position only, as `Generator`), a decode step is `herd.inference.decode.decode_step` over the
Generator's packed plan, with per-row cache writes. A request alone in the engine runs the same
ops as `Generator.generate` (greedy output equal to `herd generate`; tests/serve).
"""

from __future__ import annotations

import collections
import itertools
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from herd.errors import HerdError
from herd.inference.decode import decode_step
from herd.inference.engine import Generator
from herd.inference.sampling import filter_probs, sample_from
from herd.model.transformer import LayerKV


@dataclass
class SamplingParams:
    max_tokens: int = 16
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logit_bias: dict[int, float] = field(default_factory=dict)
    logprobs: int | None = None  # None: none; k >= 0: the chosen token's logprob and the top k
    stop_token_ids: tuple[int, ...] | None = None  # None: the tokenizer's stop tokens


@dataclass
class Event:
    """What the engine tells a request's sink. kind: "token" (token, logprob, top), "done"
    (finish_reason: "stop" | "length" | "cancelled", stop_token), "error" (message)."""

    kind: str
    index: int = 0  # the choice
    token: int = -1
    logprob: float | None = None
    top: list[tuple[int, float]] | None = None
    finish_reason: str | None = None
    stop_token: int | None = None
    message: str = ""


class _RowKV(LayerKV):
    """A layer's cache where each row writes its new token at its own slot (a [B] tensor)."""

    __slots__ = ()

    def update(self, pos, k, v):
        if (
            isinstance(pos, torch.Tensor)
            and pos.dim() == 1
            and k.shape[2] == 1
            and pos.shape[0] == k.shape[0] > 1
        ):
            B = k.shape[0]
            ck, cv = self.k[:B], self.v[:B]
            rows = torch.arange(B, device=k.device)
            ck[rows, :, pos] = k[:, :, 0]
            cv[rows, :, pos] = v[:, :, 0]
            return ck, cv
        if isinstance(pos, torch.Tensor) and pos.dim() == 1 and pos.shape[0] == 1:
            pos = int(pos[0])
        return super().update(pos, k, v)


class _CacheView:
    """Rows [r0, r1) of the engine's cache, in the interface the model's forward and decode_step use."""

    def __init__(self, k, v, row_kv=False):
        self.k, self.v, self._cls = k, v, _RowKV if row_kv else LayerKV

    @property
    def batch(self):
        return self.k.shape[1]

    @property
    def max_len(self):
        return self.k.shape[3]

    def layer(self, i):
        return self._cls(self.k[i], self.v[i])


class _Seq:
    """One choice of a request, living in one cache row."""

    def __init__(self, req, index):
        self.req, self.index = req, index
        self.row: int | None = None
        self.pos = 0  # tokens whose K/V are in the row
        self.out: list[int] = []
        self.next_token: int | None = None  # sampled, not yet fed
        self.done = False
        p = req.params
        self.gen = torch.Generator(device="cpu")
        if p.seed is None:
            self.gen.seed()
        else:
            self.gen.manual_seed((int(p.seed) + index) % (2**63))
        self.counts: dict[int, int] = collections.Counter()


class _Request:
    _ids = itertools.count()

    def __init__(self, prompt, params, n, sink):
        self.id = next(self._ids)
        self.prompt = prompt
        self.params = params
        self.sink = sink
        self.seqs = [_Seq(self, i) for i in range(n)]
        self.prefilled = 0  # prompt tokens in the leader's row
        self.reused = 0  # prompt tokens taken from the prefix cache
        self.cancelled = False
        self.started = False
        self.t_submit = time.perf_counter()


class BatchEngine:
    def __init__(
        self,
        model,
        tokenizer=None,
        max_batch: int = 8,
        max_seq_len: int | None = None,
        prefill_chunk: int = 512,
        max_queue: int = 256,
        pack: bool | None = None,
    ):
        if not isinstance(max_batch, int) or max_batch < 1:
            raise HerdError(f"max_batch must be a positive integer, got {max_batch!r}")
        self.gen = Generator(model, tokenizer, max_batch=1, max_seq_len=max_seq_len, pack=pack)
        self.model = self.gen.model
        self.args = self.model.args
        self.tokenizer = tokenizer
        self.max_batch = max_batch
        self.max_seq_len = self.gen.max_seq_len
        self.prefill_chunk = max(1, int(prefill_chunk))
        self.max_queue = max_queue
        self.device, self.dtype = self.gen.device, self.gen.dtype
        self.stop_ids = frozenset(tokenizer.stop_tokens) if tokenizer is not None else frozenset()
        # a vocabulary padded beyond the tokenizer's ids: those ids are never sampled (they decode to nothing)
        n = tokenizer.n_words if tokenizer is not None else self.args.vocab_size
        self.n_ids = min(n, self.args.vocab_size)
        # one extra slot per row: rows that are not decoding write their dummy K/V there
        self.scratch = self.max_seq_len
        shape = (
            self.args.n_layers,
            max_batch,
            self.args.n_kv_heads,
            self.max_seq_len + 1,
            self.args.head_dim,
        )
        self.k = torch.zeros(shape, dtype=self.dtype, device=self.device)
        self.v = torch.zeros(shape, dtype=self.dtype, device=self.device)
        self.cached: list[list[int]] = [[] for _ in range(max_batch)]  # tokens held by each row's slots
        self.rows: list[_Seq | None] = [None] * max_batch
        self.queue: collections.deque[_Request] = collections.deque()
        self.prefilling: collections.deque[_Request] = collections.deque()
        self._cancels: list[_Request] = []
        self._cv = threading.Condition()
        self._thread: threading.Thread | None = None
        self._stop = False
        self.fcis = self.model.rope_factors(None, self.max_seq_len)[0]
        # counters for /metrics and the benchmark
        self.stats = {
            "prompt_tokens": 0,
            "reused_prompt_tokens": 0,
            "generated_tokens": 0,
            "decode_steps": 0,
            "prefill_s": 0.0,
            "decode_s": 0.0,
            "requests": 0,
        }
        self._tput: collections.deque = collections.deque()  # (time, tokens) of recent decode steps

    # ---- public API (any thread) -------------------------------------------------------------------
    def start(self) -> BatchEngine:
        if self._thread is None:
            self.gen.plan()  # pack the weights before the first request
            self._thread = threading.Thread(target=self._run, name="herd-engine", daemon=True)
            self._thread.start()
        return self

    def close(self, timeout: float = 30.0) -> None:
        with self._cv:
            self._stop = True
            self._cv.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def submit(
        self,
        prompt: list[int],
        params: SamplingParams,
        n: int = 1,
        sink: Callable[[Event], object] | None = None,
    ) -> _Request:
        """Queue a request; `sink(Event)` is called from the engine thread for its tokens and its end.
        Raises HerdError (the caller's mistake) or OverflowError (the queue is full)."""
        if not prompt:
            raise HerdError("the prompt is empty")
        if len(prompt) >= self.max_seq_len:
            raise HerdError(
                f"the prompt has {len(prompt)} tokens but the context is {self.max_seq_len} tokens"
            )
        if not 1 <= n <= self.max_batch:
            raise HerdError(f"n must be between 1 and {self.max_batch} (the server's --max-batch), got {n}")
        V = self.args.vocab_size
        if any(not 0 <= t < V for t in prompt):
            raise HerdError(f"the prompt has a token id outside the model's vocabulary [0, {V})")
        req = _Request(list(prompt), params, n, sink or (lambda ev: None))
        with self._cv:
            if len(self.queue) >= self.max_queue:
                raise OverflowError(
                    f"the server is overloaded ({len(self.queue)} requests queued); retry later"
                )
            self.queue.append(req)
            self._cv.notify_all()
        return req

    def cancel(self, req: _Request) -> None:
        with self._cv:
            req.cancelled = True
            self._cancels.append(req)
            self._cv.notify_all()

    @property
    def queue_depth(self) -> int:
        return len(self.queue)

    @property
    def running(self) -> int:
        return sum(r is not None for r in self.rows)

    def tokens_per_second(self, window: float = 10.0) -> float:
        now = time.perf_counter()
        recent = [(t, n) for t, n in list(self._tput) if now - t <= window]
        if not recent:
            return 0.0
        span = max(now - recent[0][0], 1e-3)
        return sum(n for _, n in recent) / span

    # ---- the loop ----------------------------------------------------------------------------------
    def _run(self):
        while True:
            with self._cv:
                while (
                    not self._stop
                    and not self._cancels
                    and not self.queue
                    and not self.prefilling
                    and self.running == 0
                ):
                    self._cv.wait()
                if self._stop:
                    break
                cancels, self._cancels = self._cancels, []
            try:
                with torch.inference_mode():
                    for req in cancels:
                        self._finish_request(req, "cancelled")
                    self._admit()
                    self._prefill_some()
                    self._decode()
            except Exception as e:  # noqa: BLE001  (a bug or an out-of-memory: fail the requests, keep serving)
                msg = f"engine error: {type(e).__name__}: {e}"
                traceback.print_exc()
                for s in list(self.rows):
                    if s is not None:
                        self._emit(s.req, Event("error", s.index, message=msg))
                        self._free(s)
                for req in list(self.prefilling):
                    self._emit(req, Event("error", message=msg))
                self.prefilling.clear()
        # closing: tell everyone still waiting
        for s in self.rows:
            if s is not None:
                self._emit(s.req, Event("error", s.index, message="the server is shutting down"))
        for req in list(self.queue) + list(self.prefilling):
            self._emit(req, Event("error", message="the server is shutting down"))

    def _emit(self, req, ev):
        try:
            req.sink(ev)
        except Exception:  # noqa: BLE001  (a sink must not kill the engine)
            traceback.print_exc()

    # ---- admission and prefix reuse ----------------------------------------------------------------
    @staticmethod
    def _common(a: list[int], b: list[int]) -> int:
        n = min(len(a), len(b))
        i = 0
        while i < n and a[i] == b[i]:
            i += 1
        return i

    def _admit(self):
        while True:
            with self._cv:
                if not self.queue:
                    return
                req = self.queue[0]
                if req.cancelled:
                    self.queue.popleft()
                    continue
                free = [r for r in range(self.max_batch) if self.rows[r] is None]
                if len(free) < len(req.seqs):
                    return
                self.queue.popleft()
            # the leader takes the free row whose cache shares most with the prompt (lowest row on ties,
            # which keeps the running rows packed at the top of the cache)
            lead = max(free, key=lambda r: (self._common(self.cached[r], req.prompt), -r))
            others = [r for r in free if r != lead][: len(req.seqs) - 1]
            for s, r in zip(req.seqs, [lead] + others):
                s.row = r
                self.rows[r] = s
            self.prefilling.append(req)
            self.stats["requests"] += 1

    def _copy_rows(self, src: int, dst: int, n: int):
        if n > 0 and src != dst:
            self.k[:, dst, :, :n] = self.k[:, src, :, :n]
            self.v[:, dst, :, :n] = self.v[:, src, :, :n]
        self.cached[dst] = self.cached[src][:n] if src != dst else self.cached[dst][:n]

    def _start_prefill(self, req):
        lead = req.seqs[0].row
        limit = len(req.prompt) - 1  # at least one token is computed, for its logits
        best_row, best = lead, min(self._common(self.cached[lead], req.prompt), limit)
        for r in range(self.max_batch):
            c = min(self._common(self.cached[r], req.prompt), limit)
            if r != lead and c > best:
                best_row, best = r, c
        self._copy_rows(best_row, lead, best)
        req.prefilled = req.reused = best
        self.stats["reused_prompt_tokens"] += best

    def _prefill_some(self):
        """Prefill up to `prefill_chunk` prompt tokens (whole requests when short)."""
        budget = self.prefill_chunk
        while self.prefilling and budget > 0:
            req = self.prefilling[0]
            if req.cancelled:
                self.prefilling.popleft()
                self._finish_request(req, "cancelled")
                continue
            lead = req.seqs[0]
            if not req.started:
                req.started = True
                self._start_prefill(req)
            start = req.prefilled
            T = min(len(req.prompt) - start, budget)
            t0 = time.perf_counter()
            logits = self._forward_prompt(lead.row, req.prompt[start : start + T], start)
            self.stats["prefill_s"] += time.perf_counter() - t0
            self.stats["prompt_tokens"] += T
            self.cached[lead.row] = req.prompt[: start + T]
            req.prefilled = start + T
            budget -= T
            if req.prefilled < len(req.prompt):
                return  # the rest in the next round; decoding goes on meanwhile
            self.prefilling.popleft()
            P = len(req.prompt)
            for s in req.seqs[1:]:  # n > 1: the other choices get the prompt's cache
                self._copy_rows(lead.row, s.row, P)
            for s in req.seqs:
                s.pos = P
                self._sample_and_emit([s], logits)

    def _forward_prompt(self, row: int, tokens: list[int], start: int) -> torch.Tensor:
        """Prefill `tokens` into `row` at slots start.. -> logits [1, V] of the last one."""
        T = len(tokens)
        view = _CacheView(self.k[:, row : row + 1], self.v[:, row : row + 1])
        x = torch.tensor([tokens], device=self.device)
        mask = None
        if start > 0:  # causal over the new tokens, all of the cached prefix
            S = start + T
            q = torch.arange(start, S)[:, None]
            mask = (torch.arange(S)[None, :] <= q)[None, None].to(self.device)
        logits = self.gen.forward(
            x, torch.arange(start, start + T, device=self.device)[None], view, start, start + T, mask
        )
        return logits[:, : self.n_ids]

    # ---- decoding ----------------------------------------------------------------------------------
    def _decode(self):
        seqs = [s for s in self.rows if s is not None and s.next_token is not None and not s.done]
        if not seqs:
            return
        hi = max(s.row for s in seqs) + 1
        dev = self.device
        tokens = torch.zeros(hi, dtype=torch.long)
        pos = torch.zeros(hi, dtype=torch.long)
        slot = torch.full((hi,), self.scratch, dtype=torch.long)
        S = max(s.pos for s in seqs) + 1
        mask = torch.zeros(hi, 1, 1, S, dtype=torch.bool)
        mask[:, 0, 0, 0] = True  # rows not decoding read slot 0 (their output is dropped)
        for s in seqs:
            tokens[s.row], pos[s.row], slot[s.row] = s.next_token, s.pos, s.pos
            mask[s.row, 0, 0, : s.pos + 1] = True
        t0 = time.perf_counter()
        if hi == 1:  # one row: the very step Generator runs (no mask, an int slot)
            view = _CacheView(self.k[:, :1], self.v[:, :1])
            logits = decode_step(
                self.model,
                self.gen.plan(),
                tokens.to(dev),
                self.fcis[pos.to(dev)[:, None]],
                view,
                int(pos[0]),
                S,
                None,
            )
        else:
            view = _CacheView(self.k[:, :hi], self.v[:, :hi], row_kv=True)
            logits = decode_step(
                self.model,
                self.gen.plan(),
                tokens.to(dev),
                self.fcis[pos.to(dev)[:, None]],
                view,
                slot.to(dev),
                S,
                mask.to(dev),
            )
        logits = logits[:, : self.n_ids]
        dt = time.perf_counter() - t0
        self.stats["decode_s"] += dt
        self.stats["decode_steps"] += 1
        now = time.perf_counter()
        self._tput.append((now, len(seqs)))
        while self._tput and now - self._tput[0][0] > 60:
            self._tput.popleft()
        for s in seqs:
            self.cached[s.row].append(s.next_token)
            s.pos += 1
            s.next_token = None
        by_row = {s.row: s for s in seqs}
        self._sample_rows(by_row, logits)

    def _sample_rows(self, by_row: dict[int, _Seq], logits: torch.Tensor):
        greedy = [r for r, s in by_row.items() if self._plain_greedy(s.req.params)]
        ids: dict[int, int] = {}
        if greedy:
            g = torch.tensor(greedy, device=logits.device)
            for r, t in zip(greedy, torch.argmax(logits[g], dim=-1).tolist()):
                ids[r] = t
        for r, s in by_row.items():
            if r not in ids:
                ids[r] = self._sample_one(s, logits[r : r + 1])
        for r, s in by_row.items():
            self._accept(s, ids[r], logits[r])

    def _sample_and_emit(self, seqs, logits):
        for s in seqs:
            t = (
                int(torch.argmax(logits[0]))
                if self._plain_greedy(s.req.params)
                else self._sample_one(s, logits[:1])
            )
            self._accept(s, t, logits[0])

    @staticmethod
    def _plain_greedy(p: SamplingParams) -> bool:
        return p.temperature == 0 and not p.logit_bias and not p.presence_penalty and not p.frequency_penalty

    def _adjust(self, s: _Seq, logits: torch.Tensor) -> torch.Tensor:
        p = s.req.params
        if not (p.logit_bias or p.presence_penalty or p.frequency_penalty):
            return logits
        logits = logits.clone()
        for t, b in p.logit_bias.items():
            logits[..., t] += b
        if s.counts and (p.presence_penalty or p.frequency_penalty):
            idx = torch.tensor(list(s.counts), device=logits.device)
            cnt = torch.tensor([float(c) for c in s.counts.values()], device=logits.device)
            logits[..., idx] -= p.frequency_penalty * cnt + p.presence_penalty
        return logits

    def _sample_one(self, s: _Seq, logits: torch.Tensor) -> int:
        p = s.req.params
        logits = self._adjust(s, logits)
        if p.temperature == 0:
            return int(torch.argmax(logits[0]))
        probs = filter_probs(logits.float().cpu(), p.temperature, p.top_p, p.top_k)
        return int(sample_from(probs, s.gen)[0])

    def _accept(self, s: _Seq, t: int, logits_row: torch.Tensor):
        """Record the sampled token `t` of `s`: emit it, or finish the sequence."""
        p = s.req.params
        if s.req.cancelled:
            self._finish_seq(s, "cancelled")
            return
        stops = self.stop_ids if p.stop_token_ids is None else p.stop_token_ids
        lp = top = None
        if p.logprobs is not None:
            logp = torch.log_softmax(logits_row.float(), dim=-1)
            lp = float(logp[t])
            if p.logprobs > 0:
                v, i = torch.topk(logp, p.logprobs)
                top = list(zip(i.tolist(), v.tolist()))
        if t in stops:
            self.stats["generated_tokens"] += 1
            self._emit(
                s.req,
                Event("done", s.index, finish_reason="stop", stop_token=t, token=t, logprob=lp, top=top),
            )
            self._finish_seq(s, None)
            return
        s.out.append(t)
        s.counts[t] += 1
        self.stats["generated_tokens"] += 1
        self._emit(s.req, Event("token", s.index, token=t, logprob=lp, top=top))
        if len(s.out) >= p.max_tokens or s.pos + 1 >= self.max_seq_len:
            self._emit(s.req, Event("done", s.index, finish_reason="length"))
            self._finish_seq(s, None)
            return
        s.next_token = t

    def _finish_seq(self, s: _Seq, reason: str | None):
        if s.done:
            return
        s.done = True
        if reason is not None:
            self._emit(s.req, Event("done", s.index, finish_reason=reason))
        self._free(s)

    def _free(self, s: _Seq):
        # `cached` lists exactly the tokens written in the row, which stay valid for prefix reuse
        if s.row is not None and self.rows[s.row] is s:
            self.rows[s.row] = None

    def _finish_request(self, req: _Request, reason: str):
        if req in self.prefilling:
            self.prefilling.remove(req)
        for s in req.seqs:
            if s.row is not None:
                self._finish_seq(s, reason)


__all__ = ["BatchEngine", "Event", "SamplingParams"]
