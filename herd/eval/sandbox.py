"""Run model-written code safely (paper §5 HumanEval; §4.3.1 execution feedback for code).

`run_code(code)` runs a Python program in a fresh process and returns a `Result`: passed (exit 0
within the limits), status, exit code and the tails of stdout/stderr. The isolation is done by
`_sandbox_launch.py` (read its docstring for the layers): namespaces (network, mount, PID) where the
kernel permits, rlimits (memory, CPU, processes, file size), an unprivileged uid of its own when we
run as root, a private tmpfs working directory, the user's home and working directories hidden, a
minimal environment, and a socket-refusing audit hook as a second network barrier.

Whatever the program does, the host cleans up after it: the launcher's process group is killed on
timeout, the PID namespace takes every descendant with it, and when we ran it under its own uid any
process still owned by that uid is killed (`kill(-1)` as that uid). Without namespaces (unprivileged
containers) the isolation is weaker; `Result.isolation` says what was in force.
"""

from __future__ import annotations

import fcntl
import ast
import marshal
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from herd.errors import HerdError

LAUNCHER = str(Path(__file__).with_name("_sandbox_launch.py"))
SETUP_FAILED = 197
TAIL = 4000  # characters of stdout/stderr kept in a Result
# Each concurrent sandbox gets its own uid so that RLIMIT_NPROC (counted per uid) of one cannot be
# exhausted by another, and so that "kill every process of this uid" only touches that sandbox.
UID_BASE = int(os.environ.get("HERD_SANDBOX_UID_BASE", "2000000"))
UID_SLOTS = 4096
SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/etc", "/proc", "/sys", "/dev", "/opt")


@dataclass
class Result:
    passed: bool
    status: str  # passed | failed | timeout | memory | error
    returncode: int | None = None  # exit code, or -signal
    stdout: str = ""
    stderr: str = ""
    wall_s: float = 0.0
    isolation: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return dict(
            passed=self.passed,
            status=self.status,
            returncode=self.returncode,
            stdout=self.stdout,
            stderr=self.stderr,
            wall_s=round(self.wall_s, 3),
            isolation=self.isolation,
        )


def _uid_mapped(uid: int) -> bool:
    try:
        for line in Path("/proc/self/uid_map").read_text().splitlines():
            inside, _, count = (int(x) for x in line.split())
            if inside <= uid < inside + count:
                return True
    except OSError:
        pass
    return False


def _uid_in_use(uid: int) -> bool:
    import pwd

    try:
        pwd.getpwuid(uid)
        return True
    except KeyError:
        pass
    return bool(_pids_of_uid(uid))


def _pids_of_uid(uid: int) -> list[int]:
    pids = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/status") as f:
                for line in f:
                    if line.startswith("Uid:"):
                        if int(line.split()[1]) == uid:
                            pids.append(int(d))
                        break
        except OSError:
            continue
    return pids


_VERIFIED_FREE: set[int] = set()


class _UidLease:
    """An exclusive uid for one sandbox run, claimed with a lock file (works across processes)."""

    def __init__(self):
        lock_dir = Path(tempfile.gettempdir()) / "herd-sandbox-uids"
        lock_dir.mkdir(mode=0o700, exist_ok=True)
        base = UID_BASE if _uid_mapped(UID_BASE + UID_SLOTS) else 60000
        start = (os.getpid() * 7) % UID_SLOTS
        for i in range(UID_SLOTS):
            uid = base + (start + i) % UID_SLOTS
            fd = os.open(lock_dir / f"{uid}.lock", os.O_CREAT | os.O_RDWR, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                continue
            if uid not in _VERIFIED_FREE:
                if _uid_in_use(uid):
                    os.close(fd)
                    continue
                _VERIFIED_FREE.add(uid)  # checked once per process: nothing else uses these uids
            self.uid, self.fd = uid, fd
            return
        raise HerdError("sandbox: no free uid to run code under (are too many sandboxes running?)")

    def release(self):
        os.close(self.fd)


def _kill_uid(uid: int, deadline_s: float = 30.0) -> None:
    """Kill every process owned by `uid` and return only once none is left (a containment guarantee:
    run_code never returns while its sandbox has a process). kill(-1, SIGKILL) from a process running
    as that uid reaches exactly them (and never the caller), even ones that left the session or
    process group; killed processes are counted until they are reaped (zombies too)."""
    t0 = time.monotonic()
    while _pids_of_uid(uid):
        waited = time.monotonic() - t0
        if waited > deadline_s:
            raise HerdError(f"sandbox: processes of uid {uid} survived SIGKILL for {deadline_s:.0f} s: "
                            f"{_pids_of_uid(uid)[:10]}")
        if waited >= 0.2:  # the PID namespace usually takes them down by itself within a few ms
            subprocess.run(
                [
                    sys.executable,
                    "-I",
                    "-S",
                    "-c",
                    f"import os,signal; os.setgid({uid}); os.setuid({uid}); os.kill(-1, signal.SIGKILL)",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                timeout=30,
            )
        time.sleep(0.01)


def _kill_session(sid: int) -> None:
    """Without a uid of our own: kill every process still in the sandbox's session."""
    for _ in range(50):
        left = []
        for d in os.listdir("/proc"):
            if d.isdigit():
                try:
                    stat = Path(f"/proc/{d}/stat").read_text()
                    if int(stat.rsplit(")", 1)[1].split()[3]) == sid:
                        left.append(int(d))
                except (OSError, ValueError, IndexError):
                    continue
        if not left:
            return
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        time.sleep(0.01)


def _count_user_processes(uid: int) -> int:
    return len(_pids_of_uid(uid))


def _wait_exit(proc: subprocess.Popen, timeout: float) -> bool:
    """Wait for the process to exit; False on timeout. A pidfd wakes us the moment it exits
    (Popen.wait(timeout) polls with sleeps of up to 50 ms, a third of a short program's run)."""
    import select

    try:
        fd = os.pidfd_open(proc.pid)
    except (AttributeError, OSError):
        try:
            proc.wait(timeout)
            return True
        except subprocess.TimeoutExpired:
            return False
    try:
        if not select.select([fd], [], [], timeout)[0]:
            return False
    finally:
        os.close(fd)
    proc.wait()
    return True


def _tail(path: Path) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - TAIL))
            return f.read().decode("utf-8", "replace")
    except OSError:
        return ""


