"""Pausing a task's containers for a consistent volume snapshot, and resuming them.

    process driver, cgroup v2   write 1 to the task cgroup's cgroup.freeze, wait for `frozen 1`
    process driver, cgroup v1   move the task cgroup's processes into a freezer cgroup of their
                                own, FROZEN, wait; afterwards THAWED and back where they were
    process driver, no cgroup   SIGSTOP to its process group, wait until every member stopped
    docker                      the Engine's pause / unpause (the engine's cgroup freezer)

A frozen process is stopped between system calls, so whatever it wrote is in the page cache,
whole, and a copy taken meanwhile is what the application had written at one instant. The
result says how: `frozen` (a cgroup freezer) or `paused` (SIGSTOP). Resuming always runs, even
when the copy failed, and survives errors of its own (logged): a task is never left frozen by
an error of ours.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, Literal

from moorage.drivers.base import TaskHandle

log = logging.getLogger(__name__)

FREEZER_V1 = Path("/sys/fs/cgroup/freezer")
POLL = 0.005
How = Literal["frozen", "paused"]
Resume = Callable[[], Awaitable[None]]


class PauseError(Exception):
    """The writer could not be paused in time (it was resumed again)."""


@contextlib.asynccontextmanager
async def paused(
    handles: list[TaskHandle], docker: Any | None, timeout: float
) -> AsyncIterator[How]:
    """Pause every container of a task for the body of the `async with`; how it was paused."""
    resumes: list[Resume] = []
    hows: list[How] = []
    try:
        for handle in handles:
            how, resume = await _pause_one(handle, docker, timeout)
            resumes.append(resume)
            hows.append(how)
        yield "paused" if "paused" in hows else "frozen"
    finally:
        for resume in reversed(resumes):
            try:
                await resume()
            except Exception:  # keep resuming the others; the log says which failed
                log.exception("could not resume a paused container")


async def _pause_one(handle: TaskHandle, docker: Any | None, timeout: float) -> tuple[How, Resume]:
    if handle.driver == "docker":
        if docker is None:
            raise PauseError("the docker driver is not available on this node")
        return await _pause_container(docker, str(handle.state["container_id"]))
    cgroup = str(handle.state.get("cgroup") or "")
    pid = int(handle.state.get("pid") or 0)
    if not pid:
        raise PauseError(f"container {handle.container} has no process to pause")
    if cgroup and Path(cgroup, "cgroup.freeze").exists():
        return "frozen", await _freeze_v2(Path(cgroup), timeout)
    if cgroup and os.access(FREEZER_V1, os.W_OK):
        return "frozen", await _freeze_v1(Path(cgroup), handle, timeout)
    return "paused", await _stop_group(pid, timeout)


async def _pause_container(docker: Any, container_id: str) -> tuple[How, Resume]:
    container = await docker.containers.get(container_id)
    await container.pause()

    async def resume() -> None:
        await container.unpause()

    return "frozen", resume


async def _wait(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise PauseError(f"{what} did not happen within {timeout:g}s")
        await asyncio.sleep(POLL)


# ---- cgroup v2 ---------------------------------------------------------------------------------
async def _freeze_v2(cgroup: Path, timeout: float) -> Resume:
    def frozen() -> bool:
        return "frozen 1" in (cgroup / "cgroup.events").read_text().splitlines()

    async def resume() -> None:
        (cgroup / "cgroup.freeze").write_text("0")

    (cgroup / "cgroup.freeze").write_text("1")
    try:
        await _wait(frozen, timeout, f"freezing {cgroup}")
    except BaseException:
        await resume()
        raise
    return resume


# ---- cgroup v1 ---------------------------------------------------------------------------------
def _procs(cgroup: Path) -> set[int]:
    try:
        return {int(p) for p in (cgroup / "cgroup.procs").read_text().split()}
    except (OSError, ValueError):
        return set()


def _freezer_of(pid: int) -> str:
    """The v1 freezer cgroup `pid` is in now ("/" when none was set up)."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            if "freezer" in controllers.split(","):
                return path
    return "/"


def _move(pids: set[int], freezer: Path) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, OSError):
            (freezer / "cgroup.procs").write_text(str(pid))


