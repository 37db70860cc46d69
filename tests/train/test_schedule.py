"""LR schedule and run plan (paper §3.4): warmup, cosine to the final LR, ramp stages, anneal to 0."""

import math

import pytest

from herd.train import load_config
from herd.train.schedule import LRSchedule, anneal_snapshot_steps, build_plan, phase_at


def _cfg(*extra):
    return load_config(None,
                       ["--optim.lr", "1e-3", "--schedule.final_lr", "1e-4", "--schedule.warmup_steps", "10",
                        "--run.steps", "110", *extra]).validate()


def test_warmup_then_cosine_to_final():
    cfg = _cfg()
    lr = LRSchedule(cfg, build_plan(cfg))
    assert lr(0) == pytest.approx(1e-4) and lr(4) == pytest.approx(5e-4) and lr(9) == pytest.approx(1e-3)
    assert lr(10) == pytest.approx(1e-3)
    assert lr(60) == pytest.approx(1e-4 + 0.9e-3 * 0.5 * (1 + math.cos(math.pi * 0.5)))  # half way: mid value
    assert lr(110) == pytest.approx(1e-4) and lr(10_000) == pytest.approx(1e-4)
    vals = [lr(s) for s in range(10, 111)]
    assert all(a >= b for a, b in zip(vals, vals[1:]))


def test_405b_schedule_values():
    cfg = load_config("llama3.1-405b")
    lr = LRSchedule(cfg, build_plan(cfg))
    assert lr(7999) == pytest.approx(8e-5) and lr(3999) == pytest.approx(4e-5)
    assert lr(8000 + (1_200_000 - 8000) // 2) == pytest.approx((8e-5 + 8e-7) / 2, rel=1e-6)
    assert lr.base(1_200_000) == pytest.approx(8e-7)  # the cosine reaches 8e-7 at 1.2M steps
    a0, a1 = lr.anneal  # our plan reaches annealing before that; there the LR goes linearly to 0
    assert lr(a0) == pytest.approx(lr.base(a0)) and lr(a1) == 0.0


def test_ramp_stage_changes_and_anneal_to_zero():
    cfg = load_config(None,
                      ["--optim.lr", "1e-3", "--schedule.final_lr", "1e-4", "--schedule.warmup_steps", "2",
                       "--run.tokens", "2000", "--anneal.tokens", "320", "--anneal.checkpoints", "3"])
    from herd.train.config import LongContextStage, Stage

    cfg.stages = [Stage(0, 4, 8), Stage(100, 4, 16), Stage(1000, 8, 16)]
    cfg.long_context = [LongContextStage(seq_len=32, tokens=256)]
    plan = build_plan(cfg.validate())
    assert [(p.name, p.start_step, p.end_step, p.batch_size, p.seq_len) for p in plan] == [
        ("stage0", 0, 4, 4, 8),        # 4 steps x 32 tokens reach 128 >= 100
        ("stage1", 4, 18, 4, 16),      # from 128 tokens, 14 x 64 -> 1024 >= 1000
        ("stage2", 18, 26, 8, 16),     # 8 x 128 -> 2048 >= 2000
        ("long_context0", 26, 28, 4, 32),  # same tokens per batch as the last stage: 4 x 32
        ("anneal", 28, 31, 4, 32),     # 320 tokens / 128 per step = 3 steps
    ]
    assert phase_at(plan, 17).name == "stage1" and phase_at(plan, 18).name == "stage2"
    lr = LRSchedule(cfg, plan)
    assert lr.decay_steps == 28  # cosine ends where annealing starts
    assert lr.base(28) == pytest.approx(1e-4) and lr(27) > lr.base(28)
    a0 = lr.base(28)
    assert [lr(s) for s in (28, 29, 30, 31)] == pytest.approx([a0, a0 * 2 / 3, a0 / 3, 0.0])
    assert anneal_snapshot_steps(plan, 3) == [28, 29, 30]
    assert anneal_snapshot_steps(plan, 1) == [30]
