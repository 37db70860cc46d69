"""Quantization: the paper's FP8 recipe (FFN only, first/last layers skipped, row-wise scales, the
1200 bound on the dynamic activation scale) and int8 weight-only; error bounds against fp32 are
the ones documented in docs/inference.md."""

import copy

import pytest
import torch
from torch import nn

from inference_util import tiny_model
from herd.errors import HerdError
from herd.inference import Generator
from herd.inference.quant import (FP8_ACT_UB, FP8_MAX, Fp8Linear, Int8Linear, fp8_quantize_rows,
                                  int8_quantize_rows, quantize, quantize_fp8, quantize_int8)


def _rel(a, b):
    return ((a - b).norm() / b.norm()).item()


@pytest.fixture(scope="module")
def model4():
    return tiny_model(seed=1, n_layers=4)


def test_fp8_skips_first_last_layers_and_attention(model4):
    m = copy.deepcopy(model4)
    before = {k: v.clone() for k, v in m.state_dict().items()}
    assert quantize_fp8(m) == [1, 2]
    for i, layer in enumerate(m.layers):
        ff = layer.feed_forward
        kind = Fp8Linear if i in (1, 2) else nn.Linear
        assert all(type(getattr(ff, n)) is kind for n in ("w1", "w2", "w3"))
        assert all(type(getattr(layer.attention, n)) is nn.Linear for n in ("wq", "wk", "wv", "wo"))
    after = m.state_dict()
    for k, v in before.items():
        if ".feed_forward." in k and k.split(".")[1] in ("1", "2"):
            continue
        assert torch.equal(after[k], v), k  # everything else untouched, bit for bit
    # the skipped layers compute exactly what they did
    x = torch.randn(2, 5, m.args.dim)
    for i in (0, 3):
        assert torch.equal(m.layers[i].feed_forward(x), model4.layers[i].feed_forward(x))


def test_fp8_row_scales_and_e4m3():
    w = torch.randn(8, 32) * torch.logspace(-2, 1, 8)[:, None]
    q, s = fp8_quantize_rows(w)
    assert q.dtype == torch.float8_e4m3fn and s.shape == (8,)
    assert torch.allclose(s, w.abs().amax(1) / FP8_MAX)
    assert torch.equal(q.float().abs().amax(1), torch.full((8,), FP8_MAX))  # each row's max maps to 448
    assert _rel(q.float() * s[:, None], w) < 0.04


def test_fp8_activation_bound_1200_with_outlier():
    torch.manual_seed(0)
    x = torch.randn(3, 64)
    x[1, 7] = 5000.0  # an outlier activation in row 1
    q, s = fp8_quantize_rows(x, FP8_ACT_UB)
    assert s[1].item() == pytest.approx(FP8_ACT_UB / FP8_MAX)  # scale capped at 1200 / 448
    deq = q.float() * s[:, None]
    assert deq[1, 7].item() == pytest.approx(FP8_ACT_UB)  # the outlier saturates at the bound
    for r in (0, 2):  # other rows have their own scales, unaffected by the outlier
        assert s[r].item() == pytest.approx(x[r].abs().max().item() / FP8_MAX)
    # without the bound the outlier would take the scale of its whole row
    _, s_nb = fp8_quantize_rows(x, None)
    assert s_nb[1].item() == pytest.approx(5000.0 / FP8_MAX)
    # and Fp8Linear applies exactly this: output = bounded-quantized x @ quantized W
    w = torch.randn(16, 64) * 0.05
    lin = Fp8Linear(w)
    wq, ws = fp8_quantize_rows(w)
    ref = deq @ (wq.float() * ws[:, None]).t()
    assert torch.allclose(lin(x), ref, rtol=1e-5, atol=1e-4)
    assert lin(x)[1].sub(x[1] @ w.t()).abs().max() > 1.0  # the saturation is visible in the output


def test_fp8_error_bound_vs_fp32(model4):
    torch.manual_seed(0)
    w, x = torch.randn(256, 128) * 0.02, torch.randn(32, 128)
    assert _rel(Fp8Linear(w)(x), x @ w.t()) < 0.05  # one layer: e4m3 has 3 mantissa bits
    m = quantize(copy.deepcopy(model4), "fp8")
    tokens = torch.randint(0, 512, (2, 48))
    with torch.no_grad():
        ref, out = model4(tokens), m(tokens)
    assert _rel(out, ref) < 0.01


def test_int8_weights_and_error_bound(model4):
    torch.manual_seed(0)
    w, x = torch.randn(256, 128) * 0.02, torch.randn(32, 128)
    q, s = int8_quantize_rows(w)
    assert q.dtype == torch.int8 and q.abs().max() == 127 and torch.allclose(s, w.abs().amax(1) / 127)
    assert _rel(Int8Linear(w)(x), x @ w.t()) < 0.015
    m = copy.deepcopy(model4)
    assert quantize_int8(m) == 4 * 7 + 1
    assert m.tok_embeddings.weight.dtype == torch.float32 and torch.equal(m.tok_embeddings.weight,
                                                                          model4.tok_embeddings.weight)
    tokens = torch.randint(0, 512, (2, 48))
    with torch.no_grad():
        ref, out = model4(tokens), m(tokens)
    assert _rel(out, ref) < 0.02
    assert (out.argmax(-1) == ref.argmax(-1)).float().mean() > 0.9


@pytest.mark.parametrize("mode", ["fp8", "int8"])
def test_quantized_generation_runs_and_mostly_agrees(model4, mode):
    m = quantize(copy.deepcopy(model4), mode)
    prompts = [[1, 2, 3, 4], [9, 8]]
    a = Generator(model4).generate(prompts, max_new_tokens=8)
    b = Generator(m).generate(prompts, max_new_tokens=8)
    assert all(len(o.tokens) == 8 for o in b)
    assert a[0].tokens[:2] == b[0].tokens[:2]


def test_unknown_quant_mode(model4):
    with pytest.raises(HerdError, match="fp8 or int8"):
        quantize(copy.deepcopy(model4), "int4")


@pytest.mark.gpu
def test_fp8_scaled_mm_matches_cpu_reference():
    torch.manual_seed(0)
    w, x = torch.randn(256, 128) * 0.02, torch.randn(32, 128)
    x[3, 5] = 4000.0
    lin = Fp8Linear(w)
    cpu = lin(x)
    gpu = lin.cuda()(x.cuda()).cpu()
    assert _rel(gpu, cpu) < 0.01  # bf16 output of _scaled_mm


@pytest.mark.gpu
def test_int8_cuda_matches_cpu():
    torch.manual_seed(0)
    w, x = torch.randn(256, 128) * 0.02, torch.randn(32, 128)
    lin = Int8Linear(w)
    assert _rel(lin.cuda()(x.cuda()).cpu(), x @ w.t()) < 0.015
