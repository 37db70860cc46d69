"""The generation engine (paper §6, inference): a static KV cache, prefill then decode, a batch of
prompts of different lengths, per-sequence stops, greedy / temperature / top-k / top-p sampling,
K samples per prompt sharing one prefill, and an optional `torch.compile`d decode step.

    from herd.inference import Generator
    gen = Generator(model, tokenizer=None, max_batch=8, max_seq_len=None, compile=False)
    outs = gen.generate(prompts, max_new_tokens=128, temperature=0.0, top_p=1.0, top_k=0, seed=None,
                        stop_tokens=None, num_samples=1, on_token=None)
    # -> list[Completion], ordered by (prompt_index, sample_index)

`prompts` is a list of token-id lists. A `Completion` holds `tokens` (the new ids, the stop token
excluded), `stop_reason` ("end_of_turn", "end_of_message", "end_of_text" for the tokenizer's
<|eot_id|>, <|eom_id|>, <|end_of_text|>; "stop_token" for another id of `stop_tokens`; "length"
when max_new_tokens or the context ran out), `prompt_index`, `sample_index` (and `text` when the
Generator has a tokenizer). `stop_tokens` defaults to the tokenizer's stop tokens (none without a
tokenizer). With `num_samples=K` each prompt is prefilled once and its KV cache rows are copied
to its K samples (rejection sampling, §4.2.2, draws many samples of one prompt). `on_token(
prompt_index, sample_index, token_id)` is called for every new token as it is produced (not for
stop tokens), for streaming. `seed` makes sampling reproducible: the same call with the same seed
gives the same output. Temperature 0 is greedy.

Batching scheme (as HF `generate` with left padding): prompts are left-padded to the longest, each
row gets RoPE positions 0..L-1 for its own tokens, and a boolean mask hides the padding slots, so
every row computes what it would compute alone (greedy ids equal HF's; tests/inference). All rows
of a batch write the same cache slot at each step. Rows that stop keep running until the batch is
done (their tokens are dropped); prompts beyond `max_batch` rows go in further batches.

Speed (CPU decode is bound by weight reads and per-op overhead): prefill runs the model's own
forward (`Transformer.forward` with the cache, the last layer for the last position only); each
decode step runs `herd.inference.decode.decode_step`, which reads only the live part of the cache,
needs no mask when no row is padded, attends without copying K/V for grouped-query attention, and
(with `pack`, the default on the CPU) finds the model's fp32 linear weights laid out [in, out] in place,
the layout the CPU's fp32 GEMV streams best (same parameters, shapes and values; see that module). With
`precision="auto"` (the CLI's default) the weights are bf16 where this machine's matrix engine makes
that faster (herd.precision's probe), which halves the bytes a decode step reads and runs prefill on
AMX; int8 weights (quant.py) a quarter. With `compile=True` the decode step is compiled once per
(batch, cache length) with static shapes (cache lengths are rounded up to a multiple of 256 so few
shapes occur); on CUDA with CUDA graphs.
"""

from __future__ import annotations

import operator
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch

from herd.errors import HerdError
from herd.inference.decode import DecodePlan, build_plan, decode_step
from herd.inference.sampling import check_sampling, sample
from herd.model.transformer import KVCache

CACHE_ROUND = 256


@dataclass
class Completion:
    tokens: list[int]
    stop_reason: str
    prompt_index: int
    sample_index: int = 0
    text: str | None = None
    prompt_tokens: int = 0


@dataclass
class GenerationStats:
    """Timings of the last `generate` call (for the CLI's summary and the benchmark)."""
    prefill_tokens: int = 0
    prefill_s: float = 0.0
    decode_steps: int = 0
    decode_tokens: int = 0
    decode_s: float = 0.0
    extra: dict = field(default_factory=dict)


