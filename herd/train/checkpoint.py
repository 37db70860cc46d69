"""Training checkpoints that survive a crash at any instant (paper §3.3.4 reliability).

Each checkpoint is a directory `checkpoints/step-NNNNNNNN/`:

    state.pt           model and optimizer state (full, unsharded; FQN-keyed so any world size can resume)
      or state/        the same state sharded: each rank wrote its own shards with
                       torch.distributed.checkpoint (the default with more than one rank; nothing is
                       gathered, as a 405B run needs; any world size, one process included, resumes)
    rng-R.pt           each rank's RNG states
    train_state.json   step, tokens, data-loader positions, counters, model shape, config
    checksums.json     sha256 of every file above (shards as state/NAME); written last

It is written into `step-NNNNNNNN.tmp/`, every file fsynced, then renamed into place and the
parent directory fsynced: a checkpoint directory either is complete or does not exist. Only the
last `keep` are kept. Loading checks the checksums; a partial or corrupt latest checkpoint is
reported in one line and the one before it is used. Files are loaded with
`torch.load(weights_only=True)`: no arbitrary objects are ever unpickled.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import random
import re
import shutil
import sys
import warnings
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

from herd.errors import HerdError
from herd.fileio import fsync_dir, fsync_file, replace_dir

STEP_RE = re.compile(r"^step-(\d{8})$")
SHARDS = "state"  # directory of a sharded checkpoint's state


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for b in iter(lambda: f.read(1 << 22), b""):
            h.update(b)
    return h.hexdigest()


def step_dir(root: Path, step: int) -> Path:
    return root / f"step-{step:08d}"


def list_checkpoints(root: Path) -> list[tuple[int, Path]]:
    """Complete-looking checkpoint directories, newest first (temporaries ignored)."""
    if not root.is_dir():
        return []
    out = []
    for d in root.iterdir():
        m = STEP_RE.match(d.name)
        if m and d.is_dir():
            out.append((int(m.group(1)), d))
    return sorted(out, reverse=True)


def rng_state() -> dict:
    s = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        s["cuda"] = torch.cuda.get_rng_state()
    return s


def set_rng_state(s: dict):
    torch.set_rng_state(s["torch"])
    random.setstate(s["python"])
    if "cuda" in s and torch.cuda.is_available():
        torch.cuda.set_rng_state(s["cuda"])


def write_rng(root: Path, step: int, rank: int):
    """Every rank writes its RNG states into the temporary directory (before rank 0 seals it)."""
    tmp = step_dir(root, step).with_suffix(".tmp")
    tmp.mkdir(parents=True, exist_ok=True)
    f = tmp / f"rng-{rank}.pt"
    torch.save(rng_state(), f)
    fsync_file(f)


def seal(root: Path, step: int, state: dict | None, train_state: dict, keep: int,
         shard_sums: dict[str, str] | None = None) -> Path:
    """Rank 0: write state.pt (or, with `state` None, take the shards the ranks wrote into state/,
    hashed as `shard_sums`) and train_state.json beside the RNG files, checksum, rename, prune."""
    final = step_dir(root, step)
    tmp = final.with_suffix(".tmp")
    tmp.mkdir(parents=True, exist_ok=True)
    if state is not None:
        torch.save(state, tmp / "state.pt")
    (tmp / "train_state.json").write_text(json.dumps(train_state, indent=1) + "\n")
    files = sorted(p for p in tmp.iterdir() if p.name != "checksums.json" and p.is_file())
    for f in files:
        fsync_file(f)
    sums = {f.name: sha256_file(f) for f in files}
    if state is None:
        shard_sums = dict(shard_sums or {})
        for f in sorted((tmp / SHARDS).iterdir()):
            if f.is_file() and f.name not in shard_sums:  # a file no rank reported: hash it here
                shard_sums[f.name] = sha256_file(f)
        for name in shard_sums:
            fsync_file(tmp / SHARDS / name)
        fsync_dir(tmp / SHARDS)
        sums.update({f"{SHARDS}/{k}": v for k, v in sorted(shard_sums.items())})
    (tmp / "checksums.json").write_text(json.dumps(sums, indent=1) + "\n")
    fsync_file(tmp / "checksums.json")
    fsync_dir(tmp)
    replace_dir(tmp, final)  # re-saving the same step (e.g. after a rollback) replaces it
    for _, old in list_checkpoints(root)[keep:]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def verify(d: Path) -> str | None:
    """None if checkpoint `d` is complete and its checksums match, else what is wrong (one phrase)."""
    cs = d / "checksums.json"
    if not cs.is_file():
        return "no checksums.json (partial write)"
    try:
        sums = json.loads(cs.read_text())
    except ValueError:
        return "checksums.json is corrupt"
    if "state.pt" not in sums and f"{SHARDS}/.metadata" not in sums:
        return "model state missing from checksums.json"
    if "train_state.json" not in sums:
        return "train_state.json missing from checksums.json"
    for name, h in sums.items():
        f = d / name
        if not f.is_file():
            return f"{name} is missing"
        if sha256_file(f) != h:
            return f"checksum mismatch in {name}"
    return None


def is_sharded(d: Path) -> bool:
    return (d / SHARDS).is_dir()


def load(d: Path, rank: int) -> tuple[dict | None, dict, dict | None]:
    """-> (state with model/optim, or None for a sharded checkpoint (load_sharded
    reads d/state), train_state, this rank's RNG state or None)."""
    train_state = json.loads((d / "train_state.json").read_text())
    state = None if is_sharded(d) else torch.load(d / "state.pt", map_location="cpu", weights_only=True)
    rf = d / f"rng-{rank}.pt"
    rng = torch.load(rf, map_location="cpu", weights_only=True) if rf.is_file() else None
    return state, train_state, rng


def use_sharded(fmt: str, world: int) -> bool:
    """checkpoint.format: "sharded", "full", or "auto" (sharded with more than one rank)."""
    return fmt == "sharded" or (fmt == "auto" and world > 1)


# ---- model/optimizer state I/O (torch.distributed.checkpoint; FSDP2 or plain modules) ----------
@contextlib.contextmanager
def _one_process_quiet():
    """torch.distributed.checkpoint warns that it assumes one process when no process group is up:
    that is what a one-process run means, so the warning is silenced there."""
    with warnings.catch_warnings():
        if not (dist.is_available() and dist.is_initialized()):
            warnings.filterwarnings("ignore", message=r"torch\.distributed is (disabled, )?unavailable")
        yield


def save_sharded(model: nn.Module, optim, path, dist_) -> dict[str, str]:
    """Model and optimizer state with torch.distributed.checkpoint: each rank writes its own shards
    into directory `path` (no rank gathers the whole model: how a 405B run checkpoints). Each rank
    then hashes the shard files it wrote (rank 0 also the metadata); returns {file name: sha256}
    (complete on rank 0)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_optimizer_state_dict

    path = Path(path)
    state = {"model": get_model_state_dict(model),
             "optim": get_optimizer_state_dict(model, optim, options=_flat_options())}
    with _one_process_quiet():
        dcp.save(state, checkpoint_id=str(path))
    dist_.barrier()
    own = re.compile(rf"^__{dist_.rank}_\d+\.distcp$")
    names = sorted(f.name for f in path.iterdir() if f.is_file())
    mine = {n: sha256_file(path / n) for n in names
            if own.match(n) or (dist_.is_main and not re.match(r"^__\d+_\d+\.distcp$", n))}
    if dist_.world > 1:
        parts = [None] * dist_.world
        dist.all_gather_object(parts, mine)
        mine = {k: v for part in parts for k, v in part.items()}
    return mine


def load_sharded(model: nn.Module, optim, path):
    """Load a `save_sharded` checkpoint into this run's model and optimizer, whatever its number of
    ranks (torch.distributed.checkpoint reshards; a one-process run reads it too)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.api import CheckpointException
    from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict,
                                                         get_optimizer_state_dict, set_model_state_dict,
                                                         set_optimizer_state_dict)

    state = {"model": get_model_state_dict(model)}
    opts = _flat_options()
    if optim is not None:
        state["optim"] = get_optimizer_state_dict(model, optim, options=opts)
    with _one_process_quiet():
        try:
            dcp.load(state, checkpoint_id=str(path))
        except (RuntimeError, CheckpointException) as e:  # written before the optimizer state was flattened
            if optim is None or "Missing key in checkpoint" not in str(e) or _pipelined(model):
                raise
            opts = StateDictOptions()
            state["optim"] = get_optimizer_state_dict(model, optim, options=opts)
            dcp.load(state, checkpoint_id=str(path))
    set_model_state_dict(model, state["model"])
    if optim is not None:
        set_optimizer_state_dict(model, optim, state["optim"], options=opts)


