"""Sandbox launcher: confine this process, then exec Python on a program. Stdlib only.

Run by `audit.sandbox.run_python` as ``python -I -S -B _sandbox_child.py CONFIG`` in a
fresh single-threaded process (a ``preexec_fn`` in the parent would run after fork in
a process that holds torch's threads, which Python documents as unsafe). CONFIG is a
JSON object: program, cpu_s, memory_mb, fsize_mb, nofile, nproc, report_fd.

Confinement, each step best effort, what was achieved reported on `report_fd`:

1. New network, mount and PID namespaces: as root directly, else inside a new user
   namespace. No network namespace: a socket guard is put in front of the program
   (weaker: code can reach the syscalls some other way).
2. In the mount namespace: every mount read-only (recursively), and fresh private
   tmpfs mounts on /tmp, /var/tmp and /dev/shm; the program runs in a fresh folder of
   that /tmp, so nothing it writes outlives it.
3. In the PID namespace the program is PID 1: when the launcher above it is killed,
   the kernel kills every process the program started.
4. Resource limits: CPU seconds, address space, file size, open files, no core files,
   and (when the user is dedicated) the number of processes.
5. As root: drop to nobody (65534) with no supplementary groups (when the interpreter
   lives in a private folder such as /root, that folder is covered by a tmpfs that
   holds only the interpreter, read-only, first).
"""

from __future__ import annotations

import ctypes
import json
import os
import resource
import sys

CLONE_NEWNS = 0x00020000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_REMOUNT = 1, 2, 4, 32
MS_BIND, MS_REC, MS_PRIVATE = 4096, 16384, 1 << 18
SYS_MOUNT_SETATTR = 442  # same number on x86_64 and arm64
AT_FDCWD, AT_RECURSIVE, MOUNT_ATTR_RDONLY = -100, 0x8000, 1
NOBODY = 65534
SCRATCH = ("/tmp", "/var/tmp", "/dev/shm")  # noqa: S108 - these are replaced by private tmpfs

_GUARD = """\
def _codeeraser_no_network():
    import socket, _socket
    def deny(*args, **kwargs):
        raise OSError("network access is disabled in the sandbox")
    for module in (socket, _socket):
        for name in ("socket", "create_connection", "socketpair", "fromfd", "getaddrinfo"):
            if hasattr(module, name):
                setattr(module, name, deny)
_codeeraser_no_network()
del _codeeraser_no_network
"""

libc = ctypes.CDLL(None, use_errno=True)


class MountAttr(ctypes.Structure):
    _fields_ = (
        ("attr_set", ctypes.c_uint64),
        ("attr_clr", ctypes.c_uint64),
        ("propagation", ctypes.c_uint64),
        ("userns_fd", ctypes.c_uint64),
    )


def _b(text: str | None) -> bytes | None:
    return None if text is None else text.encode()


def _mount(
    source: str | None, target: str, fstype: str | None, flags: int, data: str | None
) -> bool:
    return int(libc.mount(_b(source), _b(target), _b(fstype), flags, _b(data))) == 0


def _write(path: str, text: str) -> bool:
    try:
        with open(path, "w", encoding="ascii") as handle:
            handle.write(text)
    except OSError:
        return False
    return True


def _namespaces() -> list[str]:
    """Enter new namespaces; return which ones (and whether a user namespace was needed)."""
    wanted = CLONE_NEWNET | CLONE_NEWNS | CLONE_NEWPID
    if os.geteuid() == 0 and libc.unshare(wanted) == 0:
        return ["net", "mnt", "pid"]
    uid, gid = os.getuid(), os.getgid()
    if libc.unshare(wanted | CLONE_NEWUSER) == 0:
        _write("/proc/self/setgroups", "deny")
        _write("/proc/self/uid_map", f"0 {uid} 1")
        _write("/proc/self/gid_map", f"0 {gid} 1")
        return ["user", "net", "mnt", "pid"]
    if libc.unshare(CLONE_NEWNET | CLONE_NEWUSER) == 0:
        return ["user", "net"]
    return []


def _read_only_root() -> bool:
    attr = MountAttr(MOUNT_ATTR_RDONLY, 0, 0, 0)
    syscall = libc.syscall
    done = syscall(SYS_MOUNT_SETATTR, AT_FDCWD, b"/", AT_RECURSIVE, ctypes.byref(attr), 32) == 0
    return done or _mount(None, "/", None, MS_REMOUNT | MS_BIND | MS_RDONLY, None)


