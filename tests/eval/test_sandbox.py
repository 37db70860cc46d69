"""The sandbox holds: hostile programs are contained, scored as failures and leave the host
unharmed (files and processes are checked afterwards)."""

import os
import socket
import threading
import time

import pytest

from herd.eval.humaneval import load_problems, score_completions
from herd.eval.sandbox import run_code, run_many

ROOT = os.geteuid() == 0


def sandbox_processes():
    """Processes owned by a sandbox uid (there must be none between runs)."""
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/status") as f:
                    uid = next(int(line.split()[1]) for line in f if line.startswith("Uid:"))
            except (OSError, StopIteration):
                continue
            if uid >= 60000 and uid != 65534:
                out.append(int(d))
    return out


def my_descendants():
    kids, frontier = set(), {os.getpid()}
    while frontier:
        nxt = set()
        for d in os.listdir("/proc"):
            if d.isdigit():
                try:
                    ppid = int(open(f"/proc/{d}/stat").read().rsplit(")", 1)[1].split()[1])
                except (OSError, ValueError, IndexError):
                    continue
                if ppid in frontier and int(d) not in kids:
                    nxt.add(int(d))
        kids |= nxt
        frontier = nxt
    return kids


def test_basic_outcomes():
    r = run_code("print('hello')")
    assert r.passed and r.status == "passed" and r.stdout == "hello\n" and r.returncode == 0
    r = run_code("assert 1 == 2")
    assert not r.passed and r.status == "failed" and "AssertionError" in r.stderr
    r = run_code("import sys; sys.exit(3)")
    assert r.status == "failed" and r.returncode == 3
    r = run_code("print(input())", stdin="from stdin\n")
    assert r.stdout == "from stdin\n"
    # the standard library only, unless the environment's packages are asked for
    assert run_code("import numpy").status == "failed"
    assert run_code("import numpy; print(numpy.ones(3).sum())", site_packages=True).stdout == "3.0\n"
    if ROOT:  # what this machine (root in a container) gives us
        assert {"uid", "netns", "mountns", "pidns", "rlimits"} <= set(r.isolation)


def test_environment_is_minimal_and_cwd_private(monkeypatch):
    monkeypatch.setenv("HERD_TEST_API_KEY", "sk-very-secret")
    r = run_code(
        "import os, json; print(json.dumps({'env': dict(os.environ), 'cwd': os.getcwd(), "
        "'files': os.listdir('.'), 'uid': os.getuid()}))"
    )
    assert r.passed
    import json

    info = json.loads(r.stdout)
    assert "HERD_TEST_API_KEY" not in info["env"] and "sk-very-secret" not in r.stdout
    assert set(info["env"]) <= {
        "PATH",
        "HOME",
        "TMPDIR",
        "LANG",
        "PYTHONIOENCODING",
        "OMP_NUM_THREADS",
        "OPENBLAS_NUM_THREADS",
        "MKL_NUM_THREADS",
        "LC_CTYPE",
    }
    assert info["files"] == []
    if ROOT:
        assert info["uid"] >= 60000


def test_infinite_loop_times_out():
    t = time.perf_counter()
    r = run_code("while True:\n    pass\n", timeout_s=1.0)
    assert r.status == "timeout" and not r.passed
    assert time.perf_counter() - t < 10


def test_memory_bomb_is_contained():
    r = run_code("x = []\nwhile True:\n    x.append(bytearray(50 * 2**20))\n", memory_mb=512, timeout_s=10)
    assert not r.passed and r.status == "memory"


def test_fork_bomb_is_contained_and_cleaned_up():
    before = len(my_descendants())
    bomb = (
        "import os, time\n"
        "while True:\n"
        "    try:\n"
        "        if os.fork() == 0:\n"
        "            os.setsid()\n"  # try to escape the process group too
        "    except OSError:\n"
        "        time.sleep(0.01)\n"
    )
    r = run_code(bomb, timeout_s=1.0)
    assert not r.passed and r.status in ("timeout", "failed")
    time.sleep(0.2)
    assert sandbox_processes() == []
    assert len(my_descendants()) <= before
    # the host can still start processes
    assert run_code("print(1)").passed


