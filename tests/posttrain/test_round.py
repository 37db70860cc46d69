"""One post-training round (herd.posttrain.round): the three steps in order through `run_step`, the
reason when a step finds nothing to train on, device/dtype honoured (CPU fp32 here, CUDA bf16 when
there is a GPU), a bad device refused in one line; the optimizer groups and the LR schedule are
pretraining's (herd.train.schedule)."""

import json
import math
from pathlib import Path

import pytest
import torch

from herd.checkpoint import load_model, read_args
from herd.errors import HerdError
from herd.precision import resolve_precision
from herd.posttrain.common import lr_at, make_optimizer, resolve_device
from herd.posttrain.config import SFTConfig
from herd.posttrain.round import RoundConfig, RoundStopped, arithmetic_round_task, post_train_round
from herd.posttrain.sft import sft
from herd.train.schedule import LRSchedule, build_plan, param_groups, warmup_decay_lr


def _tiny_round(tmp_path, **kw):
    base = {"out": str(tmp_path / "round"), "sft_steps": 3, "batch_size": 4, "seq_len": 96, "k": 4,
            "max_new_tokens": 6, "rs_chunk": 4, "rs_sft_steps": 2, "dpo_steps": 2, "dpo_batch": 2,
            "warmup": 1, "quiet": True, "device": "cpu", "dtype": "float32"}
    base.update(kw)
    return RoundConfig(**base)


def _task(tmp_path):
    return arithmetic_round_task(tmp_path / "task", 24, 6, seed=3, max_value=9, rs_prompts=6, dpo_prompts=6)


def _verifier_passing_some(monkeypatch):
    """The tiny random model cannot add and rarely stops: every sample is closed with <|eot_id|>
    (the real Generator still samples it) and the verifier passes the even-length ones."""
    from herd.posttrain import sampling, tasks

    real = sampling.sample_completions

    def finished(model, tok, prompts, **kw):
        outs = real(model, tok, prompts, **kw)
        return [[ids if ids and ids[-1] in tok.stop_tokens else ids + [tok.eot_id] for ids in o]
                for o in outs]

    monkeypatch.setattr(sampling, "sample_completions", finished)
    monkeypatch.setattr(tasks, "is_correct", lambda text, answer: len(text) % 2 == 0)


def test_task_files(tmp_path):
    task = _task(tmp_path)
    assert len(task.train) == 24 and len(task.test) == 6
    rs = [json.loads(x) for x in Path(task.rs_prompts).read_text().splitlines()]
    dp = [json.loads(x) for x in Path(task.dpo_prompts).read_text().splitlines()]
    assert len(rs) == len(dp) == 6
    assert rs[0]["answer"] == task.train[0].answer and dp[0]["answer"] == task.train[6].answer
    assert len(Path(task.sft_data).read_text().splitlines()) == 24


def test_round_stops_without_a_correct_sample(tmp_path, tiny_ckpt):
    """A random model answers nothing right: SFT runs, rejection sampling stops the round with the
    reason, DPO is never reached."""
    calls = []

    def run_step(name, fn):
        calls.append(name)
        return fn()

    logs = []
    with pytest.raises(RoundStopped, match="no correct sample to fine-tune on"):
        post_train_round(str(tiny_ckpt), _task(tmp_path), _tiny_round(tmp_path), log=logs.append, prefix="t",
                         run_step=run_step)
    assert calls == ["sft", "rs"]
    assert any(s.startswith("t: base") for s in logs) and any("pass@4" in s for s in logs)
    assert isinstance(RoundStopped("x"), HerdError)  # the CLI prints it as one line
    m, _ = load_model(tmp_path / "round" / "sft")
    assert next(m.parameters()).dtype == torch.float32


def test_whole_round_on_cpu_fp32(tmp_path, tiny_ckpt, monkeypatch):
    """With a verifier that passes some samples (the tiny model cannot add), every step runs and
    writes its checkpoint; the outputs are JSON-able."""
    _verifier_passing_some(monkeypatch)
    res = post_train_round(str(tiny_ckpt), _task(tmp_path), _tiny_round(tmp_path), log=lambda s: None)
    assert list(res) == ["sft", "rs", "dpo"]
    assert res["sft"]["device"] == "cpu" and res["sft"]["dtype"] == "float32"
    assert res["rs"]["rejection_sampling"]["kept_for_sft"] > 0 and res["dpo"]["sampling"]["pairs"] > 0
    for step in res.values():
        assert 0.0 <= step["accuracy"] <= 1.0
        assert read_args(step["model_dir"]).dim == read_args(tiny_ckpt).dim
    assert res["dpo"]["metrics"]["steps"] == 2
    json.dumps(res)


