"""Next-token cross-entropy of the output layer: plain, or fused with the projection in chunks of tokens.

The plain way (logits = h W^T for every token, then log-softmax, then its backward) writes and
re-reads a [tokens, vocab] fp32 tensor several times: 268 MB for 8 x 256 tokens at a 32K vocab,
a 128K-vocab model at 8K tokens 4 GB. Here, for each chunk of tokens, the logits are computed, the
loss taken (minus the log-softmax at the target) and the gradients formed at once while the chunk
is still in cache: d logits = softmax - onehot, grad h = d logits W, grad W += d logits^T h. The
backward pass only scales those by the incoming gradient. Same matmul FLOPs as the plain way,
a [chunk, vocab] working set instead of [tokens, vocab], and the same numbers (fp32 softmax; tests
compare losses and gradients with `F.cross_entropy`).

The fused form saves memory, not time: on the 2-core CPU it measured 0.95x the step speed of the
plain form at 2,048 tokens x 32K vocab (chunked matmuls are a little less efficient than one big
one). `cross_entropy_sum` therefore fuses only when the plain logits would pass 1 GB (a 128K-vocab
model from 2,048 tokens up), which is where memory, not speed, limits a run.

Under autocast the matmuls run in the autocast dtype (as the output layer's would) and the
softmax in fp32. Called from `Transformer.forward(tokens, targets=...)`, so FSDP's root hooks have
gathered the output weight.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE = -100
FUSE_ABOVE_BYTES = 1 << 30  # fp32 logits beyond this size: the fused, chunked form


def _chunk_rows(dim: int) -> int:
    # Each chunk re-reads and re-writes the [vocab, dim] fp32 grad W once; with rows >= 2 dim that
    # costs less than the chunk's own logits passes, and the matmuls stay efficient (measured on
    # the 2-core CPU at dim 384, vocab 32K: 64 rows 1.4 s, 512-2048 rows 1.06-1.13 s for 2048 tokens)
    return max(512, 2 * dim)


def _ce_rows(logits: torch.Tensor, targets: torch.Tensor, ignore_index: int, need_grad: bool):
    """Summed cross-entropy of fp32 logits [C, V] against targets [C] (fp64 scalar, exact enough for
    any token count) and, with `need_grad`, its gradient softmax - onehot written over the logits
    (rows of ignored targets zero); else None."""
    valid = targets != ignore_index
    tsafe = torch.where(valid, targets, 0)[:, None]
    # the logits' memory becomes the log-probabilities, then the gradient: callers pass logits that
    # nothing else reads. log_softmax's row kernel makes one pass (each row is still in cache for its
    # max, sum and write); logsumexp, then sub and exp, made five and a [C, V] temporary
    g = logits.detach()
    torch.log_softmax(g, -1, out=g)
    loss = -(g.gather(1, tsafe).squeeze(1) * valid).sum(dtype=torch.float64)
    if not need_grad:
        return loss, None
    g.exp_()
    g.scatter_add_(1, tsafe, torch.full(tsafe.shape, -1.0, dtype=g.dtype, device=g.device))
    if not bool(valid.all()):
        g.mul_(valid[:, None])
    return loss, g


class _FusedLinearCE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h, weight, targets, ignore_index, chunk, mm_dtype, need_grad):
        N = h.shape[0]
        w = weight if weight.dtype == mm_dtype else weight.to(mm_dtype)
        loss = torch.zeros((), dtype=torch.float64, device=h.device)
        gh = torch.empty_like(h) if need_grad else None
        gw = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if need_grad else None
        for s in range(0, N, chunk):
            hc = h[s:s + chunk]
            hc = hc if hc.dtype == mm_dtype else hc.to(mm_dtype)
            tc = targets[s:s + chunk]
            chunk_loss, p = _ce_rows(torch.mm(hc, w.t()).float(), tc, ignore_index, need_grad)
            loss += chunk_loss
            if need_grad:
                if mm_dtype == torch.float32:
                    gh[s:s + chunk] = torch.mm(p, w)
                    gw.addmm_(p.t(), hc)
                else:  # as autocast's backward: low-precision matmuls, fp32 accumulation of grad W
                    pm = p.to(mm_dtype)
                    gh[s:s + chunk] = torch.mm(pm, w).to(h.dtype)
                    gw += torch.mm(pm.t(), hc).float()
        if need_grad:
            ctx.save_for_backward(gh, gw.to(weight.dtype))
        ctx.need_grad = need_grad
        return loss.float()

    @staticmethod
    def backward(ctx, g):
        if not ctx.need_grad:
            raise RuntimeError("fused cross-entropy: the loss was computed without gradients")
        gh, gw = ctx.saved_tensors
        need_h, need_w = ctx.needs_input_grad[:2]
        return (gh * g.to(gh.dtype) if need_h else None, gw * g.to(gw.dtype) if need_w else None,
                None, None, None, None, None)


def fused_linear_cross_entropy(h: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                               ignore_index: int = IGNORE, chunk: int | None = None) -> torch.Tensor:
    """Sum over tokens of -log softmax(h W^T)[target] (targets == ignore_index skipped), fp32 scalar.
    h: [..., dim]; weight: [vocab, dim]; targets: [...] (same leading shape as h)."""
    h2 = h.reshape(-1, h.shape[-1])
    t2 = targets.reshape(-1)
    if t2.shape[0] != h2.shape[0]:
        raise ValueError(f"targets {tuple(targets.shape)} do not match hidden states {tuple(h.shape)}")
    dev = h.device.type
    mm_dtype = torch.get_autocast_dtype(dev) if torch.is_autocast_enabled(dev) else weight.dtype
    need = torch.is_grad_enabled() and (h.requires_grad or weight.requires_grad)
    with torch.autocast(dev, enabled=False):
        return _FusedLinearCE.apply(h2, weight, t2, ignore_index, chunk or _chunk_rows(weight.shape[1]),
                                    mm_dtype, need)


class _CrossEntropyInPlace(torch.autograd.Function):
    """Summed cross-entropy of fp32 logits [N, V] whose gradient (softmax - onehot) is formed in the
    forward pass, in the logits' own memory: an in-place log-softmax pass and an in-place exp pass,
    where log_softmax + NLL and their backward make ~6 passes and two more [N, V] buffers. Only for
    logits nothing else reads (those made inside `cross_entropy_sum`)."""

    @staticmethod
    def forward(ctx, logits, targets, ignore_index, need_grad):
        loss, g = _ce_rows(logits, targets, ignore_index, need_grad)
        ctx.need_grad = need_grad
        if need_grad:
            ctx.save_for_backward(g)
        return loss.float()

    @staticmethod
    def backward(ctx, grad):
        if not ctx.need_grad or getattr(ctx, "done", False):
            raise RuntimeError("cross-entropy: no gradient to give (computed without gradients, or already "
                               "used by an earlier backward)")
        ctx.done = True
        (g,) = ctx.saved_tensors
        return g.mul_(grad), None, None, None


def cross_entropy_sum(h: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, fused: bool | None = None,
                      ignore_index: int = IGNORE) -> torch.Tensor:
    """Summed next-token cross-entropy of logits h W^T (fp32 softmax) against `targets`; fused and
    chunked when `fused`, or (None) when the [tokens, vocab] fp32 logits would exceed FUSE_ABOVE_BYTES."""
    n = h.numel() // h.shape[-1]
    V = weight.shape[0]
    if fused is None:
        fused = n * V * 4 > FUSE_ABOVE_BYTES
    if fused:
        return fused_linear_cross_entropy(h, weight, targets, ignore_index)
    logits = F.linear(h, weight).float().view(-1, V)
    need = torch.is_grad_enabled() and logits.requires_grad
    return _CrossEntropyInPlace.apply(logits, targets.reshape(-1), ignore_index, need)




class _LossParallelCE(torch.autograd.Function):
    """Summed cross-entropy of logits sharded by vocabulary over a tensor-parallel mesh (a DTensor with
    Shard(-1), the output of a ColwiseParallel output layer): torch's `loss_parallel()` computes the
    log-softmax with all-reduces of the row max and the sum of exponentials, so no rank ever holds the
    [tokens, vocab] logits. Its backward must run inside the same context: done here, so the caller's
    `backward()` (the trainer's, a pipeline schedule's) needs nothing. Returns a plain fp32 scalar (the
    same, global value on every tensor-parallel rank)."""

    @staticmethod
    def forward(ctx, logits, targets, ignore_index):
        from torch.distributed.tensor.parallel import loss_parallel

        x = logits.detach().requires_grad_(ctx.needs_input_grad[0])
        with torch.enable_grad(), loss_parallel():
            loss = F.cross_entropy(x.flatten(0, -2), targets.reshape(-1), reduction="sum",
                                   ignore_index=ignore_index)
        ctx.x, ctx.loss = x, loss
        return loss.to_local().detach().clone()

    @staticmethod
    def backward(ctx, g):
        from torch.distributed.tensor import DTensor
        from torch.distributed.tensor.parallel import loss_parallel

        loss, x = ctx.loss, ctx.x
        ctx.loss = ctx.x = None
        if loss is None or not x.requires_grad:
            raise RuntimeError("vocab-parallel cross-entropy: no gradient to give (computed without "
                               "gradients, or already used by an earlier backward)")
        gd = DTensor.from_local(g.reshape(()).to(loss.dtype), loss.device_mesh, loss.placements)
        with loss_parallel():
            (gx,) = torch.autograd.grad(loss, x, gd)
        return gx, None, None


def vocab_parallel_cross_entropy_sum(logits, targets: torch.Tensor,
                                     ignore_index: int = IGNORE) -> torch.Tensor:
    """Summed next-token cross-entropy (fp32 softmax) of `logits` [..., vocab], a DTensor sharded over
    the vocabulary (Shard(-1)) by tensor parallelism, against plain `targets` [...]: the logits are
    never gathered (loss parallelism, herd.train.parallel.apply_tp)."""
    return _LossParallelCE.apply(logits.float(), targets, ignore_index)


def output_loss(h: torch.Tensor, output, targets: torch.Tensor) -> torch.Tensor:
    """Summed cross-entropy of the output layer `output` on final-norm hidden states `h`: loss-parallel
    on vocabulary-sharded logits when tensor parallelism marked the layer (`output.vocab_parallel`),
    else `cross_entropy_sum` (fused for big vocabularies)."""
    if getattr(output, "vocab_parallel", False):
        return vocab_parallel_cross_entropy_sum(output(h), targets)
    return cross_entropy_sum(h, output.weight, targets)


__all__ = ["FUSE_ABOVE_BYTES", "IGNORE", "cross_entropy_sum", "fused_linear_cross_entropy", "output_loss",
           "vocab_parallel_cross_entropy_sum"]
