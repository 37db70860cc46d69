"""Sandbox launcher for model-written code (paper §5 HumanEval; §4.3.1 code rejection sampling).

Run by `herd.eval.sandbox.run_code` as `python -I -S _sandbox_launch.py CONFIG` (marshal, hex), with the
program to run on fd 3. It uses only the standard library (no site-packages, no herd import), so it
starts in ~10 ms. It sets up the isolation, forks the process that becomes the untrusted program,
waits for it and writes its exit status to a file the host reads:

1. New namespaces where the kernel allows them (root, or unprivileged user namespaces):
   network (no interfaces but a down loopback: nothing is reachable), mount (a private view of the
   filesystem) and PID (when the program exits or is killed, the kernel kills every process it left,
   so a fork bomb cannot outlive it).
2. In the mount namespace: fresh size-limited tmpfs over /tmp, /var/tmp, /dev/shm and over the home
   directories and the user's working directory, so the program cannot read, write or delete the
   user's files there; the Python installation is bound back read-only at its own path so the
   interpreter still starts. A fresh /proc shows only the sandbox's processes.
3. rlimits: address space (memory), CPU seconds, processes (counted per uid, which is why we run as
   a uid of our own when root: RLIMIT_NPROC is not enforced for root), file size, no core files.
4. Drop to an unprivileged uid/gid with no supplementary groups, no new privileges, and a parent-
   death signal so the program dies with the launcher.
5. Run the program with a minimal environment: in this same interpreter (started `-I -S -B`:
   isolated, standard library only; one interpreter start saved per program, ~35% more programs/s),
   or, when site-packages were asked for, in a fresh `python -I -B` exec'd in its place. The
   bootstrap installs an audit hook that refuses sockets (a second barrier for machines where
   network namespaces are not permitted), runs the program as __main__, and writes "end" on fd 4
   when the program ran to its last line.
"""

import ctypes
import marshal
import os
import resource
import signal
import sys

CLONE_NEWNS, CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = 0x00020000, 0x10000000, 0x20000000, 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 16384, 1 << 18
PR_SET_PDEATHSIG, PR_SET_NO_NEW_PRIVS = 1, 38
SETUP_FAILED = 197

# Runs inside the sandbox as the interpreter's first code. The program arrives on fd 3 so that it
# is never written where the sandbox can see or change it.
BOOTSTRAP = r"""
import os, sys
with os.fdopen(3, "r", encoding="utf-8") as f:
    _src = f.read()
def _no_network(event, args):
    if event.startswith("socket."):
        raise PermissionError("herd sandbox: network access is disabled")
sys.addaudithook(_no_network)
del _no_network
sys.argv = ["solution.py"]
_g = {"__name__": "__main__", "__file__": "solution.py", "__builtins__": __builtins__}
try:
    exec(compile(_src, "solution.py", "exec"), _g)
except SystemExit as e:
    if e.code in (0, None):
        os.write(4, b"exit0")
    raise
# Reached the end of the program: an early os._exit(0) never gets here.
os.write(4, b"end")
"""

libc = ctypes.CDLL(None, use_errno=True)


def _check(ret, what):
    if ret != 0:
        e = ctypes.get_errno()
        raise OSError(e, f"{what}: {os.strerror(e)}")


def mount(src, target, fstype, flags, data=None):
    enc = lambda s: None if s is None else s.encode()  # noqa: E731
    _check(
        libc.mount(enc(src), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data)), f"mount {target}"
    )


def unshare(flags):
    _check(libc.unshare(flags), "unshare")


def is_under(path, parent):
    return path == parent or path.startswith(parent.rstrip("/") + "/")


def setup_user_namespace(uid, gid):
    """Unprivileged case: map our own uid/gid into the new user namespace (as uid/gid themselves)."""
    with open("/proc/self/setgroups", "w") as f:
        f.write("deny")
    with open("/proc/self/uid_map", "w") as f:
        f.write(f"{uid} {uid} 1")
    with open("/proc/self/gid_map", "w") as f:
        f.write(f"{gid} {gid} 1")


def setup_mounts(cfg):
    """Private view of the filesystem: tmpfs over everything in cfg['hide'], the paths in
    cfg['keep'] (the Python installation) bound back read-only at their own place."""
    mount(None, "/", None, MS_REC | MS_PRIVATE)
    hide = [p for p in cfg["hide"] if os.path.isdir(p)]
    keep_fds = []
    for p in cfg["keep"]:
        if any(is_under(p, h) for h in hide) and os.path.isdir(p):
            keep_fds.append((p, os.open(p, os.O_PATH | os.O_DIRECTORY)))
    size = f"size={cfg['tmpfs_mb']}m"
    done = []
    for h in sorted(hide, key=len):
        if any(is_under(h, d) for d in done):
            continue
        mode = "1777" if h in ("/tmp", "/var/tmp", "/dev/shm") else "0755"
        mount("tmpfs", h, "tmpfs", MS_NOSUID | MS_NODEV, f"{size},mode={mode}")
        done.append(h)
    for p, fd in keep_fds:
        os.makedirs(p, mode=0o755, exist_ok=True)
        mount(f"/proc/self/fd/{fd}", p, None, MS_BIND | MS_REC)
        mount(None, p, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID)
        os.close(fd)


def world_usable(path):
    """Can any user reach and read `path` (every parent directory o+x, the path itself o+r)?"""
    import stat

    path = os.path.realpath(path)
    parts = path.split("/")
    for i in range(2, len(parts)):
        if not os.stat("/".join(parts[:i])).st_mode & stat.S_IXOTH:
            return False
    return bool(os.stat(path).st_mode & stat.S_IROTH)


