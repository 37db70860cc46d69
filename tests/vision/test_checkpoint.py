"""Vision checkpoints (paper §7): Meta <-> herd <-> HF round trips are bit-exact, `herd convert`
detects vision checkpoints and moves them both ways, bad files give one clear line."""

import json

import pytest
import torch
from safetensors.torch import load_file
from vision_util import CONFIGS, sharpen_

from herd.checkpoint import load_model
from herd.cli import main
from herd.vision.checkpoint import load_vision_state_dict, save_vision, vision_format
from herd.vision.model import VisionLlama


def _model(a, seed=3, zero_unused=True):
    model = VisionLlama.build(a, seed=seed)
    with torch.no_grad():
        for k, v in sharpen_(model.state_dict(), torch.Generator().manual_seed(seed)).items():
            model.state_dict()[k].copy_(v)
        if zero_unused:  # grid cells no aspect ratio reads: HF's layout has no place for them
            used = torch.zeros(a.max_num_tiles, a.max_num_tiles, dtype=torch.bool)
            for h, w in a.supported_aspect_ratios():
                used[:h, :w] = True
            enc = model.vision_model.vision_encoder
            for p in (enc.gated_positional_embedding, enc.pre_tile_pos_embed.embedding,
                      enc.post_tile_pos_embed.embedding):
                p[~used] = 0
    return model


def _same(sd1, sd2):
    assert sd1.keys() == sd2.keys()
    for k in sd1:
        assert sd1[k].dtype == sd2[k].dtype and torch.equal(sd1[k], sd2[k]), k


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_round_trips_are_bit_exact(tmp_path, dtype):
    a = CONFIGS["gqa2-4tiles"]
    model = _model(a).to(dtype)
    sd = model.state_dict()
    save_vision(model, tmp_path / "herd", to="herd")
    assert vision_format(tmp_path / "herd") == "herd"
    # herd -> meta -> herd -> hf -> herd -> hf -> meta, all by `herd convert`
    steps = [("herd", "meta"), ("meta", "herd2"), ("herd2", "hf"), ("hf", "herd3"), ("herd3", "hf2"),
             ("hf2", "meta2")]
    for src, dst in steps:
        to = dst.rstrip("0123456789")
        assert main(["convert", str(tmp_path / src), str(tmp_path / dst), "--to", to]) == 0
        assert vision_format(tmp_path / dst) == to
        a2, back = load_vision_state_dict(tmp_path / dst)
        assert a2 == a
        _same(back, sd)
    hf1, hf2 = (load_file(tmp_path / "hf" / "model.safetensors"),
                load_file(tmp_path / "hf2" / "model.safetensors"))
    _same(hf1, hf2)
    assert json.loads((tmp_path / "meta" / "params.json").read_text()) == \
        json.loads((tmp_path / "meta2" / "params.json").read_text())
    m1 = torch.load(tmp_path / "meta" / "consolidated.00.pth", weights_only=True)
    m2 = torch.load(tmp_path / "meta2" / "consolidated.00.pth", weights_only=True)
    _same(m1, m2)
    assert list(m1) == list(sd)  # Meta's key order


def test_unused_tile_cells_are_dropped_by_hf_only(tmp_path):
    """Meta -> herd -> Meta keeps every cell; through HF the cells no aspect ratio reads come back
    as zeros and nothing a forward pass reads changes."""
    a = CONFIGS["gqa2-4tiles"]
    model = _model(a, zero_unused=False)
    save_vision(model, tmp_path / "meta", to="meta")
    assert main(["convert", str(tmp_path / "meta"), str(tmp_path / "herd"), "--to", "herd"]) == 0
    _same(load_vision_state_dict(tmp_path / "herd")[1], model.state_dict())
    assert main(["convert", str(tmp_path / "herd"), str(tmp_path / "hf"), "--to", "hf"]) == 0
    back, _ = load_model(tmp_path / "hf")
    grid = back.vision_model.vision_encoder.gated_positional_embedding
    assert (grid[3, 3].abs().max() == 0
            and model.vision_model.vision_encoder.gated_positional_embedding[3, 3].abs().max() > 0)
    from vision_util import random_inputs

    tokens, images, ids, armask, cam = random_inputs(a, 2, 10, 2, seed=5, image_at=[[0, 5], [1, 6]])
    with torch.no_grad():
        assert torch.equal(back(tokens, images, ids, armask, cam), model(tokens, images, ids, armask, cam))


def test_convert_dtype_and_bad_input(tmp_path, capsys):
    a = CONFIGS["mha-2tiles"]
    save_vision(_model(a), tmp_path / "m", to="meta")
    assert main(["convert", str(tmp_path / "m"), str(tmp_path / "b"), "--to", "hf", "--dtype", "bf16"]) == 0
    assert all(v.dtype == torch.bfloat16 for v in load_file(tmp_path / "b" / "model.safetensors").values())
    assert main(["convert", str(tmp_path / "m"), str(tmp_path / "x"), "--to", "meta", "--shards", "2"]) == 2
    assert "one model-parallel shard" in capsys.readouterr().err
    params = json.loads((tmp_path / "m" / "params.json").read_text())
    params["vision_num_cross_attention_layers"] = 2
    (tmp_path / "m" / "params.json").write_text(json.dumps(params))
    assert main(["convert", str(tmp_path / "m"), str(tmp_path / "y"), "--to", "herd"]) == 2
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]
    assert last.startswith("herd: error:") and "missing tensor" in last and "Traceback" not in err
    assert not (tmp_path / "y").exists()