def _flat_options(**kw):
    """Optimizer state flattened to one FQN-keyed entry per tensor ("state.<param>.exp_avg"), so the
    state of a pipeline rank (some parameters only) merges with the others' and a checkpoint reloads
    on another layout."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(flatten_optimizer_state_dict=True, **kw)


def _pipelined(model) -> bool:
    return getattr(model, "schedule", None) is not None


def full_state_dict(model: nn.Module, optim=None) -> tuple[dict, dict | None]:
    """Unsharded, CPU, FQN-keyed model (and optimizer) state: the same on any number of ranks (on
    rank 0; under pipeline parallelism the stages' weights are gathered there, other ranks get {};
    a pipeline's optimizer state is only checkpointed sharded)."""
    from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict,
                                                         get_optimizer_state_dict)

    if not _pipelined(model):
        opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
        msd = get_model_state_dict(model, options=opts)
        osd = get_optimizer_state_dict(model, optim, options=opts) if optim is not None else None
        return msd, osd
    if optim is not None:
        raise HerdError("a pipeline-parallel run checkpoints sharded: set --checkpoint.format sharded "
                        "(or auto)")
    d = model.dist
    # every rank gets its stages' full tensors; one copy of each stage goes to rank 0
    msd = {k: v.detach().cpu() for k, v in
           get_model_state_dict(model, options=StateDictOptions(full_state_dict=True)).items()}
    keep = d.dim("dp") == 0 and d.dim("cp") == 0 and d.dim("tp") == 0
    parts = [None] * d.world if d.is_main else None
    dist.gather_object(msd if keep else {}, parts, dst=0)
    if not d.is_main:
        return {}, None
    out = {}
    for part in parts:
        out.update(part)
    return out, None