@pytest.mark.skipif(
    not ROOT, reason="file isolation from the user's own files needs root (own uid + mount ns)"
)
def test_files_outside_are_safe(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    secret = home / "secret.txt"
    secret.write_text("TOP-SECRET-TOKEN")
    secret.chmod(0o600)
    repo_file = os.path.join(os.getcwd(), "herd-sandbox-was-here.txt")
    hostile = f"""
import os, shutil, glob
hits = []
for fn in [lambda: os.remove({str(victim)!r}), lambda: shutil.rmtree({str(tmp_path)!r}),
           lambda: open({str(tmp_path / "new.txt")!r}, 'w').write('x'),
           lambda: open({repo_file!r}, 'w').write('x'),
           lambda: open('/etc/herd-pwned', 'w').write('x'),
           lambda: hits.append(open({str(secret)!r}).read()),
           lambda: hits.append(open(os.path.expanduser('~root') + '/.bash_history').read()),
           lambda: hits.append(str(os.listdir('/root'))),
           lambda: hits.append(str(glob.glob('/home/*/*')))]:
    try:
        fn()
    except Exception as e:
        print(type(e).__name__)
print('HITS', hits)
raise SystemExit(1)
"""
    r = run_code(hostile)
    assert not r.passed
    assert victim.read_text() == "precious"
    assert not (tmp_path / "new.txt").exists() and not os.path.exists(repo_file)
    assert not os.path.exists("/etc/herd-pwned")
    assert "TOP-SECRET-TOKEN" not in r.stdout and "bash_history" not in r.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["home", "victim.txt"]


def test_network_is_unreachable():
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(5)
    srv.settimeout(0.2)
    port = srv.getsockname()[1]
    got = []
    stop = threading.Event()

    def accept():
        while not stop.is_set():
            try:
                c, _ = srv.accept()
                got.append(c.recv(100))
                c.close()
            except OSError:
                pass

    th = threading.Thread(target=accept)
    th.start()
    try:
        plain = (
            f"import socket\ns = socket.create_connection(('127.0.0.1', {port}), timeout=2)\n"
            "s.send(b'leak')\n"
        )
        # bypass Python's socket module (and its audit events) with raw libc calls
        raw = f"""
import ctypes, struct
libc = ctypes.CDLL(None, use_errno=True)
fd = libc.socket(2, 1, 0)
addr = struct.pack('<H', 2) + struct.pack('>H', {port}) + bytes([127, 0, 0, 1]) + bytes(8)  # sockaddr_in
rc = libc.connect(fd, addr, len(addr)) if fd >= 0 else -1
assert fd < 0 or rc != 0, 'connected'
if fd >= 0:
    libc.send(fd, b'leak', 4, 0)
raise SystemExit(1)
"""
        r1, r2 = run_code(plain, timeout_s=5), run_code(raw, timeout_s=5)
    finally:
        time.sleep(0.3)  # let a late connection arrive
        stop.set()
        th.join()
        srv.close()
    assert not r1.passed and not r2.passed
    assert got == []


def test_hostile_completions_score_as_failures():
    """The same attacks as HumanEval completions: every one fails, pass@1 = 0, host intact."""
    prob = load_problems(limit=1)
    body = {
        "loop": "    while True:\n        pass\n",
        "fork": "    import os\n    while True:\n        try:\n            os.fork()\n"
        "        except OSError:\n            pass\n",
        "memory": "    x = ' ' * (2 ** 40)\n    return x\n",
        "network": "    import socket\n    socket.create_connection(('1.1.1.1', 80), timeout=1)\n"
        "    return True\n",
        "delete": "    import shutil, os\n    shutil.rmtree(os.path.expanduser('~'), ignore_errors=True)\n"
        "    os.system('rm -rf /work /tmp/*')\n    return 1\n",
        "exit0": "    import os\n    os._exit(0)\n",  # exit 0 before the checks ran
        "sysexit0": "    raise SystemExit(0)\n",
    }
    res = score_completions(prob, {prob[0]["task_id"]: list(body.values())}, workers=2, timeout_s=1.0)
    st = res["per_task"][0]["status"]
    assert len(st) == len(body) and "passed" not in st, st
    assert res["pass@1"] == 0.0
    assert os.path.isdir("/work") and os.path.isdir(os.path.expanduser("~"))
    assert sandbox_processes() == []


def test_require_end():
    # default: exiting 0 before the end (before appended tests could run) is a failure
    assert not run_code("import os\nos._exit(0)\nassert False, 'tests'").passed
    assert not run_code("import sys\nsys.exit(0)\nassert False, 'tests'").passed
    assert run_code("x = 1\n").passed
    # programs that legitimately end with sys.exit(0) are judged by their exit status alone
    assert run_code("import sys\nsys.exit(0)", require_end=False).passed
    assert not run_code("import sys\nsys.exit(1)", require_end=False).passed


def test_run_many_is_ordered():
    rs = run_many([f"print({i})" for i in range(6)], workers=2)
    assert [r.stdout.strip() for r in rs] == [str(i) for i in range(6)]


def test_without_namespaces(monkeypatch, tmp_path):
    """Where namespaces are not permitted (simulated): the program still runs in a private directory
    under rlimits and is cleaned up; as root it must drop to its own uid or refuse to run."""
    import sys

    from herd.eval._sandbox_launch import world_usable

    monkeypatch.setenv("HERD_SANDBOX_NAMESPACES", "0")
    r = run_code("import os; print(os.getcwd()); open('f.txt', 'w').write('x')")
    assert not any(i.endswith("ns") for i in r.isolation)
    if ROOT and not (world_usable(sys.executable) and world_usable(os.path.dirname(os.__file__))):
        # this machine: Python (or its stdlib) lives under /root, unreachable for another uid -> refuse,
        # never run as root (the same test the launcher makes)
        assert r.status == "error" and "cannot drop root" in r.stderr
        monkeypatch.setenv("HERD_SANDBOX_ALLOW_ROOT", "1")
        r = run_code("import os; print(os.getcwd())")
    assert r.passed and "herd-sbx-" in r.stdout  # a directory made for this run, removed afterwards
    assert not os.path.exists(r.stdout.strip())
    t = time.perf_counter()
    assert run_code("while True:\n    pass\n", timeout_s=1.0).status == "timeout"
    assert time.perf_counter() - t < 10
