"""The continuous-batching engine: greedy output equal to herd's Generator whatever the batch around
it, seeded sampling reproducible, n > 1 and identical prompts sharing their prefill, cancels free slots."""

import threading

import pytest
import torch

from herd.inference import Generator
from herd.serve.engine import BatchEngine, SamplingParams


@pytest.fixture(scope="module")
def model():
    from inference_util import tiny_model

    m = tiny_model(seed=3)
    # sharper logits: greedy ids far from ties, so they compare exactly across batchings
    with torch.no_grad():
        m.output.weight.mul_(30)
    return m


def run(engine, jobs, timeout=60):
    """Submit (prompt, params, n) jobs at once; -> per job, per choice: (tokens, finish_reason)."""
    outs = [[([], None) for _ in range(n)] for _, _, n in jobs]
    left = [sum(n for _, _, n in jobs)]
    done = threading.Event()
    lock = threading.Lock()

    def sink_for(j):
        def sink(ev):
            toks, _ = outs[j][ev.index]
            if ev.kind == "token":
                toks.append(ev.token)
            elif ev.kind == "done":
                outs[j][ev.index] = (toks, ev.finish_reason)
                with lock:
                    left[0] -= 1
                    if left[0] == 0:
                        done.set()
            else:
                raise AssertionError(ev.message)

        return sink

    for j, (p, sp, n) in enumerate(jobs):
        engine.submit(p, sp, n, sink=sink_for(j))
    assert done.wait(timeout), "the engine did not finish"
    return outs


def test_greedy_equals_generator_under_continuous_batching(model):
    g = torch.Generator().manual_seed(0)
    prompts = [torch.randint(0, 512, (int(n),), generator=g).tolist() for n in (5, 40, 3, 17, 90, 8, 33)]
    ref = Generator(model, max_batch=1).generate(prompts, max_new_tokens=24)
    # 3 slots for 7 requests: requests wait and are admitted as others finish; 16-token prefill chunks
    eng = BatchEngine(model, None, max_batch=3, prefill_chunk=16, max_seq_len=256).start()
    try:
        outs = run(eng, [(p, SamplingParams(max_tokens=24, temperature=0), 1) for p in prompts])
    finally:
        eng.close()
    for (toks, reason), r in zip((o[0] for o in outs), ref):
        assert toks == r.tokens
        assert reason == "length"
    assert eng.stats["requests"] == 7


def test_seeded_sampling_is_reproducible_and_n_shares_the_prefill():
    from inference_util import tiny_model

    model = tiny_model(seed=3)  # a flat distribution: the samples differ
    eng = BatchEngine(model, None, max_batch=4, max_seq_len=256).start()
    try:
        p = list(range(1, 60))
        sp = SamplingParams(max_tokens=12, temperature=1.0, top_p=0.9, seed=11)
        a = run(eng, [(p, sp, 3)])[0]
        reused = eng.stats["reused_prompt_tokens"]
        b = run(eng, [(p, sp, 3)])[0]
        assert a == b  # same seed, same samples
        assert len({tuple(t) for t, _ in a}) == 3  # the choices differ from one another
        # the second request found the prompt in the cache: only its last token was prefilled
        assert eng.stats["reused_prompt_tokens"] - reused == len(p) - 1
        c = run(eng, [(p, SamplingParams(max_tokens=12, temperature=1.0, top_p=0.9, seed=12), 1)])[0]
        assert c[0][0] != a[0][0]
    finally:
        eng.close()


def test_shared_prefix_gives_the_same_tokens(model):
    system = list(range(100, 180))
    prompts = [system + [5, 6, 7], system + [9, 10], system + [5, 6, 7]]
    ref = Generator(model, max_batch=1).generate(prompts, max_new_tokens=10)
    eng = BatchEngine(model, None, max_batch=2, max_seq_len=256).start()
    try:
        outs = run(eng, [(p, SamplingParams(max_tokens=10, temperature=0), 1) for p in prompts])
        assert [o[0][0] for o in outs] == [r.tokens for r in ref]
        assert eng.stats["reused_prompt_tokens"] >= 2 * len(system)
    finally:
        eng.close()


def test_stop_tokens_and_cancel_free_the_slot(model):
    eng = BatchEngine(model, None, max_batch=1, max_seq_len=256).start()
    try:
        p = [1, 2, 3, 4]
        first = run(eng, [(p, SamplingParams(max_tokens=5, temperature=0), 1)])[0][0][0]
        # the first greedy token declared a stop token: the answer is empty, finish "stop"
        toks, reason = run(
            eng, [(p, SamplingParams(max_tokens=5, temperature=0, stop_token_ids=(first[1],)), 1)]
        )[0][0]
        assert toks == first[:1] and reason == "stop"
        # a long request cancelled mid-way frees the only slot for the next one
        got = threading.Event()
        req = eng.submit(
            p,
            SamplingParams(max_tokens=200, temperature=0),
            sink=lambda ev: got.set() if ev.kind == "token" else None,
        )
        assert got.wait(30)
        eng.cancel(req)
        toks, reason = run(eng, [(p, SamplingParams(max_tokens=5, temperature=0), 1)])[0][0]
        assert toks == first and reason == "length"
        assert eng.running == 0
    finally:
        eng.close()


def test_submit_rejects_bad_requests(model):
    from herd.errors import HerdError

    eng = BatchEngine(model, None, max_batch=2, max_seq_len=64, max_queue=1)
    with pytest.raises(HerdError, match="context"):
        eng.submit(list(range(64)), SamplingParams())
    with pytest.raises(HerdError, match="n must be"):
        eng.submit([1, 2], SamplingParams(), n=3)
    with pytest.raises(HerdError, match="vocabulary"):
        eng.submit([1, 10**6], SamplingParams())
    eng.submit([1, 2], SamplingParams())  # not started: it stays queued
    with pytest.raises(OverflowError, match="overloaded"):
        eng.submit([1, 2], SamplingParams())


def test_ids_beyond_the_tokenizer_are_never_sampled(small_tokenizer):
    """A vocabulary padded beyond the tokenizer's ids (as some checkpoints): those ids decode to
    nothing, so the engine never samples them."""
    from inference_util import tiny_model

    m = tiny_model(vocab_size=small_tokenizer.n_words + 300, seed=1)
    with torch.no_grad():  # make the padded ids the most likely ones
        m.output.weight[small_tokenizer.n_words :] = (
            m.output.weight[: small_tokenizer.n_words].abs().max() * 50
        )
    eng = BatchEngine(m, small_tokenizer, max_batch=2, max_seq_len=128).start()
    try:
        outs = run(
            eng,
            [
                ([1, 2, 3], SamplingParams(max_tokens=8, temperature=0), 1),
                ([4, 5], SamplingParams(max_tokens=8, temperature=1.0, seed=0), 1),
            ],
        )
    finally:
        eng.close()
    for o in outs:
        assert o[0][0] and all(t < small_tokenizer.n_words for t in o[0][0])
