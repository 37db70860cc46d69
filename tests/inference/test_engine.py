"""The generation engine: exact greedy parity with HF `generate` (batch 1 and a ragged left-padded
batch), prompt-prefill sharing, stops, seeds, streaming and bad input."""

import pytest
import torch

from inference_util import tiny_model
from herd.errors import HerdError
from herd.inference import Generator, TextStreamer, stream_text

PROMPTS = [[5, 6, 7, 8, 9, 10, 11], [3, 4], list(range(20, 60)), [100]]


@pytest.fixture(scope="module")
def hf(model):
    from hf_util import to_hf

    return to_hf(model)


def test_hf_logits_match(model, hf):
    x = torch.randint(0, 512, (2, 30))
    with torch.no_grad():
        assert torch.allclose(hf(x).logits, model(x), atol=1e-4)


def test_greedy_matches_hf_batch1(model, hf):
    from hf_util import hf_greedy

    gen = Generator(model)
    for p in PROMPTS[1:3]:
        assert gen.generate([p], max_new_tokens=16)[0].tokens == hf_greedy(hf, [p], 16)[0]


def test_greedy_matches_hf_ragged_batch(model, hf):
    from hf_util import hf_greedy

    outs = Generator(model).generate(PROMPTS, max_new_tokens=24)
    ref = hf_greedy(hf, PROMPTS, 24)
    assert [o.tokens for o in outs] == ref
    assert [o.prompt_index for o in outs] == [0, 1, 2, 3]
    assert all(o.stop_reason == "length" and len(o.tokens) == 24 for o in outs)


def test_engine_logits_match_model(model):
    """The engine's own cached forward gives the model's logits (prefill and each decode step)."""
    gen = Generator(model)
    seq = torch.randint(0, 512, (1, 40))
    ref = model(seq)[0]
    cache = gen.cache_for(1, 40)
    pos = torch.arange(30)[None]
    got = gen.forward(seq[:, :30], pos, cache, 0, 30, None, all_logits=True)[0]
    assert torch.allclose(got, ref[:30], atol=1e-5)
    for t in range(30, 40):
        lg = gen.forward(seq[:, t:t + 1], torch.tensor([[t]]), cache, t, t + 1, None)
        assert torch.allclose(lg[0], ref[t], atol=1e-4)


def test_prefill_last_position_only_matches_full_pass(model):
    """Prefill runs the last layer for the last position only; its logits and the cache it leaves
    are those of the full pass (left-padded rows under a mask: test_greedy_matches_hf_ragged_batch)."""
    gen = Generator(model)
    seq = torch.randint(0, 512, (2, 24))
    ref = model(seq)[:, -1]
    cache = gen.cache_for(2, 32)
    got = gen.forward(seq, torch.arange(24)[None].expand(2, 24), cache, 0, 24, None)
    assert got.shape == ref.shape and torch.allclose(got, ref, atol=1e-5)
    k, v = cache.k[:, :2, :, :24].clone(), cache.v[:, :2, :, :24].clone()
    cache.k.zero_(), cache.v.zero_()
    gen.forward(seq, torch.arange(24)[None].expand(2, 24), cache, 0, 24, None, all_logits=True)
    assert torch.allclose(k, cache.k[:, :2, :, :24], atol=1e-6) and k.abs().sum() > 0
    assert torch.allclose(v, cache.v[:, :2, :, :24], atol=1e-6)
    # several tokens after the first slot without a mask: refused, as in every other layer
    with pytest.raises(ValueError, match="mask is needed"):
        gen.forward(seq[:, :4], torch.arange(24, 28)[None].expand(2, 4), cache, 24, 30, None)


def test_max_batch_chunks_and_samples_share_prefill(model):
    gen = Generator(model, max_batch=3)
    alone = [Generator(model).generate([p], max_new_tokens=12)[0].tokens for p in PROMPTS]
    outs = gen.generate(PROMPTS, max_new_tokens=12, num_samples=2)
    assert [(o.prompt_index, o.sample_index) for o in outs] == [(i, j) for i in range(4) for j in range(2)]
    assert [o.tokens for o in outs] == [alone[i] for i in range(4) for _ in range(2)]


def test_sampling_seed_reproducible_and_samples_differ(model):
    gen = Generator(model)
    a = gen.generate(PROMPTS[:2], max_new_tokens=16, temperature=1.0, seed=7, num_samples=3)
    b = gen.generate(PROMPTS[:2], max_new_tokens=16, temperature=1.0, seed=7, num_samples=3)
    c = gen.generate(PROMPTS[:2], max_new_tokens=16, temperature=1.0, seed=8, num_samples=3)
    assert [o.tokens for o in a] == [o.tokens for o in b]
    assert [o.tokens for o in a] != [o.tokens for o in c]
    assert len({tuple(o.tokens) for o in a[:3]}) == 3  # the K samples of one prompt are distinct draws


def test_stop_tokens(model):
    gen = Generator(model)
    full = gen.generate([PROMPTS[0]], max_new_tokens=20)[0].tokens
    stop = full[5]
    first = full.index(stop)
    out = gen.generate([PROMPTS[0]], max_new_tokens=20, stop_tokens=[stop])[0]
    assert out.tokens == full[:first] and out.stop_reason == "stop_token"


