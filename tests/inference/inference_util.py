"""Tiny models for the inference tests (imported by the tests and by conftest.py)."""


def tiny_args(vocab_size=512, **kw):
    from herd.model.args import ModelArgs

    d = dict(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=vocab_size, multiple_of=32,
             max_seq_len=256, use_scaled_rope=True)
    d.update(kw)
    return ModelArgs(**d)


def tiny_model(seed=0, **kw):
    from herd.model.transformer import Transformer

    return Transformer.build(tiny_args(**kw), seed=seed)
