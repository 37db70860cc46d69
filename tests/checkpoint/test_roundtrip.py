"""Checkpoint round trips (paper §3.2 models): herd -> HF -> herd and Meta -> herd -> Meta keep
every tensor bit for bit; Meta model-parallel shards merge as llama-models' own `reshard_mp` does;
`herd convert` between all formats; sharded HF safetensors; the tokenizer travels beside."""

import json

import pytest
import torch

from herd.checkpoint import convert_checkpoint, detect_format, load_model, read_args, save_herd
from herd.checkpoint.hf import load_hf, save_hf
from herd.checkpoint.meta import load_meta, load_meta_state_dict, save_meta, split_state_dict
from herd.cli import main
from herd.model import ModelArgs, Transformer


def _model(**over):
    a = dict(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=320, multiple_of=16, max_seq_len=128,
             use_scaled_rope=True)
    return Transformer.build(ModelArgs(**{**a, **over}), seed=11)


def _same(a: dict, b: dict):
    assert set(a) == set(b)
    for k in a:
        assert a[k].dtype == b[k].dtype, k
        assert torch.equal(a[k], b[k]), k


@pytest.mark.parametrize("tied", [False, True])
def test_herd_hf_herd_bit_exact(tmp_path, tied):
    m = _model(tie_embeddings=tied, rope_scale_factor=32.0 if tied else 8.0)
    save_hf(m, tmp_path / "hf")
    m2, _ = load_hf(tmp_path / "hf")
    assert m2.args == m.args
    _same(m.state_dict(), m2.state_dict())
    if tied:
        assert m2.output.weight is m2.tok_embeddings.weight
    # and through the converter, as bf16 files: herd -> hf -> herd keeps bf16 bits
    save_herd(m.to(torch.bfloat16), tmp_path / "h")
    convert_checkpoint(tmp_path / "h", tmp_path / "hf2", "hf", log=lambda s: None)
    convert_checkpoint(tmp_path / "hf2", tmp_path / "h2", "herd", log=lambda s: None)
    from safetensors.torch import load_file

    _same(load_file(tmp_path / "h" / "model.safetensors"), load_file(tmp_path / "h2" / "model.safetensors"))
    assert read_args(tmp_path / "h2") == m.args


def test_hf_sharded_safetensors(tmp_path):
    m = _model()
    save_hf(m, tmp_path / "hf", max_shard_bytes=40_000)
    index = json.loads((tmp_path / "hf" / "model.safetensors.index.json").read_text())
    files = set(index["weight_map"].values())
    assert len(files) > 3 and not (tmp_path / "hf" / "model.safetensors").exists()
    assert index["weight_map"]["model.layers.0.self_attn.q_proj.weight"] in files
    m2, _ = load_model(tmp_path / "hf")
    _same(m.state_dict(), m2.state_dict())


