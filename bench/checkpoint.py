"""Checkpoint loading speed (paper §3.2 models): herd's loaders against transformers'
`LlamaForCausalLM.from_pretrained` on the same Hugging Face directory, plus herd's Meta and herd
formats and `herd convert`, on a herd-100m sized model (126M parameters, 0.5 GB in fp32).

    python bench/checkpoint.py [--preset herd-100m] [--repeat 3]

Prints the median of `--repeat` loads (page cache warm) and herd/peer ratios from this one run.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch


def timed(fn, repeat: int) -> float:
    out = []
    for _ in range(repeat):
        t = time.perf_counter()
        r = fn()
        out.append(time.perf_counter() - t)
        del r
    return statistics.median(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="herd-100m")
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()

    import transformers

    from herd.checkpoint import convert_checkpoint, load_model, save_herd
    from herd.checkpoint.hf import save_hf
    from herd.checkpoint.meta import save_meta
    from herd.model import Transformer, get_preset

    transformers.logging.set_verbosity_error()
    args = get_preset(a.preset)
    model = Transformer.build(args, seed=0)
    gb = sum(p.numel() * p.element_size() for p in model.parameters()) / 1e9
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        save_hf(model, d / "hf")
        save_meta(model, d / "meta1")
        save_meta(model, d / "meta2", shards=2)
        save_herd(model, d / "herd")
        del model
        rows = [
            ("transformers from_pretrained (HF dir)",
             timed(lambda: transformers.LlamaForCausalLM.from_pretrained(d / "hf", dtype=torch.float32),
                   a.repeat)),
            ("herd load_model (HF dir)", timed(lambda: load_model(d / "hf"), a.repeat)),
            ("herd load_model (herd dir)", timed(lambda: load_model(d / "herd"), a.repeat)),
            ("herd load_model (Meta, 1 file)", timed(lambda: load_model(d / "meta1"), a.repeat)),
            ("herd load_model (Meta, 2 shards merged)", timed(lambda: load_model(d / "meta2"), a.repeat)),
            ("herd convert Meta 2 shards -> HF",
             timed(lambda: convert_checkpoint(d / "meta2", d / "out", "hf", log=lambda s: None), a.repeat)),
        ]
    peer = rows[0][1]
    print(f"{a.preset}: {args.num_params() / 1e6:.1f}M parameters, {gb:.2f} GB fp32; torch "
          f"{torch.__version__}, transformers {transformers.__version__}, {torch.get_num_threads()} threads; "
          f"median of {a.repeat}")
    for name, t in rows:
        ratio = f"  speed x{peer / t:5.2f} of transformers" if "load" in name or "from_pretrained" in name \
            else "  (writes and fsyncs the files; no peer)"
        print(f"  {name:42s} {t:7.3f} s  {gb / t:6.2f} GB/s{ratio}")


if __name__ == "__main__":
    main()
