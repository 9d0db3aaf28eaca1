"""The driver conformance suite: what every driver must do, against real workloads.

Each test runs against the process driver (host processes) and the Docker driver (containers of
a busybox test image), with the same shell workloads.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import psutil
import pytest

from moorage.drivers.base import BindMount, Driver, StartRequest, TaskHandle
from moorage.drivers.docker import DockerDriver
from moorage.drivers.errors import DriverError
from moorage.drivers.process import ProcessDriver, detect_cgroups
from moorage.model import Container

pytestmark = pytest.mark.integration

SIGTERM_FIRST = "trap 'echo got TERM; exit 0' TERM; echo up; while true; do sleep 0.1; done"
IGNORE_SIGTERM = "trap '' TERM; echo up; while true; do sleep 0.1; done"


class Harness:
    """One driver, and how to describe a shell workload to it."""

    def __init__(self, driver: Driver, image: str | None, tmp_path: Path) -> None:
        self.driver = driver
        self.image = image
        self.tmp_path = tmp_path
        self.started: list[TaskHandle] = []
        self.count = 0

    def fresh(self) -> Driver:
        """A new instance of the driver, as a restarted agent has."""
        return DockerDriver() if self.image else ProcessDriver()

    async def start(self, script: str, **fields: object) -> TaskHandle:
        self.count += 1
        spec: dict[str, object] = {"name": "app", "command": ["sh", "-c", script], **fields}
        if self.image:
            spec["image"] = self.image
        container = Container.model_validate(spec)
        env = {"GREETING": "hello", "PORT": "25001", "PORT_HTTP": "25001"}
        if not self.image:
            env["PATH"] = os.environ["PATH"]
        task_id = f"conf-{os.getpid()}-{self.count}"
        req = StartRequest(task_id, container, env, {}, self.tmp_path / task_id)
        handle = await self.driver.start(req)
        self.started.append(handle)
        return handle

    async def output(self, handle: TaskHandle, text: str, stream: str = "stdout") -> str:
        path = self.driver.log_path(handle, stream)  # type: ignore[arg-type]
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if path.exists():
                for line in path.read_text().splitlines():
                    if text in line:
                        return line
            await asyncio.sleep(0.05)
        raise AssertionError(f"{text!r} never appeared in {path}")


@pytest.fixture(params=["process", "docker"])
async def h(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Harness]:
    if request.param == "docker":
        image = request.getfixturevalue("docker_image")
        harness = Harness(DockerDriver(), image, tmp_path)
    else:
        harness = Harness(ProcessDriver(cgroup_root=f"moorage-test-{os.getpid()}"), None, tmp_path)
    yield harness
    for handle in harness.started:  # never leave a workload behind, whatever the test did
        await harness.driver.stop(handle, 0.5)
        await harness.driver.destroy(handle)
    if isinstance(harness.driver, DockerDriver | ProcessDriver):
        await harness.driver.close()


async def test_runs_with_the_task_environment_and_expands_variables(h: Harness) -> None:
    handle = await h.start('echo "$GREETING ${PORT_HTTP}"; pwd')
    result = await asyncio.wait_for(h.driver.wait(handle), 15)
    assert result.exit_code == 0
    assert await h.output(handle, "hello") == "hello 25001"
    if h.image is None:  # a working directory per task on the host
        assert await h.output(handle, str(h.tmp_path)) == str(h.tmp_path / handle.task_id / "app")


async def test_exit_codes_and_stderr_are_reported(h: Harness) -> None:
    handle = await h.start("echo boom >&2; exit 3")
    result = await asyncio.wait_for(h.driver.wait(handle), 15)
    assert result.exit_code == 3
    assert result.describe() == "exit code 3"
    assert await h.output(handle, "boom", "stderr") == "boom"


async def test_a_workload_that_cannot_start_fails_with_a_clear_message(h: Harness) -> None:
    if h.image is None:
        container, expected = Container(name="app", command=["no-such-binary-here"]), "no-such"
    else:
        container = Container(name="app", image="moorage-test/missing:0")
        expected = "moorage-test/missing:0 is not on this node and cannot be pulled"
    request = StartRequest("bad", container, {}, {}, h.tmp_path / "bad")
    with pytest.raises(DriverError, match=expected):
        await h.driver.start(request)


async def test_stop_sends_sigterm_first(h: Harness) -> None:
    handle = await h.start(SIGTERM_FIRST)
    await h.output(handle, "up")
    began = time.monotonic()
    result = await h.driver.stop(handle, 5.0)
    assert time.monotonic() - began < 4.0
    assert result.exit_code == 0
    await h.output(handle, "got TERM")


async def test_stop_sends_the_stop_signal_when_one_is_set(h: Harness) -> None:
    script = (
        "trap 'echo got QUIT; exit 0' QUIT; trap '' TERM; echo up; while true; do sleep 0.1; done"
    )
    handle = await h.start(script, stop_signal="SIGQUIT")
    await h.output(handle, "up")
    began = time.monotonic()
    result = await h.driver.stop(handle, 5.0)
    assert time.monotonic() - began < 4.0 and result.exit_code == 0
    await h.output(handle, "got QUIT")


async def test_ulimits_reach_the_workload(h: Harness) -> None:
    handle = await h.start(
        'echo "files $(ulimit -n) $(ulimit -Hn)"',
        ulimits={"nofile": {"soft": 321, "hard": 654}},
    )
    result = await asyncio.wait_for(h.driver.wait(handle), 15)
    assert result.exit_code == 0
    assert await h.output(handle, "files") == "files 321 654"


async def test_stop_kills_after_the_timeout_when_sigterm_is_ignored(h: Harness) -> None:
    handle = await h.start(IGNORE_SIGTERM)
    await h.output(handle, "up")
    began = time.monotonic()
    result = await h.driver.stop(handle, 1.0)
    waited = time.monotonic() - began
    assert 0.9 <= waited < 10.0
    assert result.exit_code == 128 + signal.SIGKILL
    again = await h.driver.stop(handle, 0.1)  # idempotent
    assert again.exit_code == result.exit_code


async def test_a_new_driver_instance_recovers_a_running_workload(h: Harness) -> None:
    """What an agent restart does: a fresh driver, the saved handle, the workload still runs."""
    handle = await h.start("echo up; while true; do sleep 0.1; done")
    await h.output(handle, "up")
    saved = TaskHandle.from_json(handle.to_json())
    fresh = h.fresh()
    try:
        assert await fresh.recover(saved)
        waiter = asyncio.create_task(fresh.wait(saved))
        await asyncio.sleep(0.3)
        assert not waiter.done()
        result = await fresh.stop(saved, 0.5)
        assert result.exit_code is not None
        await asyncio.wait_for(waiter, 15)
    finally:
        if isinstance(fresh, DockerDriver):
            await fresh.close()


async def test_recover_refuses_what_is_not_this_workload(h: Harness) -> None:
    handle = await h.start("while true; do sleep 0.1; done")
    forged = TaskHandle.from_json(handle.to_json())
    if h.image is None:
        forged.state["pid_start"] = float(forged.state["pid_start"]) - 1000  # a reused pid
    else:
        forged.task_id = "someone-else"  # the container's label names another task
    assert not await h.driver.recover(forged)
    gone = TaskHandle.from_json(handle.to_json())
    await h.driver.stop(handle, 0.5)
    assert not await h.driver.recover(gone)


async def test_memory_limit_is_enforced(h: Harness) -> None:
    if h.image is None and detect_cgroups() == "none":
        handle = await h.start("true")
        assert h.driver.memory_enforced(handle) is False  # reported unenforced
        return
    handle = await h.start("dd if=/dev/zero of=/dev/null bs=300M count=1", memory=64)
    assert h.driver.memory_enforced(handle)
    result = await asyncio.wait_for(h.driver.wait(handle), 30)
    assert result.oom_killed or result.exit_code == 128 + signal.SIGKILL, result


# ---- process driver only ------------------------------------------------------------------
def request_for(tmp_path: Path, command: list[str], **fields: object) -> StartRequest:
    container = Container.model_validate({"name": "app", "command": command, **fields})
    env = {"PATH": os.environ["PATH"], "PORT": "25001"}
    return StartRequest("task-1", container, env, {"http": 25001}, tmp_path / "task-1")


async def test_process_stop_reaches_the_whole_process_tree(tmp_path: Path) -> None:
    driver = ProcessDriver()
    handle = await driver.start(request_for(tmp_path, ["sh", "-c", "sleep 60 & echo $! ; wait"]))
    path = driver.log_path(handle, "stdout")
    deadline = time.monotonic() + 10
    while not path.read_text().strip() and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    grandchild = int(path.read_text().split()[0])
    assert psutil.pid_exists(grandchild)
    await driver.stop(handle, 1.0)
    deadline = time.monotonic() + 5
    while psutil.pid_exists(grandchild) and time.monotonic() < deadline:
        if psutil.Process(grandchild).status() == psutil.STATUS_ZOMBIE:
            break
        await asyncio.sleep(0.05)
    assert not psutil.pid_exists(grandchild) or (
        psutil.Process(grandchild).status() == psutil.STATUS_ZOMBIE
    )


async def test_process_logs_rotate_and_keep_everything_recent(tmp_path: Path) -> None:
    from moorage.drivers import process

    driver = ProcessDriver()
    old = process.LOG_MAX_BYTES
    process.LOG_MAX_BYTES = 4096
    try:
        code = "for i in range(2000): print(f'line {i:05d}')"
        handle = await driver.start(request_for(tmp_path, [sys.executable, "-c", code]))
        assert (await asyncio.wait_for(driver.wait(handle), 10)).exit_code == 0
    finally:
        process.LOG_MAX_BYTES = old
    current = driver.log_path(handle, "stdout")
    rotated = current.with_name(current.name + ".1")
    assert rotated.exists()
    assert current.stat().st_size <= 4096
    lines = rotated.read_text().splitlines() + current.read_text().splitlines()
    assert lines == [f"line {i:05d}" for i in range(2000 - len(lines), 2000)]


@pytest.mark.skipif(detect_cgroups() == "none", reason="no writable cgroup hierarchy here")
async def test_process_memory_cgroup_kills_and_is_cleaned_up(tmp_path: Path) -> None:
    driver = ProcessDriver()
    hog = "hog = bytearray(300 * 1024 * 1024); hog[::4096] = b'x' * len(hog[::4096])"
    handle = await driver.start(request_for(tmp_path, [sys.executable, "-c", hog], memory=64))
    result = await asyncio.wait_for(driver.wait(handle), 20)
    assert result.oom_killed or result.signal == signal.SIGKILL, result
    await driver.destroy(handle)
    assert not Path(handle.state["cgroup"]).exists()


async def test_process_without_cgroups_reports_the_limit_unenforced(tmp_path: Path) -> None:
    driver = ProcessDriver()
    driver.cgroups = "none"
    handle = await driver.start(request_for(tmp_path, ["true"]))
    await asyncio.wait_for(driver.wait(handle), 10)
    assert driver.memory_enforced(handle) is False


async def test_stats_sample_a_running_workload(h: Harness) -> None:
    handle = await h.start("echo up; while true; do :; done")  # busy: it uses CPU
    await h.output(handle, "up")
    await asyncio.sleep(1.0)
    stats = await h.driver.stats(handle)
    assert stats.memory_bytes > 100_000
    assert stats.cpu_seconds > 0.2


@pytest.mark.skipif(os.geteuid() != 0, reason="mount namespaces need root")
async def test_process_sees_a_config_file_at_its_path(tmp_path: Path) -> None:
    """A config is one file: bound onto a file at its path (a directory onto a directory)."""
    if shutil.which("unshare") is None:
        pytest.skip("SKIPPED LOUDLY: unshare (util-linux) is missing")
    source = tmp_path / "configs" / "file"
    source.parent.mkdir()
    source.write_text("worker_connections 64;\n")
    target = tmp_path / "etc" / "app.conf"
    driver = ProcessDriver()
    request = request_for(tmp_path, ["cat", str(target)])
    handle = await driver.start(replace(request, mounts=(BindMount(source, str(target), True),)))
    result = await asyncio.wait_for(driver.wait(handle), 15)
    assert result.exit_code == 0, driver.log_path(handle, "stderr").read_text()
    assert driver.log_path(handle, "stdout").read_text() == "worker_connections 64;\n"
    await driver.destroy(handle)
