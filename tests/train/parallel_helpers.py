"""Helpers for the 4D-parallel tests: run herd's trainer on N gloo processes (spawned, meeting through a
file store: no port to race for) under several layouts in one process group, and read the losses."""

import json
import os
import shutil
import sys
import traceback

import torch.multiprocessing as mp


def _worker(rank, world, store, runs, err_dir, backend="gloo"):
    import torch
    import torch.distributed as dist

    sys.path.insert(0, os.path.dirname(__file__))
    from train_helpers import tiny_config

    from herd.train import pretrain

    torch.set_num_threads(1)
    os.environ["LOCAL_RANK"] = str(rank)  # one GPU per rank under NCCL
    dist.init_process_group(backend, init_method=f"file://{store}", rank=rank, world_size=world)
    try:
        for tok_dir, out, extra in runs:
            if tok_dir == "copy":  # (copy, src, dst) between runs, by rank 0
                if rank == 0:
                    (shutil.copytree if os.path.isdir(out) else shutil.copy)(out, extra)
            elif (
                tok_dir == "call"
            ):  # (call, "module:function", arg) on every rank: function(rank, world, arg)
                import importlib

                mod, fn = out.split(":")
                getattr(importlib.import_module(mod), fn)(rank, world, extra)
            elif tok_dir == "remove":
                if rank == 0:
                    shutil.rmtree(out)
            else:
                pretrain(tiny_config(tok_dir, out, *extra), log=lambda s: None)
            dist.barrier()
    except BaseException:
        with open(os.path.join(err_dir, f"error-{rank}.txt"), "w") as f:
            f.write(traceback.format_exc())
        raise
    finally:
        dist.destroy_process_group()


def run_ranks(world: int, tmp_path, runs: list[tuple], backend: str = "gloo"):
    """Run `runs` [(tok_dir, out_dir, extra args)] one after the other on `world` spawned ranks (an entry
    ("copy", src, dst) or ("remove", path, None) is done by rank 0 between runs)."""
    import uuid

    runs = [
        (
            str(t),
            str(o),
            str(e) if isinstance(e, (str, os.PathLike)) else e if e is None else [str(x) for x in e],
        )
        for t, o, e in runs
    ]
    store = tmp_path / f"store-{uuid.uuid4().hex}"  # a fresh file rendezvous per launch
    try:
        mp.start_processes(
            _worker,
            args=(world, str(store), runs, str(tmp_path), backend),
            nprocs=world,
            start_method="spawn",
        )
    except Exception as e:  # noqa: BLE001 (the first rank's traceback is the useful message)
        errs = sorted(tmp_path.glob("error-*.txt"))
        raise AssertionError(errs[0].read_text()[-4000:] if errs else str(e)) from None


def losses(out, kind="train", key="loss"):
    recs = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    return [r[key] for r in recs if r["kind"] == kind]


def cp_attention_check(rank, world, out):
    """Context-parallel attention on this rank's chunks against full attention (outputs and q/k/v gradients,
    with document boundaries inside and across chunk edges, and without documents) -> {out}.{rank}."""
    import torch
    import torch.distributed as dist

    from herd.model.transformer import document_segments, sdpa_attention
    from herd.train.context_parallel import context_parallel_attention, shard_sequence

    torch.manual_seed(0)
    B, H, Hkv, T, D = 2, 4, 2, 32, 8
    q, k, v = torch.randn(B, H, T, D), torch.randn(B, Hkv, T, D), torch.randn(B, Hkv, T, D)
    w = torch.randn(B, H, T, D)
    doc = torch.zeros(B, T, dtype=torch.long)
    doc[0, 5:], doc[0, 13:], doc[0, 20:], doc[0, 30:] = 1, 2, 3, 4  # boundaries inside and across chunks
    doc[1, 9:], doc[1, 25:] = 1, 2
    full = [t.clone().requires_grad_() for t in (q, k, v)]
    ref = sdpa_attention(*full, document_segments(doc))
    (ref * w).sum().backward()
    res = {}
    for name, ids in (("docs", doc), ("causal", None)):
        idx, pos, seg = shard_sequence(ids, B, T, "cpu", dist.group.WORLD, world, rank)
        loc = [t[:, :, idx].clone().requires_grad_() for t in (q, k, v)]
        o = context_parallel_attention(*loc, seg)
        (o * w[:, :, idx]).sum().backward()
        if ids is None:
            full2 = [t.clone().requires_grad_() for t in (q, k, v)]
            ref2 = sdpa_attention(*full2)
            (ref2 * w).sum().backward()
            r_out, r_grads = ref2, [t.grad for t in full2]
        else:
            r_out, r_grads = ref, [t.grad for t in full]
        res[name] = {
            "out": (o - r_out[:, :, idx]).abs().max().item(),
            "grads": [(a.grad - g[:, :, idx]).abs().max().item() for a, g in zip(loc, r_grads)],
            "pos": pos.tolist(),
        }
    torch.save(res, f"{out}.{rank}")


