"""The process driver: runs a container's `command` as a plain process tree on the node.

Each container gets an executor (`_executor.py`) in its own session, so it outlives the agent.
The handle records the executor's and the child's pids with their start times: recovery checks
both (a pid alone may have been reused), and the exit status is read from the exit file the
executor writes.
"""

from __future__ import annotations

import asyncio
import contextlib
import grp
import json
import os
import pwd
import re
import resource
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import psutil

from moorage.model import Container
from moorage.model.runtime import signal_number

from .base import BindMount, ExitResult, StartRequest, Stats, TaskHandle
from .errors import DriverError, StartError

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
POLL = 0.05
LOG_MAX_BYTES = 10 * 1024 * 1024
LOG_KEEP = 3


def expand(arg: str, env: dict[str, str]) -> str:
    """`${VAR}` from the task's environment; unknown variables are left as written."""
    return _VAR.sub(lambda m: env.get(m.group(1), m.group(0)), arg)


# Runs inside `unshare --mount --propagation private`: bind each volume onto its path in the
# child's own mount namespace (nothing leaks to the node's), then exec the command.
MOUNT_SCRIPT = (  # a directory onto a directory, a file (a config) onto a file
    'set -e; while [ "$1" != -- ]; do if [ -d "$1" ]; then mkdir -p -- "$2"; else '
    'mkdir -p -- "$(dirname -- "$2")"; [ -e "$2" ] || : > "$2"; fi; mount --bind "$1" "$2"; '
    'if [ "$3" = ro ]; then mount -o remount,bind,ro "$2"; fi; shift 3; done; shift; exec "$@"'
)


@dataclass(frozen=True)
class RunAs:
    """Who a process runs as (a container's `user:` resolved on this node)."""

    uid: int
    gid: int
    groups: tuple[int, ...]
    name: str
    home: str

    def setpriv(self) -> list[str]:
        """util-linux `setpriv` dropping to this user: for a command that starts as root
        (the mount wrapper) and must not go on as root."""
        groups = ["--groups", ",".join(map(str, self.groups))] if self.groups else []
        return [
            "setpriv",
            "--reuid",
            str(self.uid),
            "--regid",
            str(self.gid),
            *(groups or ["--clear-groups"]),
            "--",
        ]


def rlimits(container: Container) -> list[list[int]]:
    """`ulimits` as [resource, soft, hard] for setrlimit (-1: unlimited)."""
    limits = []
    for name, limit in sorted(container.ulimits.items()):
        number = getattr(resource, f"RLIMIT_{name.upper()}", None)
        if number is None:
            raise StartError(f"ulimit {name} does not exist on this platform")
        soft, hard = (resource.RLIM_INFINITY if v == -1 else v for v in (limit.soft, limit.hard))
        limits.append([int(number), int(soft), int(hard)])
    return limits


def run_as(user: str) -> RunAs:
    """Resolve Docker's `user[:group]` (names or numbers) against this node's user database.
    A uid with no entry runs with the gid given, or its own number as gid, and home `/`."""
    name, _, group = user.partition(":")
    try:
        entry = pwd.getpwuid(int(name)) if name.isdigit() else pwd.getpwnam(name)
    except KeyError:
        if not name.isdigit():
            raise StartError(f"user: no user {name!r} on this node") from None
        uid, gid, login, home, known = int(name), int(name), name, "/", False
    else:
        uid, gid, login, home, known = entry.pw_uid, entry.pw_gid, entry.pw_name, entry.pw_dir, True
    if group:
        try:
            gid = int(group) if group.isdigit() else grp.getgrnam(group).gr_gid
        except KeyError:
            raise StartError(f"user: no group {group!r} on this node") from None
    groups = tuple(sorted(set(os.getgrouplist(login, gid)))) if known else (gid,)
    if os.geteuid() != 0 and uid != os.geteuid():
        raise StartError(f"user: running as {user!r} needs the agent to run as root")
    return RunAs(uid, gid, groups, login, home or "/")


