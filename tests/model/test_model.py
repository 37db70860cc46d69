"""The Llama 3 model: presets, parameter counts, meta-device build, document mask, KV cache."""

import pytest
import torch

from herd.errors import HerdError
from herd.model import KVCache, ModelArgs, Transformer, get_preset


def test_paper_parameter_counts():
    # paper Table 3 / llama-models: 8.03B, 70.6B, 405.9B (the 405B rounds up from 405.85B).
    assert round(get_preset("llama3.1-8b").num_params() / 1e9, 2) == 8.03
    assert round(get_preset("llama3.1-70b").num_params() / 1e9, 1) == 70.6
    assert round(get_preset("llama3.1-405b").num_params() / 1e9, 1) == 405.9
    assert get_preset("llama3.1-405b").ffn_hidden_dim == 53248
    assert get_preset("llama3-70b").ffn_hidden_dim == 28672


def test_405b_builds_on_meta_device():
    m = Transformer.build(get_preset("llama3.1-405b"), device="meta")
    assert m.tok_embeddings.weight.is_meta
    assert m.num_params() == get_preset("llama3.1-405b").num_params()
    assert len(m.layers) == 126 and m.layers[0].attention.wk.weight.shape == (1024, 16384)


def test_small_presets_sizes():
    assert 4e6 < get_preset("herd-5m").num_params() < 7e6
    assert 15e6 < get_preset("herd-20m").num_params() < 30e6
    assert 80e6 < get_preset("herd-100m").num_params() < 130e6


def test_tied_preset_shares_weight():
    a = get_preset("llama3.2-1b", dim=64, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=300, max_seq_len=64)
    m = Transformer.build(a, seed=0)
    assert m.output.weight is m.tok_embeddings.weight
    assert m.num_params() == a.num_params()


@pytest.fixture
def tiny():
    a = ModelArgs(dim=64, n_layers=2, n_heads=4, n_kv_heads=1, vocab_size=128, multiple_of=16,
                  max_seq_len=256, use_scaled_rope=True)
    return Transformer.build(a, seed=0)


def test_document_mask_gives_each_document_its_own_logits(tiny):
    d1, d2, d3 = (torch.randint(0, 128, (1, n)) for n in (37, 50, 11))
    packed = torch.cat([d1, d2, d3], 1)
    doc_ids = torch.tensor([[0] * 37 + [1] * 50 + [2] * 11])
    with torch.no_grad():
        lp = tiny(packed, doc_ids=doc_ids)
        assert torch.allclose(lp[:, :37], tiny(d1), atol=1e-5)
        assert torch.allclose(lp[:, 37:87], tiny(d2), atol=1e-5)
        assert torch.allclose(lp[:, 87:], tiny(d3), atol=1e-5)
        # batch rows with different packings
        batch = torch.cat([packed, torch.cat([d3, d2, d1], 1)])
        ids = torch.cat([doc_ids, torch.tensor([[0] * 11 + [1] * 50 + [2] * 37])])
        lb = tiny(batch, doc_ids=ids)
        assert torch.allclose(lb[1, :11], tiny(d3)[0], atol=1e-5)


def test_kv_cache_decode_matches_full_forward(tiny):
    x = torch.randint(0, 128, (3, 40))
    with torch.no_grad():
        full = tiny(x)
        cache = KVCache(tiny.args, 3, 64)
        outs = [tiny(x[:, :25], cache=cache, cache_pos=0)]
        for i in range(25, 40):
            outs.append(tiny(x[:, i:i + 1], cache=cache, cache_pos=i))
    assert torch.allclose(torch.cat(outs, 1), full, atol=1e-5)


def test_bad_config_and_preset_are_clear_errors():
    with pytest.raises(HerdError, match="unknown model preset"):
        get_preset("llama9-1t")
    with pytest.raises(HerdError, match="divisible"):
        ModelArgs(dim=100, n_heads=3)
    with pytest.raises(HerdError, match="unknown field"):
        ModelArgs.from_dict({"dim": 64, "n_heads": 4, "bogus": 1})


def test_too_long_sequence_is_clear_error(tiny):
    with pytest.raises(HerdError, match="max_seq_len"):
        tiny(torch.zeros(1, 300, dtype=torch.long))
