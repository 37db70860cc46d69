"""Logits parity with Hugging Face transformers' LlamaForCausalLM (paper §3.2 model), both ways:
herd -> HF export loaded by `from_pretrained`, and a checkpoint written by HF's own
`save_pretrained` loaded by herd. fp32, max abs difference <= 1e-4 on small random configs
covering GQA 1/4/8, tied and untied output, with and without Llama 3.1 RoPE scaling, up to 512 tokens."""

import pytest
import torch

from herd.checkpoint import load_model
from herd.checkpoint.hf import hf_config_to_args, save_hf
from herd.model import ModelArgs, Transformer

transformers = pytest.importorskip("transformers")

TOL = 1e-4

CONFIGS = {
    # name: (ModelArgs overrides, batch, seq)
    "gqa1-untied-plain": (dict(dim=128, n_heads=4, n_kv_heads=4, vocab_size=512, use_scaled_rope=False), 2,
                          512),
    "gqa4-untied-scaled": (dict(dim=256, n_heads=4, n_kv_heads=1, vocab_size=384, use_scaled_rope=True), 1,
                           512),
    "gqa8-tied-scaled": (dict(dim=256, n_heads=8, n_kv_heads=1, vocab_size=320, use_scaled_rope=True,
                              tie_embeddings=True), 2, 300),
    "gqa4-tied-3.2": (dict(dim=128, n_heads=4, n_kv_heads=1, vocab_size=256, use_scaled_rope=True,
                           rope_scale_factor=32.0, tie_embeddings=True, ffn_dim_multiplier=1.5), 3, 77),
    "gqa2-untied-theta10k": (dict(dim=64, n_heads=4, n_kv_heads=2, vocab_size=200, rope_theta=10000.0,
                                  use_scaled_rope=True, rope_old_context_len=256, ffn_dim_multiplier=1.3), 2,
                             512),
}


def _args(over):
    base = dict(n_layers=2, multiple_of=32, max_seq_len=512, norm_eps=1e-5)
    return ModelArgs(**{**base, **over})


def sharpen(model):
    """Re-draw every projection with std 1/sqrt(fan_in), the scale of a trained model: with the
    small training init the attention is nearly uniform and adds little to the residual stream,
    so RoPE (and its scaling) would hardly show in the logits."""
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for layer in model.layers:
            for lin in (layer.attention.wq, layer.attention.wk, layer.attention.wv, layer.attention.wo,
                        layer.feed_forward.w1, layer.feed_forward.w2, layer.feed_forward.w3):
                w = lin.weight
                w.copy_(torch.randn(w.shape, generator=g) / w.shape[1] ** 0.5)
        if model.args.tie_embeddings:  # logits of order 1 through the shared matrix
            w = model.tok_embeddings.weight
            w.copy_(torch.randn(w.shape, generator=g) / w.shape[1] ** 0.5)
    return model


def _hf_logits(path, tokens):
    m = transformers.LlamaForCausalLM.from_pretrained(str(path), dtype=torch.float32).eval()
    with torch.no_grad():
        return m(tokens).logits.float(), m


@pytest.mark.parametrize("name", list(CONFIGS))
def test_herd_matches_hf_llama(tmp_path, name):
    over, batch, seq = CONFIGS[name]
    args = _args(over)
    model = sharpen(Transformer.build(args, seed=1).eval())
    tokens = torch.randint(0, args.vocab_size, (batch, seq), generator=torch.Generator().manual_seed(2))
    save_hf(model, tmp_path / "hf")
    ref, hf_model = _hf_logits(tmp_path / "hf", tokens)
    with torch.no_grad():
        ours = model(tokens)
    assert ours.abs().max() > 0.5  # real logits, not a degenerate model
    assert (ours - ref).abs().max().item() <= TOL
    assert hf_model.config.tie_word_embeddings == args.tie_embeddings
    if args.tie_embeddings:
        assert hf_model.lm_head.weight.data_ptr() == hf_model.model.embed_tokens.weight.data_ptr()
    if args.use_scaled_rope:  # the scaling matters at this length: the test would catch a wrong one
        with torch.no_grad():
            plain = Transformer.build(args.replace(use_scaled_rope=False), init=False)
            plain.load_state_dict(model.state_dict())
            assert (plain(tokens) - ours).abs().max() > 100 * TOL


def test_hf_save_pretrained_loads_in_herd(tmp_path):
    """A checkpoint written by transformers itself (its config style, its key names)."""
    cfg = transformers.LlamaConfig(
        vocab_size=300, hidden_size=128, intermediate_size=352, num_hidden_layers=2, num_attention_heads=8,
        num_key_value_heads=2, max_position_embeddings=512, rms_norm_eps=1e-5, tie_word_embeddings=False,
        rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
                         "high_freq_factor": 4.0, "original_max_position_embeddings": 8192})
    torch.manual_seed(3)
    hf = transformers.LlamaForCausalLM(cfg).eval()
    with torch.no_grad():
        for p in hf.parameters():  # HF's init is too small to give distinctive logits; norms stay 1
            if p.dim() == 2:
                p.normal_(0, p.shape[1] ** -0.5)
    hf.save_pretrained(tmp_path / "hfsp")
    model, tok = load_model(tmp_path / "hfsp")
    assert tok is None and model.args.use_scaled_rope and model.args.n_kv_heads == 2
    assert model.args.ffn_hidden_dim == 352
    tokens = torch.randint(0, 300, (2, 256), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        ref = hf(tokens).logits
        ours = model(tokens)
    assert ours.abs().max() > 0.5
    assert (ours - ref).abs().max().item() <= TOL


def test_transformers4_style_config_reads_the_same():
    """transformers 4 wrote rope_theta + rope_scaling; 5 writes rope_parameters. Same ModelArgs."""
    common = dict(model_type="llama", hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                  num_attention_heads=32, num_key_value_heads=8, vocab_size=128256, rms_norm_eps=1e-5,
                  max_position_embeddings=131072, tie_word_embeddings=False)
    scaling = {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 8192, "rope_type": "llama3"}
    a4 = hf_config_to_args({**common, "rope_theta": 500000.0, "rope_scaling": scaling})
    a5 = hf_config_to_args({**common, "rope_parameters": {**scaling, "rope_theta": 500000.0}})
    assert a4 == a5
    from herd.model import get_preset

    assert a4.num_params() == get_preset("llama3.1-8b").num_params()
    assert a4.use_scaled_rope and a4.rope_scale_factor == 8.0 and a4.ffn_hidden_dim == 14336
