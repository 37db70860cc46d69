"""Sampling: draws at temperature T follow softmax(logits / T) (chi-square tests), top-p keeps the
smallest set of tokens with mass >= p, top-k keeps k tokens, greedy is argmax."""

import pytest
import torch
from scipy.stats import chisquare

from herd.inference import Generator
from herd.inference.sampling import filter_probs, sample


def _chi2_pvalue(counts: torch.Tensor, probs: torch.Tensor) -> float:
    """Chi-square goodness of fit, pooling the bins with expected count < 5 (the test's rule)."""
    n = counts.sum().item()
    exp = probs.double() * n
    small = exp < 5
    obs = torch.cat([counts[~small].double(), counts[small].double().sum()[None]])
    exp = torch.cat([exp[~small], exp[small].sum()[None]])
    if exp[-1] == 0:
        obs, exp = obs[:-1], exp[:-1]
    return chisquare(obs.numpy(), exp.numpy() * obs.sum().item() / exp.sum().item()).pvalue


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_samples_follow_softmax(temperature):
    torch.manual_seed(0)
    logits = torch.randn(12) * 2
    g = torch.Generator().manual_seed(1)
    draws = sample(logits.expand(40000, 12), temperature, generator=g)
    counts = torch.bincount(draws, minlength=12)
    p = _chi2_pvalue(counts, torch.softmax(logits / temperature, -1))
    assert p > 1e-3
    # and the test has power: the wrong temperature is rejected
    assert _chi2_pvalue(counts, torch.softmax(logits / (temperature * 1.3), -1)) < 1e-6


def test_engine_first_token_follows_model_softmax(model):
    """End to end through Generator: the first new token of many samples of one prompt."""
    prompt = [5, 6, 7, 8]
    with torch.no_grad():
        probs = torch.softmax(model(torch.tensor([prompt]))[0, -1], -1)
    outs = Generator(model, max_batch=1000).generate([prompt], max_new_tokens=1, temperature=1.0, seed=0,
                                                      num_samples=3000)
    counts = torch.bincount(torch.tensor([o.tokens[0] for o in outs]), minlength=probs.numel())
    assert _chi2_pvalue(counts, probs) > 1e-3


def test_top_p_keeps_smallest_set_with_mass_p():
    probs = torch.tensor([0.05, 0.4, 0.1, 0.25, 0.2])
    logits = probs.log()
    # (exact sums like 0.4 + 0.25 are avoided: float rounding decides those either way)
    for p, keep in [(0.1, {1}), (0.399, {1}), (0.401, {1, 3}), (0.649, {1, 3}), (0.651, {1, 3, 4}),
                    (0.849, {1, 3, 4}), (0.851, {1, 3, 4, 2}), (0.951, {0, 1, 2, 3, 4}),
                    (1.0, {0, 1, 2, 3, 4})]:
        f = filter_probs(logits, 1.0, top_p=p)
        kept = set(torch.nonzero(f).flatten().tolist())
        assert kept == keep, (p, kept)
        assert probs[list(kept)].sum() >= p - 1e-6
        assert torch.allclose(f[list(kept)], probs[list(kept)] / probs[list(kept)].sum())


def test_top_p_random_minimality():
    torch.manual_seed(3)
    for _ in range(50):
        logits = torch.randn(30) * 3
        p = float(torch.rand(()) * 0.98 + 0.01)
        probs = torch.softmax(logits, -1)
        kept = filter_probs(logits, 1.0, top_p=p) > 0
        mass = probs[kept].sum().item()
        assert mass >= p - 1e-6
        assert mass - probs[kept].min().item() < p  # dropping the least likely kept token falls below p
        assert probs[kept].min() >= probs[~kept].max() if (~kept).any() else True


def test_top_k_and_draws_stay_in_the_set():
    logits = torch.tensor([1.0, 3.0, 2.0, 0.5, 2.5])
    f = filter_probs(logits, 1.0, top_k=2)
    assert set(torch.nonzero(f).flatten().tolist()) == {1, 4}
    g = torch.Generator().manual_seed(0)
    d = sample(logits.expand(5000, 5), 1.0, top_p=0.6, top_k=3, generator=g)
    assert set(d.tolist()) <= {1, 4}
    counts = torch.bincount(d, minlength=5)
    assert _chi2_pvalue(counts, filter_probs(logits, 1.0, top_p=0.6, top_k=3)) > 1e-3


def test_greedy_is_argmax():
    logits = torch.randn(4, 50)
    assert torch.equal(sample(logits, 0.0), logits.argmax(-1))