def check_reachable(folder: Path, who: RunAs) -> None:
    """A clear error, before starting, when `who` cannot reach its working directory."""
    for parent in folder.parents:
        info = parent.stat()
        if info.st_mode & 0o001 or info.st_uid == who.uid:
            continue
        if info.st_mode & 0o010 and info.st_gid in who.groups:
            continue
        raise StartError(
            f"user: {who.name} cannot reach {folder}: {parent} is mode {oct(info.st_mode & 0o777)}"
            " (directories on the way need o+x, as the agent creates them: 0711)"
        )


def with_mounts(
    command: list[str], mounts: tuple[BindMount, ...], who: RunAs | None = None
) -> list[str]:
    """The command wrapped so it sees its volumes at their paths: as root only (without root
    a process finds its volumes through MOORAGE_VOLUME_<KEY> alone). The wrapper mounts as
    root, then drops to `who`."""
    if not mounts or os.geteuid() != 0 or shutil.which("unshare") is None:
        return command
    wrapped = ["unshare", "--mount", "--propagation", "private", "--"]
    wrapped += ["sh", "-c", MOUNT_SCRIPT, "moorage-mounts"]
    for mount in mounts:
        wrapped += [str(mount.source), mount.path, "ro" if mount.read_only else "rw"]
    return [*wrapped, "--", *(who.setpriv() if who else []), *command]


def detect_cgroups() -> str:
    """`v2`, `v1` or `none`: where this node can enforce memory limits."""
    if Path("/sys/fs/cgroup/cgroup.controllers").exists() and os.access("/sys/fs/cgroup", os.W_OK):
        return "v2"
    if os.access("/sys/fs/cgroup/memory", os.W_OK):
        return "v1"
    return "none"


def start_time(pid: int) -> float | None:
    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return None
        return float(process.create_time())
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