class Generator:
    def __init__(self, model, tokenizer=None, max_batch: int = 8, max_seq_len: int | None = None,
                 compile: bool = False, pack: bool | None = None, precision: str | None = None):
        if not isinstance(max_batch, int) or max_batch < 1:
            raise HerdError(f"max_batch must be a positive integer, got {max_batch!r}")
        # precision (herd.precision): None keeps the model's dtype as it is; "auto" | "fp32" | "bf16" (|
        # "fp16" on GPU) casts its floating-point weights in place to that dtype ("auto": bf16 where this
        # machine's matrix engine makes prefill faster and decode no slower, else fp32); int8 weights
        # stay int8
        self.precision_reason = None
        if precision is not None:
            from herd.precision import parse_precision, resolve_precision, shapes_of

            dev = model.tok_embeddings.weight.device
            dt, self.precision_reason, _ = resolve_precision(precision, dev, shapes_of(model.args, 256),
                                                             kind="infer",
                                                             need_peak=False)
            if model.tok_embeddings.weight.dtype != dt:
                model.to(dt)
                model.reset_rope()  # RoPE tables stay fp32
            self.precision = parse_precision(dt)
        self.model = model.eval()
        self.args = model.args
        self.tokenizer = tokenizer
        self.max_batch = max_batch
        self.max_seq_len = min(max_seq_len or self.args.max_seq_len, self.args.max_seq_len)
        p = model.tok_embeddings.weight
        self.device, self.dtype = p.device, p.dtype
        if precision is None:
            from herd.precision import parse_precision

            self.precision = parse_precision(self.dtype)
        self.compile = compile
        # packed weights (herd.inference.decode): on by default on the CPU, where they pay
        self.pack = self.device.type == "cpu" if pack is None else bool(pack)
        self._plan = None
        self._compiled = None
        self._cache: KVCache | None = None
        self.stats = GenerationStats()

    # ---- the forward pass with a cache --------------------------------------------------------
    def forward(self, tokens: torch.Tensor, pos: torch.Tensor, cache: KVCache, slot, S: int,
                mask: torch.Tensor | None, all_logits: bool = False) -> torch.Tensor:
        """The model's forward with the cache: logits [B, V] of the last position (the last layer
        runs for that position only), or [B, T, V] with all_logits, for `tokens` [B, T] at RoPE
        positions `pos` [B, T], writing K/V at cache slots slot..slot+T (an int, or a [T]
        LongTensor) and attending over slots [0, S) under `mask` [B, 1, T, S] (True = attend).
        mask=None means no padding: causal when T > 1 (slot 0 only), everything when T == 1."""
        logits = self.model(tokens, pos=pos, cache=cache, cache_pos=slot, kv_len=S, attn_mask=mask,
                            last_only=not all_logits)
        return logits if all_logits else logits[:, -1]

    def _decode_static(self, tokens, pos, cache, slot, mask):
        """Decode step with static shapes (for torch.compile): the whole cache under a mask."""
        return self.forward(tokens, pos, cache, slot, cache.max_len, mask)

    # ---- cache --------------------------------------------------------------------------------
    def cache_for(self, batch: int, length: int) -> KVCache:
        """A KV cache of at least `batch` rows and `length` slots, reused across calls."""
        length = min(self.max_seq_len, -(-length // CACHE_ROUND) * CACHE_ROUND)
        c = self._cache
        # compiled steps get a cache of exactly `batch` rows: writing into a slice of a bigger cache
        # makes the compiled graph copy the whole cache back every step (an input mutation)
        if c is None or c.batch < batch or c.max_len < length or \
                (self.compile and (c.max_len != length or c.batch != batch)):
            self._cache = None  # free the old one first
            rows = batch if self.compile else max(batch, self.max_batch if c is None else c.batch)
            c = KVCache(self.args, rows, length, dtype=self.dtype, device=self.device)
            self._cache = c
        return c

    # ---- generation ---------------------------------------------------------------------------
    def _check(self, prompts, max_new_tokens, temperature, top_p, top_k, num_samples):
        check_sampling(temperature, top_p, top_k)
        if not isinstance(max_new_tokens, int) or isinstance(max_new_tokens, bool) or max_new_tokens < 1:
            raise HerdError(f"max_new_tokens must be a positive integer, got {max_new_tokens!r}")
        if not isinstance(num_samples, int) or isinstance(num_samples, bool) or num_samples < 1:
            raise HerdError(f"num_samples must be a positive integer, got {num_samples!r}")
        if not isinstance(prompts, (list, tuple)) or not prompts:
            raise HerdError("prompts must be a non-empty list of token-id lists")
        V = self.args.vocab_size
        out = []
        for i, p in enumerate(prompts):
            if hasattr(p, "tolist") and not isinstance(p, (list, tuple)):  # a tensor or numpy array
                p = p.tolist()
            if not isinstance(p, (list, tuple)) or not p:
                raise HerdError(f"prompt {i} is empty or not a list of token ids")
            if len(p) >= self.max_seq_len:
                raise HerdError(f"prompt {i} has {len(p)} tokens but the context is {self.max_seq_len} "
                                "tokens; shorten the prompt (room for at least one new token is needed)")
            try:
                p = [operator.index(t) for t in p]  # ints, numpy ints, 0-d integer tensors
            except TypeError:
                raise HerdError(f"prompt {i} holds something other than integer token ids") from None
            bad = [t for t in p if not 0 <= t < V]
            if bad:
                raise HerdError(f"prompt {i} has token id {bad[0]!r} outside the model's vocabulary [0, {V})")
            out.append(p)
        return out

    def stop_reason(self, token: int) -> str:
        tok = self.tokenizer
        if tok is not None:
            if token == tok.eot_id:
                return "end_of_turn"
            if token == tok.eom_id:
                return "end_of_message"
            if token == tok.eos_id:
                return "end_of_text"
        return "stop_token"

    @torch.inference_mode()
    def generate(self, prompts: Sequence[Sequence[int]], max_new_tokens: int = 128, temperature: float = 0.0,
                 top_p: float = 1.0, top_k: int = 0, seed: int | None = None,
                 stop_tokens: Sequence[int] | None = None, num_samples: int = 1,
                 on_token: Callable[[int, int, int], object] | None = None) -> list[Completion]:
        prompts = self._check(prompts, max_new_tokens, temperature, top_p, top_k, num_samples)
        if stop_tokens is None:
            stop_tokens = list(self.tokenizer.stop_tokens) if self.tokenizer is not None else []
        gen = torch.Generator(device=self.device)
        if seed is None:
            gen.seed()
        else:
            gen.manual_seed(int(seed))
        self.stats = GenerationStats()
        rows = [(i, j) for i in range(len(prompts)) for j in range(num_samples)]
        out: list[Completion] = []
        for c in range(0, len(rows), self.max_batch):
            out += self._generate_batch(prompts, rows[c:c + self.max_batch], max_new_tokens, temperature,
                                        top_p,
                                        top_k, gen, set(int(t) for t in stop_tokens), on_token)
        if self.tokenizer is not None:
            for o in out:
                o.text = self.tokenizer.decode(o.tokens)
        return out

    def _generate_batch(self, prompts, rows, max_new_tokens, temperature, top_p, top_k, gen, stops, on_token):
        dev = self.device
        uniq = sorted({i for i, _ in rows})
        lens = [len(prompts[i]) for i in uniq]
        P, R, U = max(lens), len(rows), len(uniq)
        steps = min(max_new_tokens, self.max_seq_len - P)
        cache = self.cache_for(R, P + steps)
        padded = any(L != P for L in lens)

        # prefill each distinct prompt once, left-padded
        tokens = torch.zeros(U, P, dtype=torch.long)
        pad = torch.tensor([P - L for L in lens])
        for u, i in enumerate(uniq):
            tokens[u, P - lens[u]:] = torch.tensor(prompts[i])
        ar = torch.arange(P)
        pos = (ar[None] - pad[:, None]).clamp_min(0)
        mask = None
        if padded:
            # attend to real slots at or before the query; a pad query attends to itself only (its
            # output is never used, but a row with nothing to attend to would give NaN)
            mask = (ar[None, None, :] <= ar[None, :, None]) & (ar[None, None, :] >= pad[:, None, None])
            mask = (mask | torch.eye(P, dtype=torch.bool)[None]).unsqueeze(1).to(dev)
        t0 = time.perf_counter()
        logits = self.forward(tokens.to(dev), pos.to(dev), cache, 0, P, mask)
        self.stats.prefill_tokens += sum(lens)
        self.stats.prefill_s += time.perf_counter() - t0

        # give each sample its prompt's cache rows and logits
        idx = [uniq.index(i) for i, _ in rows]
        if idx != list(range(R)):
            it = torch.tensor(idx, device=dev)
            cache.k[:, :R, :, :P] = cache.k[:, it, :, :P]
            cache.v[:, :R, :, :P] = cache.v[:, it, :, :P]
            logits = logits[it]
            pad = pad[idx]
        lens_r = [len(prompts[i]) for i, _ in rows]

        valid = (torch.arange(cache.max_len)[None] >= pad[:, None]).to(dev)  # [R, S] slots not padding
        cur_pos = torch.tensor(lens_r, device=dev)[:, None]  # [R, 1]
        results = [[] for _ in range(R)]
        reason: list[str | None] = [None] * R
        decode = self._decode_fn() if self.compile else None
        plan = None if self.compile else self.plan()
        fcis = self.model.rope_factors(None, self.max_seq_len)[0]
        t0 = time.perf_counter()
        for n in range(steps):
            nxt = sample(logits, temperature, top_p, top_k, gen)
            ids = nxt.tolist()
            for r, t in enumerate(ids):
                if reason[r] is not None:
                    continue
                if t in stops:
                    reason[r] = self.stop_reason(t)
                    continue
                results[r].append(t)
                if on_token is not None:
                    on_token(rows[r][0], rows[r][1], t)
                if len(results[r]) >= steps:
                    reason[r] = "length"
            if all(x is not None for x in reason) or n == steps - 1:
                break
            slot = P + n
            if self.compile:
                m = valid[:, None, None, :] & (torch.arange(cache.max_len, device=dev) <= slot)
                logits = decode(nxt[:, None], cur_pos, cache, torch.tensor([slot], device=dev), m)
            else:
                m = valid[:, None, None, :slot + 1] if padded else None
                logits = decode_step(self.model, plan, nxt, fcis[cur_pos], cache, slot, slot + 1, m)
            cur_pos = cur_pos + 1
            self.stats.decode_steps += 1
            self.stats.decode_tokens += sum(1 for x in reason if x is None)
        self.stats.decode_s += time.perf_counter() - t0
        return [Completion(tokens=results[r], stop_reason=reason[r] or "length", prompt_index=rows[r][0],
                           sample_index=rows[r][1], prompt_tokens=lens_r[r]) for r in range(R)]

    def plan(self) -> DecodePlan:
        """The decode plan (herd.inference.decode), rebuilt when the model's weights were replaced.
        With `pack`, building it lays the model's linear weights out in place for fast decoding."""
        if self._plan is None or not self._plan.current(self.model):
            # packed buffers become the parameters' storage: they must be normal tensors (autograd
            # refuses inference-mode tensors if the model is trained afterwards)
            with torch.inference_mode(False), torch.no_grad():
                self._plan = build_plan(self.model, self.pack)
        return self._plan

    def _decode_fn(self):
        """The torch.compile'd decode step (compile=True only)."""
        if self._compiled is None:
            if self.device.type == "cuda":  # CUDA graphs replay the whole step: no launch overhead
                self._compiled = torch.compile(self._decode_static, mode="reduce-overhead", dynamic=False)
            else:  # CPU: inductor's C++ kernels fuse the small ops; shapes are static per cache
                self._compiled = torch.compile(self._decode_static, dynamic=False)
        return self._compiled


__all__ = ["Generator", "Completion", "GenerationStats"]