def _hidden_paths(hide) -> list[str]:
    """Directories the program must not see: temp dirs, homes, the user's working directory."""
    paths = ["/tmp", "/var/tmp", "/dev/shm", "/root", "/home", os.path.expanduser("~"), os.getcwd(), *hide]
    out = []
    for p in paths:
        p = os.path.realpath(p)
        if p == "/" or any(p == s or p.startswith(s + "/") for s in SYSTEM_DIRS):
            continue
        if p not in out:
            out.append(p)
    return out


def run_code(
    code: str,
    timeout_s: float = 10.0,
    memory_mb: int = 1024,
    cpu_s: float | None = None,
    max_procs: int = 4,
    max_file_mb: int = 16,
    tmpfs_mb: int = 64,
    stdin: str | None = None,
    hide: tuple[str, ...] = (),
    site_packages: bool = False,
    require_end: bool = True,
) -> Result:
    """Run the Python program `code` in the sandbox and report how it ended.

    timeout_s: wall-clock limit; memory_mb: address-space limit; cpu_s: CPU-seconds limit (default
    timeout_s + 1); max_procs: processes/threads the program may have; max_file_mb: largest file it
    may write; tmpfs_mb: size of its private /tmp; stdin: text fed to it; hide: more directories to
    make invisible to it; site_packages: let it import the environment's installed packages (by
    default it gets the standard library only, which starts 3x faster and is all HumanEval needs);
    require_end (default True): pass only if the program ran to its last line, so a solution that
    exits 0 (os._exit(0), sys.exit(0)) before the tests appended to it have run does not pass;
    False judges by the exit status alone (programs that legitimately end with sys.exit(0))."""
    if not isinstance(code, str):
        raise HerdError(f"sandbox: code must be a string, got {type(code).__name__}")
    base = Path(tempfile.mkdtemp(prefix="herd-sbx-"))
    lease = None
    root = os.geteuid() == 0
    try:
        if root:
            base.chmod(0o711)  # without a mount namespace the sandbox uid works in base/work
        prog = base / "prog.py"
        prog.write_text(code, encoding="utf-8")
        if root:
            lease = _UidLease()
            uid = gid = lease.uid
            nproc = max_procs
        else:
            uid, gid = os.getuid(), os.getgid()
            # RLIMIT_NPROC counts all of the user's processes: allow max_procs more than they have.
            nproc = _count_user_processes(uid) + max_procs
        mb = 1 << 20
        cfg = {
            "uid": uid,
            "gid": gid,
            "drop_uid": root,
            "python": sys.executable,
            "workdir": "/tmp/sandbox",  # inside the private /tmp of the mount namespace
            "host_workdir": str(base / "work"),  # used when there is no mount namespace
            "stdlib": os.path.dirname(os.__file__),
            "namespaces": os.environ.get("HERD_SANDBOX_NAMESPACES", "1") != "0",
            "allow_root": os.environ.get("HERD_SANDBOX_ALLOW_ROOT", "0") == "1",
            "status_path": str(base / "status.txt"),
            "hide": _hidden_paths(hide),
            "keep": sorted(
                {
                    os.path.realpath(p)
                    for p in (
                        sys.base_prefix,
                        sys.prefix,
                        sys.exec_prefix,
                        os.path.dirname(os.path.realpath(sys.executable)),
                    )
                }
            ),
            "tmpfs_mb": tmpfs_mb,
            "site_packages": bool(site_packages),
            "limits": {
                "as": memory_mb * mb,
                "cpu": int(cpu_s or timeout_s + 1),
                "fsize": max_file_mb * mb,
                "nproc": nproc,
            },
            "env": {
                "PATH": "/usr/local/bin:/usr/bin:/bin",
                "HOME": "/tmp/sandbox",
                "TMPDIR": "/tmp/sandbox",
                "LANG": "C.UTF-8",
                "PYTHONIOENCODING": "utf-8",
                "OMP_NUM_THREADS": "1",
                "OPENBLAS_NUM_THREADS": "1",
                "MKL_NUM_THREADS": "1",
            },
        }
        out_path, err_path = base / "stdout", base / "stderr"
        t0 = time.perf_counter()
        end_path = base / "end"
        with (
            open(prog, "rb") as progf,
            open(out_path, "wb") as out,
            open(err_path, "wb") as err,
            open(end_path, "wb") as endf,
        ):
            cfg["prog_fd"] = progf.fileno()  # the launcher moves it to fd 3 for the bootstrap
            cfg["end_fd"] = endf.fileno()  # ... and this one to fd 4
            proc = subprocess.Popen(
                [sys.executable, "-I", "-S", "-B", LAUNCHER, marshal.dumps(cfg).hex()],
                stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                pass_fds=(cfg["prog_fd"], cfg["end_fd"]),
                env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
                start_new_session=True,
                preexec_fn=None,
                cwd=str(base),
            )
            timed_out = False
            try:
                if stdin is None:
                    timed_out = not _wait_exit(proc, timeout_s + 0.5)
                else:
                    proc.communicate(input=stdin.encode(), timeout=timeout_s + 0.5)
            except subprocess.TimeoutExpired:
                timed_out = True
                proc.terminate()  # the launcher kills and reaps the program
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    pass
            finally:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait()
        wall = time.perf_counter() - t0
        status = {}
        try:
            for line in (base / "status.txt").read_text().splitlines():  # the last line is the final word
                status.update(ast.literal_eval(line))
        except (OSError, ValueError, SyntaxError):
            pass
        # Under its own uid, wait until no process of the sandbox is left (with a PID namespace the
        # kernel has usually emptied it already: then this is one look at /proc).
        if root and status.get("uid_dropped", True):
            _kill_uid(uid)
        if not status.get("uid_dropped", False):
            _kill_session(proc.pid)
        stdout_t, stderr_t = _tail(out_path), _tail(err_path)
        isolation = (
            ["rlimits"]
            + (["uid"] if status.get("uid_dropped") else [])
            + [n + "ns" for n in status.get("namespaces", [])]
        )
        rc = status.get("exit", -status["signal"] if "signal" in status else None)
        try:
            ended = end_path.read_bytes()
        except OSError:
            ended = b""
        if timed_out:
            st = "timeout"
        elif rc == 0 and (not require_end or ended.startswith(b"end")):
            st = "passed"
        elif rc == 0:  # exited 0 without running to the end of the program (os._exit / sys.exit early)
            st = "failed"
        elif rc == SETUP_FAILED and "herd-sandbox: setup failed" in stderr_t:
            st = "error"
        elif "MemoryError" in stderr_t:
            st = "memory"
        elif rc in (-signal.SIGXCPU, -signal.SIGKILL):
            st = "timeout"
        else:
            st = "failed"
        return Result(
            passed=st == "passed",
            status=st,
            returncode=rc,
            stdout=stdout_t,
            stderr=stderr_t,
            wall_s=wall,
            isolation=isolation,
        )
    finally:
        if lease is not None:
            lease.release()
        shutil.rmtree(base, ignore_errors=True)


def run_many(codes: list[str], workers: int = 2, progress: bool = False, **kw) -> list[Result]:
    """run_code over many programs, `workers` at a time (each is its own process)."""
    if workers < 1:
        raise HerdError(f"sandbox: workers must be >= 1, got {workers}")
    with ThreadPoolExecutor(max_workers=workers) as ex:
        it = ex.map(lambda c: run_code(c, **kw), codes)
        if progress:
            from tqdm import tqdm

            it = tqdm(it, total=len(codes), desc="sandbox", unit="prog")
        return list(it)


__all__ = ["Result", "run_code", "run_many"]
