"""The driver conformance suite: what every driver must do, run against real workloads.

Parametrized by driver; the Docker driver joins the list when it lands.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import psutil
import pytest

from moorage.drivers.base import Driver, StartRequest, TaskHandle
from moorage.drivers.errors import DriverError
from moorage.drivers.process import ProcessDriver, detect_cgroups
from moorage.model import Container

pytestmark = pytest.mark.integration


@pytest.fixture(params=["process"])
async def driver(request: pytest.FixtureRequest) -> AsyncIterator[Driver]:
    made = ProcessDriver(cgroup_root=f"moorage-test-{os.getpid()}")
    started: list[TaskHandle] = []
    original = made.start

    async def tracking_start(req: StartRequest) -> TaskHandle:
        handle = await original(req)
        started.append(handle)
        return handle

    made.start = tracking_start  # type: ignore[method-assign]
    yield made
    for handle in started:  # never leave a workload behind, whatever the test did
        await made.stop(handle, 0.5)
        await made.destroy(handle)


def request_for(tmp_path: Path, command: list[str], **fields: object) -> StartRequest:
    container = Container.model_validate({"name": "app", "command": command, **fields})
    env = {"PATH": os.environ["PATH"], "GREETING": "hello", "PORT": "25001", "PORT_HTTP": "25001"}
    return StartRequest("task-1", container, env, {"http": 25001}, tmp_path / "task-1")


def py(code: str) -> list[str]:
    return [sys.executable, "-c", code]


async def test_runs_command_with_env_workdir_and_variable_expansion(
    driver: Driver, tmp_path: Path
) -> None:
    code = "import os; print(os.environ['GREETING'], os.getcwd(), os.environ['PORT_HTTP'])"
    handle = await driver.start(request_for(tmp_path, [*py(code), "${PORT_HTTP}"]))
    result = await asyncio.wait_for(driver.wait(handle), 10)
    assert result.exit_code == 0
    out = driver.log_path(handle, "stdout").read_text().split()
    assert out[0] == "hello"
    assert Path(out[1]) == tmp_path / "task-1" / "app"  # a working directory per task
    assert out[2] == "25001"


async def test_argument_expansion_uses_the_task_environment(driver: Driver, tmp_path: Path) -> None:
    handle = await driver.start(request_for(tmp_path, ["echo", "port=${PORT}", "${UNKNOWN}"]))
    await asyncio.wait_for(driver.wait(handle), 10)
    assert driver.log_path(handle, "stdout").read_text() == "port=25001 ${UNKNOWN}\n"


async def test_exit_codes_and_stderr_are_reported(driver: Driver, tmp_path: Path) -> None:
    handle = await driver.start(
        request_for(tmp_path, py("import sys; print('boom', file=sys.stderr); sys.exit(3)"))
    )
    result = await asyncio.wait_for(driver.wait(handle), 10)
    assert result.exit_code == 3
    assert result.describe() == "exit code 3"
    assert driver.log_path(handle, "stderr").read_text() == "boom\n"


async def test_a_missing_command_fails_to_start_with_a_clear_message(
    driver: Driver, tmp_path: Path
) -> None:
    with pytest.raises(DriverError, match="no-such-binary"):
        await driver.start(request_for(tmp_path, ["no-such-binary-here", "x"]))


async def test_stop_sends_sigterm_first(driver: Driver, tmp_path: Path) -> None:
    code = (
        "import signal, sys, time\n"
        "signal.signal(signal.SIGTERM, lambda *a: (print('got TERM', flush=True), sys.exit(0)))\n"
        "print('up', flush=True)\n"
        "time.sleep(60)\n"
    )
    handle = await driver.start(request_for(tmp_path, py(code)))
    await wait_for_output(driver, handle, "up")
    began = time.monotonic()
    result = await driver.stop(handle, 5.0)
    assert time.monotonic() - began < 3.0
    assert result.exit_code == 0
    assert "got TERM" in driver.log_path(handle, "stdout").read_text()


async def test_stop_kills_after_the_timeout_when_sigterm_is_ignored(
    driver: Driver, tmp_path: Path
) -> None:
    code = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('up', flush=True); time.sleep(60)"
    handle = await driver.start(request_for(tmp_path, py(code)))
    await wait_for_output(driver, handle, "up")
    pid = int(handle.state["pid"])
    began = time.monotonic()
    result = await driver.stop(handle, 0.6)
    waited = time.monotonic() - began
    assert 0.6 <= waited < 5.0
    assert result.signal == signal.SIGKILL
    assert result.exit_code == 128 + signal.SIGKILL
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    again = await driver.stop(handle, 0.1)  # idempotent
    assert again.exit_code == result.exit_code


async def test_stop_reaches_the_whole_process_tree(driver: Driver, tmp_path: Path) -> None:
    handle = await driver.start(request_for(tmp_path, ["sh", "-c", "sleep 60 & echo $! ; wait"]))
    grandchild = int(await wait_for_output(driver, handle, ""))
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


async def test_a_new_driver_instance_recovers_a_running_workload(
    driver: Driver, tmp_path: Path
) -> None:
    """What an agent restart does: a fresh driver, the saved handle, the workload still runs."""
    handle = await driver.start(request_for(tmp_path, py("import time; time.sleep(60)")))
    saved = TaskHandle.from_json(handle.to_json())
    fresh = ProcessDriver(cgroup_root=f"moorage-test-{os.getpid()}")
    assert await fresh.recover(saved)
    waiter = asyncio.create_task(fresh.wait(saved))
    await asyncio.sleep(0.2)
    assert not waiter.done()
    os.kill(int(saved.state["pid"]), signal.SIGKILL)
    result = await asyncio.wait_for(waiter, 10)
    assert result.signal == signal.SIGKILL


async def test_recover_refuses_a_reused_pid(driver: Driver, tmp_path: Path) -> None:
    handle = await driver.start(request_for(tmp_path, py("import time; time.sleep(60)")))
    forged = TaskHandle.from_json(handle.to_json())
    forged.state["pid_start"] = float(forged.state["pid_start"]) - 1000  # same pid, other process
    assert not await ProcessDriver().recover(forged)
    gone = TaskHandle.from_json(handle.to_json())
    await driver.stop(handle, 1.0)
    assert not await ProcessDriver().recover(gone)


async def test_logs_rotate_and_keep_everything_recent(tmp_path: Path) -> None:
    from moorage.drivers import process

    driver = ProcessDriver()
    old = process.LOG_MAX_BYTES
    process.LOG_MAX_BYTES = 4096
    try:
        code = "import sys\nfor i in range(2000): print(f'line {i:05d}')"
        handle = await driver.start(request_for(tmp_path, py(code)))
        assert (await asyncio.wait_for(driver.wait(handle), 10)).exit_code == 0
    finally:
        process.LOG_MAX_BYTES = old
    current = driver.log_path(handle, "stdout")
    rotated = current.with_name(current.name + ".1")
    assert rotated.exists()
    assert current.stat().st_size <= 4096
    assert current.read_text().splitlines()[-1] == "line 01999"
    lines = rotated.read_text().splitlines() + current.read_text().splitlines()
    assert lines == [f"line {i:05d}" for i in range(2000 - len(lines), 2000)]


@pytest.mark.skipif(detect_cgroups() == "none", reason="no writable cgroup hierarchy here")
async def test_memory_limit_is_enforced_with_cgroups(driver: Driver, tmp_path: Path) -> None:
    code = "import time; hog = bytearray(300 * 1024 * 1024); hog[::4096] = b'x' * len(hog[::4096]); time.sleep(30)"
    handle = await driver.start(request_for(tmp_path, py(code), memory=64))
    assert driver.memory_enforced(handle)
    result = await asyncio.wait_for(driver.wait(handle), 20)
    assert result.oom_killed or result.signal == signal.SIGKILL, result
    assert result.exit_code == 128 + signal.SIGKILL
    await driver.destroy(handle)
    assert not Path(handle.state["cgroup"]).exists()


async def test_without_cgroups_the_limit_is_reported_unenforced(tmp_path: Path) -> None:
    driver = ProcessDriver()
    driver.cgroups = "none"
    handle = await driver.start(request_for(tmp_path, ["true"]))
    await asyncio.wait_for(driver.wait(handle), 10)
    assert driver.memory_enforced(handle) is False


async def wait_for_output(driver: Driver, handle: TaskHandle, text: str) -> str:
    path = driver.log_path(handle, "stdout")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if path.exists():
            lines = path.read_text().splitlines()
            for line in lines:
                if text in line:
                    return line
        await asyncio.sleep(0.02)
    raise AssertionError(f"{text!r} never appeared in {path}")
