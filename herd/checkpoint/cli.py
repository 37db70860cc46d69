"""`herd convert`: move a Llama 3 checkpoint (paper §3.2) between Meta's format, Hugging Face
LlamaForCausalLM safetensors and herd's own directory, bit for bit unless --dtype says otherwise."""

from __future__ import annotations

import sys


def register(sub) -> None:
    p = sub.add_parser(
        "convert", help="convert a checkpoint between herd, Hugging Face and Meta formats",
        description="Convert a checkpoint directory (herd, Meta consolidated.NN.pth + params.json, or "
                    "Hugging Face LlamaForCausalLM) to another format. Model-parallel Meta shards are "
                    "merged; tensors keep their dtype and bits unless --dtype is given. The output is "
                    "written atomically. --to hf lays the directory out as Meta's Hugging Face repos: "
                    "config.json, safetensors and tokenizer.json at the root, the tiktoken tokenizer.model "
                    "under original/.")
    p.add_argument("src", help="input checkpoint directory (format detected)")
    p.add_argument("dst", help="output directory (must not exist, or pass --overwrite; replaced only once "
                               "the new checkpoint is complete)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output directory")
    p.add_argument("--to", required=True, choices=["hf", "herd", "meta"], help="output format")
    p.add_argument("--dtype", default=None, choices=["bf16", "fp16", "fp32"],
                   help="cast the weights (default: keep the stored dtype)")
    p.add_argument("--shards", type=int, default=1,
                   help="--to meta: number of model-parallel files consolidated.00.pth ... (default 1)")
    p.add_argument("--max-shard-gb", type=float, default=5.0,
                   help="--to hf: split model.safetensors into files of at most this size (default 5)")
    p.add_argument("--tokenizer", default=None,
                   help="tokenizer to write beside the weights: a tiktoken file, a checkpoint directory or "
                        "'llama3' (default: the one found beside the input)")
    p.add_argument("--original-weights", action="store_true",
                   help="--to hf: also write Meta's consolidated.00.pth + params.json under original/, as "
                        "Meta's HF repos do (doubles the size; default: original/ holds only "
                        "tokenizer.model)")
    p.set_defaults(func=run_convert)


def run_convert(args) -> int:
    from herd.checkpoint import convert_checkpoint
    from herd.errors import check_output_dir

    from pathlib import Path

    if Path(args.src).resolve() != Path(args.dst).resolve():  # the same path: convert_checkpoint says so
        check_output_dir(args.dst, args.overwrite)
    if args.shards < 1 or args.max_shard_gb <= 0:
        from herd.errors import HerdError

        raise HerdError("--shards must be a positive integer and --max-shard-gb a positive number")

    convert_checkpoint(args.src, args.dst, args.to, dtype=args.dtype, shards=args.shards,
                       tokenizer=args.tokenizer, max_shard_bytes=int(args.max_shard_gb * 1024**3),
                       original_weights=args.original_weights, log=lambda s: print(s, file=sys.stderr))
    print(args.dst)
    return 0
