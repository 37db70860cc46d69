"""Benchmark of herd's generation engine (paper §6, inference) against Hugging Face `generate`.

Same random-init weights (herd -> HF through herd's own HF export), same prompts, same threads,
one process, interleaved repeats (the best of N is reported: this machine is shared, and the
least-disturbed repeat is the closest to the machine's real speed; ratios come from one run).

    python bench/generate.py                 # CPU, 2 threads, the ~35M-param 32K-vocab model
    python bench/generate.py --compile       # also torch.compile'd decode (and its compile time)
    python bench/generate.py --int8          # also int8 vs fp32 decode on herd-100m
    python bench/generate.py --device cuda   # GPU figures (bf16)
    python bench/generate.py --peers         # herd vs llama.cpp vs HF at fp32, bf16 and int8 (below)

`--peers` (issue [4/7]): a Llama-3.2-1B-shaped random model (`--peer-shape`) with the real Llama 3
tokenizer, exported by herd to HF format and converted by llama.cpp's own convert_hf_to_gguf.py (to
f32, bf16 and q8_0), so all three run the same weights: herd (fp32; bf16 weights; int8 weight-only on
bf16), llama.cpp through llama-cpp-python (F32, BF16, Q8_0) and HF transformers (fp32, bf16), same
threads, batch-1 decode and prefill, repeats interleaved. llama.cpp is optional: without
llama-cpp-python or the converter (scripts/fetch_llama_cpp.sh) its rows are skipped with a note.
Build it from source, see docs/benchmarks.md.

Figures: prefill tokens/s (1 x 1024 prompt), decode tokens/s at batch 1 and 8 (32-token prompts,
128 new tokens; decode rate = 127 steps / (time of 128 new tokens - time of 1 new token)), and
the memory bandwidth decode achieves: bytes read per step (every weight but the embedding table,
plus the live KV cache) x steps/s, against the machine's read bandwidth measured in the same run.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from herd.inference import Generator  # noqa: E402
from herd.model.args import get_preset, scaled_preset  # noqa: E402
from herd.model.transformer import Transformer  # noqa: E402


def sync(device):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timeit(fn, device):
    sync(device)
    t = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t


def read_bandwidth(device, mb=512, reps=5) -> float:
    """GB/s of reading a large fp32 buffer (a sum over it), the bound a memory-bound decode sees."""
    x = torch.ones(mb * 2**20 // 4, device=device)
    x.sum()
    best = min(timeit(lambda: x.sum(), device) for _ in range(reps))
    return x.numel() * 4 / best / 1e9


def matmul_only_step(model, device, reps: int) -> float:
    """Seconds for the 7 matmuls per layer and the output layer of one batch-1 decode step, on the
    weights as the engine holds them (packed by a Generator run before), nothing else: median of
    `reps` x 20 steps."""
    from torch.nn import functional as F

    mods = []
    for layer in model.layers:
        at, ff = layer.attention, layer.feed_forward
        mods += [at.wq, at.wk, at.wv, at.wo, ff.w1, ff.w3, ff.w2]
    mods.append(model.output)
    ws = [m.weight.detach() for m in mods]
    xs = {w.shape[1]: torch.randn(1, w.shape[1], device=device, dtype=w.dtype) for w in ws}

    def step():
        for w in ws:
            F.linear(xs[w.shape[1]], w)

    with torch.inference_mode():
        for _ in range(5):
            step()
        times = []
        for _ in range(max(reps, 3)):
            times.append(timeit(lambda: [step() for _ in range(20)], device) / 20)
    return sorted(times)[len(times) // 2]


def to_hf(model, device, dtype):
    from transformers import LlamaForCausalLM

    from herd.checkpoint.hf import save_hf

    with tempfile.TemporaryDirectory() as d:
        save_hf(model, d)
        hf = LlamaForCausalLM.from_pretrained(d, attn_implementation="sdpa", dtype=dtype)
    return hf.to(device).eval()


def hf_generate(hf, ids, n):
    with torch.no_grad():
        return hf.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=n,
                           min_new_tokens=n, do_sample=False, pad_token_id=0, eos_token_id=None)


def weight_bytes(model) -> int:
    """Bytes of every weight a decode step reads (the embedding table contributes only B rows)."""
    emb = model.tok_embeddings.weight
    seen, total = set(), 0
    for t in list(model.parameters()) + list(model.buffers()):
        if t is emb or t.data_ptr() in seen or t.dim() < 2:
            continue
        seen.add(t.data_ptr())
        total += t.numel() * t.element_size()
    if model.args.tie_embeddings:
        total += emb.numel() * emb.element_size()  # the tied output layer reads the whole table
    return total


def kv_bytes_per_step(args, batch, prompt, new, elem) -> float:
    avg_len = prompt + new / 2
    return 2 * args.n_layers * batch * args.n_kv_heads * args.head_dim * avg_len * elem


def decode_rates(runs: dict, steps, device, reps) -> dict:
    """{name: (best steps/s, median steps/s)} of each `run(n_new)` (tokens/s = batch x steps/s);
    the runs are interleaved in every repeat so that they see the same load on a shared machine."""
    rates = {k: [] for k in runs}
    for _ in range(reps):
        for k, run in runs.items():
            t1 = timeit(lambda: run(1), device)
            tn = timeit(lambda: run(steps), device)
            rates[k].append((steps - 1) / max(tn - t1, 1e-9))
    return {k: (max(v), statistics.median(v)) for k, v in rates.items()}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--new", type=int, default=128)
    ap.add_argument("--prompt-len", type=int, default=32)
    ap.add_argument("--prefill-len", type=int, default=1024)
    ap.add_argument("--compile", action="store_true", help="also measure the torch.compile'd decode")
    ap.add_argument("--int8", action="store_true", help="also int8 vs fp32 decode on herd-100m")
    ap.add_argument("--skip-hf", action="store_true")
    ap.add_argument("--json", default=None, help="write the figures to this JSON file")
    ap.add_argument("--peers", action="store_true",
                    help="only the herd / llama.cpp / HF comparison at fp32, bf16, "
                         "int8 on a Llama-3.2-1B-shaped model")
    ap.add_argument("--peer-shape", default="llama3.2-1b",
                    help="preset for --peers (or 'small': dim 1024, 4 layers)")
    ap.add_argument("--precisions", default="fp32,bf16,int8", help="precisions for --peers")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    if a.peers:
        return peers(a)
    dev = a.device
    dtype = torch.float32 if dev == "cpu" else torch.bfloat16
    res = {"machine": platform.processor() or platform.machine(), "threads": a.threads, "device": dev,
           "torch": torch.__version__, "dtype": str(dtype)}
    if dev.startswith("cuda"):
        res["gpu"] = torch.cuda.get_device_name()
    import transformers

    res["transformers"] = transformers.__version__
    res["load_avg_start"] = os.getloadavg()[0]
    bw = read_bandwidth(dev)
    res["machine_read_GBps"] = round(bw, 1)
    print(f"machine read bandwidth: {bw:.1f} GB/s ({a.threads} threads, {dev})", flush=True)

    args = scaled_preset(35e6, 32768)
    model = Transformer.build(args, device=dev, dtype=dtype, seed=0)
    res["model"] = (f"{model.num_params() / 1e6:.1f}M params, dim {args.dim}, {args.n_layers} layers, "
                    "vocab 32768")
    print("model:", res["model"], flush=True)
    hf = None if a.skip_hf else to_hf(model, dev, dtype)
    g = torch.Generator().manual_seed(0)
    P, N = a.prompt_len, a.new
    prompts8 = torch.randint(0, args.vocab_size, (8, P), generator=g).to(dev)
    long = torch.randint(0, args.vocab_size, (1, a.prefill_len), generator=g).to(dev)
    gen = Generator(model, max_batch=8)

    # greedy outputs agree (same weights), so both do the same work
    if hf is not None:
        ours = gen.generate(prompts8[:1].tolist(), max_new_tokens=16)[0].tokens
        theirs = hf_generate(hf, prompts8[:1], 16)[0, P:].tolist()
        res["greedy_ids_equal_hf"] = ours == theirs
        print("greedy ids equal to HF:", ours == theirs, flush=True)

    # prefill: time to the first token of a 1024-token prompt (interleaved repeats, best of)
    runs = {"herd": lambda: gen.generate(long.tolist(), max_new_tokens=1)}
    if hf is not None:
        runs["hf"] = lambda: hf_generate(hf, long, 1)
    best = {k: float("inf") for k in runs}
    for k, f in runs.items():
        f()
    for _ in range(a.reps):
        for k, f in runs.items():
            best[k] = min(best[k], timeit(f, dev))
    res["prefill_tok_s"] = {k: a.prefill_len / v for k, v in best.items()}
    print("prefill tok/s:", _fmt(res["prefill_tok_s"]), flush=True)

    wb = weight_bytes(model)
    elem = torch.finfo(dtype).bits // 8
    for B in (1, 8):
        ids = prompts8[:B]
        lst = ids.tolist()
        runs = {"herd": lambda n, lst=lst: gen.generate(lst, max_new_tokens=n)}
        if hf is not None:
            runs["hf"] = lambda n, ids=ids: hf_generate(hf, ids, n)
        for f in runs.values():
            f(4)
        r = {}
        for k, (best, med) in decode_rates(runs, N, dev, a.reps).items():
            r[k], r[k + "_median"] = best * B, med * B  # steps/s -> tokens/s
        steps_s = r["herd"] / B
        r["herd_GBps"] = (wb + kv_bytes_per_step(args, B, P, N, elem)) * steps_s / 1e9
        r["herd_bw_fraction"] = r["herd_GBps"] / bw
        res[f"decode_b{B}_tok_s"] = r
        print(f"decode batch {B} tok/s:", _fmt(r), flush=True)

    # the ceiling of batch-1 decode: the step's matmuls alone (same packed weights, same order, nothing
    # else), i.e. the tokens/s a step would reach if RMSNorm, RoPE, attention, cache writes and
    # sampling took no time at all
    mm_s = matmul_only_step(model, dev, a.reps)
    res["decode_b1_matmul_only"] = {"ms": mm_s * 1e3, "tok_s_ceiling": 1 / mm_s, "GBps": wb / mm_s / 1e9}
    print(f"batch-1 step, matmuls only: {mm_s * 1e3:.2f} ms = {1 / mm_s:.0f} tok/s ceiling "
          f"({wb / mm_s / 1e9:.1f} GB/s)", flush=True)

    if a.compile:
        cg = Generator(model, max_batch=8, compile=True)
        lst = prompts8[:1].tolist()
        t = time.perf_counter()
        cg.generate(lst, max_new_tokens=4)
        res["compile_s"] = time.perf_counter() - t
        runs = {"eager": lambda n: gen.generate(lst, max_new_tokens=n),
                "compiled": lambda n: cg.generate(lst, max_new_tokens=n)}
        rr = decode_rates(runs, N, dev, a.reps)
        best = rr["compiled"][0]
        res["decode_b1_compiled"] = {"herd_compiled": best, "herd_compiled_median": rr["compiled"][1],
                                     "herd_eager": rr["eager"][0],
                                     "GBps": (wb + kv_bytes_per_step(args, 1, P, N, elem)) * best / 1e9}
        print(f"compiled decode batch 1: {best:.1f} tok/s vs eager {rr['eager'][0]:.1f} "
              f"(compile {res['compile_s']:.0f}s)", flush=True)

    if a.int8:
        from herd.inference.quant import quantize_int8

        del hf
        big = Transformer.build(get_preset("herd-100m"), device=dev, dtype=dtype, seed=0)
        big8 = copy.deepcopy(big)
        quantize_int8(big8)
        lst = prompts8[:1].tolist()
        gens = {"fp32": Generator(big, max_batch=1), "int8": Generator(big8, max_batch=1)}
        runs = {k: (lambda n, gg=gg: gg.generate(lst, max_new_tokens=n)) for k, gg in gens.items()}
        for f in runs.values():
            f(4)
        r = {}
        for k, (best, med) in decode_rates(runs, N, dev, a.reps).items():
            r[k], r[k + "_median"] = best, med
        r["fp32_weight_MB"], r["int8_weight_MB"] = weight_bytes(big) / 1e6, weight_bytes(big8) / 1e6
        res["int8_herd100m_b1_tok_s"] = r
        print("herd-100m decode batch 1 tok/s:", _fmt(r), flush=True)

    res["load_avg_end"] = os.getloadavg()[0]
    print()
    _report(res)
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=2) + "\n")
    return res


# ---- herd vs llama.cpp vs HF on the same weights (--peers) -------------------------------------------------
def _llama_cpp_converter():
    """(converter dir, env) or (None, why)."""
    import subprocess

    base = Path(os.environ.get("HERD_LLAMA_CPP_SRC") or
                Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "herd" / "llama.cpp")
    for d in (base, base / "vendor" / "llama.cpp"):
        if (d / "convert_hf_to_gguf.py").is_file():
            paths = [str(d / "gguf-py")] + [str(p) for p in (d / "pydeps", d.parent / "pydeps") if p.is_dir()]
            env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths + [os.environ.get("PYTHONPATH", "")]),
                   "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
            r = subprocess.run([sys.executable, "-c", "import gguf, sentencepiece"], env=env,
                               capture_output=True)
            return (d, env) if r.returncode == 0 else (None, "the converter's imports fail")
    return None, "convert_hf_to_gguf.py not found (run scripts/fetch_llama_cpp.sh)"


def _convert_gguf(conv, hf_dir, out, outtype):
    import subprocess

    d, env = conv
    if not out.exists():
        r = subprocess.run([sys.executable, str(d / "convert_hf_to_gguf.py"), str(hf_dir),
                            "--outfile", str(out), "--outtype", outtype],
                           env=env, capture_output=True, text=True)
        if r.returncode:
            raise RuntimeError(f"convert_hf_to_gguf.py --outtype {outtype} failed: {r.stderr[-2000:]}")
    return out


class _LlamaCpp:
    """Greedy batch-1 decoding with llama-cpp-python's low-level eval (no sampling chain): prefill the
    prompt, then one token per eval, the argmax of the last logits."""

    def __init__(self, path, threads, n_ctx, extra_bufts=True):
        import llama_cpp
        import llama_cpp.llama as llama_py

        # extra_bufts=False: no "extra buffer types" (llama.cpp's AMX repacking of quantized weights); its
        # AMX Q8_0 path dies with a general protection fault in libggml-cpu on the AMX machine of
        # docs/benchmarks.md, so Q8_0 runs its AVX512-VNNI kernels (llama.cpp's --no-extra-bufts)
        default = llama_cpp.llama_model_default_params

        def params():
            p = default()
            p.use_extra_bufts = extra_bufts
            return p

        llama_py.llama_cpp.llama_model_default_params = params
        try:
            self.llm = llama_cpp.Llama(model_path=str(path), n_threads=threads, n_threads_batch=threads,
                                       n_ctx=n_ctx, n_batch=512, n_ubatch=512, logits_all=False,
                                       verbose=False)
        finally:
            llama_py.llama_cpp.llama_model_default_params = default

    def generate(self, prompt, n):
        import numpy as np

        llm = self.llm
        llm.reset()
        llm.eval(prompt)
        out = []
        nv = llm.n_vocab()
        for i in range(n):
            # without logits_all llama-cpp-python keeps no scores: the last token's logits from its context
            t = int(np.argmax(np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(nv,))))
            out.append(t)
            if i < n - 1:
                llm.eval([t])
        return out


def peers(a):
    import gc
    import subprocess

    from herd.checkpoint.hf import save_hf
    from herd.inference.quant import quantize_int8
    from herd.tokenizer import Tokenizer

    dev, T = "cpu", a.threads
    res = {"threads": T, "torch": torch.__version__, "load_avg_start": os.getloadavg(),
           "lscpu_model": platform.processor()}
    try:
        res["lscpu"] = {k.strip(): v.strip() for k, v in (ln.split(":", 1) for ln in subprocess.run(
            ["lscpu"], capture_output=True, text=True).stdout.splitlines() if ":" in ln)
            if k.strip() in ("Model name", "Flags", "CPU(s)")}
    except OSError:
        pass
    tok = Tokenizer.llama3()
    if a.peer_shape == "small":
        args = get_preset("llama3.2-1b", dim=1024, n_layers=4, n_heads=16, n_kv_heads=4, max_seq_len=8192)
    else:
        args = get_preset(a.peer_shape, max_seq_len=8192)
    args = args.replace(vocab_size=tok.n_words)
    model = Transformer.build(args, seed=0)
    res["model"] = (f"{a.peer_shape}: {model.num_params() / 1e9:.2f}B params, dim {args.dim}, "
                    f"{args.n_layers} layers")
    print("model:", res["model"], flush=True)
    try:
        import llama_cpp

        res["llama_cpp_python"] = llama_cpp.__version__
        conv, why = _llama_cpp_converter()
        conv = (conv, why) if conv is not None else None
    except ImportError:
        conv, why = None, "llama-cpp-python is not installed (build it from its sdist: docs/benchmarks.md)"
    if conv is None:
        print(f"llama.cpp: skipped ({why})", flush=True)
        res["llama_cpp_skipped"] = why
    import transformers

    res["transformers"] = transformers.__version__
    g = torch.Generator().manual_seed(0)
    P, N, L = a.prompt_len, a.new, a.prefill_len
    prompt = torch.randint(0, 128000, (P,), generator=g).tolist()
    long = torch.randint(0, 128000, (L,), generator=g).tolist()
    work = Path(tempfile.mkdtemp(prefix="herd-peers-"))
    save_hf(model, work / "hf", tokenizer=tok)
    outtype = {"fp32": "f32", "bf16": "bf16", "int8": "q8_0"}
    for prec in a.precisions.split(","):
        runs = {}
        m = copy.deepcopy(model)
        if prec != "fp32":
            m = m.to(torch.bfloat16)
            m.reset_rope()
        if prec == "int8":
            quantize_int8(m)
        gen = Generator(m, max_batch=1, max_seq_len=max(L, P + N) + 8)
        runs["herd"] = lambda n, p, gen=gen: gen.generate([p], max_new_tokens=n)[0].tokens
        hf = None
        if prec in ("fp32", "bf16"):
            from transformers import LlamaForCausalLM

            hf = LlamaForCausalLM.from_pretrained(
                work / "hf", attn_implementation="sdpa",
                dtype=torch.float32 if prec == "fp32" else torch.bfloat16).eval()
            runs["hf"] = lambda n, p, hf=hf: hf_generate(hf, torch.tensor([p]), n)[0, len(p):].tolist()
        if conv is not None:
            try:
                path = _convert_gguf(conv, work / "hf", work / f"m-{outtype[prec]}.gguf", outtype[prec])
                lc = _LlamaCpp(path, T, max(L, P + N) + 8, extra_bufts=prec != "int8")
                runs["llama.cpp"] = lambda n, p, lc=lc: lc.generate(p, n)
            except Exception as e:  # noqa: BLE001 - a peer that fails is reported, the rest still runs
                print(f"llama.cpp {prec}: failed ({type(e).__name__}: {str(e)[:300]})", flush=True)
                res[f"llama_cpp_{prec}_error"] = str(e)[:500]
        first = {k: f(16, prompt) for k, f in runs.items()}
        agree = {k: sum(x == y for x, y in zip(first["herd"], v)) for k, v in first.items() if k != "herd"}
        pre = {k: float("inf") for k in runs}
        dec = {k: [] for k in runs}
        with torch.inference_mode():
            for _ in range(a.reps):
                for k, f in runs.items():
                    pre[k] = min(pre[k], timeit(lambda f=f: f(1, long), dev))
                    t1 = timeit(lambda f=f: f(1, prompt), dev)
                    tn = timeit(lambda f=f: f(N, prompt), dev)
                    dec[k].append((N - 1) / max(tn - t1, 1e-9))
        r = {"prefill_tok_s": {k: L / v for k, v in pre.items()},
             "decode_tok_s": {k: max(v) for k, v in dec.items()},
             "decode_tok_s_median": {k: statistics.median(v) for k, v in dec.items()},
             "greedy_16_agree_with_herd": agree, "load_avg": os.getloadavg()[0]}
        res[prec] = r
        print(f"[{prec}] decode b1 tok/s: {_fmt(r['decode_tok_s'])} | "
              f"prefill {L} tok/s: {_fmt(r['prefill_tok_s'])}"
              f" | first 16 greedy ids equal to herd's: {agree} | load {r['load_avg']:.1f}", flush=True)
        del runs, gen, m, hf
        gc.collect()
    res["load_avg_end"] = os.getloadavg()
    print()
    for prec in a.precisions.split(","):
        r = res[prec]
        for what in ("decode_tok_s", "prefill_tok_s"):
            d = r[what]
            ratios = ", ".join(f"herd/{k} {d['herd'] / d[k]:.2f}x" for k in d if k != "herd")
            print(f"{prec:5s} {what:14s} " + "  ".join(f"{k} {v:8.1f}" for k, v in d.items())
                  + f"   {ratios}")
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=2) + "\n")
    import shutil

    shutil.rmtree(work, ignore_errors=True)
    return res


def _fmt(d):
    return ", ".join(f"{k} {v:.1f}" if isinstance(v, float) else f"{k} {v}" for k, v in d.items())


def _report(res):
    def ratio(d, a, b):
        return f"{d[a] / d[b]:.2f}x" if b in d and a in d else "n/a"

    print(f"{res['model']}; {res['threads']} threads, torch {res['torch']}, "
          f"transformers {res['transformers']}; "
          f"load average {res['load_avg_start']:.1f} -> {res['load_avg_end']:.1f} (shared machine)")
    if "decode_b1_matmul_only" in res:
        c = res["decode_b1_matmul_only"]
        hf_b1 = res["decode_b1_tok_s"].get("hf", float("nan"))
        print(f"decode batch 1 ceiling (matmuls alone): {c['ms']:.2f} ms/step = "
              f"{c['tok_s_ceiling']:.0f} tok/s at {c['GBps']:.1f} GB/s; 3x HF would be {3 * hf_b1:.0f} tok/s")
    p = res["prefill_tok_s"]
    print(f"prefill 1x1024: herd {p['herd']:.0f} tok/s, HF {p.get('hf', float('nan')):.0f} tok/s, "
          f"ratio {ratio(p, 'herd', 'hf')}")
    for B in (1, 8):
        d = res[f"decode_b{B}_tok_s"]
        print(f"decode batch {B}: herd {d['herd']:.1f} tok/s, HF {d.get('hf', float('nan')):.1f} tok/s, "
              f"ratio {ratio(d, 'herd', 'hf')}; {d['herd_GBps']:.1f} GB/s = "
              f"{100 * d['herd_bw_fraction']:.0f}% of "
              f"{res['machine_read_GBps']} GB/s")
    if "decode_b1_compiled" in res:
        d = res["decode_b1_compiled"]
        print(f"compiled decode batch 1: {d['herd_compiled']:.1f} tok/s (eager {d['herd_eager']:.1f}), "
              f"{d['GBps']:.1f} GB/s; compile {res['compile_s']:.0f}s")
    if "int8_herd100m_b1_tok_s" in res:
        d = res["int8_herd100m_b1_tok_s"]
        print(f"herd-100m batch 1: int8 {d['int8']:.1f} tok/s vs fp32 {d['fp32']:.1f} tok/s = "
              f"{ratio(d, 'int8', 'fp32')}")


if __name__ == "__main__":
    main()
