"""Run curation map tasks on all local cores (multiprocessing) or on a Ray cluster (paper §3.1.1's
pipeline is run "across the entire dataset"; here one machine or many).

A task is a top-level function and picklable arguments; it writes its outputs atomically and then a
completion marker (`<name>.done.json` holding its tallies). `run_tasks` skips tasks whose marker
exists, so a killed run restarted on the same work directory neither repeats nor loses a shard.
With Ray, every worker must see the same filesystem paths (a local Ray, or a shared volume).
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import sys
from pathlib import Path
from typing import Callable

from herd.errors import HerdError

IN_WORKER = False


def _init_worker() -> None:
    global IN_WORKER
    IN_WORKER = True
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    try:  # one core per worker: torch's own thread pool would oversubscribe the machine
        if "torch" in sys.modules:
            sys.modules["torch"].set_num_threads(1)
    except Exception:
        pass


def read_marker(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def run_tasks(fn: Callable, tasks: list[tuple], markers: list[Path], executor: str = "local",
              workers: int = 0, ray_address: str = "", desc: str = "", progress: bool = True) -> list[dict]:
    """Run fn(*task) for each task without a marker; return every task's marker content, in order."""
    from tqdm import tqdm

    pending = [i for i, m in enumerate(markers) if read_marker(m) is None]
    workers = workers or os.cpu_count() or 1
    bar = tqdm(total=len(tasks), initial=len(tasks) - len(pending), desc=desc, disable=not progress,
               unit="task", leave=False)
    if pending:
        if executor == "ray":
            _run_ray(fn, [tasks[i] for i in pending], workers, ray_address, bar)
        elif workers == 1 or len(pending) == 1:
            for i in pending:
                fn(*tasks[i])
                bar.update(1)
        else:
            # forkserver, not fork: a fork of a process whose torch/OpenMP threads are running (a CLI that
            # already trained, a test session) can crash in the child; and a process pool executor, not
            # multiprocessing.Pool, which waits forever for the task of a worker that died
            from concurrent.futures import ProcessPoolExecutor, as_completed
            from concurrent.futures.process import BrokenProcessPool

            ctx = mp.get_context("forkserver")
            try:
                with ProcessPoolExecutor(min(workers, len(pending)), mp_context=ctx,
                                         initializer=_init_worker) as pool:
                    for f in as_completed([pool.submit(fn, *tasks[i]) for i in pending]):
                        f.result()  # a task's exception is raised here
                        bar.update(1)
            except BrokenProcessPool as e:
                raise HerdError(f"a curation worker died ({e}); rerun the same command to resume from the "
                                "finished tasks") from None
    bar.close()
    out = []
    for m in markers:
        r = read_marker(m)
        if r is None:
            raise HerdError(f"task finished without its completion marker {m} (a worker died: rerun to "
                            "resume)")
        out.append(r)
    return out


def _run_ray(fn, tasks, workers, address, bar) -> None:
    try:
        import ray
    except ImportError as e:
        raise HerdError("--executor ray needs Ray: pip install ray") from e
    if not ray.is_initialized():
        kwargs = {"ignore_reinit_error": True, "include_dashboard": False, "log_to_driver": False}
        if address:
            ray.init(address=address, **kwargs)
        else:
            ray.init(num_cpus=workers, **kwargs)
    remote = ray.remote(num_cpus=1)(_ray_task)
    refs = [remote.remote(fn, t) for t in tasks]
    while refs:
        done, refs = ray.wait(refs, num_returns=1)
        ray.get(done)  # re-raises a worker's exception here
        bar.update(len(done))


def _ray_task(fn, args):
    _init_worker()
    return fn(*args)
