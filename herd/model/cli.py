"""`herd info`: what a model preset or checkpoint is (paper §3.2, Table 3): parameter counts,
shape, and training compute per token for a Chinchilla-style budget of 20 tokens per parameter."""

from __future__ import annotations

import json
import os


def register(sub) -> None:
    p = sub.add_parser(
        "info", help="parameters, shape and training FLOPs of a preset or checkpoint",
        description="Print a model's parameter count (8.03B/70.6B/405.9B for the Llama 3.1 presets), its "
                    "layer/dim/head layout, training FLOPs per token (6 x non-embedding params + 12 x layers "
                    "x dim x seq) and the compute for 20 tokens per parameter. TARGET is a preset name (herd "
                    "info --list) or a checkpoint directory (herd, Meta or Hugging Face format; weights are "
                    "not loaded).")
    p.add_argument("target", nargs="?", help="preset name or checkpoint directory")
    p.add_argument("--seq-len", type=int, default=None,
                   help="sequence length for the attention FLOPs (default: the config's max_seq_len)")
    p.add_argument("--tokens-per-param", type=float, default=20.0,
                   help="training budget, tokens per parameter (default 20)")
    p.add_argument("--json", action="store_true", help="print a JSON object instead of text")
    p.add_argument("--list", action="store_true", help="list the presets with their parameter counts")
    p.set_defaults(func=run_info)


def fmt_count(n: float) -> str:
    """8030261248 -> '8.03B'; 70553706496 -> '70.6B'; 405853388800 -> '405.9B'."""
    for div, unit in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")):
        if n >= div:
            v = n / div
            return f"{v:.2f}{unit}" if v < 10 else f"{v:.1f}{unit}"
    return str(int(n))


def describe(args, seq_len: int | None = None, tokens_per_param: float = 20.0) -> dict:
    seq = seq_len or args.max_seq_len
    n = args.num_params()
    flops = args.flops_per_token(seq)
    tokens = tokens_per_param * n
    rope = f"theta {args.rope_theta:g}"
    if args.use_scaled_rope:
        rope += (f", Llama 3.1 scaling (factor {args.rope_scale_factor:g}, "
                 f"original context {args.rope_old_context_len})")
    return {
        "parameters": n, "non_embedding_parameters": args.num_params(exclude_embedding=True),
        "n_layers": args.n_layers, "dim": args.dim, "n_heads": args.n_heads, "n_kv_heads": args.n_kv_heads,
        "head_dim": args.head_dim, "ffn_hidden_dim": args.ffn_hidden_dim, "vocab_size": args.vocab_size,
        "tie_embeddings": args.tie_embeddings, "max_seq_len": args.max_seq_len, "rope": rope,
        "seq_len": seq, "train_flops_per_token": flops, "budget_tokens": tokens,
        "budget_flops": tokens * flops, "tokens_per_param": tokens_per_param,
    }


def run_info(a) -> int:
    from herd.errors import HerdError
    from herd.model.args import PRESETS, get_preset

    if a.seq_len is not None and a.seq_len <= 0:
        raise HerdError(f"--seq-len must be positive, got {a.seq_len}")
    if a.list or not a.target:
        rows = {k: v.num_params() for k, v in PRESETS.items()}
        if a.json:
            print(json.dumps(rows, indent=2))
        else:
            for k, n in rows.items():
                print(f"{k:16s} {fmt_count(n):>8s}  ({n:,} parameters)")
        return 0
    target = a.target
    extra = {}
    if target in PRESETS:
        args = get_preset(target)
        extra["preset"] = target
    elif os.path.exists(target):
        from herd.checkpoint import detect_format, read_args

        extra["format"] = detect_format(target)
        args = read_args(target)
        extra["checkpoint"] = target
        extra["size_on_disk"] = sum(f.stat().st_size for f in __import__("pathlib").Path(target).rglob("*")
                                    if f.is_file())
    else:
        raise HerdError(f"{target!r} is neither a model preset nor a checkpoint directory; presets: "
                        f"{', '.join(PRESETS)}")
    d = {**extra, **describe(args, a.seq_len, a.tokens_per_param)}
    if a.json:
        print(json.dumps(d, indent=2))
        return 0
    title = extra.get("preset") or (f"{target} ({extra['format']} checkpoint, "
                                    f"{d['size_on_disk'] / 1e9:.2f} GB)")
    gqa = args.n_heads // args.n_kv_heads
    lines = [
        title,
        f"  parameters             {fmt_count(d['parameters'])} ({d['parameters']:,})",
        f"  non-embedding params   {fmt_count(d['non_embedding_parameters'])} "
        f"({d['non_embedding_parameters']:,})",
        f"  layers x dim           {args.n_layers} x {args.dim}, FFN {args.ffn_hidden_dim} (SwiGLU)",
        f"  attention heads        {args.n_heads} query, {args.n_kv_heads} key/value (GQA {gqa}:1), "
        f"head dim {args.head_dim}",
        f"  vocabulary             {args.vocab_size:,}, {'tied' if args.tie_embeddings else 'untied'} output",
        f"  RoPE                   {d['rope']}; max_seq_len {args.max_seq_len:,}",
        f"  train FLOPs / token    {d['train_flops_per_token']:.3e} at seq {d['seq_len']:,} "
        f"(6 x non-embedding params + 12 x layers x dim x seq)",
        f"  {f'{a.tokens_per_param:g} tokens / param':23s}{fmt_count(d['budget_tokens'])} tokens, "
        f"{d['budget_flops']:.2e} training FLOPs",
    ]
    print("\n".join(lines))
    return 0
