"""Logits parity with Meta's reference model (llama-models 0.3.0 `llama3/model.py`, fairscale
layers in a one-process gloo group), paper §3.2. Both directions go through Meta's file format:
a state dict of Meta's own model saved as consolidated.00.pth + params.json is loaded by herd, and
herd's `save_meta` export is loaded into Meta's model with `load_state_dict(strict=True)`.
fp32, max abs difference <= 1e-4; GQA 1/4/8, with and without the Llama 3.1 RoPE scaling (Meta's
reference hard-codes factor 8), up to 512 tokens. Meta's model has no tied embeddings, so a tied
herd model is compared through its Meta export (output = embedding)."""

import json
import tempfile

import pytest
import torch

from herd.checkpoint import load_model
from herd.checkpoint.meta import save_meta
from herd.model import ModelArgs, Transformer

pytest.importorskip("fairscale")
pytest.importorskip("llama_models")

TOL = 1e-4

CONFIGS = {
    "gqa1-plain": (dict(dim=128, n_heads=4, n_kv_heads=4, vocab_size=512, use_scaled_rope=False), 2, 512),
    "gqa4-scaled": (dict(dim=256, n_heads=4, n_kv_heads=1, vocab_size=384, use_scaled_rope=True,
                         ffn_dim_multiplier=1.3), 1, 512),
    "gqa8-scaled-theta10k": (dict(dim=256, n_heads=8, n_kv_heads=1, vocab_size=320, use_scaled_rope=True,
                                  rope_theta=10000.0), 2, 300),
    "gqa2-plain-short": (dict(dim=64, n_heads=4, n_kv_heads=2, vocab_size=200, use_scaled_rope=False,
                              ffn_dim_multiplier=1.5), 3, 33),
}


def _args(over):
    return ModelArgs(**{**dict(n_layers=2, multiple_of=32, max_seq_len=512, norm_eps=1e-5), **over})


@pytest.fixture(scope="module")
def meta_ref():
    """Meta's Transformer class, with the one-process model-parallel group it needs."""
    import torch.distributed as dist
    from fairscale.nn.model_parallel import initialize as fs_init
    from llama_models.llama3.args import ModelArgs as MetaArgs
    from llama_models.llama3.model import Transformer as MetaTransformer

    created = not dist.is_initialized()
    if created:
        init_file = tempfile.NamedTemporaryFile(prefix="herd-gloo-", delete=False).name
        dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=0, world_size=1)
    mp_created = not fs_init.model_parallel_is_initialized()
    if mp_created:
        fs_init.initialize_model_parallel(1)

    def build(params: dict, batch: int):
        return MetaTransformer(MetaArgs(max_batch_size=batch, **params)).eval()

    yield build
    if mp_created:
        fs_init.destroy_model_parallel()
    if created:
        dist.destroy_process_group()


def sharpen_(sd: dict, gen: torch.Generator) -> dict:
    """Trained-model scale for every matrix (std 1/sqrt(fan_in)), norms 1, embeddings N(0, 1):
    makes attention peaked so that RoPE shows in the logits."""
    out = {}
    for k, v in sd.items():
        if v.dim() == 1:
            out[k] = torch.ones_like(v)
        elif k == "tok_embeddings.weight":
            out[k] = torch.randn(v.shape, generator=gen)
        else:
            out[k] = torch.randn(v.shape, generator=gen) / v.shape[1] ** 0.5
    return out


@pytest.mark.parametrize("name", list(CONFIGS))
def test_meta_checkpoint_loads_with_reference_logits(tmp_path, meta_ref, name):
    """Meta's model with random weights -> consolidated.00.pth -> herd: same logits."""
    over, batch, seq = CONFIGS[name]
    args = _args(over)
    from herd.checkpoint.meta import args_to_params

    params = args_to_params(args)
    ref = meta_ref(params, batch)
    sd = sharpen_(ref.state_dict(), torch.Generator().manual_seed(7))
    ref.load_state_dict(sd, strict=True)
    d = tmp_path / "meta"
    d.mkdir()
    torch.save(ref.state_dict(), d / "consolidated.00.pth")
    (d / "params.json").write_text(json.dumps(params))

    model, _ = load_model(d)
    assert model.args == args
    tokens = torch.randint(0, args.vocab_size, (batch, seq), generator=torch.Generator().manual_seed(8))
    expected = ref(tokens, 0)
    with torch.no_grad():
        ours = model(tokens)
    assert expected.abs().max() > 0.5
    assert (ours - expected).abs().max().item() <= TOL
    if args.use_scaled_rope:  # the scaling changes these logits far beyond the tolerance
        plain = Transformer.build(args.replace(use_scaled_rope=False), init=False)
        plain.load_state_dict(model.state_dict())
        with torch.no_grad():
            assert (plain(tokens) - ours).abs().max() > 100 * TOL


@pytest.mark.parametrize("tied", [False, True])
def test_herd_meta_export_runs_in_reference(tmp_path, meta_ref, tied):
    """herd model -> save_meta -> Meta's model (strict load): same logits, GQA 4, scaled RoPE."""
    args = _args(dict(dim=128, n_heads=8, n_kv_heads=2, vocab_size=300, use_scaled_rope=True,
                      tie_embeddings=tied))
    model = Transformer.build(args, seed=3).eval()
    with torch.no_grad():
        for k, v in sharpen_(model.state_dict(), torch.Generator().manual_seed(9)).items():
            if not (tied and k == "output.weight"):
                model.state_dict()[k].copy_(v)
        if tied:
            model.tok_embeddings.weight.mul_(args.dim ** -0.5)  # output = embedding: logits of order 1
    save_meta(model, tmp_path / "m")
    params = json.loads((tmp_path / "m" / "params.json").read_text())
    ref = meta_ref(params, 2)
    ref.load_state_dict(torch.load(tmp_path / "m" / "consolidated.00.pth", weights_only=True), strict=True)
    tokens = torch.randint(0, 300, (2, 400), generator=torch.Generator().manual_seed(10))
    expected = ref(tokens, 0)
    with torch.no_grad():
        ours = model(tokens)
    assert expected.abs().max() > 0.5
    assert (ours - expected).abs().max().item() <= TOL
