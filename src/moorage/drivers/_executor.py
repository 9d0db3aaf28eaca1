"""The per-container executor of the process driver (Nomad's executor pattern).

    agent ──spawns──▶ executor (own session; outlives the agent) ──▶ child (own process group)
                        │ pumps stdout/stderr into rotating files
                        │ puts the child in a memory cgroup
                        │ fences: kills the child (its group, its cgroup) once the lease
                        │         deadline in the spec's `fence_file` passes
                        └ writes <exit file> {exit_code, signal, oom_killed} atomically, then exits

Run as `python -m moorage.drivers._executor SPEC.json`. Nothing here imports the rest of moorage,
so it starts fast and keeps working whatever the agent does.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO, Any

RESET_SIGNALS = (
    signal.SIGHUP,
    signal.SIGINT,
    signal.SIGQUIT,
    signal.SIGTERM,
    signal.SIGUSR1,
    signal.SIGUSR2,
    signal.SIGALRM,
    signal.SIGCHLD,
)


class RotatingFile:
    """Append-only file that rotates to .1, .2 … when it exceeds max_bytes."""

    def __init__(self, path: Path, max_bytes: int, keep: int) -> None:
        self.path, self.max_bytes, self.keep = path, max_bytes, keep
        self.file = self._open()
        self.size = self.file.tell()

    def write(self, data: bytes) -> None:
        if self.size + len(data) > self.max_bytes and self.size > 0:
            self.rotate()
        self.file.write(data)
        self.file.flush()
        self.size += len(data)

    def rotate(self) -> None:
        self.file.close()
        for index in range(self.keep - 1, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{index}")
            if older.exists():
                older.replace(self.path.with_name(f"{self.path.name}.{index + 1}"))
        self.path.replace(self.path.with_name(f"{self.path.name}.1"))
        self.file = self._open()
        self.size = 0

    def _open(self) -> IO[bytes]:
        # a task's output may hold what it should not: root's alone, whatever the umask
        return os.fdopen(os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), "ab")


def pump(source: IO[bytes], sink: RotatingFile) -> None:
    for line in iter(source.readline, b""):
        sink.write(line)
    source.close()


def write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


def oom_killed(cgroup: str) -> bool:
    for name, marker in (("memory.events", "oom_kill "), ("memory.oom_control", "oom_kill ")):
        try:
            for line in Path(cgroup, name).read_text().splitlines():
                if line.startswith(marker) and int(line.split()[1]) > 0:
                    return True
        except (OSError, ValueError, IndexError):
            continue
    return False


def fence_deadline(path: str) -> float | None:
    """The lease deadline (CLOCK_BOOTTIME seconds) in a fence file (moorage.volumes.fence);
    None while there is none, or once the agent removed the file."""
    try:
        deadline = json.loads(Path(path).read_text()).get("deadline")
    except (OSError, ValueError, AttributeError):
        return None
    return float(deadline) if isinstance(deadline, int | float) else None


def kill_all(pid: int, cgroup: str) -> None:
    """SIGKILL the child's process group and whatever else runs in its cgroup."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
    if cgroup:
        with contextlib.suppress(OSError, ValueError):
            for other in Path(cgroup, "cgroup.procs").read_text().split():
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(int(other), signal.SIGKILL)


def fence(path: str, pid: int, cgroup: str, done: threading.Event, fenced: list[bool]) -> None:
    """Kill the child once the lease deadline passes, and again until it is gone."""
    while not done.wait(0.1):
        deadline = fence_deadline(path)
        if fenced or (deadline is not None and time.clock_gettime(time.CLOCK_BOOTTIME) >= deadline):
            fenced[:] = [True]
            kill_all(pid, cgroup)