@pytest.mark.gpu
def test_round_on_the_gpu(tmp_path, tiny_ckpt, monkeypatch):
    """device auto on a GPU machine: every stage runs on CUDA, the forward in bf16; the checkpoints
    stay fp32 (the weights train in fp32 under autocast)."""
    _verifier_passing_some(monkeypatch)
    res = post_train_round(str(tiny_ckpt), _task(tmp_path),
                           _tiny_round(tmp_path, device="auto", dtype="auto"), log=lambda s: None)
    assert res["sft"]["device"] == "cuda" and res["sft"]["dtype"] == "bfloat16"
    m, _ = load_model(res["dpo"]["model_dir"])
    assert next(m.parameters()).dtype == torch.float32
    assert math.isfinite(res["dpo"]["metrics"]["loss"])


def test_resolve_device():
    assert resolve_device("cpu", "float32") == (torch.device("cpu"), torch.float32)
    assert resolve_device("cpu", "fp32") == (torch.device("cpu"), torch.float32)
    # auto on a CPU: what herd.precision's probe picks on this machine (fp32 without a bf16 matrix engine)
    assert resolve_device("cpu", "auto") == (torch.device("cpu"), resolve_precision("auto", "cpu")[0])
    assert resolve_device("cpu", "bf16")[1] == torch.bfloat16
    if not torch.cuda.is_available():
        assert resolve_device("auto", "auto") == (torch.device("cpu"), resolve_precision("auto", "cpu")[0])
        with pytest.raises(HerdError, match="no CUDA GPU is available"):
            resolve_device("cuda", "auto")
    with pytest.raises(HerdError, match="device 'tpu0': use auto, cpu, cuda or cuda:N"):
        resolve_device("tpu0", "auto")
    with pytest.raises(HerdError, match="unknown dtype 'int8'"):
        resolve_device("cpu", "int8")


def test_stage_refuses_a_bad_device(tmp_path, tiny_ckpt):
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"messages": [{"role": "user", "content": "q"},
                                             {"role": "assistant", "content": "#### 1"}]}) + "\n")
    cfg = SFTConfig(model=str(tiny_ckpt), data=str(data), out=str(tmp_path / "o"), steps=1, batch_size=1,
                    quiet=True)
    cfg.device = "gpu"  # set as an attribute: works whether or not the config declares the field
    with pytest.raises(HerdError, match="device 'gpu'"):
        sft(cfg)
    assert not (tmp_path / "o").exists()
    cfg.device, cfg.dtype = "cpu", "float32"
    assert sft(cfg)["steps"] == 1
    with pytest.raises(HerdError, match="device 'nope'"):
        post_train_round(str(tiny_ckpt), _task(tmp_path), _tiny_round(tmp_path, device="nope"))


def test_schedule_and_groups_are_pretrainings(tiny_model):
    """Post-training's LR is herd.train's warmup + cosine (to 10% of the peak at the last step),
    the same numbers LRSchedule gives a pretraining run with that plan; AdamW's groups are
    herd.train.schedule.param_groups."""
    from herd.train.config import TrainConfig

    cfg = TrainConfig.from_dict({"model": {"preset": "herd-5m"}, "optim": {"lr": 2e-3},
                                 "schedule": {"warmup_steps": 5, "final_lr": 0.1 * 2e-3, "decay": "cosine"},
                                 "stages": [{"after_tokens": 0, "batch_size": 1, "seq_len": 8}],
                                 "run": {"steps": 80}})
    sched = LRSchedule(cfg, build_plan(cfg))
    assert [lr_at(s, 80, 2e-3, 5) for s in range(80)] == [sched(s) for s in range(80)]
    assert lr_at(0, 80, 2e-3, 5) == pytest.approx(2e-3 / 5) and lr_at(4, 80, 2e-3, 5) == pytest.approx(2e-3)
    assert lr_at(80, 80, 2e-3, 5) == pytest.approx(2e-4)
    assert (warmup_decay_lr(3, peak=1.0, final=0.0, warmup=0, decay_steps=6, kind="linear")
            == pytest.approx(0.5))
    opt = make_optimizer(tiny_model.parameters(), 1e-3, 0.1)
    ref = param_groups(tiny_model, 0.1)
    assert ([[id(p) for p in g["params"]] for g in opt.param_groups]
            == [[id(p) for p in g["params"]] for g in ref])
    assert (all(p.dim() < 2 for p in opt.param_groups[1]["params"])
            and opt.param_groups[1]["weight_decay"] == 0.0)
    for p in tiny_model.parameters():
        p.requires_grad_(False)
    with pytest.raises(HerdError, match="no trainable parameters"):
        make_optimizer(tiny_model.parameters(), 1e-3, 0.0)
