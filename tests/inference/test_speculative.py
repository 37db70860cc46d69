"""Speculative decoding: greedy output identical to plain greedy decoding; sampling keeps the
target's distribution (the verification step alone, and end to end)."""

import pytest
import torch
from scipy.stats import chisquare

from inference_util import tiny_model
from herd.errors import HerdError
from herd.inference import Generator
from herd.inference.speculative import SpeculativeGenerator, accept_draft

PROMPTS = [[5, 6, 7, 8, 9, 10, 11], [3, 4], list(range(20, 60))]


@pytest.fixture(scope="module")
def pair():
    target = tiny_model(seed=0, n_layers=3)
    draft = tiny_model(seed=5, n_layers=1, dim=32, n_heads=2, n_kv_heads=1)
    return target, draft


def test_greedy_identical_to_plain_greedy(pair):
    target, draft = pair
    plain = [o.tokens for o in Generator(target).generate(PROMPTS[:2], max_new_tokens=16)]
    for d, k in [(draft, 4), (draft, 1), (target, 3)]:  # a poor draft, k=1, a perfect draft
        spec = SpeculativeGenerator(target, d, k=k)
        outs = spec.generate(PROMPTS[:2], max_new_tokens=16)
        assert [o.tokens for o in outs] == plain
        assert all(o.stop_reason == "length" for o in outs)
    assert spec.stats.extra["accepted"] == spec.stats.extra["drafted"]  # the target as its own draft


def test_greedy_stops_like_plain(pair):
    target, draft = pair
    plain = Generator(target).generate(PROMPTS[:1], max_new_tokens=30)[0].tokens
    stop = plain[7]
    ref = Generator(target).generate(PROMPTS[:1], max_new_tokens=30, stop_tokens=[stop])[0]
    got = SpeculativeGenerator(target, draft, k=3).generate(PROMPTS[:1], max_new_tokens=30,
                                                            stop_tokens=[stop])[0]
    assert got.tokens == ref.tokens and got.stop_reason == ref.stop_reason == "stop_token"


@pytest.mark.parametrize("k", [1, 3])
def test_verification_keeps_target_distribution(k):
    torch.manual_seed(0)
    V, N = 8, 8000
    p = torch.softmax(torch.randn(k + 1, V) * 1.5, -1)
    q = torch.softmax(torch.randn(k, V) * 1.5, -1)
    g = torch.Generator().manual_seed(0)
    first = torch.zeros(V)
    drafts = torch.stack([torch.multinomial(q[i], N, replacement=True, generator=g) for i in range(k)],
                         1).tolist()
    for d in drafts:
        n, nxt = accept_draft(d, q, p, g)
        first[(d[:n] + [nxt])[0]] += 1
    assert chisquare(first.numpy(), p[0].numpy() * N).pvalue > 1e-3
    assert chisquare(first.numpy(), q[0].numpy() * N).pvalue < 1e-6  # not the draft's


@pytest.mark.slow
def test_sampling_end_to_end_matches_target_joint():
    """Joint distribution of the first two new tokens (the second one goes through drafting and
    verification) against the target's exact p(t1) p(t2 | t1), on a 16-token vocabulary."""
    target = tiny_model(seed=0, vocab_size=16, n_layers=2)
    draft = tiny_model(seed=9, vocab_size=16, n_layers=1, dim=32, n_heads=2, n_kv_heads=1)
    prompt = [3, 1, 4]
    with torch.no_grad():
        p1 = torch.softmax(target(torch.tensor([prompt]))[0, -1], -1)
        ctx = torch.tensor([prompt + [t] for t in range(16)])
        p2 = torch.softmax(target(ctx)[:, -1], -1)
    joint = (p1[:, None] * p2).flatten()
    N = 3000
    outs = SpeculativeGenerator(target, draft, k=2).generate([prompt], max_new_tokens=2, temperature=1.0,
                                                             seed=0, num_samples=N)
    counts = torch.zeros(256)
    for o in outs:
        counts[o.tokens[0] * 16 + o.tokens[1]] += 1
    exp = joint.double() * N
    big = exp >= 5
    obs = torch.cat([counts[big].double(), counts[~big].double().sum()[None]])
    exp = torch.cat([exp[big], exp[~big].sum()[None]])
    assert chisquare(obs.numpy(), exp.numpy() * obs.sum().item() / exp.sum().item()).pvalue > 1e-3


def test_seeded_sampling_reproducible(pair):
    target, draft = pair
    spec = SpeculativeGenerator(target, draft, k=3)
    a = spec.generate(PROMPTS[:1], max_new_tokens=10, temperature=0.8, top_p=0.9, seed=1, num_samples=2)
    b = spec.generate(PROMPTS[:1], max_new_tokens=10, temperature=0.8, top_p=0.9, seed=1, num_samples=2)
    assert [o.tokens for o in a] == [o.tokens for o in b] and len(a) == 2


def test_vocab_mismatch(pair):
    target, _ = pair
    with pytest.raises(HerdError, match="vocabulary"):
        SpeculativeGenerator(target, tiny_model(vocab_size=100))