def child(cfg, ns, status_file, launcher_pid):
    """Becomes the untrusted program (PID 1 of its namespace when there is one)."""
    uid, gid = cfg["uid"], cfg["gid"]
    drop_uid = cfg["drop_uid"]
    if "mount" in ns:
        setup_mounts(cfg)
        if "pid" in ns:
            mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
        work = cfg["workdir"]
    else:
        # No private /tmp: work in the host-side directory made for this run only.
        work = cfg["host_workdir"]
        if drop_uid and not (world_usable(cfg["python"]) and world_usable(cfg["stdlib"])):
            # The interpreter lives where other users cannot reach it (e.g. under /root) and there is
            # no mount namespace to make it reachable: the program could only run as root.
            if not cfg["allow_root"]:
                raise OSError(
                    f"cannot drop root: {os.path.realpath(cfg['python'])} is not readable by other "
                    "users and mount namespaces are unavailable; put Python in a world-readable place, allow "
                    "namespaces, or set HERD_SANDBOX_ALLOW_ROOT=1 to run code as root (unsafe)"
                )
            drop_uid = False
    status_file.write(repr({"uid_dropped": drop_uid}) + "\n")
    status_file.close()  # the program must not be able to write the status
    env = dict(cfg["env"], HOME=work, TMPDIR=work)
    # fd 3: the program (read by the bootstrap); fd 4: where the bootstrap says how it ended.
    for fd, want in ((cfg["prog_fd"], 3), (cfg["end_fd"], 4)):
        if fd != want:
            os.dup2(fd, want)
            os.close(fd)
    os.makedirs(work, mode=0o700, exist_ok=True)
    if drop_uid:
        os.chown(work, uid, gid)
    os.chdir(work)
    lim = cfg["limits"]
    resource.setrlimit(resource.RLIMIT_AS, (lim["as"], lim["as"]))
    resource.setrlimit(resource.RLIMIT_CPU, (lim["cpu"], lim["cpu"] + 1))
    resource.setrlimit(resource.RLIMIT_FSIZE, (lim["fsize"], lim["fsize"]))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))
    resource.setrlimit(resource.RLIMIT_NPROC, (lim["nproc"], lim["nproc"]))
    if drop_uid:
        os.setgroups([])
        os.setgid(gid)
        os.setuid(uid)
    # After setuid: a uid change clears the parent-death signal, so set it now.
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if "pid" not in ns and os.getppid() != launcher_pid:  # the launcher is already gone
        os._exit(SETUP_FAILED)
    libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
    if cfg["site_packages"]:  # a fresh interpreter that processes site-packages
        os.execve(cfg["python"], [cfg["python"], "-I", "-B", "-c", BOOTSTRAP], env)
    # Otherwise this interpreter (already -I -S -B, as the program wants) runs it: one start saved.
    os.environ.clear()
    os.environ.update(env)
    return env


def run_in_process():
    """Run the program here, as __main__, like `python -I -S -c BOOTSTRAP` would."""
    import types

    main_mod = types.ModuleType("__main__")
    sys.modules["__main__"] = main_mod
    sys.path[:] = [
        p for p in sys.path if p and os.path.realpath(p) != os.path.dirname(os.path.realpath(__file__))
    ]
    exec(compile(BOOTSTRAP, "<herd-sandbox>", "exec"), main_mod.__dict__)


def main():
    cfg = marshal.loads(bytes.fromhex(sys.argv[1]))  # marshal, not json: json imports re (~40 ms)
    status_path = cfg["status_path"]
    ns = []
    # Try the strongest isolation first, then weaker sets the kernel may still allow.
    wanted = [("net", CLONE_NEWNET), ("mount", CLONE_NEWNS), ("pid", CLONE_NEWPID)]
    flags = sum(f for _, f in wanted)
    try:
        if not cfg["namespaces"]:
            raise OSError("namespaces disabled")
        if os.geteuid() == 0:
            unshare(flags)
        else:
            uid, gid = os.getuid(), os.getgid()
            unshare(flags | CLONE_NEWUSER)
            setup_user_namespace(uid, gid)
            ns.append("user")
        ns += [n for n, _ in wanted]
    except OSError:
        ns = []
    status = {"namespaces": ns}
    # Opened before the fork: the child mounts a tmpfs over /tmp in this same mount namespace.
    status_file = open(status_path, "w")
    status_file.write(repr(status) + "\n")  # so a timed-out run still reports its isolation
    status_file.flush()
    launcher_pid = os.getpid()
    try:
        pid = os.fork()
    except OSError as e:
        status["error"] = f"fork: {e}"
        pid = -1
    if pid == 0:
        try:
            child(cfg, ns, status_file, launcher_pid)
        except BaseException as e:  # setup failed: report it on stderr, never run the program
            os.write(2, f"herd-sandbox: setup failed: {e}\n".encode())
            os._exit(SETUP_FAILED)
        run_in_process()  # exceptions and SystemExit end this process as they would end `python -c`
        return
    if pid > 0:
        # On timeout the host sends SIGTERM: kill the program (and with it its PID namespace), then
        # reap it here, so nothing is left as a zombie for a container's init that may never reap it.
        signal.signal(signal.SIGTERM, lambda *_: os.kill(pid, signal.SIGKILL))
        _, st = os.waitpid(pid, 0)
        if os.WIFSIGNALED(st):
            status["signal"] = os.WTERMSIG(st)
        else:
            status["exit"] = os.WEXITSTATUS(st)
    with status_file:
        status_file.write(repr(status) + "\n")


if __name__ == "__main__":
    main()