def test_tokenizer_stop_reasons_and_on_token(tok_model, small_tokenizer):
    tok = small_tokenizer
    gen = Generator(tok_model, tokenizer=tok)
    prompt = tok.encode("Hello there", bos=True)
    full = gen.generate([prompt], max_new_tokens=10, stop_tokens=[])[0].tokens
    k = next(i for i in range(2, 10) if full[i] not in full[:i])
    for name, reason in [("eot_id", "end_of_turn"), ("eom_id", "end_of_message"), ("eos_id", "end_of_text")]:
        # swap output rows so the model says this stop token where it said full[k]
        sid = getattr(tok, name)
        w = tok_model.output.weight
        seen = []
        with torch.no_grad():
            saved = w[[sid, full[k]]].clone()
            w[sid], w[full[k]] = saved[1], saved[0]
            try:
                out = gen.generate([prompt], max_new_tokens=10,
                                   on_token=lambda i, j, t: seen.append((i, j, t)))[0]
            finally:
                w[sid], w[full[k]] = saved[0], saved[1]
        assert out.tokens == full[:k] and out.stop_reason == reason
        assert seen == [(0, 0, t) for t in full[:k]]  # streamed as produced, stop token not streamed
        assert out.text == tok.decode(full[:k])


def test_context_limit_stops_with_length(model):
    gen = Generator(model, max_seq_len=40)
    out = gen.generate([list(range(30))], max_new_tokens=100)[0]
    assert len(out.tokens) == 10 and out.stop_reason == "length"


@pytest.mark.parametrize("kw, msg", [
    (dict(temperature=-1.0), "temperature"), (dict(temperature=float("nan")), "temperature"),
    (dict(top_p=0.0), "top_p"), (dict(top_p=1.5), "top_p"), (dict(top_k=-2), "top_k"),
    (dict(max_new_tokens=0), "max_new_tokens"), (dict(num_samples=0), "num_samples"),
])
def test_invalid_sampling_values(model, kw, msg):
    with pytest.raises(HerdError, match=msg):
        Generator(model).generate([[1, 2]], **kw)


def test_bad_prompts(model):
    gen = Generator(model)
    with pytest.raises(HerdError, match="context"):
        gen.generate([list(range(1, 300))])
    with pytest.raises(HerdError, match="vocabulary"):
        gen.generate([[1, 99999]])
    with pytest.raises(HerdError, match="empty"):
        gen.generate([[]])
    with pytest.raises(HerdError, match="non-empty"):
        gen.generate([])
    with pytest.raises(HerdError, match="integer"):
        gen.generate([[1.5, 2]])
    # numpy / tensor ids are fine
    import numpy as np

    a = gen.generate([torch.tensor([5, 6, 7]), np.array([5, 6, 7])], max_new_tokens=3)
    assert a[0].tokens == a[1].tokens == gen.generate([[5, 6, 7]], max_new_tokens=3)[0].tokens


def test_stream_never_splits_utf8(small_tokenizer):
    tok = small_tokenizer
    text = "naïve café — 日本語 🦙 ok"
    ids = tok.encode(text)
    # byte-level tokens: at least one token ends inside a multi-byte character
    assert any(_splits(tok.id_to_piece(i)) for i in ids)
    deltas = stream_text(tok, ids)
    assert "".join(deltas) == text
    for d in deltas:
        assert "\ufffd" not in d
    s = TextStreamer(tok)
    assert s.push(ids[0]) + "".join(s.push(i) for i in ids[1:]) + s.flush() == text


def _splits(piece: bytes) -> bool:
    try:
        piece.decode("utf-8")
        return False
    except UnicodeDecodeError:
        return True


def test_other_model_shapes_greedy_match_hf():
    """MHA (no GQA), tied embeddings and unscaled RoPE: still identical to HF."""
    from hf_util import hf_greedy, to_hf

    m = tiny_model(seed=3, n_kv_heads=4, tie_embeddings=True, use_scaled_rope=False)
    outs = Generator(m).generate(PROMPTS[:3], max_new_tokens=16)
    assert [o.tokens for o in outs] == hf_greedy(to_hf(m), PROMPTS[:3], 16)


@pytest.mark.slow
def test_compiled_decode_matches_eager(model):
    """torch.compile'd decode step (static shapes, whole cache under a mask): same greedy ids."""
    eager = Generator(model).generate(PROMPTS, max_new_tokens=12)
    comp = Generator(model, compile=True).generate(PROMPTS, max_new_tokens=12)
    assert [o.tokens for o in comp] == [o.tokens for o in eager]


@pytest.mark.gpu
def test_gpu_generation_matches_cpu(model):
    import copy

    cpu = Generator(model).generate(PROMPTS, max_new_tokens=12)
    gpu_model = copy.deepcopy(model).cuda()
    for comp in (False, True):
        outs = Generator(gpu_model, compile=comp).generate(PROMPTS, max_new_tokens=12)
        assert [o.tokens for o in outs] == [o.tokens for o in cpu]
