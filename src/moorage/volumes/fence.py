"""Fencing that survives the agent: a lease-deadline file per task, and a watchdog enforcing it.

    agent ──every successful renewal──▶ <agent data dir>/volume-fences/<task>.json
                                          {"task", "deadline", "unmount": [...],
                                           "pids": [[pid, start_time]], "cgroups": [...],
                                           "containers": [...]}
    watchdog (python -m moorage.volumes.fence FILE; own session, outlives the agent)
        every 0.1 s: file gone → exit (the agent released the volumes)
                     deadline passed → SIGKILL the pids (and their process groups) and every
                     process of the cgroups, kill the containers (Engine API on the unix
                     socket), wait until they are dead, unmount, record `fenced_at`, exit
    the process driver's executor reads the same file and kills its own child at the deadline

`deadline` is in CLOCK_BOOTTIME seconds (`now()`): one clock for every process of the machine,
immune to wall-clock steps. The agent sets it to the send time of its last successful renewal
plus 0.75 x the lease; the server grants the volume elsewhere only after the lease (counted
from its receipt of that renewal) plus 2 s of grace, so the writer here is dead and the image
unmounted first. `null` means no deadline yet.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil

from .errors import VolumeError
from .host import unmount

TICK = 0.1
KILL_WAIT = 10.0  # how long the watchdog waits for killed workloads before unmounting anyway


def now() -> float:
    """The fencing clock: CLOCK_BOOTTIME, shared by every process of the machine."""
    return time.clock_gettime(time.CLOCK_BOOTTIME)


@dataclass
class Fence:
    """What to stop, and what to unmount, once `deadline` passes."""

    task: str
    deadline: float | None = None
    unmount: list[str] = field(default_factory=list)
    pids: list[tuple[int, float | None]] = field(default_factory=list)  # (pid, start time)
    cgroups: list[str] = field(default_factory=list)
    containers: list[str] = field(default_factory=list)
    fenced_at: float | None = None

    def expired(self, at: float) -> bool:
        return self.deadline is not None and at >= self.deadline


def write(path: Path, fence: Fence) -> None:
    """Atomically: a reader sees the old deadline or the new one, never half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(asdict(fence)))
    os.replace(tmp, path)


def read(path: Path) -> Fence | None:
    try:
        data: dict[str, Any] = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return None
    return Fence(
        task=str(data.get("task", "")),
        deadline=data.get("deadline"),
        unmount=[str(p) for p in data.get("unmount", [])],
        pids=[(int(p), s) for p, s in data.get("pids", [])],
        cgroups=[str(c) for c in data.get("cgroups", [])],
        containers=[str(c) for c in data.get("containers", [])],
        fenced_at=data.get("fenced_at"),
    )


def spawn(path: Path, log_path: Path) -> subprocess.Popen[bytes]:
    """Start the watchdog of `path` in its own session (it outlives the agent)."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "moorage.volumes.fence", str(path)],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            cwd=log_path.parent,
            start_new_session=True,
        )


def watch(path: Path) -> int:
    """The watchdog's loop: until the file is gone, or its deadline passed (then enforce)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    while True:
        fence = read(path)
        if fence is None or fence.fenced_at is not None:
            return 0
        if fence.expired(now()):
            print(f"fence {fence.task}: the lease deadline passed; stopping it", flush=True)
            enforce(fence)
            if path.exists():
                fence.fenced_at = now()
                write(path, fence)
            print(f"fence {fence.task}: stopped and unmounted", flush=True)
            return 0
        time.sleep(TICK)


def enforce(fence: Fence) -> None:
    """Kill everything of the task that may write, wait for it, then unmount."""
    _kill(fence)
    deadline = time.monotonic() + KILL_WAIT
    while time.monotonic() < deadline and _alive(fence):
        time.sleep(0.05)
        _kill(fence)  # a process forked meanwhile
    for point in fence.unmount:
        try:
            unmount(Path(point))
        except VolumeError as exc:
            print(f"fence {fence.task}: {exc}", flush=True)


def _kill(fence: Fence) -> None:
    for pid, start in fence.pids:
        if _same_process(pid, start):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
    for pid in _cgroup_pids(fence.cgroups):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    for container in fence.containers:
        with contextlib.suppress(OSError, http.client.HTTPException):
            _docker("POST", f"/containers/{container}/kill?signal=KILL")


def _alive(fence: Fence) -> bool:
    if any(_same_process(pid, start) for pid, start in fence.pids):
        return True
    if _cgroup_pids(fence.cgroups):
        return True
    for container in fence.containers:
        try:
            status, body = _docker("GET", f"/containers/{container}/json")
        except (OSError, http.client.HTTPException):
            return True  # the engine does not answer: cannot tell, keep waiting
        if status == 200 and bool(json.loads(body).get("State", {}).get("Running")):
            return True
    return False


def _same_process(pid: int, start: float | None) -> bool:
    """Alive, not a zombie, and (when known) started when recorded: not a reused pid."""
    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return False
        return start is None or abs(float(process.create_time()) - start) < 0.01
    except psutil.Error:
        return False


def _cgroup_pids(cgroups: list[str]) -> list[int]:
    pids = []
    for cgroup in cgroups:
        with contextlib.suppress(OSError, ValueError):
            pids += [int(p) for p in Path(cgroup, "cgroup.procs").read_text().split()]
    return pids


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, socket_path: str) -> None:
        super().__init__("localhost", timeout=5)
        self.socket_path = socket_path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(5)
        sock.connect(self.socket_path)
        self.sock = sock


def _docker(method: str, url: str) -> tuple[int, bytes]:
    """One call to the Docker Engine API over its unix socket (DOCKER_HOST, or the default)."""
    host = os.environ.get("DOCKER_HOST", "")
    path = host[len("unix://") :] if host.startswith("unix://") else "/var/run/docker.sock"
    connection = _UnixConnection(path)
    try:
        connection.request(method, url)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


if __name__ == "__main__":
    sys.exit(watch(Path(sys.argv[1])))
