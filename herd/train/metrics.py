"""Observability for pretraining (paper §3.3.4): MFU against a measured or datasheet peak,
memory, a JSONL metrics file and optional TensorBoard.

MFU = achieved model FLOP/s / peak FLOP/s, with model FLOPs per token from
`ModelArgs.flops_per_token(seq_len)` (6N + attention, the PaLM / torchtitan convention). The peak
is, on CPU, a quick matmul probe of the run's precision (fp32 or bf16) on this machine's threads (the
roofline a training step can reach) and, on GPU, the datasheet dense bf16 peak of the device.
"""

from __future__ import annotations

import json
import resource
import time
from pathlib import Path

import torch

from herd.errors import HerdError

# Dense bf16 tensor-core peaks from the vendors' datasheets, FLOP/s.
GPU_BF16_PEAK = {
    "H200": 989e12, "H100 SXM": 989e12, "H100 NVL": 835e12, "H100 PCIe": 756e12, "H100": 989e12,
    "H800": 989e12, "GH200": 989e12, "B200": 2250e12, "A100": 312e12, "A800": 312e12, "L40S": 362e12,
    "L4": 121e12, "A10G": 70e12, "A10": 125e12, "RTX 4090": 165e12, "RTX 3090": 71e12, "V100": 125e12,
}

_PROBE: dict = {}


def matmul_peak(device="cpu", dtype=torch.float32, n: int = 1024, seconds: float = 0.3) -> float:
    """Measured matmul FLOP/s on `device` (cached per process)."""
    key = (str(device), dtype, torch.get_num_threads())
    if key in _PROBE:
        return _PROBE[key]
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(2):
        a @ b
    best, t_end = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < t_end:
        t = time.perf_counter()
        a @ b
        if str(device).startswith("cuda"):
            torch.cuda.synchronize()
        best = max(best, 2 * n ** 3 / (time.perf_counter() - t))
    _PROBE[key] = best
    return best


def peak_flops(device: torch.device, dtype: torch.dtype) -> float:
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for k, v in GPU_BF16_PEAK.items():
            if k in name:
                return v if dtype != torch.float32 else v / 2  # TF32 is half the bf16 rate
        return matmul_peak(device, torch.bfloat16, n=4096)
    # the peak of the precision the run computes in (bf16 on a CPU with a matrix engine: ~10x fp32)
    return matmul_peak(device, torch.bfloat16 if dtype in (torch.bfloat16, torch.float16) else torch.float32)


def memory_gib(device: torch.device) -> float:
    """Peak memory: allocated on the GPU, the process's max resident set on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2 ** 30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20  # KiB on Linux


class MetricsWriter:
    """metrics.jsonl (one JSON object per line) and, optionally, TensorBoard scalars."""

    def __init__(self, out_dir: Path, tensorboard: bool = False, resume_step: int | None = None):
        self.path = out_dir / "metrics.jsonl"
        if resume_step is not None and self.path.exists():
            # Drop what the interrupted run logged after the checkpoint we resume from: those steps run again.
            keep = []
            for line in self.path.read_text().splitlines():
                try:
                    rec = json.loads(line)
                except ValueError:
                    continue  # a line cut by the crash
                if rec.get("step", 0) <= resume_step:
                    keep.append(line)
            self.path.write_text("".join(x + "\n" for x in keep))
        self.f = open(self.path, "a")
        self.tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                raise HerdError("run.tensorboard = true needs the tensorboard package: pip install "
                                "tensorboard") \
                    from None

            self.tb = SummaryWriter(str(out_dir / "tensorboard"))

    def write(self, rec: dict):
        self.f.write(json.dumps(rec) + "\n")
        self.f.flush()
        if self.tb is not None and "step" in rec:
            for k, v in rec.items():
                if isinstance(v, (int, float)) and k != "step":
                    self.tb.add_scalar(f"{rec.get('kind', 'train')}/{k}", v, rec["step"])

    def close(self):
        self.f.close()
        if self.tb is not None:
            self.tb.close()


__all__ = ["peak_flops", "matmul_peak", "memory_gib", "MetricsWriter", "GPU_BF16_PEAK"]
