"""Model averaging: uniform and weighted averages equal the hand-made ones; incompatible
checkpoints are refused with a clear line."""

import pytest
import torch

from herd.checkpoint import load_model, save_herd
from herd.errors import HerdError
from herd.model import Transformer
from herd.posttrain.average import average_checkpoints


@pytest.fixture
def three(tmp_path, tok, make_args):
    paths = []
    for seed in range(3):
        m = Transformer.build(make_args(), seed=seed)
        paths.append(save_herd(m, tmp_path / f"m{seed}", tokenizer=tok))
    return paths


def _sd(p):
    return load_model(p)[0].state_dict()


def test_uniform_and_weighted(tmp_path, three):
    sds = [_sd(p) for p in three]
    average_checkpoints(three, tmp_path / "avg")
    avg = _sd(tmp_path / "avg")
    for k in avg:
        assert torch.allclose(avg[k], (sds[0][k] + sds[1][k] + sds[2][k]) / 3, atol=1e-6)
    average_checkpoints(three[:2], tmp_path / "w", weights=[3, 1])
    w = _sd(tmp_path / "w")
    for k in w:
        assert torch.allclose(w[k], 0.75 * sds[0][k] + 0.25 * sds[1][k], atol=1e-6)
    assert load_model(tmp_path / "w")[1] is not None  # the tokenizer goes along


def test_incompatible_refused(tmp_path, tok, three, make_args):
    other = save_herd(Transformer.build(make_args(dim=64), seed=0), tmp_path / "wide", tokenizer=tok)
    with pytest.raises(HerdError, match=r"not compatible with .*m0: model config field dim is 64 vs 32"):
        average_checkpoints([three[0], other], tmp_path / "x")
    with pytest.raises(HerdError, match="at least two"):
        average_checkpoints([three[0]], tmp_path / "x")
    with pytest.raises(HerdError, match="one per checkpoint"):
        average_checkpoints(three, tmp_path / "x", weights=[1, 2])
    with pytest.raises(HerdError, match="positive sum"):
        average_checkpoints(three[:2], tmp_path / "x", weights=[0, 0])
    assert not (tmp_path / "x").exists()


def test_one_implementation_for_polyak_and_checkpoints(three):
    """herd.train.average.average_state_dicts is what `herd average` runs and what pretraining's
    Polyak average of the annealing snapshots needs: uniform, it equals sum(sd) / n in float64 cast
    to fp32 bit for bit (the trainer's formula); mismatched tensors are refused, naming the source."""
    from herd.checkpoint.herd_format import load_herd_state_dict
    from herd.train.average import average_state_dicts

    sds = [load_herd_state_dict(p) for p in three]
    got = average_state_dicts(iter(sds), dtype=torch.float32)
    for k in sds[0]:
        ref = ((sds[0][k].double() + sds[1][k].double() + sds[2][k].double()) / 3).float()
        assert torch.equal(got[k], ref)
    w = average_state_dicts(sds[:2], [3, 1])
    assert all(torch.allclose(w[k], 0.75 * sds[0][k] + 0.25 * sds[1][k], atol=1e-7) for k in w)
    bad = dict(sds[1])
    bad.pop(next(iter(bad)))
    with pytest.raises(HerdError, match="b is not compatible with a: tensor .* is in one only"):
        average_state_dicts([sds[0], bad], names=["a", "b"])
    k = next(iter(sds[0]))
    bad = dict(sds[1], **{k: torch.zeros(3)})
    with pytest.raises(HerdError, match=f"tensor {k} has shape"):
        average_state_dicts([sds[0], bad])
    with pytest.raises(HerdError, match="nothing to average"):
        average_state_dicts([])
