"""An agent that died while a snapshot had its writer paused resumes it when it starts again."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from pathlib import Path

from moorage.agent.pause import thaw_leftovers
from moorage.drivers.base import TaskHandle


def state(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


def wait_state(pid: int, wanted: str) -> None:
    deadline = time.monotonic() + 5
    while state(pid) not in wanted:
        assert time.monotonic() < deadline, f"{pid} stayed {state(pid)}, wanted {wanted}"
        time.sleep(0.01)


def test_a_stopped_process_group_is_continued_and_a_running_one_left_alone() -> None:
    child = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        handle = TaskHandle("process", "t1", "app", {"pid": child.pid})
        assert "t1/app" not in asyncio.run(thaw_leftovers([handle], None))  # running: left be
        os.killpg(child.pid, signal.SIGSTOP)
        wait_state(child.pid, "Tt")
        assert "t1/app" in asyncio.run(thaw_leftovers([handle], None))
        wait_state(child.pid, "SR")
    finally:
        child.kill()
        child.wait()
