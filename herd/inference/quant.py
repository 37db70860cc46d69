"""Quantized inference (paper §6.2): the paper's FP8 recipe and int8 weight-only decoding.

FP8, exactly as the paper deploys Llama 3 405B (and as llama-models' `quantization/loader.py` +
`quantize_impls.py` do it with FBGEMM):
- only the feed-forward weights w1, w3, w2 and their input activations are quantized; attention,
  norms, embeddings and the output layer stay in high precision;
- the first and the last transformer layers are not quantized at all;
- weights get row-wise scales (one per output channel): scale = amax(|W_row|) / 448 (e4m3 max);
- activations get dynamic row-wise scales (one per token), computed at run time from the row's
  amax, with the amax capped at an upper bound of 1200 so that a few huge activations (from
  high-perplexity tokens) cannot blow up the scale of their row; values beyond the cap saturate
  at +-448 after scaling (FBGEMM's `quantize_fp8_per_row(x, scale_ub=1200)`).
- the matmul multiplies the e4m3 operands, accumulates in fp32 and applies both scales.
On CUDA (H100/H200) this runs through `torch._scaled_mm` with row-wise scales; on CPU a reference
path computes the same quantities (e4m3 rounding through torch.float8_e4m3fn, fp32 matmul of the
exactly representable e4m3 values, then the scales), so tests check the recipe everywhere.

int8 weight-only (gpt-fast's recipe, not in the paper): every linear layer of the blocks and the
output layer keep int8 weights with one fp32 scale per output channel (amax / 127, round to
nearest); activations stay in floating point. It reads 4x fewer weight bytes than fp32, which is
what decoding is bound by. Kernels: on CPU `aten._weight_int8pack_mm` (its fp32 kernel is a slow
reference loop, so activations go through it in bf16, the fast kernel; documented error bound in
docs/inference.md) for decode (up to INT8_GEMV_ROWS rows); for prefill the int8 weights are widened
(exactly) to bf16 on a CPU with a bf16 matrix engine (else fp32) for the GEMM; on CUDA
dequantize-and-matmul (fused by torch.compile).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from herd.errors import HerdError

FP8_MAX = 448.0  # largest finite float8_e4m3fn value
FP8_ACT_UB = 1200.0  # the paper's upper bound on the dynamic activation scale (as an amax)
INT8_MAX = 127.0


# ---- FP8 ---------------------------------------------------------------------------------------
def fp8_quantize_rows(x: torch.Tensor, ub: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Row-wise e4m3 quantization of x [..., K] -> (xq float8_e4m3fn [..., K], scale fp32 [...]).
    x ~= xq * scale. With `ub`, the row amax used for the scale is capped at ub (FBGEMM's
    scale_ub), so entries above ub saturate at +-448."""
    xf = x.float()
    amax = xf.abs().amax(-1, keepdim=True)
    if ub is not None:
        amax = amax.clamp(max=ub)
    amax = amax.clamp(min=1e-12)  # an all-zero row gets a tiny scale, not a division by zero
    xq = (xf * (FP8_MAX / amax)).clamp(-FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn)
    return xq, (amax / FP8_MAX).squeeze(-1)


def fp8_matmul(xq: torch.Tensor, x_scale: torch.Tensor, wq: torch.Tensor, w_scale: torch.Tensor,
               out_dtype: torch.dtype) -> torch.Tensor:
    """(xq * x_scale) @ (wq * w_scale).T for 2-D xq [M, K], wq [N, K]; fp32 accumulation."""
    if xq.is_cuda:
        # row-wise scaling in _scaled_mm takes scales as [M, 1] and [1, N] fp32 and gives bf16
        y = torch._scaled_mm(xq, wq.t(), scale_a=x_scale[:, None].float().contiguous(),
                             scale_b=w_scale[None, :].float().contiguous(), out_dtype=torch.bfloat16,
                             use_fast_accum=True)
        return y.to(out_dtype)
    # CPU reference: e4m3 values are exact in fp32, their products too; fp32 accumulation
    y = xq.float() @ wq.float().t()
    return (y * x_scale[:, None] * w_scale[None, :]).to(out_dtype)