async def _freeze_v1(memory: Path, handle: TaskHandle, timeout: float) -> Resume:
    """Freeze the processes of the task's memory cgroup through a freezer cgroup of their own.

    A process forked while they are being moved stays behind, so the move is repeated until
    the freezer holds every process of the memory cgroup (a process moved into a frozen
    cgroup is frozen with it)."""
    pids = _procs(memory)
    origin = {pid: _freezer_of(pid) for pid in pids}
    freezer = FREEZER_V1 / "moorage" / f"{handle.task_id}-{handle.container}"
    freezer.mkdir(parents=True, exist_ok=True)

    async def resume() -> None:
        (freezer / "freezer.state").write_text("THAWED")
        for pid in _procs(freezer):
            back = FREEZER_V1 / origin.get(pid, "/").lstrip("/")
            _move({pid}, back if back.is_dir() else FREEZER_V1)
        with contextlib.suppress(OSError):
            freezer.rmdir()

    try:
        _move(pids, freezer)
        (freezer / "freezer.state").write_text("FROZEN")
        for _ in range(100):
            stray = _procs(memory) - _procs(freezer)
            if not stray:
                break
            origin.update({pid: _freezer_of(pid) for pid in stray})
            _move(stray, freezer)

        def frozen() -> bool:
            return (freezer / "freezer.state").read_text().strip() == "FROZEN"

        await _wait(frozen, timeout, f"freezing task {handle.task_id}")
    except BaseException:
        await resume()
        raise
    return resume


# ---- no cgroup: SIGSTOP ------------------------------------------------------------------------
def _group(pgid: int) -> dict[int, str]:
    """The members of process group `pgid` and their states (R, S, T, ...)."""
    members: dict[int, str] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = Path(entry.path, "stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid:
                members[int(entry.name)] = fields[0]
    return members


async def _stop_group(pgid: int, timeout: float) -> Resume:
    async def resume() -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGCONT)

    try:
        os.killpg(pgid, signal.SIGSTOP)
    except ProcessLookupError:
        raise PauseError(f"process group {pgid} is gone") from None

    def stopped() -> bool:
        return all(state in "TtZX" for state in _group(pgid).values())

    try:
        await _wait(stopped, timeout, f"stopping process group {pgid}")
    except BaseException:
        await resume()
        raise
    return resume


# ---- after a crash -----------------------------------------------------------------------------
async def thaw_leftovers(handles: list[TaskHandle], docker: Any | None) -> list[str]:
    """Resume what an agent that died in the middle of a snapshot left paused; what it thawed.

    Called once at agent start with the saved handles: v1 freezer cgroups of ours are thawed and
    their processes moved back to the root freezer, v2 task cgroups unfrozen, process groups
    that are stopped (state T) continued, paused Docker containers unpaused."""
    thawed: list[str] = []
    root = FREEZER_V1 / "moorage"
    if root.is_dir():
        for freezer in [p for p in root.iterdir() if p.is_dir()]:
            with contextlib.suppress(OSError):
                (freezer / "freezer.state").write_text("THAWED")
                _move(_procs(freezer), FREEZER_V1)
                freezer.rmdir()
                thawed.append(f"freezer {freezer.name}")
    for handle in handles:
        name = f"{handle.task_id}/{handle.container}"
        if handle.driver == "docker":
            if docker is None:
                continue
            with contextlib.suppress(Exception):
                container = await docker.containers.get(str(handle.state["container_id"]))
                if container["State"].get("Paused"):
                    await container.unpause()
                    thawed.append(name)
            continue
        cgroup = str(handle.state.get("cgroup") or "")
        if cgroup and Path(cgroup, "cgroup.freeze").exists():
            with contextlib.suppress(OSError):
                if Path(cgroup, "cgroup.freeze").read_text().strip() == "1":
                    Path(cgroup, "cgroup.freeze").write_text("0")
                    thawed.append(name)
        pgid = int(handle.state.get("pid") or 0)
        if pgid and any(state in "Tt" for state in _group(pgid).values()):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGCONT)
                thawed.append(name)
    return thawed