def init_check(rank, world, out):
    """A TP2 x PP2 (x DP) model built on the meta device and materialised rank by rank -> its full state on
    rank 0 in `out` (to compare bit for bit with a one-process build), and what each rank holds."""
    import torch

    from herd.model.args import get_preset
    from herd.model.transformer import Transformer
    from herd.train.checkpoint import full_state_dict
    from herd.train.config import ParallelConfig
    from herd.train.parallel import init_distributed, parallelize

    d = init_distributed("cpu", ParallelConfig(tp=2, pp=2))
    args = get_preset("herd-5m", n_layers=5, dim=64, n_heads=4, n_kv_heads=2, vocab_size=512, multiple_of=32)
    model = parallelize(Transformer.build(args, device="meta"), d, torch.device("cpu"), seed=7)
    local = {n: p.to_local().numel() for n, p in model.named_parameters()}
    sd = full_state_dict(model)[0]
    if rank == 0:
        torch.save({"sd": sd}, out)
    torch.save({"local": local, "coords": d.layout.coords(rank)}, f"{out}.{rank}")


def loss_parallel_check(rank, world, out):
    """A TP2 model's loss and gradients (document mask on, some targets ignored) against the same model on one
    process, and the logits each rank made (their local shape, their type) -> {out}.{rank}."""
    import copy

    import torch
    from torch.distributed.tensor import DTensor

    from herd.model.args import get_preset
    from herd.model.transformer import Transformer
    from herd.train.config import ParallelConfig
    from herd.train.parallel import apply_tp, init_distributed

    d = init_distributed("cpu", ParallelConfig(tp=2))
    args = get_preset("herd-5m", n_layers=2, dim=64, n_heads=4, n_kv_heads=2, vocab_size=512, multiple_of=32)
    ref = Transformer.build(args, seed=3)
    model = apply_tp(copy.deepcopy(ref), d.world_mesh["tp"])
    seen = []
    model.output.register_forward_hook(
        lambda m, i, o: seen.append((type(o).__name__, tuple(o.to_local().shape))))
    g = torch.Generator().manual_seed(5)
    tokens, targets = torch.randint(0, 512, (2, 16), generator=g), torch.randint(0, 512, (2, 16), generator=g)
    targets[0, :3] = -100
    doc = torch.zeros(2, 16, dtype=torch.long)
    doc[0, 6:], doc[1, 11:] = 1, 1
    a = ref(tokens, targets=targets, doc_ids=doc)
    b = model(tokens, targets=targets, doc_ids=doc)
    a.backward()
    (b * 1.0).backward()
    grads = {}
    for (n, p), (_, q) in zip(ref.named_parameters(), model.named_parameters()):
        gq = q.grad.full_tensor() if isinstance(q.grad, DTensor) else q.grad
        grads[n] = (p.grad - gq).abs().max().item()
    with torch.no_grad():
        c = model(tokens, targets=targets, doc_ids=doc)
    torch.save({"loss": (a.item(), b.item(), c.item()), "plain": type(b) is torch.Tensor, "seen": seen,
                "grads": grads, "out_local": tuple(model.output.weight.to_local().shape)}, f"{out}.{rank}")