class Fp8Linear(nn.Module):
    """A bias-free linear layer with row-wise FP8 weights and dynamic row-wise FP8 activations."""

    def __init__(self, weight: torch.Tensor, act_ub: float | None = FP8_ACT_UB):
        super().__init__()
        wq, ws = fp8_quantize_rows(weight.detach().contiguous())
        self.register_buffer("weight", wq)
        self.register_buffer("weight_scale", ws)
        self.act_ub = act_ub
        self.in_features, self.out_features = weight.shape[1], weight.shape[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        x2 = x.reshape(-1, shape[-1])
        xq, xs = fp8_quantize_rows(x2, self.act_ub)
        y = fp8_matmul(xq, xs, self.weight, self.weight_scale, x.dtype)
        return y.view(*shape[:-1], self.out_features)

    def extra_repr(self):
        return f"in={self.in_features}, out={self.out_features}, act_ub={self.act_ub}"


def fp8_layer_ids(n_layers: int) -> list[int]:
    """The layers whose FFN the paper quantizes: all but the first and the last."""
    return list(range(1, n_layers - 1))


@torch.no_grad()
def quantize_fp8(model, act_ub: float | None = FP8_ACT_UB) -> list[int]:
    """Quantize `model` in place with the paper's FP8 recipe; returns the quantized layer ids."""
    ids = fp8_layer_ids(len(model.layers))
    for i in ids:
        ff = model.layers[i].feed_forward
        for name in ("w1", "w3", "w2"):
            setattr(ff, name, Fp8Linear(getattr(ff, name).weight, act_ub))
    return ids


# ---- int8 weight-only ------------------------------------------------------------------------
def int8_quantize_rows(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-output-channel symmetric int8: w [N, K] ~= q [N, K] int8 * scale [N] fp32."""
    wf = w.detach().float().contiguous()  # a packed weight (herd.inference.decode) is a strided view
    scale = (wf.abs().amax(-1) / INT8_MAX).clamp(min=1e-12)
    q = torch.round(wf / scale[:, None]).clamp(-INT8_MAX, INT8_MAX).to(torch.int8)
    return q, scale


INT8_GEMV_ROWS = 16  # up to this many rows (decode): the int8 GEMV kernel; more (prefill): widened GEMM
_PREFILL: list = []


def _prefill_dtype() -> torch.dtype:
    """bf16 where this CPU's bf16 GEMM is clearly faster than fp32 (herd.precision's cached probe),
    else fp32."""
    if not _PREFILL:
        from herd.precision import TRAIN_MARGIN, probe

        fig, _ = probe("infer", (512, 1536, 512))
        _PREFILL.append(torch.bfloat16 if fig["bf16"] >= TRAIN_MARGIN * fig["fp32"] else torch.float32)
    return _PREFILL[0]


class Int8Linear(nn.Module):
    """A bias-free linear layer with int8 weights and per-output-channel scales."""

    def __init__(self, weight: torch.Tensor):
        super().__init__()
        q, s = int8_quantize_rows(weight)
        self.register_buffer("weight", q)
        self.register_buffer("scale", s)
        self.register_buffer("scale_bf16", s.to(torch.bfloat16), persistent=False)
        self.in_features, self.out_features = weight.shape[1], weight.shape[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.is_cuda:
            return F.linear(x, self.weight.to(x.dtype)) * self.scale.to(x.dtype)
        shape = x.shape
        x2 = x.reshape(-1, shape[-1])
        if x2.shape[0] > INT8_GEMV_ROWS:
            # prefill: _weight_int8pack_mm is a GEMV kernel (~30 GFLOP/s at 128 rows on the AMX machine);
            # the int8 values are exact in bf16, so widen them and run the matrix engine's GEMM
            # (bf16 where herd.precision found it fast, else fp32), then the per-channel scales
            dt = _prefill_dtype()
            y = F.linear(x2.to(dt), self.weight.to(dt)).float() * self.scale
            return y.to(x.dtype).view(*shape[:-1], self.out_features)
        y = torch.ops.aten._weight_int8pack_mm(x2.to(torch.bfloat16), self.weight, self.scale_bf16)
        return y.to(x.dtype).view(*shape[:-1], self.out_features)

    def extra_repr(self):
        return f"in={self.in_features}, out={self.out_features}"


@torch.no_grad()
def quantize_int8(model, output: bool = True) -> int:
    """Replace every linear layer of the blocks (and the output layer) by an Int8Linear, in place.
    Returns the number of layers replaced."""
    n = 0
    for layer in model.layers:
        for mod, names in ((layer.attention, ("wq", "wk", "wv", "wo")), (layer.feed_forward,
                                                                         ("w1", "w2", "w3"))):
            for name in names:
                setattr(mod, name, Int8Linear(getattr(mod, name).weight))
                n += 1
    if output:  # a tied output gets its own int8 copy; the embedding stays as it is
        model.output = Int8Linear(model.output.weight)
        n += 1
    return n


def quantize(model, mode: str | None):
    """`--quant` of the CLI: None, "fp8" or "int8"; returns the model (changed in place)."""
    if mode in (None, "", "none"):
        return model
    if mode == "fp8":
        quantize_fp8(model)
    elif mode == "int8":
        quantize_int8(model)
    else:
        raise HerdError(f"unknown quantization {mode!r}; choose fp8 or int8")
    return model


__all__ = ["FP8_MAX", "FP8_ACT_UB", "fp8_quantize_rows", "fp8_matmul", "Fp8Linear", "fp8_layer_ids",
           "quantize_fp8",
           "int8_quantize_rows", "Int8Linear", "quantize_int8", "quantize"]
