"""Sharded training state (paper §3.3.2, §3.3.4): a model built on the meta device and sharded
over ranks gets exactly the weights of one process, and checkpoints written shard by shard
(torch.distributed.checkpoint, nothing gathered) resume bit-identically, are verified by
checksums, and fall back to the previous checkpoint when the latest is corrupt."""

import json

import pytest
import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file
from train_helpers import tiny_config

from herd.train import pretrain

EXTRA = ["--run.steps", "12", "--checkpoint.interval", "4", "--checkpoint.format", "sharded"]


def _weights(out):
    return load_file(str(out / "model" / "model.safetensors"))


def _losses(out):
    return [(r["step"], r["loss"]) for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())
            if r["kind"] == "train"]


def test_sharded_checkpoint_layout_and_exact_resume(para_tok_dir, tmp_path):
    import shutil

    out = tmp_path / "run"
    pretrain(tiny_config(para_tok_dir, out, *EXTRA))
    ref, ref_losses = _weights(out), _losses(out)
    ck = out / "checkpoints" / "step-00000008"
    assert not (ck / "state.pt").exists() and (ck / "state" / ".metadata").is_file()
    sums = json.loads((ck / "checksums.json").read_text())
    assert "state/.metadata" in sums and any(k.startswith("state/__0_") for k in sums)
    # as if the run had died after step 8's checkpoint: resume redoes steps 9-12 exactly
    shutil.rmtree(out / "checkpoints" / "step-00000012")
    shutil.rmtree(out / "model")
    res = pretrain(tiny_config(para_tok_dir, out, *EXTRA, "--run.resume", "true"))
    assert res["steps"] == 12
    new = _weights(out)
    assert ref.keys() == new.keys() and all(torch.equal(ref[k], new[k]) for k in ref)
    assert _losses(out)[-4:] == ref_losses[-4:]


def test_corrupt_sharded_checkpoint_falls_back(para_tok_dir, tmp_path):
    out = tmp_path / "run"
    pretrain(tiny_config(para_tok_dir, out, *EXTRA))
    ref = _weights(out)
    shard = next((out / "checkpoints" / "step-00000012" / "state").glob("__0_*.distcp"))
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    msgs = []
    res = pretrain(tiny_config(para_tok_dir, out, *EXTRA, "--run.resume", "true"), log=msgs.append)
    warn = [m for m in msgs if "unusable" in m]
    assert len(warn) == 1 and f"checksum mismatch in state/{shard.name}" in warn[0] and "\n" not in warn[0]
    assert any("resuming from" in m and "step-00000008" in m for m in msgs)
    assert res["steps"] == 12
    new = _weights(out)
    assert all(torch.equal(ref[k], new[k]) for k in ref)


def test_full_checkpoint_still_written_by_default_on_one_process(para_tok_dir, tmp_path):
    out = tmp_path / "run"
    pretrain(tiny_config(para_tok_dir, out, "--run.steps", "4", "--checkpoint.interval", "4"))
    assert (out / "checkpoints" / "step-00000004" / "state.pt").is_file()


def _sharded_init_worker(rank, world, store_file, preset, out):
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh

    from herd.model.args import get_preset
    from herd.model.transformer import Transformer
    from herd.train.checkpoint import full_state_dict
    from herd.train.parallel import apply_fsdp, materialize_sharded

    torch.set_num_threads(1)
    # A file rendezvous: no port to pick and race for, and no rank hosts the store, so the order in
    # which the ranks exit cannot break the other's teardown.
    dist.init_process_group("gloo", init_method=f"file://{store_file}", rank=rank, world_size=world)
    try:
        args = get_preset(preset, n_layers=2, dim=128, n_heads=4, n_kv_heads=2, vocab_size=1000,
                          multiple_of=32)
        model = Transformer.build(args, device="meta")
        apply_fsdp(model, init_device_mesh("cpu", (world,)))
        materialize_sharded(model, torch.device("cpu"), seed=7)
        local = {n: p.to_local().numel() for n, p in model.named_parameters()}
        msd = full_state_dict(model)[0]
        if rank == 0:
            torch.save({"sd": msd, "local": local}, out)
        else:
            torch.save({"local": local}, str(out) + ".1")
        dist.barrier()  # both ranks done with every collective before either tears down
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("preset", ["herd-5m", "llama3.2-1b"])  # untied and tied embeddings
def test_meta_sharded_init_equals_one_process_build(tmp_path, preset):
    from herd.model.args import get_preset
    from herd.model.transformer import Transformer

    out = tmp_path / "sd.pt"
    mp.start_processes(_sharded_init_worker, args=(2, tmp_path / "store", preset, out), nprocs=2,
                       start_method="spawn")
    got = torch.load(out, weights_only=True)
    other = torch.load(str(out) + ".1", weights_only=True)
    args = get_preset(preset, n_layers=2, dim=128, n_heads=4, n_kv_heads=2, vocab_size=1000, multiple_of=32)
    ref = Transformer.build(args, seed=7).state_dict()
    assert set(got["sd"]) == set(ref)
    for k in ref:
        assert torch.equal(got["sd"][k], ref[k]), k
    # each rank held only its shard
    for name, n in got["local"].items():
        assert n + other["local"][name] == ref[name].numel() and n < ref[name].numel()
