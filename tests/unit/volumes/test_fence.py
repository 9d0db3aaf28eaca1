"""The lease-deadline file and the watchdog that enforces it without the agent."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import psutil
import pytest

from moorage.volumes import fence, host


def sleeper() -> subprocess.Popen[bytes]:
    return subprocess.Popen(["sleep", "60"], start_new_session=True)


def stop(*processes: subprocess.Popen[bytes]) -> None:
    for process in processes:
        process.kill()
        process.wait()


def gone(process: subprocess.Popen[bytes], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return True
        time.sleep(0.02)
    return False


def test_file_round_trip_and_expiry(tmp_path: Path) -> None:
    path = tmp_path / "f" / "t1.json"
    assert fence.read(path) is None
    written = fence.Fence("t1", 12.5, ["/m"], [(42, 1.5)], ["/cg"], ["abc"])
    fence.write(path, written)
    assert fence.read(path) == written
    assert not written.expired(12.4) and written.expired(12.5)
    assert not fence.Fence("t1").expired(1e12)  # no deadline yet


def test_watchdog_kills_the_workload_once_the_deadline_passes(tmp_path: Path) -> None:
    workload = sleeper()
    path = tmp_path / "t1.json"
    start = psutil.Process(workload.pid).create_time()
    fence.write(path, fence.Fence("t1", fence.now() + 0.5, pids=[(workload.pid, start)]))
    watchdog = fence.spawn(path, tmp_path / "fence.log")
    try:
        time.sleep(0.3)
        assert workload.poll() is None  # not before the deadline
        assert gone(workload, 3), "the workload outlived its deadline"
        assert watchdog.wait(5) == 0
        assert fence.read(path).fenced_at is not None  # type: ignore[union-attr]
        assert "stopped and unmounted" in (tmp_path / "fence.log").read_text()
    finally:
        stop(workload, watchdog)


def test_watchdog_leaves_when_the_agent_removes_the_file(tmp_path: Path) -> None:
    workload = sleeper()
    path = tmp_path / "t1.json"
    fence.write(path, fence.Fence("t1", fence.now() + 60, pids=[(workload.pid, None)]))
    watchdog = fence.spawn(path, tmp_path / "fence.log")
    try:
        path.unlink()
        assert watchdog.wait(5) == 0
        assert workload.poll() is None
    finally:
        stop(workload, watchdog)


def test_a_reused_pid_is_not_killed(tmp_path: Path) -> None:
    workload = sleeper()
    try:
        fence.enforce(fence.Fence("t1", 0.0, pids=[(workload.pid, 1.0)]))  # another start time
        assert workload.poll() is None
    finally:
        stop(workload)


@pytest.mark.skipif(not host.can_mount(), reason="SKIPPED LOUDLY: loop mounts need root")
def test_enforce_unmounts_after_the_kill(tmp_path: Path) -> None:
    storage = host.choose(tmp_path / "disk.img", tmp_path / "data", tmp_path / "mnt", 8, True)
    host.provision(storage, 8)
    workload = subprocess.Popen(
        ["sh", "-c", "exec 3>marker; while true; do sleep 0.1; done"],
        cwd=storage.mountpoint,
        start_new_session=True,
    )
    try:
        fence.enforce(fence.Fence("t1", 0.0, [str(storage.mountpoint)], [(workload.pid, None)]))
        assert workload.wait(5) != 0
        assert not host.mounted(storage.mountpoint)
    finally:
        stop(workload)
        host.unmount(storage.mountpoint)