def _filesystem() -> list[str]:
    """Private mounts: read-only everything, fresh tmpfs scratch; chdir into it."""
    achieved: list[str] = []
    if not _mount(None, "/", None, MS_REC | MS_PRIVATE, None):
        return achieved
    if _read_only_root():
        achieved.append("ro")
    fresh = all(
        _mount("tmpfs", path, "tmpfs", MS_NOSUID | MS_NODEV, "size=64m,mode=1777")
        for path in SCRATCH
        if os.path.isdir(path)
    )
    if fresh:
        achieved.append("tmpfs")
        os.makedirs("/tmp/run", exist_ok=True)  # noqa: S108 - inside the private tmpfs
        os.chdir("/tmp/run")  # noqa: S108
    return achieved


def _blocked_ancestor(path: str) -> str | None:
    """The highest folder above `path` that others may not enter (e.g. /root), if any."""
    parts = path.strip("/").split("/")
    for depth in range(1, len(parts)):
        folder = "/" + "/".join(parts[:depth])
        if not os.stat(folder).st_mode & 0o001:
            return folder
    return None


def _expose_interpreter() -> bool:
    """Let nobody run this Python: when it lives under a private folder (pyenv in
    /root), cover that folder with an empty tmpfs holding only the interpreter's prefix
    (bind-mounted read-only at the same path, so its absolute library paths work)."""
    prefix = os.path.realpath(sys.base_prefix)
    blocked = _blocked_ancestor(prefix)
    if blocked is None:
        return True
    stage = "/tmp/.python"  # noqa: S108 - inside the private tmpfs
    os.makedirs(stage, exist_ok=True)
    if not _mount(prefix, stage, None, MS_BIND | MS_REC, None):
        return False
    if not _mount("tmpfs", blocked, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,mode=0755"):
        return False
    os.makedirs(prefix, mode=0o755, exist_ok=True)
    return _mount(stage, prefix, None, MS_BIND | MS_REC, None)


def _count_processes(uid: int) -> int:
    count = 0
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/status", encoding="ascii", errors="replace") as fh:
                    uids = next(line for line in fh if line.startswith("Uid:"))
            except (OSError, StopIteration):
                continue
            count += uids.split()[1] == str(uid)
    return count


def _limits(config: dict[str, int], dedicated_user: bool) -> None:
    mb = 1024 * 1024
    cpu = int(config["cpu_s"])
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    resource.setrlimit(resource.RLIMIT_AS, (config["memory_mb"] * mb, config["memory_mb"] * mb))
    resource.setrlimit(resource.RLIMIT_FSIZE, (config["fsize_mb"] * mb, config["fsize_mb"] * mb))
    resource.setrlimit(resource.RLIMIT_NOFILE, (config["nofile"], config["nofile"]))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    nproc = config["nproc"] if dedicated_user else _count_processes(os.getuid()) + config["nproc"]
    resource.setrlimit(resource.RLIMIT_NPROC, (nproc, nproc))


def _drop_root() -> bool:
    if os.geteuid() != 0 or os.getuid() != 0:
        return False
    try:
        os.setgroups([])
        os.setgid(NOBODY)
        os.setuid(NOBODY)
    except OSError:
        return False
    return True


def _relay(child: int) -> None:
    """Wait for the namespace's PID 1 and exit the way it did."""
    _, status = os.waitpid(child, 0)
    if os.WIFSIGNALED(status):
        sys.stderr.flush()
        os._exit(128 + os.WTERMSIG(status))
    os._exit(os.WEXITSTATUS(status))


def main() -> None:
    config = json.loads(sys.argv[1])
    # Resolved before /tmp is replaced: a virtual environment there (a CI checkout under
    # /tmp) links to an interpreter outside it that stays visible.
    python = os.path.realpath(sys.executable)
    report = os.fdopen(int(config["report_fd"]), "w")
    achieved = _namespaces()
    if "pid" in achieved:
        child = os.fork()
        if child:
            report.close()
            _relay(child)
    if "mnt" in achieved:
        achieved += _filesystem()
    program = config["program"]
    if "net" not in achieved:
        program = _GUARD + program
        achieved.append("socket-guard")
    try:
        with open("program.py", "w", encoding="utf-8") as handle:
            handle.write(program)
        if os.geteuid() == 0:
            os.chown(".", NOBODY, NOBODY)  # the folder is the program's to write in
    except OSError as exc:
        report.write(json.dumps({"isolation": achieved, "error": f"cannot write: {exc}"}))
        report.close()
        os._exit(125)
    exposed = os.geteuid() != 0 or ("tmpfs" in achieved and _expose_interpreter())
    dropped = exposed and _drop_root()
    if dropped:
        achieved.append("nobody")
    _limits(config, dedicated_user=dropped)
    achieved.append("rlimits")
    report.write(json.dumps({"isolation": achieved}))
    report.close()
    env = {"PATH": "/usr/bin:/bin", "HOME": os.getcwd(), "LANG": "C.UTF-8"}
    os.execve(python, [python, "-I", "-S", "-B", "program.py"], env)  # noqa: S606


if __name__ == "__main__":
    main()