def test_hf_rotary_permutation_is_the_conversion_scripts():
    """HF's convert_llama_weights_to_hf `permute`: Meta row 2i -> HF row i, 2i+1 -> d/2 + i."""
    from herd.checkpoint.hf import hf_to_meta_rows, meta_to_hf_rows

    heads, hd, dim = 3, 8, 5
    w = torch.arange(heads * hd * dim, dtype=torch.float32).view(heads * hd, dim)
    hf = meta_to_hf_rows(w, heads)
    for h in range(heads):
        for i in range(hd // 2):
            assert torch.equal(hf[h * hd + i], w[h * hd + 2 * i])
            assert torch.equal(hf[h * hd + hd // 2 + i], w[h * hd + 2 * i + 1])
    assert torch.equal(hf_to_meta_rows(hf, heads), w)


def _meta_dir(tmp_path, sd, params, name="meta"):
    d = tmp_path / name
    d.mkdir()
    torch.save(sd, d / "consolidated.00.pth")
    (d / "params.json").write_text(json.dumps(params))
    return d


def _meta_params():
    # as Meta writes it: no max_seq_len, no herd fields
    return {"dim": 64, "n_layers": 2, "n_heads": 4, "n_kv_heads": 2, "vocab_size": 320, "multiple_of": 16,
            "ffn_dim_multiplier": 1.3, "norm_eps": 1e-05, "rope_theta": 500000.0, "use_scaled_rope": True}


def test_meta_herd_meta_bit_exact(tmp_path):
    params = _meta_params()
    m = Transformer.build(read_args_from(params), seed=5)
    sd = {k: v.to(torch.bfloat16) for k, v in m.state_dict().items()}  # Meta ships bf16
    src = _meta_dir(tmp_path, sd, params)
    assert detect_format(src) == "meta"
    convert_checkpoint(src, tmp_path / "herd", "herd", log=lambda s: None)
    convert_checkpoint(tmp_path / "herd", tmp_path / "back", "meta", log=lambda s: None)
    back = torch.load(tmp_path / "back" / "consolidated.00.pth", weights_only=True)
    _same(sd, back)
    assert list(back) == list(sd)  # Meta's key order too
    assert json.loads((tmp_path / "back" / "params.json").read_text()) == params
    # through a model in fp32: the bf16 values survive exactly
    model, _ = load_meta(src)
    save_meta(model, tmp_path / "back32")
    back32 = torch.load(tmp_path / "back32" / "consolidated.00.pth", weights_only=True)
    _same(sd, {k: v.to(torch.bfloat16) for k, v in back32.items()})


def read_args_from(params):
    from herd.checkpoint.meta import params_to_args

    return params_to_args(params).replace(max_seq_len=128)


def test_two_shards_merge_like_llama_models(tmp_path):
    """save_meta(shards=2) cuts exactly as llama-models' reshard_mp does (wq/wk/wv/w1/w3/output/
    tok_embeddings along dim 0, wo/w2 along dim 1, norms replicated), and loads back to the same
    model as the 1-shard checkpoint."""
    pytest.importorskip("fairscale")
    from llama_models.checkpoint import reshard_mp

    m = _model(n_kv_heads=2)
    save_meta(m, tmp_path / "one")
    save_meta(m, tmp_path / "two", shards=2)
    s0 = torch.load(tmp_path / "two" / "consolidated.00.pth", weights_only=True)
    s1 = torch.load(tmp_path / "two" / "consolidated.01.pth", weights_only=True)
    assert s0["layers.0.attention.wo.weight"].shape == (64, 32)
    assert s0["tok_embeddings.weight"].shape == (160, 64)
    full = torch.load(tmp_path / "one" / "consolidated.00.pth", weights_only=True)
    for rank, ours in enumerate((s0, s1)):
        _same(reshard_mp([full], size=2, rank=rank), ours)
    _same(reshard_mp([s0, s1], size=1, rank=0), full)
    a1, sd1 = load_meta_state_dict(tmp_path / "one")
    a2, sd2 = load_meta_state_dict(tmp_path / "two")
    assert a1 == a2 == m.args
    _same(sd1, sd2)
    m2, _ = load_model(tmp_path / "two")
    _same(m.state_dict(), m2.state_dict())
    # and back to 2 shards through the converter
    convert_checkpoint(tmp_path / "one", tmp_path / "two_again", "meta", shards=2, log=lambda s: None)
    _same(s1, torch.load(tmp_path / "two_again" / "consolidated.01.pth", weights_only=True))


def test_more_ranks_than_kv_heads_dedupes(tmp_path):
    """405B at MP16 has 8 KV heads: each rank holds a copy of its query group's KV head."""
    m = _model(n_heads=4, n_kv_heads=2)
    sd = m.state_dict()
    parts = split_state_dict({k: v for k, v in sd.items() if "wk" not in k and "wv" not in k}, 4, 4)
    hd = m.args.head_dim
    for k in sd:
        if ".wk." in k or ".wv." in k:
            for r in range(4):
                parts[r][k] = sd[k][(r // 2) * hd:(r // 2 + 1) * hd].clone()
    d = tmp_path / "mp4"
    d.mkdir()
    for r, p in enumerate(parts):
        torch.save(p, d / f"consolidated.{r:02d}.pth")
    (d / "params.json").write_text(json.dumps({**_meta_params(), "ffn_dim_multiplier": None,
                                               "max_seq_len": 128}))
    m2, _ = load_model(d)
    _same(m.state_dict(), m2.state_dict())


def test_tied_meta_checkpoint_is_recognised(tmp_path):
    """Llama 3.2 1B/3B: Meta's files store output = tok_embeddings and params.json has no factor;
    herd ties them and uses 3.2's RoPE factor 32."""
    m = _model(tie_embeddings=True, rope_scale_factor=32.0)
    sd = dict(m.state_dict())
    sd["output.weight"] = sd["tok_embeddings.weight"].clone()
    params = {**_meta_params(), "ffn_dim_multiplier": None, "max_seq_len": 128}
    d = _meta_dir(tmp_path, sd, params)
    m2, _ = load_model(d)
    assert m2.args.tie_embeddings and m2.args.rope_scale_factor == 32.0
    assert m2.args == m.args
    _same(m.state_dict(), m2.state_dict())


def test_tokenizer_travels_beside(tmp_path):
    from herd.tokenizer import Tokenizer

    ranks = {bytes([i]): i for i in range(256)} | {b"he": 256, b"ll": 257, b"hell": 258, b"hello": 259}
    tok = Tokenizer(ranks)  # a small byte-level BPE with the 256 Llama 3 special tokens
    m = _model(vocab_size=tok.n_words, dim=32, n_layers=1, n_heads=2, n_kv_heads=1)
    save_meta(m, tmp_path / "meta", tokenizer=tok)
    _, t2 = load_model(tmp_path / "meta")
    assert t2.encode("hello world") == tok.encode("hello world")
    rc = main(["convert", str(tmp_path / "meta"), str(tmp_path / "hf"), "--to", "hf"])
    assert rc == 0
    cfg = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert cfg["bos_token_id"] == tok.bos_id == 260 and cfg["eos_token_id"] == tok.stop_tokens
    m3, t3 = load_model(tmp_path / "hf")
    assert t3.n_words == tok.n_words
    _same(m.state_dict(), m3.state_dict())


def test_convert_cli_all_directions_and_dtype(tmp_path, capsys):
    m = _model()
    save_herd(m, tmp_path / "herd")
    assert main(["convert", str(tmp_path / "herd"), str(tmp_path / "meta"), "--to", "meta",
                 "--shards", "2"]) == 0
    assert main(["convert", str(tmp_path / "meta"), str(tmp_path / "hf"), "--to", "hf",
                 "--dtype", "bf16"]) == 0
    assert main(["convert", str(tmp_path / "hf"), str(tmp_path / "herd2"), "--to", "herd"]) == 0
    m2, _ = load_model(tmp_path / "herd2")
    cfg = json.loads((tmp_path / "herd2" / "config.json").read_text())
    assert cfg["dtype"] == "bfloat16"
    _same({k: v.to(torch.bfloat16).float() for k, v in m.state_dict().items()}, m2.state_dict())
    out = capsys.readouterr()
    assert "writing hf checkpoint" in out.err and str(tmp_path / "herd2") in out.out


def test_info_on_presets_and_checkpoints(tmp_path, capsys):
    for name, count in (("llama3.1-8b", "8.03B"), ("llama3.1-70b", "70.6B"), ("llama3.1-405b", "405.9B")):
        assert main(["info", name]) == 0
        out = capsys.readouterr().out
        assert f"parameters             {count}" in out
    assert main(["info", "llama3-8b", "--seq-len", "8192", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    n, nonemb = 8030261248, 8030261248 - 128256 * 4096
    assert d["parameters"] == n and d["non_embedding_parameters"] == nonemb
    assert d["train_flops_per_token"] == 6 * nonemb + 12 * 32 * 4096 * 8192
    assert d["budget_tokens"] == 20 * n
    m = _model()
    save_hf(m, tmp_path / "hf")
    assert main(["info", str(tmp_path / "hf"), "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["format"] == "hf" and d["parameters"] == m.num_params() and d["n_kv_heads"] == 2
    assert main(["info", "--list"]) == 0
    assert "herd-5m" in capsys.readouterr().out


@pytest.mark.parametrize("fmt", ["herd", "hf", "meta"])
def test_load_in_bf16(tmp_path, fmt):
    """Loaders cast on the meta device (no fp32 copy first): parameters in bf16, tying kept, RoPE
    tables in fp32 (as Meta's reference keeps freqs_cis), logits within bf16 noise of fp32."""
    from herd.model.transformer import rope_table

    m = _model(tie_embeddings=True).eval()
    {"herd": save_herd, "hf": save_hf, "meta": save_meta}[fmt](m, tmp_path / fmt)
    got, _ = load_model(tmp_path / fmt, dtype=torch.bfloat16)
    assert got.output.weight is got.tok_embeddings.weight
    _same({k: v.to(torch.bfloat16) for k, v in m.state_dict().items()}, got.state_dict())
    cos, sin = rope_table(m.args, m.args.max_seq_len)
    assert got.rope_cos.dtype == torch.float32
    assert torch.equal(got.rope_cos, cos) and torch.equal(got.rope_sin, sin)
    tokens = torch.randint(0, 320, (1, 64), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = m(tokens)
        assert (got(tokens) - ref).abs().max() < 0.05 * ref.abs().max()


def test_loaded_weights_are_private_to_the_model(tmp_path):
    """Parameters may lie in the memory-mapped file (zero-copy), but writing them never changes it."""
    m = _model()
    for name, save in (("herd", save_herd), ("meta", save_meta), ("hf", save_hf)):
        save(m, tmp_path / name)
        got, _ = load_model(tmp_path / name)
        with torch.no_grad():
            for p in got.parameters():
                p.add_(1.0)
        again, _ = load_model(tmp_path / name)
        _same(m.state_dict(), again.state_dict())
