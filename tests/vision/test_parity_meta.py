"""Llama 3.2 Vision logits equal Meta's llama-models reference (`llama3/multimodal/model.py`, run as
the text parity tests run Meta's code: one-process gloo group, fairscale), paper §7.

Meta's random weights (sharpened to a trained model's scale, every gate non-zero) are saved as
Meta's own checkpoint (consolidated.00.pth + params.json), loaded by herd's `load_model`, and both
models see the same HF-layout inputs: 1-4 tiles of several aspect ratios, one or two images per
row, text before and after each image, rows that see no image. fp32, max |diff| <= 1e-5."""

import json

import pytest
import torch
from vision_util import CONFIGS, MetaReference, meta_group, random_inputs, sharpen_

from herd.checkpoint import load_model
from herd.model import Transformer
from herd.vision.checkpoint import save_vision, vision_args_to_params
from herd.vision.model import VisionLlama

pytest.importorskip("fairscale")
pytest.importorskip("llama_models")

TOL = 1e-5

# (config, batch, tokens, images per row, position of each image per row, tile layout per image)
CASES = {
    "gqa2-4tiles-two-images": ("gqa2-4tiles", 2, 14, 2, [[0, 6], [3, 9]], [[7, 1], [4, 2]]),
    "gqa2-4tiles-text-first": ("gqa2-4tiles", 1, 12, 1, [[5]], [[5]]),
    "gqa4-3xattn-1tile": ("gqa4-3xattn", 2, 10, 1, [[0], [4]], [[0], [3]]),
    "gqa4-3xattn-random": ("gqa4-3xattn", 3, 16, 2, [[1, 7], [2, 12], [0, 5]], None),
    "mha-2tiles": ("mha-2tiles", 2, 9, 1, [[2], [0]], [[1], [2]]),
}


@pytest.fixture(scope="module")
def meta_env():
    teardown = meta_group()
    yield
    teardown()


def _meta_model(a, seed):
    ref = MetaReference(a, vision_args_to_params(a))
    ref.load_state_dict(sharpen_(ref.state_dict(), torch.Generator().manual_seed(seed)), strict=True)
    return ref


@pytest.mark.parametrize("case", list(CASES))
def test_meta_checkpoint_loads_with_reference_logits(tmp_path, meta_env, case):
    cfg, batch, T, n_img, at, tiles = CASES[case]
    a = CONFIGS[cfg]
    ref = _meta_model(a, seed=len(case))
    d = tmp_path / "meta"
    d.mkdir()
    torch.save(ref.state_dict(), d / "consolidated.00.pth")
    (d / "params.json").write_text(json.dumps(vision_args_to_params(a)))
    model, _ = load_model(d)
    assert isinstance(model, VisionLlama) and model.args == a
    tokens, images, ids, armask, cam = random_inputs(a, batch, T, n_img, seed=3, image_at=at, tiles=tiles)
    expected = ref.logits(tokens, images, ids, cam)
    with torch.no_grad():
        ours = model(tokens, images, ids, armask, cam)
    assert expected.abs().max() > 1.0
    assert (ours - expected).abs().max().item() <= TOL
    # the image changes the logits of the rows that see it (the adapter is live) ...
    with torch.no_grad():
        other = model(tokens, images.flip(-1), ids, armask, cam)
    sees = cam.flatten(2).any(-1)
    assert (other - ours)[sees].abs().max() > 100 * TOL
    # ... and not those of rows before the first image (Meta's rows-without-image mask)
    assert torch.equal(other[~sees], ours[~sees])


def test_herd_meta_export_runs_in_reference(tmp_path, meta_env):
    """herd model -> Meta's checkpoint -> Meta's model (strict load): same logits."""
    a = CONFIGS["gqa2-4tiles"]
    model = VisionLlama.build(a, seed=5).eval()
    with torch.no_grad():
        for k, v in sharpen_(model.state_dict(), torch.Generator().manual_seed(6)).items():
            model.state_dict()[k].copy_(v)
    save_vision(model, tmp_path / "m", to="meta")
    ref = MetaReference(a, json.loads((tmp_path / "m" / "params.json").read_text()))
    ref.load_state_dict(torch.load(tmp_path / "m" / "consolidated.00.pth", weights_only=True), strict=True)
    tokens, images, ids, armask, cam = random_inputs(a, 2, 11, 1, seed=4, image_at=[[1], [4]],
                                                     tiles=[[7], [3]])
    with torch.no_grad():
        ours = model(tokens, images, ids, armask, cam)
    assert (ours - ref.logits(tokens, images, ids, cam)).abs().max().item() <= TOL


def _text_model(model):
    text = Transformer.build(model.args.text, init=False)
    text.load_state_dict({k: v for k, v in model.text_model.state_dict().items()
                          if not k.startswith(("cross_attention_layers.", "learnable_embedding."))})
    return text


@pytest.mark.parametrize("cfg", list(CONFIGS))
def test_zero_gates_equal_the_text_model_exactly(cfg):
    """Fresh adapter (cross-attention gates at 0): with images and every token seeing them, the
    logits are the text model's bit for bit; without images the blocks are skipped."""
    a = CONFIGS[cfg]
    model = VisionLlama.build(a, seed=1).eval()
    with torch.no_grad():
        for k, v in sharpen_(model.state_dict(), torch.Generator().manual_seed(2)).items():
            if (not k.startswith("text_model.cross_attention_layers")
                    or not k.endswith(("gate_attn", "gate_ffwd"))):
                model.state_dict()[k].copy_(v)
    text = _text_model(model)
    tokens, images, ids, armask, cam = random_inputs(a, 2, 12, 1, seed=9, image_at=[[0], [0]])
    tokens[:, 0] = 7  # a text token where the processor put <|image|>: the text model can read the prompt
    with torch.no_grad():
        want = text(tokens)
        assert torch.equal(model(tokens, images, ids, armask, cam), want)
        assert torch.equal(model(tokens), want)
        for blk in model.text_model.cross_attention_layers:
            blk.gate_attn.fill_(0.3)
        assert not torch.equal(model(tokens, images, ids, armask, cam), want)
