"""Training throughput: herd's Transformer against Hugging Face `LlamaForCausalLM` (paper §3.3 MFU).

Both models get the same config and the same weights (herd's converted with
herd.checkpoint.hf), and run in the same plain PyTorch loop: forward and loss, backward, AdamW
step; same batch, sequence length, dtype and threads. Each model computes the loss its own way:
HF as its users do (fp32 logits, then `F.cross_entropy`), herd as its trainer does
(`model(inputs, targets=...)`: the same computation at these sizes; fused with the output layer in
chunks when the logits pass 1 GB, herd.model.loss; `--plain-loss` gives herd HF's way). Runs alternate
(herd, HF, herd, HF, ...) so that load from other jobs on a shared machine hits both alike; the
median step time of each is reported with tokens/s, MFU against a measured fp32 matmul peak
(CPU) or the datasheet bf16 peak (GPU), and the ratio herd / HF.

    python bench/train.py                                   # herd-20m shape, 32K vocab, 8 x 256, fp32
    python bench/train.py --preset herd-100m --batch 8 --seq 256
    python bench/train.py --compile                          # herd with torch.compile (per block)
    python bench/train.py --plain-loss                       # herd's model with HF's loss computation
    python bench/train.py --device cuda --dtype bfloat16     # on a GPU
    python bench/train.py --precisions                      # herd auto vs HF bf16 autocast vs herd fp32

`--precisions` (issue [4/7]): herd in the precision `auto` picks on this machine (herd.precision's probe
of the model's shapes: bf16 autocast on an AMX CPU, fp32 on an AVX2-only one), HF in its best CPU
setting (bf16 autocast) and herd in fp32, same weights, interleaved; MFU of each against the peak of
the precision it computes in.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch
import torch.nn.functional as F


def build_pair(args, device, dtype):
    from transformers import LlamaConfig, LlamaForCausalLM

    from herd.checkpoint.hf import args_to_hf_config, herd_to_hf_state_dict
    from herd.model.args import get_preset
    from herd.model.transformer import Transformer

    over = {"vocab_size": args.vocab} if args.vocab else {}
    margs = get_preset(args.preset, max_seq_len=max(args.seq, 256), **over)
    herd = Transformer.build(margs, device=device, seed=0)
    cfg = args_to_hf_config(margs)
    cfg.pop("torch_dtype", None)
    cfg.pop("dtype", None)
    hf = LlamaForCausalLM(LlamaConfig(**cfg, attn_implementation="sdpa")).to(device)
    missing = hf.load_state_dict(herd_to_hf_state_dict(herd.state_dict(), margs), strict=False)
    assert not missing.missing_keys or missing.missing_keys == ["lm_head.weight"], missing
    return margs, herd, hf


def step_fn(model, kind, opt, inputs, targets, amp, plain_loss=False):
    ctx = (torch.autocast(inputs.device.type, dtype=amp) if amp
           else torch.autocast(inputs.device.type, enabled=False))
    with ctx:
        if kind == "herd" and not plain_loss:
            # herd's training loss, as herd.train.trainer.loss_sum computes it (herd.model.loss)
            loss = model(inputs, targets=targets) / targets.numel()
        else:
            logits = model(inputs) if kind == "herd" else model(input_ids=inputs).logits
            loss = F.cross_entropy(logits.float().view(-1, logits.shape[-1]), targets.view(-1))
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    return float(loss.detach())


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", default="herd-20m")
    ap.add_argument("--vocab", type=int, default=32768, help="vocab size override (0 = the preset's)")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--steps", type=int, default=6, help="timed steps per model")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--compile", action="store_true",
                    help="torch.compile herd's blocks (herd.train.parallel)")
    ap.add_argument("--bare", action="store_true",
                    help="herd's model alone (no parallelize(): the trainer wraps it in FSDP2 "
                         "even on one process)")
    ap.add_argument("--only", choices=["herd", "hf"], default=None)
    ap.add_argument("--plain-loss", action="store_true",
                    help="herd computes logits then F.cross_entropy as HF does (not its fused loss)")
    ap.add_argument("--same-optim", action="store_true",
                    help="give HF the fused AdamW too (model-only comparison)")
    ap.add_argument("--json", default=None, help="also write the results here")
    ap.add_argument("--precisions", action="store_true", help="herd auto vs HF bf16 autocast vs herd fp32")
    ap.add_argument("--profile", action="store_true",
                    help="print the top operators of one step of each model")
    ap.add_argument("--peak", type=float, default=0,
                    help="peak GFLOP/s for MFU (default: a matmul probe on CPU, the datasheet on GPU); "
                         "e.g. the machine's known fp32 figure when the probe is noisy")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if args.precisions:
        return compare_precisions(args, device)
    amp = torch.bfloat16 if args.dtype == "bfloat16" else None
    from herd.train.metrics import peak_flops

    margs, herd, hf = build_pair(args, device, torch.float32)
    if args.bare:
        if args.compile:
            from herd.train.parallel import apply_compile

            apply_compile(herd, doc_mask=False)
    else:  # the trainer's own path: parallelize() (FSDP2 of degree 1 on one process), fp32 parameters
        from herd.train.parallel import init_distributed, parallelize

        parallelize(herd, init_distributed(device.type), device, compile=args.compile, doc_mask=False)
    peak = args.peak * 1e9 if args.peak else peak_flops(device, torch.bfloat16 if amp else torch.float32)
    # herd trains with fused AdamW (herd.train.trainer.build_optimizer's choice, FSDP2 or not);
    # HF gets torch's default AdamW (a per-tensor loop on CPU, foreach on CUDA) unless --same-optim.
    opts = {
        "herd": torch.optim.AdamW(herd.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.1,
                                  fused=True),
        "hf": torch.optim.AdamW(hf.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.1,
                                **({"fused": True} if args.same_optim else {})),
    }
    models = {"herd": herd, "hf": hf}
    g = torch.Generator().manual_seed(0)
    toks = torch.randint(0, margs.vocab_size, (args.batch, args.seq + 1), generator=g).to(device)
    inputs, targets = toks[:, :-1].contiguous(), toks[:, 1:].contiguous()
    kinds = [args.only] if args.only else ["herd", "hf"]
    # Same weights: the first losses must agree (proof that the two models compute the same thing).
    first = {k: step_fn(models[k], k, opts[k], inputs, targets, amp, args.plain_loss) for k in kinds}
    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        for k in kinds:
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                step_fn(models[k], k, opts[k], inputs, targets, amp, args.plain_loss)
            print(f"--- {k}")
            print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=14))
    times = {k: [] for k in kinds}
    for i in range(args.warmup - 1 + args.steps):
        for k in kinds:
            if device.type == "cuda":
                torch.cuda.synchronize()
            t = time.perf_counter()
            step_fn(models[k], k, opts[k], inputs, targets, amp, args.plain_loss)
            if device.type == "cuda":
                torch.cuda.synchronize()
            if i >= args.warmup - 1:
                times[k].append(time.perf_counter() - t)
    ntok = args.batch * args.seq
    fpt = margs.flops_per_token(args.seq)
    res = {"preset": args.preset, "params": margs.num_params(), "vocab": margs.vocab_size,
           "batch": args.batch, "seq": args.seq, "dtype": args.dtype, "device": str(device),
           "threads": torch.get_num_threads(), "compile": args.compile, "same_optim": args.same_optim,
           "plain_loss": args.plain_loss, "peak_flops": peak, "torch": torch.__version__,
           "machine": platform.machine(),
           "first_loss": first}
    for k in kinds:
        med = statistics.median(times[k])
        res[k] = {"step_s": med, "tokens_per_s": ntok / med, "mfu": fpt * ntok / med / peak}
    print(f"{args.preset} ({margs.num_params() / 1e6:.1f}M params, vocab {margs.vocab_size}), batch "
          f"{args.batch}x{args.seq}, {args.dtype}, {res['threads']} threads, peak {peak / 1e9:.0f} GFLOP/s"
          f"{' (given)' if args.peak else ' (measured)' if device.type == 'cpu' else ''}, HF optimizer "
          f"{'fused AdamW' if args.same_optim else 'torch default AdamW'}, step-0 loss " +
          ", ".join(f"{k} {v:.5f}" for k, v in first.items()))
    for k in kinds:
        r = res[k]
        print(f"  {k:5s} {r['step_s'] * 1e3:8.1f} ms/step  {r['tokens_per_s']:9,.0f} tokens/s  "
              f"MFU {100 * r['mfu']:5.1f}%")
    if len(kinds) == 2:
        res["ratio"] = res["herd"]["tokens_per_s"] / res["hf"]["tokens_per_s"]
        print(f"  herd / HF tokens/s: {res['ratio']:.2f}x")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=1)


def compare_precisions(args, device):
    """herd auto / HF bf16 autocast / herd fp32, interleaved steps, median step time of each."""
    import copy
    import os

    from herd.precision import resolve_precision, shapes_of
    from herd.train.metrics import peak_flops
    from herd.train.parallel import init_distributed, parallelize

    margs, herd, hf = build_pair(args, device, torch.float32)
    auto, reason, _ = resolve_precision("auto", device, shapes=shapes_of(margs, args.batch * args.seq))
    print(f"herd auto: {auto} — {reason}", flush=True)
    herd32 = copy.deepcopy(herd)
    d = init_distributed(device.type)
    for m in (herd, herd32):
        parallelize(m, d, device, doc_mask=False)
    arms = {"herd auto": (herd, "herd", None if auto == torch.float32 else auto),
            "hf bf16": (hf, "hf", torch.bfloat16), "herd fp32": (herd32, "herd", None)}
    opts = {k: torch.optim.AdamW(m.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.1, fused=True)
            for k, (m, _, _) in arms.items()}
    g = torch.Generator().manual_seed(0)
    toks = torch.randint(0, margs.vocab_size, (args.batch, args.seq + 1), generator=g).to(device)
    inputs, targets = toks[:, :-1].contiguous(), toks[:, 1:].contiguous()
    times = {k: [] for k in arms}
    losses = {k: [] for k in arms}
    load0 = os.getloadavg()[0]
    for i in range(args.warmup + args.steps):
        for k, (m, kind, amp) in arms.items():
            t = time.perf_counter()
            losses[k].append(step_fn(m, kind, opts[k], inputs, targets, amp))
            if i >= args.warmup:
                times[k].append(time.perf_counter() - t)
    ntok, fpt = args.batch * args.seq, margs.flops_per_token(args.seq)
    res = {"preset": args.preset, "params": margs.num_params(), "batch": args.batch, "seq": args.seq,
           "threads": torch.get_num_threads(), "torch": torch.__version__, "auto": str(auto),
           "reason": reason, "load_avg": [load0, os.getloadavg()[0]]}
    print(f"{args.preset} ({margs.num_params() / 1e6:.1f}M params), batch {args.batch}x{args.seq}, "
          f"{res['threads']} threads, load {load0:.1f} -> {os.getloadavg()[0]:.1f}")
    for k, (m, kind, amp) in arms.items():
        med = statistics.median(times[k])
        peak = peak_flops(device, amp or torch.float32)
        res[k] = {"step_s": med, "tokens_per_s": ntok / med, "mfu": fpt * ntok / med / peak, "peak": peak,
                  "losses": losses[k]}
        print(f"  {k:10s} {med * 1e3:8.1f} ms/step {ntok / med:9,.0f} tok/s  "
              f"MFU {100 * res[k]['mfu']:5.1f}% of "
              f"{peak / 1e9:,.0f} GFLOP/s ({'bf16' if amp else 'fp32'})  losses {losses[k][0]:.4f} -> "
              f"{losses[k][-1]:.4f}")
    for k in ("hf bf16", "herd fp32"):
        print(f"  herd auto / {k}: {res['herd auto']['tokens_per_s'] / res[k]['tokens_per_s']:.2f}x")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=1)
    return res


if __name__ == "__main__":
    main()
