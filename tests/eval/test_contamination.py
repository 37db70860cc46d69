"""Contamination finds planted overlaps in real herd token shards; memorization's inclusion rate
is 1 for spans the model reproduces and 0 for random ones."""

import json

import numpy as np
import pytest

from herd.errors import HerdError
from herd.eval.contamination import (
    NgramIndex,
    contamination,
    hash_ngrams,
    memorization,
    sample_spans,
    split_by_contamination,
)

WORDS = (
    "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi rho sigma tau "
    "upsilon phi chi psi omega apple river stone cloud maple orbit violet copper harbor"
).split()


def random_doc(rng, n=200):
    return " ".join(rng.choice(WORDS, size=n))


def test_hashes_match_ngrams():
    rng = np.random.default_rng(0)
    t = rng.integers(0, 5000, size=1000)
    h = hash_ngrams(t, 8)
    assert len(h) == 993
    lookup = {tuple(t[i : i + 8]): h[i] for i in range(993)}
    assert all(lookup[tuple(t[i : i + 8])] == h[i] for i in range(993))
    assert len(set(h.tolist())) == len(lookup)  # distinct n-grams, distinct hashes


def test_planted_overlaps_in_token_shards(tmp_path, tokenizer):
    from herd.data.tokenize import tokenize_files

    rng = np.random.default_rng(1)
    docs = [random_doc(rng) for _ in range(40)]
    planted = "The quick brown fox jumps over the lazy dog while the cat sleeps on the warm mat today."
    docs[17] = docs[17] + " " + planted + " " + random_doc(rng, 30)
    src = tmp_path / "train.jsonl"
    src.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    tokenize_files(
        [src],
        tokenizer,
        tmp_path / "tokens",
        val_fraction=0.0,
        workers=1,
        shard_tokens=3000,
        chunk_docs=4,
        progress=False,
    )
    index = NgramIndex.build(tmp_path / "tokens", out_dir=tmp_path / "index")
    assert len(index.tables) > 1  # several shards

    clean = "Completely unrelated question about photosynthesis in green plants and sunlight."
    half = "Quiz: " + planted + " Then explain why the sky is blue during the day at noon."
    examples = [clean, " " + planted, half, docs[3]]
    ids = [tokenizer.encode(e) for e in examples]
    fr = contamination(index, ids)
    assert fr[0] == 0.0 and fr[1] == 1.0 and fr[3] == 1.0
    # without its leading space the first token differs from the training text's: only it is clean
    alone = tokenizer.encode(planted)
    assert index.covered(alone).tolist() == [False] + [True] * (len(alone) - 1)
    # exactly the planted tokens are covered in the half-contaminated example
    mask = index.covered(ids[2])
    planted_ids = tokenizer.encode(" " + planted)
    start = next(i for i in range(len(ids[2])) if ids[2][i : i + len(planted_ids)] == planted_ids)
    assert mask[start + 1 : start + len(planted_ids) - 1].all()
    assert not mask[:start].any() and not mask[start + len(planted_ids) + 1 :].any()
    assert 0.3 < fr[2] < 0.8

    # the saved index gives the same answers
    again = NgramIndex.load(tmp_path / "index")
    assert contamination(again, ids) == fr
    # plain token arrays work too
    flat = NgramIndex.build([np.array(tokenizer.encode(d), dtype=np.uint32) for d in docs])
    assert contamination(flat, ids)[:2] == [0.0, 1.0]

    split = split_by_contamination([True, False, True, False], [0.0, 1.0, 0.2, 0.9], 0.5)
    assert split["clean"] == {"n": 2, "score": 1.0} and split["contaminated"] == {"n": 2, "score": 0.0}
    assert split["contaminated_fraction"] == 0.5
    with pytest.raises(HerdError):
        split_by_contamination([True], [0.1, 0.2], 0.5)
    with pytest.raises(HerdError):
        NgramIndex.load(tmp_path)


def test_memorization_inclusion_rate(tiny):
    """Training data made of the model's own greedy continuations is 'memorized' (rate 1);
    random tokens are not (rate 0)."""
    from herd.inference import Generator

    model, tok = tiny
    rng = np.random.default_rng(0)
    prefixes = [rng.integers(0, tok.n_words - 256, size=50).tolist() for _ in range(3)]
    outs = Generator(model, None).generate(prefixes, max_new_tokens=50, temperature=0.0, stop_tokens=[])
    memorized = [np.array(p + o.tokens, dtype=np.uint32) for p, o in zip(prefixes, outs)]
    res = memorization(model, memorized, n_samples=3, seed=0)
    assert res["inclusion_rate"] == 1.0 and res["n"] == 3
    random_data = [rng.integers(0, tok.n_words - 256, size=100).astype(np.uint32) for _ in range(3)]
    assert memorization(model, random_data, n_samples=3)["inclusion_rate"] == 0.0
    spans = sample_spans(memorized, 4, 100, seed=1)
    assert all(len(s) == 100 for s in spans)
