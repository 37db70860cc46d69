"""LoRA: only the adapters train; merged weights give the adapter model's logits."""

import pytest
import torch
from torch import nn

from herd.errors import HerdError
from herd.posttrain.lora import LoRALinear, apply_lora, lora_parameters, merge_lora


def _randomise_adapters(model):
    with torch.no_grad():
        for p in lora_parameters(model):
            p.normal_(0, 0.05)


def test_only_adapters_get_gradients(tiny_model):
    base_names = {n for n, _ in tiny_model.named_parameters()}
    wrapped = apply_lora(tiny_model, rank=4, alpha=8, targets="wq,wv,w2")
    assert len(wrapped) == 3 * tiny_model.args.n_layers
    _randomise_adapters(tiny_model)
    tokens = torch.randint(0, 200, (2, 12))
    tiny_model(tokens).logsumexp(-1).mean().backward()
    for n, p in tiny_model.named_parameters():
        if n.endswith(("lora_A", "lora_B")):
            assert p.requires_grad and p.grad is not None and p.grad.abs().sum() > 0, n
        else:
            assert n in base_names
            assert not p.requires_grad and p.grad is None, n
    n_adapter = sum(p.numel() for p in lora_parameters(tiny_model))
    d, kv = tiny_model.args.dim, tiny_model.args.n_kv_heads * tiny_model.args.head_dim
    h = tiny_model.args.ffn_hidden_dim
    assert n_adapter == tiny_model.args.n_layers * 4 * ((d + d) + (d + kv) + (h + d))


def test_fresh_adapter_changes_nothing(tiny_model):
    tokens = torch.randint(0, 200, (1, 10))
    before = tiny_model(tokens)
    apply_lora(tiny_model, rank=2)
    assert torch.equal(tiny_model(tokens), before)


def test_merged_logits_equal_adapter_logits(tiny_model):
    apply_lora(tiny_model, rank=4, alpha=16, targets="wq,wk,wv,wo,w1,w2,w3,output")
    _randomise_adapters(tiny_model)
    tokens = torch.randint(0, 200, (2, 16))
    with torch.no_grad():
        adapted = tiny_model(tokens)
        merge_lora(tiny_model)
        merged = tiny_model(tokens)
    assert not any(isinstance(m, LoRALinear) for m in tiny_model.modules())
    assert all(type(m.attention.wq) is nn.Linear for m in tiny_model.layers)
    assert torch.allclose(merged, adapted, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(merged, torch.zeros_like(merged))
    keys = set(tiny_model.state_dict())
    assert not any("lora" in k for k in keys) and "layers.0.attention.wq.weight" in keys


def test_lora_arguments_checked(tiny_model):
    with pytest.raises(HerdError, match="rank"):
        apply_lora(tiny_model, rank=0)
    with pytest.raises(HerdError, match="unknown"):
        apply_lora(tiny_model, rank=2, targets="wq,bogus")