class ProcessDriver:
    name = "process"

    def __init__(self, cgroup_root: str = "moorage") -> None:
        self.cgroups = detect_cgroups()
        self.cgroup_root = cgroup_root
        self._children: dict[int, subprocess.Popen[bytes]] = {}
        self._zygote: asyncio.subprocess.Process | None = None
        self._zygote_lock = asyncio.Lock()

    # ---- start ---------------------------------------------------------------------------
    async def start(self, req: StartRequest) -> TaskHandle:
        container = req.container
        if container.command is None:
            raise StartError(
                f"container {container.name!r} has no command (the process driver runs commands)"
            )
        who = run_as(container.user) if container.user else None
        # The task dir is traversable (0711) so a task's own user reaches its working
        # directory (0700, its own); logs and run files stay root's (0700).
        req.task_dir.mkdir(mode=0o711, parents=True, exist_ok=True)
        req.task_dir.chmod(0o711)
        workdir = req.task_dir / container.name
        logs = req.task_dir / "logs"
        run = req.task_dir / "run"
        for folder in (workdir, logs, run):
            folder.mkdir(mode=0o700, exist_ok=True)
        if who is not None and os.geteuid() == 0:
            os.chown(workdir, who.uid, who.gid)
        cwd = Path(container.workdir) if container.workdir else workdir
        if who is not None:
            check_reachable(cwd, who)
        env = dict(req.env)
        if who is not None:  # the user's own HOME and names unless the spec sets them
            for key, value in (("HOME", who.home), ("USER", who.name), ("LOGNAME", who.name)):
                if key not in container.env:
                    env[key] = value
        wrapped = bool(req.mounts) and os.geteuid() == 0 and shutil.which("unshare") is not None
        if who is not None and wrapped and shutil.which("setpriv") is None:
            raise StartError("user: with volumes mounted, `setpriv` (util-linux) is needed")
        exit_file, pid_file = run / f"{container.name}.exit", run / f"{container.name}.pid"
        for stale in (exit_file, pid_file):
            stale.unlink(missing_ok=True)
        cgroup = self._make_cgroup(req.task_id, container.name, container.memory)
        spec = {
            "command": with_mounts([expand(a, env) for a in container.command], req.mounts, who),
            "env": env,
            "cwd": str(cwd),
            # the executor starts the command as this user (the mount wrapper drops to it itself)
            "user": None if who is None or wrapped else [who.uid, who.gid, list(who.groups)],
            "stdout": str(logs / f"{container.name}.stdout"),
            "stderr": str(logs / f"{container.name}.stderr"),
            "exit_file": str(exit_file),
            "pid_file": str(pid_file),
            "cgroup": cgroup,
            "log_max_bytes": LOG_MAX_BYTES,
            "log_keep": LOG_KEEP,
            "fence_file": str(req.fence_file) if req.fence_file else "",
            "rlimits": rlimits(container),
        }
        spec_path = run / f"{container.name}.json"
        # The spec holds the environment (secrets included): readable by root only, and the
        # executor deletes it once read.
        fd = os.open(spec_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(json.dumps(spec))
        executor_pid = await self._spawn(spec_path, run / f"{container.name}.executor.log")
        handle = TaskHandle(
            self.name,
            req.task_id,
            container.name,
            {
                "executor_pid": executor_pid,
                "executor_start": start_time(executor_pid),
                "exit_file": str(exit_file),
                "cgroup": cgroup,
                "logs": str(logs),
                "user": None if who is None else {**asdict(who), "groups": list(who.groups)},
                "stop_signal": signal_number(container.stop_signal or "SIGTERM"),
            },
        )
        try:
            await self._await_child(handle, pid_file)
        except StartError:
            await self._reap(executor_pid)
            raise
        return handle

    async def _reap(self, executor_pid: int) -> None:
        """Collect an executor that is ending on its own (it wrote why it could not start)."""
        child = self._children.pop(executor_pid, None)
        if child is None:
            return
        try:
            await asyncio.to_thread(child.wait, 5)
        except subprocess.TimeoutExpired:
            child.kill()
            await asyncio.to_thread(child.wait)

    async def _await_child(self, handle: TaskHandle, pid_file: Path) -> None:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if pid_file.exists():
                pid = int(json.loads(pid_file.read_text())["pid"])
                handle.state["pid"] = pid
                handle.state["pid_start"] = start_time(pid)
                return
            if Path(handle.state["exit_file"]).exists():
                result = self._read_exit(handle)
                if result.message:
                    raise StartError(result.message)
                return  # started and already ended: wait() reports it
            if not self._executor_alive(handle):
                raise StartError(
                    "the executor died before starting the command (see run/*.executor.log)"
                )
            await asyncio.sleep(0.002)
        raise StartError("the command did not start within 10s")

    def _make_cgroup(self, task_id: str, container: str, memory_mib: int) -> str:
        limit = str(memory_mib * 1024 * 1024)
        try:
            if self.cgroups == "v2":
                root = Path("/sys/fs/cgroup", self.cgroup_root)
                root.mkdir(exist_ok=True)
                with contextlib.suppress(OSError):
                    Path("/sys/fs/cgroup/cgroup.subtree_control").write_text("+memory")
                    (root / "cgroup.subtree_control").write_text("+memory")
                path = root / f"{task_id}-{container}"
                path.mkdir(exist_ok=True)
                (path / "memory.max").write_text(limit)
                with contextlib.suppress(OSError):
                    (path / "memory.swap.max").write_text("0")
                return str(path)
            if self.cgroups == "v1":
                path = Path("/sys/fs/cgroup/memory", self.cgroup_root, f"{task_id}-{container}")
                path.mkdir(parents=True, exist_ok=True)
                (path / "memory.limit_in_bytes").write_text(limit)
                with contextlib.suppress(OSError):
                    (path / "memory.memsw.limit_in_bytes").write_text(limit)
                return str(path)
        except OSError:
            return ""
        return ""

    async def _spawn(self, spec_path: Path, log_path: Path) -> int:
        """An executor for spec_path: forked by the zygote, or spawned afresh if it is gone."""
        async with self._zygote_lock:
            for _attempt in range(2):
                zygote = await self._ensure_zygote()
                if zygote is None or zygote.stdin is None or zygote.stdout is None:
                    break
                try:
                    request = json.dumps({"spec": str(spec_path), "log": str(log_path)})
                    zygote.stdin.write(request.encode() + b"\n")
                    await zygote.stdin.drain()
                    answer = await asyncio.wait_for(zygote.stdout.readline(), 10)
                    return int(answer)
                except (OSError, ValueError, TimeoutError):
                    await self._drop_zygote()
        executor = await asyncio.to_thread(_spawn_executor, spec_path, log_path)
        self._children[executor.pid] = executor
        return executor.pid

    async def _ensure_zygote(self) -> asyncio.subprocess.Process | None:
        if self._zygote is not None and self._zygote.returncode is None:
            return self._zygote
        try:
            self._zygote = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "moorage.drivers._executor",
                "--zygote",
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                start_new_session=True,
            )
        except OSError:
            self._zygote = None
        return self._zygote

    async def _drop_zygote(self) -> None:
        zygote, self._zygote = self._zygote, None
        if zygote is not None and zygote.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                zygote.kill()
            await zygote.wait()

    async def close(self) -> None:
        """Let the zygote go (executors it forked keep running)."""
        zygote, self._zygote = self._zygote, None
        if zygote is not None and zygote.stdin is not None:
            zygote.stdin.close()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(zygote.wait(), 5)
            if zygote.returncode is None:
                zygote.kill()
                await zygote.wait()

    # ---- observe -------------------------------------------------------------------------
    def _executor_alive(self, handle: TaskHandle) -> bool:
        pid = int(handle.state["executor_pid"])
        child = self._children.get(pid)
        if child is not None:
            return child.poll() is None
        expected = handle.state.get("executor_start")
        actual = start_time(pid)
        return actual is not None and (expected is None or abs(actual - float(expected)) < 0.01)

    async def recover(self, handle: TaskHandle) -> bool:
        if not self._executor_alive(handle):
            return False
        pid, expected = handle.state.get("pid"), handle.state.get("pid_start")
        if pid is None:
            return False
        actual = start_time(int(pid))
        return actual is not None and expected is not None and abs(actual - float(expected)) < 0.01

    async def wait(self, handle: TaskHandle) -> ExitResult:
        pid = int(handle.state["executor_pid"])
        while self._executor_alive(handle):
            # A pidfd turns readable when the process exits: no polling (50 tasks polled every
            # 50 ms cost most of an idle agent's CPU). It pins the pid, so the identity check
            # right after opening it holds until it fires.
            fd = _pidfd(pid)
            if fd is None:
                await asyncio.sleep(POLL)
                continue
            try:
                if self._executor_alive(handle):
                    await _readable(fd)
            finally:
                os.close(fd)
        self._children.pop(pid, None)
        return self._read_exit(handle)

    def _read_exit(self, handle: TaskHandle) -> ExitResult:
        try:
            data: dict[str, Any] = json.loads(Path(handle.state["exit_file"]).read_text())
        except (OSError, ValueError):
            return ExitResult(None, message="the task's executor vanished without an exit status")
        sig = data.get("signal")
        code = data.get("exit_code")
        if sig and code is None:
            code = 128 + int(sig)
        return ExitResult(code, sig, bool(data.get("oom_killed")), str(data.get("message") or ""))

    # ---- stop ----------------------------------------------------------------------------
    async def stop(self, handle: TaskHandle, timeout: float) -> ExitResult:
        pid = handle.state.get("pid")
        if pid is not None and self._executor_alive(handle):
            self._signal_group(int(pid), int(handle.state.get("stop_signal") or signal.SIGTERM))
            deadline = time.monotonic() + timeout
            while self._executor_alive(handle) and time.monotonic() < deadline:
                await asyncio.sleep(POLL)
            if self._executor_alive(handle):
                self._signal_group(int(pid), signal.SIGKILL)
        return await asyncio.wait_for(self.wait(handle), timeout=15)

    def _signal_group(self, pid: int, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, sig)

    async def destroy(self, handle: TaskHandle) -> None:
        cgroup = handle.state.get("cgroup")
        if cgroup:
            with contextlib.suppress(OSError):
                os.rmdir(cgroup)

    def log_path(self, handle: TaskHandle, stream: Literal["stdout", "stderr"]) -> Path:
        return Path(handle.state["logs"]) / f"{handle.container}.{stream}"

    async def stats(self, handle: TaskHandle) -> Stats:
        """Memory and CPU time of the task's process tree (psutil)."""
        return await asyncio.to_thread(_tree_stats, int(handle.state.get("pid") or 0))

    async def open_exec(
        self, handle: TaskHandle, command: list[str], env: dict[str, str], tty: bool
    ) -> ProcessExec:
        """Run a command in the task's environment and working directory (no tty here)."""
        workdir = Path(handle.state["logs"]).parent / handle.container
        command = beside(handle, command)
        try:
            process = await asyncio.create_subprocess_exec(
                *command,
                env=env,
                cwd=workdir if workdir.is_dir() else None,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                start_new_session=True,
            )
        except OSError as exc:
            raise DriverError(f"cannot run {command[0]!r}: {exc.strerror}") from None
        return ProcessExec(process)

    def memory_enforced(self, handle: TaskHandle) -> bool:
        return bool(handle.state.get("cgroup"))


