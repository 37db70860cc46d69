"""Sizing the speedrun to the machine (issue [4/7]): the cpu preset's FLOP budgets were set for ~20
minutes of fp32 training on 2 cores. On a CPU whose matrix engine (AMX) makes bf16 training faster at
the speedrun's model shapes, the same minutes buy more FLOPs: `machine_scale` multiplies the IsoFLOP
budgets and the flagship budget by the probed training speed-up of the precision `auto` picks
(herd.precision; cached per machine), found as a fixed point (a bigger budget means a bigger
flagship, whose shapes are probed again). An AVX2-only CPU, or shapes too small for bf16 to pay, keep
the factor at 1. `compute_scale` > 0 in the config sets the factor by hand; quick and gpu use 1."""

from __future__ import annotations

import dataclasses

MAX_SCALE = 8.0


def machine_scale(cfg, log=print) -> tuple[object, dict]:
    """(the config with budgets and flagship_flops scaled, {"scale", "reason", ...}); the sizes it implies
    are reported by the isoflop and pretrain stages (flagship parameters, tokens)."""
    info: dict = {"scale": 1.0, "reason": "", "budgets": list(cfg.budgets),
                  "flagship_flops": cfg.flagship_flops}
    if cfg.compute_scale > 0:
        f = float(cfg.compute_scale)
        info["reason"] = "compute_scale set in the config"
    else:
        import torch

        from herd.precision import cpu_info, decide, probe, shapes_of
        from herd.scaling.isoflop import model_for_size

        if cfg.device not in ("auto", "cpu") or (cfg.device == "auto" and torch.cuda.is_available()):
            f, info["reason"] = 1.0, "the budgets of this preset are for its own device"
        elif cfg.dtype not in ("auto", "bfloat16"):
            f, info["reason"] = 1.0, f"dtype {cfg.dtype} set in the config"
        else:
            _, flags = cpu_info()
            f, reason = 1.0, ""
            for _ in range(4):
                n = (cfg.flagship_flops * f / 120) ** 0.5  # compute-optimal N at ~20 tokens per parameter
                m = model_for_size(n, cfg.vocab_size, seq_len=max(cfg.seq_len, 256))
                fig, _ = probe("train", shapes_of(m, cfg.batch_size * cfg.seq_len))
                choice, reason = decide("train", fig, flags)
                new = min(MAX_SCALE, max(1.0, fig["bf16"] / fig["fp32"])) if choice == "bf16" else 1.0
                info["probe_dim"] = m.dim
                if abs(new - f) <= 0.05 * f:
                    f = new
                    break
                f = new
            info["reason"] = f"training probe at the flagship's shapes (dim {info['probe_dim']}): {reason}"
    info["scale"] = f
    if f != 1.0:
        cfg = dataclasses.replace(cfg, budgets=[b * f for b in cfg.budgets],
                                  flagship_flops=cfg.flagship_flops * f)
    info["budgets_used"], info["flagship_flops_used"] = list(cfg.budgets), cfg.flagship_flops
    log(f"speedrun: compute scale x{f:.2f} ({info['reason']}); IsoFLOP budgets "
        f"{', '.join(f'{b:.3g}' for b in cfg.budgets)}, flagship {cfg.flagship_flops:.3g} FLOPs")
    return cfg, info


__all__ = ["MAX_SCALE", "machine_scale"]
