"""Log-likelihood scoring, perplexity and bits per byte against direct computation from logits."""

import math

import pytest
import torch
import torch.nn.functional as F

from herd.errors import HerdError
from herd.eval.scoring import (
    bits_per_byte,
    cut_at_stop,
    encode_pair,
    loglikelihood,
    loglikelihood_tokens,
    perplexity,
    rolling_loglikelihood,
    token_logprobs,
)


def manual_ll(model, ctx, cont):
    full = torch.tensor([ctx + cont])
    with torch.no_grad():
        logp = F.log_softmax(model(full[:, :-1]).double(), -1)[0]
    pos = range(len(ctx) - 1, len(ctx) + len(cont) - 1)
    return sum(float(logp[p, t]) for p, t in zip(pos, cont)), all(
        int(logp[p].argmax()) == t for p, t in zip(pos, cont)
    )


def test_loglikelihood_equals_logits(tiny):
    model, tok = tiny
    reqs = [
        ("The capital of France is", " Paris"),
        ("Question: 2+2=\nAnswer:", " 4"),
        ("a b c ", "d e f g"),
        ("x", " a much longer continuation with several tokens in it"),
    ]
    got = loglikelihood(model, tok, reqs, batch_size=3)
    for (c, x), (ll, greedy) in zip(reqs, got):
        ctx, cont = encode_pair(tok, c, x)
        assert ctx[0] == tok.bos_id and tok.decode(ctx[1:] + cont) == c + x
        ref, ref_greedy = manual_ll(model, ctx, cont)
        assert ll == pytest.approx(ref, abs=1e-4)
        assert greedy == ref_greedy
    # batching does not change a score
    one = [loglikelihood(model, tok, [r], batch_size=1)[0][0] for r in reqs]
    assert one == pytest.approx([g[0] for g in got], abs=1e-4)


def test_trailing_space_moves_to_continuation(tokenizer):
    ctx, cont = encode_pair(tokenizer, "Answer: ", "Paris")
    assert tokenizer.decode(cont) == " Paris"


def test_greedy_flag(tiny):
    model, tok = tiny
    ctx = tok.encode("hello world", bos=True)
    with torch.no_grad():
        nxt = int(model(torch.tensor([ctx]))[0, -1].argmax())
    ((ll, greedy),) = loglikelihood_tokens(model, [(ctx, [nxt])])
    assert greedy
    ((_, greedy2),) = loglikelihood_tokens(model, [(ctx, [(nxt + 1) % tok.n_words])])
    assert not greedy2


def test_rolling_windows(tiny):
    model, tok = tiny
    text = "The quick brown fox jumps over the lazy dog. " * 12
    ids = tok.encode(text, bos=True)
    full = token_logprobs(model, ids)
    with torch.no_grad():
        ref = F.log_softmax(model(torch.tensor([ids[:-1]])), -1)[0].gather(
            -1, torch.tensor(ids[1:])[:, None]
        )[:, 0]
    assert torch.allclose(full, ref, atol=1e-4)
    # With a 16-token window every prediction is made from the (up to) 16 tokens before it.
    win = token_logprobs(model, ids, max_len=16)
    s = 1
    while s < len(ids):
        e = min(s + 16, len(ids))
        a = max(0, e - 1 - 16)
        with torch.no_grad():
            lp = F.log_softmax(model(torch.tensor([ids[a : e - 1]])), -1)[0]
        for j in range(s, e):
            assert float(win[j - 1]) == pytest.approx(float(lp[j - 1 - a, ids[j]]), abs=1e-4)
        s = e
    ((ll, n_tok, n_bytes),) = rolling_loglikelihood(model, tok, [text])
    assert ll == pytest.approx(float(full.sum()), abs=1e-3) and n_tok == len(ids) - 1 and n_bytes == len(text)


def test_perplexity_and_bits_per_byte(tiny):
    model, tok = tiny
    texts = ["Held-out text number one.", "Another, rather different, held out text: 12345!"]
    r = perplexity(model, tok, texts)
    rows = rolling_loglikelihood(model, tok, texts)
    nll = -sum(x[0] for x in rows)
    assert r["tokens"] == sum(x[1] for x in rows)
    assert r["perplexity"] == pytest.approx(math.exp(nll / r["tokens"]), rel=1e-6)
    assert r["bits_per_byte"] == pytest.approx(
        nll / math.log(2) / sum(len(t.encode()) for t in texts), rel=1e-6
    )
    assert bits_per_byte(model, tok, texts) == pytest.approx(r["bits_per_byte"])
    # a random model is near-uniform over 128K tokens: ~17 bits per token
    assert 10 < r["nll_per_token"] / math.log(2) < 25
    with pytest.raises(HerdError):
        perplexity(model, tok, ["", ""])


def test_cut_at_stop():
    assert cut_at_stop("    return x\n\ndef g():", ["\ndef", "\nclass"]) == "    return x\n"
    assert cut_at_stop("no stop here", ["\n\n"]) == "no stop here"


def test_empty_continuation_is_an_error(tiny):
    model, _ = tiny
    with pytest.raises(HerdError):
        loglikelihood_tokens(model, [([1, 2], [])])


@pytest.mark.gpu
def test_scoring_on_cuda_matches_cpu(tiny):
    import copy

    model, tok = tiny
    reqs = [("The capital of France is", " Paris"), ("1, 2, 3,", " 4, 5")]
    cpu = loglikelihood(model, tok, reqs)
    gpu_model = copy.deepcopy(model).cuda()
    gpu = loglikelihood(gpu_model, tok, reqs)
    assert [g[0] for g in gpu] == pytest.approx([c[0] for c in cpu], abs=1e-3)
    assert perplexity(gpu_model, tok, ["Some text."])["perplexity"] == pytest.approx(
        perplexity(model, tok, ["Some text."])["perplexity"], rel=1e-3
    )