def main(spec_path: str) -> int:
    spec = json.loads(Path(spec_path).read_text())
    Path(spec_path).unlink(missing_ok=True)  # it holds the environment, secrets included
    exit_path = Path(spec["exit_file"])
    cgroup = spec.get("cgroup") or ""

    user = spec.get("user")
    rlimits = spec.get("rlimits") or []

    def in_child() -> None:
        """Between fork and exec: join the memory cgroup while still root, then become the
        task's user (groups, gid, uid: in that order, or the later ones are not allowed)."""
        # A task starts with every signal's default action, whatever the agent inherited: an
        # agent started in the background by a shell without job control ignores SIGINT and
        # SIGQUIT, and a shell script cannot trap a signal that was ignored when it started.
        for number in RESET_SIGNALS:
            signal.signal(number, signal.SIG_DFL)
        if cgroup:
            Path(cgroup, "cgroup.procs").write_text(str(os.getpid()))
        for number, soft, hard in rlimits:  # as root still: a hard limit may be raised
            resource.setrlimit(number, (soft, hard))
        if user:
            uid, gid, groups = user
            os.setgroups(groups)
            os.setresgid(gid, gid, gid)
            os.setresuid(uid, uid, uid)

    logs = [
        RotatingFile(Path(spec[k]), spec["log_max_bytes"], spec["log_keep"])
        for k in ("stdout", "stderr")
    ]
    try:
        child = subprocess.Popen(
            spec["command"],
            env=spec["env"],
            cwd=spec["cwd"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
            preexec_fn=in_child,  # the executor has no threads yet: safe
            umask=0o022,  # the task's own files as usual; moorage's daemons run with 077
        )
    except OSError as exc:
        write_json(
            exit_path,
            {
                "exit_code": 127,
                "signal": None,
                "oom_killed": False,
                "message": f"cannot start {spec['command'][0]!r}: {exc.strerror}",
            },
        )
        return 0
    write_json(Path(spec["pid_file"]), {"pid": child.pid})

    def forward(signum: int, _frame: object) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    assert child.stdout is not None and child.stderr is not None
    pumps = [
        threading.Thread(target=pump, args=(s, f), daemon=True)
        for s, f in ((child.stdout, logs[0]), (child.stderr, logs[1]))
    ]
    for thread in pumps:
        thread.start()
    ended, fenced = threading.Event(), list[bool]()
    if spec.get("fence_file"):
        threading.Thread(
            target=fence, args=(spec["fence_file"], child.pid, cgroup, ended, fenced), daemon=True
        ).start()
    code = child.wait()
    ended.set()
    for thread in pumps:
        thread.join(timeout=2)
    result = {
        "exit_code": code if code >= 0 else None,
        "signal": -code if code < 0 else None,
        "oom_killed": bool(cgroup) and oom_killed(cgroup),
        "message": "fenced: the volume lease ran out" if fenced else "",
    }
    write_json(exit_path, result)
    if cgroup:
        with contextlib.suppress(OSError):
            os.rmdir(cgroup)
    return 0


def zygote() -> int:
    """Fork executors on request, so a task does not pay an interpreter's start-up.

    Reads one JSON line per executor, {"spec": path, "log": path}, and answers the forked pid.
    Single-threaded, so forking is safe; the executors start their own sessions and outlive
    it. It ends when its stdin closes (its agent went away).
    """
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # executors are reaped by the kernel
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for line in sys.stdin:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:  # the executor
            code = 1
            try:
                os.setsid()
                os.chdir(os.path.dirname(request["spec"]))  # the task's run dir, not the agent's
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                log = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
                null = os.open(os.devnull, os.O_RDONLY)
                os.dup2(null, 0)
                os.dup2(log, 1)
                os.dup2(log, 2)
                os.close(null)
                os.close(log)
                sys.stdin = open(os.devnull)  # noqa: SIM115 - the executor's own, until exit
                sys.stdout = os.fdopen(1, "w", buffering=1)
                sys.stderr = os.fdopen(2, "w", buffering=1)
                code = main(request["spec"])
            except BaseException as exc:  # an executor must never return into the zygote
                with contextlib.suppress(Exception):
                    os.write(2, f"executor failed: {exc!r}\n".encode())
            finally:
                os._exit(code)
        sys.stdout.write(f"{pid}\n")
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    if sys.argv[1:] == ["--zygote"]:
        sys.exit(zygote())
    sys.exit(main(sys.argv[1]))
