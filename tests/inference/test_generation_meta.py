"""Generation parity with Meta's reference model (llama-models `llama3/model.py`, its own KV cache
driven by `start_pos`): herd's Generator (the model's one forward for prefill, the packed decode
step after it) produces the same greedy ids and the same per-step logits, GQA and scaled RoPE."""

import json
import tempfile

import pytest
import torch

from herd.checkpoint.meta import save_meta
from herd.inference import Generator
from herd.model import ModelArgs, Transformer

pytest.importorskip("fairscale")
pytest.importorskip("llama_models")


@pytest.fixture(scope="module")
def meta_model():
    import torch.distributed as dist
    from fairscale.nn.model_parallel import initialize as fs_init
    from llama_models.llama3.args import ModelArgs as MetaArgs
    from llama_models.llama3.model import Transformer as MetaTransformer

    created = not dist.is_initialized()
    if created:  # a file rendezvous: no port to race for
        init_file = tempfile.NamedTemporaryFile(prefix="herd-gloo-", delete=False).name
        dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=0, world_size=1)
    mp_created = not fs_init.model_parallel_is_initialized()
    if mp_created:
        fs_init.initialize_model_parallel(1)
    yield lambda params, batch: MetaTransformer(MetaArgs(max_batch_size=batch, **params)).eval()
    if mp_created:
        fs_init.destroy_model_parallel()
    if created:
        dist.destroy_process_group()


def _sharpen(model: Transformer, seed: int):
    """Trained-model scale (std 1/sqrt(fan_in)) so greedy paths are not ties."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for k, v in model.state_dict().items():
            if v.dim() == 1:
                v.fill_(1.0)
            elif k == "tok_embeddings.weight":
                v.copy_(torch.randn(v.shape, generator=g))
            else:
                v.copy_(torch.randn(v.shape, generator=g) / v.shape[1] ** 0.5)


@pytest.mark.parametrize("n_kv_heads", [1, 2])
def test_greedy_generation_matches_meta_reference(tmp_path, meta_model, n_kv_heads):
    args = ModelArgs(dim=128, n_layers=2, n_heads=4, n_kv_heads=n_kv_heads, vocab_size=256, multiple_of=32,
                     max_seq_len=128, use_scaled_rope=True)
    model = Transformer.build(args, seed=1).eval()
    _sharpen(model, 5)
    save_meta(model, tmp_path / "m")
    ref = meta_model(json.loads((tmp_path / "m" / "params.json").read_text()), 1)
    ref.load_state_dict(torch.load(tmp_path / "m" / "consolidated.00.pth", weights_only=True), strict=True)

    prompt = torch.randint(0, 256, (1, 17), generator=torch.Generator().manual_seed(3)).tolist()[0]
    steps = 24
    # Meta's loop: prefill at start_pos 0, then one token at a time at start_pos = its position
    ids, ref_logits = list(prompt), []
    lg = ref(torch.tensor([ids]), 0)[:, -1]
    for _ in range(steps):
        ref_logits.append(lg[0])
        nxt = int(lg.argmax(-1))
        ids.append(nxt)
        lg = ref(torch.tensor([[nxt]]), len(ids) - 1)[:, -1]
    expected = ids[len(prompt):]

    for pack in (True, False):
        gen = Generator(model, max_batch=1, pack=pack)
        out = gen.generate([prompt], max_new_tokens=steps, temperature=0.0, stop_tokens=[])
        assert out[0].tokens == expected
    # the same logits at every step through the model's forward with a cache
    from herd.model import KVCache

    cache = KVCache(args, 1, 64)
    with torch.inference_mode():
        lg = model(torch.tensor([prompt]), cache=cache, cache_pos=0, last_only=True)[:, -1]
        for i, t in enumerate(expected[:-1]):
            assert (lg[0] - ref_logits[i]).abs().max().item() <= 1e-4
            lg = model(torch.tensor([[t]]), cache=cache, cache_pos=len(prompt) + i)[:, -1]
