"""`herd plan PRESET --gpus N --tp --cp --pp --dp --seq --batch-tokens [--gpu h100]`: what a 4D layout
(paper §3.3.2) costs per GPU before any GPU is rented: parameter, gradient, optimizer and activation
memory, the pipeline bubble (PP-1)/(V*M), communication volume per step per dimension and an MFU estimate.

The model of a step (docs/parallelism.md compares it with the paper's Table 4):
- weights fp32 master copies, gradients fp32 and AdamW's two fp32 moments are sharded over dp x cp (FSDP);
  the bf16 working weights of a rank's layers stay gathered through the step (the paper does not reshard
  after forward) and gradients accumulate in fp32 over the micro-batches (the paper's FP32 accumulation);
- activations (Korthikanti et al. 2022, "Reducing Activation Recomputation in Large Transformer Models",
  re-derived for Llama's layer): per token per layer, bf16, sequence-parallel (divided by tp), the saved
  inputs and outputs of the norms, Q/K/V, the attention output and the SwiGLU FFN (12h + 4h_kv + 8f bytes);
  pipeline rank r keeps min(M, PP - r) micro-batches of its layers in flight under 1F1B (x (1 + (PP-1)/(PP*V))
  interleaved), all M under GPipe; the heaviest rank counts; with activation checkpointing only each layer's
  input;
- compute: 6 x (non-embedding) params + 12 x layers x dim x seq FLOPs per token (herd's MFU convention),
  matmuls at `mm_eff` of the GPU's dense bf16 peak and attention at `attn_eff`; the bubble stretches it by
  (PP-1)/(V*M); tensor-parallel collectives (on NVLink) and context-parallel K/V gathers are exposed,
  pipeline sends and FSDP's gathers/reduce-scatters overlap compute (exposed only beyond it).
No torch here: the command is instant and runs anywhere.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from herd.errors import HerdError

GB = 1e9


@dataclass(frozen=True)
class GPU:
    name: str
    peak_bf16: float  # dense FLOP/s
    memory: float  # bytes
    nvlink: float  # bytes/s per GPU, one direction (tensor parallel, inside a server)
    network: float  # bytes/s per GPU across servers (CP/PP/DP beyond a server)
    mm_eff: float = 0.70  # fraction of peak large bf16 matmuls reach
    attn_eff: float = 0.45  # fraction of peak flash attention (forward + backward) reaches


GPUS = {
    "h100": GPU("H100 SXM 80GB", 989e12, 80 * GB, 450 * GB, 50 * GB),
    "h200": GPU("H200 141GB", 989e12, 141 * GB, 450 * GB, 50 * GB),
    "a100": GPU("A100 SXM 80GB", 312e12, 80 * GB, 300 * GB, 25 * GB),
}


def estimate(
    args,
    gpus: int,
    tp: int = 1,
    cp: int = 1,
    pp: int = 1,
    dp: int = 0,
    seq: int = 8192,
    batch_tokens: int = 16 * 2**20,
    gpu: str = "h100",
    stages_per_rank: int = 1,
    microbatches: int = 0,
    schedule: str = "interleaved_1f1b",
    activation_checkpointing: bool = False,
) -> dict:
    """Per-GPU memory, bubble, communication and MFU of one training step of `args` under a layout.
    An impossible layout is a HerdError (one line)."""
    from types import SimpleNamespace

    from herd.train import layout as lay

    if gpu not in GPUS:
        raise HerdError(f"--gpu {gpu}: use one of {', '.join(GPUS)}")
    g = GPUS[gpu]
    if seq <= 0 or batch_tokens <= 0 or gpus <= 0:
        raise HerdError("--gpus, --seq and --batch-tokens must be positive")
    if batch_tokens % seq:
        raise HerdError(f"--batch-tokens {batch_tokens} is not a whole number of {seq}-token sequences")
    rows = batch_tokens // seq
    inner = tp * cp * pp
    if dp == 0:
        if gpus % inner:
            raise HerdError(f"tp*cp*pp = {inner} does not divide --gpus {gpus}")
        dp = gpus // inner
    if inner * dp != gpus:
        raise HerdError(f"tp*cp*pp*dp = {inner * dp} but --gpus is {gpus}; make them equal (or --dp 0)")
    if rows % dp:
        raise HerdError(
            f"{rows} sequences per batch do not divide over dp {dp}; change --batch-tokens or --dp"
        )
    M = microbatches or (rows // dp if pp > 1 else 1)
    pcfg = SimpleNamespace(
        tp=tp,
        cp=cp,
        pp=pp,
        dp=dp,
        pp_schedule=schedule,
        pp_stages_per_rank=stages_per_rank,
        pp_microbatches=M,
    )
    L = lay.resolve(pcfg, gpus)
    lay.check(args, L, [(rows, seq)])

    h, f, n_l = args.dim, args.ffn_hidden_dim, args.n_layers
    hkv = args.n_kv_heads * args.head_dim
    per_layer = (
        args.num_params(exclude_embedding=True) - (0 if args.tie_embeddings else args.vocab_size * h) - h
    )
    per_layer //= n_l
    emb = args.vocab_size * h
    split = lay.stage_layers(n_l, L.n_stages)
    # the heaviest pipeline rank (its V stages; the first holds the embedding, the last the norm + output)
    ranks = []
    for r in range(pp):
        ids = [r + k * pp for k in range(L.stages_per_rank)]
        layers = sum(len(split[s]) for s in ids)
        p = (
            layers * per_layer
            + (emb if 0 in ids else 0)
            + ((h + (0 if args.tie_embeddings else emb)) if L.n_stages - 1 in ids else 0)
        )
        ranks.append((p, layers))
    p_rank_full, layers_rank = max(ranks)
    P = p_rank_full / tp  # parameters this GPU computes with (its TP shard of its stages)
    shard = dp * cp
    mem = {
        "params": 4 * P / shard + 2 * P,  # fp32 master shard + bf16 working copy
        "grads": 4 * P / shard + (4 * P if M > 1 or pp > 1 else 0),  # fp32 shard + fp32 accumulation
        "optimizer": 8 * P / shard,  # AdamW moments, fp32
    }
    mb_rows = rows // dp / M
    tok_mb = mb_rows * seq / cp  # tokens of one micro-batch on this GPU (before the tp split)
    # Korthikanti et al. 2022 (arXiv:2205.05198) eq. 2 with sequence parallelism and selective recompute:
    # s*b*h*34/t bytes per layer for GPT. Re-derived for Llama's layer (bf16, no dropout, flash attention
    # so no s^2 term): norm inputs and outputs 8h, Q and the attention output 4h, K and V 4h_kv, SwiGLU's
    # w1 and w3 outputs, their SiLU and product (w2's input) 8f -> (12h + 4h_kv + 8f) s b / t.
    act_tok_layer = (12 * h + 4 * hkv + 8 * f) / tp if not activation_checkpointing else 2 * h / tp
    # 1F1B (§4.2.3 there): pipeline rank r holds min(M, pp - r) micro-batches of its layers in flight (the
    # first rank pp of them: the whole model's layers' worth), interleaving x (1 + (pp-1)/(pp V)); GPipe all
    # M. The heaviest rank counts: with one layer fewer on the first stage that is often rank 1.
    V = L.stages_per_rank
    inter = 1 + (pp - 1) / (pp * V) if V > 1 and schedule != "gpipe" else 1.0
    held = []
    for r in range(pp):
        layers_r = sum(len(split[r + k * pp]) for k in range(V))
        n = 1 if pp == 1 else M if schedule == "gpipe" else min(M, pp - r) * inter
        held.append(layers_r * n)
    mem["activations"] = act_tok_layer * tok_mb * max(held)
    mem["total"] = sum(mem.values())

    # ---- compute ----
    fpt = args.flops_per_token(seq)
    attn_fpt = 12 * n_l * h * seq
    tokens_gpu = batch_tokens / (dp * cp * tp * pp)  # the step's work split evenly over every GPU
    flops_gpu = fpt * tokens_gpu
    t_compute = (fpt - attn_fpt) * tokens_gpu / (g.peak_bf16 * g.mm_eff) + attn_fpt * tokens_gpu / (
        g.peak_bf16 * g.attn_eff
    )
    if activation_checkpointing:
        t_compute *= 4 / 3  # one more forward
    bubble = L.bubble
    # ---- communication per GPU per step (bytes sent) ----
    act = tok_mb * h * 2  # one micro-batch's hidden states, bf16
    comm = {
        "tp": 8 * (tp - 1) / tp * act * layers_rank * M if tp > 1 else 0.0,
        "cp": 2 * (cp - 1) / cp * (mb_rows * seq) * 2 * hkv / tp * 2 * layers_rank * M if cp > 1 else 0.0,
        "pp": 2 * L.stages_per_rank * act / tp * M if pp > 1 else 0.0,
        "dp": (2 + 4) * P * (shard - 1) / shard
        if shard > 1
        else 0.0,  # bf16 all-gather + fp32 reduce-scatter
    }
    t_tp = comm["tp"] / g.nvlink
    t_cp = comm["cp"] / g.network
    t_overlap = max(0.0, comm["pp"] / g.network + comm["dp"] / g.network - t_compute)
    step = t_compute * (1 + bubble) + t_tp + t_cp + t_overlap
    mfu = flops_gpu / (step * g.peak_bf16)
    return {
        "preset": "",
        "gpu": g.name,
        "gpus": gpus,
        "layout": L.describe(),
        "tp": tp,
        "cp": cp,
        "pp": pp,
        "dp": dp,
        "V": L.stages_per_rank,
        "microbatches": M,
        "seq": seq,
        "batch_tokens": batch_tokens,
        "params_per_gpu": P,
        "memory_gb": {k: v / GB for k, v in mem.items()},
        "gpu_memory_gb": g.memory / GB,
        "fits": mem["total"] <= g.memory,
        "bubble": bubble,
        "comm_gb": {k: v / GB for k, v in comm.items()},
        "step_s": step,
        "tflops_per_gpu": flops_gpu / step / 1e12,
        "mfu": mfu,
        "layers_per_rank": layers_rank,
    }


def format_plan(r: dict) -> str:
    m, c = r["memory_gb"], r["comm_gb"]
    fit = "" if r["fits"] else "  (DOES NOT FIT)"
    lines = [
        (
            f"{r['preset']} on {r['gpus']:,} x {r['gpu']}: {r['layout']}, seq {r['seq']:,}, "
            f"{r['batch_tokens']:,} tokens per batch"
        ),
        (
            f"  parameters per GPU      {r['params_per_gpu'] / 1e9:.2f} B ({r['layers_per_rank']} layers on "
            "the heaviest pipeline rank)"
        ),
        (
            f"  memory per GPU (GB)     params {m['params']:.1f} | grads {m['grads']:.1f} | optimizer "
            f"{m['optimizer']:.1f} | activations {m['activations']:.1f} | total {m['total']:.1f} of "
            f"{r['gpu_memory_gb']:.0f}{fit}"
        ),
        (
            f"  pipeline bubble         {100 * r['bubble']:.1f}% ((PP-1)/(V*M), V={r['V']}, "
            f"M={r['microbatches']})"
        ),
        (
            f"  comm per GPU per step   TP {c['tp']:.1f} GB | CP {c['cp']:.1f} GB | PP {c['pp']:.2f} GB | "
            f"DP {c['dp']:.1f} GB"
        ),
        (
            f"  step time (est.)        {r['step_s']:.2f} s, {r['tflops_per_gpu']:.0f} TFLOP/s per GPU, "
            f"MFU {100 * r['mfu']:.0f}%"
        ),
    ]
    return "\n".join(lines)


def register(sub) -> None:
    p = sub.add_parser(
        "plan",
        help="memory, bubble, communication and MFU of a 4D layout (paper §3.3)",
        description="Estimate per-GPU memory, pipeline bubble, communication and MFU of training "
        "PRESET with a TP x CP x PP x DP layout (docs/parallelism.md). An impossible "
        "layout is refused in one line (exit 2).",
    )
    p.add_argument("preset", help="model preset (e.g. llama3.1-405b, herd-5m)")
    p.add_argument("--gpus", type=int, required=True)
    p.add_argument("--tp", type=int, default=1)
    p.add_argument("--cp", type=int, default=1)
    p.add_argument("--pp", type=int, default=1)
    p.add_argument("--dp", type=int, default=0, help="0 = the rest of the GPUs")
    p.add_argument("--seq", type=int, default=8192)
    p.add_argument("--batch-tokens", type=int, default=16 * 2**20)
    p.add_argument("--gpu", default="h100", help=f"one of {', '.join(GPUS)}")
    p.add_argument(
        "--stages-per-rank", "-V", type=int, default=1, help="interleaved stages per pipeline rank"
    )
    p.add_argument(
        "--microbatches", type=int, default=0, help="pipeline micro-batches (0 = one sequence each)"
    )
    p.add_argument("--schedule", default="interleaved_1f1b", help="interleaved_1f1b, 1f1b or gpipe")
    p.add_argument("--activation-checkpointing", action="store_true")
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    p.set_defaults(func=run)


def run(a) -> int:
    from herd.model.args import get_preset

    args = get_preset(a.preset)
    r = estimate(
        args,
        a.gpus,
        a.tp,
        a.cp,
        a.pp,
        a.dp,
        a.seq,
        a.batch_tokens,
        a.gpu,
        a.stages_per_rank,
        a.microbatches,
        a.schedule,
        a.activation_checkpointing,
    )
    r["preset"] = a.preset
    print(json.dumps(r, indent=1) if a.json else format_plan(r))
    return 0


__all__ = ["GPU", "GPUS", "estimate", "format_plan", "register"]
