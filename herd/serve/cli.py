"""`herd serve`: an OpenAI-compatible server for a herd, Meta or Hugging Face checkpoint (paper §6
inference; tool use §4.3.5; system-level safety §5.4). See docs/serving.md.

    herd serve CKPT [--host 127.0.0.1] [--port 8000] [--api-key KEY] [--max-batch 8] [--max-seq-len L]
                    [--served-model-name NAME] [--quant int8|fp8] [--precision auto]
                    [--tool-loop [--max-tool-iterations 5] [--builtin-tools code_interpreter,...]
                     [--search-tool module:function] [--wolfram-tool module:function]]
                    [--shield input=CKPT] [--shield output=CKPT] [--prompt-guard CKPT] [--code-shield]
"""

from __future__ import annotations

import argparse
import os
import socket
import sys

from herd.errors import HerdError


def register(sub) -> None:
    p = sub.add_parser(
        "serve",
        help="serve a checkpoint over an OpenAI-compatible HTTP API (with a chat page)",
        description="An OpenAI-compatible server (/v1/models, /v1/chat/completions, /v1/completions, "
        "/health, /metrics, a chat page at /) with continuous batching, streaming and "
        "Llama 3.1 tool calls.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("ckpt", help="checkpoint directory (herd, Meta or Hugging Face format)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (loopback by default)")
    p.add_argument("--port", type=int, default=8000, help="port (0: any free port, printed at start)")
    p.add_argument(
        "--api-key",
        default=os.environ.get("HERD_API_KEY"),
        help="require 'Authorization: Bearer KEY' on /v1/* (default: $HERD_API_KEY; none: open)",
    )
    p.add_argument(
        "--served-model-name", default=None, help="the model id clients use (default: the directory name)"
    )
    p.add_argument(
        "--max-batch", type=int, default=8, help="sequences decoded together (slots of the KV cache)"
    )
    p.add_argument(
        "--max-seq-len", type=int, default=None, help="context per slot (default: the model's, at most 4096)"
    )
    p.add_argument(
        "--prefill-chunk", type=int, default=512, help="prompt tokens prefilled between decode steps"
    )
    p.add_argument("--max-queue", type=int, default=256, help="requests waiting for a slot before 503s")
    p.add_argument("--max-body-mb", type=float, default=4.0, help="largest request body (413 above)")
    p.add_argument(
        "--quant", choices=["fp8", "int8"], default=None, help="weight quantization (as herd generate)"
    )
    p.add_argument(
        "--precision",
        choices=["auto", "fp32", "bf16", "fp16"],
        default="auto",
        help="weights' precision; auto: bf16 on a GPU, and on a CPU bf16 where its matrix engine makes "
        "decoding faster, else fp32 (a cached probe of the model's shapes, herd.precision)",
    )
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    p.add_argument("--tokenizer", default=None, help="tokenizer file or 'llama3', if not the checkpoint's")
    p.add_argument(
        "--tool-loop",
        action="store_true",
        help="run built-in tool calls (code interpreter in herd's sandbox, search, wolfram) on the "
        "server and continue until the model ends its turn",
    )
    p.add_argument(
        "--max-tool-iterations", type=int, default=5, help="most tool calls per request with --tool-loop"
    )
    p.add_argument(
        "--builtin-tools",
        default="",
        help="built-in tools offered in every chat request (comma list of code_interpreter, "
        "brave_search, wolfram_alpha); a request can also name them in `tools`",
    )
    p.add_argument(
        "--search-tool",
        default=None,
        help="module:function answering brave_search queries (default: an offline stub)",
    )
    p.add_argument(
        "--wolfram-tool",
        default=None,
        help="module:function answering wolfram_alpha queries (default: a local calculator)",
    )
    p.add_argument(
        "--shield",
        action="append",
        default=[],
        metavar="input=CKPT|output=CKPT",
        help="Llama Guard checkpoint checking the input or the output (repeatable; herd.safety)",
    )
    p.add_argument(
        "--prompt-guard", default=None, metavar="CKPT", help="Prompt Guard checkpoint (herd.safety)"
    )
    p.add_argument(
        "--code-shield", action="store_true", help="check generated code with Code Shield (herd.safety)"
    )
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    p.set_defaults(func=run_serve)


def _shields(specs):
    inp, out = [], []
    for s in specs:
        kind, sep, path = s.partition("=")
        if not sep or kind not in ("input", "output") or not path:
            raise HerdError(f"--shield takes input=CKPT or output=CKPT, got {s!r}")
        (inp if kind == "input" else out).append(path)
    return inp, out


def build_server_app(args):
    """The app for the parsed CLI arguments (the model loaded, the engine built)."""
    import torch

    from herd.checkpoint import load_model
    from herd.inference.quant import quantize
    from herd.serve.app import create_app
    from herd.serve.moderation import load_moderation
    from herd.serve.tools import ToolRunner, load_callable
    from herd.tokenizer.chat_format import BUILTIN_TOOLS

    if args.max_batch < 1:
        raise HerdError(f"--max-batch must be at least 1, got {args.max_batch}")
    if args.max_seq_len is not None and args.max_seq_len < 2:
        raise HerdError(f"--max-seq-len must be at least 2, got {args.max_seq_len}")
    if args.max_tool_iterations < 1:
        raise HerdError(f"--max-tool-iterations must be at least 1, got {args.max_tool_iterations}")
    builtin = [t.strip() for t in args.builtin_tools.split(",") if t.strip()]
    for t in builtin:
        if t not in BUILTIN_TOOLS:
            raise HerdError(f"--builtin-tools: unknown tool {t!r}; choose from {', '.join(BUILTIN_TOOLS)}")
    inp, out = _shields(args.shield)
    moderation = load_moderation(inp, out, args.prompt_guard, args.code_shield)
    runner = ToolRunner(
        search=load_callable(args.search_tool) if args.search_tool else None,
        wolfram=load_callable(args.wolfram_tool) if args.wolfram_tool else None,
    )
    if args.threads:
        torch.set_num_threads(args.threads)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    from herd.precision import checkpoint_dtype

    dtype = checkpoint_dtype(args.precision, device, args.ckpt)
    model, tok = load_model(args.ckpt, device=device, dtype=dtype, tokenizer=args.tokenizer)
    if tok is None:
        raise HerdError(f"{args.ckpt} has no tokenizer; pass --tokenizer FILE (or --tokenizer llama3)")
    if tok.n_words > model.args.vocab_size:
        raise HerdError(
            f"the tokenizer has {tok.n_words} tokens but the model's vocabulary is "
            f"{model.args.vocab_size}; pass the tokenizer the model was trained with (--tokenizer)"
        )
    quantize(model, args.quant)
    name = args.served_model_name or os.path.basename(os.path.normpath(str(args.ckpt)))
    max_seq_len = args.max_seq_len or min(model.args.max_seq_len, 4096)
    return create_app(
        model,
        tok,
        model_name=name,
        api_key=args.api_key,
        max_batch=args.max_batch,
        max_seq_len=max_seq_len,
        prefill_chunk=args.prefill_chunk,
        max_queue=args.max_queue,
        moderation=moderation,
        tool_loop=args.tool_loop,
        tool_runner=runner,
        max_tool_iterations=args.max_tool_iterations,
        builtin_tools=builtin,
        max_body_bytes=int(args.max_body_mb * (1 << 20)),
    ), name


def run_serve(args) -> int:
    import uvicorn

    if not 0 <= args.port < 65536:
        raise HerdError(f"--port must be in 0..65535, got {args.port}")
    try:  # bind first: a port in use is a clear error before the (slow) model load
        sock = socket.socket(socket.AF_INET6 if ":" in args.host else socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((args.host, args.port))
        # listening from here on: a client that connects as soon as the address is printed waits in the
        # backlog until uvicorn accepts, instead of being refused
        sock.listen(2048)
    except OSError as e:
        raise HerdError(
            f"cannot listen on {args.host}:{args.port} ({e.strerror}); choose another --port"
        ) from None
    app, name = build_server_app(args)
    host, port = sock.getsockname()[:2]
    print(
        f"herd serve: {name} on http://{host}:{port}/ (OpenAI API at http://{host}:{port}/v1)",
        file=sys.stderr,
        flush=True,
    )
    config = uvicorn.Config(app, log_level=args.log_level, timeout_graceful_shutdown=5)
    try:
        uvicorn.Server(config).run(sockets=[sock])
    except KeyboardInterrupt:  # Ctrl-C is how a server is stopped: after a graceful shutdown, not an error
        pass
    print("herd serve: stopped", file=sys.stderr)
    return 0
