"""Test helper: a Hugging Face `LlamaForCausalLM` with the same weights as a herd model.

Uses herd.checkpoint.hf when it exists; otherwise converts here: HF applies RoPE with
rotate_half (first half / second half of each head) where Meta rotates interleaved pairs, so the
rows of wq and wk are permuted per head, as HF's convert_llama_weights_to_hf.py does."""

from __future__ import annotations

import torch


def _permute(w: torch.Tensor, n_heads: int) -> torch.Tensor:
    out_dim, dim = w.shape
    return w.view(n_heads, out_dim // n_heads // 2, 2, dim).transpose(1, 2).reshape(out_dim, dim)


def hf_config(a, attn="sdpa"):
    from transformers import LlamaConfig

    rope = {"rope_type": "default", "rope_theta": a.rope_theta}
    if a.use_scaled_rope:
        rope = {"rope_type": "llama3", "rope_theta": a.rope_theta, "factor": a.rope_scale_factor,
                "low_freq_factor": a.rope_low_freq_factor, "high_freq_factor": a.rope_high_freq_factor,
                "original_max_position_embeddings": a.rope_old_context_len}
    return LlamaConfig(vocab_size=a.vocab_size, hidden_size=a.dim, intermediate_size=a.ffn_hidden_dim,
                       num_hidden_layers=a.n_layers, num_attention_heads=a.n_heads,
                       num_key_value_heads=a.n_kv_heads,
                       max_position_embeddings=a.max_seq_len, rms_norm_eps=a.norm_eps, rope_parameters=rope,
                       tie_word_embeddings=a.tie_embeddings, attention_bias=False, mlp_bias=False,
                       bos_token_id=None, eos_token_id=None, pad_token_id=None, attn_implementation=attn)


def to_hf(model, attn="sdpa"):
    """A LlamaForCausalLM (fp32, eval) with `model`'s weights: through herd's own HF export
    (`save_hf`) when it exists, else through the conversion below."""
    from transformers import LlamaForCausalLM

    try:
        from herd.checkpoint.hf import save_hf
    except ImportError:
        return _to_hf_here(model, attn)
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        save_hf(model, d)
        return LlamaForCausalLM.from_pretrained(d, attn_implementation=attn, dtype=torch.float32).eval()


def _to_hf_here(model, attn="sdpa"):
    from transformers import LlamaForCausalLM

    a = model.args
    hf = LlamaForCausalLM(hf_config(a, attn)).eval()
    sd = model.state_dict()
    new = {"model.embed_tokens.weight": sd["tok_embeddings.weight"], "model.norm.weight": sd["norm.weight"],
           "lm_head.weight": sd["output.weight"]}
    for i in range(a.n_layers):
        p, q = f"layers.{i}.", f"model.layers.{i}."
        new[q + "self_attn.q_proj.weight"] = _permute(sd[p + "attention.wq.weight"], a.n_heads)
        new[q + "self_attn.k_proj.weight"] = _permute(sd[p + "attention.wk.weight"], a.n_kv_heads)
        new[q + "self_attn.v_proj.weight"] = sd[p + "attention.wv.weight"]
        new[q + "self_attn.o_proj.weight"] = sd[p + "attention.wo.weight"]
        new[q + "mlp.gate_proj.weight"] = sd[p + "feed_forward.w1.weight"]
        new[q + "mlp.down_proj.weight"] = sd[p + "feed_forward.w2.weight"]
        new[q + "mlp.up_proj.weight"] = sd[p + "feed_forward.w3.weight"]
        new[q + "input_layernorm.weight"] = sd[p + "attention_norm.weight"]
        new[q + "post_attention_layernorm.weight"] = sd[p + "ffn_norm.weight"]
    missing, unexpected = hf.load_state_dict(new, strict=False)
    missing = [m for m in missing if not (a.tie_embeddings and m == "lm_head.weight")]
    assert not missing and not unexpected, (missing, unexpected)
    return hf


def hf_greedy(hf, prompts: list[list[int]], max_new_tokens: int) -> list[list[int]]:
    """HF greedy generation with left padding and an attention mask; new ids per prompt (no stop)."""
    P = max(len(p) for p in prompts)
    ids = torch.zeros(len(prompts), P, dtype=torch.long)
    am = torch.zeros(len(prompts), P, dtype=torch.long)
    for b, p in enumerate(prompts):
        ids[b, P - len(p):] = torch.tensor(p)
        am[b, P - len(p):] = 1
    with torch.no_grad():
        out = hf.generate(input_ids=ids, attention_mask=am, max_new_tokens=max_new_tokens,
                          min_new_tokens=max_new_tokens, do_sample=False, pad_token_id=0, eos_token_id=None)
    return out[:, P:].tolist()
