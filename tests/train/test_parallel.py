"""4D parallelism (paper §3.3.2) on CPU gloo, checked against one process (the torchtitan converging.md
method): tensor, context, pipeline and data parallel, alone and combined, give the losses of a one-process
run of the same global batch with the document mask on; the context-parallel attention equals full
attention in outputs and gradients; layouts that cannot run are refused in one line; sharded checkpoints
resume bit-identically on their layout and load on another."""

import shutil

import pytest
import torch
import torch.multiprocessing as mp
from parallel_helpers import losses, run_ranks
from train_helpers import tiny_config

from herd.errors import HerdError
from herd.train import pretrain
from herd.train.config import ParallelConfig
from herd.train.layout import Layout, check, resolve, stage_layers

STEPS = 10
BASE = ["--run.steps", str(STEPS), "--model.n_layers", "5"]  # an odd layer count


def _close(a, b, tol=1e-5):
    assert len(a) == len(b) == STEPS, (a, b)
    gap = max(abs(x - y) for x, y in zip(a, b))
    assert gap < tol, (gap, list(zip(a, b)))
    return gap


@pytest.fixture(scope="module")
def one_process(para_tok_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("one") / "run"
    pretrain(tiny_config(para_tok_dir, out, *BASE))
    return losses(out)


# ---- layout: checks and the pipeline split (no processes) ----
def test_stage_split_shortens_first_and_last_stage():
    assert stage_layers(6, 4) == [[0], [1, 2], [3, 4], [5]]
    assert (
        stage_layers(126, 16)[0] == list(range(7)) and len(stage_layers(126, 16)[-1]) == 7
    )  # 405B: 7+8*14+7
    assert all(len(s) == 8 for s in stage_layers(126, 16)[1:-1])
    for n, s in ((5, 4), (7, 2), (5, 2), (3, 5), (9, 4)):
        split = stage_layers(n, s)
        assert [i for part in split for i in part] == list(range(n)) and len(split) == s
        sizes = [len(x) for x in split]
        assert sizes[0] <= min(sizes[1:-1] or [sizes[0]]) and sizes[-1] <= min(sizes[1:-1] or [sizes[-1]])


def test_layout_resolution_and_refusals():
    from herd.model.args import get_preset

    lay = resolve(ParallelConfig(tp=2, cp=2, pp=2), 16)
    assert (lay.dp, lay.microbatches, lay.world) == (2, 2, 16)
    assert lay.coords(0) == {"dp": 0, "pp": 0, "cp": 0, "tp": 0}
    assert lay.coords(1)["tp"] == 1 and lay.coords(2)["cp"] == 1 and lay.coords(4)["pp"] == 1
    assert lay.coords(8)["dp"] == 1
    args = get_preset("herd-5m", n_layers=5, dim=64, n_heads=4, n_kv_heads=2, vocab_size=512, multiple_of=32)
    bad = [
        (lambda: resolve(ParallelConfig(tp=3), 4), "does not divide the world size 4"),
        (lambda: resolve(ParallelConfig(tp=2, dp=3), 4), "world size is 4"),
        (lambda: resolve(ParallelConfig(pp_schedule="zigzag"), 1), "pp_schedule"),
        (lambda: check(args, Layout(tp=4), []), "KV"),
        (lambda: check(args, Layout(pp=4, stages_per_rank=2, microbatches=4), []), "at most n_layers + 2"),
        (lambda: check(args, Layout(dp=2, pp=2, microbatches=4), [(4, 64)]), "micro-batches"),
        (lambda: check(args, Layout(cp=2, tp=2), [(4, 100)]), "2*cp*tp = 8"),
        (lambda: check(args, Layout(dp=3), [(4, 64)]), "dp 3"),
        (lambda: check(args, Layout(pp=2, stages_per_rank=2, microbatches=3), []), "multiple of pp"),
    ]
    for fn, words in bad:
        with pytest.raises(HerdError) as e:
            fn()
        assert words in str(e.value) and "\n" not in str(e.value), str(e.value)


def test_pretrain_refuses_layout_before_process_group(para_tok_dir, tmp_path):
    import torch.distributed as dist

    with pytest.raises(HerdError, match="does not divide the world size 1"):
        pretrain(tiny_config(para_tok_dir, tmp_path / "r", *BASE, "--parallel.tp", "4"))
    assert not dist.is_initialized()


# ---- context-parallel attention against full attention ----
def test_context_parallel_chunks_are_load_balanced():
    from herd.train.context_parallel import cp_runs, local_positions

    assert local_positions(16, 2, 0).tolist() == [0, 1, 2, 3, 12, 13, 14, 15]  # chunks i and 2cp-1-i
    assert local_positions(16, 2, 1).tolist() == [4, 5, 6, 7, 8, 9, 10, 11]
    # every rank attends the same number of (query, key) pairs under the causal mask
    work = [sum((qh - ql) * (kh - kl) for ql, qh, kl, kh in cp_runs(None, 1, 64, 4, r)[0]) for r in range(4)]
    assert len(set(work)) == 1
    # rank 1 holds positions 4..11; doc 0 is [0, 5), doc 1 [5, 16): position 4 sees doc 0's keys 0..4,
    # doc 1's queries see its keys from 5 on, in both chunks
    doc = torch.zeros(1, 16, dtype=torch.long)
    doc[0, 5:] = 1
    assert cp_runs(doc, 1, 16, 2, 1)[0] == [(0, 1, 0, 5), (1, 4, 5, 8), (4, 8, 5, 12)]


def _check_cp_attention(tmp_path):
    """The 2-rank results of parallel_helpers.cp_attention_check: outputs and q/k/v gradients of the
    context-parallel attention against full attention, with and without document boundaries."""
    for rank in range(2):
        res = torch.load(f"{tmp_path / 'cp'}.{rank}")
        for name in ("docs", "causal"):
            assert res[name]["out"] <= 1e-5 and max(res[name]["grads"]) <= 1e-5, (rank, name, res[name])
    # positions restart per document across chunk edges: rank 1 holds 8..23; row 1's second doc starts at 9
    assert torch.load(f"{tmp_path / 'cp'}.1")["docs"]["pos"][1][:3] == [8, 0, 1]


def _check_loss_parallel(tmp_path):
    """The 2-rank results of parallel_helpers.loss_parallel_check: under TP2 the output layer holds half the
    vocabulary, its logits stay sharded (each rank [B, T, vocab / 2], never gathered), and the loss and
    every gradient equal one process's."""
    for rank in range(2):
        r = torch.load(f"{tmp_path / 'lp'}.{rank}")
        one, tp, no_grad = r["loss"]
        assert abs(one - tp) <= 1e-5 * abs(one) and tp == no_grad and r["plain"], r["loss"]
        assert r["out_local"] == (256, 64) and r["seen"] == [("DTensor", (2, 16, 256))] * 2, r
        assert max(r["grads"].values()) <= 1e-5 and len(r["grads"]) == 21, r["grads"]


# ---- loss parity with one process, 10 steps, document mask on; checkpoints across layouts ----
def test_two_ranks_cp_attention_each_dimension_and_checkpoints_across_layouts(
    para_tok_dir, tmp_path, one_process
):
    """One 2-rank launch: context-parallel attention = full attention; TP2, CP2 and PP2 (V = 2) match one
    process; the pipeline's checkpoint resumes bit-identically and loads on one process."""
    from safetensors.torch import load_file

    pp = tmp_path / "pp2-interleaved-V2"
    runs = [
        (para_tok_dir, tmp_path / "tp2", BASE + ["--parallel.tp", "2"]),
        (para_tok_dir, tmp_path / "cp2", BASE + ["--parallel.cp", "2"]),
        (
            para_tok_dir,
            pp,
            BASE
            + [
                "--parallel.pp",
                "2",
                "--parallel.pp_stages_per_rank",
                "2",
                "--checkpoint.interval",
                "5",
                "--eval.interval",
                "5",
                "--eval.batch_size",
                "8",
            ],
        ),
        ("copy", pp / "model" / "model.safetensors", tmp_path / "final.safetensors"),
        ("copy", pp / "metrics.jsonl", tmp_path / "first.jsonl"),
        ("copy", pp / "checkpoints" / "step-00000005", tmp_path / "one" / "checkpoints" / "step-00000005"),
        ("remove", pp / "checkpoints" / "step-00000010", None),
        ("remove", pp / "model", None),
        # the same layout resumes from step 5 (as if it had died after that checkpoint)
        (
            para_tok_dir,
            pp,
            BASE
            + [
                "--parallel.pp",
                "2",
                "--parallel.pp_stages_per_rank",
                "2",
                "--checkpoint.interval",
                "5",
                "--eval.interval",
                "5",
                "--eval.batch_size",
                "8",
                "--run.resume",
                "true",
            ],
        ),
    ]
    tied = [
        "--run.steps",
        "4",
        "--model.n_layers",
        "3",
        "--model.tie_embeddings",
        "true",
    ]  # a tied-embedding model: TP keeps the shared weight whole
    runs.append((para_tok_dir, tmp_path / "tied-tp2", tied + ["--parallel.tp", "2"]))
    checks = [("call", f"parallel_helpers:{fn}", tmp_path / name)
              for fn, name in (("cp_attention_check", "cp"), ("loss_parallel_check", "lp"))]
    run_ranks(2, tmp_path, checks + runs)
    _check_loss_parallel(tmp_path)
    pretrain(tiny_config(para_tok_dir, tmp_path / "tied-one", *tied))
    a, b = losses(tmp_path / "tied-one"), losses(tmp_path / "tied-tp2")
    assert len(a) == len(b) == 4 and max(abs(x - y) for x, y in zip(a, b)) < 1e-5
    _check_cp_attention(tmp_path)
    for name in ("tp2", "cp2"):
        _close(one_process, losses(tmp_path / name))
    (tmp_path / "first").mkdir()
    shutil.copy(tmp_path / "first.jsonl", tmp_path / "first" / "metrics.jsonl")
    first = losses(tmp_path / "first")
    _close(one_process, first)
    # evaluation (8 rows, the pipeline's second shape) equals one process's on the same batches
    one_val = pretrain(tiny_config(para_tok_dir, tmp_path / "val1", *BASE, "--eval.batch_size", "8"))[
        "val_loss"
    ]
    assert len(losses(tmp_path / "first", "val", "val_loss")) == 1  # at step 5, mid-run
    assert abs(losses(pp, "final", "val_loss")[0] - one_val) < 1e-5
    ck = tmp_path / "one" / "checkpoints" / "step-00000005" / "state"
    assert (ck / ".metadata").is_file() and len(list(ck.glob("__*_0.distcp"))) == 2  # each rank its stages
    # same layout: bit-identical weights and losses after the resume
    final, again = (
        load_file(str(tmp_path / "final.safetensors")),
        load_file(str(pp / "model" / "model.safetensors")),
    )
    assert final.keys() == again.keys() and all(torch.equal(final[k], again[k]) for k in final)
    assert losses(pp)[-5:] == first[-5:]
    # another layout: one process resumes the pipeline's step-5 checkpoint and follows the one-process run
    pretrain(tiny_config(para_tok_dir, tmp_path / "one", *BASE, "--run.resume", "true"))
    tail = losses(tmp_path / "one")
    assert len(tail) == 5 and max(abs(a - b) for a, b in zip(one_process[-5:], tail)) < 1e-5


FOUR = {
    "tp2-dp2": ["--parallel.tp", "2"],
    "pp2-dp2-gpipe-V2": [
        "--parallel.pp",
        "2",
        "--parallel.pp_stages_per_rank",
        "2",
        "--parallel.pp_schedule",
        "gpipe",
    ],
}


def test_tp_and_pp_with_fsdp_at_four_ranks_match_one_process(para_tok_dir, tmp_path, one_process):
    """One 4-rank launch: TP2 x PP2 materialises each rank's part bit-equal to a one-process build;
    TP2 x DP2 and PP2 x DP2 train as one process does."""
    from herd.model.args import get_preset
    from herd.model.transformer import Transformer

    runs = [("call", "parallel_helpers:init_check", tmp_path / "init.pt")]
    runs += [(para_tok_dir, tmp_path / name, BASE + extra) for name, extra in FOUR.items()]
    run_ranks(4, tmp_path, runs)
    for name in FOUR:
        _close(one_process, losses(tmp_path / name))
    args = get_preset("herd-5m", n_layers=5, dim=64, n_heads=4, n_kv_heads=2, vocab_size=512, multiple_of=32)
    ref = Transformer.build(args, seed=7).state_dict()
    got = torch.load(tmp_path / "init.pt")["sd"]
    assert got.keys() == ref.keys() and all(torch.equal(got[k], ref[k]) for k in ref)
    ranks = [torch.load(f"{tmp_path / 'init.pt'}.{r}") for r in range(4)]
    first = [r["local"] for r in ranks if r["coords"]["pp"] == 0]
    last = [r["local"] for r in ranks if r["coords"]["pp"] == 1]
    # the first pipeline rank holds the embedding and layers 0-2, the last layers 3-4 and the output
    assert all(
        "tok_embeddings.weight" in x and "layers.2.attention.wq.weight" in x and "output.weight" not in x
        for x in first
    )
    assert all(
        "output.weight" in x
        and "layers.3.feed_forward.w1.weight" in x
        and "layers.0.ffn_norm.weight" not in x
        for x in last
    )
    # each tensor-parallel rank holds half of a split weight
    assert all(
        x["layers.0.attention.wq.weight"] == ref["layers.0.attention.wq.weight"].numel() // 2 for x in first
    )


@pytest.mark.slow
def test_remaining_schedules_at_two_ranks(para_tok_dir, tmp_path, one_process):
    runs = {
        "pp2-interleaved-V1": ["--parallel.pp", "2"],
        "pp2-1f1b-V1": [
            "--parallel.pp",
            "2",
            "--parallel.pp_schedule",
            "1f1b",
            "--parallel.pp_microbatches",
            "4",
        ],
        "pp2-1f1b-V2": [
            "--parallel.pp",
            "2",
            "--parallel.pp_schedule",
            "1f1b",
            "--parallel.pp_stages_per_rank",
            "2",
        ],
        "pp2-gpipe-V1": ["--parallel.pp", "2", "--parallel.pp_schedule", "gpipe"],
    }
    run_ranks(2, tmp_path, [(para_tok_dir, tmp_path / n, BASE + e) for n, e in runs.items()])
    for name in runs:
        _close(one_process, losses(tmp_path / name))


@pytest.mark.slow
def test_tp2_pp2_checkpoint_resumes_on_one_process_and_dp2(para_tok_dir, tmp_path, one_process):
    layout = ["--parallel.tp", "2", "--parallel.pp", "2", "--checkpoint.interval", "5"]
    out = tmp_path / "tp2pp2"
    run_ranks(4, tmp_path, [(para_tok_dir, out, BASE + layout)])
    _close(one_process, losses(out))
    for name, world in (("one", 1), ("dp2", 2)):
        shutil.copytree(
            out / "checkpoints" / "step-00000005", tmp_path / name / "checkpoints" / "step-00000005"
        )
        if world == 1:
            pretrain(tiny_config(para_tok_dir, tmp_path / name, *BASE, "--run.resume", "true"))
        else:
            run_ranks(2, tmp_path, [(para_tok_dir, tmp_path / name, BASE + ["--run.resume", "true"])])
        tail = losses(tmp_path / name)
        assert len(tail) == 5 and max(abs(a - b) for a, b in zip(one_process[-5:], tail)) < 1e-5


@pytest.mark.slow
def test_tp2_cp2_pp2_at_eight_ranks(para_tok_dir, tmp_path, one_process):
    extra = [
        "--parallel.tp",
        "2",
        "--parallel.cp",
        "2",
        "--parallel.pp",
        "2",
        "--parallel.pp_stages_per_rank",
        "2",
    ]
    run_ranks(8, tmp_path, [(para_tok_dir, tmp_path / "r", BASE + extra)])
    _close(one_process, losses(tmp_path / "r"))


@pytest.mark.slow
def test_all_four_dimensions_at_sixteen_ranks(para_tok_dir, tmp_path, one_process):
    extra = [
        "--parallel.tp",
        "2",
        "--parallel.cp",
        "2",
        "--parallel.pp",
        "2",
        "--parallel.dp",
        "2",
        "--run.activation_checkpointing",
        "true",
    ]
    run_ranks(16, tmp_path, [(para_tok_dir, tmp_path / "r", BASE + extra)])
    _close(one_process, losses(tmp_path / "r"))


# ---- herd plan ----
def test_plan_reports_table4_layouts_and_refuses_impossible_ones(capsys):
    import json

    from herd.cli import main
    from herd.model.args import get_preset
    from herd.train.plan import estimate

    assert (
        main(["plan", "llama3.1-405b", "--gpus", "8192", "--tp", "8", "--pp", "16", "-V", "2", "--json"]) == 0
    )
    r = json.loads(capsys.readouterr().out)
    assert (r["dp"], r["microbatches"], r["layers_per_rank"]) == (64, 32, 8)
    assert r["bubble"] == pytest.approx(15 / (2 * 32))
    assert r["params_per_gpu"] == pytest.approx(405.9e9 / 128, rel=0.02)  # the 405B weights over TP8 x PP16
    assert 0.35 < r["mfu"] < 0.6 and r["comm_gb"]["cp"] == 0 and r["comm_gb"]["tp"] > r["comm_gb"]["dp"] > 0
    long = estimate(
        get_preset("llama3.1-405b"), 8192, tp=8, cp=16, pp=16, dp=4, seq=131072, stages_per_rank=2
    )
    assert long["comm_gb"]["cp"] > 0 and long["mfu"] < r["mfu"]  # Table 4's order: 128K below 8K
    ckpt = estimate(
        get_preset("llama3.1-405b"), 8192, tp=8, pp=16, stages_per_rank=2, activation_checkpointing=True
    )
    assert ckpt["memory_gb"]["activations"] < r["memory_gb"]["activations"] / 10 and ckpt["fits"]
    assert (
        main(["plan", "herd-5m", "--gpus", "4", "--tp", "2", "--seq", "256", "--batch-tokens", "4096"]) == 0
    )
    assert "MFU" in capsys.readouterr().out
    for argv, words in (
        (["--gpus", "16384", "--tp", "8", "--cp", "16", "--pp", "16", "--dp", "4"], "16384"),
        (["--gpus", "24", "--tp", "3"], "tp 3 does not divide"),
        (["--gpus", "8192", "--tp", "8", "--pp", "256"], "stages"),
        (["--gpus", "8", "--seq", "1000", "--batch-tokens", "4096"], "whole number"),
    ):
        assert main(["plan", "llama3.1-405b", *argv]) == 2
        err = capsys.readouterr().err.strip()
        assert words in err and "\n" not in err, err


# ---- failure handling ----
def _dying_worker(rank, world, store, tok_dir, out, err_dir):
    import os

    import torch.distributed as dist

    from herd.train import trainer as tm

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    orig = tm.Trainer.train_step

    def step(self, *a, **k):
        if rank == 1 and self.step == 3:
            os._exit(3)  # a rank dies mid-run (a lost GPU, an OOM kill)
        return orig(self, *a, **k)

    tm.Trainer.train_step = step
    try:
        pretrain(
            tiny_config(tok_dir, out, *BASE, "--parallel.tp", "2", "--parallel.timeout_s", "60"),
            log=lambda s: None,
        )
    except HerdError as e:
        with open(f"{err_dir}/herd-{rank}.txt", "w") as f:
            f.write(str(e))
        os._exit(2)
    os._exit(0)


@pytest.mark.slow
def test_a_dead_rank_makes_the_others_fail_fast_in_one_line(para_tok_dir, tmp_path):
    import time

    t0 = time.monotonic()
    ctx = mp.start_processes(
        _dying_worker,
        args=(2, tmp_path / "store", para_tok_dir, tmp_path / "run", tmp_path),
        nprocs=2,
        start_method="spawn",
        join=False,
    )
    for p in ctx.processes:
        p.join(120)
    codes = [p.exitcode for p in ctx.processes]
    assert codes == [2, 3], codes
    msg = (tmp_path / "herd-0.txt").read_text()
    assert (
        msg.startswith("rank 0 (TP2 CP1 PP1 DP1") and "another rank died or hangs" in msg and "\n" not in msg
    )
    assert time.monotonic() - t0 < 100  # well before the 60 s collective timeout would add up


def _worker_pids(parent: int) -> dict[int, int]:
    """{rank: pid} of the workers a torchrun process started (read from /proc: their RANK variable)."""
    import pathlib

    found = {}
    for kids in pathlib.Path(f"/proc/{parent}/task").glob("*/children"):
        for pid in map(int, kids.read_text().split()):
            try:
                env = pathlib.Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            except OSError:
                continue
            rank = [e[5:] for e in env if e.startswith(b"RANK=")]
            if rank:
                found[int(rank[0])] = pid
    return found


@pytest.mark.slow
def test_torchrun_restarts_after_a_killed_rank_and_resumes_from_the_last_checkpoint(
    para_tok_dir, tmp_path
):
    """`torchrun --max-restarts 1 ... --resume` (TP2): rank 1 is SIGKILLed after the first checkpoint;
    torchrun stops the other rank and restarts both, which resume from the newest checkpoint and finish the
    run with the losses one process gives (steps before and after the kill)."""
    import json
    import os
    import signal
    import subprocess
    import sys
    import time

    from train_helpers import tiny_toml

    extra = ["--run.steps", "60", "--model.n_layers", "3", "--checkpoint.interval", "10",
             "--checkpoint.keep", "2"]
    pretrain(tiny_config(para_tok_dir, tmp_path / "one", *extra))
    out = tmp_path / "tp2"
    toml = tiny_toml(para_tok_dir, out, tmp_path / "tp2.toml", *extra, "--parallel.tp", "2")
    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable)) or "torchrun"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    p = subprocess.Popen([torchrun, "--standalone", "--nproc-per-node", "2", "--max-restarts", "1",
                          "-m", "herd", "pretrain", "--config", toml, "--resume"],
                         env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and p.poll() is None:  # past the step-10 checkpoint, mid-run
            if (out / "checkpoints" / "step-00000010").is_dir() and len(losses(out) if (out / "metrics.jsonl")
                                                                         .exists() else []) >= 12:
                break
            time.sleep(0.01)
        pids = _worker_pids(p.pid)
        assert p.poll() is None and 1 in pids, ("the run ended or no rank 1 to kill", p.poll(), pids)
        killed_at = len(losses(out))
        os.kill(pids[1], signal.SIGKILL)  # a rank dies mid-run (a lost GPU, an OOM kill)
        _, err = p.communicate(timeout=300)
    finally:
        if p.poll() is None:
            p.kill()
    (tmp_path / "torchrun.err").write_text(err)
    why = [x for x in err.splitlines() if "Error" in x or "herd" in x or "resum" in x]
    assert p.returncode == 0, "\n".join(why[-30:])
    assert killed_at < 60 and "resuming from" in err and "step-000000" in err, err[-3000:]
    recs = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in recs if r["kind"] == "train"]
    # each step once: the records after the checkpoint were replaced
    assert steps == list(range(1, 61)), steps
    a, b = losses(tmp_path / "one"), losses(out)
    assert max(abs(x - y) for x, y in zip(a, b)) < 1e-5, list(zip(a, b))


def test_stragglers_are_ranks_far_above_the_median():
    from herd.train.parallel import stragglers

    assert stragglers([1.0, 1.1, 0.9, 3.5], 2.0) == [(3, 3.5, 1.1)]
    assert stragglers([1.0, 1.1, 0.9, 1.9], 2.0) == [] and stragglers([5.0], 2.0) == []


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 CUDA GPUs (NCCL)")
def test_tp_and_pp_on_two_gpus_with_nccl_match_one_gpu(para_tok_dir, tmp_path):
    fp32 = [*BASE, "--run.device", "cuda", "--run.dtype", "float32"]
    pretrain(tiny_config(para_tok_dir, tmp_path / "one", *fp32))
    runs = [
        (para_tok_dir, tmp_path / "tp2", [*fp32, "--parallel.tp", "2"]),
        (para_tok_dir, tmp_path / "pp2", [*fp32, "--parallel.pp", "2", "--parallel.pp_stages_per_rank", "2"]),
    ]
    run_ranks(2, tmp_path, runs, backend="nccl")
    for name in ("tp2", "pp2"):
        _close(losses(tmp_path / "one"), losses(tmp_path / name), tol=1e-4)
