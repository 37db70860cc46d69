"""Benchmark of `herd serve` (paper §6 inference): continuous batching against serving the same requests
one at a time, and time to first token (TTFT) while other streams run; with --peer, llama.cpp's
server (`python -m llama_cpp.server` from llama-cpp-python) on the same weights, same run (needs
`llama_cpp` importable and llama.cpp's HF -> GGUF converter: scripts/fetch_llama_cpp.sh).

    python bench/serve.py                       # herd-20m shape, random weights, 32 requests, 2 threads
    python bench/serve.py --peer                # + llama.cpp's server (Llama 3 tokenizer, 128K vocabulary)
    python bench/serve.py --preset herd-5m --requests 16 --max-tokens 32 --repeats 1   # quick

Everything goes through the HTTP API with real requests (/v1/completions, token-id prompts, greedy,
stop tokens masked with logit_bias so every request generates exactly --max-tokens tokens). The
server runs in a thread of this process, the clients are asyncio tasks; the modes are interleaved
(sequential, concurrent, sequential, ...) and each figure is the best of --repeats, because the
machine is shared: ratios come from the same run. Prints a JSON summary (and --out FILE).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from herd.model.args import get_preset
from herd.model.transformer import Transformer
from herd.serve.app import create_app
from herd.tokenizer import Tokenizer


@contextlib.contextmanager
def herd_server(app):
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    t = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    t.start()
    while not server.started:
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        t.join(30)
        sock.close()


@contextlib.contextmanager
def llama_cpp_server(gguf: Path, threads: int, ctx: int):
    """llama.cpp's OpenAI server in a subprocess on a free port (it binds the port itself)."""
    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [
        sys.executable,
        "-m",
        "llama_cpp.server",
        "--model",
        str(gguf),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--n_threads",
        str(threads),
        "--n_ctx",
        str(ctx),
        "--model_alias",
        "bench",
    ]
    # its log goes to a file: a pipe nobody reads fills up with llama.cpp's load log (~64 KB for a 128K
    # vocabulary) and the server blocks before it listens
    log = tempfile.TemporaryFile(mode="w+")
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while True:
            if proc.poll() is not None:
                log.seek(0)
                raise RuntimeError(f"llama_cpp.server exited: {log.read()[-2000:]}")
            try:
                if httpx.get(url + "/v1/models", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.time() > deadline:
                raise RuntimeError("llama_cpp.server did not start in 120 s")
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def to_gguf(model, tok, workdir: Path) -> Path | None:
    """herd -> HF export -> llama.cpp's convert_hf_to_gguf.py (f32); None when the converter is absent."""
    src = Path(os.environ.get("HERD_LLAMA_CPP_SRC") or Path.home() / ".cache/herd/llama.cpp")
    conv = src / "convert_hf_to_gguf.py"
    if not conv.is_file():
        return None
    from herd.checkpoint.hf import save_hf

    hf = workdir / "hf"
    save_hf(model, hf, tokenizer=tok)
    out = workdir / "model-f32.gguf"
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join(
            [str(src / "gguf-py"), str(src / "pydeps"), os.environ.get("PYTHONPATH", "")]
        ),
    )
    subprocess.run(
        [sys.executable, str(conv), str(hf), "--outtype", "f32", "--outfile", str(out)],
        check=True,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return out


async def complete(client, url, model, prompt, max_tokens, bias, stream=False):
    """One request; -> (tokens generated, seconds, time to first token or None)."""
    body = {"model": model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "logit_bias": bias}
    t0 = time.perf_counter()
    if not stream:
        r = await client.post(url + "/v1/completions", json=body)
        r.raise_for_status()
        return r.json()["usage"]["completion_tokens"], time.perf_counter() - t0, None
    body["stream"] = True
    first, n = None, 0
    async with client.stream("POST", url + "/v1/completions", json=body) as r:
        r.raise_for_status()
        async for line in r.aiter_lines():
            if not line.startswith("data: {"):
                continue
            ch = json.loads(line[6:])
            if ch.get("choices") and ch["choices"][0].get("text"):
                n += 1  # one chunk per token (a chunk may hold no text while a character is incomplete)
                if first is None:
                    first = time.perf_counter() - t0
    return n, time.perf_counter() - t0, first


async def run_mode(url, model, prompts, max_tokens, bias, concurrent: bool):
    import httpx

    async with httpx.AsyncClient(timeout=600, limits=httpx.Limits(max_connections=256)) as c:
        t0 = time.perf_counter()
        if concurrent:
            res = await asyncio.gather(*[complete(c, url, model, p, max_tokens, bias) for p in prompts])
        else:
            res = [await complete(c, url, model, p, max_tokens, bias) for p in prompts]
        dt = time.perf_counter() - t0
    toks = sum(r[0] for r in res)
    return {"tokens": toks, "seconds": dt, "tok_per_s": toks / dt}


async def ttft(url, model, prompts, bias, background: int, long_tokens: int):
    """TTFT of short streaming requests on an idle server, then while `background` long streams run."""
    import httpx

    async with httpx.AsyncClient(timeout=600, limits=httpx.Limits(max_connections=256)) as c:
        idle = [(await complete(c, url, model, p, 8, bias, stream=True))[2] for p in prompts[:5]]
        bg = [
            asyncio.ensure_future(complete(c, url, model, p, long_tokens, bias, stream=True))
            for p in prompts[5 : 5 + background]
        ]
        await asyncio.sleep(0.5)
        busy = []
        for p in prompts[:5]:
            if all(t.done() for t in bg):
                break
            busy.append((await complete(c, url, model, p[::-1], 8, bias, stream=True))[2])
        done = await asyncio.gather(*bg)
    bg_rate = statistics.median(n / s for n, s, _ in done)
    return {
        "idle_ttft_s": statistics.median(idle),
        "busy_ttft_s": statistics.median(busy) if busy else None,
        "busy_requests": len(busy),
        "background_streams": background,
        "background_stream_tok_per_s": bg_rate,
    }


def bench_server(url, model, prompts, args, bias, label):
    seq, con = [], []
    for _ in range(args.repeats):  # interleaved
        seq.append(asyncio.run(run_mode(url, model, prompts, args.max_tokens, bias, concurrent=False)))
        con.append(asyncio.run(run_mode(url, model, prompts, args.max_tokens, bias, concurrent=True)))
    best_s = max(seq, key=lambda r: r["tok_per_s"])
    best_c = max(con, key=lambda r: r["tok_per_s"])
    out = {
        "server": label,
        "one_at_a_time": best_s,
        "concurrent": best_c,
        "speedup": best_c["tok_per_s"] / best_s["tok_per_s"],
        "ttft": asyncio.run(ttft(url, model, prompts, bias, args.max_batch - 1, args.max_tokens * 4)),
    }
    busy_ttft = out["ttft"]["busy_ttft_s"]
    print(
        f"{label}: one at a time {best_s['tok_per_s']:.1f} tok/s, {len(prompts)} concurrent "
        f"{best_c['tok_per_s']:.1f} tok/s -> {out['speedup']:.2f}x; "
        f"TTFT idle {out['ttft']['idle_ttft_s']:.3f} s, "
        f"while {out['ttft']['background_streams']} streams run "
        f"{busy_ttft if busy_ttft is None else round(busy_ttft, 3)}"
        " s",
        file=sys.stderr,
        flush=True,
    )
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    ap.add_argument("--preset", default="herd-20m")
    ap.add_argument("--requests", type=int, default=32)
    ap.add_argument("--prompt-len", type=int, default=64)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--max-batch", type=int, default=16, help="the server's slots")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-llama-cpp", action="store_true")
    ap.add_argument("--peer", action="store_true",
                    help="also llama.cpp's server on the same weights: both then use the Llama 3 tokenizer "
                         "(128K vocabulary; llama.cpp's converter knows no other) and text prompts (its "
                         "server takes no token-id prompts)")
    ap.add_argument("--out", default=None, help="also write the JSON summary here")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.peer:
        tok = Tokenizer.llama3()
    else:
        ranks = Tokenizer.llama3().mergeable_ranks
        tok = Tokenizer({k: v for k, v in ranks.items() if v < 2000}, name="bench")
    cfg = get_preset(args.preset)
    cfg = (
        cfg.replace(vocab_size=tok.n_words if args.peer else max(cfg.vocab_size, tok.n_words),
                    max_seq_len=1024)
        if hasattr(cfg, "replace")
        else cfg
    )
    model = Transformer.build(cfg, seed=0).eval()
    g = torch.Generator().manual_seed(0)
    prompts = [torch.randint(0, 2000, (args.prompt_len,), generator=g).tolist() for _ in range(args.requests)]
    if args.peer:  # the same prompts as text (both servers tokenize it with the Llama 3 tokenizer)
        prompts = [tok.decode(p) for p in prompts]
    bias = {str(t): -100 for t in tok.stop_tokens}
    load = os.getloadavg()
    result = {
        "preset": args.preset,
        "params": model.num_params(),
        "requests": args.requests,
        "prompt_len": args.prompt_len,
        "max_tokens": args.max_tokens,
        "max_batch": args.max_batch,
        "threads": args.threads,
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
        "load_before": load,
        "servers": [],
    }
    app = create_app(model, tok, model_name="bench", max_batch=args.max_batch, max_seq_len=1024)
    with herd_server(app) as url:
        result["servers"].append(bench_server(url, "bench", prompts, args, bias, "herd serve"))
    result["llama_cpp"] = "not run (--peer runs it)"
    if args.peer and not args.no_llama_cpp:
        try:
            import llama_cpp  # noqa: F401
        except ImportError:
            result["llama_cpp"] = "skipped: llama_cpp (llama-cpp-python) is not importable"
        else:
            work = Path(tempfile.mkdtemp(prefix="herd-bench-serve-"))
            try:
                gguf = to_gguf(model, tok, work)
                if gguf is None:
                    result["llama_cpp"] = "skipped: no convert_hf_to_gguf.py (run scripts/fetch_llama_cpp.sh)"
                else:
                    with llama_cpp_server(gguf, args.threads, 1024) as url:
                        result["servers"].append(
                            bench_server(url, "bench", prompts, args, bias, "llama_cpp.server")
                        )
                    result["llama_cpp"] = "run"
            finally:
                shutil.rmtree(work, ignore_errors=True)
    result["load_after"] = os.getloadavg()
    print(json.dumps(result, indent=1))
    if args.out:
        from herd.fileio import atomic_write_json

        atomic_write_json(args.out, result, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