def load_full_state_dict(model: nn.Module, msd: dict, optim=None, osd: dict | None = None, dist_=None):
    """Load full (unsharded) state into a model of any layout (a pipeline rank takes its stages' part)."""
    from torch.distributed.checkpoint.state_dict import (StateDictOptions, set_model_state_dict,
                                                         set_optimizer_state_dict)

    if _pipelined(model):
        if optim is not None and osd is not None:
            raise HerdError("this checkpoint is a full one (state.pt): a pipeline-parallel run resumes "
                            "from sharded checkpoints; resume it with pp 1 or save with "
                            "--checkpoint.format sharded")
        own = set(model.state_dict())
        set_model_state_dict(model, {k: v for k, v in msd.items() if k in own},
                             options=StateDictOptions(full_state_dict=True, strict=False))
        return
    opts = StateDictOptions(full_state_dict=True)
    set_model_state_dict(model, msd, options=opts)
    if optim is not None and osd is not None:
        set_optimizer_state_dict(model, optim, osd, options=opts)


def find_latest(root: Path, log=None) -> Path | None:
    """The newest checkpoint that verifies; each bad one is reported in one line and skipped.
    None if there are none; HerdError if there are some but none is usable."""
    log = log or (lambda s: print(s, file=sys.stderr))
    cks = list_checkpoints(root)
    for step, d in cks:
        problem = verify(d)
        if problem is None:
            return d
        log(f"herd: warning: checkpoint {d} is unusable ({problem}); trying the previous one")
    if cks:
        raise HerdError(f"no usable checkpoint in {root}: all {len(cks)} are corrupt; start a new run "
                        "(another --run.out) or restore a backup")
    return None


__all__ = ["list_checkpoints", "write_rng", "seal", "verify", "load", "is_sharded", "find_latest", "step_dir",
           "rng_state", "set_rng_state", "sha256_file", "SHARDS", "use_sharded", "save_sharded",
           "load_sharded",
           "full_state_dict", "load_full_state_dict"]