class ProcessExec:
    """A command run beside a process task: its environment and working directory."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self._queue: asyncio.Queue[tuple[int, bytes] | None] = asyncio.Queue()
        self._open = 2
        assert process.stdout is not None and process.stderr is not None
        self._pumps = [
            asyncio.create_task(self._pump(1, process.stdout)),
            asyncio.create_task(self._pump(2, process.stderr)),
        ]

    async def _pump(self, channel: int, stream: asyncio.StreamReader) -> None:
        while chunk := await stream.read(65536):
            await self._queue.put((channel, chunk))
        self._open -= 1
        if self._open == 0:
            await self._queue.put(None)

    async def write(self, data: bytes) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(data)
        with contextlib.suppress(ConnectionError):
            await self.process.stdin.drain()

    async def close_stdin(self) -> None:
        if self.process.stdin is not None and not self.process.stdin.is_closing():
            self.process.stdin.close()

    async def read(self) -> tuple[int, bytes] | None:
        return await self._queue.get()

    async def wait(self) -> int:
        return await self.process.wait()

    async def close(self) -> None:
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            await self.process.wait()
        for pump in self._pumps:
            pump.cancel()


def _pidfd(pid: int) -> int | None:
    """A pidfd for `pid` (Linux ≥ 5.3), or None: the caller polls instead."""
    try:
        return os.pidfd_open(pid)
    except (OSError, AttributeError):
        return None


async def _readable(fd: int) -> None:
    loop = asyncio.get_running_loop()
    done = loop.create_future()

    def ready() -> None:
        if not done.done():
            done.set_result(None)

    loop.add_reader(fd, ready)
    try:
        await done
    finally:
        loop.remove_reader(fd)


def beside(handle: TaskHandle, command: list[str]) -> list[str]:
    """A command run beside a process task (exec, command checks): in its mount namespace,
    as its user."""
    user = handle.state.get("user")
    if isinstance(user, dict) and os.geteuid() == 0:
        who = RunAs(user["uid"], user["gid"], tuple(user["groups"]), user["name"], user["home"])
        command = [*who.setpriv(), *command]
    return in_mount_namespace(command, handle.state.get("pid"))


def in_mount_namespace(command: list[str], pid: object) -> list[str]:
    """A command beside a task that has its own mount namespace (its volumes mounted at their
    paths) runs in that namespace too."""
    if not isinstance(pid, int) or shutil.which("nsenter") is None:
        return command
    try:
        theirs = os.readlink(f"/proc/{pid}/ns/mnt")
        if theirs == os.readlink("/proc/self/ns/mnt"):
            return command
    except OSError:
        return command
    return ["nsenter", f"--mount=/proc/{pid}/ns/mnt", "--", *command]


def _tree_stats(pid: int) -> Stats:
    memory, cpu = 0, 0.0
    try:
        root = psutil.Process(pid)
        for proc in [root, *root.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):
                memory += proc.memory_info().rss
                times = proc.cpu_times()
                cpu += times.user + times.system
    except psutil.Error:
        raise DriverError(f"process {pid} is gone") from None
    return Stats(memory, cpu)


def _spawn_executor(spec_path: Path, log_path: Path) -> subprocess.Popen[bytes]:
    with log_path.open("ab") as errors:
        return subprocess.Popen(
            [sys.executable, "-m", "moorage.drivers._executor", str(spec_path)],
            stdin=subprocess.DEVNULL,
            stdout=errors,
            stderr=errors,
            start_new_session=True,
        )


def driver_error(exc: Exception) -> DriverError:
    return exc if isinstance(exc, DriverError) else DriverError(str(exc))
